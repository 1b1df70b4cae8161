//! `zoa boot` through the library (`zoa::boot::boot`) with the real QEMU, OVMF and swtpm:
//! zoa's own deterministic disk boots, the guest's PCRs come back in both banks and equal
//! `zoa measure`'s prediction (also with a port forward and a read-only extra disk
//! attached), the TCG event log comes back verified, and a guest that never powers off
//! is stopped at the timeout with nothing left running.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zoa::boot::{boot, BootError, BootOptions};
use zoa::measure::{Bank, Pcr};

/// Generous: a TCG boot takes 15–25 s alone, longer while other tests build images.
const TIMEOUT: Duration = Duration::from_secs(240);
/// Builds `recipe` with the `zoa` binary into the fixture and returns the UKI.
fn build(f: &Fixture, recipe: &Path, name: &str) -> PathBuf {
    let o = run(zoa(&f.cache())
        .arg("build")
        .arg(recipe)
        .arg("--out")
        .arg(f.path(name))
        .arg("--inputs")
        .arg(shared_inputs())
        .arg("--offline"));
    assert!(o.status.success(), "zoa build {name}: {}", stderr(&o));
    f.path(&format!("{name}/uki.efi"))
}

/// `zoa measure UKI` (the default zoa JSON).
fn predict(f: &Fixture, uki: &Path) -> serde_json::Value {
    let o = run(zoa(&f.cache()).arg("measure").arg(uki));
    assert!(o.status.success(), "zoa measure: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("zoa measure prints JSON")
}

fn options(uki: &Path) -> BootOptions {
    let mut o = BootOptions::new(uki);
    o.timeout = Some(TIMEOUT);
    o
}

/// Runs the given processes' command lines for `needle` (our work dirs are unique).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(cmdline);
        }
    }
    found
}

#[test]
fn demo_image_boots_as_predicted_with_forward_and_extra_disk() {
    let f = Fixture::new();
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("image-recipes/llama-server.toml");
    let uki = build(&f, &recipe, "demo");
    // Not a model: zoa-init finds no disk holding the pinned model and powers off before
    // the server starts (integration/inference.rs boots the real model).
    let not_a_model = f.write("not-a-model.img", vec![0u8; 1 << 20]);

    let mut opts = options(&uki);
    opts.forwards = vec![(free_port(), 8080)];
    opts.extra_disks = vec![not_a_model];
    let started = Instant::now();
    let out = boot(&opts).unwrap_or_else(|e| panic!("zoa boot: {e}"));
    eprintln!(
        "demo boot: {:?} (QEMU ran {:?})",
        started.elapsed(),
        out.elapsed
    );

    assert!(out.powered_off, "no power off:\n{}", out.console);
    assert!(out.exit_status.success(), "QEMU: {}", out.exit_status);
    assert_eq!(
        out.fatal.as_deref(),
        Some("model: no block device holds a GGUF model of 253113024 bytes (name one with model.device, or attach the model disk)"),
        "{}",
        out.console
    );
    assert!(
        !out.console.contains("zoa-init: starting"),
        "{}",
        out.console
    );
    // The forward gave the guest a network device, and zoa-init's DHCP client its lease.
    let lease = zoa::boot::parse_console(&out.console).network;
    assert!(
        lease.as_deref().is_some_and(|l| l.contains("10.0.2.15/24")),
        "{lease:?}:\n{}",
        out.console
    );
    for (bank, zeros) in [(Bank::Sha256, 64), (Bank::Sha384, 96)] {
        let n = out
            .guest_pcrs
            .keys()
            .filter(|(b, _)| b == bank.name())
            .count();
        assert_eq!(n, 13, "{bank}: {:?}", out.guest_pcrs);
        assert_eq!(
            out.pcr(bank, Pcr::PCR12),
            Some("0".repeat(zeros).as_str()),
            "{bank} PCR12"
        );
    }
    assert_eq!(
        out.eventlog, None,
        "the demo image does not dump its event log"
    );

    // zoa's disk, the forward and the extra disk do not disturb the measured boot: the
    // guest's PCRs are the prediction.
    let m = predict(&f, &uki);
    for pcr in Pcr::PREDICTED {
        for bank in Bank::ALL {
            let predicted = m["pcrs"][pcr.to_string()][bank.name()]
                .as_str()
                .unwrap_or_else(|| panic!("no prediction for {bank} PCR{pcr}: {m}"));
            assert_eq!(
                out.pcr(bank, pcr),
                Some(predicted),
                "{bank} PCR{pcr}: booted value differs from zoa measure"
            );
        }
    }
}

#[test]
fn event_log_comes_back_verified() {
    let f = Fixture::new();
    // The same probe image measure_boot boots: built once for both.
    let uki = shared_build(&probe_recipe(|t| t)).join("uki.efi");

    let work = f.path("work");
    let mut opts = options(&uki);
    opts.work_dir = Some(work.clone());
    let started = Instant::now();
    let out = boot(&opts).unwrap_or_else(|e| panic!("zoa boot: {e}"));
    eprintln!(
        "probe boot: {:?} (QEMU ran {:?})",
        started.elapsed(),
        out.elapsed
    );

    assert!(out.powered_off, "no power off:\n{}", out.console);
    let log = out
        .eventlog
        .as_ref()
        .unwrap_or_else(|| panic!("no event log on the console:\n{}", out.console));
    assert!(log.len() > 1000, "event log of {} bytes", log.len());
    // A TCG2 (crypto-agile) log opens with the Spec ID event.
    let head = &log[..log.len().min(200)];
    assert!(
        head.windows(15).any(|w| w == b"Spec ID Event03"),
        "not a TCG2 event log"
    );
    // The frame's digest was checked by zoa; the console agrees with it too.
    let end = format!("zoa-init: eventlog-end {}", sha256_hex(log));
    assert!(out.console.contains(&end), "{end} not on the console");
    // A kept work dir keeps what the boot used.
    for name in ["disk.raw", "serial.log", "OVMF_VARS.fd"] {
        assert!(
            work.join(name).is_file(),
            "{name} not kept in {}",
            work.display()
        );
    }
}

#[test]
fn timeout_stops_qemu_and_swtpm() {
    let f = Fixture::new();
    // Not an EFI application: OVMF finds nothing to boot and waits in its boot menu
    // forever, the stand-in for a guest that never powers off.
    let uki = f.write("not-a-uki.efi", b"this is not a PE image".repeat(100));
    let work = f.path("hang");
    let mut opts = BootOptions::new(&uki);
    opts.timeout = Some(Duration::from_secs(3));
    opts.work_dir = Some(work.clone());
    let started = Instant::now();
    let err = boot(&opts).expect_err("a guest that never powers off must time out");
    assert!(matches!(err, BootError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("did not power off"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let left = processes_mentioning(&work.display().to_string());
    assert!(left.is_empty(), "still running after the timeout: {left:?}");
}
