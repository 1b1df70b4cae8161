//! `zoa keygen`, `zoa sign`, `zoa verify` and `zoa log` end to end, with the Debian
//! `minisign` CLI as the independent implementation: tampering with any part of a release
//! fails with the right verdict (exit status), signatures interoperate both ways, and a
//! rebuild is compared byte for byte.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const EXIT_POLICY_VIOLATION: i32 = 3;
const EXIT_BAD_SIGNATURE: i32 = 10;
const EXIT_ARTIFACT_MISMATCH: i32 = 11;
const EXIT_MEASUREMENT_MISMATCH: i32 = 12;
const EXIT_NOT_REPRODUCIBLE: i32 = 13;

struct Release {
    f: Fixture,
    recipe: PathBuf,
    dir: PathBuf,
    key: PathBuf,
    pubkey: PathBuf,
}

fn zoa_in(f: &Fixture) -> Command {
    let mut c = zoa(&f.cache());
    c.env_remove("ZOA_KEY_PASSWORD");
    c
}

/// A tiny image, built, with a fresh unencrypted key pair, signed.
fn signed_release() -> Release {
    let f = Fixture::new();
    let recipe = f.write("recipe.toml", tiny_recipe(""));
    let o = f.build(&recipe, "rel");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(zoa_in(&f)
        .args(["keygen", "--no-password", "--out"])
        .arg(f.path("ci")));
    assert!(o.status.success(), "{}", stderr(&o));
    let release = Release {
        dir: f.path("rel"),
        key: f.path("ci.key"),
        pubkey: f.path("ci.pub"),
        recipe,
        f,
    };
    let o = run(zoa_in(&release.f)
        .arg("sign")
        .arg(&release.dir)
        .arg("--key")
        .arg(&release.key));
    assert!(o.status.success(), "{}", stderr(&o));
    release
}

impl Release {
    fn verify(&self, extra: &[&str]) -> std::process::Output {
        run(zoa_in(&self.f)
            .arg("verify")
            .arg(&self.dir)
            .arg("--pubkey")
            .arg(&self.pubkey)
            .args(extra))
    }

    /// Runs `edit` on a copy of the release directory and verifies the copy.
    fn verify_tampered(&self, name: &str, edit: impl FnOnce(&Path)) -> std::process::Output {
        let copy = self.f.path(name);
        std::fs::create_dir_all(&copy).unwrap();
        for e in std::fs::read_dir(&self.dir).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
        edit(&copy);
        run(zoa_in(&self.f)
            .arg("verify")
            .arg(&copy)
            .arg("--pubkey")
            .arg(&self.pubkey))
    }
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_signed_release_verifies_and_lists_its_artifacts() {
    let r = signed_release();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.dir.join("release.json")).unwrap()).unwrap();
    let paths: Vec<&str> = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec![
            "uki.efi",
            "build.json",
            "measurements.json",
            "sbom.spdx.json"
        ]
    );
    assert_eq!(
        manifest["measurements"]["pcrs"]["4"]["sha384"]
            .as_str()
            .unwrap()
            .len(),
        96
    );
    let o = r.verify(&["--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["artifacts_checked"].as_array().unwrap().len(), 4);
    assert!(report["warning"].is_null());
    // Files verify does not cover are ignored (derived disk images, deploy state).
    std::fs::write(r.dir.join("disk.raw"), b"derived").unwrap();
    std::fs::create_dir_all(r.dir.join("deploy")).unwrap();
    std::fs::write(r.dir.join("deploy/state.json"), b"{}").unwrap();
    assert!(r.verify(&[]).status.success());
    // Signing again gives the same manifest bytes (canonical serialisation).
    let before = std::fs::read(r.dir.join("release.json")).unwrap();
    let o = run(zoa_in(&r.f)
        .arg("sign")
        .arg(&r.dir)
        .arg("--key")
        .arg(&r.key));
    assert!(o.status.success());
    assert_eq!(std::fs::read(r.dir.join("release.json")).unwrap(), before);
}

/// A tampering case: name, the edit, the expected exit status and a word of the error.
type TamperCase = (&'static str, Box<dyn FnOnce(&Path)>, i32, &'static str);

#[test]
fn tampering_is_caught_with_the_right_verdict() {
    let r = signed_release();
    let cases: Vec<TamperCase> = vec![
        (
            "manifest",
            Box::new(|d: &Path| {
                let p = d.join("release.json");
                let t = std::fs::read_to_string(&p).unwrap().replacen(
                    "\"version\": \"1\"",
                    "\"version\": \"2\"",
                    1,
                );
                std::fs::write(p, t).unwrap();
            }),
            EXIT_BAD_SIGNATURE,
            "release.json.minisig",
        ),
        (
            "uki",
            Box::new(|d: &Path| flip_byte(&d.join("uki.efi"), 5000)),
            EXIT_ARTIFACT_MISMATCH,
            "uki.efi",
        ),
        (
            "build-json",
            Box::new(|d: &Path| flip_byte(&d.join("build.json"), 10)),
            EXIT_ARTIFACT_MISMATCH,
            "build.json",
        ),
        (
            "measurements",
            Box::new(|d: &Path| flip_byte(&d.join("measurements.json"), 10)),
            EXIT_ARTIFACT_MISMATCH,
            "measurements.json",
        ),
        (
            "sbom",
            Box::new(|d: &Path| flip_byte(&d.join("sbom.spdx.json"), 100)),
            EXIT_ARTIFACT_MISMATCH,
            "sbom.spdx.json",
        ),
        (
            "sbom-removed",
            Box::new(|d: &Path| std::fs::remove_file(d.join("sbom.spdx.json")).unwrap()),
            EXIT_ARTIFACT_MISMATCH,
            "sbom.spdx.json",
        ),
        (
            "signature",
            Box::new(|d: &Path| {
                let p = d.join("release.json.minisig");
                let t = std::fs::read_to_string(&p).unwrap();
                let lines: Vec<&str> = t.lines().collect();
                let mut sig = lines[1].to_owned().into_bytes();
                sig[20] = if sig[20] == b'A' { b'B' } else { b'A' };
                let mut out = format!("{}\n{}\n", lines[0], String::from_utf8(sig).unwrap());
                for l in &lines[2..] {
                    out.push_str(l);
                    out.push('\n');
                }
                std::fs::write(p, out).unwrap();
            }),
            EXIT_BAD_SIGNATURE,
            "minisig",
        ),
        (
            "trusted-comment",
            Box::new(|d: &Path| {
                let p = d.join("release.json.minisig");
                let t = std::fs::read_to_string(&p)
                    .unwrap()
                    .replace("name=tiny", "name=evil");
                std::fs::write(p, t).unwrap();
            }),
            EXIT_BAD_SIGNATURE,
            "minisig",
        ),
    ];
    for (name, edit, code, expect) in cases {
        let o = r.verify_tampered(name, edit);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{name}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
        assert!(err.contains(expect), "{name}: {err}");
    }
    // A valid signature over a manifest whose measurements are not the UKI's: re-sign a
    // manifest with altered PCRs using the right key.
    let o = r.verify_tampered("remeasure", |d| {
        let p = d.join("release.json");
        let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        m["measurements"]["pcrs"]["11"]["sha256"] = serde_json::Value::String("00".repeat(32));
        std::fs::write(&p, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        let st = Command::new("minisign")
            .args(["-S", "-W", "-s"])
            .arg(&r.key)
            .arg("-m")
            .arg(&p)
            .arg("-t")
            .arg("foreign comment")
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    });
    assert_eq!(
        o.status.code(),
        Some(EXIT_MEASUREMENT_MISMATCH),
        "{}",
        stderr(&o)
    );
    // The wrong public key.
    let o = run(zoa_in(&r.f)
        .args(["keygen", "--no-password", "--out"])
        .arg(r.f.path("other")));
    assert!(o.status.success());
    let o = run(zoa_in(&r.f)
        .arg("verify")
        .arg(&r.dir)
        .arg("--pubkey")
        .arg(r.f.path("other.pub")));
    assert_eq!(o.status.code(), Some(EXIT_BAD_SIGNATURE), "{}", stderr(&o));
}

#[test]
fn minisign_cli_interoperates_both_ways() {
    let r = signed_release();
    // What zoa signs, minisign verifies (and shows zoa's trusted comment).
    let o = Command::new("minisign")
        .arg("-Vm")
        .arg(r.dir.join("release.json"))
        .arg("-p")
        .arg(&r.pubkey)
        .output()
        .expect("minisign (Debian package minisign)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("zoa-release name=tiny version=1 manifest-sha256="));
    // What minisign signs (with its own trusted comment) verifies with zoa, with a warning.
    let st = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(r.f.path("m.pub"))
        .arg("-s")
        .arg(r.f.path("m.key"))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let st = Command::new("minisign")
        .args(["-S", "-W", "-s"])
        .arg(r.f.path("m.key"))
        .arg("-m")
        .arg(r.dir.join("release.json"))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let o = run(zoa_in(&r.f)
        .arg("verify")
        .arg(&r.dir)
        .arg("--pubkey")
        .arg(r.f.path("m.pub")));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning") && stderr(&o).contains("trusted comment is not zoa's"),
        "{}",
        stderr(&o)
    );
    // A zoa-format comment that contradicts the manifest fails even with a valid signature.
    let st = Command::new("minisign")
        .args(["-S", "-W", "-s"])
        .arg(r.f.path("m.key"))
        .arg("-m")
        .arg(r.dir.join("release.json"))
        .args(["-t", "zoa-release name=tiny version=9 manifest-sha256=00"])
        .output()
        .unwrap();
    assert!(st.status.success());
    let o = run(zoa_in(&r.f)
        .arg("verify")
        .arg(&r.dir)
        .arg("--pubkey")
        .arg(r.f.path("m.pub")));
    assert_eq!(o.status.code(), Some(EXIT_BAD_SIGNATURE), "{}", stderr(&o));
}

#[test]
fn rebuild_passes_on_the_same_recipe_and_names_a_changed_input() {
    let r = signed_release();
    let o = r.verify(&["--rebuild", r.recipe.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Another stub (same recipe otherwise): not reproducible, and the input is named.
    let changed = with_stub(tiny_recipe(""), STUB262_DEB);
    let other = r.f.write("changed.toml", changed);
    let o = r.verify(&["--rebuild", other.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(EXIT_NOT_REPRODUCIBLE),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("input stub changed"), "{}", stderr(&o));
}

#[test]
fn rebuild_of_a_policy_violating_recipe_exits_with_the_policy_status() {
    let r = signed_release();
    // The release verifies; the rebuild stops at the shell-free policy (a shell by name),
    // before anything is compared: exit 3 as for `zoa build` and `zoa check`, not 1.
    r.f.write("files/sh", b"x");
    let shell = r.f.write(
        "shell.toml",
        tiny_recipe("[[payload.files]]\npath = \"/bin/sh\"\nsource = \"files/sh\"\n"),
    );
    let o = r.verify(&["--rebuild", shell.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(EXIT_POLICY_VIOLATION), "{err}");
    assert!(err.contains("ZOA-P001") && err.contains("/bin/sh"), "{err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line on stderr: {err}"
    );
}

#[test]
fn the_release_log_detects_rewritten_and_reordered_history() {
    let r = signed_release();
    let log = r.f.path("releases.log");
    // Two releases: the same image signed, then a second version.
    let o = run(zoa_in(&r.f)
        .args(["log", "append"])
        .arg(&log)
        .arg(&r.dir)
        .arg("--pubkey")
        .arg(&r.pubkey));
    assert!(o.status.success(), "{}", stderr(&o));
    let v2 = r.f.write(
        "v2.toml",
        tiny_recipe("").replace("version = \"1\"", "version = \"2\""),
    );
    assert!(r.f.build(&v2, "rel2").status.success());
    assert!(run(zoa_in(&r.f)
        .arg("sign")
        .arg(r.f.path("rel2"))
        .arg("--key")
        .arg(&r.key))
    .status
    .success());
    let o = run(zoa_in(&r.f)
        .args(["log", "append"])
        .arg(&log)
        .arg(r.f.path("rel2"))
        .arg("--pubkey")
        .arg(&r.pubkey));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(zoa_in(&r.f)
        .args(["log", "verify"])
        .arg(&log)
        .arg("--pubkey")
        .arg(&r.pubkey)
        .arg("--json"));
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["entries"], 2);

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let check = |content: String, expect: &str| {
        let p = r.f.write("bad.log", content);
        let o = run(zoa_in(&r.f)
            .args(["log", "verify"])
            .arg(&p)
            .arg("--pubkey")
            .arg(&r.pubkey));
        assert!(!o.status.success(), "{expect}: accepted");
        assert!(stderr(&o).contains(expect), "{expect}: {}", stderr(&o));
    };
    check(format!("{}\n{}\n", lines[1], lines[0]), "sequence number");
    check(format!("{}\n", lines[1]), "sequence number");
    let rewritten = lines[0].replace("\"version\":\"1\"", "\"version\":\"7\"");
    check(format!("{rewritten}\n{}\n", lines[1]), "line 1");

    // A key rotation: version 3 signed by a new key; the log needs both public keys.
    assert!(run(zoa_in(&r.f)
        .args(["keygen", "--no-password", "--out"])
        .arg(r.f.path("ci2")))
    .status
    .success());
    let v3 = r.f.write(
        "v3.toml",
        tiny_recipe("").replace("version = \"1\"", "version = \"3\""),
    );
    assert!(r.f.build(&v3, "rel3").status.success());
    assert!(run(zoa_in(&r.f)
        .arg("sign")
        .arg(r.f.path("rel3"))
        .arg("--key")
        .arg(r.f.path("ci2.key")))
    .status
    .success());
    let append_v3 = |keys: &[&Path]| {
        let mut cmd = zoa_in(&r.f);
        cmd.args(["log", "append"]).arg(&log).arg(r.f.path("rel3"));
        for k in keys {
            cmd.arg("--pubkey").arg(k);
        }
        run(&mut cmd)
    };
    let o = append_v3(&[&r.pubkey]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("none of the trusted keys"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        text,
        "a refused append changed the log"
    );
    let new_pub = r.f.path("ci2.pub");
    let o = append_v3(&[&r.pubkey, &new_pub]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(zoa_in(&r.f)
        .args(["log", "verify"])
        .arg(&log)
        .arg("--pubkey")
        .arg(&r.pubkey)
        .arg("--pubkey")
        .arg(&new_pub)
        .arg("--json"));
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<&str> = summary["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], ids[1]);
    assert_ne!(ids[1], ids[2]);
    // Without the new key, the third entry is refused by line number.
    check(std::fs::read_to_string(&log).unwrap(), "line 3");
}
