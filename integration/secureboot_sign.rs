//! Secure Boot keys and Authenticode signing (`zoa keygen --secure-boot`, `zoa sign-uki`,
//! `zoa::secureboot::sign`), checked against independent tools on a real EFI image (the
//! pinned systemd stub): `sbverify` and `osslsigncode` accept what zoa signs, zoa verifies
//! what `sbsign` signs, a CA made with the `openssl` command line works as a trust anchor
//! for a leaf-signed image, and signing is reproducible.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use zoa::secureboot::sign::{verify_pe, VerifyError};

/// A scratch directory with the systemd 252 stub (an unsigned PE) extracted into it.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("tempdir");
        let deb = common::shared_inputs().join(common::STUB252_DEB);
        let mut out = std::fs::File::create(dir.path().join("stub.efi")).expect("create stub");
        zoa::deb::copy_data_file(&deb, common::STUB_MEMBER, &mut out).expect("extract the stub");
        Scratch { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn stub(&self) -> PathBuf {
        self.path("stub.efi")
    }

    /// `zoa ARGS` in this directory.
    fn zoa(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_zoa"))
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("zoa runs")
    }

    /// A tool in this directory; `None` when it is not installed.
    fn tool(&self, program: &str, args: &[&str]) -> Option<Output> {
        match Command::new(program)
            .args(args)
            .current_dir(self.dir.path())
            .output()
        {
            Ok(o) => Some(o),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("{program}: {e}"),
        }
    }

    /// `zoa keygen --secure-boot --out PREFIX`.
    fn keygen(&self, prefix: &str) {
        ok(&self.zoa(&["keygen", "--secure-boot", "--out", prefix]));
    }

    fn der(&self, cert: &str) -> Vec<u8> {
        let bytes = std::fs::read(self.path(cert)).expect("read certificate");
        openssl::x509::X509::from_pem(&bytes)
            .expect("PEM certificate")
            .to_der()
            .expect("DER")
    }
}

fn open_image(path: &Path) -> zoa::uefi::file::ImageFile {
    zoa::uefi::file::ImageFile::open(path).expect("opens")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs a required tool (sbsigntool and openssl are installed by .ci/deps).
fn must(s: &Scratch, program: &str, args: &[&str]) -> Output {
    s.tool(program, args).unwrap_or_else(|| {
        panic!("{program} is not installed (apt-get install sbsigntool openssl)")
    })
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn keygen_writes_pk_kek_db_and_refuses_to_overwrite() {
    let s = Scratch::new();
    let out = ok(&s.zoa(&[
        "keygen",
        "--secure-boot",
        "--name",
        "acme",
        "--out",
        "sb",
        "--json",
    ]));
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let keys = json["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 3);
    for (k, role) in keys.iter().zip(["PK", "KEK", "db"]) {
        assert_eq!(k["role"], role);
        assert_eq!(k["subject"], format!("CN=acme {role}"));
        assert_eq!(k["key"], format!("sb-{role}.key"));
        assert_eq!(mode(&s.path(&format!("sb-{role}.key"))), 0o600);
        // openssl reads every file: the key, the PEM and the DER certificate.
        let text = ok(&must(
            &s,
            "openssl",
            &[
                "x509",
                "-in",
                &format!("sb-{role}.cer"),
                "-inform",
                "DER",
                "-noout",
                "-text",
            ],
        ));
        assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
        assert!(
            text.contains("Signature Algorithm: sha256WithRSAEncryption"),
            "{text}"
        );
        assert!(
            text.contains(&format!("Subject: CN = acme {role}")),
            "{text}"
        );
        ok(&must(
            &s,
            "openssl",
            &["pkey", "-in", &format!("sb-{role}.key"), "-noout"],
        ));
    }
    let before = std::fs::read(s.path("sb-db.key")).expect("read key");
    let o = s.zoa(&["keygen", "--secure-boot", "--out", "sb"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(s.path("sb-db.key")).expect("read key"),
        before
    );
    ok(&s.zoa(&["keygen", "--secure-boot", "--out", "sb", "--force"]));
    assert_ne!(
        std::fs::read(s.path("sb-db.key")).expect("read key"),
        before
    );
}

#[test]
fn zoa_signature_is_accepted_by_sbverify_and_osslsigncode_and_reproducible() {
    let s = Scratch::new();
    s.keygen("sb");
    let json = ok(&s.zoa(&[
        "sign-uki",
        "stub.efi",
        "--key",
        "sb-db.key",
        "--cert",
        "sb-db.crt",
        "--out",
        "a.efi",
        "--json",
    ]));
    let signed: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(signed["signer"], "CN=zoa db");
    ok(&s.zoa(&[
        "sign-uki",
        "stub.efi",
        "--key",
        "sb-db.key",
        "--cert",
        "sb-db.crt",
        "-o",
        "b.efi",
    ]));
    let a = std::fs::read(s.path("a.efi")).expect("read");
    assert_eq!(
        a,
        std::fs::read(s.path("b.efi")).expect("read"),
        "not reproducible"
    );
    assert_eq!(signed["sha256"], common::sha256_hex(&a));

    // In place gives the same bytes.
    std::fs::copy(s.stub(), s.path("c.efi")).expect("copy");
    ok(&s.zoa(&[
        "sign-uki",
        "c.efi",
        "--key",
        "sb-db.key",
        "--cert",
        "sb-db.crt",
        "--in-place",
    ]));
    assert_eq!(a, std::fs::read(s.path("c.efi")).expect("read"));

    // Independent verifiers.
    ok(&must(&s, "sbverify", &["--cert", "sb-db.crt", "a.efi"]));
    let o = must(&s, "sbverify", &["--cert", "sb-KEK.crt", "a.efi"]);
    assert!(
        !o.status.success(),
        "sbverify accepted a signature under another key"
    );
    if let Some(o) = s.tool(
        "osslsigncode",
        &["verify", "-in", "a.efi", "-CAfile", "sb-db.crt"],
    ) {
        let out = ok(&o);
        assert!(out.contains("Signature verification: ok"), "{out}");
    }

    // zoa's verifier: the first trusted certificate that verifies is reported.
    let trust = [s.der("sb-KEK.crt"), s.der("sb-db.crt")];
    let v = verify_pe(&open_image(&s.path("a.efi")), &trust).expect("verifies");
    assert_eq!(v.trust_index, 1);
    assert_eq!(v.digest, signed["authenticode_sha256"]);
    let e = verify_pe(&open_image(&s.path("a.efi")), &trust[..1])
        .expect_err("KEK does not sign images");
    assert!(matches!(e, VerifyError::Untrusted { .. }), "{e}");
}

#[test]
fn sbsign_signature_is_verified_by_zoa() {
    let s = Scratch::new();
    s.keygen("sb");
    ok(&must(
        &s,
        "sbsign",
        &[
            "--key",
            "sb-db.key",
            "--cert",
            "sb-db.crt",
            "--output",
            "sbsigned.efi",
            "stub.efi",
        ],
    ));
    let signed = s.path("sbsigned.efi");
    let v = verify_pe(
        &open_image(&signed),
        &[s.der("sb-PK.crt"), s.der("sb-db.crt")],
    )
    .expect("verifies");
    assert_eq!(v.trust_index, 1);
    assert_eq!(v.signer, "CN=zoa db");
    let e = verify_pe(&open_image(&signed), &[s.der("sb-KEK.crt")]).expect_err("untrusted");
    assert!(matches!(e, VerifyError::Untrusted { .. }), "{e}");

    // The same image digest as zoa signs (sbsign pads the stub to 8 bytes, as zoa does).
    let zoa_signed = ok(&s.zoa(&[
        "sign-uki",
        "stub.efi",
        "--key",
        "sb-db.key",
        "--cert",
        "sb-db.crt",
        "-o",
        "z.efi",
        "--json",
    ]));
    let zoa_signed: serde_json::Value = serde_json::from_str(&zoa_signed).expect("JSON");
    assert_eq!(v.digest, zoa_signed["authenticode_sha256"]);

    // One byte changed in the image after signing.
    let mut bytes = std::fs::read(&signed).expect("read");
    bytes[0x1000] ^= 0x01;
    std::fs::write(&signed, &bytes).expect("write");
    let e = verify_pe(&open_image(&signed), &[s.der("sb-db.crt")]).expect_err("tampered");
    assert!(matches!(e, VerifyError::DigestMismatch { .. }), "{e}");
    let o = must(&s, "sbverify", &["--cert", "sb-db.crt", "sbsigned.efi"]);
    assert!(!o.status.success(), "sbverify accepted a tampered image");

    // And zoa refuses to sign an already-signed image.
    let o = s.zoa(&[
        "sign-uki",
        "z.efi",
        "--key",
        "sb-db.key",
        "--cert",
        "sb-db.crt",
        "--in-place",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("z.efi") && err.contains("already signed"),
        "{err}"
    );
}

#[test]
fn ca_in_db_verifies_a_leaf_signed_image() {
    let s = Scratch::new();
    s.keygen("sb");
    let openssl = |args: &[&str]| ok(&must(&s, "openssl", args));
    // root CA -> intermediate CA -> leaf, with the openssl command line.
    let ca_ext =
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,digitalSignature\n";
    std::fs::write(s.path("ca.ext"), ca_ext).expect("write ext");
    std::fs::write(
        s.path("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n",
    )
    .expect("write ext");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "root.key",
        "-out",
        "root.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=test root CA",
        "-sha256",
    ]);
    for (name, issuer, ext) in [("mid", "root", "ca.ext"), ("leaf", "mid", "leaf.ext")] {
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN=test {name}"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{issuer}.crt"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "3650",
            "-sha256",
            "-extfile",
            ext,
        ]);
    }

    // Signed by the leaf, the intermediate carried in the PKCS#7: the root CA verifies it,
    // as does the intermediate; the first of them in the list is the one reported.
    ok(&s.zoa(&[
        "sign-uki",
        "stub.efi",
        "--key",
        "leaf.key",
        "--cert",
        "leaf.crt",
        "--chain",
        "mid.crt",
        "-o",
        "chained.efi",
    ]));
    ok(&must(
        &s,
        "sbverify",
        &["--cert", "root.crt", "chained.efi"],
    ));
    let v = verify_pe(
        &open_image(&s.path("chained.efi")),
        &[s.der("sb-db.crt"), s.der("root.crt"), s.der("mid.crt")],
    )
    .expect("verifies");
    assert_eq!(v.trust_index, 1);
    assert_eq!(v.signer, "CN=test leaf");
    assert_eq!(v.trust_subject, "CN=test root CA");
    let v = verify_pe(&open_image(&s.path("chained.efi")), &[s.der("mid.crt")]).expect("verifies");
    assert_eq!(v.trust_index, 0);

    // Only the leaf in the PKCS#7: its issuer (the intermediate) in db verifies it, the
    // root cannot be reached.
    ok(&s.zoa(&[
        "sign-uki", "stub.efi", "--key", "leaf.key", "--cert", "leaf.crt", "-o", "leaf.efi",
    ]));
    let v = verify_pe(
        &open_image(&s.path("leaf.efi")),
        &[s.der("root.crt"), s.der("mid.crt")],
    )
    .expect("verifies");
    assert_eq!(v.trust_index, 1);
    ok(&must(&s, "sbverify", &["--cert", "mid.crt", "leaf.efi"]));

    // A key that is not the certificate's.
    let o = s.zoa(&[
        "sign-uki", "stub.efi", "--key", "mid.key", "--cert", "leaf.crt", "-o", "bad.efi",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("mid.key") && err.contains("does not belong"),
        "{err}"
    );
    assert!(!s.path("bad.efi").exists());
}

#[test]
fn sign_uki_needs_an_explicit_destination() {
    let s = Scratch::new();
    s.keygen("sb");
    let o = s.zoa(&[
        "sign-uki",
        "stub.efi",
        "--key",
        "sb-db.key",
        "--cert",
        "sb-db.crt",
    ]);
    assert_eq!(o.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--out") && err.contains("--in-place"), "{err}");
    // The stub is untouched.
    let stub = std::fs::read(s.stub()).expect("read");
    assert_eq!(
        zoa::uefi::pe::PeLayout::parse("stub", &stub, stub.len() as u64)
            .expect("PE")
            .cert_table
            .1,
        0
    );
}

/// `zoa build --sign-with`: the built UKI is signed (sbverify accepts it), reproducibly;
/// build.json records what was signed; a signed release verifies with `--rebuild` (a
/// rebuild without the key gives the unsigned UKI, compared through the record and the
/// Authenticode digest), and a rebuild of another recipe does not.
#[test]
fn build_sign_with_signs_reproducibly_and_the_release_rebuilds() {
    let f = common::Fixture::new();
    let s = Scratch::new();
    s.keygen("sb");
    let recipe = f.write("recipe.toml", common::tiny_recipe(""));
    let sign_with = format!(
        "{},{}",
        s.path("sb-db.key").display(),
        s.path("sb-db.crt").display()
    );
    let build = |out: &str| {
        let o = common::run(
            common::zoa(&f.cache())
                .arg("build")
                .arg(&recipe)
                .arg("--out")
                .arg(f.path(out))
                .args(["--sign-with", &sign_with]),
        );
        ok(&o);
        f.path(out)
    };
    let (a, b) = (build("a"), build("b"));
    let uki = a.join("uki.efi");
    assert_eq!(
        std::fs::read(&uki).unwrap(),
        std::fs::read(b.join("uki.efi")).unwrap(),
        "two signed builds differ"
    );
    let cert = s.path("sb-db.crt");
    let o = must(
        &s,
        "sbverify",
        &["--cert", cert.to_str().unwrap(), uki.to_str().unwrap()],
    );
    assert!(
        o.status.success(),
        "sbverify: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("build.json")).unwrap()).unwrap();
    let record = &report["secure_boot_signature"];
    assert!(
        record["signer"].as_str().unwrap().contains("db"),
        "{record}"
    );
    assert_eq!(
        report["outputs"][0]["sha256"].as_str().unwrap(),
        common::sha256_hex(&std::fs::read(&uki).unwrap())
    );
    // The same recipe unsigned is the UKI that was signed.
    let o = common::run(
        common::zoa(&f.cache())
            .arg("build")
            .arg(&recipe)
            .arg("--out")
            .arg(f.path("plain")),
    );
    ok(&o);
    assert_eq!(
        record["unsigned_sha256"].as_str().unwrap(),
        common::sha256_hex(&std::fs::read(f.path("plain/uki.efi")).unwrap())
    );

    // A release of the signed build, verified with a rebuild (which has no key).
    ok(&common::run(
        common::zoa(&f.cache())
            .args(["keygen", "--no-password", "--out"])
            .arg(f.path("rel")),
    ));
    ok(&common::run(
        common::zoa(&f.cache())
            .arg("sign")
            .arg(&a)
            .arg("--key")
            .arg(f.path("rel.key")),
    ));
    let verify = |recipe: &Path| {
        common::run(
            common::zoa(&f.cache())
                .arg("verify")
                .arg(&a)
                .arg("--pubkey")
                .arg(f.path("rel.pub"))
                .arg("--rebuild")
                .arg(recipe),
        )
    };
    ok(&verify(&recipe));
    let other = f.write(
        "other.toml",
        common::tiny_recipe("").replace("panic=-1", "panic=-1 quiet"),
    );
    let o = verify(&other);
    assert_eq!(o.status.code(), Some(13), "{}", common::stderr(&o));
}
