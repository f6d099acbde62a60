//! What a run is asked to do, resolved once before it starts and borrowed by every stage.
//!
//! Precedence, highest first:
//! 1. the command line (`--repo`, `--ref`, `--branch`, `--part`, `--force`, `--resume`, `--lock-wait`,
//!    `--dry-run`, `-C`);
//! 2. the environment: `CDFLOW_STATE_DIR` (the state folder), `CDFLOW_KEEP_RUNS` (how many runs
//!    keep their workspace and logs), `CARGO_TARGET_DIR` (where Rust
//!    apps build), `CF_USERNAME`/`CF_PASSWORD` (cf's login), `CDFLOW_GIT_TOKEN` and
//!    `CDFLOW_GIT_USERNAME` (git's credentials for the repository: see `repo_url`), the
//!    variables an environment lists in `secrets`;
//! 3. the app's `cdflow.toml`, read from the checkout (the clone, for a release): a pipeline
//!    stage's `part`, each environment's platform, port, vars and secrets;
//! 4. defaults: the current repository's `origin`, a patch bump, `staging` on port 8081 and
//!    `production` on 8082 on the local platform.
//!
//! What the checkout itself says (the app, its version, each environment's manifest) is not a
//! setting but a fact: see `facts`.

use crate::version::Bump;

#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The repository to clone (a URL or a path); default: the current one's `origin`.
    pub repo: Option<String>,
    /// The branch, tag or full commit id to clone; default: the repository's default branch.
    pub git_ref: Option<String>,
    /// With a commit id as `git_ref`, the branch its version commit goes to; default: the
    /// repository's default branch.
    pub branch: Option<String>,
    /// Overrides the bump stage's part.
    pub part: Option<Bump>,
    /// Promote even a version that has not passed e2e.
    pub force: bool,
    /// Continue the last unfinished run of the pipeline instead of starting one.
    pub resume: bool,
    /// Queue behind a run that holds an environment, instead of refusing.
    pub lock_wait: bool,
}

/// How many runs keep their workspace and command logs when none is set.
pub const DEFAULT_RUNS_KEPT: usize = 20;

impl Settings {
    /// How many of the latest runs keep their workspace and command logs (their records are
    /// always kept): `CDFLOW_KEEP_RUNS`, else [`DEFAULT_RUNS_KEPT`]; at least 1, the run itself.
    pub fn runs_kept(&self) -> usize {
        std::env::var("CDFLOW_KEEP_RUNS")
            .ok()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(DEFAULT_RUNS_KEPT)
            .max(1)
    }
}
