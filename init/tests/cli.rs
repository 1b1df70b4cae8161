//! The binary when it is not PID 1: `--check-config`, and refusing to boot.

use std::process::Command;

fn zoa_init() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zoa-init"))
}

#[test]
fn check_config_prints_the_normalised_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("init.json");
    std::fs::write(
        &path,
        r#"{"hostname": "probe", "server": {"argv": ["/usr/bin/llama-server"], "env": {"HOME": "/tmp"}}}"#,
    )
    .unwrap();
    let out = zoa_init()
        .arg("--check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("{\n  \"hostname\": \"probe\",\n  \"print_pcrs\": true,"));
    assert!(text.contains("\"cwd\": \"/\""));
    assert!(text.ends_with("}\n"));
    // The normalised form is a fixed point.
    std::fs::write(&path, &text).unwrap();
    let again = zoa_init()
        .arg("--check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);
}

#[test]
fn check_config_refuses_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("init.json");
    std::fs::write(&path, r#"{"hostname": "h", "shell": "/bin/sh"}"#).unwrap();
    let out = zoa_init()
        .arg("--check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!(
        "zoa-init: {}: unknown field `shell`",
        path.display()
    )));
}

#[test]
fn refuses_to_boot_when_not_pid_1() {
    for args in [
        &[][..],
        &["--check-config"][..],
        &["extra", "args", "here"][..],
    ] {
        let out = zoa_init().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.starts_with("zoa-init: refusing to run: not PID 1"),
            "{err}"
        );
    }
}

#[test]
fn version_and_help() {
    let out = zoa_init().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("zoa-init {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = zoa_init().arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("--check-config FILE"));
}
