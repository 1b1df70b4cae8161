//! Boots the demo image under QEMU + OVMF (TCG) and watches PID 1 start llama-server
//! and power the machine off when the server exits (no model disk is attached, so the
//! server stops right after printing its start-up lines).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// A GPT disk with one FAT32 EFI System Partition holding EFI/BOOT/BOOTX64.EFI, made with
/// util-linux, dosfstools and mtools (independent of zoa's own code).
fn esp_disk(uki: &Path, disk: &Path) {
    let uki_len = std::fs::metadata(uki).unwrap().len();
    let esp_mib = uki_len / (1 << 20) + 40;
    let total_mib = esp_mib + 2;
    let f = std::fs::File::create(disk).unwrap();
    f.set_len(total_mib << 20).unwrap();
    drop(f);
    let mut sfdisk = Command::new("sfdisk")
        .arg("--quiet")
        .arg(disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk (fdisk package)");
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(
            format!(
                "label: gpt\nstart=2048, size={}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n",
                esp_mib * 2048
            )
            .as_bytes(),
        )
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let offset = 2048 * 512;
    let st = Command::new("mkfs.vfat")
        .args(["-F", "32", "--offset", "2048"])
        .arg(disk)
        .arg((esp_mib * 1024).to_string())
        .output()
        .expect("mkfs.vfat (dosfstools)");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let img = format!("{}@@{offset}", disk.display());
    for d in ["::/EFI", "::/EFI/BOOT"] {
        let st = Command::new("mmd")
            .args(["-i", &img, d])
            .status()
            .expect("mmd (mtools)");
        assert!(st.success());
    }
    let st = Command::new("mcopy")
        .args(["-i", &img])
        .arg(uki)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn demo_image_boots_and_starts_llama_server() {
    let f = Fixture::new();
    let o = run(zoa(&f.cache())
        .arg("build")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("image-recipes/llama-server.toml"))
        .arg("--out")
        .arg(f.path("out"))
        .arg("--inputs")
        .arg(shared_inputs())
        .arg("--offline"));
    assert!(o.status.success(), "{}", stderr(&o));
    let disk = f.path("disk.raw");
    esp_disk(&f.path("out/uki.efi"), &disk);
    let vars = f.path("vars.fd");
    std::fs::copy(OVMF_VARS, &vars).unwrap();
    let log = f.path("serial.log");

    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "q35,accel=tcg",
            "-m",
            "1024",
            "-smp",
            "2",
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
        ])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=none,id=disk0",
            disk.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=disk0"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .spawn()
        .expect("qemu-system-x86_64 (qemu-system-x86 package)");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = qemu.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > BOOT_TIMEOUT {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let serial = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!("the guest did not power off within {BOOT_TIMEOUT:?}; serial:\n{serial}")
    });
    assert!(
        status.success(),
        "qemu exited with {status}; serial:\n{serial}"
    );
    for want in [
        "zoa-init: starting /usr/bin/llama-server",
        "zoa-init: server exited",
    ] {
        assert!(
            serial.contains(want),
            "serial console lacks {want:?}:\n{serial}"
        );
    }
    // llama-server itself ran: its own start-up output is on the console.
    let server_lines: Vec<&str> = serial
        .lines()
        .skip_while(|l| !l.contains("zoa-init: starting"))
        .skip(1)
        .take_while(|l| !l.contains("zoa-init: server exited"))
        .collect();
    assert!(
        server_lines
            .iter()
            .any(|l| l.contains("build") || l.contains("llama") || l.contains("model")),
        "no output from llama-server on the console:\n{serial}"
    );
    eprintln!("booted in {:?}", start.elapsed());
}
