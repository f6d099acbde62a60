//! State folders from before environments belonged to an app: `<state>/local/envs/<env>/`.
//!
//! Such an environment is moved to `apps/<app>/envs/<env>/` (the app is in its `env.json`) the
//! first time cdflow looks at the local platform while its server is not running. A running one
//! stays where it is: its server (perhaps an older cdflow's) holds files in that folder. `status`
//! shows it, and `down` stops it through the same control socket and then moves it.
//! An old folder with no deployment in its record holds only logs, and is left alone.

use std::path::Path;

use anyhow::{Context, Result};

use super::control;
use super::layout::{check_app_name, legacy_envs, EnvPaths};
use super::spec::EnvFile;
use crate::ui::Ui;

/// The environments of the old layout that record a deployment, each with its app.
pub fn find(local: &Path) -> Vec<EnvPaths> {
    legacy_envs(local)
        .into_iter()
        .filter_map(|(env, _)| {
            let file = EnvFile::load(&EnvPaths::legacy(local, "", &env)).ok()?;
            let app = file
                .current()
                .or_else(|| file.history.last())?
                .spec
                .app
                .clone();
            // It becomes a folder name; an unsafe one stays where it is.
            check_app_name(&app).ok()?;
            Some(EnvPaths::legacy(local, &app, &env))
        })
        .collect()
}

/// Moves every old-layout environment whose server is not running into its app's folder.
pub fn migrate(local: &Path, ui: &Ui) {
    for old in find(local) {
        if control::server_running(&old) {
            continue;
        }
        if let Err(err) = move_one(local, &old, ui) {
            ui.warn(&format!("{err:#}"));
        }
    }
}

/// Moves one stopped old-layout environment into its app's folder.
pub fn move_one(local: &Path, old: &EnvPaths, ui: &Ui) -> Result<()> {
    let new = EnvPaths::at(local, &old.app, &old.env);
    if new.dir.exists() {
        anyhow::bail!(
            "{} (`{}` of `{}`, from an older cdflow) cannot move to {}, which exists: remove \
             the one you do not need",
            old.dir.display(),
            old.env,
            old.app,
            new.dir.display()
        );
    }
    if let Some(parent) = new.dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("could not create {}", parent.display()))?;
    }
    match std::fs::rename(&old.dir, &new.dir) {
        Ok(()) => {}
        // Another cdflow moved it meanwhile.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => {
            return Err(err).with_context(|| {
                format!(
                    "could not move {} to {}",
                    old.dir.display(),
                    new.dir.display()
                )
            })
        }
    }
    ui.note(&format!(
        "moved the record of `{}` (app `{}`) from {} to {}, where this cdflow keeps it",
        old.env,
        old.app,
        old.dir.display(),
        new.dir.display()
    ));
    Ok(())
}
