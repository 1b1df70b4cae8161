//! `zoa seal` against moto's KMS: the envelope opens with the data key KMS releases for
//! the envelope's encryption context, and with nothing else. (moto ignores `Recipient`
//! and returns the plaintext data key, which is exactly what lets this test open the
//! envelope; on AWS only an attested instance gets the key, encrypted to its own RSA key,
//! which zoa-init's tests cover.)

use crate::common;

use base64::Engine;
use common::moto::Moto;
use common::*;
use std::process::Command;
// zoa-init's reader, the one that opens envelopes at boot.
use zoa_init::unseal::Envelope;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn create_key(moto: &Moto) -> String {
    let r = moto.json("kms", "TrentService.CreateKey", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let id = v["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let r = moto.json(
        "kms",
        "TrentService.CreateAlias",
        &format!(r#"{{"AliasName":"alias/zoa/demo","TargetKeyId":"{id}"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    id
}

fn seal(moto: &Moto, dir: &std::path::Path, key: &str, secret: &[u8]) -> std::process::Output {
    let input = dir.join("secret.bin");
    std::fs::write(&input, secret).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zoa"));
    moto.apply(&mut cmd);
    cmd.args(["seal", "--key", key, "--name", "model-key", "--in"])
        .arg(&input)
        .arg("--out")
        .arg(dir.join("sealed.json"));
    run(&mut cmd)
}

/// KMS Decrypt of the envelope's data key with a given encryption context.
fn kms_decrypt(moto: &Moto, e: &Envelope, context: &serde_json::Value) -> Option<Vec<u8>> {
    let body = serde_json::json!({
        "CiphertextBlob": b64().encode(e.encrypted_data_key()),
        "EncryptionContext": context,
    });
    let r = moto.json("kms", "TrentService.Decrypt", &body.to_string());
    if r.status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    Some(b64().decode(v["Plaintext"].as_str().unwrap()).unwrap())
}

#[test]
fn a_sealed_secret_opens_only_with_its_context_and_key() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let key_id = create_key(&moto);
    moto.start_recording();
    let secret = b"the model's decryption key \x00\x01\x02";
    let o = seal(&moto, dir.path(), "alias/zoa/demo", secret);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(dir.path().join("sealed.json")).unwrap();
    assert!(
        !text.contains("model's decryption key"),
        "plaintext in the envelope"
    );
    keep_fuzz_seed("sealed", "zoa-seal", Some(1), text.as_bytes());
    keep_fuzz_seed("userdata", "zoa-seal", Some(1), text.as_bytes());
    let e = Envelope::parse(text.as_bytes()).unwrap();
    assert!(e.key_arn().ends_with(&key_id), "{}", e.key_arn());
    assert_eq!(e.encryption_context()["zoa:deployment"], "demo");
    assert_eq!(e.name(), "model-key");
    // Only kms:Encrypt was called: a sealer never receives a data key from KMS.
    let ops = moto.operations();
    assert!(ops.iter().any(|o| o == "kms:Encrypt"), "{ops:?}");
    assert!(
        !ops.iter()
            .any(|o| o.starts_with("kms:GenerateDataKey") || o == "kms:Decrypt"),
        "{ops:?}"
    );

    let right = serde_json::to_value(e.encryption_context()).unwrap();
    let data_key = kms_decrypt(&moto, &e, &right).expect("KMS releases the data key");
    assert_eq!(e.open(&data_key).unwrap().expose(), secret);
    // KMS refuses the data key under another context.
    let wrong = serde_json::json!({"zoa:deployment": "other", "zoa:secret": "model-key"});
    assert!(kms_decrypt(&moto, &e, &wrong).is_none());
    // A moved envelope (context edited) does not open even with the right data key.
    let mut moved: serde_json::Value = serde_json::from_str(&text).unwrap();
    moved["encryption_context"]["zoa:secret"] = "other".into();
    let moved = Envelope::from_value(&moved).unwrap();
    assert!(moved.open(&data_key).is_err());
}

#[test]
fn bad_seal_requests_fail_cleanly_and_write_nothing() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sealed.json");
    // No such key.
    let o = seal(&moto, dir.path(), "alias/zoa/missing", b"s");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("kms:Encrypt") && err.contains("NotFound"),
        "{err}"
    );
    assert!(!out.exists());
    // Too large and empty secrets are refused before any call.
    create_key(&moto);
    let o = seal(&moto, dir.path(), "alias/zoa/demo", &vec![b'x'; 9000]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("at most"), "{}", stderr(&o));
    let o = seal(&moto, dir.path(), "alias/zoa/demo", b"");
    assert!(stderr(&o).contains("empty"), "{}", stderr(&o));
    assert!(!out.exists());
    // A key that is neither a directory nor a zoa alias needs --deployment.
    let o = seal(&moto, dir.path(), "1234abcd-0000", b"s");
    assert!(stderr(&o).contains("--deployment"), "{}", stderr(&o));
}
