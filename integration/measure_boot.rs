//! The proof of `zoa measure`: probe images (the demo image plus an event-log dump) are
//! built with `zoa build` and booted under QEMU + OVMF + swtpm (SHA-256 and SHA-384
//! banks). In both banks: the booted PCR4/7/11/12 equal the prediction, the firmware's
//! event log replays to the PCRs the guest read from sysfs, `zoa measure --eventlog`
//! agrees with the log, and a log from a different image is rejected.

use crate::common;

use common::qemu::{boot_with_esp_files, boot_with_tpm, sign_snakeoil, Boot};
use common::ukify;
use common::*;
use std::path::{Path, PathBuf};

const BANKS: [&str; 2] = ["sha256", "sha384"];

/// The probe image of `recipe`, built once for all the tests that boot it (read-only).
fn build_probe(recipe: &str) -> PathBuf {
    shared_build(recipe).join("uki.efi")
}

fn predict(f: &Fixture, uki: &Path, extra: &[&str]) -> serde_json::Value {
    let o = run(zoa(&f.cache()).arg("measure").arg(uki).args(extra));
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Booted PCRs equal the prediction for `pcrs`, in both banks.
fn assert_prediction_matches(m: &serde_json::Value, boot: &Boot, pcrs: &[u32], case: &str) {
    for pcr in pcrs {
        for bank in BANKS {
            let predicted = m["pcrs"][pcr.to_string()][bank]
                .as_str()
                .unwrap_or_else(|| panic!("{case}: no prediction for PCR{pcr}"));
            assert_eq!(
                predicted,
                boot.pcr(bank, *pcr),
                "{case}: {bank} PCR{pcr} booted differs from the prediction"
            );
        }
    }
}

/// The event log replays (by zoa eventlog) to the PCRs the guest read from sysfs, for
/// every PCR 0–12 but 10 in both banks, and `zoa measure --eventlog` accepts it. (PCR10
/// belongs to the kernel's IMA, which extends it after boot; the firmware log has none of it.)
fn assert_log_consistent(
    f: &Fixture,
    uki: &Path,
    boot: &Boot,
    case: &str,
    extra: &[&str],
) -> PathBuf {
    let log = boot
        .eventlog
        .as_ref()
        .unwrap_or_else(|| panic!("{case}: no event log on the console"));
    let log_path = f.write(&format!("{case}.eventlog"), log);
    let o = run(zoa(&f.cache()).arg("eventlog").arg(&log_path).arg("--json"));
    assert!(o.status.success(), "{case}: {}", stderr(&o));
    let replay: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for pcr in (0..=12u32).filter(|p| *p != 10) {
        for bank in BANKS {
            let zeros = "0".repeat(if bank == "sha256" { 64 } else { 96 });
            let replayed = replay["pcrs"][pcr.to_string()][bank]
                .as_str()
                .unwrap_or(&zeros)
                .to_owned();
            assert_eq!(
                replayed,
                boot.pcr(bank, pcr),
                "{case}: {bank} PCR{pcr}: event log replay differs from sysfs"
            );
        }
    }
    let o = run(zoa(&f.cache())
        .arg("measure")
        .arg(uki)
        .arg("--eventlog")
        .arg(&log_path)
        .args(extra));
    assert!(
        o.status.success(),
        "{case}: measure --eventlog disagrees with the real log: {}",
        stderr(&o)
    );
    log_path
}

/// `zoa measure UKI --eventlog` on `boot`'s log, which must be refused: the error.
fn refused_log_check(f: &Fixture, uki: &Path, boot: &Boot, case: &str) -> String {
    let log = f.write(&format!("{case}.eventlog"), boot.eventlog.as_ref().unwrap());
    let o = run(zoa(&f.cache())
        .arg("measure")
        .arg(uki)
        .arg("--eventlog")
        .arg(&log));
    assert!(!o.status.success(), "{case}: the boot passed the check");
    stderr(&o)
}

#[test]
fn demo_and_variants_boot_as_predicted() {
    let f = Fixture::new();
    let demo = build_probe(&probe_recipe(|t| t));
    let m_demo = predict(&f, &demo, &[]);
    let boot_demo = boot_with_tpm(&demo, &f.path("vm-demo"), false);
    assert_prediction_matches(&m_demo, &boot_demo, &[4, 7, 11, 12], "demo");
    let demo_log = assert_log_consistent(&f, &demo, &boot_demo, "demo", &[]);

    // A changed command line changes PCR11 only, and the new prediction is right.
    let cmdline = build_probe(&probe_recipe(|t| t.replace("loglevel=4", "loglevel=3")));
    let m_cmd = predict(&f, &cmdline, &[]);
    assert_ne!(m_cmd["pcrs"]["11"], m_demo["pcrs"]["11"]);
    assert_eq!(m_cmd["pcrs"]["7"], m_demo["pcrs"]["7"]);
    let boot_cmd = boot_with_tpm(&cmdline, &f.path("vm-cmdline"), false);
    assert_prediction_matches(&m_cmd, &boot_cmd, &[4, 7, 11, 12], "cmdline");
    assert_log_consistent(&f, &cmdline, &boot_cmd, "cmdline", &[]);

    // A log from a different image is rejected, naming the first differing event.
    let o = run(zoa(&f.cache())
        .arg("measure")
        .arg(&cmdline)
        .arg("--eventlog")
        .arg(&demo_log));
    assert!(!o.status.success(), "a foreign event log was accepted");
    let err = stderr(&o);
    assert!(
        err.contains("PCR4") && err.contains("EV_EFI_BOOT_SERVICES_APPLICATION"),
        "{err}"
    );
}

#[test]
fn changed_initramfs_file_boots_as_predicted() {
    let f = Fixture::new();
    let uki = build_probe(&probe_recipe(|t| {
        format!("{t}\n[[payload.files]]\npath = \"/etc/probe.txt\"\ncontent = \"one changed file\\n\"\n")
    }));
    let m = predict(&f, &uki, &[]);
    let boot = boot_with_tpm(&uki, &f.path("vm"), false);
    assert_prediction_matches(&m, &boot, &[4, 7, 11, 12], "file");
    assert_log_consistent(&f, &uki, &boot, "file", &[]);
}

#[test]
fn standard_debian_kernel_boots_as_predicted() {
    let deb = std::env::var_os("ZOA_STD_KERNEL_DEB")
        .map(PathBuf::from)
        .expect("ZOA_STD_KERNEL_DEB: .ci/deps downloads linux-image-amd64's kernel package");
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    let release = name
        .trim_start_matches("linux-image-")
        .split('_')
        .next()
        .unwrap()
        .to_owned();
    let f = Fixture::new();
    let uki = build_probe(&probe_recipe(|t| {
        // The demo's modules come from the cloud kernel package, not this one.
        let t = without_kernel_modules(&t);
        let start = t.find("[inputs.linux-image]").unwrap();
        let end = t[start..]
            .find("]\n\n")
            .map(|e| start + e + 3)
            .unwrap_or(t.len());
        let mut t = format!(
            "{}{}{}",
            &t[..start],
            input_table("linux-image", &deb),
            &t[end..]
        );
        t = t.replace(
            "boot/vmlinuz-6.1.0-56-cloud-amd64",
            &format!("boot/vmlinuz-{release}"),
        );
        t
    }));
    let m = predict(&f, &uki, &[]);
    let boot = boot_with_tpm(&uki, &f.path("vm"), false);
    assert_prediction_matches(&m, &boot, &[4, 7, 11, 12], "standard kernel");
    assert_log_consistent(&f, &uki, &boot, "std", &[]);
}

fn pcr4_events(m: &serde_json::Value) -> usize {
    m["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["pcr"] == 4)
        .count()
}

/// The PCR11 sections of a prediction, in the order predicted.
fn measured_sections(m: &serde_json::Value) -> Vec<&str> {
    m["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["what"].as_str()?.strip_prefix("section name "))
        .collect()
}

/// Debian 13's stub (257): the kernel still started with LoadImage (a PCR4 event, but
/// not with Secure Boot on), and `.uname` and the stub's own `.sbat` measured into PCR11 —
/// both banks, Secure Boot off and on. The Secure Boot off boot is of a UKI objcopy built
/// from the stub, as ukify did, with every optional UKI feature zoa predicts: `.ucode`,
/// `.splash` and `.dtb` measured in the stub's order, `.pcrpkey` measured, `.pcrsig`
/// passed on unmeasured.
#[test]
fn stub_257_boots_as_predicted_secure_boot_off_and_on() {
    let f = Fixture::new();
    let uki = build_probe(&probe_recipe(|t| with_stub(t, STUB257_DEB)));
    // Built by objcopy alone (the stub from Debian 13's package, the payload out of zoa's
    // build), as ukify's objcopy recipe did, with every optional feature.
    let featured = ukify::objcopy_uki(
        &shared_inputs().join(STUB257_DEB),
        &uki,
        ukify::feature_sections(257, &f.path("features")),
        &f.path("objcopy"),
        &f.path("stub257-features.efi"),
    );
    let m = predict(&f, &featured, &[]);
    assert_eq!(m["stub"]["major"], 257);
    assert_eq!(
        pcr4_events(&m),
        4,
        "stub 257 loads the kernel with LoadImage"
    );
    assert_eq!(measured_sections(&m), ALL_FEATURES_SINCE_257);
    assert_eq!(m["unmeasured_sections"], serde_json::json!([".pcrsig"]));
    let boot = boot_with_tpm(&featured, &f.path("vm"), false);
    assert_prediction_matches(&m, &boot, &[4, 7, 11, 12], "stub 257 with features");
    assert_log_consistent(&f, &featured, &boot, "stub257", &[]);

    // An add-on on the ESP beside the UKI (zoa's disks never hold one) changes the boot (its
    // Authenticode in PCR4, its command line in PCR12): the prediction no longer holds, and
    // the event log check says so, naming the add-on, instead of passing.
    let addon = ukify::cmdline_addon(
        &shared_inputs().join(STUB257_DEB),
        "zoa.addon=1",
        &f.path("addon"),
    );
    let boot = boot_with_esp_files(
        &uki,
        &f.path("vm-addon"),
        &[("EFI/BOOT/BOOTX64.EFI.extra.d/extra.addon.efi", &addon)],
    );
    let plain = predict(&f, &uki, &[]);
    assert_ne!(
        plain["pcrs"]["12"]["sha256"],
        boot.pcr("sha256", 12),
        "the add-on's command line went to PCR12"
    );
    // The stub loads add-ons with LoadImage, so the firmware measures the add-on into PCR4
    // first: the check names it by its ESP path.
    let err = refused_log_check(&f, &uki, &boot, "addon");
    assert!(
        err.contains("PCR4") && err.contains("BOOTX64.EFI.extra.d\\extra.addon.efi"),
        "{err}"
    );
    assert_ne!(plain["pcrs"]["4"]["sha256"], boot.pcr("sha256", 4));

    // Secure Boot on, and a multi-profile UKI: profile 0 boots.
    let profiles = ukify::multi_profile(
        &uki,
        &shared_inputs().join(STUB257_DEB),
        &f.path("profiles"),
        &f.path("stub257-profiles.efi"),
    );
    let signed = sign_snakeoil(&profiles, &f.path("stub257-signed.efi"), f.dir.path());
    let m = predict(&f, &signed, &["--secure-boot", "on"]);
    assert_eq!(
        pcr4_events(&m),
        3,
        "with Secure Boot on, stub 257's kernel is not measured by the firmware"
    );
    assert_profile_0_predicted(&m);
    let boot = boot_with_tpm(&signed, &f.path("vm-sb"), true);
    assert_prediction_matches(
        &m,
        &boot,
        &[4, 11, 12],
        "stub 257, multi-profile, Secure Boot on",
    );
}

/// A prediction for `ukify::multi_profile`'s image measures the base sections with profile
/// 0's `.cmdline` and `.profile` in their place, and none of profile 1's.
fn assert_profile_0_predicted(m: &serde_json::Value) {
    assert_eq!(
        measured_sections(m),
        [".linux", ".osrel", ".cmdline", ".initrd", ".uname", ".sbat", ".profile"]
    );
    assert_eq!(
        m["unmeasured_sections"],
        serde_json::json!([".cmdline", ".profile", ".cmdline"]),
        "the base .cmdline and profile 1 are not measured"
    );
}

/// What stubs 257 and 262 measure of an image with every feature `ukify::with_features`
/// adds, in their canonical order (not the file's, where objcopy put them last).
const ALL_FEATURES_SINCE_257: [&str; 10] = [
    ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname", ".sbat",
    ".pcrpkey",
];

/// Debian 12's stub (252) with the optional features it knows: `.splash`, `.dtb`, `.pcrpkey`
/// measured in its order, `.pcrsig` passed on unmeasured, and zoa's `.uname` unknown to it.
#[test]
fn stub_252_features_boot_as_predicted() {
    let f = Fixture::new();
    let uki = build_probe(&probe_recipe(|t| t));
    let featured = ukify::with_features(
        &uki,
        252,
        &f.path("features"),
        &f.path("stub252-features.efi"),
    );
    let m = predict(&f, &featured, &[]);
    assert_eq!(m["stub"]["major"], 252);
    assert_eq!(
        measured_sections(&m),
        [".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey"]
    );
    assert_eq!(
        m["unmeasured_sections"],
        serde_json::json!([".uname", ".pcrsig"])
    );
    let boot = boot_with_tpm(&featured, &f.path("vm"), false);
    assert_prediction_matches(&m, &boot, &[4, 7, 11, 12], "stub 252 with features");
    assert_log_consistent(&f, &featured, &boot, "stub252-features", &[]);
}

/// Debian sid's stub (262) starts the kernel itself, and measures the optional features as
/// 257 does (the image carries all of them).
#[test]
fn stub_262_boots_as_predicted_without_a_kernel_event() {
    let f = Fixture::new();
    let uki = build_probe(&probe_recipe(|t| with_stub(t, STUB262_DEB)));
    let featured = ukify::with_features(
        &uki,
        262,
        &f.path("features"),
        &f.path("stub262-features.efi"),
    );
    let m = predict(&f, &featured, &[]);
    assert_eq!(m["stub"]["major"], 262);
    assert_eq!(
        pcr4_events(&m),
        3,
        "stub 262 starts the kernel itself: no kernel event"
    );
    assert_eq!(measured_sections(&m), ALL_FEATURES_SINCE_257);
    let boot = boot_with_tpm(&featured, &f.path("vm"), false);
    assert_prediction_matches(&m, &boot, &[4, 7, 11, 12], "stub 262 with features");
    assert_log_consistent(&f, &featured, &boot, "stub262", &[]);

    let profiles = ukify::multi_profile(
        &uki,
        &shared_inputs().join(STUB262_DEB),
        &f.path("profiles"),
        &f.path("stub262-profiles.efi"),
    );
    let m = predict(&f, &profiles, &[]);
    assert_profile_0_predicted(&m);
    let boot = boot_with_tpm(&profiles, &f.path("vm-profiles"), false);
    assert_prediction_matches(&m, &boot, &[4, 7, 11, 12], "stub 262, multi-profile");
    assert_log_consistent(&f, &profiles, &boot, "stub262-profiles", &[]);

    // A credential beside the UKI (zoa's disks never hold one): the stub packs it into an
    // initrd and measures that into PCR12, and the event log check names the event.
    let credential = f.write("zoa-test.cred", "not a real credential\n");
    let boot = boot_with_esp_files(
        &uki,
        &f.path("vm-credential"),
        &[("EFI/BOOT/BOOTX64.EFI.extra.d/zoa-test.cred", &credential)],
    );
    let plain = predict(&f, &uki, &[]);
    assert_eq!(plain["pcrs"]["4"]["sha256"], boot.pcr("sha256", 4));
    assert_ne!(plain["pcrs"]["12"]["sha256"], boot.pcr("sha256", 12));
    let err = refused_log_check(&f, &uki, &boot, "credential");
    assert!(err.contains("PCR12"), "{err}");
}

#[test]
fn secure_boot_on_omits_the_kernel_event() {
    let f = Fixture::new();
    let uki = build_probe(&probe_recipe(|t| t));
    let signed = sign_snakeoil(&uki, &f.path("sb-signed.efi"), f.dir.path());
    let m = predict(&f, &signed, &["--secure-boot", "on"]);
    assert_eq!(
        pcr4_events(&m),
        3,
        "with Secure Boot on, stub 252's kernel is not measured by the firmware"
    );
    assert!(
        m["unpredicted"]["7"].is_string(),
        "PCR7 with Secure Boot must be reported as not predicted"
    );
    let boot = boot_with_tpm(&signed, &f.path("vm"), true);
    assert_prediction_matches(&m, &boot, &[4, 11, 12], "secure boot");
    // And the unsigned image is refused outright with Secure Boot on.
    let o = run(zoa(&f.cache())
        .arg("measure")
        .arg(&uki)
        .args(["--secure-boot", "on"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unsigned"), "{}", stderr(&o));
}
