//! `zoa completions` and `zoa manpage`: generated from the same clap definition as the
//! parser, so they cannot drift from it.

use super::exit::ExitStatus;
use anyhow::{Context, Result};
use clap::CommandFactory;

use super::args::{Cli, CompletionsArgs, ManpageArgs};

pub fn completions(args: &CompletionsArgs) -> Result<ExitStatus> {
    clap_complete::generate(
        args.shell,
        &mut Cli::command(),
        "zoa",
        &mut std::io::stdout(),
    );
    Ok(ExitStatus::OK)
}

pub fn manpage(args: &ManpageArgs) -> Result<ExitStatus> {
    let cmd = Cli::command();
    match &args.out {
        None => {
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("{}: cannot write man pages", dir.display()))?;
        }
    }
    Ok(ExitStatus::OK)
}
