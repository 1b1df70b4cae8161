//! zoa-init is a function of the commit alone. The suite's zoa-init is built once, by
//! `.ci/build-init-elsewhere` (`.ci/test` runs it), in an environment that differs in
//! everything a stranger's machine could: the checkout's path, CARGO_HOME (a fresh one: its
//! registry sources are unpacked at another path), HOME, the zig install path, umask 077, TZ,
//! locale, and hostile compiler settings in the environment (RUSTFLAGS, CC, CFLAGS,
//! CARGO_PROFILE_RELEASE_*, SOURCE_DATE_EPOCH), which `zoa build-init` ignores (and names).
//! The reference release's zoa-init was built with a plain `zoa build-init` on the machine
//! that made the release: the two must be the same bytes with the same provenance. One
//! compile covers both the environment and the machine (this test used to build zoa-init a
//! second time, on the same machine).

use crate::common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use zoa::init_build::provenance::Provenance;

/// Copies the checkout's files (not build output, not .git) to `dest`.
fn copy_checkout(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if [".git", "target", "dist"].iter().any(|n| name == *n) {
            continue;
        }
        let (from, to) = (entry.path(), dest.join(&name));
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            copy_checkout(&from, &to);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
        } else {
            std::fs::copy(&from, &to).unwrap();
        }
    }
}

fn zig() -> PathBuf {
    let zig = std::env::var_os("ZOA_ZIG")
        .map(PathBuf::from)
        .expect("ZOA_ZIG is not set: run .ci/deps and source .ci/env");
    std::fs::canonicalize(zig).unwrap()
}

fn read_json(path: &Path, what: &str) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}: {what}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn zoa_init_is_the_same_from_another_environment() {
    let init = init_binary();
    let record = read_json(
        &init.with_file_name("elsewhere.json"),
        "the suite's zoa-init must come from .ci/build-init-elsewhere (.ci/test runs it)",
    );
    let bytes = std::fs::read(&init).unwrap();
    let digest = sha256_hex(&bytes);
    assert_eq!(
        record["zoa_init_sha256"].as_str(),
        Some(digest.as_str()),
        "{} was rebuilt after .ci/build-init-elsewhere made it: run that again",
        init.display()
    );

    // RUSTFLAGS and the rest were ignored, and the user was told so.
    let err = record["stderr"].as_str().unwrap();
    let note = err
        .lines()
        .find(|l| l.contains("ignoring"))
        .unwrap_or_else(|| panic!("no note about the ignored variables:\n{err}"));
    for var in [
        "RUSTFLAGS",
        "CC",
        "CFLAGS",
        "CARGO_PROFILE_RELEASE_LTO",
        "SOURCE_DATE_EPOCH",
    ] {
        assert!(note.contains(var), "{var} is not named: {note}");
    }

    // The reference release's zoa-init, from its build record.
    let release = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("measurements")
        .join(REFERENCE_RELEASE);
    let reference = read_json(&release.join("build.json"), "the reference release")["init"].clone();
    assert_eq!(
        (reference["sha256"].as_str(), reference["size"].as_u64()),
        (Some(digest.as_str()), Some(bytes.len() as u64)),
        "zoa-init built elsewhere (right) is not measurements/{REFERENCE_RELEASE}'s (left), \
         built on the machine that made the release; if zoa-init changed on purpose, make a \
         new reference release (measurements/README.md)"
    );
    let provenance = read_json(&Provenance::path_for(&init), "zoa build-init writes it");
    assert!(
        provenance == reference["provenance"],
        "the provenance differs when built elsewhere (it must hold no host facts):\n{provenance:#}\n---\n{:#}",
        reference["provenance"]
    );

    // No host path of either environment is in the binary.
    let paths = record["host_paths"].as_array().unwrap();
    assert!(paths.len() >= 5, "{paths:?}");
    for needle in paths.iter().map(|p| p.as_str().unwrap()) {
        assert!(
            memchr::memmem::find(&bytes, needle.as_bytes()).is_none(),
            "{needle} is in zoa-init"
        );
    }
}

#[test]
fn a_floating_toolchain_and_an_unpinned_zig_are_refused() {
    let f = Fixture::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let checkout = f.path("checkout");
    copy_checkout(repo, &checkout);
    let zoa_build_init = |zig: &Path| {
        Command::new(env!("CARGO_BIN_EXE_zoa"))
            .arg("build-init")
            .arg("--source")
            .arg(&checkout)
            .arg("--zig")
            .arg(zig)
            .output()
            .unwrap()
    };
    // A zig that is not the pinned executable.
    let fake = f.write("zig", "#!/bin/sh\necho 0.17.0\n");
    let o = zoa_build_init(&fake);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("C toolchain") && err.contains("init/c-toolchain.toml"),
        "{err}"
    );
    // A channel that is not an exact release.
    let toolchain = checkout.join("rust-toolchain.toml");
    let text = std::fs::read_to_string(&toolchain).unwrap();
    std::fs::write(
        &toolchain,
        text.replace("channel = \"1.95.0\"", "channel = \"stable\""),
    )
    .unwrap();
    let o = zoa_build_init(&zig());
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("rust-toolchain.toml") && err.contains("exact release"),
        "{err}"
    );
    // Nothing was built or written.
    assert!(!checkout.join("target/zoa-init/zoa-init").exists());
}
