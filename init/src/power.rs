//! The only way zoa-init ends: sync, then power off.

use crate::console::say;
use rustix::process::{getpid, Pid};
use rustix::system::RebootCommand;

/// Prints `power off`, syncs and calls `reboot(RB_POWER_OFF)`. Never returns.
///
/// Safety net: when this process is not PID 1 (a test, or someone running the
/// binary by hand as root) it exits with status 2 instead of powering the
/// machine off. If the reboot call itself fails (PID 1 must never exit: the
/// kernel would panic) it says so and sleeps forever.
pub fn power_off() -> ! {
    say("power off");
    if getpid() != Pid::INIT {
        std::process::exit(2);
    }
    rustix::fs::sync();
    if let Err(e) = rustix::system::reboot(RebootCommand::PowerOff) {
        say(&format!(
            "fatal: reboot(RB_POWER_OFF): {}",
            std::io::Error::from(e)
        ));
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Prints `fatal: <what>` (one line, whatever `what` holds) and powers off.
pub fn fatal(what: &str) -> ! {
    say(&format!("fatal: {what}"));
    power_off()
}

/// Makes a panic end like any other fatal error: one `fatal: panic: ...`
/// line, then power off. Installed only when running as PID 1.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| fatal(&format!("panic: {info}"))));
}
