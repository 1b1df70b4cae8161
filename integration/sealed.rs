//! The sealed recipe (`image-recipes/llama-server-sealed.toml`) away from a NitroTPM: under
//! QEMU + OVMF + swtpm, zoa-init brings its network up, asks the TPM for an attestation
//! document through the NSM vendor command (raw TPM2 over `/dev/tpm0`, an NV index), gets
//! swtpm's refusal, and powers off with that answer before the model or the server. And a
//! changed zoa-init configuration moves the PCRs the KMS key policy is bound to, so the
//! image it describes is refused by KMS (`zoa diff` names the cause).
//!
//! The IMDS and KMS half of the unseal runs host-side in `integration/unseal.rs`; what only
//! an EC2 instance can show is in `integration/README.md` and `integration/ec2-smoke`.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zoa::boot::{boot, BootOptions};
use zoa::release::diff::{diff, Side};

fn sealed_recipe() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("image-recipes/llama-server-sealed.toml")
}

#[test]
fn without_a_nitro_tpm_the_sealed_image_powers_off_with_the_tpm_answer() {
    let f = Fixture::new();
    let o = f.build(&sealed_recipe(), "sealed");
    assert!(o.status.success(), "zoa build: {}", stderr(&o));
    let mut opts = BootOptions::new(f.path("sealed/uki.efi"));
    opts.timeout = Some(Duration::from_secs(600));
    opts.forwards = vec![(free_port(), 8080)];
    let out = boot(&opts).unwrap_or_else(|e| panic!("zoa boot: {e}"));
    let c = zoa::boot::parse_console(&out.console);
    assert!(
        c.network.is_some(),
        "the network comes first:\n{}",
        out.console
    );
    assert_eq!(
        out.fatal.as_deref(),
        Some(
            "unseal: attestation: NitroTPM vendor command TPM2_VENDOR_AWS_NSM_REQUEST \
             (0x20000001): TPM_RC_COMMAND_CODE (0x143: command code not supported)"
        ),
        "{}",
        out.console
    );
    assert!(out.powered_off, "{}", out.console);
    assert!(!out.console.contains("zoa-init: model "), "{}", out.console);
    assert!(
        !out.console.contains("zoa-init: starting"),
        "{}",
        out.console
    );
}

#[test]
fn a_changed_init_config_moves_the_bound_pcrs() {
    let f = Fixture::new();
    let recipe = std::fs::read_to_string(sealed_recipe())
        .expect("read the sealed recipe")
        .replace(
            "\"../../shared/inputs/",
            &format!("\"{}/", shared_inputs().display()),
        );
    let a = f.write("a.toml", &recipe);
    let changed = recipe.replace(
        "secrets = [{ name = \"api-key\" }, { name = \"model-key\" }]",
        "secrets = [{ name = \"api-key\", env = \"LLAMA_API_KEY\" }, { name = \"model-key\" }]",
    );
    assert_ne!(changed, recipe, "the sealed recipe changed shape");
    let b = f.write("b.toml", &changed);
    for (recipe, out) in [(&a, "a"), (&b, "b")] {
        let o = f.build(recipe, out);
        assert!(o.status.success(), "zoa build {out}: {}", stderr(&o));
    }
    let r = diff(
        &Side::detect(&f.path("a")).expect("side a"),
        &Side::detect(&f.path("b")).expect("side b"),
    )
    .expect("diff");
    let roots: Vec<&str> = r
        .causes
        .iter()
        .filter(|c| c.because.is_empty())
        .map(|c| c.path.as_str())
        .collect();
    assert_eq!(roots, [".initrd:/etc/zoa/init.json"], "{:#?}", r.causes);
    let changed: Vec<(u32, &str)> = r
        .pcrs
        .iter()
        .filter(|p| p.changed)
        .map(|p| (p.pcr.into(), p.bank.name()))
        .collect();
    // PCR4 (the whole UKI) is what the KMS key policy binds, with PCR12.
    for bank in ["sha256", "sha384"] {
        assert!(changed.contains(&(4, bank)), "{changed:?}");
        assert!(changed.contains(&(11, bank)), "{changed:?}");
    }
    assert!(
        !changed.iter().any(|(p, _)| *p == 7 || *p == 12),
        "{changed:?}"
    );
}
