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
    // Its own id: `cdflow init --dir` is another option, which clap would otherwise merge.
    #[arg(short = 'C', id = "chdir", global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Print one JSON event per line instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Print only errors and warnings from a command that acts (a read command's answer stays).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Also print each command's own output as it runs.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole road: clone, test, bump, push to staging, e2e, promote to production.
    #[command(after_help = RELEASE_HELP)]
    Release(ReleaseArgs),

    /// Run the app's test tiers, in order.
    Test(TestArgs),

    /// Stage the app and make it serve an environment.
    Push(PushArgs),

    /// Run the e2e tests against an environment (APP_URL set to its route).
    E2e(E2eArgs),

    /// Deploy to production the very artifact that passed e2e on staging.
    Promote(PromoteArgs),

    /// List the runs recorded in the state folder.
    History,

    /// Print the manifest exactly as it would be pushed to an environment, secrets masked.
    Manifest(ManifestArgs),

    /// List the pipelines available, with a line on each.
    Pipelines,

    /// Create a new service, ready for `cdflow release`, from a template.
    Init(InitArgs),

    /// Bump the version in every file that carries it, then commit and tag.
    #[command(after_help = BUMP_HELP)]
    Bump(BumpArgs),

    /// Switch an environment back to an earlier version, without a build.
    #[command(after_help = ROLLBACK_HELP)]
    Rollback(RollbackArgs),

    /// Show what serves each environment of each app: version, artifact, route, instances.
    Status,

    /// Show an environment's logs.
    #[command(after_help = LOGS_HELP)]
    Logs(LogsArgs),

    /// Check an environment every interval (its e2e tests), with metrics, alerts, rollback.
    #[command(after_help = WATCH_HELP)]
    Watch(WatchArgs),

    /// Stop everything that the local platform started, and free its ports.
    Down(DownArgs),

    /// Bring back the last deployed version of every local environment (after a reboot).
    Up(UpArgs),

    /// Remove the record and logs of a stopped local environment (or of all an app's).
    Forget(ForgetArgs),

    /// Print a completion script for a shell (`cdflow completions bash > ...`).
    Completions(CompletionsArgs),

    /// Print the manual page, or write one per command into a folder with --dir.
    Man(ManArgs),

    /// The background process that serves one local environment (cdflow starts it itself).
    #[command(hide = true)]
    ServeEnv(ServeEnvArgs),

    /// The process that stops cdflow's children if cdflow dies (cdflow starts it itself).
    #[command(name = "__reap", hide = true)]
    Reap,
}

const RELEASE_HELP: &str = "\
Examples:
  cdflow release                       release the current repository's origin
  cdflow release --repo ../app.git     release another repository
  cdflow release --dry-run             print every command, run nothing
  cdflow release --resume              continue a failed run where it stopped";

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The repository to release: a URL or a path (default: the current one's origin).
    #[arg(long)]
    pub repo: Option<String>,

    /// What to release: a branch, a tag, or a full commit id (the commit CI tested)
    /// (default: the repository's default branch).
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,

    /// With a commit id as --ref: the branch its version commit goes to, which must not have
    /// moved past it (default: the repository's default branch).
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,

    /// The version part to bump: major, minor, patch, pre, release, or a version.
    #[arg(long)]
    pub part: Option<String>,

    /// A pipeline name (see `cdflow pipelines`) or a pipeline file.
    #[arg(long, default_value = "release")]
    pub pipeline: String,

    #[command(flatten)]
    pub run: RunFlags,

    /// Continue the last failed or interrupted run at the stage that did not finish.
    #[arg(long)]
    pub resume: bool,
}

/// Flags every command that runs stages takes.
#[derive(Debug, Args, Clone, Copy)]
pub struct RunFlags {
    /// Print every command it would run, and run nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Wait for another run that holds an environment, instead of refusing.
    #[arg(long)]
    pub lock_wait: bool,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Only this tier (may be repeated).
    #[arg(long)]
    pub tier: Vec<String>,

    #[command(flatten)]
    pub run: RunFlags,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The environment to push to.
    #[arg(long = "env", visible_alias = "to", value_name = "ENV")]
    pub to: String,

    #[command(flatten)]
    pub run: RunFlags,
}

#[derive(Debug, Args)]
pub struct E2eArgs {
    /// The environment to test.
    #[arg(long = "env", visible_alias = "against", value_name = "ENV")]
    pub against: String,

    #[command(flatten)]
    pub run: RunFlags,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The environment whose verified artifact is promoted.
    #[arg(long, default_value = "staging")]
    pub from: String,

    /// The environment to deploy it to.
    #[arg(
        long = "env",
        visible_alias = "to",
        value_name = "ENV",
        default_value = "production"
    )]
    pub to: String,

    /// Promote even an artifact that has not passed e2e.
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub run: RunFlags,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The service's name (a valid app and crate name, such as `orders-api`).
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,

    /// The template: `rust-service` or `python-falcon`.
    #[arg(long, default_value = "rust-service")]
    pub template: String,

    /// Where to create it (default: a folder named after the service).
    #[arg(long)]
    pub dir: Option<PathBuf>,

    /// An option of the template, such as `redis` for python-falcon (see `--list`); repeatable.
    #[arg(long = "with", value_name = "OPTION")]
    pub with: Vec<String>,

    /// List the templates and their options, with a line on each.
    #[arg(long)]
    pub list: bool,
}

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// The environment whose values fill the placeholders.
    #[arg(long)]
    pub env: String,
}

const ROLLBACK_HELP: &str = "\
Examples:
  cdflow rollback --env production                     in the checkout: the release before
  cdflow rollback --env production --version 1.0.1     back to a release by its version
  cdflow rollback --app orders --env production        from any folder, by the state folder's
                                                       records ($CDFLOW_STATE_DIR, else ./.cdflow)";

const LOGS_HELP: &str = "\
Examples:
  cdflow logs --env staging -f                 in the checkout, following new lines
  cdflow logs --app orders --env staging       from any folder, by the state folder's records
                                               ($CDFLOW_STATE_DIR, else ./.cdflow)";

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The environment to roll back.
    #[arg(long)]
    pub env: String,

    /// The app to roll back, as `cdflow status` names it: from any folder, with the settings
    /// the state folder recorded at its last deploy (default: the checkout's app).
    #[arg(long)]
    pub app: Option<String>,

    /// The version to go back to (default: the one before the current one). `--to` is its
    /// older name.
    #[arg(long = "version", alias = "to", value_name = "VERSION")]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The environment whose logs to show.
    #[arg(long)]
    pub env: String,

    /// The app whose logs to show, as `cdflow status` names it: from any folder, with the
    /// settings the state folder recorded at its last deploy (default: the checkout's app).
    #[arg(long)]
    pub app: Option<String>,

    /// Keep printing new lines as they come.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

const WATCH_HELP: &str = "\
Examples:
  cdflow watch --env production                  every 60s until SIGINT or SIGTERM
  cdflow watch --env production --interval 10    every 10 seconds
  cdflow watch --env staging --once --json       one check, its result as JSON
  cdflow watch --env production --dry-run        the commands a check would run

Settings under [watch] in cdflow.toml: command, interval, timeout, on_failure,
rollback_after, rollback_within, metrics_port (see docs/watch.md).";

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The environment to watch.
    #[arg(long, value_name = "ENV")]
    pub env: String,

    /// Seconds between checks (default: `interval` in [watch], else 60).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: Option<u64>,

    /// Stop after N checks; the exit code is the last check's.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// One check, then stop (`--count 1`).
    #[arg(long, conflicts_with = "count")]
    pub once: bool,

    /// The loopback port of the watch's Prometheus metrics, 0 for any free one (default:
    /// `metrics_port` in [watch], else 9469; none with --count or --once).
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,

    /// Print the commands one check would run (and `on_failure`), run nothing, record nothing.
    #[arg(long, conflicts_with_all = ["count", "once", "metrics_port", "interval"])]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Only this app's environments (default: every app's).
    #[arg(long)]
    pub app: Option<String>,

    /// Only this environment (default: all of them).
    #[arg(long)]
    pub env: Option<String>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Only this app's environments (default: every app's).
    #[arg(long)]
    pub app: Option<String>,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The app whose environment to forget (as `cdflow status` names it).
    #[arg(long)]
    pub app: String,

    /// Only this environment (default: every environment of the app, and the app's name).
    #[arg(long)]
    pub env: Option<String>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write cdflow.1 and one cdflow-COMMAND.1 per command into DIR instead of printing.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeEnvArgs {
    /// The state folder.
    #[arg(long)]
    pub state: PathBuf,

    /// The app whose environment it serves.
    #[arg(long)]
    pub app: String,

    /// The environment to serve.
    #[arg(long)]
    pub env: String,
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
