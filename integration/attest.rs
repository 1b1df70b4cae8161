//! `zoa attest --document` on real NitroTPM documents from EC2 (`src/attestation/testdata`):
//! verified against the AWS Nitro root embedded in zoa at the document's own time, and each
//! expectation it does not meet refused with its verdict and exit status. (A document from
//! the emulated NitroTPM, checked against the signed release it booted, is in `sealed.rs`.)

use crate::common;

use common::*;
use std::path::{Path, PathBuf};

fn real_document(f: &Fixture) -> PathBuf {
    let hex = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/attestation/testdata/nitrotpm-vaportpm-21a610c.hex"),
    )
    .unwrap();
    f.write("doc.cbor", hex::decode(hex.trim()).unwrap())
}

fn attest(f: &Fixture, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let o = run(zoa(&f.cache()).arg("attest").args(args).arg("--json"));
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", stderr(&o)));
    (o.status.code(), v)
}

#[test]
fn a_real_ec2_document_is_verified_and_each_failed_expectation_has_its_status() {
    let f = Fixture::new();
    let doc = real_document(&f);
    let d = doc.to_str().unwrap();
    let (code, v) = attest(&f, &["--document", d]);
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["verified"], true);
    assert_eq!(v["verdict"], "ok");
    assert_eq!(v["kind"], "nitrotpm");
    assert_eq!(v["module_id"], "i-0082f89b039c97a0f-tpm0000000000000000");
    assert_eq!(v["timestamp"], "2026-02-02T07:28:28.379Z");
    assert_eq!(v["pcrs"].as_object().unwrap().len(), 24);
    assert_eq!(v["user_data"], serde_json::Value::Null);
    let pcr4 = v["pcrs"]["4"].as_str().unwrap().to_owned();
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["format", "signature", "chain"]);

    let (code, v) = attest(&f, &["--document", d, "--pcr", &format!("4={pcr4}")]);
    assert_eq!(
        (code, v["verdict"].as_str()),
        (Some(0), Some("ok")),
        "{v:#}"
    );
    let other = "ab".repeat(48);
    let (code, v) = attest(&f, &["--document", d, "--pcr", &format!("4={other}")]);
    assert_eq!(
        (code, v["verdict"].as_str()),
        (Some(21), Some("pcr-mismatch")),
        "{v:#}"
    );
    // The project's release log: every release verified, none is the image EC2 booted.
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("measurements");
    let log = m.join("releases.log");
    let mut args = vec!["--document".to_owned(), d.to_owned(), "--log".to_owned()];
    args.push(log.to_str().unwrap().to_owned());
    for key in &release_keys() {
        args.push("--pubkey".to_owned());
        args.push(key.to_str().unwrap().to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, v) = attest(&f, &args);
    assert_eq!(code, Some(21), "{v:#}");
    let detail = v["checks"][3]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("matches none of") && detail.contains("PCR4 is"),
        "{detail}"
    );
    // Ten months later the document is stale; a day after it, its leaf had expired.
    let (code, v) = attest(&f, &["--document", d, "--max-age", "5m"]);
    assert_eq!(
        (code, v["verdict"].as_str()),
        (Some(22), Some("stale")),
        "{v:#}"
    );
    let (code, v) = attest(&f, &["--document", d, "--at", "2026-02-03T07:28:28Z"]);
    assert_eq!(
        (code, v["verdict"].as_str()),
        (Some(20), Some("expired")),
        "{v:#}"
    );
    let (code, v) = attest(&f, &["--document", d, "--nonce", "00ff"]);
    assert_eq!(
        (code, v["verdict"].as_str()),
        (Some(22), Some("nonce-mismatch")),
        "{v:#}"
    );
    // Any other root than AWS's: untrusted.
    let root = f.write(
        "root.pem",
        openssl::x509::X509::from_der(include_bytes!("../src/attestation/aws-nitro-root-g1.der"))
            .unwrap()
            .to_pem()
            .unwrap(),
    );
    let (code, _) = attest(&f, &["--document", d, "--root", root.to_str().unwrap()]);
    assert_eq!(code, Some(0), "the AWS root given explicitly");
    let mut bytes = std::fs::read(&doc).unwrap();
    bytes[4000] ^= 1;
    let bad = f.write("bad.cbor", bytes);
    let (code, v) = attest(&f, &["--document", bad.to_str().unwrap()]);
    assert_eq!(code, Some(20), "{v:#}");
    assert_eq!(v["verified"], false);

    // Text output names the verdict; usage errors exit 2.
    let o = run(zoa(&f.cache()).args(["attest", "--document", d]));
    assert!(String::from_utf8_lossy(&o.stdout).contains("verified: i-0082f89b039c97a0f"));
    let o = run(zoa(&f.cache()).args(["attest", "--document", d, "--pcr", "4=zz"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
