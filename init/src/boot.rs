//! What PID 1 does, step by step (see `main.rs` for the console lines).

use crate::config::{Config, DEFAULT_PATH};
use crate::console::say;
use crate::power::{fatal, install_panic_hook, power_off};
use crate::{console, mounts, server, system, tpm};
use std::path::Path;

/// Runs the boot sequence. Call only as PID 1; never returns.
pub fn run() -> ! {
    install_panic_hook();

    // 1. Pseudo file systems (errors are reported once the console works).
    let mounted = mounts::mount_base();
    // 2. stdin/stdout/stderr on /dev/console if they are not usable.
    let attached = console::attach();
    say(&format!("version {}", crate::VERSION));
    if let Err(e) = attached {
        say(&format!("warning: {e}"));
    }
    if let Err(e) = mounted {
        fatal(&e);
    }

    // 3. Configuration.
    let config = Config::load(Path::new(DEFAULT_PATH))
        .unwrap_or_else(|e| fatal(&format!("{DEFAULT_PATH}: {e}")));

    // 4. Host name.
    system::set_hostname(&config.hostname).unwrap_or_else(|e| fatal(&e));

    // 5. Kernel modules, in order.
    for module in &config.modules {
        system::load_module(module).unwrap_or_else(|e| fatal(&e));
        say(&format!("module {module}"));
    }

    // 6. PCRs.
    if config.print_pcrs {
        for line in tpm::pcr_lines(Path::new(tpm::SYSFS_TPM0)) {
            say(&line);
        }
    }

    // 7. Event log.
    if config.dump_eventlog {
        let lines = match mounts::mount(&mounts::SECURITYFS) {
            Ok(()) => tpm::eventlog_report(Path::new(tpm::EVENTLOG)),
            Err(e) => vec![format!("eventlog unavailable: {e}")],
        };
        for line in lines {
            say(&line);
        }
    }

    // (A later release attests and unseals here, before the server starts.)

    // 8. The server.
    if let Some(srv) = &config.server {
        let program = &srv.argv[0];
        say(&format!("starting {program}"));
        let pid = server::spawn(srv).unwrap_or_else(|e| fatal(&format!("start {program}: {e}")));
        let exit = server::reap_until(pid, server::wait_any)
            .unwrap_or_else(|e| fatal(&format!("waiting for {program}: {e}")));
        say(&format!("server exited with {exit}"));
    }

    // 9.
    power_off()
}
