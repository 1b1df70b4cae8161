//! Release keys and signatures (`zoa::release::keys`): key generation with every password
//! source, interoperation both ways with the Debian `minisign` command-line tool (installed
//! by `.ci/deps`), tampering, and malformed key and signature files.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use zoa::release::keys::{self, KeyError, Password, SignatureError};

const COMMENT: &str = "zoa-release name=demo version=1.0.0 \
     manifest-sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Runs the `minisign` tool, feeding `stdin` (its password prompts read stdin when it is
/// not a terminal).
fn minisign(args: &[&str], cwd: &Path, stdin: &str) -> Output {
    let mut child = Command::new("minisign")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the minisign CLI runs (apt-get install minisign; .ci/deps installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("minisign finishes")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "minisign failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The key id in the comment line of a minisign public key file.
/// The key id in a public key file's comment, as a number: the `minisign` CLI prints it
/// without leading zeros (`%PRIX64`), zoa and the minisign crate in 16 digits, so only
/// the numbers compare.
fn pub_key_id(pub_file: &Path) -> u64 {
    let text = std::fs::read_to_string(pub_file).expect("read pub");
    let first = text.lines().next().expect("comment line");
    let id = first.rsplit(' ').next().expect("id").trim_end_matches(':');
    u64::from_str_radix(id, 16).expect("hex key id")
}

fn id_number(id: &str) -> u64 {
    assert_eq!(id.len(), 16, "zoa prints key ids in 16 hex digits: {id}");
    u64::from_str_radix(id, 16).expect("hex key id")
}

fn password_file(dir: &Path, name: &str, password: &str) -> PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, format!("{password}\n")).expect("write password file");
    f
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn keygen_unencrypted_writes_private_secret_and_refuses_overwrite() {
    let dir = tmp();
    let prefix = dir.path().join("release-1.2");
    let files = keys::keygen(&prefix, &Password::None, false).expect("keygen");
    assert_eq!(files.secret, dir.path().join("release-1.2.key"));
    assert_eq!(files.public, dir.path().join("release-1.2.pub"));
    assert_eq!(mode(&files.secret), 0o600);
    assert_eq!(pub_key_id(&files.public), id_number(&files.key_id));
    let secret_before = std::fs::read(&files.secret).expect("read key");

    let e = keys::keygen(&prefix, &Password::None, false).expect_err("must refuse");
    assert!(matches!(e, KeyError::Exists { .. }), "{e}");
    assert!(
        e.to_string().contains("release-1.2.key: already exists"),
        "{e}"
    );
    // The library says what is wrong; the command line names the flag that fixes it.
    assert!(
        !e.to_string().contains("--"),
        "the library names a flag: {e}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_zoa"))
        .args(["keygen", "--no-password", "--out"])
        .arg(&prefix)
        .output()
        .expect("run zoa keygen");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("already exists") && err.contains("pass --force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&files.secret).expect("read key"),
        secret_before
    );

    // Only the public half left over still blocks a new pair.
    std::fs::remove_file(&files.secret).expect("rm");
    let e = keys::keygen(&prefix, &Password::None, false).expect_err("must refuse");
    assert!(
        e.to_string().contains("release-1.2.pub: already exists"),
        "{e}"
    );
    assert!(!files.secret.exists(), "nothing written on refusal");

    let again = keys::keygen(&prefix, &Password::None, true).expect("forced keygen");
    assert_ne!(again.key_id, files.key_id);
    assert_eq!(mode(&again.secret), 0o600);
    // No temporary files left next to the keys.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    let e = keys::keygen(&dir.path().join("no/such/dir/k"), &Password::None, false)
        .expect_err("no dir");
    assert!(e.to_string().contains("no/such/dir"), "{e}");
}

#[test]
fn keygen_with_password_file_and_wrong_password() {
    let dir = tmp();
    let good = password_file(dir.path(), "pw", "correct horse battery");
    let files =
        keys::keygen(&dir.path().join("k"), &Password::File(good.clone()), false).expect("keygen");
    assert_eq!(mode(&files.secret), 0o600);
    let text = std::fs::read_to_string(&files.secret).expect("read");
    assert!(
        text.starts_with("untrusted comment: zoa secret key (password-protected)\n"),
        "{text}"
    );

    let sig = keys::sign(&files.secret, &Password::File(good), b"data", COMMENT).expect("sign");
    let v = keys::verify(&files.public, b"data", &sig).expect("verify");
    assert_eq!(v.trusted_comment, COMMENT);

    let bad = password_file(dir.path(), "bad", "wrong horse");
    let e = keys::sign(&files.secret, &Password::File(bad), b"data", COMMENT)
        .expect_err("wrong password");
    assert!(matches!(e, KeyError::WrongPassword { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("{}: wrong password", files.secret.display())),
        "{e}"
    );

    let e = keys::sign(&files.secret, &Password::None, b"data", COMMENT).expect_err("no password");
    assert!(e.to_string().contains("password-protected"), "{e}");
}

/// Run in a child process by `keygen_with_password_from_env`, which sets the variable:
/// changing the environment of this multi-threaded test process is not safe.
#[test]
#[ignore = "run by keygen_with_password_from_env in a child process"]
fn env_password_child() {
    let Some(dir) = std::env::var_os("ZOA_KEYS_TEST_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    // Display, not Debug: the parent checks the message users would see.
    let files =
        keys::keygen(&dir.join("k"), &Password::Env, false).unwrap_or_else(|e| panic!("{e}"));
    keys::sign(&files.secret, &Password::Env, b"data", COMMENT).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn keygen_with_password_from_env() {
    let dir = tmp();
    let run = |password: Option<&str>| {
        let mut c = Command::new(std::env::current_exe().expect("test binary"));
        c.args([
            "--exact",
            "keys::env_password_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ZOA_KEYS_TEST_DIR", dir.path());
        match password {
            Some(p) => c.env(keys::PASSWORD_ENV, p),
            None => c.env_remove(keys::PASSWORD_ENV),
        };
        c.output().expect("child test runs")
    };
    let o = run(Some("from the environment"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let key = dir.path().join("k.key");
    let sig = keys::sign(
        &key,
        &Password::File(password_file(dir.path(), "pw", "from the environment")),
        b"data",
        COMMENT,
    )
    .expect("the env password is the key's password");
    keys::verify(&dir.path().join("k.pub"), b"data", &sig).expect("verify");

    std::fs::remove_file(&key).expect("rm");
    std::fs::remove_file(dir.path().join("k.pub")).expect("rm");
    let o = run(None);
    assert!(!o.status.success());
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("ZOA_KEY_PASSWORD is not set"), "{out}");
}

#[test]
fn zoa_signatures_verify_with_minisign_cli() {
    let dir = tmp();
    let pw = password_file(dir.path(), "pw", "pw for cli");
    for (name, password) in [("plain", Password::None), ("locked", Password::File(pw))] {
        let files = keys::keygen(&dir.path().join(name), &password, false).expect("keygen");
        let data = dir.path().join(format!("{name}-release.json"));
        std::fs::write(&data, b"{\"name\":\"demo\"}\n").expect("write data");
        let sig =
            keys::sign(&files.secret, &password, b"{\"name\":\"demo\"}\n", COMMENT).expect("sign");
        std::fs::write(format!("{}.minisig", data.display()), &sig).expect("write sig");

        let data_s = data.to_str().expect("utf-8 path");
        let pub_s = files.public.to_str().expect("utf-8 path");
        let out = ok(&minisign(&["-Vm", data_s, "-p", pub_s], dir.path(), ""));
        assert!(
            out.contains(&format!("Trusted comment: {COMMENT}\n")),
            "{out}"
        );
        // -H: minisign insists on a prehashed signature, which zoa makes.
        ok(&minisign(
            &["-V", "-H", "-m", data_s, "-p", pub_s],
            dir.path(),
            "",
        ));
        let quiet = ok(&minisign(
            &["-Q", "-Vm", data_s, "-p", pub_s],
            dir.path(),
            "",
        ));
        assert_eq!(quiet, format!("{COMMENT}\n"));

        // minisign also refuses what zoa refuses.
        std::fs::write(&data, b"{\"name\":\"demO\"}\n").expect("tamper");
        let o = minisign(&["-Vm", data_s, "-p", pub_s], dir.path(), "");
        assert!(!o.status.success(), "minisign accepted tampered data");
    }
}

#[test]
fn minisign_cli_signatures_verify_with_zoa() {
    let dir = tmp();
    let d = dir.path();
    ok(&minisign(
        &["-G", "-W", "-p", "m.pub", "-s", "m.key"],
        d,
        "",
    ));
    std::fs::write(d.join("file"), b"payload bytes\n").expect("write");
    ok(&minisign(
        &[
            "-S",
            "-W",
            "-s",
            "m.key",
            "-m",
            "file",
            "-t",
            "some comment",
        ],
        d,
        "",
    ));
    let sig = std::fs::read_to_string(d.join("file.minisig")).expect("read sig");
    let v = keys::verify(&d.join("m.pub"), b"payload bytes\n", &sig)
        .expect("zoa verifies minisign's signature");
    assert_eq!(v.trusted_comment, "some comment");
    assert_eq!(id_number(&v.key_id), pub_key_id(&d.join("m.pub")));

    // Legacy (non-prehashed) signatures: minisign -V accepts them, and so does zoa.
    ok(&minisign(
        &[
            "-S",
            "-l",
            "-W",
            "-s",
            "m.key",
            "-m",
            "file",
            "-x",
            "legacy.minisig",
        ],
        d,
        "",
    ));
    let legacy = std::fs::read_to_string(d.join("legacy.minisig")).expect("read sig");
    let v = keys::verify(&d.join("m.pub"), b"payload bytes\n", &legacy).expect("legacy verifies");
    assert!(
        v.trusted_comment.starts_with("timestamp:"),
        "{}",
        v.trusted_comment
    );

    // A password-protected key made by minisign signs through zoa.
    ok(&minisign(
        &["-G", "-p", "e.pub", "-s", "e.key"],
        d,
        "minisign pw\nminisign pw\n",
    ));
    let pw = password_file(d, "pw", "minisign pw");
    let sig = keys::sign(&d.join("e.key"), &Password::File(pw), b"x", COMMENT)
        .expect("sign with minisign's key");
    assert_eq!(
        keys::verify(&d.join("e.pub"), b"x", &sig)
            .expect("verify")
            .trusted_comment,
        COMMENT
    );
    let unlocked = keys::sign(&d.join("m.key"), &Password::None, b"x", COMMENT)
        .expect("sign with minisign -W key");
    keys::verify(&d.join("m.pub"), b"x", &unlocked).expect("verify");
}

#[test]
fn zoa_secret_keys_sign_with_minisign_cli() {
    let dir = tmp();
    let d = dir.path();
    std::fs::write(d.join("file"), b"signed by the CLI\n").expect("write");

    let plain = keys::keygen(&d.join("plain"), &Password::None, false).expect("keygen");
    // minisign detects the unencrypted key by itself; -W is accepted too.
    for (args, sig_name) in [
        (
            vec![
                "-S",
                "-s",
                "plain.key",
                "-m",
                "file",
                "-x",
                "a.minisig",
                "-t",
                "cli one",
            ],
            "a.minisig",
        ),
        (
            vec![
                "-S",
                "-W",
                "-s",
                "plain.key",
                "-m",
                "file",
                "-x",
                "b.minisig",
                "-t",
                "cli one",
            ],
            "b.minisig",
        ),
    ] {
        ok(&minisign(&args, d, ""));
        let sig = std::fs::read_to_string(d.join(sig_name)).expect("read sig");
        let v = keys::verify(&plain.public, b"signed by the CLI\n", &sig).expect("verify");
        assert_eq!(v.trusted_comment, "cli one");
        assert_eq!(v.key_id, plain.key_id);
    }

    let pw = password_file(d, "pw", "zoa made this");
    let locked = keys::keygen(&d.join("locked"), &Password::File(pw), false).expect("keygen");
    ok(&minisign(
        &[
            "-S",
            "-s",
            "locked.key",
            "-m",
            "file",
            "-x",
            "c.minisig",
            "-t",
            "cli two",
        ],
        d,
        "zoa made this\n",
    ));
    let sig = std::fs::read_to_string(d.join("c.minisig")).expect("read sig");
    let v = keys::verify(&locked.public, b"signed by the CLI\n", &sig).expect("verify");
    assert_eq!(v.trusted_comment, "cli two");
    // And minisign refuses the wrong password for zoa's key.
    let o = minisign(
        &["-S", "-s", "locked.key", "-m", "file", "-x", "d.minisig"],
        d,
        "nope\n",
    );
    assert!(!o.status.success());
}

/// A key pair and a valid signature over `DATA`, for the tampering tests.
struct Signed {
    _dir: tempfile::TempDir,
    files: keys::KeyFiles,
    sig: String,
}

const DATA: &[u8] = b"{\"artifacts\":[\"uki.efi\"]}\n";

fn signed() -> Signed {
    let dir = tmp();
    let files = keys::keygen(&dir.path().join("k"), &Password::None, false).expect("keygen");
    let sig = keys::sign(&files.secret, &Password::None, DATA, COMMENT).expect("sign");
    Signed {
        _dir: dir,
        files,
        sig,
    }
}

fn replace_line(sig: &str, index: usize, f: impl FnOnce(&str) -> String) -> String {
    let mut lines: Vec<String> = sig.lines().map(str::to_owned).collect();
    lines[index] = f(&lines[index]);
    lines.join("\n") + "\n"
}

#[test]
fn tampered_data_or_comment_is_invalid() {
    let s = signed();
    let mut data = DATA.to_vec();
    data[5] ^= 0x01;
    let e = keys::verify(&s.files.public, &data, &s.sig).expect_err("changed byte");
    assert!(matches!(e, SignatureError::Invalid { .. }), "{e}");
    assert!(e.to_string().contains(&s.files.key_id), "{e}");

    let edited = replace_line(&s.sig, 2, |l| l.replace("version=1.0.0", "version=1.0.1"));
    assert_ne!(edited, s.sig);
    let e = keys::verify(&s.files.public, DATA, &edited).expect_err("edited comment");
    assert!(matches!(e, SignatureError::Invalid { .. }), "{e}");

    // The untrusted comment is not signed: editing it changes nothing.
    let edited = replace_line(&s.sig, 0, |_| "untrusted comment: anything".into());
    keys::verify(&s.files.public, DATA, &edited).expect("untrusted comment is free");
}

#[test]
fn altered_signature_base64_is_invalid_or_malformed() {
    let s = signed();
    for (line, pos) in [(1usize, 40usize), (1, 80), (3, 10), (3, 60)] {
        let altered = replace_line(&s.sig, line, |l| {
            let mut b = l.as_bytes().to_vec();
            b[pos] = if b[pos] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).expect("ascii")
        });
        let e = keys::verify(&s.files.public, DATA, &altered).expect_err("altered base64");
        assert!(
            matches!(
                e,
                SignatureError::Invalid { .. } | SignatureError::MalformedSignature { .. }
            ),
            "line {line} pos {pos}: {e}"
        );
    }
    // Characters outside base64, a truncated line, missing lines, empty text.
    let bad_char = replace_line(&s.sig, 1, |l| format!("{}*", &l[..l.len() - 1]));
    let truncated = replace_line(&s.sig, 1, |l| l[..l.len() - 8].to_owned());
    let three_lines: String = s.sig.lines().take(3).map(|l| format!("{l}\n")).collect();
    for bad in [
        bad_char,
        truncated,
        three_lines,
        String::new(),
        "garbage".into(),
    ] {
        let e = keys::verify(&s.files.public, DATA, &bad).expect_err("malformed");
        assert!(
            matches!(e, SignatureError::MalformedSignature { .. }),
            "{bad:?}: {e}"
        );
        assert!(e.to_string().contains(".minisig"), "{e}");
    }
}

#[test]
fn another_public_key_names_both_ids() {
    let s = signed();
    let dir = tmp();
    let other = keys::keygen(&dir.path().join("other"), &Password::None, false).expect("keygen");
    let e = keys::verify(&other.public, DATA, &s.sig).expect_err("other key");
    assert!(matches!(e, SignatureError::WrongKey { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "signed by key {}, not {}",
            s.files.key_id, other.key_id
        )),
        "{msg}"
    );
    assert!(msg.contains(&other.public.display().to_string()), "{msg}");
}

#[test]
fn malformed_public_keys_are_named() {
    let s = signed();
    let dir = tmp();
    let good = std::fs::read_to_string(&s.files.public).expect("read pub");
    let key_line = good.lines().nth(1).expect("key line").to_owned();
    let cases = [
        ("empty.pub", String::new()),
        ("blank.pub", "\n\n".to_owned()),
        ("garbage.pub", "this is not a key\nat all\n".to_owned()),
        ("one-line.pub", format!("{key_line}\n")),
        (
            "truncated.pub",
            format!("untrusted comment: x\n{}\n", &key_line[..40]),
        ),
        (
            "bad-char.pub",
            format!("untrusted comment: x\n{}*\n", &key_line[..55]),
        ),
        (
            "secret-as-public.pub",
            std::fs::read_to_string(&s.files.secret).expect("read key"),
        ),
        (
            "binary.pub",
            "untrusted comment: x\n\u{0}\u{1}\n".to_owned(),
        ),
    ];
    for (name, text) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &text).expect("write");
        let e = keys::verify(&path, DATA, &s.sig).expect_err(name);
        assert!(
            matches!(e, SignatureError::MalformedPublicKey { .. }),
            "{name}: {e}"
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("{}: not a minisign public key", path.display())),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "one line: {msg}");
    }
    let missing = dir.path().join("missing.pub");
    let e = keys::verify(&missing, DATA, &s.sig).expect_err("missing");
    assert!(
        matches!(e, SignatureError::PublicKeyUnreadable { .. }),
        "{e}"
    );
    assert!(
        e.to_string().starts_with(&missing.display().to_string()),
        "{e}"
    );
}

#[test]
fn multi_line_trusted_comment_is_refused() {
    let s = signed();
    let e = keys::sign(
        &s.files.secret,
        &Password::None,
        DATA,
        "a\ntrusted comment: b",
    )
    .expect_err("two lines");
    assert!(matches!(e, KeyError::BadTrustedComment { .. }), "{e}");
}
