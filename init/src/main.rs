//! `zoa-init`: the PID 1 of a zoa image.
//!
//! As PID 1 it mounts /proc, /sys, /dev, /run and /tmp, reads
//! `/etc/zoa/init.json`, sets the host name, loads kernel modules, prints the
//! TPM PCRs (and optionally the event log), runs the inference server while
//! reaping every child, and powers off when the server exits. It never runs a
//! shell and never reads input. Arguments and environment passed by the kernel
//! are ignored (the server gets only the configured environment).
//!
//! Not as PID 1 it only offers `--check-config FILE` (parse, validate, print
//! the normalised config on stdout; exit 1 with one line on stderr if
//! invalid), `--version` and `--help`; anything else is refused (exit 2). It
//! never mounts or powers off then.
//!
//! # Console line contract
//!
//! The host parses these lines from the serial console. Each is written whole
//! with one trailing `\n` and flushed; control characters inside a message are
//! replaced by spaces, so a message never spans lines. Kernel messages (and the
//! server's own output, when its `log` is `console`) may appear between them: match on
//! the `zoa-init: ` prefix at the start of a line. Nothing a client sends is ever
//! printed. In boot order:
//!
//! ```text
//! zoa-init: version <semver>                   first line
//! zoa-init: warning: <what>                    something non-fatal went wrong
//! zoa-init: module <path>                      after each finit_module
//! zoa-init: pcr <bank> <n> <hex>               bank sha256 then sha384, n 0..=12,
//!                                              lowercase hex (64 / 96 digits)
//! zoa-init: pcr unavailable: <reason>          no TPM (once), or a bank unreadable
//!                                              (once for that bank); boot goes on
//! zoa-init: eventlog-begin <size>              size of the raw log in bytes (decimal)
//! zoa-init: eventlog <base64>                  standard alphabet with padding, 76
//!                                              chars per line (last may be shorter);
//!                                              the lines concatenated are the base64
//!                                              of the whole log
//! zoa-init: eventlog-end <sha256 hex>          SHA-256 of the raw log, lowercase
//! zoa-init: eventlog unavailable: <reason>     instead of the three above; boot goes on
//! zoa-init: tls key spki-sha384 <hex>          the TLS front's key, made at boot (its
//!                                              SubjectPublicKeyInfo's SHA-384)
//! zoa-init: tls attestation ready (<n> bytes)  a first NitroTPM document was made
//! zoa-init: tls attestation unavailable: <why> none could be (no NitroTPM); serving
//!                                              goes on, the endpoint answers 503
//! zoa-init: tls serving port <p> for 127.0.0.1:<u>   the front is up
//! zoa-init: tls attestation failed: <why>      the first failed document request only
//! zoa-init: tls counts requests <n> attestations <n> attestation-failures <n> refused <n> upstream-errors <n>
//!                                              every 60 s when changed; never content
//! zoa-init: starting <argv0>                   just before spawning the server
//! zoa-init: server exited with code <n>        or `... with signal <n>`
//! zoa-init: fatal: <what>                      unrecoverable (bad config, module,
//!                                              mount, spawn, panic); power off follows
//! zoa-init: power off                          last line: sync, reboot(RB_POWER_OFF)
//! ```

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use zoa_init::config::Config;

const USAGE: &str = "\
usage: zoa-init                       (only as PID 1, inside a zoa image)
       zoa-init --check-config FILE   validate FILE and print it normalised
       zoa-init --version";

fn main() -> ExitCode {
    if rustix::process::getpid() == rustix::process::Pid::INIT {
        zoa_init::boot::run();
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match args.as_slice() {
        [flag, file] if flag == "--check-config" => check_config(Path::new(file)),
        [flag] if flag == "--version" => {
            println!("zoa-init {}", zoa_init::VERSION);
            ExitCode::SUCCESS
        }
        [flag] if flag == "--help" || flag == "-h" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "zoa-init: refusing to run: not PID 1 (pid {}); \
                 use --check-config FILE to validate a configuration",
                rustix::process::getpid().as_raw_nonzero()
            );
            ExitCode::from(2)
        }
    }
}

fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            print!("{}", config.to_json_pretty());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("zoa-init: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
