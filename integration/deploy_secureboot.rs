//! Secure Boot releases end to end: `zoa sign --uefi-data` stores and signs the AMI's
//! variable store, `zoa verify` re-measures with it, and `zoa deploy` registers the AMI
//! with that `UefiData` and binds the KMS key to PCR7 and PCR12 (not PCR4), against moto
//! through the fault proxy (moto drops UefiData, so it is read from its recorder).
//!
//! Needs moto_server (`.ci/deps`, then `. .ci/env`) and zoa-init.

use crate::common;

use base64::Engine as _;
use common::faults::FaultProxy;
use common::moto::{Call, Moto};
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use zoa::uefi::esl::{Guid, SignatureList};
use zoa::uefi::uefidata::UefiVarStore;

/// The block size the proxy gives coldsnap (AWS's): moto's own answer is 512.
const EBS_BLOCK_SIZE: u64 = 524288;
const EXIT_ARTIFACT_MISMATCH: i32 = 11;
/// The signature owner of the enrolled certificates (any GUID will do).
const OWNER: Guid = Guid::from_fields(
    0x6f1b_5a2e,
    0x3c4d,
    0x4e5f,
    [0x80, 0x91, 0xa2, 0xb3, 0xc4, 0xd5, 0xe6, 0xf7],
);

fn ok(o: &Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}", stderr(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A tiny UKI signed with a fresh db key, the variable store enrolling PK, KEK and that
/// db, and a minisign key: built once per test binary, copied by each test.
struct Keys {
    f: Fixture,
    /// The signed build (uki.efi, build.json), not yet a release.
    build: PathBuf,
    /// The AMI UefiData blob (binary) and a file with its base64.
    blob: Vec<u8>,
    blob_b64_file: PathBuf,
    key: PathBuf,
    pubkey: PathBuf,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let f = Fixture::new();
        let zoa_cmd = |args: &[&str]| {
            let mut c = zoa(&f.cache());
            c.env_remove("ZOA_KEY_PASSWORD").args(args);
            c
        };
        let sb = f.path("sb");
        ok(
            &run(zoa_cmd(&["keygen", "--secure-boot", "--out"]).arg(&sb)),
            "zoa keygen --secure-boot",
        );
        ok(
            &run(zoa_cmd(&["keygen", "--no-password", "--out"]).arg(f.path("ci"))),
            "zoa keygen",
        );
        let recipe = f.write("recipe.toml", tiny_recipe(""));
        let sign_with = format!(
            "{},{}",
            f.path("sb-db.key").display(),
            f.path("sb-db.crt").display()
        );
        ok(
            &run(zoa_cmd(&["build"])
                .arg(&recipe)
                .arg("--out")
                .arg(f.path("build"))
                .args(["--sign-with", &sign_with])),
            "zoa build --sign-with",
        );
        let der = |name: &str| {
            let p = f.path(&format!("sb-{name}.cer"));
            vec![SignatureList::x509(
                OWNER,
                &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            )]
        };
        let blob = UefiVarStore::secure_boot(&der("PK"), &der("KEK"), &der("db"), None)
            .expect("a Secure Boot store")
            .to_blob()
            .expect("the blob");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
        let blob_b64_file = f.write("uefi-data.b64", format!("{b64}\n"));
        Keys {
            build: f.path("build"),
            blob,
            blob_b64_file,
            key: f.path("ci.key"),
            pubkey: f.path("ci.pub"),
            f,
        }
    })
}

/// A scratch directory with its own copy of the signed build.
struct Scratch {
    f: Fixture,
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let f = Fixture::new();
        let dir = f.path("rel");
        std::fs::create_dir_all(&dir).expect("mkdir rel");
        for name in ["uki.efi", "build.json"] {
            std::fs::copy(keys().build.join(name), dir.join(name)).expect("copy the build");
        }
        Scratch { f, dir }
    }

    fn zoa(&self) -> Command {
        let mut c = zoa(&self.f.cache());
        c.env_remove("ZOA_KEY_PASSWORD");
        c
    }

    fn sign(&self, uefi_data: Option<&Path>) -> Output {
        let mut c = self.zoa();
        c.arg("sign")
            .arg(&self.dir)
            .arg("--key")
            .arg(&keys().key)
            .arg("--json");
        if let Some(b) = uefi_data {
            c.arg("--uefi-data").arg(b);
        }
        run(&mut c)
    }

    fn verify(&self) -> Output {
        run(self
            .zoa()
            .arg("verify")
            .arg(&self.dir)
            .arg("--pubkey")
            .arg(&keys().pubkey)
            .arg("--json"))
    }

    fn manifest(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("release.json")).expect("release.json"))
            .expect("release.json is JSON")
    }
}

fn sha384_pcr(manifest: &Value, n: u32) -> String {
    manifest["measurements"]["pcrs"][n.to_string()]["sha384"]
        .as_str()
        .unwrap_or_else(|| panic!("PCR{n} in {manifest:#}"))
        .to_owned()
}

fn only<'a>(calls: &'a [Call], op: &str) -> &'a Call {
    let found: Vec<&Call> = calls.iter().filter(|c| c.is(op)).collect();
    assert_eq!(found.len(), 1, "{op}: {} calls", found.len());
    found[0]
}

fn param(call: &Call, name: &str) -> String {
    call.param(name)
        .unwrap_or_else(|| panic!("{} has no {name}", call.name()))
}

#[test]
fn sign_stores_the_blob_and_verify_remeasures_with_it() {
    let s = Scratch::new();
    // The base64 form (as `uefivars -o aws` prints it) is stored as the binary.
    let signed: Value =
        serde_json::from_str(&ok(&s.sign(Some(&keys().blob_b64_file)), "zoa sign")).unwrap();
    assert_eq!(signed["secure_boot"], true, "{signed:#}");
    let stored = std::fs::read(s.dir.join("uefi-data.bin")).expect("uefi-data.bin");
    assert_eq!(stored, keys().blob, "uefi-data.bin is not the binary blob");
    let m = s.manifest();
    let artifacts: Vec<&str> = m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        artifacts,
        [
            "uki.efi",
            "build.json",
            "measurements.json",
            "uefi-data.bin"
        ]
    );
    assert_eq!(m["measurements"]["secure_boot"], true);
    // With Secure Boot on, PCR7 has the db entry that verified the UKI.
    let events = m["measurements"]["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["pcr"] == 7 && e["type"] == "EV_EFI_VARIABLE_AUTHORITY"),
        "{events:#?}"
    );

    let v: Value = serde_json::from_str(&ok(&s.verify(), "zoa verify")).unwrap();
    assert!(
        v["artifacts_checked"]
            .as_array()
            .unwrap()
            .contains(&Value::from("uefi-data.bin")),
        "{v:#}"
    );

    // Re-signing without the flag keeps the stored blob (same release, same bytes).
    let before = std::fs::read(s.dir.join("release.json")).unwrap();
    ok(&s.sign(None), "zoa sign (again)");
    assert_eq!(std::fs::read(s.dir.join("release.json")).unwrap(), before);

    // A changed uefi-data.bin fails verify as a changed artifact.
    let path = s.dir.join("uefi-data.bin");
    let mut bytes = stored.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let o = s.verify();
    assert_eq!(
        o.status.code(),
        Some(EXIT_ARTIFACT_MISMATCH),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("uefi-data.bin"), "{}", stderr(&o));
}

#[test]
fn a_blob_the_prediction_refuses_leaves_nothing_behind() {
    let s = Scratch::new();
    // The unsigned UKI of the same recipe: Secure Boot would refuse to boot it.
    let f = &keys().f;
    let o = run(zoa(&f.cache())
        .arg("build")
        .arg(f.path("recipe.toml"))
        .arg("--out")
        .arg(s.f.path("unsigned")));
    ok(&o, "zoa build (unsigned)");
    std::fs::copy(s.f.path("unsigned/uki.efi"), s.dir.join("uki.efi")).unwrap();
    let o = s.sign(Some(&keys().blob_b64_file));
    assert!(!o.status.success(), "signed a release that cannot boot");
    let err = stderr(&o);
    assert!(err.contains("uki.efi"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for left in [
        "uefi-data.bin",
        "release.json",
        "release.json.minisig",
        "measurements.json",
    ] {
        assert!(!s.dir.join(left).exists(), "{left} left behind: {err}");
    }
    let names: Vec<String> = std::fs::read_dir(&s.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "temporary files left behind: {names:?}");

    // Not a variable store at all.
    let junk = s.f.write("junk.bin", b"AMZNUEFI and then nothing sensible");
    let o = s.sign(Some(&junk));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("junk.bin"), "{}", stderr(&o));
}

#[test]
fn secure_boot_deploy_sends_uefi_data_and_binds_pcr7_and_pcr12() {
    let s = Scratch::new();
    ok(&s.sign(Some(&keys().blob_b64_file)), "zoa sign");
    let m = s.manifest();
    let (pcr4, pcr7, pcr12) = (sha384_pcr(&m, 4), sha384_pcr(&m, 7), sha384_pcr(&m, 12));

    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint());
    proxy.set_ebs_block_size(EBS_BLOCK_SIZE);
    let deploy = |extra: &[&str]| {
        let mut c = s.zoa();
        proxy.apply(&mut c);
        run(c
            .arg("deploy")
            .arg(&s.dir)
            .arg("--pubkey")
            .arg(&keys().pubkey)
            .arg("--json")
            .args(extra))
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(&keys().blob);

    // The plan says so.
    let plan: Value = serde_json::from_str(&ok(
        &deploy(&["--plan", "--secure-boot"]),
        "zoa deploy --plan",
    ))
    .unwrap();
    assert_eq!(plan["boot_mode"], "secure-boot", "{plan:#}");
    let steps = plan["steps"].as_array().unwrap();
    let image = steps.iter().find(|st| st["step"] == "image").unwrap();
    assert_eq!(image["calls"][0]["params"]["UefiData"], b64.as_str());
    let key = steps.iter().find(|st| st["step"] == "kms-key").unwrap();
    assert!(
        key["resource"].as_str().unwrap().contains("PCR7/PCR12"),
        "{key:#}"
    );

    moto.start_recording();
    let out: Value = serde_json::from_str(&ok(&deploy(&["--secure-boot"]), "zoa deploy")).unwrap();
    moto.stop_recording();
    assert_eq!(out["state"]["boot_mode"], "secure-boot", "{out:#}");
    let record: Value = serde_json::from_slice(
        &std::fs::read(s.dir.join("deploy/deploy.json")).expect("deploy.json"),
    )
    .unwrap();
    assert_eq!(record["boot_mode"], "secure-boot");

    let calls: Vec<Call> = moto
        .calls()
        .into_iter()
        .filter(|c| !c.is("ebs:PutSnapshotBlock"))
        .collect();
    let register = only(&calls, "ec2:RegisterImage");
    assert_eq!(param(register, "UefiData"), b64, "RegisterImage UefiData");
    for (k, v) in [("BootMode", "uefi"), ("TpmSupport", "v2.0")] {
        assert_eq!(param(register, k), v, "RegisterImage {k}");
    }

    let policy: Value =
        serde_json::from_str(&param(only(&calls, "kms:CreateKey"), "Policy")).unwrap();
    let text = policy.to_string();
    assert!(!text.contains("NitroTPMPCR4"), "PCR4 is bound: {policy:#}");
    assert!(
        !text.contains(&pcr4),
        "PCR4's value is in the policy: {policy:#}"
    );
    let allow = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["Sid"] == "ZoaInstanceUse0")
        .expect("the instance's Allow");
    assert_eq!(
        allow["Condition"],
        serde_json::json!({"StringEqualsIgnoreCase": {
            "kms:RecipientAttestation:NitroTPMPCR7": pcr7,
            "kms:RecipientAttestation:NitroTPMPCR12": pcr12,
        }})
    );
    for (n, value) in [(7, &pcr7), (12, &pcr12)] {
        let deny = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|st| st["Sid"] == format!("ZoaDenyUnattestedPcr{n}"))
            .unwrap_or_else(|| panic!("no PCR{n} deny: {policy:#}"));
        assert_eq!(
            deny["Condition"]["StringNotEqualsIgnoreCase"]
                [format!("kms:RecipientAttestation:NitroTPMPCR{n}")],
            serde_json::json!([value])
        );
    }

    // A rerun accepts the key's policy as its own and creates nothing.
    let again: Value = serde_json::from_str(&ok(&deploy(&[]), "zoa deploy (rerun)")).unwrap();
    assert!(
        again["plan"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|st| st["action"] != "create"),
        "{again:#}"
    );
}

#[test]
fn secure_boot_flag_refuses_a_standard_release_before_any_call() {
    let s = Scratch::new();
    ok(&s.sign(None), "zoa sign");
    assert!(!s.dir.join("uefi-data.bin").exists());
    // Nothing listens here: the refusal must come first.
    let o = run(s
        .zoa()
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .arg("deploy")
        .arg(&s.dir)
        .arg("--pubkey")
        .arg(&keys().pubkey)
        .args(["--plan", "--secure-boot"]));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("a Secure Boot deploy was asked for") && err.contains("--uefi-data BLOB"),
        "{err}"
    );
}
