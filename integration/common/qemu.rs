//! Booting a UKI under QEMU + OVMF + swtpm with tools independent of zoa (sfdisk,
//! mkfs.vfat, mtools for the disk), and reading what the guest's PID 1 printed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// Debian's OVMF variable store with its snakeoil PK/KEK/db enrolled.
pub const OVMF_VARS_SNAKEOIL: &str = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
pub const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
pub const SNAKEOIL_CERT: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// What a boot produced.
pub struct Boot {
    pub serial: String,
    /// (bank, pcr) → lowercase hex, as the guest read them from sysfs.
    pub pcrs: BTreeMap<(String, u32), String>,
    /// The guest's binary event log, when the image dumps it.
    pub eventlog: Option<Vec<u8>>,
}

impl Boot {
    pub fn pcr(&self, bank: &str, pcr: u32) -> &str {
        self.pcrs
            .get(&(bank.to_owned(), pcr))
            .map(String::as_str)
            .unwrap_or_else(|| panic!("guest printed no {bank} PCR{pcr}; serial:\n{}", self.serial))
    }
}

/// A GPT disk with one FAT32 EFI System Partition holding EFI/BOOT/BOOTX64.EFI.
pub fn esp_disk(uki: &Path, disk: &Path) {
    esp_disk_with(uki, disk, &[]);
}

/// `esp_disk` plus `extra` files at their ESP paths (`EFI/BOOT/X.EFI.extra.d/a.addon.efi`).
pub fn esp_disk_with(uki: &Path, disk: &Path, extra: &[(&str, &Path)]) {
    let uki_len = std::fs::metadata(uki).unwrap().len();
    let esp_mib = uki_len / (1 << 20) + 40;
    let f = std::fs::File::create(disk).unwrap();
    f.set_len((esp_mib + 2) << 20).unwrap();
    drop(f);
    let mut sfdisk = Command::new("sfdisk")
        .arg("--quiet")
        .arg(disk)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sfdisk (Debian package fdisk)");
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
    let o = Command::new("mkfs.vfat")
        .args(["-F", "32", "--offset", "2048"])
        .arg(disk)
        .arg((esp_mib * 1024).to_string())
        .output()
        .expect("mkfs.vfat (Debian package dosfstools)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = format!("{}@@{}", disk.display(), 2048 * 512);
    assert!(Command::new("mmd")
        .args(["-i", &img, "::/EFI", "::/EFI/BOOT"])
        .status()
        .expect("mtools")
        .success());
    assert!(Command::new("mcopy")
        .args(["-i", &img])
        .arg(uki)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .status()
        .unwrap()
        .success());
    for (esp_path, file) in extra {
        let mut dir = String::from("::");
        let parents = esp_path.rsplit_once('/').map_or("", |(parent, _)| parent);
        for part in parents.split('/').filter(|p| !p.is_empty()) {
            dir = format!("{dir}/{part}");
            // mmd fails on a directory that exists (EFI, EFI/BOOT): only new ones matter.
            let _ = Command::new("mmd")
                .args(["-D", "s", "-i", &img, &dir])
                .output();
        }
        assert!(Command::new("mcopy")
            .args(["-i", &img])
            .arg(file)
            .arg(format!("::/{esp_path}"))
            .status()
            .unwrap()
            .success());
    }
}

struct Reaper(Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Boots `uki` with a fresh software TPM (SHA-256 and SHA-384 banks); with Secure Boot,
/// Debian's snakeoil keys are enrolled.
pub fn boot_with_tpm(uki: &Path, work: &Path, secure_boot: bool) -> Boot {
    if secure_boot {
        boot_secure(uki, work, Path::new(OVMF_VARS_SNAKEOIL), None)
    } else {
        boot_firmware(uki, work, Path::new(OVMF_VARS), false, None, &[])
    }
}

/// Boots `uki` (Secure Boot off) from an ESP that also holds `extra` files: add-ons,
/// credentials, extensions the stub picks up beside it.
pub fn boot_with_esp_files(uki: &Path, work: &Path, extra: &[(&str, &Path)]) -> Boot {
    boot_firmware(uki, work, Path::new(OVMF_VARS), false, None, extra)
}

/// Boots `uki` under the Secure Boot firmware with a copy of the variable store `vars`.
/// With `stop_at`, the boot ends (QEMU is killed) as soon as the serial console shows that
/// text: for images the firmware refuses, which never reach Linux.
pub fn boot_secure(uki: &Path, work: &Path, vars: &Path, stop_at: Option<&str>) -> Boot {
    boot_firmware(uki, work, vars, true, stop_at, &[])
}

fn boot_firmware(
    uki: &Path,
    work: &Path,
    vars_template: &Path,
    secure_boot: bool,
    stop_at: Option<&str>,
    extra: &[(&str, &Path)],
) -> Boot {
    std::fs::create_dir_all(work).unwrap();
    let disk = work.join("disk.raw");
    esp_disk_with(uki, &disk, extra);
    let vars = work.join("vars.fd");
    std::fs::copy(vars_template, &vars).unwrap();
    let state = work.join("tpm");
    std::fs::create_dir_all(&state).unwrap();
    let o = Command::new("swtpm_setup")
        .args(["--tpm2", "--tpmstate"])
        .arg(&state)
        .args(["--pcr-banks", "sha256,sha384", "--overwrite"])
        .output()
        .expect("swtpm_setup (Debian package swtpm-tools)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sock = work.join("swtpm.sock");
    let swtpm = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", sock.display()))
        .arg("--terminate")
        .spawn()
        .expect("swtpm (Debian package swtpm)");
    let mut children = Reaper(vec![swtpm]);
    let start = Instant::now();
    while !zoa::nitrotpm::swtpm::is_listening(&sock).unwrap_or(false) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "swtpm did not create its socket"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = work.join("serial.log");
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-m",
        "1024",
        "-smp",
        "2",
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
    ]);
    if secure_boot {
        qemu.args([
            "-machine",
            "q35,accel=tcg,smm=on",
            "-global",
            "driver=cfi.pflash01,property=secure,value=on",
        ]);
    } else {
        qemu.args(["-machine", "q35,accel=tcg"]);
    }
    let code = if secure_boot {
        OVMF_CODE_SECBOOT
    } else {
        OVMF_CODE
    };
    qemu.arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={code}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .arg("-chardev")
        .arg(format!("socket,id=chrtpm,path={}", sock.display()))
        .args([
            "-tpmdev",
            "emulator,id=tpm0,chardev=chrtpm",
            "-device",
            "tpm-tis,tpmdev=tpm0",
        ])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=none,id=disk0",
            disk.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=disk0"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()));
    let child = qemu
        .spawn()
        .expect("qemu-system-x86_64 (Debian package qemu-system-x86)");
    children.0.push(child);
    let start = Instant::now();
    loop {
        let done = children
            .0
            .last_mut()
            .and_then(|q| q.try_wait().ok().flatten());
        if done.is_some() {
            break;
        }
        let serial = std::fs::read_to_string(&log).unwrap_or_default();
        match stop_at {
            Some(text) if serial.contains(text) => break, // the Reaper kills QEMU
            None if serial.contains("Shell> ") => panic!(
                "the firmware did not boot the image (it fell back to its shell); serial:\n{serial}"
            ),
            _ => {}
        }
        if start.elapsed() > BOOT_TIMEOUT {
            let serial = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("guest did not power off within {BOOT_TIMEOUT:?}; serial:\n{serial}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(children);
    let serial = std::fs::read_to_string(&log).unwrap_or_default();
    parse_serial(serial)
}

fn parse_serial(serial: String) -> Boot {
    let mut pcrs = BTreeMap::new();
    let mut b64 = String::new();
    let mut in_log = false;
    let mut log_sha = None;
    for line in serial.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("zoa-init: pcr ") {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            if let [bank, n, hex] = parts[..] {
                if let Ok(n) = n.parse() {
                    pcrs.insert((bank.to_owned(), n), hex.to_owned());
                }
            }
        } else if line.starts_with("zoa-init: eventlog-begin") {
            in_log = true;
        } else if let Some(sha) = line.strip_prefix("zoa-init: eventlog-end ") {
            in_log = false;
            log_sha = Some(sha.trim().to_owned());
        } else if in_log {
            if let Some(chunk) = line.strip_prefix("zoa-init: eventlog ") {
                b64.push_str(chunk.trim());
            }
        }
    }
    let eventlog = log_sha.map(|sha| {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .expect("event log base64");
        assert_eq!(
            super::sha256_hex(&bytes),
            sha,
            "event log damaged on the serial console"
        );
        super::keep_fuzz_seed("eventlog", "boot", None, &bytes);
        bytes
    });
    Boot {
        serial,
        pcrs,
        eventlog,
    }
}

/// Signs a UKI with Debian's snakeoil key (enrolled in OVMF_VARS_4M.snakeoil.fd) using sbsign.
pub fn sign_snakeoil(uki: &Path, out: &Path, work: &Path) -> PathBuf {
    let key = work.join("snakeoil.key");
    let o = Command::new("openssl")
        .args([
            "rsa",
            "-passin",
            "pass:snakeoil",
            "-in",
            SNAKEOIL_KEY,
            "-out",
        ])
        .arg(&key)
        .output()
        .expect("openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new("sbsign")
        .arg("--key")
        .arg(&key)
        .args(["--cert", SNAKEOIL_CERT, "--output"])
        .arg(out)
        .arg(uki)
        .output()
        .expect("sbsign (Debian package sbsigntool)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out.to_owned()
}
