//! Where the local platform keeps its files inside the state folder, in one place.
//!
//! ```text
//! <state>/local/
//!   artifacts/<sha256>/droplet/...     one immutable staged build (app/, and venv/ for Python)
//!   artifacts/<sha256>/artifact.json   what it is: app, runtime, default start command
//!   envs/<env>/env.json                what serves the environment, and what served it before
//!   envs/<env>/app.log, app.log.1      the instances' output and the platform's events
//!   envs/<env>/server.log              the background server's own output
//!   envs/<env>/control.sock            the server's control socket (line-delimited JSON)
//!   envs/<env>/server.lock             flock(2)-held by the server while it lives
//!   envs/<env>/pids.json               the server's pid and its instances' process groups
//!   envs/<env>/instances/<i>-<id>/     one running instance: app/ (its copy), home/, tmp/
//! <state>/locks/local-<env>.lock       held by a cdflow that deploys to the environment
//! <state>/cache/<app>/target           the shared cargo target folder of Rust stagings
//! ```

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::user_error;
use crate::state::State;

/// The local platform's folder under a state root. Must agree with [`State::local`]: the
/// background server is given the state root alone.
pub fn local_dir(state_root: &Path) -> PathBuf {
    state_root.join("local")
}

pub fn artifacts_dir(local: &Path) -> PathBuf {
    local.join("artifacts")
}

/// Environment names become folder names, so they are kept to a safe alphabet.
pub fn check_env_name(name: &str) -> Result<()> {
    let safe = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if safe {
        Ok(())
    } else {
        Err(user_error(format!(
            "the environment name `{name}` cannot be served locally: use letters, digits, `-`, \
             `_` and `.`"
        )))
    }
}

/// The files of one environment.
#[derive(Debug, Clone)]
pub struct EnvPaths {
    pub env: String,
    pub dir: PathBuf,
}

impl EnvPaths {
    pub fn new(state: &State, env: &str) -> EnvPaths {
        EnvPaths::at(&state.local(), env)
    }

    pub fn at(local: &Path, env: &str) -> EnvPaths {
        EnvPaths {
            env: env.to_string(),
            dir: local.join("envs").join(env),
        }
    }

    /// Every environment that has a folder, sorted by name.
    pub fn all(local: &Path) -> Vec<EnvPaths> {
        let mut all: Vec<EnvPaths> = std::fs::read_dir(local.join("envs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .map(|env| EnvPaths::at(local, &env))
            .collect();
        all.sort_by(|a, b| a.env.cmp(&b.env));
        all
    }

    pub fn env_file(&self) -> PathBuf {
        self.dir.join("env.json")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("app.log")
    }

    pub fn old_log(&self) -> PathBuf {
        self.dir.join("app.log.1")
    }

    pub fn server_log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    pub fn server_lock(&self) -> PathBuf {
        self.dir.join("server.lock")
    }

    pub fn pids(&self) -> PathBuf {
        self.dir.join("pids.json")
    }

    /// Where the running instances' folders are (see `sandbox`): each has a writable copy of
    /// the app, a HOME and a TMPDIR of its own, and goes when the instance stops.
    pub fn instances(&self) -> PathBuf {
        self.dir.join("instances")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_safe_folder_names() {
        for good in ["staging", "prod-eu_1", "v1.2"] {
            check_env_name(good).unwrap();
        }
        for bad in ["", "..", ".hidden", "a/b", "a b"] {
            assert!(check_env_name(bad).is_err(), "{bad:?}");
        }
    }
}
