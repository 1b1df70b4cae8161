//! `zoa boot`: a local rehearsal of the cloud boot under QEMU + OVMF + swtpm.
//!
//! The UKI is put on a deterministic GPT disk ([`crate::uefi::disk`]), booted by OVMF
//! with a fresh software TPM (SHA-256 and SHA-384 banks, as on NitroTPM), and the guest's
//! serial console is read back: zoa-init prints the PCRs it reads from sysfs, optionally
//! the TCG event log, and powers the machine off when the server ends. [`parse_console`]
//! turns that console into data the caller can compare with `zoa measure`'s prediction.
//!
//! The QEMU command line follows the design notes ("Booting images here"): q35 with TCG
//! (KVM only when `ZOA_ACCEL` asks for it), `-nodefaults` (without it an empty DVD boot
//! option is tried first and PCR4 changes), the boot disk as the only bootable device
//! (`bootindex=0`), OVMF code read-only and a private copy of its variable store, a TPM
//! TIS device backed by swtpm, the serial console into a file. Extra disks are read-only
//! and never bootable; a network device exists only when ports are forwarded. The
//! integration test `boot_cmd` shows the guest's PCR4/7/11/12 equal `zoa measure`'s
//! prediction with a forward and an extra disk attached.
//!
//! Children (swtpm, QEMU) are killed on every path out of [`boot`] (errors, timeout,
//! Ctrl-C, panics via `Drop`), and the temporary work directory is removed unless the
//! caller asked to keep one.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::measure::{Bank, Measurements, Pcr};
use crate::uefi::disk::{self, DiskError};
use crate::uefi::file::ImageFile;

/// Guest memory when the caller does not choose (MiB).
pub const DEFAULT_MEMORY_MIB: u32 = 1024;
/// Guest vCPUs when the caller does not choose.
pub const DEFAULT_CPUS: u32 = 2;
/// Debian's OVMF firmware (package `ovmf`), 4 MiB flash layout.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// Debian's empty OVMF variable store matching [`OVMF_CODE`].
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Debian's OVMF firmware with Secure Boot (and SMM, which protects its variables),
/// same flash layout as [`OVMF_CODE`]: used with [`BootOptions::secure_boot_vars`].
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// Environment variable overriding [`OVMF_CODE`].
pub const ENV_OVMF_CODE: &str = "ZOA_OVMF_CODE";
/// Environment variable overriding [`OVMF_CODE_SECBOOT`].
pub const ENV_OVMF_CODE_SECBOOT: &str = "ZOA_OVMF_CODE_SECBOOT";
/// Environment variable overriding [`OVMF_VARS`].
pub const ENV_OVMF_VARS: &str = "ZOA_OVMF_VARS";
/// Environment variable choosing QEMU's accelerator (`tcg`, the default, `kvm`, `kvm:tcg`).
pub const ENV_ACCEL: &str = "ZOA_ACCEL";

/// How long swtpm may take to create its control socket.
const SWTPM_SOCKET_WAIT: Duration = Duration::from_secs(10);
/// How often the console is read and QEMU polled.
const POLL: Duration = Duration::from_millis(100);
/// How many console lines an error quotes.
const TAIL_LINES: usize = 20;
/// `sun_path` holds 108 bytes including the NUL.
const MAX_SOCKET_PATH: usize = 107;
/// Every line zoa-init prints starts with this (see init/README.md).
const INIT_PREFIX: &str = "zoa-init: ";

/// What to boot and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOptions {
    /// The UKI to boot.
    pub uki: PathBuf,
    /// TCP port forwards `(host, guest)`; the host side binds to 127.0.0.1 only. Without
    /// forwards the guest has no network device at all.
    pub forwards: Vec<(u16, u16)>,
    /// Raw disk images attached read-only, in order, as virtio-blk devices after the boot
    /// disk (guest `/dev/vdb`, `/dev/vdc`, ...).
    pub extra_disks: Vec<PathBuf>,
    /// Stop the guest (and fail) when it has not powered off after this long; `None`
    /// waits for as long as the guest runs.
    pub timeout: Option<Duration>,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Guest vCPUs.
    pub cpus: u32,
    /// Copy the guest's serial console to our stdout as it arrives.
    pub echo_console: bool,
    /// Keep the disk, firmware variables, TPM state and logs here; `None` uses a
    /// temporary directory that is removed afterwards.
    pub work_dir: Option<PathBuf>,
    /// Pressed from another thread, it presses the guest's ACPI power button (QMP
    /// `system_powerdown`): zoa-init then stops the server gracefully and powers off.
    pub power_button: Option<PowerButton>,
    /// Boot with the emulated NitroTPM ([`crate::nitrotpm`]) between QEMU and swtpm: the
    /// guest's NSM requests get attestation documents signed by a test CA.
    pub nitrotpm: bool,
    /// With `nitrotpm`: the test CA's root certificate (PEM) is written here before the
    /// guest starts, for verifiers.
    pub attestation_root: Option<PathBuf>,
    /// Boot with Secure Boot: OVMF's Secure Boot firmware ([`OVMF_CODE_SECBOOT`], with
    /// SMM) and a private copy of this variable store, which enrolls PK, KEK and db and
    /// turns Secure Boot on (made, e.g., by `virt-fw-vars --set-pk ... --add-kek ...
    /// --add-db ... --sb`). Its variables are what PCR7 measures: predict with the same
    /// keys (`zoa measure --uefi-data`, or the release's `uefi-data.bin`).
    pub secure_boot_vars: Option<PathBuf>,
}

/// A handle that presses the guest's ACPI power button while [`boot`] runs.
#[derive(Debug, Clone, Default)]
pub struct PowerButton(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl PowerButton {
    pub fn new() -> PowerButton {
        PowerButton::default()
    }

    /// Asks [`boot`] to press the button (once; later presses before it acts are one).
    pub fn press(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn take_press(&self) -> bool {
        self.0.swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

impl PartialEq for PowerButton {
    /// The same button, not merely one in the same state.
    fn eq(&self, other: &PowerButton) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PowerButton {}

impl BootOptions {
    /// Options with the defaults: no forwards, no extra disks, no timeout,
    /// [`DEFAULT_MEMORY_MIB`], [`DEFAULT_CPUS`], console not echoed, temporary work dir.
    pub fn new(uki: impl Into<PathBuf>) -> BootOptions {
        BootOptions {
            uki: uki.into(),
            forwards: Vec::new(),
            extra_disks: Vec::new(),
            timeout: None,
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: DEFAULT_CPUS,
            echo_console: false,
            work_dir: None,
            power_button: None,
            nitrotpm: false,
            attestation_root: None,
            secure_boot_vars: None,
        }
    }
}

/// What a boot produced.
#[derive(Debug, Clone)]
pub struct BootOutcome {
    /// QEMU's exit status (success when the guest powered off).
    pub exit_status: ExitStatus,
    /// zoa-init printed `zoa-init: power off`.
    pub powered_off: bool,
    /// The whole serial console (invalid UTF-8 replaced).
    pub console: String,
    /// `(bank, pcr)` → lowercase hex, as the guest read them from sysfs. Banks are the
    /// guest's names, including any zoa does not predict (`sha1`, `sha512`).
    pub guest_pcrs: BTreeMap<(String, u32), String>,
    /// The guest's TCG2 binary event log, when the image dumps it; its size and SHA-256
    /// were checked against the `eventlog-begin`/`eventlog-end` frame.
    pub eventlog: Option<Vec<u8>>,
    /// The message of the first `zoa-init: fatal: <message>` line.
    pub fatal: Option<String>,
    /// From QEMU's start to its exit.
    pub elapsed: Duration,
    /// With the emulated NitroTPM: every attestation document it gave the guest, in order.
    pub attestation_documents: Vec<Vec<u8>>,
}

impl BootOutcome {
    /// The guest's value of one PCR, e.g. `pcr(Bank::Sha384, Pcr::PCR4)`.
    pub fn pcr(&self, bank: Bank, pcr: Pcr) -> Option<&str> {
        self.guest_pcrs
            .get(&(bank.name().to_owned(), pcr.into()))
            .map(String::as_str)
    }

    /// The guest's [`Pcr::PREDICTED`] in both banks ([`Bank::ALL`], which the guest's TPM
    /// has as NitroTPM has) next to `prediction`'s values, in that order (PCR, then bank).
    /// Without a prediction every `predicted` is `None`.
    pub fn compare_with(&self, prediction: Option<&Measurements>) -> Vec<PcrComparison> {
        let mut rows = Vec::new();
        for pcr in Pcr::PREDICTED {
            for bank in Bank::ALL {
                let predicted = prediction.and_then(|m| m.pcr(pcr)).map(|d| d.get(bank));
                rows.push(PcrComparison {
                    pcr,
                    bank,
                    booted: self.pcr(bank, pcr).map(str::to_owned),
                    predicted: predicted.map(str::to_owned),
                });
            }
        }
        rows
    }
}

/// One PCR of one bank: what the guest read at boot and what was predicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrComparison {
    pub pcr: Pcr,
    pub bank: Bank,
    /// Lowercase hex as the guest printed it; `None` when it did not print this PCR.
    pub booted: Option<String>,
    /// Lowercase hex; `None` when this PCR was not predicted.
    pub predicted: Option<String>,
}

impl PcrComparison {
    /// Both values are known and they differ (a missing value is not a difference).
    pub fn differs(&self) -> bool {
        matches!((&self.booted, &self.predicted), (Some(b), Some(p)) if b != p)
    }
}

/// Everything zoa-init's console contract lines say (init/README.md, "Console line
/// contract"); other console output is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedConsole {
    /// From `zoa-init: version <semver>`.
    pub init_version: Option<String>,
    /// `(bank, pcr)` → lowercase hex, from `zoa-init: pcr <bank> <n> <hex>`.
    pub pcrs: BTreeMap<(String, u32), String>,
    /// Reasons from `zoa-init: pcr unavailable: <reason>`.
    pub pcr_unavailable: Vec<String>,
    /// The decoded event log and its frame check, when a frame was printed.
    pub eventlog: Option<Result<Vec<u8>, EventLogFrameError>>,
    /// The reason from `zoa-init: eventlog unavailable: <reason>`.
    pub eventlog_unavailable: Option<String>,
    /// Modules from `zoa-init: module <path>`, in load order.
    pub modules: Vec<String>,
    /// `argv[0]` from `zoa-init: starting <argv0>`.
    pub started: Option<String>,
    /// How the server ended last, from `zoa-init: server exited with <how>`, e.g. `code 1`.
    pub server_exit: Option<String>,
    /// The lease from `zoa-init: network <iface> <addr>/<len> via ...`.
    pub network: Option<String>,
    /// From `zoa-init: model <path> from <device>: ... sha256 verified ...`.
    pub model: Option<String>,
    /// How many `zoa-init: restarting ...` lines (server restarts) were printed.
    pub restarts: u32,
    /// Who asked the machine to stop, from `zoa-init: stopping: <by>`.
    pub stopping: Option<String>,
    /// Messages from `zoa-init: warning: <what>`.
    pub warnings: Vec<String>,
    /// The first `zoa-init: fatal: <what>` message.
    pub fatal: Option<String>,
    /// `zoa-init: power off` was printed.
    pub powered_off: bool,
}

/// Why an event log frame on the console cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventLogFrameError {
    #[error("eventlog-begin has a bad size {0:?}")]
    BadSize(String),
    #[error("the event log's base64 does not decode: {0}")]
    Base64(String),
    #[error("the event log has {decoded} bytes, eventlog-begin announced {declared}")]
    Length { declared: u64, decoded: u64 },
    #[error("the event log's sha256 is {computed}, eventlog-end announced {declared}")]
    Digest { declared: String, computed: String },
    #[error("eventlog-begin without eventlog-end (the guest stopped mid-log?)")]
    Unterminated,
    #[error("eventlog-end without eventlog-begin")]
    Unopened,
}

/// Errors of [`boot`]. Each says which tool, file or option, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("emulated NitroTPM: {0}")]
    NitroTpm(String),
    #[error("{tool} not found in PATH: install the Debian package {package}")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("OVMF firmware {} not found: install the Debian package ovmf, or set {var} to the file", path.display())]
    FirmwareMissing { path: PathBuf, var: &'static str },
    #[error("{var}={}: no such file (it names the OVMF firmware to use)", path.display())]
    FirmwareOverrideMissing { path: PathBuf, var: &'static str },
    #[error("Secure Boot variable store {}: {problem}", path.display())]
    SecureBootVars { path: PathBuf, problem: String },
    #[error("{}: cannot read the UKI: {source}", path.display())]
    Uki { path: PathBuf, source: io::Error },
    #[error("extra disk {}: {source}", path.display())]
    ExtraDisk { path: PathBuf, source: io::Error },
    #[error("{0}")]
    InvalidOption(String),
    #[error("{}: path is not UTF-8, which QEMU's option syntax needs", path.display())]
    NonUtf8Path { path: PathBuf },
    #[error("swtpm socket path {} is longer than {MAX_SOCKET_PATH} bytes: use a shorter work directory", path.display())]
    SocketPathTooLong { path: PathBuf },
    #[error("work directory {}: {what}: {source}", path.display())]
    WorkDir {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("boot disk: {0}")]
    Disk(#[from] DiskError),
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: &'static str,
        source: io::Error,
    },
    #[error("swtpm_setup failed ({status}): {output}")]
    SwtpmSetup { status: ExitStatus, output: String },
    #[error("swtpm did not create its control socket {} within {:?}: {log}", socket.display(), SWTPM_SOCKET_WAIT)]
    SwtpmNotReady { socket: PathBuf, log: String },
    #[error("swtpm exited early ({status}): {log}")]
    SwtpmExited { status: ExitStatus, log: String },
    #[error("qemu-system-x86_64 failed ({status}): {stderr}; last console lines: {console_tail}")]
    Qemu {
        status: ExitStatus,
        stderr: String,
        console_tail: String,
    },
    #[error("waiting for {tool}: {source}")]
    Wait {
        tool: &'static str,
        source: io::Error,
    },
    #[error("reading the serial console {}: {source}", path.display())]
    Console { path: PathBuf, source: io::Error },
    #[error("the guest did not power off within {after:?} (QEMU and swtpm were stopped); last console lines: {console_tail}")]
    Timeout {
        after: Duration,
        console_tail: String,
    },
    #[error("interrupted: QEMU and swtpm were stopped")]
    Interrupted,
    #[error("cannot watch for Ctrl-C: {0}")]
    Signals(io::Error),
    #[error("the event log on the serial console is damaged: {0}")]
    EventLog(EventLogFrameError),
}

/// Parses a `HOST:GUEST` port forward (for the command line), e.g. `8080:8080`.
pub fn parse_forward(s: &str) -> Result<(u16, u16), String> {
    // The messages do not repeat `s`: clap (and any caller) shows the value already.
    let (host, guest) = s
        .split_once(':')
        .ok_or_else(|| "expected HOSTPORT:GUESTPORT, e.g. 8080:8080".to_owned())?;
    let port = |p: &str, which: &str| -> Result<u16, String> {
        match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("the {which} port {p:?} is not 1-65535")),
            Ok(n) => Ok(n),
        }
    };
    Ok((port(host, "host")?, port(guest, "guest")?))
}

/// Boots `opts.uki` under QEMU + OVMF + swtpm and waits until the guest powers off (or
/// the timeout passes, or the user interrupts), then returns what the console said.
///
/// An outcome is returned whenever QEMU ends normally, even if the guest did not power
/// off cleanly (check [`BootOutcome::powered_off`] and [`BootOutcome::fatal`]); a QEMU
/// failure, a timeout, an interruption or a damaged event log are errors.
pub fn boot(opts: &BootOptions) -> Result<BootOutcome, BootError> {
    let uki = ImageFile::open(&opts.uki).map_err(|source| BootError::Uki {
        path: opts.uki.clone(),
        source,
    })?;
    boot_image(opts, &uki)
}

/// [`boot`] with the UKI already open (the caller predicted its PCRs from the same file).
pub fn boot_image(opts: &BootOptions, uki: &ImageFile) -> Result<BootOutcome, BootError> {
    check_options(opts)?;
    let accel = accel()?;
    let tools = Tools::find(opts.secure_boot_vars.is_some())?;
    let work = WorkDir::new(opts.work_dir.as_deref())?;
    let paths = WorkPaths::new(work.path())?;
    // Watch for Ctrl-C before the first child starts, so no path leaves one behind.
    let signals = interrupt::watch().map_err(BootError::Signals)?;

    let seed = sha256_of(uki).map_err(|source| BootError::Uki {
        path: opts.uki.clone(),
        source,
    })?;
    let disk_info = disk::write_esp_disk(uki, &paths.disk, &seed)?;
    log::info!(
        "boot disk {} ({} bytes, disk GUID {})",
        disk_info.path.display(),
        disk_info.size,
        disk_info.disk_guid
    );
    match &opts.secure_boot_vars {
        Some(enrolled) => {
            check_vars_layout(enrolled, &tools.ovmf_vars)?;
            copy_vars(enrolled, &paths.vars)?;
        }
        None => copy_vars(&tools.ovmf_vars, &paths.vars)?,
    }

    // A terminal's Ctrl-C also reaches the children (same process group): their
    // failure is then reported as the interruption it is.
    let or_interrupted = |e: BootError| {
        if signals.interrupted() {
            BootError::Interrupted
        } else {
            e
        }
    };
    let mut children = Children::default();
    swtpm_setup(&tools, &paths).map_err(or_interrupted)?;
    children.swtpm = Some(start_swtpm(&tools, &paths).map_err(or_interrupted)?);
    wait_for_socket(&mut children, &paths, &signals).map_err(or_interrupted)?;
    // Stops with this function, after QEMU.
    let relay = match opts.nitrotpm {
        true => Some(start_nitrotpm(opts, &paths)?),
        false => None,
    };

    // Created before QEMU starts so the reader can open it at once; QEMU truncates it
    // when it opens it, which changes nothing for an empty file.
    File::create(&paths.serial).map_err(|source| BootError::WorkDir {
        path: paths.serial.clone(),
        what: "creating the serial log",
        source,
    })?;
    let mut console = ConsoleTail::open(&paths.serial, opts.echo_console)?;
    let args = qemu_args(opts, &tools, &paths, &accel)?;
    log::debug!("{} {:?}", tools.qemu.display(), args);
    let (qemu_out, qemu_err) = log_file(&paths.qemu_log, "creating the QEMU log")?;
    let started = Instant::now();
    children.qemu = Some(
        Command::new(&tools.qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(qemu_out)
            .stderr(qemu_err)
            .spawn()
            .map_err(|source| BootError::Spawn {
                tool: "qemu-system-x86_64",
                source,
            })?,
    );

    let status = loop {
        console.pump()?;
        if signals.interrupted() {
            children.kill_all();
            return Err(BootError::Interrupted);
        }
        if let Some(status) = children.try_wait_qemu()? {
            break status;
        }
        if opts
            .power_button
            .as_ref()
            .is_some_and(PowerButton::take_press)
        {
            qmp_system_powerdown(&paths.qmp)?;
        }
        if let Some(limit) = opts.timeout {
            if started.elapsed() >= limit {
                children.kill_all();
                console.pump()?;
                return Err(BootError::Timeout {
                    after: limit,
                    console_tail: tail(&console.text(), TAIL_LINES),
                });
            }
        }
        std::thread::sleep(POLL);
    };
    let elapsed = started.elapsed();
    // swtpm ends by itself when QEMU disconnects (--terminate); stop it regardless.
    children.kill_all();
    if signals.interrupted() {
        return Err(BootError::Interrupted);
    }
    console.pump()?;
    let text = console.text();
    let parsed = parse_console(&text);
    if !status.success() && !parsed.powered_off {
        return Err(BootError::Qemu {
            status,
            stderr: tail(&read_lossy(&paths.qemu_log), TAIL_LINES),
            console_tail: tail(&text, TAIL_LINES),
        });
    }
    let eventlog = match parsed.eventlog {
        None => None,
        Some(Ok(log)) => Some(log),
        Some(Err(e)) => return Err(BootError::EventLog(e)),
    };
    Ok(BootOutcome {
        exit_status: status,
        powered_off: parsed.powered_off,
        guest_pcrs: parsed.pcrs,
        eventlog,
        fatal: parsed.fatal,
        console: text,
        elapsed,
        attestation_documents: relay.as_ref().map(|r| r.issued()).unwrap_or_default(),
    })
}

/// Parses zoa-init's console contract lines out of a serial console.
///
/// Lines are matched only when they start with `zoa-init: ` (kernel and server output
/// come in between); carriage returns from the serial line discipline are ignored. An
/// event log frame is decoded and checked against its announced size and SHA-256.
pub fn parse_console(console: &str) -> ParsedConsole {
    let mut p = ParsedConsole::default();
    // The open event log frame: announced size and the base64 so far.
    let mut frame: Option<(Result<u64, String>, String)> = None;
    for raw in console.lines() {
        let line = raw.trim_end_matches('\r');
        let Some(msg) = line.strip_prefix(INIT_PREFIX) else {
            continue;
        };
        if let Some(reason) = msg.strip_prefix("pcr unavailable: ") {
            p.pcr_unavailable.push(reason.to_owned());
        } else if let Some(rest) = msg.strip_prefix("pcr ") {
            if let Some((key, hex)) = parse_pcr_line(rest) {
                p.pcrs.insert(key, hex);
            }
        } else if let Some(size) = msg.strip_prefix("eventlog-begin ") {
            let size = size
                .trim()
                .parse::<u64>()
                .map_err(|_| size.trim().to_owned());
            frame = Some((size, String::new()));
        } else if let Some(sha) = msg.strip_prefix("eventlog-end ") {
            p.eventlog = Some(match frame.take() {
                Some((size, b64)) => check_frame(size, &b64, sha.trim()),
                None => Err(EventLogFrameError::Unopened),
            });
        } else if let Some(reason) = msg.strip_prefix("eventlog unavailable: ") {
            p.eventlog_unavailable = Some(reason.to_owned());
        } else if let Some(chunk) = msg.strip_prefix("eventlog ") {
            if let Some((_, b64)) = frame.as_mut() {
                b64.push_str(chunk.trim());
            }
        } else if let Some(v) = msg.strip_prefix("version ") {
            p.init_version = Some(v.to_owned());
        } else if let Some(m) = msg.strip_prefix("module ") {
            p.modules.push(m.to_owned());
        } else if let Some(argv0) = msg.strip_prefix("starting ") {
            p.started = Some(argv0.to_owned());
        } else if let Some(how) = msg.strip_prefix("server exited with ") {
            p.server_exit = Some(how.to_owned());
        } else if let Some(lease) = msg.strip_prefix("network ") {
            p.network = Some(lease.to_owned());
        } else if let Some(m) = msg.strip_prefix("model ") {
            p.model = Some(m.to_owned());
        } else if msg.starts_with("restarting ") {
            p.restarts += 1;
        } else if let Some(by) = msg.strip_prefix("stopping: ") {
            p.stopping = Some(by.to_owned());
        } else if let Some(w) = msg.strip_prefix("warning: ") {
            p.warnings.push(w.to_owned());
        } else if let Some(f) = msg.strip_prefix("fatal: ") {
            p.fatal.get_or_insert_with(|| f.to_owned());
        } else if msg.trim_end() == "power off" {
            p.powered_off = true;
        }
    }
    if frame.is_some() {
        p.eventlog = Some(Err(EventLogFrameError::Unterminated));
    }
    p
}

/// `<bank> <n> <hex>` with a known bank, a PCR index 0–23 and hex of the bank's size.
fn parse_pcr_line(rest: &str) -> Option<((String, u32), String)> {
    let mut it = rest.split_whitespace();
    let (bank, n, hex) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    let digest_len = match bank {
        "sha1" => 20,
        "sha256" => 32,
        "sha384" => 48,
        "sha512" => 64,
        _ => return None,
    };
    let n: u32 = n.parse().ok().filter(|n| *n < 24)?;
    let ok = hex.len() == 2 * digest_len
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then(|| ((bank.to_owned(), n), hex.to_owned()))
}

fn check_frame(
    size: Result<u64, String>,
    b64: &str,
    declared_sha: &str,
) -> Result<Vec<u8>, EventLogFrameError> {
    let declared = size.map_err(EventLogFrameError::BadSize)?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| EventLogFrameError::Base64(e.to_string()))?;
    if data.len() as u64 != declared {
        return Err(EventLogFrameError::Length {
            declared,
            decoded: data.len() as u64,
        });
    }
    let computed = hex::encode(Sha256::digest(&data));
    if !computed.eq_ignore_ascii_case(declared_sha) {
        return Err(EventLogFrameError::Digest {
            declared: declared_sha.to_owned(),
            computed,
        });
    }
    Ok(data)
}

/// The last `n` non-empty lines of `text`, joined with " | " so an error stays one line.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let start = lines.len().saturating_sub(n);
    if lines.is_empty() {
        return "(none)".to_owned();
    }
    lines[start..].join(" | ")
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Refuses options QEMU would reject late or that make no sense.
fn check_options(opts: &BootOptions) -> Result<(), BootError> {
    let meta = fs::metadata(&opts.uki).map_err(|source| BootError::Uki {
        path: opts.uki.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(BootError::Uki {
            path: opts.uki.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    if opts.attestation_root.is_some() && !opts.nitrotpm {
        return Err(BootError::InvalidOption(
            "an attestation root is written only by a boot with the emulated NitroTPM".into(),
        ));
    }
    if opts.memory_mib < 256 {
        return Err(BootError::InvalidOption(format!(
            "memory {} MiB is too small: the kernel and initramfs need at least 256 MiB",
            opts.memory_mib
        )));
    }
    if opts.cpus == 0 || opts.cpus > 255 {
        return Err(BootError::InvalidOption(format!(
            "cpus {} is out of range 1-255",
            opts.cpus
        )));
    }
    let mut hosts = BTreeSet::new();
    for &(host, guest) in &opts.forwards {
        if host == 0 || guest == 0 {
            return Err(BootError::InvalidOption(format!(
                "forward {host}:{guest}: ports must be 1-65535"
            )));
        }
        if !hosts.insert(host) {
            return Err(BootError::InvalidOption(format!(
                "forward: host port {host} is given twice"
            )));
        }
    }
    for d in &opts.extra_disks {
        // Opening proves it exists and is readable now, with a clear message, instead
        // of a QEMU error after the firmware has been prepared.
        File::open(d).map_err(|source| BootError::ExtraDisk {
            path: d.clone(),
            source,
        })?;
        if fs::metadata(d).map(|m| m.is_dir()).unwrap_or(false) {
            return Err(BootError::ExtraDisk {
                path: d.clone(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "is a directory"),
            });
        }
    }
    Ok(())
}

/// The host programs and firmware a boot needs.
#[derive(Debug, Clone)]
struct Tools {
    qemu: PathBuf,
    swtpm: PathBuf,
    swtpm_setup: PathBuf,
    ovmf_code: PathBuf,
    ovmf_vars: PathBuf,
}

impl Tools {
    /// With `secure_boot`, `ovmf_code` is OVMF's Secure Boot build.
    fn find(secure_boot: bool) -> Result<Tools, BootError> {
        let tool = |tool: &'static str, package: &'static str| {
            find_in_path(tool).ok_or(BootError::ToolMissing { tool, package })
        };
        let firmware = |var: &'static str, default: &str| match std::env::var_os(var)
            .filter(|v| !v.is_empty())
        {
            Some(p) => {
                let path = PathBuf::from(p);
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(BootError::FirmwareOverrideMissing { path, var })
                }
            }
            None => {
                let path = PathBuf::from(default);
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(BootError::FirmwareMissing { path, var })
                }
            }
        };
        Ok(Tools {
            qemu: tool("qemu-system-x86_64", "qemu-system-x86")?,
            swtpm: tool("swtpm", "swtpm")?,
            swtpm_setup: tool("swtpm_setup", "swtpm-tools")?,
            ovmf_code: match secure_boot {
                true => firmware(ENV_OVMF_CODE_SECBOOT, OVMF_CODE_SECBOOT)?,
                false => firmware(ENV_OVMF_CODE, OVMF_CODE)?,
            },
            ovmf_vars: firmware(ENV_OVMF_VARS, OVMF_VARS)?,
        })
    }
}

/// The first executable file named `name` in `PATH`.
fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// QEMU's accelerator: TCG unless `ZOA_ACCEL` says otherwise.
///
/// Not detected from /dev/kvm: on the project's machines /dev/kvm opens (as root) but
/// KVM stops OVMF with an internal emulation error, and the guest hangs silently. TCG
/// always works and gives the same measurements, only slower; users with a working KVM
/// opt in with `ZOA_ACCEL=kvm` (or `kvm:tcg`).
fn accel() -> Result<String, BootError> {
    let value = std::env::var(ENV_ACCEL).unwrap_or_default();
    match value.as_str() {
        "" => Ok("tcg".to_owned()),
        "tcg" | "kvm" | "kvm:tcg" => Ok(value),
        other => Err(BootError::InvalidOption(format!(
            "{ENV_ACCEL}={other:?}: expected tcg, kvm or kvm:tcg"
        ))),
    }
}

/// The work directory: a temporary one (removed on drop) or the caller's (kept).
enum WorkDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl WorkDir {
    fn new(keep: Option<&Path>) -> Result<WorkDir, BootError> {
        match keep {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(|source| BootError::WorkDir {
                    path: dir.to_owned(),
                    what: "creating it",
                    source,
                })?;
                Ok(WorkDir::Kept(dir.to_owned()))
            }
            None => tempfile::Builder::new()
                .prefix("zoa-boot-")
                .tempdir()
                .map(WorkDir::Temp)
                .map_err(|source| BootError::WorkDir {
                    path: std::env::temp_dir(),
                    what: "creating a temporary directory",
                    source,
                }),
        }
    }

    fn path(&self) -> &Path {
        match self {
            WorkDir::Temp(t) => t.path(),
            WorkDir::Kept(p) => p,
        }
    }
}

/// The files of one boot inside the work directory.
#[derive(Debug, Clone)]
struct WorkPaths {
    disk: PathBuf,
    vars: PathBuf,
    tpm_state: PathBuf,
    socket: PathBuf,
    qmp: PathBuf,
    swtpm_log: PathBuf,
    serial: PathBuf,
    qemu_log: PathBuf,
    /// Where the emulated NitroTPM listens for QEMU (`--nitrotpm`).
    nitrotpm: PathBuf,
}

impl WorkPaths {
    fn new(dir: &Path) -> Result<WorkPaths, BootError> {
        let p = WorkPaths {
            disk: dir.join("disk.raw"),
            vars: dir.join("OVMF_VARS.fd"),
            tpm_state: dir.join("tpm"),
            socket: dir.join("swtpm.sock"),
            nitrotpm: dir.join("nitrotpm.sock"),
            qmp: dir.join("qmp.sock"),
            swtpm_log: dir.join("swtpm.log"),
            serial: dir.join("serial.log"),
            qemu_log: dir.join("qemu.log"),
        };
        for socket in [&p.socket, &p.nitrotpm, &p.qmp] {
            if socket.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(BootError::SocketPathTooLong {
                    path: socket.clone(),
                });
            }
        }
        Ok(p)
    }
}

/// SHA-256 of a file, streamed: the disk seed.
fn sha256_of(image: &ImageFile) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    io::copy(&mut image.reader(), &mut h)?;
    Ok(h.finalize().into())
}

/// A variable store for another flash layout (OVMF's 2 MiB builds, a QCOW2 file) stops
/// OVMF before it prints anything: name the mismatch instead.
fn check_vars_layout(enrolled: &Path, template: &Path) -> Result<(), BootError> {
    let size = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.len())
            .map_err(|source| BootError::SecureBootVars {
                path: p.to_owned(),
                problem: format!("cannot read it: {source}"),
            })
    };
    let (have, want) = (size(enrolled)?, size(template)?);
    if have != want {
        return Err(BootError::SecureBootVars {
            path: enrolled.to_owned(),
            problem: format!(
                "{have} bytes, but the firmware takes a {want}-byte raw variable store (the layout of {})",
                template.display()
            ),
        });
    }
    Ok(())
}

/// A fresh, writable copy of the firmware's variable store (OVMF writes boot variables).
fn copy_vars(from: &Path, to: &Path) -> Result<(), BootError> {
    let err = |source| BootError::WorkDir {
        path: to.to_owned(),
        what: "copying the OVMF variable store",
        source,
    };
    fs::copy(from, to).map_err(err)?;
    // The packaged file may be read-only; the copy must not be.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(to, fs::Permissions::from_mode(0o600)).map_err(err)
}

/// Manufactures a TPM with the SHA-256 and SHA-384 PCR banks (NitroTPM has SHA-384;
/// SHA-256 is what most tools read). No EK certificate: nothing here needs one.
fn swtpm_setup(tools: &Tools, paths: &WorkPaths) -> Result<(), BootError> {
    fs::create_dir_all(&paths.tpm_state).map_err(|source| BootError::WorkDir {
        path: paths.tpm_state.clone(),
        what: "creating the TPM state directory",
        source,
    })?;
    let out = Command::new(&tools.swtpm_setup)
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(&paths.tpm_state)
        .args(["--pcr-banks", "sha256,sha384", "--overwrite"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BootError::Spawn {
            tool: "swtpm_setup",
            source,
        })?;
    if !out.status.success() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return Err(BootError::SwtpmSetup {
            status: out.status,
            output: tail(&text, TAIL_LINES),
        });
    }
    Ok(())
}

/// The emulated NitroTPM in front of swtpm's control socket, its root certificate
/// written first.
fn start_nitrotpm(
    opts: &BootOptions,
    paths: &WorkPaths,
) -> Result<crate::nitrotpm::relay::Relay, BootError> {
    use crate::nitrotpm::{ca::TestCa, nsm::Nsm, relay};
    let failed =
        |what: &str, e: &dyn std::fmt::Display| BootError::NitroTpm(format!("{what}: {e}"));
    let ca = TestCa::new().map_err(|e| failed("making the test CA", &e))?;
    let mut id = [0u8; 9];
    openssl::rand::rand_bytes(&mut id).map_err(|e| failed("a module id", &e))?;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let module_id = format!("i-{}-tpm0000000000000000", &hex[..17]);
    if let Some(path) = &opts.attestation_root {
        let pem = ca
            .root_pem()
            .map_err(|e| failed("the root certificate", &e))?;
        crate::fsio::write_atomic(path, &pem, crate::fsio::PUBLIC).map_err(|source| {
            BootError::WorkDir {
                path: path.clone(),
                what: "writing the attestation root",
                source: source.into(),
            }
        })?;
    }
    log::warn!(
        "attestation is emulated: documents from module {module_id} are signed by a test CA made for this boot{}; nothing chains to the AWS Nitro root",
        opts.attestation_root
            .as_ref()
            .map(|p| format!(" (root: {})", p.display()))
            .unwrap_or_default()
    );
    relay::start(&paths.nitrotpm, &paths.socket, Nsm::new(ca, module_id))
        .map_err(|e| failed("listening for QEMU", &e))
}

/// A log file for a child's stdout and stderr (two handles on one file).
fn log_file(path: &Path, what: &'static str) -> Result<(File, File), BootError> {
    let err = |source| BootError::WorkDir {
        path: path.to_owned(),
        what,
        source,
    };
    let out = File::create(path).map_err(err)?;
    let dup = out.try_clone().map_err(err)?;
    Ok((out, dup))
}

fn start_swtpm(tools: &Tools, paths: &WorkPaths) -> Result<Child, BootError> {
    let (log, log2) = log_file(&paths.swtpm_log, "creating the swtpm log")?;
    let mut state = OsString::from("dir=");
    state.push(&paths.tpm_state);
    let mut ctrl = OsString::from("type=unixio,path=");
    ctrl.push(&paths.socket);
    // A socket left by an earlier run in a kept work dir would look ready at once.
    let _ = fs::remove_file(&paths.socket);
    Command::new(&tools.swtpm)
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(state)
        .arg("--ctrl")
        .arg(ctrl)
        // Ends when QEMU disconnects, so a QEMU that dies cannot leave swtpm behind.
        .arg("--terminate")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|source| BootError::Spawn {
            tool: "swtpm",
            source,
        })
}

fn wait_for_socket(
    children: &mut Children,
    paths: &WorkPaths,
    signals: &interrupt::Watch,
) -> Result<(), BootError> {
    let start = Instant::now();
    loop {
        if crate::nitrotpm::swtpm::is_listening(&paths.socket).unwrap_or(false) {
            return Ok(());
        }
        if signals.interrupted() {
            children.kill_all();
            return Err(BootError::Interrupted);
        }
        if let Some(swtpm) = children.swtpm.as_mut() {
            match swtpm.try_wait() {
                Ok(Some(status)) => {
                    return Err(BootError::SwtpmExited {
                        status,
                        log: tail(&read_lossy(&paths.swtpm_log), TAIL_LINES),
                    })
                }
                Ok(None) => {}
                Err(source) => {
                    return Err(BootError::Wait {
                        tool: "swtpm",
                        source,
                    })
                }
            }
        }
        if start.elapsed() > SWTPM_SOCKET_WAIT {
            children.kill_all();
            return Err(BootError::SwtpmNotReady {
                socket: paths.socket.clone(),
                log: tail(&read_lossy(&paths.swtpm_log), TAIL_LINES),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A path inside a QEMU `-drive`/`-chardev` option value: commas are doubled.
fn qemu_path(p: &Path) -> Result<String, BootError> {
    p.to_str()
        .map(|s| s.replace(',', ",,"))
        .ok_or_else(|| BootError::NonUtf8Path { path: p.to_owned() })
}

/// QEMU's arguments, as the design notes ("Booting images here") prescribe.
fn qemu_args(
    opts: &BootOptions,
    tools: &Tools,
    paths: &WorkPaths,
    accel: &str,
) -> Result<Vec<String>, BootError> {
    // Secure Boot firmware keeps its variables behind SMM: the machine must have it, and
    // the variable flash must be reachable only from SMM.
    let secure_boot = opts.secure_boot_vars.is_some();
    let machine = match secure_boot {
        true => format!("q35,accel={accel},smm=on"),
        false => format!("q35,accel={accel}"),
    };
    let mut a: Vec<String> = vec![
        "-machine".into(),
        machine,
        "-m".into(),
        opts.memory_mib.to_string(),
        "-smp".into(),
        opts.cpus.to_string(),
        // No default devices: an empty DVD drive would be tried first and add a failed
        // boot option to PCR4.
        "-nodefaults".into(),
        "-no-reboot".into(),
        "-display".into(),
        "none".into(),
    ];
    if secure_boot {
        a.push("-global".into());
        a.push("driver=cfi.pflash01,property=secure,value=on".into());
    }
    a.extend([
        "-drive".into(),
        format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            qemu_path(&tools.ovmf_code)?
        ),
        "-drive".into(),
        format!(
            "if=pflash,format=raw,unit=1,file={}",
            qemu_path(&paths.vars)?
        ),
        "-chardev".into(),
        format!(
            "socket,id=chrtpm,path={}",
            qemu_path(if opts.nitrotpm {
                &paths.nitrotpm
            } else {
                &paths.socket
            })?
        ),
        "-tpmdev".into(),
        "emulator,id=tpm0,chardev=chrtpm".into(),
        "-device".into(),
        "tpm-tis,tpmdev=tpm0".into(),
        "-drive".into(),
        format!(
            "file={},format=raw,if=none,id=disk0",
            qemu_path(&paths.disk)?
        ),
        "-device".into(),
        "virtio-blk-pci,drive=disk0,bootindex=0".into(),
    ]);
    for (i, d) in opts.extra_disks.iter().enumerate() {
        let id = i + 1;
        a.push("-drive".into());
        a.push(format!(
            "file={},format=raw,if=none,id=disk{id},readonly=on",
            qemu_path(d)?
        ));
        a.push("-device".into());
        a.push(format!("virtio-blk-pci,drive=disk{id}"));
    }
    if !opts.forwards.is_empty() {
        let mut netdev = "user,id=n0".to_owned();
        for (host, guest) in &opts.forwards {
            // 127.0.0.1 only: a rehearsal must not expose the server to the network.
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        a.push("-netdev".into());
        a.push(netdev);
        a.push("-device".into());
        a.push("virtio-net-pci,netdev=n0".into());
    }
    // QMP, for the power button only.
    a.push("-qmp".into());
    a.push(format!(
        "unix:{},server=on,wait=off",
        qemu_path(&paths.qmp)?
    ));
    a.push("-chardev".into());
    a.push(format!("file,id=con0,path={}", qemu_path(&paths.serial)?));
    a.push("-serial".into());
    a.push("chardev:con0".into());
    Ok(a)
}

/// Presses the ACPI power button through QEMU's QMP socket: the greeting, then
/// `qmp_capabilities` and `system_powerdown`, each answered by a `return` (events may
/// come in between). QMP is three JSON lines here, so no client crate.
fn qmp_system_powerdown(socket: &Path) -> Result<(), BootError> {
    use std::io::BufRead;
    let qmp_err = |source: io::Error| BootError::WorkDir {
        path: socket.to_owned(),
        what: "pressing the power button over QMP",
        source,
    };
    let stream = std::os::unix::net::UnixStream::connect(socket).map_err(qmp_err)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(qmp_err)?;
    let mut reader = io::BufReader::new(stream.try_clone().map_err(qmp_err)?);
    let mut writer = stream;
    let mut expect = |key: &str| -> io::Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "QMP closed"));
            }
            if line.contains("\"error\"") {
                return Err(io::Error::other(line.trim().to_owned()));
            }
            if line.contains(key) {
                return Ok(());
            }
        }
    };
    expect("\"QMP\"").map_err(qmp_err)?;
    for command in ["qmp_capabilities", "system_powerdown"] {
        writeln!(writer, "{{\"execute\": \"{command}\"}}").map_err(qmp_err)?;
        expect("\"return\"").map_err(qmp_err)?;
    }
    log::info!("pressed the guest's power button");
    Ok(())
}

/// The running children; every one still alive is killed and reaped on drop.
#[derive(Default)]
struct Children {
    swtpm: Option<Child>,
    qemu: Option<Child>,
}

impl Children {
    fn try_wait_qemu(&mut self) -> Result<Option<ExitStatus>, BootError> {
        let Some(q) = self.qemu.as_mut() else {
            return Ok(None);
        };
        match q.try_wait() {
            Ok(Some(status)) => {
                self.qemu = None;
                Ok(Some(status))
            }
            Ok(None) => Ok(None),
            Err(source) => Err(BootError::Wait {
                tool: "qemu-system-x86_64",
                source,
            }),
        }
    }

    /// QEMU first (it holds the TPM connection), then swtpm.
    fn kill_all(&mut self) {
        for child in [self.qemu.take(), self.swtpm.take()].into_iter().flatten() {
            reap(child);
        }
    }
}

fn reap(mut child: Child) {
    // Errors mean it has already exited; wait() then just collects it.
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Children {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Follows the serial log file as QEMU appends to it.
struct ConsoleTail {
    path: PathBuf,
    file: File,
    bytes: Vec<u8>,
    echo: bool,
    filter: EchoFilter,
}

impl ConsoleTail {
    fn open(path: &Path, echo: bool) -> Result<ConsoleTail, BootError> {
        let file = File::open(path).map_err(|source| BootError::Console {
            path: path.to_owned(),
            source,
        })?;
        Ok(ConsoleTail {
            path: path.to_owned(),
            file,
            bytes: Vec::new(),
            echo,
            filter: EchoFilter::default(),
        })
    }

    /// Reads what QEMU wrote since the last call (and echoes it).
    fn pump(&mut self) -> Result<(), BootError> {
        let start = self.bytes.len();
        self.file
            .read_to_end(&mut self.bytes)
            .map_err(|source| BootError::Console {
                path: self.path.clone(),
                source,
            })?;
        if self.echo && self.bytes.len() > start {
            let mut shown = Vec::new();
            self.filter.filter(&self.bytes[start..], &mut shown);
            let mut out = io::stdout().lock();
            // A closed stdout (e.g. `| head`) must not stop the boot: stop echoing.
            if out.write_all(&shown).and_then(|()| out.flush()).is_err() {
                self.echo = false;
            }
        }
        Ok(())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Removes terminal control sequences from the echoed console, except colours.
///
/// OVMF clears the screen and switches terminal modes on its serial console; echoed
/// as-is that would wipe the user's terminal. Only CSI sequences (`ESC [ ... final`)
/// whose final byte is not `m` (colour, kept for the server's log) and `ESC c` (reset)
/// are dropped. The
/// recorded console keeps every byte.
#[derive(Debug, Default)]
struct EchoFilter {
    /// An escape sequence seen so far (starts with ESC), possibly split across reads.
    pending: Vec<u8>,
}

impl EchoFilter {
    /// Longer "sequences" are not terminal control: pass them through.
    const MAX_SEQUENCE: usize = 32;

    fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) {
        const ESC: u8 = 0x1b;
        for &b in input {
            if self.pending.is_empty() {
                if b == ESC {
                    self.pending.push(b);
                } else {
                    out.push(b);
                }
                continue;
            }
            self.pending.push(b);
            if self.pending.len() == 2 {
                match b {
                    b'[' => {}
                    // RIS, a full terminal reset: it clears the screen too.
                    b'c' => self.pending.clear(),
                    // Another escape: leave it alone.
                    _ => out.append(&mut self.pending),
                }
                continue;
            }
            if (0x40..=0x7e).contains(&b) {
                // The final byte: keep colours, drop the rest.
                if b == b'm' {
                    out.append(&mut self.pending);
                } else {
                    self.pending.clear();
                }
            } else if !(0x20..=0x3f).contains(&b) || self.pending.len() > Self::MAX_SEQUENCE {
                out.append(&mut self.pending);
            }
        }
    }
}

/// Ctrl-C (SIGINT), SIGTERM and SIGHUP during a boot: noted, so [`boot`] can stop QEMU
/// and swtpm and remove its work directory. Outside a boot they keep their default
/// action (terminate), so installing the handlers changes nothing else.
mod interrupt {
    use std::io;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};

    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

    struct State {
        /// A signal arrived during a boot.
        interrupted: Arc<AtomicBool>,
        /// No boot is running: a signal terminates the process as by default.
        idle: Arc<AtomicBool>,
        /// Boots running now (tests run several at once).
        active: Mutex<usize>,
    }

    static STATE: OnceLock<Result<State, String>> = OnceLock::new();

    fn install() -> Result<State, String> {
        let interrupted = Arc::new(AtomicBool::new(false));
        let idle = Arc::new(AtomicBool::new(true));
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            // Order matters: note the signal first, then terminate if idle.
            signal_hook::flag::register(sig, Arc::clone(&interrupted))
                .and_then(|_| {
                    signal_hook::flag::register_conditional_default(sig, Arc::clone(&idle))
                })
                .map_err(|e| format!("signal {sig}: {e}"))?;
        }
        Ok(State {
            interrupted,
            idle,
            active: Mutex::new(0),
        })
    }

    /// Registered for as long as it lives.
    pub(super) struct Watch {
        state: &'static State,
    }

    pub(super) fn watch() -> io::Result<Watch> {
        let state = STATE
            .get_or_init(install)
            .as_ref()
            .map_err(|e| io::Error::other(e.clone()))?;
        let mut active = state.active.lock().unwrap_or_else(|p| p.into_inner());
        if *active == 0 {
            state.interrupted.store(false, Ordering::SeqCst);
            state.idle.store(false, Ordering::SeqCst);
        }
        *active += 1;
        Ok(Watch { state })
    }

    impl Watch {
        pub(super) fn interrupted(&self) -> bool {
            self.state.interrupted.load(Ordering::SeqCst)
        }
    }

    impl Drop for Watch {
        fn drop(&mut self) {
            let mut active = self.state.active.lock().unwrap_or_else(|p| p.into_inner());
            *active = active.saturating_sub(1);
            if *active == 0 {
                self.state.idle.store(true, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha384_hex(data: &[u8]) -> String {
        hex::encode(sha2::Sha384::digest(data))
    }

    fn frame(log: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(log);
        let mut s = format!("zoa-init: eventlog-begin {}\n", log.len());
        for chunk in b64.as_bytes().chunks(76) {
            s.push_str("zoa-init: eventlog ");
            s.push_str(std::str::from_utf8(chunk).unwrap());
            s.push_str("\r\n");
        }
        s.push_str(&format!(
            "zoa-init: eventlog-end {}\n",
            hex::encode(Sha256::digest(log))
        ));
        s
    }

    fn sample_console(log: &[u8]) -> String {
        let h256 = "ab".repeat(32);
        let h384 = sha384_hex(b"x");
        let mut s = String::from("BdsDxe: loading Boot0001\r\n[    1.0] kernel says hi\r\n");
        s.push_str("zoa-init: version 0.1.0\r\n");
        s.push_str("zoa-init: module /usr/lib/modules/x/virtio.ko\r\n");
        for n in 0..=12 {
            s.push_str(&format!("zoa-init: pcr sha256 {n} {h256}\r\n"));
        }
        for n in 0..=12 {
            s.push_str(&format!("zoa-init: pcr sha384 {n} {h384}\r\n"));
        }
        s.push_str(&frame(log));
        s.push_str("zoa-init: network eth0 10.0.2.15/24 via 10.0.2.2\r\n");
        s.push_str("zoa-init: model /run/zoa/model/model.gguf from /dev/vdb: 5 bytes, sha256 verified in 0.1s (0 MB/s)\r\n");
        s.push_str("zoa-init: starting /usr/bin/llama-server\r\n");
        s.push_str("llama-server: error: no model\r\n");
        s.push_str("zoa-init: server exited with code 1\r\n");
        s.push_str("zoa-init: restarting /usr/bin/llama-server in 1s (restart 1 of 3)\r\n");
        s.push_str("zoa-init: stopping: power button\r\n");
        s.push_str("zoa-init: power off\r\n");
        s
    }

    #[test]
    fn parses_a_full_console() {
        let log: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let p = parse_console(&sample_console(&log));
        assert_eq!(p.init_version.as_deref(), Some("0.1.0"));
        assert_eq!(p.pcrs.len(), 26);
        assert_eq!(p.pcrs[&("sha256".to_owned(), 4)], "ab".repeat(32));
        assert_eq!(p.pcrs[&("sha384".to_owned(), 12)], sha384_hex(b"x"));
        assert_eq!(p.eventlog, Some(Ok(log)));
        assert_eq!(p.modules, ["/usr/lib/modules/x/virtio.ko"]);
        assert_eq!(p.started.as_deref(), Some("/usr/bin/llama-server"));
        assert_eq!(p.server_exit.as_deref(), Some("code 1"));
        assert_eq!(p.network.as_deref(), Some("eth0 10.0.2.15/24 via 10.0.2.2"));
        assert!(p.model.as_deref().unwrap().contains("from /dev/vdb"));
        assert_eq!(p.restarts, 1);
        assert_eq!(p.stopping.as_deref(), Some("power button"));
        assert!(p.powered_off);
        assert_eq!(p.fatal, None);
    }

    #[test]
    fn damaged_event_log_is_an_error() {
        let log = vec![7u8; 300];
        let good = frame(&log);
        // One flipped base64 character: same size, other digest.
        let i = good.find("zoa-init: eventlog ").unwrap() + "zoa-init: eventlog ".len() + 3;
        let mut bad = good.clone().into_bytes();
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        let p = parse_console(std::str::from_utf8(&bad).unwrap());
        assert!(
            matches!(p.eventlog, Some(Err(EventLogFrameError::Digest { .. }))),
            "{p:?}"
        );

        // A lost line: the size no longer matches.
        let lost: String = good
            .lines()
            .enumerate()
            .filter(|(n, _)| *n != 2)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        let p = parse_console(&lost);
        assert!(
            matches!(p.eventlog, Some(Err(EventLogFrameError::Length { .. }))),
            "{p:?}"
        );

        // The guest stopped mid-log.
        let cut: String = good.lines().take(3).map(|l| format!("{l}\n")).collect();
        assert_eq!(
            parse_console(&cut).eventlog,
            Some(Err(EventLogFrameError::Unterminated))
        );
        assert_eq!(
            parse_console(&format!("zoa-init: eventlog-end {}\n", "0".repeat(64))).eventlog,
            Some(Err(EventLogFrameError::Unopened))
        );
        assert!(matches!(
            parse_console("zoa-init: eventlog-begin many\nzoa-init: eventlog-end 00\n").eventlog,
            Some(Err(EventLogFrameError::BadSize(_)))
        ));
    }

    #[test]
    fn fatal_unavailable_and_noise() {
        let c = "zoa-init: version 0.1.0\n\
                 zoa-init: pcr unavailable: no TPM: /sys/class/tpm/tpm0: No such file\n\
                 zoa-init: eventlog unavailable: no securityfs\n\
                 zoa-init: fatal: module /x.ko: Exec format error\n\
                 zoa-init: fatal: second\n\
                 some zoa-init: pcr sha256 4 00 line not at start\n\
                 zoa-init: pcr sha256 4 XYZ\n\
                 zoa-init: pcr sha999 4 00\n\
                 zoa-init: pcr sha256 99 {}\n\
                 zoa-init: power off\n";
        let c = c.replace("{}", &"0".repeat(64));
        let p = parse_console(&c);
        assert!(p.pcrs.is_empty(), "{:?}", p.pcrs);
        assert_eq!(p.pcr_unavailable.len(), 1);
        assert_eq!(p.eventlog_unavailable.as_deref(), Some("no securityfs"));
        assert_eq!(p.eventlog, None);
        assert_eq!(p.fatal.as_deref(), Some("module /x.ko: Exec format error"));
        assert!(p.powered_off);
        assert!(!parse_console("zoa-init: version 1\n").powered_off);
    }

    #[test]
    fn forwards_parse() {
        assert_eq!(parse_forward("8080:8080"), Ok((8080, 8080)));
        assert_eq!(parse_forward("18080:80"), Ok((18080, 80)));
        for bad in ["8080", "0:80", "80:0", "x:80", "70000:80", ""] {
            assert!(parse_forward(bad).is_err(), "{bad}");
        }
    }

    fn test_tools() -> Tools {
        Tools {
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            swtpm: "/usr/bin/swtpm".into(),
            swtpm_setup: "/usr/bin/swtpm_setup".into(),
            ovmf_code: OVMF_CODE.into(),
            ovmf_vars: OVMF_VARS.into(),
        }
    }

    #[test]
    fn qemu_command_line() {
        let paths = WorkPaths::new(Path::new("/w,x")).unwrap();
        let mut opts = BootOptions::new("/u.efi");
        let a = qemu_args(&opts, &test_tools(), &paths, "tcg").unwrap();
        let s = a.join(" ");
        assert!(
            s.starts_with(
                "-machine q35,accel=tcg -m 1024 -smp 2 -nodefaults -no-reboot -display none"
            ),
            "{s}"
        );
        assert!(
            s.contains("file=/w,,x/disk.raw,format=raw,if=none,id=disk0"),
            "{s}"
        );
        assert!(s.contains("virtio-blk-pci,drive=disk0,bootindex=0"), "{s}");
        assert!(
            s.contains(&format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
            )),
            "{s}"
        );
        assert!(s.contains("-device tpm-tis,tpmdev=tpm0"), "{s}");
        assert!(!s.contains("netdev"), "no network without forwards: {s}");
        assert_eq!(s.matches("bootindex").count(), 1);

        opts.forwards = vec![(18080, 8080), (2222, 22)];
        opts.extra_disks = vec!["/m/model.gguf".into(), "/m/b.img".into()];
        opts.memory_mib = 2048;
        let s = qemu_args(&opts, &test_tools(), &paths, "kvm:tcg")
            .unwrap()
            .join(" ");
        assert!(s.contains("q35,accel=kvm:tcg -m 2048"), "{s}");
        assert!(s.contains("-netdev user,id=n0,hostfwd=tcp:127.0.0.1:18080-:8080,hostfwd=tcp:127.0.0.1:2222-:22 -device virtio-net-pci,netdev=n0"), "{s}");
        let d1 = s
            .find("file=/m/model.gguf,format=raw,if=none,id=disk1,readonly=on")
            .unwrap();
        let d2 = s
            .find("file=/m/b.img,format=raw,if=none,id=disk2,readonly=on")
            .unwrap();
        assert!(s.find("id=disk0").unwrap() < d1 && d1 < d2, "{s}");
        assert_eq!(s.matches("bootindex").count(), 1);
    }

    #[test]
    fn secure_boot_needs_smm_and_a_secure_variable_flash() {
        let paths = WorkPaths::new(Path::new("/w")).unwrap();
        let mut opts = BootOptions::new("/u.efi");
        let plain = qemu_args(&opts, &test_tools(), &paths, "tcg")
            .unwrap()
            .join(" ");
        assert!(
            !plain.contains("smm") && !plain.contains("-global"),
            "{plain}"
        );
        opts.secure_boot_vars = Some("/enrolled.fd".into());
        let tools = Tools {
            ovmf_code: OVMF_CODE_SECBOOT.into(),
            ..test_tools()
        };
        let s = qemu_args(&opts, &tools, &paths, "tcg").unwrap().join(" ");
        assert!(s.starts_with("-machine q35,accel=tcg,smm=on "), "{s}");
        let global = s
            .find("-global driver=cfi.pflash01,property=secure,value=on")
            .unwrap();
        let code = s
            .find(&format!("unit=0,readonly=on,file={OVMF_CODE_SECBOOT}"))
            .unwrap();
        // The private copy is booted, never the caller's file.
        assert!(s.contains("unit=1,file=/w/OVMF_VARS.fd"), "{s}");
        assert!(!s.contains("enrolled.fd"), "{s}");
        assert!(global < code, "{s}");
    }

    #[test]
    fn a_variable_store_of_another_layout_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("OVMF_VARS_4M.fd");
        std::fs::write(&template, vec![0u8; 540_672]).unwrap();
        let small = dir.path().join("OVMF_VARS.fd");
        std::fs::write(&small, vec![0u8; 131_072]).unwrap();
        let e = check_vars_layout(&small, &template)
            .unwrap_err()
            .to_string();
        assert!(e.contains("OVMF_VARS.fd: 131072 bytes"), "{e}");
        assert!(e.contains("540672-byte"), "{e}");
        let e = check_vars_layout(&dir.path().join("none.fd"), &template)
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.fd: cannot read it"), "{e}");
        assert!(check_vars_layout(&template, &template).is_ok());
    }

    #[test]
    fn options_are_checked_first() {
        let dir = tempfile::tempdir().unwrap();
        let uki = dir.path().join("uki.efi");
        std::fs::write(&uki, b"MZ").unwrap();
        let mut o = BootOptions::new(&uki);
        o.forwards = vec![(8080, 80), (8080, 81)];
        assert!(check_options(&o).unwrap_err().to_string().contains("8080"));
        o.forwards.clear();
        o.extra_disks = vec![dir.path().join("missing.img")];
        let e = check_options(&o).unwrap_err().to_string();
        assert!(e.contains("missing.img"), "{e}");
        o.extra_disks.clear();
        o.memory_mib = 16;
        assert!(check_options(&o).is_err());
        let e = check_options(&BootOptions::new(dir.path().join("nope.efi"))).unwrap_err();
        assert!(e.to_string().contains("nope.efi"), "{e}");
        assert!(check_options(&BootOptions::new(&uki)).is_ok());
    }

    #[test]
    fn long_work_dir_is_refused() {
        let long = PathBuf::from(format!("/{}", "d".repeat(120)));
        assert!(matches!(
            WorkPaths::new(&long),
            Err(BootError::SocketPathTooLong { .. })
        ));
    }

    #[test]
    fn echo_drops_screen_control_but_keeps_colours() {
        let input =
            b"\x1b[2J\x1b[01;01H\x1b[=3hBdsDxe: loading\r\n\x1b[34m0.00\x1b[0m ok\x1bc\x1b(B.";
        let mut out = Vec::new();
        let mut f = EchoFilter::default();
        // Byte by byte: sequences split across reads are handled too.
        for b in input.iter() {
            f.filter(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(out, b"BdsDxe: loading\r\n\x1b[34m0.00\x1b[0m ok\x1b(B.");
    }

    fn outcome_with_pcrs(pcrs: &[(&str, u32, &str)]) -> BootOutcome {
        use std::os::unix::process::ExitStatusExt;
        BootOutcome {
            exit_status: ExitStatus::from_raw(0),
            powered_off: true,
            console: String::new(),
            guest_pcrs: pcrs
                .iter()
                .map(|(bank, pcr, hex)| ((bank.to_string(), *pcr), hex.to_string()))
                .collect(),
            eventlog: None,
            fatal: None,
            elapsed: Duration::ZERO,
            attestation_documents: Vec::new(),
        }
    }

    fn prediction(pcrs: &[(u32, &str, &str)]) -> Measurements {
        Measurements {
            stub: crate::measure::types::StubRecord {
                version: "252.39".into(),
                major: 252,
            },
            secure_boot: false,
            pcrs: pcrs
                .iter()
                .map(|(pcr, sha256, sha384)| {
                    let digests = crate::measure::Digests {
                        sha256: sha256.to_string(),
                        sha384: sha384.to_string(),
                    };
                    (Pcr::try_from(*pcr).unwrap(), digests)
                })
                .collect(),
            unpredicted: BTreeMap::new(),
            unmeasured_sections: Vec::new(),
            events: Vec::new(),
        }
    }

    #[test]
    fn booted_pcrs_are_compared_with_the_prediction() {
        let out = outcome_with_pcrs(&[
            ("sha256", 4, "aa"),
            ("sha384", 4, "bb"),
            ("sha256", 7, "cc"),
            ("sha384", 7, "ff"),
            ("sha256", 11, "11"),
        ]);
        let m = prediction(&[(4, "aa", "bb"), (7, "cc", "dd"), (12, "00", "00")]);
        let rows = out.compare_with(Some(&m));
        // Every predicted PCR in both banks, in order, whatever the guest printed.
        let order: Vec<(u32, &str)> = rows.iter().map(|r| (r.pcr.into(), r.bank.name())).collect();
        assert_eq!(
            order,
            [
                (4, "sha256"),
                (4, "sha384"),
                (7, "sha256"),
                (7, "sha384"),
                (11, "sha256"),
                (11, "sha384"),
                (12, "sha256"),
                (12, "sha384"),
            ]
        );
        let differing: Vec<(u32, &str)> = rows
            .iter()
            .filter(|r| r.differs())
            .map(|r| (r.pcr.into(), r.bank.name()))
            .collect();
        assert_eq!(differing, [(7, "sha384")]);
        // Not predicted (PCR11) or not printed (PCR12) is shown, but is no difference.
        assert_eq!(rows[4].booted.as_deref(), Some("11"));
        assert_eq!(rows[4].predicted, None);
        assert_eq!(rows[6].booted, None);
        assert_eq!(rows[6].predicted.as_deref(), Some("00"));
        // Without a prediction nothing differs.
        let unpredicted = out.compare_with(None);
        assert_eq!(unpredicted.len(), 8);
        assert!(unpredicted
            .iter()
            .all(|r| r.predicted.is_none() && !r.differs()));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\r\nb\n\nc\n", 2), "b | c");
        assert_eq!(tail("", 2), "(none)");
    }
}
