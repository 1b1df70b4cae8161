//! What PID 1 does, step by step (see `main.rs` for the console lines).

use crate::config::{Config, DEFAULT_PATH};
use crate::console::say;
use crate::power::{fatal, install_panic_hook, power_off};
use crate::{console, front, model, mounts, net, secrets, server, supervise, system, tpm};
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::Duration;

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

    // 8. Network (after the PCRs: a DHCP failure still leaves them on the console).
    if let Some(network) = &config.network {
        let timeout = Duration::from_secs(network.timeout_secs.into());
        match net::bring_up(network.interface.as_deref(), timeout) {
            Ok(lease) => say(&lease.to_string()),
            Err(e) => fatal(&format!("network: {e}")),
        }
    }

    // 9. Secrets, released by KMS only to an attested boot of this image.
    let gid = config.server.as_ref().map_or(0, |s| s.gid);
    let mut secret_env = secrets::SecretEnv::new();
    let mut model_key = None;
    if let Some(unseal) = &config.unseal {
        match secrets::unseal_at_boot(unseal, config.model_identity_secret(), gid) {
            Ok(unsealed) => {
                say(&format!("unsealed {}", unsealed.names.join(", ")));
                secret_env = unsealed.env;
                if let Some(kept) = unsealed.kept {
                    match model::ModelKey::parse(kept.expose()) {
                        Ok(key) => model_key = Some(key),
                        Err(e) => fatal(&format!("model: {e}")),
                    }
                }
            }
            Err(e) => fatal(&format!("unseal: {e}")),
        }
    }

    // 10. The model, decrypted and verified before the server can see it.
    if let Some(model) = &config.model {
        let sys = Path::new("/sys/class/block");
        match model::install(model, model_key.as_ref(), gid, sys, Path::new("/dev")) {
            Ok(installed) => say(&installed.to_string()),
            Err(e) => fatal(&format!("model: {e}")),
        }
    }
    drop(model_key);

    // 11. The attested TLS front, before the server: clients meet it first.
    if let Some(tls) = &config.tls {
        start_front(tls, &config.hostname).unwrap_or_else(|e| fatal(&e));
    }

    // 12. The server, kept up until it gives up or the machine is asked to stop.
    if let Some(srv) = &config.server {
        let mut srv = srv.clone();
        srv.env.extend(secret_env);
        let events = stop_and_child_events();
        supervise::run(&srv, &events, |_| server::reap_ended()).unwrap_or_else(|e| fatal(&e));
    }

    // 13.
    power_off()
}

/// Makes the boot's TLS key, asks the NitroTPM for a first document (so the console
/// says whether clients can attest), binds the serving port and serves it.
fn start_front(tls: &crate::config::Tls, hostname: &str) -> Result<(), String> {
    let identity = front::identity::Identity::generate(hostname)?;
    say(&format!(
        "tls key spki-sha384 {}",
        tpm::hex(&identity.binding()[20..])
    ));
    let attester =
        front::attest::Attester::new(front::attest::Attester::device(), &identity.binding());
    match attester.document(None) {
        Ok(document) => say(&format!("tls attestation ready ({} bytes)", document.len())),
        Err(e) => say(&format!("tls attestation unavailable: {e}")),
    }
    let listener = front::bind(tls.port)?;
    let front = front::Front::new(
        &identity,
        attester,
        tls.upstream_port,
        tls.max_attestations,
        tls.max_connections,
    )?;
    front.spawn(listener)?;
    say(&format!(
        "tls serving port {} for 127.0.0.1:{}",
        tls.port, tls.upstream_port
    ));
    Ok(())
}

/// The supervisor's event sources: signals (SIGCHLD, SIGTERM, and SIGINT, which the
/// kernel sends PID 1 for Ctrl-Alt-Del once CAD is off) and every power button.
fn stop_and_child_events() -> Receiver<supervise::Event> {
    let (tx, rx) = std::sync::mpsc::channel();
    if let Err(e) = rustix::system::reboot(rustix::system::RebootCommand::CadOff) {
        say(&format!(
            "warning: Ctrl-Alt-Del stays a hard reset: {}",
            std::io::Error::from(e)
        ));
    }
    supervise::forward_signals(tx.clone())
        .unwrap_or_else(|e| fatal(&format!("signal handlers: {e}")));
    let buttons = supervise::power_buttons(Path::new("/sys/class/input"), Path::new("/dev/input"));
    if buttons.is_empty() {
        say("warning: no power button (load button.ko and evdev.ko to stop gracefully on ACPI shutdown)");
    }
    for button in buttons {
        if let Err(e) = supervise::forward_power_button(&button, tx.clone()) {
            say(&format!("warning: {}: {e}", button.display()));
        }
    }
    rx
}
