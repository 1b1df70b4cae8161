//! Bad input to `zoa build`: every case exits non-zero with one line on stderr that names
//! the file or field and the problem, and leaves nothing in the output directory.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};

struct Case {
    name: &'static str,
    recipe: String,
    expect: Vec<&'static str>,
}

fn refused(f: &Fixture, case: &Case) {
    let recipe = f.write(&format!("{}.toml", case.name), &case.recipe);
    let out_rel = format!("out-{}", case.name);
    let o = f.build(&recipe, &out_rel);
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "{}: build unexpectedly succeeded",
        case.name
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{}: expected exactly one line on stderr, got:\n{err}",
        case.name
    );
    assert!(err.starts_with("zoa: error: "), "{}: {err}", case.name);
    for e in &case.expect {
        assert!(err.contains(e), "{}: stderr lacks {e:?}:\n{err}", case.name);
    }
    assert!(
        absent_or_empty(&f.path(&out_rel)),
        "{}: output left behind",
        case.name
    );
}

/// The bytes of stub 252.
fn stub252(f: &Fixture) -> Vec<u8> {
    let inputs = shared_inputs();
    let tmp = f.path("stub-extract");
    std::fs::create_dir_all(&tmp).unwrap();
    let st = std::process::Command::new("dpkg-deb")
        .arg("-x")
        .arg(inputs.join(STUB252_DEB))
        .arg(&tmp)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(tmp.join(STUB_MEMBER)).unwrap()
}

/// A copy of stub 252 whose .sdmagic claims another major version.
fn stub_with_version(f: &Fixture, major: &[u8; 3]) -> PathBuf {
    let mut bytes = stub252(f);
    let at = bytes
        .windows(17)
        .position(|w| w == b"systemd-stub 252.")
        .unwrap();
    bytes[at + 13..at + 16].copy_from_slice(major);
    f.write("stub999.efi", bytes)
}

/// A copy of stub 252 with a certificate-table entry pointing at appended bytes.
fn signed_stub(f: &Fixture) -> PathBuf {
    let mut bytes = stub252(f);
    let pe = u32::from_le_bytes(bytes[0x3c..0x40].try_into().unwrap()) as usize;
    let cert_dir = pe + 24 + 112 + 4 * 8; // PE32+: data directories at +112, certificate table is #4
    let cert_at = bytes.len() as u32;
    bytes.extend_from_slice(&[
        0x10, 0, 0, 0, 0, 2, 2, 0, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0,
    ]);
    bytes[cert_dir..cert_dir + 4].copy_from_slice(&cert_at.to_le_bytes());
    bytes[cert_dir + 4..cert_dir + 8].copy_from_slice(&16u32.to_le_bytes());
    f.write("signed-stub.efi", bytes)
}

fn with_stub_file(stub: &Path) -> String {
    let inputs = shared_inputs();
    format!(
        "[image]\nname = \"t\"\nversion = \"1\"\n[kernel]\ninput = \"kernel\"\npath = \"{KERNEL_MEMBER}\"\n[stub]\ninput = \"stub\"\n{}{}",
        input_table("kernel", &inputs.join(KERNEL_DEB)),
        input_table("stub", stub)
    )
}

#[test]
fn bad_inputs_are_refused_cleanly() {
    let f = Fixture::new();
    let inputs = shared_inputs();
    let tiny = tiny_recipe("");
    let kernel_sha = sha256_of(&inputs.join(KERNEL_DEB));

    // A truncated .deb, pinned by its own (truncated) digest.
    let full = std::fs::read(inputs.join(STUB252_DEB)).unwrap();
    let truncated = f.write("truncated.deb", &full[..full.len() / 3]);
    // A kernel that is not a PE file.
    let not_pe = f.write(
        "not-a-kernel",
        b"this is not a kernel image at all, just text\n",
    );
    let signed = signed_stub(&f);
    let stub999 = stub_with_version(&f, b"999");
    f.write("files/ok", b"ok");

    let cases = vec![
        Case { name: "bad-toml", recipe: "[image\nname = ".into(), expect: vec!["bad-toml.toml", "invalid TOML"] },
        Case { name: "unknown-key", recipe: tiny.replace("[init]\n", "[init]\nshell = true\n"), expect: vec!["unknown-key.toml", "unknown field", "shell"] },
        Case { name: "wrong-sha256", recipe: tiny.replace(&kernel_sha, &"0".repeat(64)), expect: vec!["kernel", "sha256 mismatch"] },
        Case { name: "invalid-sha256", recipe: tiny.replace(&kernel_sha, "abc"), expect: vec!["inputs.kernel.sha256", "64 lowercase hex"] },
        Case { name: "missing-file", recipe: tiny.replace(KERNEL_DEB, "no-such-kernel.deb"), expect: vec!["kernel", "no-such-kernel.deb"] },
        Case {
            name: "truncated-deb",
            recipe: tiny_recipe("").replace(&format!("[inputs.stub]\nsha256 = \"{}\"\nsources = [{:?}]", sha256_of(&inputs.join(STUB252_DEB)), inputs.join(STUB252_DEB).display().to_string()),
                &format!("[inputs.stub]\nsha256 = \"{}\"\nsources = [{:?}]", sha256_of(&truncated), truncated.display().to_string())),
            expect: vec!["truncated.deb"],
        },
        Case { name: "traversal-source", recipe: tiny_recipe("[[payload.files]]\npath = \"/etc/x\"\nsource = \"../../../etc/shadow\"\n"), expect: vec!["payload.files[0].source", "'..'"] },
        Case { name: "traversal-image-path", recipe: tiny_recipe("[[payload.files]]\npath = \"/etc/../../x\"\nsource = \"files/ok\"\n"), expect: vec!["payload.files[0].path", "'..'"] },
        Case { name: "relative-image-path", recipe: tiny_recipe("[[payload.files]]\npath = \"etc/x\"\nsource = \"files/ok\"\n"), expect: vec!["payload.files[0].path", "absolute"] },
        Case { name: "signed-stub", recipe: with_stub_file(&signed), expect: vec!["signed-stub.efi", "already signed"] },
        Case { name: "unknown-stub", recipe: with_stub_file(&stub999), expect: vec!["stub999.efi", "systemd-stub 999.39-1~deb12u2 is not supported", "252"] },
        Case {
            name: "non-pe-kernel",
            recipe: format!(
                "[image]\nname = \"t\"\nversion = \"1\"\n[kernel]\ninput = \"kernel\"\n[stub]\ninput = \"stub\"\npath = \"{STUB_MEMBER}\"\n{}{}",
                input_table("kernel", &not_pe),
                input_table("stub", &inputs.join(STUB252_DEB))
            ),
            expect: vec!["not-a-kernel", "not a PE image"],
        },
        Case { name: "undefined-input", recipe: tiny.replace("input = \"stub\"", "input = \"nope\""), expect: vec!["stub.input", "nope"] },
        Case { name: "member-not-in-deb", recipe: tiny.replace(KERNEL_MEMBER, "boot/vmlinuz-9.9"), expect: vec!["boot/vmlinuz-9.9"] },
        Case { name: "executable-not-in-sysroot", recipe: tiny_recipe("[payload]\nexecutables = [\"/usr/bin/missing\"]\n"), expect: vec!["/usr/bin/missing", "not found in the sysroot"] },
        Case { name: "empty-argv", recipe: tiny_recipe("[init.server]\nargv = []\n"), expect: vec!["init.server.argv", "empty"] },
        Case { name: "bad-mode", recipe: tiny_recipe("[[payload.files]]\npath = \"/etc/x\"\nsource = \"files/ok\"\nmode = \"rwx\"\n"), expect: vec!["payload.files[0].mode", "octal"] },
        Case { name: "two-contents", recipe: tiny_recipe("[[payload.files]]\npath = \"/etc/x\"\nsource = \"files/ok\"\ncontent = \"x\"\n"), expect: vec!["payload.files[0]", "exactly one"] },
        Case { name: "missing-payload-source", recipe: tiny_recipe("[[payload.files]]\npath = \"/etc/x\"\nsource = \"files/absent\"\n"), expect: vec!["payload.files[0]", "files/absent"] },
        Case { name: "bad-exception", recipe: tiny_recipe("[[policy.exceptions]]\nrule = \"ZOA-P001\"\npath = \"/bin/sh\"\nreason = \"\"\n"), expect: vec!["policy.exceptions[0].reason"] },
        Case { name: "huge-epoch", recipe: tiny.replace("version = \"1\"", "version = \"1\"\nsource_date_epoch = 5000000000"), expect: vec!["image.source_date_epoch", "32 bits"] },
        Case { name: "bad-name", recipe: tiny.replace("name = \"tiny\"", "name = \"../evil\""), expect: vec!["image.name"] },
    ];
    assert!(cases.len() >= 15);
    for case in &cases {
        refused(&f, case);
    }
}

#[test]
fn output_path_that_is_a_file_is_refused() {
    let f = Fixture::new();
    let recipe = f.write("r.toml", tiny_recipe(""));
    let blocker = f.write("out", b"a file, not a directory");
    let o = f.build(&recipe, "out");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("not a directory"), "{err}");
    assert_eq!(std::fs::read(blocker).unwrap(), b"a file, not a directory");
}

#[test]
fn dynamic_pid1_is_refused() {
    let f = Fixture::new();
    let recipe = f.write("r.toml", tiny_recipe(""));
    let o = run(zoa(&f.cache())
        .arg("build")
        .arg(&recipe)
        .arg("--out")
        .arg(f.path("out"))
        .arg("--init")
        .arg(std::env::current_exe().unwrap()));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("PID 1 must be static"),
        "{}",
        stderr(&o)
    );
    assert!(absent_or_empty(&f.path("out")));
}
