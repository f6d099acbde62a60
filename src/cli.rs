//! The command line, as clap reads it. Nothing here acts; `main` resolves and runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    a stage or a command failed
  2    bad configuration, bad input or a refused precondition (nothing was changed)
  130  interrupted (SIGINT or SIGTERM)";

/// Continuous delivery for services on a PaaS: test, bump, push to staging, e2e, promote.
#[derive(Debug, Parser)]
#[command(name = "cdflow", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Run as if started in DIR.
    #[arg(short = 'C', global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Print one JSON event per line instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bump the version in every file that carries it, then commit and tag.
    #[command(after_help = BUMP_HELP)]
    Bump(BumpArgs),
}

const BUMP_HELP: &str = "\
Examples:
  cdflow bump patch              0.1.0 -> 0.1.1, commit, tag v0.1.1
  cdflow bump pre                0.1.1 -> 0.1.2-rc.1 -> 0.1.2-rc.2
  cdflow bump release            0.1.2-rc.2 -> 0.1.2
  cdflow bump 1.0.0 --dry-run    show the diff and the git commands, change nothing
  cdflow bump --show             the current version and what each part makes of it";

#[derive(Debug, Args)]
pub struct BumpArgs {
    /// major, minor, patch (or micro), pre, release, or an explicit version such as 1.2.3.
    #[arg(required_unless_present = "show")]
    pub part: Option<String>,

    /// Print the current version and what each part would make of it.
    #[arg(long, conflicts_with = "part")]
    pub show: bool,

    /// Print the diff of every file and every git command, and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Change the files only: no commit (and so no tag).
    #[arg(long)]
    pub no_commit: bool,

    /// Commit, but do not tag.
    #[arg(long)]
    pub no_tag: bool,

    /// Bump even with uncommitted changes in the working tree.
    #[arg(long)]
    pub allow_dirty: bool,

    /// The commit message; `{old}` and `{new}` are the versions.
    #[arg(long, short = 'm')]
    pub message: Option<String>,
}
