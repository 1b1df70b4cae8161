//! The `zoa` command line: parses arguments with clap and hands each command to its
//! module under `cli/`, which calls the library, prints the result and picks the exit
//! status ([`cli::exit`]).

mod cli;

use anyhow::Result;
use std::process::ExitCode;

use cli::args::{Cli, Command};
use cli::exit::ExitStatus;
use zoa::progress::Progress;

fn main() -> ExitCode {
    let cli = cli::args::parse();
    cli::init_logging(cli.quiet, cli.verbose);
    match run(&cli) {
        Ok(status) => status.into(),
        Err(err) => cli::exit::report(&err),
    }
}

fn run(cli: &Cli) -> Result<ExitStatus> {
    let quiet = cli.quiet;
    let progress = Progress::new(!quiet);
    match &cli.command {
        Command::Build(args) => cli::build::build(args, quiet, progress),
        Command::BuildInit(args) => cli::build::build_init(args, quiet),
        Command::Lock(args) => cli::build::lock(args, quiet, progress),
        Command::Check(args) => cli::build::check(args, quiet, progress),
        Command::Measure(args) => cli::measure::measure(args, quiet),
        Command::Eventlog(args) => cli::measure::eventlog(args),
        Command::Completions(args) => cli::docs::completions(args),
        Command::Manpage(args) => cli::docs::manpage(args),
        Command::Boot(args) => cli::boot::boot(args, quiet),
        Command::Attest(args) => cli::attest::attest(args),
        Command::Proxy(args) => cli::proxy::proxy(args),
        Command::Keygen(args) => cli::release::keygen(args, quiet),
        Command::SignUki(args) => cli::secureboot::sign_uki(args, quiet),
        Command::Sign(args) => cli::release::sign(args, quiet),
        Command::Verify(args) => cli::release::verify(args, quiet, progress),
        Command::Diff(args) => cli::release::diff(args),
        Command::Log(cmd) => cli::release::log(cmd, quiet),
        #[cfg(feature = "aws")]
        Command::Deploy(args) => cli::aws::deploy(args, quiet, progress),
        #[cfg(feature = "aws")]
        Command::Rollout(args) => cli::aws::rollout(args, quiet, progress),
        #[cfg(feature = "aws")]
        Command::Destroy(args) => cli::aws::destroy(args, quiet, progress),
        #[cfg(feature = "aws")]
        Command::Policy(args) => cli::aws::policy(args),
        #[cfg(feature = "aws")]
        Command::Seal(args) => cli::aws::seal(args, quiet),
        #[cfg(feature = "aws")]
        Command::Audit(args) => cli::audit::audit(args),
    }
}
