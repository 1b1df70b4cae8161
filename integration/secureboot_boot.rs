//! The proof of zoa's Secure Boot predictions: the project's own PK/KEK/db (made by
//! `zoa keygen --secure-boot`) enrolled in an OVMF variable store by virt-firmware's
//! `virt-fw-vars` (an independent tool), UKIs signed by `zoa sign-uki`, booted under OVMF's
//! Secure Boot firmware (`OVMF_CODE_4M.secboot.fd`, SMM) with swtpm in SHA-256 and SHA-384.
//!
//! - The booted PCR4 and PCR7 equal the prediction in both banks, and the firmware's own
//!   event log agrees with the predicted events (`zoa measure --eventlog`).
//! - The three cases AWS's `nitro-tpm-pcr-compute` 1.1.2 gets wrong, each booted: a db with
//!   several signature lists, a CA certificate in db with a leaf-signed image, and an
//!   unsigned image with Secure Boot on (which the firmware refuses, and zoa refuses to
//!   predict).
//! - An image signed by a key db does not hold does not boot, and zoa refused it.
//!
//! The prediction is made from the variables exactly as virt-fw-vars enrolled them (its
//! JSON dump), so zoa's own ESL writer is checked separately against those bytes.

use crate::common;

use common::qemu::{boot_secure, Boot};
use common::secureboot::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const BANKS: [&str; 2] = ["sha256", "sha384"];
/// What OVMF prints when Secure Boot refuses the boot option's image.
const REFUSED: &str = "Access Denied";

fn ok(cmd: &mut Command, what: &str) -> std::process::Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(o.status.success(), "{what}: {}", stderr(&o));
    o
}

/// The tiny probe image (kernel, stub 252, zoa-init printing PCRs and the event log), built
/// once for all these tests (read-only).
fn probe() -> PathBuf {
    let recipe = tiny_recipe("").replace(
        "print_pcrs = true",
        "print_pcrs = true\ndump_eventlog = true",
    );
    shared_build(&recipe).join("uki.efi")
}

fn sign(f: &Fixture, uki: &Path, key: &Path, cert: &Path, chain: &[&Path], out: &str) -> PathBuf {
    let out = f.path(out);
    let mut c = zoa(&f.cache());
    c.arg("sign-uki")
        .arg(uki)
        .arg("--key")
        .arg(key)
        .arg("--cert")
        .arg(cert)
        .arg("--out")
        .arg(&out);
    for ca in chain {
        c.arg("--chain").arg(ca);
    }
    ok(&mut c, "zoa sign-uki");
    out
}

fn measure(f: &Fixture, uki: &Path, enrolled: &Enrolled) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_zoa"))
        .env("ZOA_CACHE", f.cache())
        .arg("measure")
        .arg(uki)
        .args(enrolled.args())
        .output()
        .expect("zoa measure")
}

fn predict(f: &Fixture, uki: &Path, enrolled: &Enrolled) -> serde_json::Value {
    let o = measure(f, uki, enrolled);
    assert!(o.status.success(), "zoa measure: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The SHA-384 PCR7 nitro-tpm-pcr-compute predicts, or its error when it refuses.
fn nitro_pcr7(uki: &Path, enrolled: &Enrolled) -> Result<String, String> {
    let o = Command::new("nitro-tpm-pcr-compute")
        .arg("--image")
        .arg(uki)
        .args(enrolled.nitro_args())
        .output()
        .expect("nitro-tpm-pcr-compute (.ci/deps installs it)");
    if !o.status.success() {
        return Err(stderr(&o).trim().to_owned());
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    Ok(v["Measurements"]["PCR7"].as_str().unwrap().to_owned())
}

/// nitro-tpm-pcr-compute does not give the PCR7 that booted: it predicts another value or
/// refuses a configuration that boots. Prints which, for the record.
fn assert_nitro_misses(uki: &Path, enrolled: &Enrolled, booted: &str, case: &str) {
    match nitro_pcr7(uki, enrolled) {
        Ok(pcr7) => {
            assert_ne!(
                pcr7, booted,
                "{case}: nitro-tpm-pcr-compute 1.1.2 got it right"
            );
            eprintln!("{case}: nitro-tpm-pcr-compute predicts PCR7 {pcr7}, booted {booted}");
        }
        Err(e) => eprintln!("{case}: nitro-tpm-pcr-compute refuses a boot that works: {e}"),
    }
}

fn assert_booted_as_predicted(
    f: &Fixture,
    uki: &Path,
    enrolled: &Enrolled,
    boot: &Boot,
    case: &str,
) {
    let m = predict(f, uki, enrolled);
    for pcr in [4u32, 7, 11, 12] {
        for bank in BANKS {
            let predicted = m["pcrs"][pcr.to_string()][bank]
                .as_str()
                .unwrap_or_else(|| panic!("{case}: no {bank} PCR{pcr} predicted: {m}"));
            assert_eq!(
                predicted,
                boot.pcr(bank, pcr),
                "{case}: {bank} PCR{pcr} booted differs from the prediction"
            );
        }
    }
    // The firmware's own log: every predicted event, in order, with the same digests.
    let log = boot
        .eventlog
        .as_ref()
        .unwrap_or_else(|| panic!("{case}: no event log on the console"));
    let log_path = f.write(&format!("{case}.eventlog"), log);
    let mut args = enrolled.args();
    args.push("--eventlog".into());
    args.push(log_path.display().to_string());
    let o = Command::new(env!("CARGO_BIN_EXE_zoa"))
        .env("ZOA_CACHE", f.cache())
        .arg("measure")
        .arg(uki)
        .args(&args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{case}: zoa measure --eventlog disagrees with the firmware's log: {}",
        stderr(&o)
    );
}

/// The authority event zoa predicted: the db entry's certificate, as its sha256.
fn authority_what(m: &serde_json::Value) -> String {
    m["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "EV_EFI_VARIABLE_AUTHORITY")
        .map(|e| e["what"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no EV_EFI_VARIABLE_AUTHORITY predicted: {m}"))
}

#[test]
fn an_image_signed_with_the_projects_own_db_key_boots_as_predicted() {
    let f = Fixture::new();
    let uki = probe();
    let keys = keygen(&f, "sb");
    let signed = sign(
        &f,
        &uki,
        &with_suffix(&keys, "-db.key"),
        &with_suffix(&keys, "-db.crt"),
        &[],
        "signed.efi",
    );
    let enrolled = enroll(&f, "own", &keys, &[&with_suffix(&keys, "-db.crt")]);
    let boot = boot_secure(&signed, &f.path("vm-own"), &enrolled.vars, None);
    assert_booted_as_predicted(&f, &signed, &enrolled, &boot, "own db key");
    // The same keys as an AMI's UefiData blob (virt-fw-vars --output-aws): same PCRs.
    let o = run(zoa(&f.cache())
        .arg("measure")
        .arg(&signed)
        .arg("--uefi-data")
        .arg(&enrolled.uefi_data));
    assert!(o.status.success(), "measure --uefi-data: {}", stderr(&o));
    let from_blob: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for bank in BANKS {
        assert_eq!(
            from_blob["pcrs"]["7"][bank].as_str(),
            Some(boot.pcr(bank, 7)),
            "{bank} PCR7 from the UefiData blob"
        );
    }
    // `zoa boot --secure-boot-vars`, predicting PCR7 from the same keys as a blob: every
    // PCR in both banks as predicted, PCR7 the firmware's; the caller's variable store is
    // booted from a copy, never written.
    let vars_before = std::fs::read(&enrolled.vars).unwrap();
    let o = run(zoa(&f.cache())
        .arg("boot")
        .arg(&signed)
        .arg("--secure-boot-vars")
        .arg(&enrolled.vars)
        .arg("--uefi-data")
        .arg(&enrolled.uefi_data)
        .args(["--json", "--timeout", "600"]));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("zoa boot --json ({e}): {}", stderr(&o)));
    assert!(
        o.status.success(),
        "zoa boot --secure-boot-vars: {}",
        stderr(&o)
    );
    assert_eq!(out["matches_prediction"], true, "{out:#}");
    for bank in BANKS {
        assert_eq!(
            out["pcrs"]["7"][bank].as_str(),
            Some(boot.pcr(bank, 7)),
            "{bank}"
        );
        assert_eq!(
            out["prediction"]["7"][bank], out["pcrs"]["7"][bank],
            "{bank}"
        );
    }
    assert_eq!(std::fs::read(&enrolled.vars).unwrap(), vars_before);
    // A blob is not a variable store: refused, naming the layout, before any boot.
    let o = run(zoa(&f.cache())
        .arg("boot")
        .arg(&signed)
        .arg("--secure-boot-vars")
        .arg(&enrolled.uefi_data));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("bytes, but the firmware takes a 540672-byte raw variable store"),
        "{}",
        stderr(&o)
    );

    // Signing changes neither PCR4 (Authenticode skips the signature) nor PCR11.
    let unsigned = serde_json::from_slice::<serde_json::Value>(
        &run(zoa(&f.cache()).arg("measure").arg(&uki)).stdout,
    )
    .unwrap();
    let signed_m = predict(&f, &signed, &enrolled);
    for pcr in ["11", "12"] {
        assert_eq!(unsigned["pcrs"][pcr], signed_m["pcrs"][pcr], "PCR{pcr}");
    }
    assert_eq!(
        unsigned["events"][2]["digests"], signed_m["events"][2]["digests"],
        "the UKI's Authenticode digest is the same signed or not"
    );
}

#[test]
fn several_db_lists_and_a_ca_in_db_boot_as_predicted_where_nitro_tpm_pcr_compute_errs() {
    let f = Fixture::new();
    let uki = probe();
    let keys = keygen(&f, "sb");
    // A CA (in db) and a leaf it issued (not in db); the image is signed by the leaf and
    // carries the leaf's certificate. db has three lists: an unrelated cert, the CA, and
    // the project's db cert.
    let ca_key = f.path("ca.key");
    let ca = f.path("ca.crt");
    ok(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
            ])
            .args(["-subj", "/CN=zoa test signing CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca),
        "openssl CA",
    );
    let leaf_key = f.path("leaf.key");
    let csr = f.path("leaf.csr");
    ok(
        Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=zoa test leaf",
            ])
            .arg("-keyout")
            .arg(&leaf_key)
            .arg("-out")
            .arg(&csr),
        "openssl leaf CSR",
    );
    let ext = f.write("leaf.ext", "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n");
    let leaf = f.path("leaf.crt");
    ok(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "3650", "-set_serial", "2"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&leaf),
        "openssl leaf",
    );
    let other = keygen(&f, "other");
    let signed = sign(&f, &uki, &leaf_key, &leaf, &[], "leaf-signed.efi");
    let enrolled = enroll(
        &f,
        "ca",
        &keys,
        &[
            &with_suffix(&other, "-db.crt"),
            &ca,
            &with_suffix(&keys, "-db.crt"),
        ],
    );
    let m = predict(&f, &signed, &enrolled);
    assert!(
        authority_what(&m).contains("zoa test signing CA"),
        "the CA's db entry verifies the leaf-signed image: {}",
        authority_what(&m)
    );
    let boot = boot_secure(&signed, &f.path("vm-ca"), &enrolled.vars, None);
    assert_booted_as_predicted(&f, &signed, &enrolled, &boot, "CA in db");
    assert_nitro_misses(
        &signed,
        &enrolled,
        boot.pcr("sha384", 7),
        "CA in a multi-list db",
    );
    // The CA alone in db (one list, which nitro-tpm-pcr-compute can parse).
    let ca_only = enroll(&f, "ca-only", &keys, &[&ca]);
    let boot = boot_secure(&signed, &f.path("vm-ca-only"), &ca_only.vars, None);
    assert_booted_as_predicted(&f, &signed, &ca_only, &boot, "CA alone in db");
    assert_nitro_misses(&signed, &ca_only, boot.pcr("sha384", 7), "CA alone in db");

    // The project's own db key, now the third list: its entry is the authority.
    let signed_own = sign(
        &f,
        &uki,
        &with_suffix(&keys, "-db.key"),
        &with_suffix(&keys, "-db.crt"),
        &[],
        "own-signed.efi",
    );
    let boot = boot_secure(&signed_own, &f.path("vm-third"), &enrolled.vars, None);
    assert_booted_as_predicted(&f, &signed_own, &enrolled, &boot, "third list");
    assert_nitro_misses(
        &signed_own,
        &enrolled,
        boot.pcr("sha384", 7),
        "third db list",
    );
}

#[test]
fn images_the_firmware_refuses_are_refused_by_zoa_too() {
    let f = Fixture::new();
    let uki = probe();
    let keys = keygen(&f, "sb");
    let stranger = keygen(&f, "stranger");
    let enrolled = enroll(&f, "refuse", &keys, &[&with_suffix(&keys, "-db.crt")]);

    // Unsigned with Secure Boot on: nitro-tpm-pcr-compute predicts a boot that never happens.
    let boot = boot_secure(&uki, &f.path("vm-unsigned"), &enrolled.vars, Some(REFUSED));
    assert!(boot.serial.contains(REFUSED), "{}", boot.serial);
    assert!(boot.pcrs.is_empty(), "the unsigned image must not run");
    let o = measure(&f, &uki, &enrolled);
    assert!(!o.status.success(), "zoa predicted an unsigned image");
    assert!(stderr(&o).contains("unsigned"), "{}", stderr(&o));
    assert!(
        nitro_pcr7(&uki, &enrolled).is_ok(),
        "nitro-tpm-pcr-compute 1.1.2 was expected to predict the unsigned image"
    );

    // Signed by a key db does not hold.
    let wrong = sign(
        &f,
        &uki,
        &with_suffix(&stranger, "-db.key"),
        &with_suffix(&stranger, "-db.crt"),
        &[],
        "wrong.efi",
    );
    let boot = boot_secure(&wrong, &f.path("vm-wrong"), &enrolled.vars, Some(REFUSED));
    assert!(boot.serial.contains(REFUSED), "{}", boot.serial);
    assert!(
        boot.pcrs.is_empty(),
        "the wrongly signed image must not run"
    );
    let o = measure(&f, &wrong, &enrolled);
    assert!(!o.status.success(), "zoa predicted a wrongly signed image");
    assert!(stderr(&o).contains("no db entry"), "{}", stderr(&o));
}

/// The image's Authenticode SHA-256, from zoa's prediction (the UKI event of PCR4), as
/// virt-fw-vars takes a hash: 64 hex digits.
fn authenticode_sha256(f: &Fixture, uki: &Path) -> String {
    let o = run(zoa(&f.cache()).arg("measure").arg(uki));
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    m["events"][2]["digests"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn an_unsigned_image_whose_hash_is_in_db_boots_and_one_in_dbx_does_not() {
    let f = Fixture::new();
    let uki = probe();
    let keys = keygen(&f, "sb");
    let hash = authenticode_sha256(&f, &uki);
    let db_cert = with_suffix(&keys, "-db.crt");

    // db admits the unsigned image by its hash: that entry is the authority.
    let by_hash = enroll_with(
        &f,
        "hash",
        &keys,
        &[&db_cert],
        &[
            "--add-db-hash".into(),
            OWNER.into(),
            hash.clone(),
            "--sb".into(),
        ],
    );
    let m = predict(&f, &uki, &by_hash);
    assert!(
        authority_what(&m).contains("SHA-256"),
        "{}",
        authority_what(&m)
    );
    let boot = boot_secure(&uki, &f.path("vm-hash"), &by_hash.vars, None);
    assert_booted_as_predicted(&f, &uki, &by_hash, &boot, "hash in db");

    // The same image signed by the db key, with its hash in dbx: refused by both.
    let signed = sign(
        &f,
        &uki,
        &with_suffix(&keys, "-db.key"),
        &db_cert,
        &[],
        "signed.efi",
    );
    let revoked = enroll_with(
        &f,
        "dbx",
        &keys,
        &[&db_cert],
        &["--add-dbx-hash".into(), OWNER.into(), hash, "--sb".into()],
    );
    let boot = boot_secure(&signed, &f.path("vm-dbx"), &revoked.vars, Some(REFUSED));
    assert!(boot.serial.contains(REFUSED), "{}", boot.serial);
    assert!(
        boot.pcrs.is_empty(),
        "an image whose hash is in dbx must not run"
    );
    let o = measure(&f, &signed, &revoked);
    assert!(!o.status.success(), "zoa predicted an image dbx revokes");
    assert!(stderr(&o).contains("is in dbx"), "{}", stderr(&o));
}

/// Keys enrolled but Secure Boot disabled (SecureBootEnable false): the variables are still
/// measured, SecureBoot is 0, and no authority event follows. `--secure-boot off`.
#[test]
fn enrolled_keys_with_secure_boot_disabled_boot_as_predicted() {
    let f = Fixture::new();
    let uki = probe();
    let keys = keygen(&f, "sb");
    let enrolled = enroll_with(
        &f,
        "off",
        &keys,
        &[&with_suffix(&keys, "-db.crt")],
        &["--set-false".into(), "SecureBootEnable".into()],
    );
    let o = Command::new(env!("CARGO_BIN_EXE_zoa"))
        .env("ZOA_CACHE", f.cache())
        .arg("measure")
        .arg(&uki)
        .args(enrolled.args())
        .args(["--secure-boot", "off"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The unsigned image boots: the firmware does not check it.
    let boot = boot_secure(&uki, &f.path("vm-off"), &enrolled.vars, None);
    for pcr in [4u32, 7, 11, 12] {
        for bank in BANKS {
            assert_eq!(
                m["pcrs"][pcr.to_string()][bank].as_str(),
                Some(boot.pcr(bank, pcr)),
                "{bank} PCR{pcr}: {m}"
            );
        }
    }
}
