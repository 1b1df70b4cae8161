//! The sealed recipe (`image-recipes/llama-server-sealed.toml`) away from a NitroTPM: under
//! QEMU + OVMF + swtpm, zoa-init brings its network up, asks the TPM for an attestation
//! document through the NSM vendor command (raw TPM2 over `/dev/tpm0`, an NV index), gets
//! swtpm's refusal, and powers off with that answer before the model or the server. With
//! the emulated NitroTPM (`zoa boot --nitrotpm`) the same image gets a document holding the
//! PCRs it booted with (those `zoa measure` predicts) and goes on to IMDS. And a
//! changed zoa-init configuration moves the PCRs the KMS key policy is bound to, so the
//! image it describes is refused by KMS (`zoa diff` names the cause).
//!
//! The IMDS and KMS half of the unseal runs host-side in `integration/unseal.rs`; what only
//! an EC2 instance can show is in `integration/README.md` and `integration/ec2-smoke`.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zoa::boot::{boot, BootOptions};
use zoa::release::diff::{diff, Side};

fn sealed_recipe() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("image-recipes/llama-server-sealed.toml")
}

#[test]
fn the_sealed_image_attests_only_with_a_nitro_tpm() {
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
    assert_stopped_before_model_and_server(&out);

    // The same image with the emulated NitroTPM: the attestation succeeds through QEMU's
    // TPM device, and the boot goes on to the instance metadata (absent here).
    let root_file = f.path("attestation-root.pem");
    opts.nitrotpm = true;
    opts.attestation_root = Some(root_file.clone());
    let out = boot(&opts).unwrap_or_else(|e| panic!("zoa boot --nitrotpm: {e}"));
    the_emulated_nitrotpm_attested_the_booted_pcrs(&f, &out, &root_file);
}

/// One document, signed by the boot's test CA, carrying zoa-init's fresh RSA key and the
/// SHA-384 PCRs the guest itself read, which are the ones `zoa measure` predicts.
fn the_emulated_nitrotpm_attested_the_booted_pcrs(
    f: &Fixture,
    out: &zoa::boot::BootOutcome,
    root_file: &Path,
) {
    use zoa::measure::{Bank, Pcr};
    let fatal = out.fatal.as_deref().unwrap_or_default();
    assert!(
        fatal.starts_with("unseal: instance metadata (IMDSv2)"),
        "past the attestation, the boot stops at IMDS: {fatal:?}\n{}",
        out.console
    );
    assert!(out.powered_off, "{}", out.console);
    let root = openssl::x509::X509::from_pem(&std::fs::read(root_file).expect("root written"))
        .expect("the root is a PEM certificate");
    let subject = format!("{:?}", root.subject_name());
    assert!(subject.contains("zoa emulated NitroTPM root"), "{subject}");
    assert_eq!(
        out.attestation_documents.len(),
        1,
        "one attestation per boot"
    );
    let signed = zoa::attestation::parse(&out.attestation_documents[0]).expect("parse");
    signed.verify_signature().expect("signature");
    signed
        .verify_chain(&root.to_der().unwrap(), signed.document.timestamp())
        .expect("chains to the boot's root");
    let d = &signed.document;
    assert_eq!(d.kind, zoa::attestation::Kind::NitroTpm);
    let key = openssl::pkey::PKey::public_key_from_der(d.public_key.as_deref().expect("key"))
        .expect("zoa-init's public key is a DER SubjectPublicKeyInfo");
    assert_eq!(key.bits(), 2048, "an RSA-2048 recipient key");
    let uki = zoa::uefi::file::ImageFile::open(&f.path("sealed/uki.efi")).unwrap();
    let predicted =
        zoa::measure::predict(&uki, &zoa::measure::MeasureOptions::default()).expect("predict");
    // `zoa attest` says it is the signed release: the PCRs its KMS policy binds.
    let pubkey = sign_with_new_key(f, &f.path("sealed"));
    let doc = f.write("document.cbor", &out.attestation_documents[0]);
    let o = run(zoa(&f.cache())
        .args(["attest", "--json", "--document"])
        .arg(&doc)
        .arg("--root")
        .arg(root_file)
        .arg("--release")
        .arg(f.path("sealed"))
        .arg("--pubkey")
        .arg(&pubkey));
    assert_eq!(o.status.code(), Some(0), "zoa attest: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["release"]["name"], "llama-server-sealed", "{v:#}");
    // Without --root it is not AWS's: not genuine.
    let o = run(zoa(&f.cache()).args(["attest", "--document"]).arg(&doc));
    assert_eq!(
        o.status.code(),
        Some(20),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    for pcr in [Pcr::PCR4, Pcr::PCR7, Pcr::PCR11, Pcr::PCR12] {
        let i = u32::from(pcr.index());
        let attested = hex::encode(&d.pcrs[&i]);
        assert_eq!(
            Some(attested.as_str()),
            out.pcr(Bank::Sha384, pcr),
            "PCR{i}: the document holds what the guest read"
        );
        assert_eq!(
            attested,
            predicted.pcr(pcr).expect("predicted").get(Bank::Sha384),
            "PCR{i}: and what zoa predicts (what the key policy binds)"
        );
    }
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
