//! cdflow: continuous delivery for services on a PaaS.
//!
//! `main` stays small: parse the command line, run the command, turn an error into an exit code.

mod bump;
mod cli;
mod config;
mod error;
mod exec;
mod git;
mod secrets;
mod signals;
mod ui;
mod version;
mod version_files;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::cli::{BumpArgs, Cli, Command};
use crate::exec::{Exec, Mode};
use crate::secrets::Secrets;
use crate::ui::{Style, Ui};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One place prints errors, masked like everything else.
            let secrets = Secrets::from_env([]);
            eprintln!("error: {}", secrets.mask(&format!("{err:#}")));
            error::exit_code(&err)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    signals::install()?;
    // Like `git -C` and `make -C`: change to the folder, so that every path cdflow prints is
    // relative to where the user pointed it.
    if let Some(dir) = &cli.dir {
        std::env::set_current_dir(dir)
            .map_err(|err| error::user_error(format!("-C {}: {err}", dir.display())))?;
    }
    let dir = PathBuf::new();
    let ui = Ui::new(Style::detect(cli.json), Secrets::from_env([]));
    match cli.command {
        Command::Bump(args) => run_bump(dir, ui, args),
    }
}

fn run_bump(dir: PathBuf, ui: Ui, args: BumpArgs) -> Result<()> {
    let mode = if args.dry_run {
        Mode::DryRun
    } else {
        Mode::Real
    };
    let exec = Exec::new(&dir, mode, ui)?;
    let loaded = config::load(&dir)?;
    let facts = bump::read_version(&dir, &loaded)?;
    if args.show {
        bump::show(&exec, &facts);
        return Ok(());
    }
    let options = bump::Options {
        bump: args.part.as_deref().unwrap_or_default().parse()?,
        commit: !args.no_commit,
        tag: !args.no_tag,
        allow_dirty: args.allow_dirty,
        message: args.message,
    };
    let bumped = bump::bump(&exec, &facts, &options)?;
    let tag = bumped
        .tag
        .map(|tag| format!(", tag {tag}"))
        .unwrap_or_default();
    let verb = if exec.is_dry_run() {
        "dry run: would bump"
    } else {
        "bumped"
    };
    exec.ui().note(&format!(
        "{verb} {} -> {} in {}{tag}",
        bumped.old,
        bumped.new,
        bumped.files.join(", ")
    ));
    Ok(())
}
