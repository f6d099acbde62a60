//! The state folder: what outlives one run of cdflow (run records, the local platform's
//! artifacts, environments and logs, the shared build cache).
//!
//! It is `$CDFLOW_STATE_DIR` when set, else `.cdflow/` in the folder cdflow runs in: for the
//! commands that work on an app, the folder of the nearest cdflow.toml (see main.rs).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::ui::Ui;

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

    /// Makes the state folder its owner's alone: it holds secrets (the instances' environments,
    /// service credentials, cf's tokens under each CF_HOME, app logs). A new one is created
    /// 0700 (with `create`); an existing one that others could enter is tightened, once, with a
    /// note. Only the folder's own mode matters: nobody else can reach what is inside.
    pub fn secure(&self, ui: &Ui, create: bool) -> Result<()> {
        let mode = match std::fs::metadata(&self.root) {
            Ok(metadata) => metadata.permissions().mode(),
            Err(_) if create => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.root)
                    .with_context(|| format!("could not create {}", self.root.display()))?;
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("could not make {} private", self.root.display()))?;
            ui.note(&format!(
                "made the state folder {} private (0700): it holds secrets",
                self.root.display()
            ));
        }
        Ok(())
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
