//! Releases as cdflow deployed them: what each environment was given (the artifact, and the
//! manifest it was deployed from, before the environment's values filled its placeholders),
//! and which release passed e2e where.
//!
//! This is what makes `promote` deploy what staging verified, not the checkout: the verified
//! release's artifact and manifest, with only the target environment's own values (its `vars`,
//! `vars_files` and secrets) filled in. A manifest edited in the checkout after e2e, or a staging
//! rolled back under it, no longer changes what production runs.
//!
//! Under the state folder: `releases/APP/deployed-ENV.json` (the last pushes and promotes to
//! ENV, newest last), `releases/APP/verified-ENV.json` (the release that passed e2e on ENV), and
//! `releases/APP/promoting-ENV.manifest.yml` (the manifest a promote from ENV deploys).

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::user_error;
use crate::exec::Exec;
use crate::platform::Deployment;
use crate::state::State;

/// How many deployments of one environment are remembered, to find the manifest of the one
/// that serves after a rollback.
const KEEP: usize = 20;

/// A deployment with the manifest text it was made from; `None` where cdflow does not know it
/// (a deployment recorded before releases were kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub deployment: Deployment,
    pub manifest: Option<String>,
}

fn folder(state: &State, app: &str) -> PathBuf {
    state.root().join("releases").join(app)
}

fn deployed_path(state: &State, app: &str, env: &str) -> PathBuf {
    folder(state, app).join(format!("deployed-{env}.json"))
}

fn verified_path(state: &State, app: &str, env: &str) -> PathBuf {
    folder(state, app).join(format!("verified-{env}.json"))
}

/// Where `promote` from `env` writes the manifest it deploys, as a file, for platforms that
/// read the file themselves (`cf apply-manifest -f`).
pub fn promoting_manifest_path(state: &State, app: &str, env: &str) -> PathBuf {
    folder(state, app).join(format!("promoting-{env}.manifest.yml"))
}

/// Writes the manifest a promote from `env` deploys (nothing in a dry run), and returns its
/// path.
pub fn write_promoting_manifest(
    exec: &Exec,
    state: &State,
    app: &str,
    env: &str,
    manifest: &str,
) -> Result<PathBuf> {
    let path = promoting_manifest_path(state, app, env);
    exec.save(&path, manifest.as_bytes())?;
    Ok(path)
}

fn read<T: for<'de> Deserialize<'de>>(path: &std::path::Path) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is not a release record", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Notes that `deployment` now serves its environment, made from `manifest`.
pub fn deployed(
    exec: &Exec,
    state: &State,
    app: &str,
    deployment: &Deployment,
    manifest: &str,
) -> Result<()> {
    let path = deployed_path(state, app, &deployment.env);
    let mut releases: Vec<Release> = read(&path)?.unwrap_or_default();
    releases.push(Release {
        deployment: deployment.clone(),
        manifest: Some(manifest.to_string()),
    });
    let extra = releases.len().saturating_sub(KEEP);
    releases.drain(..extra);
    exec.save(&path, serde_json::to_string_pretty(&releases)?.as_bytes())
}

/// The latest release that put `artifact` on `env`, if cdflow deployed it there.
pub fn find(state: &State, app: &str, env: &str, artifact: &str) -> Result<Option<Release>> {
    Ok(history(state, app, env)?
        .into_iter()
        .rev()
        .find(|r| r.deployment.artifact == artifact))
}

/// The releases cdflow deployed to `env`, oldest first (the last [`KEEP`]).
pub fn history(state: &State, app: &str, env: &str) -> Result<Vec<Release>> {
    Ok(read(&deployed_path(state, app, env))?.unwrap_or_default())
}

/// The last release cdflow deployed to `env` (by a push or a promote; a rollback deploys none),
/// and when: what `cdflow watch` may roll back from in the first minutes after it.
pub fn last_deployed(
    state: &State,
    app: &str,
    env: &str,
) -> Result<Option<(Release, std::time::SystemTime)>> {
    let path = deployed_path(state, app, env);
    let Some(last) = history(state, app, env)?.pop() else {
        return Ok(None);
    };
    // The file is written with each deployment and only then.
    let at = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .with_context(|| format!("could not read the time of {}", path.display()))?;
    Ok(Some((last, at)))
}

/// The release a rollback of `env` goes to, from `history` (oldest first) and the artifact
/// that serves now: the newest release of `version`; without one, the release before the one
/// that serves, in the order cdflow deployed them. A rollback adds nothing to that history, so
/// a second rollback goes one release further back, never back to where the first started.
pub fn rollback_target(
    history: &[Release],
    env: &str,
    serving: &str,
    version: Option<&str>,
) -> Result<Release> {
    let mut versions: Vec<&str> = Vec::new();
    for release in history {
        if !versions.contains(&release.deployment.version.as_str()) {
            versions.push(&release.deployment.version);
        }
    }
    let remembered = if versions.is_empty() {
        format!("cdflow remembers no deployment to `{env}`")
    } else {
        format!(
            "the releases cdflow remembers deploying there: {}",
            versions.join(", ")
        )
    };
    match version {
        Some(version) => {
            let Some(found) = history
                .iter()
                .rev()
                .find(|r| r.deployment.version == version)
            else {
                return Err(user_error(format!(
                    "version {version} was never deployed to `{env}` by cdflow; {remembered}"
                )));
            };
            if found.deployment.artifact == serving {
                return Err(user_error(format!(
                    "`{env}` already serves {version} ({serving}): there is nothing to roll back"
                )));
            }
            Ok(found.clone())
        }
        None => {
            let Some(at) = history
                .iter()
                .rposition(|r| r.deployment.artifact == serving)
            else {
                return Err(user_error(format!(
                    "`{env}` runs {serving}, which cdflow did not deploy there or no longer \
                     remembers, so it cannot tell which release came before: name one with \
                     --to VERSION ({remembered})"
                )));
            };
            let current = &history[at].deployment.version;
            history[..at]
                .iter()
                .rev()
                .find(|r| r.deployment.version != *current && r.deployment.artifact != serving)
                .cloned()
                .ok_or_else(|| {
                    user_error(format!(
                        "`{env}` serves {current}, the oldest release cdflow remembers deploying \
                         there: there is nothing older to roll back to (--to VERSION goes to a \
                         later one; {remembered})"
                    ))
                })
        }
    }
}

/// The release that `serving` (what serves its environment now) was deployed as: with its
/// manifest, when cdflow deployed that artifact there.
pub fn of(state: &State, app: &str, serving: &Deployment) -> Result<Release> {
    let manifest = find(state, app, &serving.env, &serving.artifact)?.and_then(|r| r.manifest);
    Ok(Release {
        deployment: serving.clone(),
        manifest,
    })
}

/// Records that the release `serving` passed e2e on its environment.
pub fn verify(exec: &Exec, state: &State, app: &str, serving: &Deployment) -> Result<()> {
    let release = of(state, app, serving)?;
    exec.save(
        &verified_path(state, app, &serving.env),
        serde_json::to_string_pretty(&release)?.as_bytes(),
    )
}

/// The release that passed e2e on `env` last, if any.
pub fn verified(state: &State, app: &str, env: &str) -> Result<Option<Release>> {
    read(&verified_path(state, app, env))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(env: &str, artifact: &str) -> Deployment {
        Deployment {
            env: env.into(),
            platform: "local".into(),
            version: format!("v-{artifact}"),
            url: String::new(),
            artifact: artifact.into(),
        }
    }

    #[test]
    fn the_verified_release_keeps_the_manifest_its_artifact_was_deployed_with() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::locate(dir.path());
        let exec = Exec::for_tests(dir.path());
        deployed(
            &exec,
            &state,
            "web",
            &deployment("staging", "a1"),
            "manifest one",
        )
        .unwrap();
        deployed(
            &exec,
            &state,
            "web",
            &deployment("staging", "a2"),
            "manifest two",
        )
        .unwrap();
        // Staging rolled back to a1: it is a1's manifest that e2e verifies with it.
        verify(&exec, &state, "web", &deployment("staging", "a1")).unwrap();
        let verified = verified(&state, "web", "staging").unwrap().unwrap();
        assert_eq!(verified.deployment.artifact, "a1");
        assert_eq!(verified.manifest.as_deref(), Some("manifest one"));
        assert_eq!(super::verified(&state, "web", "production").unwrap(), None);
        // An artifact cdflow never deployed there has no manifest to give.
        assert_eq!(
            of(&state, "web", &deployment("staging", "zz"))
                .unwrap()
                .manifest,
            None
        );
    }

    fn release(version: &str, artifact: &str) -> Release {
        let mut deployment = deployment("production", artifact);
        deployment.version = version.into();
        Release {
            deployment,
            manifest: None,
        }
    }

    #[test]
    fn a_bare_rollback_goes_to_the_release_before_the_one_serving() {
        let history = [
            release("1.0.0", "d0"),
            release("1.0.1", "d1"),
            release("1.0.1", "d1b"),
            release("1.0.2", "d2"),
        ];
        let target = |serving: &str| {
            rollback_target(&history, "production", serving, None)
                .map(|r| r.deployment.artifact)
                .map_err(|err| err.to_string())
        };
        assert_eq!(target("d2").unwrap(), "d1b");
        // Another deployment of the version that serves is not a release before it.
        assert_eq!(target("d1b").unwrap(), "d0");
        assert_eq!(target("d1").unwrap(), "d0");
        let oldest = target("d0").unwrap_err();
        assert!(
            oldest.contains("`production` serves 1.0.0, the oldest"),
            "{oldest}"
        );
        let unknown = target("zz").unwrap_err();
        assert!(unknown.contains("--to VERSION"), "{unknown}");
        assert!(unknown.contains("1.0.0, 1.0.1, 1.0.2"), "{unknown}");
    }

    #[test]
    fn a_rollback_to_a_version_finds_its_newest_deployment() {
        let history = [
            release("1.0.0", "d0"),
            release("1.0.1", "d1"),
            release("1.0.1", "d1b"),
            release("1.0.2", "d2"),
        ];
        let target = |version: &str| {
            rollback_target(&history, "production", "d2", Some(version))
                .map(|r| r.deployment.artifact)
                .map_err(|err| err.to_string())
        };
        assert_eq!(target("1.0.1").unwrap(), "d1b");
        assert_eq!(target("1.0.0").unwrap(), "d0");
        assert!(target("1.0.2")
            .unwrap_err()
            .contains("already serves 1.0.2"));
        let never = target("9.9.9").unwrap_err();
        assert!(
            never.contains("9.9.9 was never deployed to `production` by cdflow"),
            "{never}"
        );
        let empty = rollback_target(&[], "production", "d2", Some("1.0.0")).unwrap_err();
        assert!(
            empty.to_string().contains("remembers no deployment"),
            "{empty}"
        );
    }

    #[test]
    fn only_the_last_deployments_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::locate(dir.path());
        let exec = Exec::for_tests(dir.path());
        for n in 0..KEEP + 5 {
            deployed(
                &exec,
                &state,
                "web",
                &deployment("staging", &n.to_string()),
                "m",
            )
            .unwrap();
        }
        let kept: Vec<Release> = read(&deployed_path(&state, "web", "staging"))
            .unwrap()
            .unwrap();
        assert_eq!(kept.len(), KEEP);
        assert_eq!(kept[0].deployment.artifact, "5");
    }
}
