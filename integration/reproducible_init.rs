//! zoa-init is a function of the commit alone: `zoa build-init` in a deliberately different
//! environment gives the same bytes and the same provenance as the zoa-init the suite uses
//! (built by `.ci/test` with `zoa build-init` in the checkout).
//!
//! The second build differs in everything a stranger's machine could: the checkout's path,
//! CARGO_HOME (a fresh one: its registry sources are unpacked at another path), HOME, the
//! zig install path, umask 077, TZ, locale, and hostile compiler settings in the
//! environment (RUSTFLAGS, CC, CFLAGS, CARGO_PROFILE_RELEASE_*, SOURCE_DATE_EPOCH), which
//! `zoa build-init` ignores (and names).

use crate::common;

use common::*;
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

/// A tree of hard links (or copies across file systems): zig at another path, cheaply.
fn link_tree(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let (from, to) = (entry.path(), dest.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            link_tree(&from, &to);
        } else if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).unwrap();
        }
    }
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs::home_dir().unwrap().join(".cargo"))
}

fn zig() -> PathBuf {
    let zig = std::env::var_os("ZOA_ZIG")
        .map(PathBuf::from)
        .expect("ZOA_ZIG is not set: run .ci/deps and source .ci/env");
    std::fs::canonicalize(zig).unwrap()
}

#[test]
fn zoa_init_is_the_same_from_another_environment() {
    let reference = init_binary();
    let reference_prov = std::fs::read(Provenance::path_for(&reference)).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: the suite's zoa-init must come from `zoa build-init`",
            Provenance::path_for(&reference).display()
        )
    });

    let f = Fixture::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let checkout = f.path("elsewhere/another checkout");
    copy_checkout(repo, &checkout);
    // A fresh CARGO_HOME that shares only the downloaded .crate files and the index:
    // the sources are unpacked again under another path.
    let home = f.path("home of someone else");
    let other_cargo = f.path("cargo-home-2");
    std::fs::create_dir_all(other_cargo.join("registry")).unwrap();
    for sub in ["index", "cache"] {
        std::os::unix::fs::symlink(
            cargo_home().join("registry").join(sub),
            other_cargo.join("registry").join(sub),
        )
        .unwrap();
    }
    // zig at another path (its ziglang directory: the executable and its lib/).
    let zig = zig();
    let zig_root = zig.parent().unwrap();
    link_tree(zig_root, &f.path("tools/zig/ziglang"));
    let other_zig = f.path("tools/zig/ziglang").join(zig.file_name().unwrap());
    let out = f.path("out");

    let o = Command::new("sh")
        .arg("-c")
        .arg("umask 077 && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_zoa"))
        .arg("build-init")
        .arg("--source")
        .arg(&checkout)
        .arg("--out")
        .arg(&out)
        .arg("--zig")
        .arg(&other_zig)
        .current_dir(f.path("elsewhere"))
        .env("CARGO_HOME", &other_cargo)
        .env("HOME", &home)
        .env("CARGO_NET_OFFLINE", "true")
        .env("TZ", "Pacific/Kiritimati")
        .env("LANG", "de_DE.UTF-8")
        .env("LC_ALL", "de_DE.UTF-8")
        .env("RUSTFLAGS", "-Copt-level=1 -Ctarget-cpu=native")
        .env("CC", "clang")
        .env("CFLAGS", "-O0 -g")
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("SOURCE_DATE_EPOCH", "1")
        .env_remove("ZOA_ZIG")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "zoa build-init elsewhere: {err}");
    // RUSTFLAGS and the rest are ignored, and the user is told so.
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

    let a = std::fs::read(&reference).unwrap();
    let b = std::fs::read(out.join("zoa-init")).unwrap();
    assert!(
        a == b,
        "zoa-init differs when built elsewhere: {} ({} bytes) here, {} ({} bytes) there",
        sha256_hex(&a),
        a.len(),
        sha256_hex(&b),
        b.len()
    );
    let prov_b = std::fs::read(out.join("zoa-init.provenance.json")).unwrap();
    assert!(
        reference_prov == prov_b,
        "the provenance differs when built elsewhere (it must hold no host facts):\n{}\n---\n{}",
        String::from_utf8_lossy(&reference_prov),
        String::from_utf8_lossy(&prov_b)
    );
    // No host path of either environment is in the binary.
    for needle in [
        repo.to_str().unwrap(),
        checkout.to_str().unwrap(),
        cargo_home().to_str().unwrap(),
        other_cargo.to_str().unwrap(),
    ] {
        assert!(
            memchr::memmem::find(&b, needle.as_bytes()).is_none(),
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
