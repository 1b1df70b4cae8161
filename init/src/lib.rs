//! zoa-init: the PID 1 of zoa images. See `README.md` for the configuration
//! schema and the console line contract; `main.rs` repeats the line formats.
//!
//! Modules, in boot order: [`mounts`], [`console`], [`config`], [`system`]
//! (host name, kernel modules), [`tpm`] (PCRs, event log), [`server`]
//! (spawn, reap), [`power`]; [`boot`] strings them together.

pub mod boot;
pub mod config;
pub mod console;
pub mod front;
pub mod model;
pub mod mounts;
pub mod net;
pub mod power;
pub mod secrets;
pub mod server;
pub mod supervise;
pub mod system;
pub mod tpm;
pub mod tpm2;
pub mod unseal;

/// This zoa-init's version, printed first as `zoa-init: version <v>`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
