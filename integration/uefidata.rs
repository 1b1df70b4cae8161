//! Secure Boot variables against the independent tools (`zoa::secureboot::{esl, uefidata}`):
//!
//! - signature lists byte-identical to efitools' `cert-to-efi-sig-list`, and read back by
//!   its `sig-list-to-certs` (several lists in one variable, owner GUIDs printed the same);
//! - `.auth` payloads byte-identical to efitools' `sign-efi-sig-list` (PK self-signed, db
//!   signed by KEK), and efitools' payloads parsed back to their parts;
//! - the AMI `UefiData` blob byte-identical to AWS's python-uefivars (`uefivars -o aws`)
//!   for the same ESL files, zoa reading uefivars' blobs and uefivars reading zoa's, also
//!   for variables with a timestamp, a digest, or no time-based authentication at all.
//!
//! Needs efitools (apt) and uefivars (PyPI): `.ci/deps` installs both, `. .ci/env` sets
//! UEFIVARS to the venv's `uefivars`. Keys are fresh `openssl req -x509` certificates.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use openssl::pkey::PKey;
use openssl::x509::X509;
use zoa::uefi::esl::{
    self, EfiTime, Guid, SignatureList, VariableUpdate, EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
};
use zoa::uefi::uefidata::{UefiVar, UefiVarStore};

/// An owner GUID whose text and stored forms differ in every field (catches byte-order slips).
const OWNER: &str = "12345678-9abc-def0-1122-334455667788";

fn run(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// AWS's python-uefivars: `$UEFIVARS`, else `uefivars` on PATH.
fn uefivars() -> Command {
    let path = std::env::var_os("UEFIVARS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("uefivars"));
    let ok = Command::new(&path)
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} does not run: .ci/deps installs uefivars (PyPI) into its venv, then `. .ci/env` sets UEFIVARS",
        path.display()
    );
    Command::new(path)
}

/// An efitools command; they have no --help that exits 0, so check the binary exists.
fn efitool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} not found: apt-get install efitools (.ci/deps installs it)"
    );
    let mut c = Command::new(name);
    c.env("TZ", "UTC");
    c
}

/// A fresh self-signed RSA-2048 certificate `NAME.crt` (PEM) with key `NAME.key`.
struct Key {
    crt: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

fn make_key(dir: &Path, name: &str) -> Key {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
        ])
        .arg("-subj")
        .arg(format!("/CN=zoa test {name}/"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt));
    let der = X509::from_pem(&std::fs::read(&crt).unwrap())
        .unwrap()
        .to_der()
        .unwrap();
    Key { crt, key, der }
}

/// `cert-to-efi-sig-list -g OWNER NAME.crt NAME.esl`: the ESL efitools makes.
fn efitools_esl(dir: &Path, name: &str, k: &Key) -> Vec<u8> {
    let out = dir.join(format!("{name}.esl"));
    run(efitool("cert-to-efi-sig-list")
        .args(["-g", OWNER])
        .arg(&k.crt)
        .arg(&out));
    std::fs::read(out).unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
    pk: Key,
    kek: Key,
    db: Key,
    owner: Guid,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (pk, kek, db) = (
        make_key(dir.path(), "PK"),
        make_key(dir.path(), "KEK"),
        make_key(dir.path(), "db"),
    );
    Setup {
        dir,
        pk,
        kek,
        db,
        owner: OWNER.parse().unwrap(),
    }
}

#[test]
fn signature_lists_match_efitools() {
    let s = setup();
    let dir = s.dir.path();
    for (name, k) in [("PK", &s.pk), ("KEK", &s.kek), ("db", &s.db)] {
        let theirs = efitools_esl(dir, name, k);
        let ours = esl::serialize(&[SignatureList::x509(s.owner, &k.der)]).unwrap();
        assert_eq!(
            ours, theirs,
            "{name}.esl differs from cert-to-efi-sig-list's"
        );
    }
    // Several lists in one variable (a db with two certificates and a hash list), read back
    // by efitools: one DER file per certificate, with our owner GUID.
    let lists = [
        SignatureList::x509(s.owner, &s.db.der),
        SignatureList::x509(Guid::ZERO, &s.kek.der),
        SignatureList::sha256(s.owner, &[[0x5a; 32], [0xa5; 32]]),
    ];
    let multi = dir.join("multi.esl");
    std::fs::write(&multi, esl::serialize(&lists).unwrap()).unwrap();
    let o = run(efitool("sig-list-to-certs")
        .arg(&multi)
        .arg(dir.join("out")));
    let said = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(std::fs::read(dir.join("out-0.der")).unwrap(), s.db.der);
    assert_eq!(std::fs::read(dir.join("out-1.der")).unwrap(), s.kek.der);
    assert!(said.contains(&format!("Guid {OWNER}")), "{said}");
    assert!(
        said.contains("Guid 00000000-0000-0000-0000-000000000000"),
        "{said}"
    );
    assert_eq!(esl::parse(&std::fs::read(&multi).unwrap()).unwrap(), lists);
}

#[test]
fn auth_payloads_match_sign_efi_sig_list() {
    let s = setup();
    let dir = s.dir.path();
    // 2024-01-02 03:04:05 UTC: efitools takes it as text, zoa as Unix time.
    let ts = EfiTime::from_unix(1_704_164_645);
    for (var, k, signer) in [
        ("PK", &s.pk, &s.pk),
        ("KEK", &s.kek, &s.pk),
        ("db", &s.db, &s.kek),
    ] {
        let esl_bytes = efitools_esl(dir, var, k);
        let auth = dir.join(format!("{var}.auth"));
        run(efitool("sign-efi-sig-list")
            .args(["-t", "2024-01-02 03:04:05", "-c"])
            .arg(&signer.crt)
            .arg("-k")
            .arg(&signer.key)
            .arg(var)
            .arg(dir.join(format!("{var}.esl")))
            .arg(&auth));
        let theirs = std::fs::read(&auth).unwrap();

        let cert = X509::from_pem(&std::fs::read(&signer.crt).unwrap()).unwrap();
        let key = PKey::private_key_from_pem(&std::fs::read(&signer.key).unwrap()).unwrap();
        let update = VariableUpdate::secure_boot(var, &esl_bytes, ts).unwrap();
        let ours = update.sign(&cert, &key).unwrap();
        assert_eq!(ours, theirs, "{var}.auth differs from sign-efi-sig-list's");

        let parsed = esl::parse_auth2(&theirs).unwrap();
        assert_eq!(parsed.timestamp, ts);
        assert_eq!(parsed.data, esl_bytes);
        assert_eq!(update.with_signature(&parsed.pkcs7), theirs);
    }
}

/// The three ESL files uefivars reads, and the matching signature lists.
fn esl_files(s: &Setup) -> [(PathBuf, Vec<SignatureList>); 4] {
    let dir = s.dir.path();
    let file = |name: &str, lists: Vec<SignatureList>| {
        let p = dir.join(format!("{name}.esl"));
        std::fs::write(&p, esl::serialize(&lists).unwrap()).unwrap();
        (p, lists)
    };
    [
        file("PK", vec![SignatureList::x509(s.owner, &s.pk.der)]),
        file("KEK", vec![SignatureList::x509(s.owner, &s.kek.der)]),
        file(
            "db",
            vec![
                SignatureList::x509(s.owner, &s.db.der),
                SignatureList::sha256(s.owner, &[[1; 32]]),
            ],
        ),
        file(
            "dbx",
            vec![SignatureList::sha256(s.owner, &[[2; 32], [3; 32]])],
        ),
    ]
}

fn uefivars_aws(s: &Setup, with_dbx: bool) -> String {
    let [pk, kek, db, dbx] = esl_files(s);
    let out = s.dir.path().join("uefivars.b64");
    let mut cmd = uefivars();
    cmd.args(["-i", "none", "-o", "aws", "-P"])
        .arg(&pk.0)
        .arg("-K")
        .arg(&kek.0)
        .arg("-b")
        .arg(&db.0);
    if with_dbx {
        cmd.arg("-x").arg(&dbx.0);
    }
    run(cmd.arg("-O").arg(&out));
    std::fs::read_to_string(out).unwrap()
}

#[test]
fn uefidata_is_byte_identical_to_uefivars() {
    let s = setup();
    let [pk, kek, db, dbx] = esl_files(&s);
    for with_dbx in [false, true] {
        let theirs = uefivars_aws(&s, with_dbx);
        let ours = UefiVarStore::secure_boot(&pk.1, &kek.1, &db.1, with_dbx.then_some(&dbx.1[..]))
            .unwrap()
            .to_base64()
            .unwrap();
        assert_eq!(ours, theirs, "with dbx: {with_dbx}");
    }
}

#[test]
fn zoa_reads_uefivars_blob() {
    let s = setup();
    let files = esl_files(&s);
    let store = UefiVarStore::from_base64(&uefivars_aws(&s, true)).unwrap();
    let names: Vec<&str> = store.vars.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["PK", "KEK", "db", "dbx"]);
    for ((name, guid), (path, lists)) in [
        ("PK", EFI_GLOBAL_VARIABLE),
        ("KEK", EFI_GLOBAL_VARIABLE),
        ("db", EFI_IMAGE_SECURITY_DATABASE),
        ("dbx", EFI_IMAGE_SECURITY_DATABASE),
    ]
    .into_iter()
    .zip(&files)
    {
        let var = store.get(name, &guid).unwrap();
        assert_eq!(var.data, std::fs::read(path).unwrap(), "{name}");
        assert_eq!(&esl::parse(&var.data).unwrap(), lists);
        assert_eq!(var.attributes, 0x27);
        assert_eq!(var.timestamp, [0; 16]);
        assert_eq!(var.digest, vec![0; 32]);
    }
}

/// Runs `uefivars -i aws -o json` on a base64 blob and returns its variables.
fn uefivars_json(s: &Setup, b64: &str) -> Vec<serde_json::Value> {
    let (input, output) = (s.dir.path().join("in.b64"), s.dir.path().join("out.json"));
    std::fs::write(&input, b64).unwrap();
    run(uefivars()
        .args(["-i", "aws", "-o", "json", "-I"])
        .arg(&input)
        .arg("-O")
        .arg(&output));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(output).unwrap()).unwrap();
    assert_eq!(json["version"], 2);
    json["variables"].as_array().unwrap().clone()
}

#[test]
fn uefivars_reads_zoa_blob() {
    let s = setup();
    let [pk, kek, db, dbx] = esl_files(&s);
    let ours = UefiVarStore::secure_boot(&pk.1, &kek.1, &db.1, Some(&dbx.1)).unwrap();
    let vars = uefivars_json(&s, &ours.to_base64().unwrap());
    assert_eq!(vars.len(), 4);
    for (json, var) in vars.iter().zip(&ours.vars) {
        assert_eq!(json["name"], var.name.as_str());
        assert_eq!(json["guid"], var.guid.to_string());
        assert_eq!(json["attr"], 0x27);
        assert_eq!(json["data"], hex::encode(&var.data));
        // uefivars shows an all-zero timestamp and digest as absent.
        assert!(json.get("timestamp").is_none() && json.get("digest").is_none());
    }
}

#[test]
fn other_variables_round_trip_both_ways() {
    let s = setup();
    // A plain NV|BS|RT variable (no timestamp, no digest in the blob) and an authenticated
    // one carrying a timestamp and a digest, as EC2 returns them from a running instance.
    let ts = EfiTime::from_unix(1_704_164_645).to_bytes();
    let ours = UefiVarStore {
        vars: vec![
            UefiVar {
                name: "BootOrder".into(),
                guid: EFI_GLOBAL_VARIABLE,
                attributes: 7,
                data: vec![0, 0, 1, 0],
                timestamp: [0; 16],
                digest: vec![],
            },
            UefiVar {
                name: "db".into(),
                guid: EFI_IMAGE_SECURITY_DATABASE,
                attributes: 0x27,
                data: esl::serialize(&[SignatureList::x509(s.owner, &s.db.der)]).unwrap(),
                timestamp: ts,
                digest: (0..32).collect(),
            },
        ],
    };
    let vars = uefivars_json(&s, &ours.to_base64().unwrap());
    assert_eq!(vars[0]["name"], "BootOrder");
    assert_eq!(vars[0]["attr"], 7);
    assert_eq!(vars[0]["data"], "00000100");
    assert_eq!(vars[1]["timestamp"], hex::encode(ts));
    assert_eq!(vars[1]["digest"], hex::encode((0..32).collect::<Vec<u8>>()));

    // And from uefivars' JSON input to its blob, which zoa reads and rewrites identically.
    let input = s.dir.path().join("vars.json");
    std::fs::write(
        &input,
        serde_json::to_vec(&serde_json::json!({ "version": 2, "variables": vars })).unwrap(),
    )
    .unwrap();
    let out = s.dir.path().join("from-json.b64");
    run(uefivars()
        .args(["-i", "json", "-o", "aws", "-I"])
        .arg(&input)
        .arg("-O")
        .arg(&out));
    let theirs = std::fs::read_to_string(out).unwrap();
    let read = UefiVarStore::from_base64(&theirs).unwrap();
    assert_eq!(read, ours);
    assert_eq!(read.to_base64().unwrap(), theirs);
}
