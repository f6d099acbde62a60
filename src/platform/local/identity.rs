//! An app's identity on this machine: its name, which is the folder `apps/<app>/` its
//! environments live in, and the repository it comes from, recorded in `apps/<app>/app.json` by
//! its first deploy. Two repositories whose manifests use one name would otherwise replace each
//! other's deployments; the second is refused, before its version is made.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::layout::app_file;
use crate::error::user_error;
use crate::exec::Exec;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppFile {
    pub app: String,
    /// The origin URL of the app's repository, or its checkout's folder when it has no origin.
    pub origin: String,
}

/// The recorded identity of `app`, if any deploy recorded one (an app moved from the layout
/// before apps had folders has none until its next deploy).
pub fn load(local: &Path, app: &str) -> Result<Option<AppFile>> {
    let path = app_file(local, app);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).with_context(|| {
            format!(
                "{} is damaged: remove it (the next deploy of `{app}` writes it again)",
                path.display()
            )
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("could not read {}", path.display())),
    }
}

/// Refuses `app` from `origin` when the name stands for another repository on this machine.
pub fn check(local: &Path, app: &str, origin: &str) -> Result<()> {
    match load(local, app)? {
        Some(known) if known.origin != origin => Err(user_error(format!(
            "the app `{app}` on this machine comes from {}, and this one from {origin}: two \
             repositories cannot share an app name in one state folder. Rename this app (`name` \
             in the manifest, or [app] name in cdflow.toml), or, if the other one is gone for \
             good, `cdflow down --app {app}` then `cdflow forget --app {app}`",
            known.origin
        ))),
        _ => Ok(()),
    }
}

/// Records that `app` comes from `origin`, if it is not recorded yet.
pub fn record(exec: &Exec, local: &Path, app: &str, origin: &str) -> Result<()> {
    check(local, app, origin)?;
    if load(local, app)?.is_some() {
        return Ok(());
    }
    let file = AppFile {
        app: app.to_string(),
        origin: origin.to_string(),
    };
    exec.save(
        &app_file(local, app),
        serde_json::to_string_pretty(&file)?.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_name_stands_for_one_origin() {
        let dir = tempfile::tempdir().unwrap();
        let exec = Exec::for_tests(dir.path());
        let local = dir.path();
        check(local, "orders", "/repos/a.git").unwrap();
        record(&exec, local, "orders", "/repos/a.git").unwrap();
        record(&exec, local, "orders", "/repos/a.git").unwrap();
        check(local, "billing", "/repos/b.git").unwrap();
        let err = check(local, "orders", "/repos/b.git")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("comes from /repos/a.git, and this one from /repos/b.git"),
            "{err}"
        );
        assert!(err.contains("cdflow forget --app orders"), "{err}");
        assert!(record(&exec, local, "orders", "/repos/b.git").is_err());
    }
}
