//! `zoa measure` without booting: byte-identical output to AWS nitro-tpm-pcr-compute,
//! and malformed or unsupported input refused with one clear line.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn build_tiny(f: &Fixture) -> PathBuf {
    build_tiny_on(f, STUB252_DEB, "out")
}

/// The tiny image on one of the pinned stubs.
fn build_tiny_on(f: &Fixture, stub_deb: &str, out: &str) -> PathBuf {
    let recipe = f.write(&format!("{out}.toml"), with_stub(tiny_recipe(""), stub_deb));
    let o = f.build(&recipe, out);
    assert!(o.status.success(), "{}", stderr(&o));
    f.path(&format!("{out}/uki.efi"))
}

fn measure(f: &Fixture, args: &[&str], uki: &Path) -> std::process::Output {
    run(zoa(&f.cache()).arg("measure").arg(uki).args(args))
}

#[test]
fn nitro_format_is_byte_identical_to_aws_tool() {
    let Ok(which) = Command::new("nitro-tpm-pcr-compute").arg("--help").output() else {
        panic!("nitro-tpm-pcr-compute is not installed (.ci/deps installs it with cargo install)");
    };
    assert!(which.status.success());
    let f = Fixture::new();
    let nitro = |uki: &Path| {
        let ours = measure(&f, &["--format", "nitro"], uki);
        assert!(ours.status.success(), "{}", stderr(&ours));
        let theirs = Command::new("nitro-tpm-pcr-compute")
            .arg("--image")
            .arg(uki)
            .output()
            .unwrap();
        assert!(theirs.status.success());
        (ours.stdout, theirs.stdout)
    };
    // Every supported stub: 252 and 257 start the kernel with LoadImage (a PCR4 event), 262
    // starts it itself (none), and the peer tells them apart as zoa does.
    for (stub, out) in [
        (STUB252_DEB, "s252"),
        (STUB257_DEB, "s257"),
        (STUB262_DEB, "s262"),
    ] {
        let (ours, theirs) = nitro(&build_tiny_on(&f, stub, out));
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "zoa and nitro-tpm-pcr-compute disagree on {stub}"
        );
        assert_eq!(ours, theirs);
    }
}

#[test]
fn zoa_format_lists_events_that_replay_to_the_pcrs() {
    use sha2::{Digest, Sha256, Sha384};
    let f = Fixture::new();
    let uki = build_tiny(&f);
    let o = measure(&f, &[], &uki);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let keys: Vec<&String> = m["pcrs"].as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["4", "7", "11", "12"]);
    // Replaying the listed events reproduces every PCR (an internal-consistency check; the
    // boot tests check the values themselves against firmware).
    for pcr in [4u64, 7, 11, 12] {
        let mut v256 = vec![0u8; 32];
        let mut v384 = vec![0u8; 48];
        for e in m["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["pcr"] == pcr)
        {
            let d256 = hex::decode(e["digests"]["sha256"].as_str().unwrap()).unwrap();
            let d384 = hex::decode(e["digests"]["sha384"].as_str().unwrap()).unwrap();
            v256 = Sha256::digest([v256, d256].concat()).to_vec();
            v384 = Sha384::digest([v384, d384].concat()).to_vec();
        }
        assert_eq!(m["pcrs"][pcr.to_string()]["sha256"], hex::encode(&v256));
        assert_eq!(m["pcrs"][pcr.to_string()]["sha384"], hex::encode(&v384));
    }
    let whats: Vec<&str> = m["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert!(whats
        .iter()
        .any(|w| w.starts_with("Authenticode of embedded kernel")));
    assert!(whats.contains(&"section name .linux"));
    assert_eq!(m["unmeasured_sections"], serde_json::json!([".uname"]));
}

/// Writes a patched copy of `src`.
fn patched(f: &Fixture, src: &Path, name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut b = std::fs::read(src).unwrap();
    patch(&mut b);
    f.write(name, b)
}

/// Renames the section called `from` in the section table at `table`.
fn rename_section(b: &mut [u8], table: usize, from: &[u8], to: &[u8]) {
    let at = (0..96)
        .map(|i| table + 40 * i)
        .find(|&o| {
            b[o..o + 8].starts_with(from) && b[o + from.len()..o + 8].iter().all(|&c| c == 0)
        })
        .expect("section to rename");
    let mut name = [0u8; 8];
    name[..to.len()].copy_from_slice(to);
    b[at..at + 8].copy_from_slice(&name);
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

#[test]
fn malformed_and_unsupported_input_is_refused() {
    let f = Fixture::new();
    let uki = build_tiny(&f);
    let bytes = std::fs::read(&uki).unwrap();
    let pe = u32_at(&bytes, 0x3c) as usize;
    let nsec_off = pe + 6;
    let opt = pe + 24;
    let sec_table = opt + u16::from_le_bytes([bytes[pe + 20], bytes[pe + 21]]) as usize;

    let cases: Vec<(&str, PathBuf, Vec<&str>)> = vec![
        (
            "truncated",
            patched(&f, &uki, "truncated.efi", |b| b.truncate(2000)),
            vec!["truncated.efi", "past the end"],
        ),
        (
            "not-pe",
            f.write("text.efi", b"hello, not a PE file"),
            vec!["text.efi", "not a PE image"],
        ),
        (
            "absurd-sections",
            patched(&f, &uki, "nsec.efi", |b| {
                b[nsec_off..nsec_off + 2].copy_from_slice(&60000u16.to_le_bytes())
            }),
            vec!["nsec.efi", "NumberOfSections"],
        ),
        (
            "section-beyond-eof",
            patched(&f, &uki, "beyond.efi", |b| {
                let o = sec_table + 16; // first section's SizeOfRawData
                b[o..o + 4].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
            }),
            vec!["beyond.efi", "past the end"],
        ),
        (
            "overlapping-sections",
            patched(&f, &uki, "overlap.efi", |b| {
                let first_raw = u32_at(b, sec_table + 20);
                let o = sec_table + 40 + 20; // second section's PointerToRawData := first's
                b[o..o + 4].copy_from_slice(&first_raw.to_le_bytes());
            }),
            vec!["overlap.efi", "overlap"],
        ),
        (
            "cert-table-outside",
            patched(&f, &uki, "cert.efi", |b| {
                let dir = opt + 112 + 32;
                b[dir..dir + 4].copy_from_slice(&0x7000_0000u32.to_le_bytes());
                b[dir + 4..dir + 8].copy_from_slice(&0x100u32.to_le_bytes());
            }),
            vec!["cert.efi", "certificate table"],
        ),
        (
            "unknown-stub",
            patched(&f, &uki, "stub999.efi", |b| {
                let at = b
                    .windows(17)
                    .position(|w| w == b"systemd-stub 252.")
                    .unwrap();
                b[at + 13..at + 16].copy_from_slice(b"999");
            }),
            vec!["stub999.efi", "systemd-stub 999", "supported: 252"],
        ),
        (
            "unknown-section",
            patched(&f, &uki, "unknown-section.efi", |b| {
                b[sec_table..sec_table + 8].copy_from_slice(b".evil\0\0\0")
            }),
            vec!["unknown section", ".evil"],
        ),
        // Sections a stub measures or acts on, that no boot has proven a prediction for.
        (
            "unknown-to-the-stub-ucode",
            patched(&f, &uki, "ucode.efi", |b| {
                rename_section(b, sec_table, b".osrel", b".ucode")
            }),
            vec![
                "section .ucode: systemd-stub 252.",
                "does not know it",
                "neither measure nor use it",
            ],
        ),
        (
            "unproven-profile",
            patched(&f, &uki, "profile.efi", |b| {
                rename_section(b, sec_table, b".osrel", b".profile")
            }),
            vec!["section .profile: systemd-stub 252.", "does not know it"],
        ),
        ("bare-stub", extract_stub(&f), vec!["no .linux section"]),
    ];
    for (name, path, expect) in cases {
        let o = measure(&f, &[], &path);
        let err = stderr(&o);
        assert!(!o.status.success(), "{name}: measure accepted it");
        assert!(
            o.stdout.is_empty(),
            "{name}: output on stdout despite the error"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
        for e in expect {
            assert!(err.contains(e), "{name}: stderr lacks {e:?}: {err}");
        }
    }
}

fn extract_stub(f: &Fixture) -> PathBuf {
    let dir = f.path("stubx");
    std::fs::create_dir_all(&dir).unwrap();
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(shared_inputs().join(STUB252_DEB))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    dir.join(STUB_MEMBER)
}

#[test]
fn measurements_do_not_depend_on_the_build_directory() {
    let f = Fixture::new();
    let a = build_tiny(&f);
    let recipe = f.path("out.toml"); // build_tiny's
    let o = run(zoa(&f.cache())
        .arg("build")
        .arg(&recipe)
        .arg("--out")
        .arg(f.path("other/place")));
    assert!(o.status.success());
    let ma = measure(&f, &[], &a).stdout;
    let mb = measure(&f, &[], &f.path("other/place/uki.efi")).stdout;
    assert_eq!(ma, mb);
}

#[test]
fn garbage_and_truncated_event_logs_are_refused() {
    let f = Fixture::new();
    let garbage = f.write("garbage.log", b"this is not an event log, not even close");
    // A log that starts like a real one (Spec ID header) but is cut short.
    let mut header = Vec::new();
    header.extend_from_slice(&0u32.to_le_bytes()); // PCR0
    header.extend_from_slice(&3u32.to_le_bytes()); // EV_NO_ACTION
    header.extend_from_slice(&[0u8; 20]);
    header.extend_from_slice(&45u32.to_le_bytes()); // claims 45 bytes of Spec ID data
    header.extend_from_slice(b"Spec ID Event03\0");
    let truncated = f.write("truncated.log", &header);
    for (path, expect) in [(&garbage, "garbage.log"), (&truncated, "truncated.log")] {
        let o = run(zoa(&f.cache()).arg("eventlog").arg(path));
        assert!(!o.status.success());
        let err = stderr(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(expect), "{err}");
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn enrolled_keys_with_secure_boot_off_are_measured_but_not_checked() {
    let f = Fixture::new();
    let uki = build_tiny(&f);
    // One EFI signature list holding one SHA-256 entry (EFI_CERT_SHA256_GUID c1c41626-...).
    let mut esl = hex::decode("2616c4c14c509240aca941f936934328").unwrap();
    esl.extend_from_slice(&(28u32 + 48).to_le_bytes());
    esl.extend_from_slice(&0u32.to_le_bytes());
    esl.extend_from_slice(&48u32.to_le_bytes());
    esl.extend(vec![0x11u8; 48]);
    let db = f.write("db.esl", esl);
    let o = measure(
        &f,
        &["--db", db.to_str().unwrap(), "--secure-boot", "off"],
        &uki,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Proven by a boot in secureboot_boot.rs: the variables count, no authority event.
    assert!(m["pcrs"]["7"].is_object(), "{m}");
    assert!(m["unpredicted"].get("7").is_none(), "{m}");
    let pcr7: Vec<&serde_json::Value> = m["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["pcr"] == 7)
        .collect();
    assert_eq!(pcr7.len(), 6, "SecureBoot, PK, KEK, db, dbx, separator");
    assert_eq!(pcr7[3]["what"], "db (76 bytes)");
    // The nitro format has all it needs now.
    let o = measure(
        &f,
        &[
            "--db",
            db.to_str().unwrap(),
            "--secure-boot",
            "off",
            "--format",
            "nitro",
        ],
        &uki,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Secure Boot on with this db: the unsigned image is not in it, so it is refused.
    let o = measure(
        &f,
        &["--db", db.to_str().unwrap(), "--secure-boot", "on"],
        &uki,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unsigned"), "{}", stderr(&o));
    // A file that is not an EFI signature list is refused.
    let bad = f.write("bad.esl", b"not a signature list at all, too short?");
    let o = measure(&f, &["--db", bad.to_str().unwrap()], &uki);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bad.esl"), "{}", stderr(&o));
}
