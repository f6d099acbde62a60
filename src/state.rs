//! The state folder: what outlives one run of cdflow (run records, the local platform's
//! artifacts, environments and logs, the shared build cache).
//!
//! It is `$CDFLOW_STATE_DIR` when set, else `.cdflow/` in the folder cdflow runs in.

use std::path::{Path, PathBuf};

pub const ENV_VAR: &str = "CDFLOW_STATE_DIR";

#[derive(Debug, Clone)]
pub struct State {
    root: PathBuf,
}

impl State {
    pub fn locate(dir: &Path) -> State {
        let root = match std::env::var_os(ENV_VAR) {
            Some(root) if !root.is_empty() => PathBuf::from(root),
            _ => dir.join(".cdflow"),
        };
        // Absolute, so that it means the same after a chdir into a release workspace.
        let root = std::path::absolute(&root).unwrap_or(root);
        State { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// One record per run of a pipeline.
    pub fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Fresh clones that releases run in.
    pub fn workspaces(&self) -> PathBuf {
        self.root.join("workspaces")
    }

    /// Build caches shared between release workspaces, one per app.
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// The cargo target folder for an app's builds (its test tiers and its staging alike):
    /// `$CARGO_TARGET_DIR` when set, else one shared by every release workspace of the app, so
    /// that a second release builds only what changed.
    pub fn cargo_target(&self, app: &str) -> PathBuf {
        match std::env::var_os("CARGO_TARGET_DIR") {
            Some(target) if !target.is_empty() => PathBuf::from(target),
            _ => self.cache().join(app).join("target"),
        }
    }

    /// The local platform: artifacts, environments, logs.
    pub fn local(&self) -> PathBuf {
        self.root.join("local")
    }

    /// Locks, one per app and environment.
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }
}
