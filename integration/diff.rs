//! `zoa diff`: two releases built from small recipes that differ in one thing each, and
//! the diff must name that thing (with old and new values), the PCRs it moves, and
//! nothing else. The library (`zoa::release::diff`) carries the logic tests; the last tests
//! run the `zoa diff` command line itself.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use zoa::measure::Pcr;
use zoa::release::diff::{diff, Cause, Detail, DiffReport, Level, Side};

/// Builds `recipe` into `f/<name>` and returns the directory.
fn build(f: &Fixture, name: &str, recipe: &str) -> PathBuf {
    let path = f.write(&format!("{name}.toml"), recipe);
    let o = f.build(&path, name);
    assert!(o.status.success(), "building {name}: {}", stderr(&o));
    f.path(name)
}

fn diff_paths(a: &Path, b: &Path) -> DiffReport {
    let a = Side::detect(a).expect("side A");
    let b = Side::detect(b).expect("side B");
    diff(&a, &b).expect("diff")
}

/// Paths of the root causes (nothing else explains them): what a CI gate filters on.
fn roots(r: &DiffReport) -> Vec<&str> {
    r.causes
        .iter()
        .filter(|c| c.because.is_empty())
        .map(|c| c.path.as_str())
        .collect()
}

fn cause<'a>(r: &'a DiffReport, path: &str) -> &'a Cause {
    r.causes
        .iter()
        .find(|c| c.path == path)
        .unwrap_or_else(|| panic!("no cause {path} in {:#?}", r.causes))
}

fn changed_pcrs(r: &DiffReport) -> Vec<u32> {
    let mut v: Vec<u32> = r
        .pcrs
        .iter()
        .filter(|p| p.changed)
        .map(|p| p.pcr.into())
        .collect();
    v.dedup();
    v
}

const SERVER_TOML: &str = "threads = 2\n";

fn with_server_toml(content: &str) -> String {
    tiny_recipe(&format!(
        "[[payload.files]]\npath = \"/etc/server.toml\"\ncontent = {content:?}\n"
    ))
}

#[test]
fn command_line_change_names_old_and_new_values() {
    let f = Fixture::new();
    let a = build(&f, "a", &tiny_recipe(""));
    let b = build(
        &f,
        "b",
        &tiny_recipe("").replace("console=ttyS0 panic=-1", "console=ttyS0 panic=-1 quiet"),
    );
    let r = diff_paths(&a, &b);
    assert!(!r.identical);
    assert_eq!(changed_pcrs(&r), [4, 11]);
    // Every predicted PCR in both banks is listed, changed or not.
    assert_eq!(r.pcrs.len(), 8);
    let c = cause(&r, ".cmdline");
    assert_eq!(c.kind, "cmdline");
    assert_eq!(c.level, Level::Image);
    assert_eq!(c.pcrs, [Pcr::PCR4, Pcr::PCR11]);
    assert_eq!(c.old, Some(Detail::Text("console=ttyS0 panic=-1".into())));
    assert_eq!(
        c.new,
        Some(Detail::Text("console=ttyS0 panic=-1 quiet".into()))
    );
    assert_eq!(roots(&r), [".cmdline"]);
    assert_eq!(cause(&r, "PCR4:uki").because, [".cmdline"]);
    assert_eq!(cause(&r, "PCR11:.cmdline").because, [".cmdline"]);

    let text = r.render_text();
    assert!(
        text.contains(
            r#".cmdline changed: "console=ttyS0 panic=-1" → "console=ttyS0 panic=-1 quiet""#
        ),
        "{text}"
    );
    // Only what changed is named (after the two lines identifying A and B).
    let body: String = text.lines().skip(2).collect::<Vec<_>>().join("\n");
    for unchanged in [".initrd", ".linux", "stub", "PCR7", "PCR12", "input"] {
        assert!(!body.contains(unchanged), "{unchanged} is named:\n{text}");
    }
}

#[test]
fn a_compression_change_is_named_as_the_cause_of_the_new_initrd() {
    let f = Fixture::new();
    let zstd = |level: u32| {
        tiny_recipe("").replace(
            "cmdline = \"console=ttyS0 panic=-1\"",
            &format!("cmdline = \"console=ttyS0 panic=-1\"\ncompression = \"zstd\"\ncompression_level = {level}"),
        )
    };
    let a = build(&f, "a", &tiny_recipe(""));
    let b = build(&f, "b", &zstd(3));
    let c = build(&f, "c", &zstd(19));
    let r = diff_paths(&a, &b);
    assert_eq!(changed_pcrs(&r), [4, 11]);
    let packing = cause(&r, "build:initramfs.compression");
    assert_eq!(packing.kind, "build.initramfs_compression");
    assert_eq!(packing.old, Some(Detail::Text("none".into())));
    assert_eq!(packing.new, Some(Detail::Text("zstd level 3".into())));
    // The same files, packed differently: the archive change is put down to the packing.
    let initrd = cause(&r, ".initrd");
    assert_eq!(initrd.kind, "initrd.archive");
    assert_eq!(initrd.because, ["build:initramfs.compression"]);
    assert_eq!(roots(&r), ["build:initramfs.compression"]);

    let r = diff_paths(&b, &c);
    assert_eq!(
        cause(&r, "build:initramfs.compression").new,
        Some(Detail::Text("zstd level 19".into()))
    );
    assert_eq!(roots(&r), ["build:initramfs.compression"]);
}

#[test]
fn added_and_modified_initramfs_files_are_attributed() {
    let f = Fixture::new();
    let a = build(&f, "a", &tiny_recipe(""));
    let b = build(&f, "b", &with_server_toml(SERVER_TOML));
    let c = build(&f, "c", &with_server_toml("threads = 4\n"));

    let r = diff_paths(&a, &b);
    assert_eq!(changed_pcrs(&r), [4, 11]);
    let added = cause(&r, ".initrd:/etc/server.toml");
    assert_eq!(added.kind, "initrd.file_added");
    let Some(Detail::File(file)) = &added.new else {
        panic!("{added:?}")
    };
    assert_eq!(file.size, Some(SERVER_TOML.len() as u64));
    assert_eq!(
        file.sha256.as_deref(),
        Some(sha256_hex(SERVER_TOML.as_bytes()).as_str())
    );
    assert_eq!(file.origin.as_deref(), Some("recipe"));
    assert!(added.old.is_none());
    // The gate "nothing but /etc/server.toml changed" passes on exactly this diff.
    assert_eq!(roots(&r), [".initrd:/etc/server.toml"]);
    assert_eq!(
        cause(&r, "PCR11:.initrd").because,
        [".initrd:/etc/server.toml"]
    );
    assert!(r
        .render_text()
        .contains(".initrd: /etc/server.toml added (file 0644, 12 bytes, sha256 "));

    let r = diff_paths(&b, &c);
    let m = cause(&r, ".initrd:/etc/server.toml");
    assert_eq!(m.kind, "initrd.file_modified");
    assert!(
        m.message.contains(&format!(
            "sha256 {} → {}",
            sha256_hex(SERVER_TOML.as_bytes()),
            sha256_hex(b"threads = 4\n")
        )),
        "{}",
        m.message
    );
    assert_eq!(roots(&r), [".initrd:/etc/server.toml"]);

    // Without build.json (two UKIs) the archives are read back: same attribution.
    let r = diff_paths(&a.join("uki.efi"), &b.join("uki.efi"));
    assert_eq!(roots(&r), [".initrd:/etc/server.toml"]);
    let added = cause(&r, ".initrd:/etc/server.toml");
    let Some(Detail::File(file)) = &added.new else {
        panic!("{added:?}")
    };
    assert_eq!(
        file.sha256.as_deref(),
        Some(sha256_hex(SERVER_TOML.as_bytes()).as_str())
    );
    assert_eq!(file.origin, None);
}

#[test]
fn stub_change_explains_the_kernel_event_and_new_pcr11_sections() {
    let f = Fixture::new();
    let a = build(&f, "a", &tiny_recipe(""));
    let b = build(&f, "b", &with_stub(tiny_recipe(""), STUB262_DEB));
    let r = diff_paths(&a, &b);
    assert_eq!(changed_pcrs(&r), [4, 11]);
    let stub = cause(&r, "stub");
    assert_eq!(stub.kind, "stub");
    assert!(
        stub.message
            .contains("systemd-stub 252.39-1~deb12u2 → 262.1-1"),
        "{}",
        stub.message
    );
    assert!(
        stub.message.contains("kernel-event rule differs"),
        "{}",
        stub.message
    );
    assert!(
        stub.message.contains("PCR11 rules differ"),
        "{}",
        stub.message
    );
    assert_eq!(stub.because, ["input:stub"]);
    let input = cause(&r, "input:stub");
    assert_eq!(input.kind, "input.modified");
    assert!(
        input
            .message
            .contains("systemd-boot-efi 252.39-1~deb12u2 → 262.1-1"),
        "{}",
        input.message
    );
    let kernel_event = cause(&r, "PCR4:kernel");
    assert!(
        kernel_event.message.contains("is gone"),
        "{}",
        kernel_event.message
    );
    assert_eq!(kernel_event.because, ["stub"]);
    for section in [".uname", ".sbat"] {
        let c = cause(&r, &format!("PCR11:{section}"));
        assert!(c.message.contains("now measured"), "{}", c.message);
        assert_eq!(c.because, ["stub"]);
    }
    assert_eq!(roots(&r), ["input:stub"]);
}

/// Debian 12's stub to Debian 13's: both start the kernel with LoadImage (the kernel event
/// stays), and 257 measures `.uname` and its `.sbat` too.
#[test]
fn stub_252_to_257_explains_the_new_pcr11_sections_only() {
    let f = Fixture::new();
    let a = build(&f, "a", &tiny_recipe(""));
    let b = build(&f, "b", &with_stub(tiny_recipe(""), STUB257_DEB));
    let r = diff_paths(&a, &b);
    assert_eq!(changed_pcrs(&r), [4, 11]);
    let stub = cause(&r, "stub");
    for part in [
        "systemd-stub 252.39-1~deb12u2 → 257.13-1~deb13u1",
        "PCR11 rules differ: 257 also measures .ucode, .uname, .sbat",
    ] {
        assert!(stub.message.contains(part), "{}", stub.message);
    }
    assert!(
        !stub.message.contains("kernel-event rule differs"),
        "{}",
        stub.message
    );
    assert_eq!(stub.because, ["input:stub"]);
    for section in [".uname", ".sbat"] {
        let c = cause(&r, &format!("PCR11:{section}"));
        assert!(c.message.contains("now measured"), "{}", c.message);
        assert_eq!(c.because, ["stub"]);
    }
    assert!(
        r.causes.iter().all(|c| c.path != "PCR4:kernel"),
        "the kernel event did not change"
    );
    assert_eq!(roots(&r), ["input:stub"]);
}

#[test]
fn kernel_change_names_releases_and_digests() {
    let Some(deb) = std::env::var_os("ZOA_STD_KERNEL_DEB").map(PathBuf::from) else {
        eprintln!(
            "note: ZOA_STD_KERNEL_DEB is not set (.ci/env sets it): skipping the kernel-change case"
        );
        return;
    };
    let name = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let release = name
        .trim_start_matches("linux-image-")
        .split('_')
        .next()
        .unwrap_or_default()
        .to_owned();
    let f = Fixture::new();
    let inputs = shared_inputs();
    let a = build(&f, "a", &tiny_recipe(""));
    let b = build(
        &f,
        "b",
        &tiny_recipe("")
            .replace(
                &input_table("kernel", &inputs.join(KERNEL_DEB)),
                &input_table("kernel", &deb),
            )
            .replace(KERNEL_MEMBER, &format!("boot/vmlinuz-{release}")),
    );
    let r = diff_paths(&a, &b);
    assert_eq!(changed_pcrs(&r), [4, 11]);
    let k = cause(&r, ".linux");
    assert_eq!(k.kind, "kernel");
    let (Some(Detail::Kernel(old)), Some(Detail::Kernel(new))) = (&k.old, &k.new) else {
        panic!("{k:?}")
    };
    assert_eq!(old.release.as_deref(), Some("6.1.0-56-cloud-amd64"));
    assert_eq!(new.release.as_deref(), Some(release.as_str()));
    assert_ne!(old.sha256, new.sha256);
    assert!(
        k.message
            .contains(&format!("6.1.0-56-cloud-amd64 → {release}")),
        "{}",
        k.message
    );
    assert_eq!(k.because, ["input:kernel"]);
    assert_eq!(cause(&r, "PCR4:kernel").because, [".linux"]);
    assert_eq!(cause(&r, "PCR11:.linux").because, [".linux"]);
    // Stub 252 does not measure .uname: it moves PCR4 only.
    assert_eq!(cause(&r, ".uname").pcrs, [Pcr::PCR4]);
    assert_eq!(roots(&r), ["input:kernel"]);
}

#[test]
fn identical_releases_report_no_change() {
    let f = Fixture::new();
    let recipe = with_server_toml(SERVER_TOML);
    let a = build(&f, "a", &recipe);
    let b = build(&f, "b", &recipe);
    let r = diff_paths(&a, &b);
    assert!(r.identical, "{:#?}", r.causes);
    assert!(r.causes.is_empty());
    assert!(r.pcrs.iter().all(|p| !p.changed && p.old.is_some()));
    assert!(
        r.render_text().starts_with("no change\n"),
        "{}",
        r.render_text()
    );
    // The same holds for the UKIs and for their measurements.
    assert!(diff_paths(&a.join("uki.efi"), &b.join("uki.efi")).identical);
}

#[test]
fn measurement_files_diff_at_event_level() {
    let f = Fixture::new();
    let a = build(&f, "a", &tiny_recipe(""));
    let b = build(&f, "b", &with_server_toml(SERVER_TOML));
    let measure = |dir: &Path, out: &str| {
        let o = run(zoa(&f.cache()).arg("measure").arg(dir.join("uki.efi")));
        assert!(o.status.success(), "{}", stderr(&o));
        f.write(out, &o.stdout)
    };
    let (ma, mb) = (measure(&a, "a.json"), measure(&b, "b.json"));
    assert_eq!(
        Side::detect(&ma).expect("detect"),
        Side::Measurements(ma.clone())
    );
    let r = diff_paths(&ma, &mb);
    assert!(!r.identical);
    assert_eq!(changed_pcrs(&r), [4, 11]);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("A and B are measurements files")),
        "{:?}",
        r.notes
    );
    // PCR11 names the section; files cannot be told from events.
    let initrd = cause(&r, ".initrd");
    assert_eq!(initrd.kind, "initrd.archive");
    assert_eq!(roots(&r), [".initrd"]);
    assert_eq!(cause(&r, "PCR4:uki").because, [".initrd"]);
    assert!(diff_paths(&ma, &ma).identical);
    // A release directory against a measurements file works too, at event level.
    let r = diff_paths(&a, &mb);
    assert_eq!(roots(&r), [".initrd"]);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("B is a measurements file")),
        "{:?}",
        r.notes
    );
    // A directory with a measurements.json uses it instead of measuring: a PCR12 value
    // edited there shows up, and with no event behind it, is called inconsistent.
    let mut edited: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ma).expect("read")).expect("JSON");
    edited["pcrs"]["12"]["sha256"] = "11".repeat(32).into();
    f.write("a/measurements.json", edited.to_string());
    let r = diff_paths(&a, &b);
    assert_eq!(changed_pcrs(&r), [4, 11, 12]);
    let pcr12 = cause(&r, "PCR12");
    assert_eq!(pcr12.kind, "pcr.event");
    assert!(pcr12.message.contains("inconsistent"), "{}", pcr12.message);
}

// ---- The command line. These need `zoa diff` wired into src/main.rs and src/cli.rs. ----

fn zoa_diff(f: &Fixture, args: &[&Path], json: bool) -> std::process::Output {
    let mut cmd = zoa(&f.cache());
    cmd.arg("diff").args(args);
    if json {
        cmd.arg("--json");
    }
    let o = run(&mut cmd);
    assert!(
        !stderr(&o).contains("unrecognized subcommand"),
        "`zoa diff` is not wired into the command line yet (src/main.rs, src/cli.rs)"
    );
    o
}

#[test]
fn cli_json_output_structure() {
    let f = Fixture::new();
    let a = build(&f, "a", &tiny_recipe(""));
    let b = build(&f, "b", &with_server_toml(SERVER_TOML));
    let o = zoa_diff(&f, &[&a, &b], true);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["identical", "a", "b", "pcrs", "causes", "notes"]);
    assert_eq!(v["identical"], false);
    assert_eq!(v["a"]["kind"], "directory");
    assert_eq!(v["a"]["name"], "tiny");
    let pcrs = v["pcrs"].as_array().expect("pcrs");
    let listed: Vec<(u64, &str)> = pcrs
        .iter()
        .map(|p| {
            (
                p["pcr"].as_u64().unwrap_or(0),
                p["bank"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (4, "sha256"),
            (4, "sha384"),
            (7, "sha256"),
            (7, "sha384"),
            (11, "sha256"),
            (11, "sha384"),
            (12, "sha256"),
            (12, "sha384")
        ]
    );
    for p in pcrs {
        assert_eq!(p["changed"], p["old"] != p["new"], "{p}");
        assert!(p["old"].is_string() && p["new"].is_string(), "{p}");
    }
    let causes = v["causes"].as_array().expect("causes");
    for c in causes {
        for field in ["kind", "level", "path", "message"] {
            assert!(c[field].is_string(), "{field} in {c}");
        }
        assert!(c["pcrs"].is_array() && c["because"].is_array(), "{c}");
    }
    // Ordered by PCR: PCR4's causes first, PCR11's after.
    let first: Vec<u64> = causes
        .iter()
        .map(|c| c["pcrs"][0].as_u64().unwrap_or(u64::MAX))
        .collect();
    assert!(first.windows(2).all(|w| w[0] <= w[1]), "{first:?}");
    // The CI gate from the documentation, in plain Rust instead of jq.
    let roots: Vec<&str> = causes
        .iter()
        .filter(|c| c["because"].as_array().is_some_and(Vec::is_empty))
        .filter_map(|c| c["path"].as_str())
        .collect();
    assert_eq!(roots, [".initrd:/etc/server.toml"]);
    let added = causes
        .iter()
        .find(|c| c["path"] == ".initrd:/etc/server.toml")
        .expect("file cause");
    assert_eq!(added["kind"], "initrd.file_added");
    assert_eq!(added["new"]["size"], SERVER_TOML.len());
    assert_eq!(added["new"]["origin"], "recipe");

    // --exit-code: 5 when the sides differ, 0 when they do not.
    let exit = |x: &Path, y: &Path| {
        let mut cmd = zoa(&f.cache());
        cmd.arg("diff").arg("--exit-code").arg(x).arg(y);
        run(&mut cmd).status.code()
    };
    assert_eq!(exit(&a, &b), Some(5));
    assert_eq!(exit(&a, &a), Some(0));
}

#[test]
fn cli_text_output_and_bad_input() {
    let f = Fixture::new();
    let a = build(&f, "a", &tiny_recipe(""));
    let o = zoa_diff(&f, &[&a, &a], false);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("no change\n"));

    let missing = f.path("missing");
    let o = zoa_diff(&f, &[&a, &missing], false);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("missing"), "{err}");

    let junk = f.write("junk.txt", "not a release");
    let o = zoa_diff(&f, &[&junk, &a], false);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("junk.txt"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
}

/// A copy of the real zoa-init with bytes appended (still a static ELF) and a provenance
/// saying a newer rustc made it, as `zoa build-init` would record one.
fn init_from_another_rustc(f: &Fixture) -> PathBuf {
    use zoa::init_build::provenance::Provenance;
    let real = init_binary();
    let real_prov = Provenance::path_for(&real);
    let mut prov = Provenance::parse(
        &real_prov.display().to_string(),
        &std::fs::read(&real_prov).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: build zoa-init with `zoa build-init` (.ci/test does)",
                real_prov.display()
            )
        }),
    )
    .unwrap();
    let mut bytes = std::fs::read(&real).unwrap();
    bytes.extend_from_slice(b"\0built by another rustc\0");
    let dest = f.write("other-rustc/zoa-init", &bytes);
    prov.binary.sha256 = sha256_hex(&bytes);
    prov.binary.size = bytes.len() as u64;
    assert_eq!(prov.rustc.release, "1.95.0", "the pinned toolchain changed");
    prov.rustc.release = "1.96.0".into();
    prov.rustc.commit_hash = "1".repeat(40);
    std::fs::write(Provenance::path_for(&dest), prov.to_json()).unwrap();
    dest
}

/// A toolchain change is named as the cause, before `.initrd`, by `zoa diff` and by a
/// `zoa verify --rebuild` that does not reproduce.
#[test]
fn a_toolchain_change_is_named_before_the_initramfs() {
    let f = Fixture::new();
    let recipe = f.write("tiny.toml", tiny_recipe(""));
    let a = build(&f, "a", &tiny_recipe(""));
    let other_init = init_from_another_rustc(&f);
    let o = run(zoa(&f.cache())
        .arg("build")
        .arg(&recipe)
        .arg("--out")
        .arg(f.path("b"))
        .arg("--init")
        .arg(&other_init));
    assert!(o.status.success(), "{}", stderr(&o));
    let b = f.path("b");

    let r = diff_paths(&a, &b);
    let c = cause(&r, "build:init.rustc");
    assert_eq!(c.kind, "init.provenance");
    assert_eq!(c.level, Level::Build);
    assert_eq!(c.message, "zoa-init: rustc 1.95.0 → 1.96.0");
    let init = cause(&r, ".initrd:/init");
    assert_eq!(init.because, ["build:init.rustc"]);
    assert_eq!(roots(&r), ["build:init.rustc"]);
    let text = r.render_text();
    let toolchain = text.find("zoa-init: rustc 1.95.0 → 1.96.0").expect(&text);
    let initrd = text.find(".initrd").expect(&text);
    assert!(
        toolchain < initrd,
        "the toolchain is not named first:\n{text}"
    );

    // The same attribution from a rebuild that does not reproduce.
    let key = f.path("k");
    let o = run(zoa(&f.cache())
        .args(["keygen", "--no-password", "--out"])
        .arg(&key));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(zoa(&f.cache())
        .arg("sign")
        .arg(&a)
        .arg("--key")
        .arg(key.with_extension("key")));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(zoa(&f.cache())
        .env("ZOA_INIT", &other_init)
        .arg("verify")
        .arg(&a)
        .arg("--pubkey")
        .arg(key.with_extension("pub"))
        .arg("--rebuild")
        .arg(&recipe));
    assert_eq!(o.status.code(), Some(13), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("zoa-init: rustc 1.95.0 → 1.96.0"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
