//! Where the local platform keeps its files inside the state folder, in one place.
//!
//! Environments belong to an app: two apps on one machine may both have a `staging`.
//!
//! ```text
//! <state>/local/
//!   artifacts/<sha256>/droplet/...     one immutable staged build (app/, and venv/ for Python)
//!   artifacts/<sha256>/artifact.json   what it is: app, runtime, default start command
//!   apps/<app>/app.json                the app's origin repository (its identity, with the name)
//!   apps/<app>/envs/<env>/env.json     what serves the environment, and what served it before
//!   apps/<app>/envs/<env>/app.log, app.log.1  the instances' output and the platform's events
//!   apps/<app>/envs/<env>/server.log   the background server's own output
//!   apps/<app>/envs/<env>/control.sock the server's control socket (line-delimited JSON)
//!   apps/<app>/envs/<env>/server.lock  flock(2)-held by the server while it lives
//!   apps/<app>/envs/<env>/pids.json    the server's pid and its instances' process groups
//!   apps/<app>/envs/<env>/instances/<i>-<id>/  one running instance: app/ (its copy), home/, tmp/
//!   envs/<env>/...                     the layout before apps had their own (see `legacy`)
//! <state>/locks/local/<app>/<env>.lock held by a cdflow that deploys to the environment
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

/// Names that become folder names are kept to a safe alphabet.
pub(crate) fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Environment names become folder names, so they are kept to a safe alphabet.
pub fn check_env_name(name: &str) -> Result<()> {
    if safe_name(name) {
        Ok(())
    } else {
        Err(user_error(format!(
            "the environment name `{name}` cannot be served locally: use letters, digits, `-`, \
             `_` and `.`"
        )))
    }
}

/// App names become folder names too.
pub fn check_app_name(name: &str) -> Result<()> {
    if safe_name(name) {
        Ok(())
    } else {
        Err(user_error(format!(
            "the app name `{name}` cannot be served locally: use letters, digits, `-`, `_` and \
             `.` in the manifest's `name` (or [app] name in cdflow.toml)"
        )))
    }
}

/// The folder of one app's environments and identity.
pub fn app_dir(local: &Path, app: &str) -> PathBuf {
    local.join("apps").join(app)
}

/// The app's identity record: which repository its name stands for on this machine.
pub fn app_file(local: &Path, app: &str) -> PathBuf {
    app_dir(local, app).join("app.json")
}

/// Every app that has a folder, sorted by name.
pub fn apps(local: &Path) -> Vec<String> {
    subfolders(&local.join("apps"))
}

/// The environments of the layout before apps had folders of their own: `envs/<env>/`.
pub fn legacy_envs(local: &Path) -> Vec<(String, PathBuf)> {
    subfolders(&local.join("envs"))
        .into_iter()
        .map(|env| {
            let dir = local.join("envs").join(&env);
            (env, dir)
        })
        .collect()
}

/// The names of the folders in `dir`, sorted.
fn subfolders(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// The files of one app's environment.
#[derive(Debug, Clone)]
pub struct EnvPaths {
    pub app: String,
    pub env: String,
    pub dir: PathBuf,
}

impl EnvPaths {
    pub fn new(state: &State, app: &str, env: &str) -> EnvPaths {
        EnvPaths::at(&state.local(), app, env)
    }

    pub fn at(local: &Path, app: &str, env: &str) -> EnvPaths {
        EnvPaths {
            app: app.to_string(),
            env: env.to_string(),
            dir: app_dir(local, app).join("envs").join(env),
        }
    }

    /// An environment of the old layout, `envs/<env>/`, which served `app`: the files in it
    /// have the same names, so a server there is talked to and stopped as any other.
    pub fn legacy(local: &Path, app: &str, env: &str) -> EnvPaths {
        EnvPaths {
            app: app.to_string(),
            env: env.to_string(),
            dir: local.join("envs").join(env),
        }
    }

    /// Every environment of `app` that has a folder, sorted by name.
    pub fn of_app(local: &Path, app: &str) -> Vec<EnvPaths> {
        subfolders(&app_dir(local, app).join("envs"))
            .into_iter()
            .map(|env| EnvPaths::at(local, app, &env))
            .collect()
    }

    /// Every environment of every app, sorted by app, then environment.
    pub fn all(local: &Path) -> Vec<EnvPaths> {
        apps(local)
            .into_iter()
            .flat_map(|app| EnvPaths::of_app(local, &app))
            .collect()
    }

    /// The lock a cdflow holds while it deploys to the environment.
    pub fn deploy_lock(&self, state: &State) -> PathBuf {
        state
            .locks()
            .join("local")
            .join(&self.app)
            .join(format!("{}.lock", self.env))
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
            assert!(check_app_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn environments_are_kept_per_app() {
        let local = Path::new("/state/local");
        let paths = EnvPaths::at(local, "orders", "staging");
        assert_eq!(
            paths.socket(),
            Path::new("/state/local/apps/orders/envs/staging/control.sock")
        );
        assert_eq!(
            EnvPaths::legacy(local, "orders", "staging").env_file(),
            Path::new("/state/local/envs/staging/env.json")
        );
    }
}
