//! `zoa build` end to end: reproducibility of the demo image, the shell-free policy on
//! real binaries, and bad input (each refused with one clear line, nothing left behind).

use crate::common;

use common::*;
use std::path::Path;
use std::process::Command;

fn demo_recipe() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("image-recipes/llama-server.toml")
}

/// Two builds of the demo recipe in different directories, at different times, with a
/// different umask, TZ, LANG, working directory and SOURCE_DATE_EPOCH in the
/// environment (the recipe's own epoch wins) give byte-identical uki.efi.
#[test]
fn demo_build_is_reproducible() {
    let f = Fixture::new();
    let inputs = shared_inputs();
    let out_a = f.path("a/out");
    let out_b = f.path("elsewhere/deeper/out");
    std::fs::create_dir_all(f.path("cwd-a")).unwrap();
    std::fs::create_dir_all(f.path("cwd-b")).unwrap();

    let build = |out: &Path, cwd: &str, umask: &str, tz: &str, lang: &str, cache: &str| {
        // umask is a process attribute: set it through a tiny wrapper shell on the host
        // (the host may have a shell; images may not).
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$@\""))
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_zoa"))
            .arg("build")
            .arg(demo_recipe())
            .arg("--out")
            .arg(out)
            .arg("--inputs")
            .arg(&inputs)
            .arg("--offline")
            .arg("-q")
            .current_dir(f.path(cwd))
            .env("ZOA_CACHE", f.path(cache))
            .env("ZOA_INIT", init_binary())
            .env("TZ", tz)
            .env("LANG", lang)
            .env("LC_ALL", lang)
            .env("SOURCE_DATE_EPOCH", "1")
            .output()
            .unwrap();
        assert!(status.status.success(), "build failed: {}", stderr(&status));
    };
    build(&out_a, "cwd-a", "022", "UTC", "C.UTF-8", "cache-a");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build(
        &out_b,
        "cwd-b",
        "077",
        "Pacific/Kiritimati",
        "de_DE.UTF-8",
        "cache-b",
    );

    let a = std::fs::read(out_a.join("uki.efi")).unwrap();
    let b = std::fs::read(out_b.join("uki.efi")).unwrap();
    assert_eq!(a.len(), b.len());
    assert!(a == b, "uki.efi differs between the two builds");
    let ja = std::fs::read(out_a.join("build.json")).unwrap();
    let jb = std::fs::read(out_b.join("build.json")).unwrap();
    assert!(ja == jb, "build.json differs between the two builds");

    // build.json tells the truth about the output.
    let report: serde_json::Value = serde_json::from_slice(&ja).unwrap();
    assert_eq!(report["outputs"][0]["path"], "uki.efi");
    assert_eq!(
        report["outputs"][0]["sha256"],
        sha256_of(&out_a.join("uki.efi"))
    );
    assert_eq!(report["stub"]["major"], 252);
    assert_eq!(report["kernel"]["release"], "6.1.0-56-cloud-amd64");
    assert_eq!(report["source_date_epoch"], 1767225600);
    assert!(report["policy"]["violations"]
        .as_array()
        .unwrap()
        .is_empty());
    let files: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for want in [
        "/init",
        "/etc/zoa/init.json",
        "/dev/console",
        "/usr/bin/llama-server",
        "/lib64",
        "/usr/lib64/ld-linux-x86-64.so.2",
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "/usr/lib/x86_64-linux-gnu/llama/libllama-server-impl.so",
        "/usr/lib/x86_64-linux-gnu/libzstd.so.1",
        "/usr/lib/x86_64-linux-gnu/ggml/backends0/libggml-cpu-x64.so",
    ] {
        assert!(files.contains(&want), "{want} missing from the image");
    }
    for absent in [
        "/usr/bin/llama-cli",
        "/usr/lib/x86_64-linux-gnu/ggml/backends0/libggml-cpu-haswell.so",
    ] {
        assert!(
            !files.contains(&absent),
            "{absent} should not be in the image"
        );
    }
    // Sections in ukify's order, and the PE checksum is right.
    let names: Vec<&str> = report["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![".osrel", ".cmdline", ".uname", ".initrd", ".linux"]
    );

    // An independent reader: objdump agrees with the layout and sees a valid image.
    let od = Command::new("objdump")
        .arg("-h")
        .arg(out_a.join("uki.efi"))
        .output();
    if let Ok(od) = od {
        let text = String::from_utf8_lossy(&od.stdout);
        for n in [
            ".osrel", ".cmdline", ".uname", ".initrd", ".linux", ".sdmagic",
        ] {
            assert!(text.contains(n), "objdump does not list {n}:\n{text}");
        }
    }
    // How zoa-init was made is recorded, exactly as `zoa build-init` wrote it.
    let prov_path = zoa::init_build::provenance::Provenance::path_for(&init_binary());
    let prov: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&prov_path).unwrap()).unwrap();
    assert_eq!(report["init"]["provenance"], prov);
    assert_eq!(report["init"]["sha256"], prov["binary"]["sha256"]);
    assert_eq!(report["init"]["provenance"]["rustc"]["release"], "1.95.0");
    assert_eq!(report["init"]["provenance"]["c_toolchain"]["name"], "zig");
    check_sbom(&out_a, &out_b, &report);

    // The committed reference release still describes this build (see measurements/).
    check_reference_release(&f, &out_a);
    // The config zoa wrote is one zoa-init accepts.
    let cfg = Command::new(init_binary())
        .arg("--check-config")
        .arg(extract_init_config(
            &out_a.join("uki.efi"),
            &f.path("cfg.json"),
        ))
        .output()
        .unwrap();
    assert!(
        cfg.status.success(),
        "zoa-init rejects the generated config: {}",
        stderr(&cfg)
    );
}

/// The SBOM is reproducible, valid for the SPDX project's own validator (pyspdxtools), and
/// lists every input with its version and digest, zoa-init with every crate and checksum
/// from its provenance, and the toolchains.
fn check_sbom(out_a: &Path, out_b: &Path, report: &serde_json::Value) {
    let a = std::fs::read(out_a.join("sbom.spdx.json")).unwrap();
    let b = std::fs::read(out_b.join("sbom.spdx.json")).unwrap();
    assert!(a == b, "sbom.spdx.json differs between the two builds");
    let validator = std::env::var_os("PYSPDXTOOLS")
        .expect("PYSPDXTOOLS is not set: .ci/deps installs spdx-tools and .ci/env exports it");
    let o = Command::new(&validator)
        .arg("--infile")
        .arg(out_a.join("sbom.spdx.json"))
        .output()
        .unwrap();
    assert!(
        o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("invalid"),
        "pyspdxtools rejects the SBOM: {}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let sbom: serde_json::Value = serde_json::from_slice(&a).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let packages = sbom["packages"].as_array().unwrap();
    let find = |name: &str, version: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name && p["versionInfo"] == version)
            .unwrap_or_else(|| panic!("{name} {version} is not in the SBOM"))
    };
    let sha = |p: &serde_json::Value| p["checksums"][0]["checksumValue"].clone();
    for input in report["inputs"].as_array().unwrap() {
        let p = find(
            input["package"].as_str().unwrap(),
            input["package_version"].as_str().unwrap(),
        );
        assert_eq!(sha(p), input["sha256"]);
        assert!(p["externalRefs"][0]["referenceLocator"]
            .as_str()
            .unwrap()
            .starts_with("pkg:deb/debian/"));
    }
    let prov = &report["init"]["provenance"];
    assert_eq!(sha(find("zoa-init", "0.1.0")), report["init"]["sha256"]);
    assert_eq!(
        sha(find("llama-server", report["version"].as_str().unwrap())),
        report["outputs"][0]["sha256"]
    );
    let crates = prov["crates"].as_array().unwrap();
    assert!(crates.len() > 50, "only {} crates", crates.len());
    for c in crates {
        let p = find(c["name"].as_str().unwrap(), c["version"].as_str().unwrap());
        if let Some(sum) = c["checksum"].as_str() {
            assert_eq!(sha(p), sum);
        }
    }
    find("rustc", "1.95.0");
    assert_eq!(sha(find("zig", "0.17.0")), prov["c_toolchain"]["sha256"]);
}

/// The project's reference release in measurements/: its measurement files equal a fresh
/// `zoa measure` of this build, its signature and artifact digests verify against the
/// fresh uki.efi and build.json with the committed public key, and the release log's
/// chain and signatures hold, ending with exactly this release.json.
fn check_reference_release(f: &Fixture, out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("measurements");
    let golden = root.join(REFERENCE_RELEASE);
    let regenerate =
        "if the change is intended, regenerate and re-sign it (measurements/README.md)";
    for (format, file) in [
        ("zoa", "measurements.json"),
        ("nitro", "measurements.nitro.json"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_zoa"))
            .arg("measure")
            .arg(out.join("uki.efi"))
            .args(["--format", format])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let want = std::fs::read_to_string(golden.join(file)).unwrap();
        assert!(
            String::from_utf8_lossy(&o.stdout) == want,
            "measurements/{REFERENCE_RELEASE}/{file} no longer matches the demo build; {regenerate}"
        );
    }
    // The committed copies of the build record and the SBOM are this build's.
    for file in ["build.json", "sbom.spdx.json"] {
        let want = std::fs::read(golden.join(file)).unwrap();
        assert!(
            std::fs::read(out.join(file)).unwrap() == want,
            "measurements/{REFERENCE_RELEASE}/{file} no longer matches the demo build; {regenerate}"
        );
    }
    // A release directory made of the fresh artifacts and the committed signed files.
    let rel = f.path("reference-release");
    std::fs::create_dir_all(&rel).unwrap();
    for name in ["uki.efi", "build.json", "sbom.spdx.json"] {
        std::fs::copy(out.join(name), rel.join(name)).unwrap();
    }
    for name in ["measurements.json", "release.json", "release.json.minisig"] {
        std::fs::copy(golden.join(name), rel.join(name)).unwrap();
    }
    let keys = release_keys();
    let pubkey_args = || {
        keys.iter()
            .flat_map(|k| [std::ffi::OsStr::new("--pubkey"), k.as_os_str()])
    };
    let key_for_release = keys.last().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_zoa"))
        .arg("verify")
        .arg(&rel)
        .arg("--pubkey")
        .arg(key_for_release)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the signed reference release does not verify against the demo build; {regenerate}: {}",
        stderr(&o)
    );
    let log = root.join("releases.log");
    let o = Command::new(env!("CARGO_BIN_EXE_zoa"))
        .args(["log", "verify"])
        .arg(&log)
        .args(pubkey_args())
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "measurements/releases.log: {}",
        stderr(&o)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let last: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("an empty release log")).unwrap();
    let manifest = std::fs::read_to_string(golden.join("release.json")).unwrap();
    assert_eq!(
        last["manifest"].as_str(),
        Some(manifest.as_str()),
        "the last entry of measurements/releases.log is not measurements/{REFERENCE_RELEASE}/release.json"
    );
}

/// Pulls /etc/zoa/init.json out of a UKI's .initrd with binutils, the zstd CLI (when it is
/// compressed) and GNU cpio: readers independent of zoa's.
fn extract_init_config(uki: &Path, dest: &Path) -> std::path::PathBuf {
    let dir = dest.with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let initrd = dir.join("initrd.section");
    let st = Command::new("objcopy")
        .args(["-O", "binary", "--only-section=.initrd"])
        .arg(uki)
        .arg(&initrd)
        .status()
        .unwrap();
    assert!(st.success());
    // objcopy pads the section to its file alignment: cut it to its size (objdump's
    // column), so that zstd does not take the padding for a second frame.
    let script = r#"
        size=$(objdump -h "$1" | awk '$2 == ".initrd" {print $3}')
        head -c $((0x$size)) initrd.section > initrd.archive
        if [ "$(head -c 4 initrd.archive | od -An -tx1 | tr -d ' ')" = 28b52ffd ]; then
            zstd -dcq initrd.archive
        else
            cat initrd.archive
        fi | cpio -id --quiet etc/zoa/init.json
    "#;
    let st = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(uki)
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "extracting etc/zoa/init.json from {}",
        uki.display()
    );
    dir.join("etc/zoa/init.json")
}

/// Builds that must fail: exit non-zero, one line on stderr containing `expect`, no
/// output directory contents left behind.
fn assert_refused(f: &Fixture, recipe_text: &str, expect: &[&str]) {
    let recipe = f.write("recipe.toml", recipe_text);
    let out = f.path("out");
    let o = f.build(&recipe, "out");
    let err = stderr(&o);
    assert!(!o.status.success(), "build unexpectedly succeeded");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "expected one line on stderr, got:\n{err}"
    );
    for e in expect {
        assert!(err.contains(e), "stderr lacks {e:?}:\n{err}");
    }
    assert!(
        absent_or_empty(&out),
        "output left behind in {}",
        out.display()
    );
}

#[test]
fn tiny_recipe_builds() {
    let f = Fixture::new();
    let recipe = f.write("recipe.toml", tiny_recipe(""));
    let o = f.build(&recipe, "out");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(f.path("out/uki.efi").is_file());
    assert!(f.path("out/build.json").is_file());
    // Nothing else: temp files were renamed, not left.
    let mut names: Vec<_> = std::fs::read_dir(f.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["build.json", "sbom.spdx.json", "uki.efi"]);
}

#[test]
fn policy_refuses_a_shell_by_name() {
    let f = Fixture::new();
    f.write("files/sh", b"\x7fELF not really a shell but named like one");
    assert_refused(
        &f,
        &tiny_recipe("[[payload.files]]\npath = \"/bin/sh\"\nsource = \"files/sh\"\n"),
        &["ZOA-P001", "/bin/sh"],
    );
}

#[test]
fn policy_refuses_busybox_renamed_to_server() {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .expect("busybox-static is installed by .ci/deps");
    let f = Fixture::new();
    std::fs::create_dir_all(f.path("files")).unwrap();
    std::fs::copy(busybox, f.path("files/server")).unwrap();
    assert_refused(
        &f,
        &tiny_recipe("[[payload.files]]\npath = \"/usr/bin/server\"\nsource = \"files/server\"\n"),
        &["ZOA-P002", "/usr/bin/server", "busybox"],
    );
}

#[test]
fn policy_refuses_setuid_world_writable_and_scripts() {
    let f = Fixture::new();
    f.write("files/data", b"plain data");
    assert_refused(
        &f,
        &tiny_recipe(
            "[[payload.files]]\npath = \"/usr/bin/x\"\nsource = \"files/data\"\nmode = \"4755\"\n",
        ),
        &["ZOA-P004", "/usr/bin/x"],
    );
    assert_refused(
        &f,
        &tiny_recipe(
            "[[payload.files]]\npath = \"/etc/x\"\nsource = \"files/data\"\nmode = \"0666\"\n",
        ),
        &["ZOA-P005", "/etc/x"],
    );
    assert_refused(
        &f,
        &tiny_recipe("[[payload.files]]\npath = \"/usr/bin/run\"\ncontent = \"#!/usr/bin/env python3\\n\"\nmode = \"0755\"\n"),
        &["ZOA-P003", "/usr/bin/run"],
    );
}

#[test]
fn policy_refuses_init_override_on_cmdline() {
    let f = Fixture::new();
    let text = tiny_recipe("").replace(
        "cmdline = \"console=ttyS0 panic=-1\"",
        "cmdline = \"console=ttyS0 init=/bin/sh\"",
    );
    assert_refused(&f, &text, &["ZOA-P008", "init=/bin/sh"]);
}

#[test]
fn policy_exception_with_reason_is_recorded() {
    let f = Fixture::new();
    f.write("files/data", b"plain data");
    let recipe = f.write(
        "recipe.toml",
        tiny_recipe(
            "[[payload.files]]\npath = \"/etc/x\"\nsource = \"files/data\"\nmode = \"0666\"\n\n[[policy.exceptions]]\nrule = \"ZOA-P005\"\npath = \"/etc/x\"\nreason = \"demo: the server rewrites this file at start\"\n",
        ),
    );
    let o = f.build(&recipe, "out");
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.path("out/build.json")).unwrap()).unwrap();
    let exc = &report["policy"]["exceptions"][0];
    assert_eq!(exc["rule"], "ZOA-P005");
    assert_eq!(
        exc["excepted_because"],
        "demo: the server rewrites this file at start"
    );
}

#[test]
fn unsatisfied_dt_needed_names_binary_and_library() {
    let f = Fixture::new();
    let inputs = shared_inputs();
    // llama-server without libllama0/libggml0 in the sysroot: its libraries are missing.
    let extra = format!(
        "{}{}[sysroot]\npackages = [\"libc6\", \"tools\"]\n[payload]\nexecutables = [\"/usr/bin/llama-server\"]\n",
        input_table("libc6", &inputs.join("libc6_2.43-7_amd64.deb")),
        input_table("tools", &inputs.join("llama.cpp-tools_1%3a0.7.0+dfsg-2_amd64.deb")),
    );
    assert_refused(
        &f,
        &tiny_recipe(&extra),
        &["/usr/bin/llama-server", "needs", "libstdc++.so.6"],
    );
}

#[test]
fn check_command_on_recipe_and_uki() {
    let f = Fixture::new();
    let recipe = f.write("recipe.toml", tiny_recipe(""));
    let o = run(zoa(&f.cache()).arg("check").arg(&recipe));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = f.build(&recipe, "out");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(zoa(&f.cache())
        .arg("check")
        .arg(f.path("out/uki.efi"))
        .arg("--json"));
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["violations"].as_array().unwrap().len(), 0);

    // A violating recipe: exit status 3, and the rule named.
    f.write("files/sh", b"x");
    let bad = f.write(
        "bad.toml",
        tiny_recipe("[[payload.files]]\npath = \"/bin/bash\"\nsource = \"files/sh\"\n"),
    );
    let o = run(zoa(&f.cache()).arg("check").arg(&bad));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ZOA-P001"));
}

#[test]
fn lock_and_locked_build() {
    let f = Fixture::new();
    let recipe = f.write("recipe.toml", tiny_recipe(""));
    // --locked without a lock: refused, nothing written.
    let o = run(zoa(&f.cache())
        .arg("build")
        .arg(&recipe)
        .arg("--locked")
        .arg("--out")
        .arg(f.path("out")));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("zoa lock"), "{}", stderr(&o));
    assert!(absent_or_empty(&f.path("out")));
    let o = run(zoa(&f.cache()).arg("lock").arg(&recipe));
    assert!(o.status.success(), "{}", stderr(&o));
    let lock = std::fs::read_to_string(f.path("recipe.toml.lock")).unwrap();
    assert!(
        lock.contains("package = \"linux-image-6.1.0-56-cloud-amd64\""),
        "{lock}"
    );
    assert!(
        lock.contains("package_version = \"252.39-1~deb12u2\""),
        "{lock}"
    );
    let o = run(zoa(&f.cache())
        .arg("build")
        .arg(&recipe)
        .arg("--locked")
        .arg("--out")
        .arg(f.path("out")));
    assert!(o.status.success(), "{}", stderr(&o));
    // Drift: a new input in the recipe.
    let inputs = shared_inputs();
    let drifted = tiny_recipe(&input_table(
        "extra",
        &inputs.join("zlib1g_1%3a1.3.dfsg+really1.3.2-4_amd64.deb"),
    ));
    f.write("recipe.toml", drifted);
    let o = run(zoa(&f.cache())
        .arg("build")
        .arg(&recipe)
        .arg("--locked")
        .arg("--out")
        .arg(f.path("out2")));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("input extra"), "{}", stderr(&o));
    assert!(absent_or_empty(&f.path("out2")));
}

#[test]
fn completions_and_manpage() {
    let f = Fixture::new();
    let o = run(zoa(&f.cache()).args(["completions", "bash"]));
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("zoa"));
    let o = run(zoa(&f.cache()).arg("manpage"));
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains(".TH zoa"));
    for cmd in ["build", "lock", "check"] {
        let o = run(zoa(&f.cache()).args([cmd, "--help"]));
        assert!(o.status.success());
        assert!(String::from_utf8_lossy(&o.stdout).contains("Usage: zoa"));
    }
}

#[test]
fn zstd_initramfs_builds_and_checks() {
    let f = Fixture::new();
    let recipe = f.write(
        "recipe.toml",
        tiny_recipe("").replace(
            "cmdline = \"console=ttyS0 panic=-1\"",
            "cmdline = \"console=ttyS0 panic=-1\"\ncompression = \"zstd\"",
        ),
    );
    let o = f.build(&recipe, "out");
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.path("out/build.json")).unwrap()).unwrap();
    assert_eq!(report["initramfs"]["compression"], "zstd");
    assert_eq!(
        report["initramfs"]["level"], 12,
        "the default level is recorded"
    );
    assert!(
        report["initramfs"]["size"].as_u64().unwrap()
            < report["initramfs"]["uncompressed_size"].as_u64().unwrap()
    );
    // zoa check reads the compressed .initrd back; the zstd CLI agrees it is a valid frame.
    let o = run(zoa(&f.cache()).arg("check").arg(f.path("out/uki.efi")));
    assert!(o.status.success(), "{}", stderr(&o));
    let initrd = f.path("initrd.zst");
    assert!(Command::new("objcopy")
        .args(["-O", "binary", "--only-section=.initrd"])
        .arg(f.path("out/uki.efi"))
        .arg(&initrd)
        .status()
        .unwrap()
        .success());
    // objcopy pads the section to its file alignment; zstd stops at the frame's end.
    let t = Command::new("zstd")
        .arg("-t")
        .arg(&initrd)
        .output()
        .unwrap();
    assert!(
        t.status.success() || String::from_utf8_lossy(&t.stderr).contains("unknown header"),
        "{}",
        String::from_utf8_lossy(&t.stderr)
    );
}
