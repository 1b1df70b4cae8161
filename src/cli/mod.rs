//! The binary's side of zoa: argument definitions, one module per command group, output
//! rendering and the exit-status table. Each command takes its parsed arguments, calls
//! the library, prints what the user asked for and returns the exit status; `main.rs`
//! only parses and dispatches.

pub mod args;
pub mod attest;
#[cfg(feature = "aws")]
pub mod audit;
#[cfg(feature = "aws")]
pub mod aws;
pub mod boot;
pub mod build;
pub mod docs;
pub mod exit;
mod hints;
pub mod inputs;
pub mod measure;
pub mod output;
pub mod proxy;
pub mod release;
pub mod secureboot;

/// Logs go to stderr: errors only with `--quiet`, warnings by default, more with `-v`.
pub fn init_logging(quiet: bool, verbose: u8) {
    let level = match (quiet, verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Warn,
        (false, 1) => log::LevelFilter::Info,
        (false, _) => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format_timestamp(None)
        .format_target(false)
        .init();
}
