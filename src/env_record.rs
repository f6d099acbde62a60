//! What the state folder keeps of each environment's settings, so that `rollback` and `logs`
//! work from any folder given the app's name (`--app`), without its checkout: a rollback needs
//! no build, and so no cdflow.toml either.
//!
//! Every push, promote and rollback writes `releases/APP/env-ENV.json`: the platform the
//! environment is on and the settings of its `[env.ENV]` that a rollback or the logs need (cf:
//! `api`, `org`, `space`, `url`; local: `port`, `metrics_port`), with the names (never the
//! values) of the variables masked for the app. Credentials are not settings: cf's come from
//! `CF_USERNAME`/`CF_PASSWORD` (or `CF_CLIENT_ID`/`CF_CLIENT_SECRET`) wherever cdflow runs. The
//! releases deployed there and their artifacts are in the other records (`releases`, and the
//! local platform's `env.json`), which the platforms read as they do from a checkout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::config::{self, EnvSection, PlatformKind, ServiceSection};
use crate::error::user_error;
use crate::exec::Exec;
use crate::platform::Target;
use crate::state::{self, State};

/// An environment's settings as of its last push, promote or rollback. Every field but the
/// platform has a default, so that a record of an older cdflow still reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvRecord {
    /// `local` or `cf`.
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_port: Option<u16>,
    /// The names of the variables whose values cdflow masks for the app.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// What wrote it (`push`, `promote`, `rollback`), and when.
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub at: String,
}

fn releases_dir(state: &State) -> PathBuf {
    state.root().join("releases")
}

fn path(state: &State, app: &str, env: &str) -> PathBuf {
    releases_dir(state)
        .join(app)
        .join(format!("env-{env}.json"))
}

/// Records `env`'s settings as `app`'s `how` (push, promote, rollback) leaves them (nothing in
/// a dry run).
pub fn record(
    exec: &Exec,
    state: &State,
    app: &str,
    env: &Target,
    secrets: &[String],
    how: &str,
) -> Result<()> {
    let config = env.config;
    let record = EnvRecord {
        platform: env.platform().name().to_string(),
        api: config.api.clone(),
        org: config.org.clone(),
        space: config.space.clone(),
        url: config.url.clone(),
        port: config.port,
        metrics_port: config.metrics_port,
        secrets: secrets.to_vec(),
        by: how.to_string(),
        at: crate::ui::timestamp(),
    };
    exec.save(
        &path(state, app, env.name),
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )
    .with_context(|| format!("could not record the settings of `{}`", env.name))
}

/// The app an environment command works on: the checkout's, with its cdflow.toml, or one named
/// with `--app`, with the settings its environment was last deployed with.
pub enum Subject {
    Checkout(Box<App>),
    Recorded(Box<Recorded>),
}

/// One environment of an app, from the state folder's records.
pub struct Recorded {
    app: String,
    env: String,
    secrets: Vec<String>,
    config: EnvSection,
    /// None: a rollback reuses the bindings the local platform recorded.
    services: IndexMap<String, ServiceSection>,
}

impl Subject {
    /// The app `rollback` or `logs` of `env` works on, from `here` (the folder with the nearest
    /// cdflow.toml, or where cdflow runs). Without `--app`, the checkout's, as always. With
    /// `--app` naming the checkout's app, the checkout's too (its cdflow.toml is the newer
    /// word); naming another app, or outside a checkout, the state folder's records.
    pub fn find(here: &Path, state: &State, app: Option<&str>, env: &str) -> Result<Subject> {
        let checkout = here.join(config::FILE_NAME).is_file();
        let Some(name) = app else {
            if !checkout && !here.join(crate::app::DEFAULT_MANIFEST).is_file() {
                return Err(user_error(format!(
                    "no {} in {} or any folder above it: run this in the app's checkout, or \
                     name the app with --app NAME (as `cdflow status` shows it) to use the state \
                     folder's records",
                    config::FILE_NAME,
                    here.display()
                )));
            }
            return Ok(Subject::Checkout(Box::new(App::load(here)?)));
        };
        if checkout {
            let app = App::load(here)?;
            if app.name == name {
                return Ok(Subject::Checkout(Box::new(app)));
            }
        }
        recorded(state, name, env)
    }

    pub fn name(&self) -> &str {
        match self {
            Subject::Checkout(app) => &app.name,
            Subject::Recorded(recorded) => &recorded.app,
        }
    }

    pub fn secret_names(&self) -> Vec<String> {
        match self {
            Subject::Checkout(app) => app.secret_names(),
            Subject::Recorded(recorded) => recorded.secrets.clone(),
        }
    }

    /// The environment called `name` (the one the records were read for).
    pub fn target<'a>(&'a self, name: &'a str) -> Result<Target<'a>> {
        match self {
            Subject::Checkout(app) => app.target(name),
            Subject::Recorded(recorded) => Ok(Target {
                name: &recorded.env,
                config: &recorded.config,
                services: &recorded.services,
            }),
        }
    }
}

/// `app`'s environment `env` as the state folder records it, or an error that says what is
/// missing and what to do.
fn recorded(state: &State, app: &str, env: &str) -> Result<Subject> {
    let root = state.root();
    for (what, name) in [("app", app), ("environment", env)] {
        // Names become parts of paths: `--app ../x` must name no folder outside.
        if !crate::platform::local::safe_name(name) {
            return Err(user_error(format!(
                "`{name}` is not an {what} name: use letters, digits, `-`, `_` and `.`"
            )));
        }
    }
    if !root.is_dir() {
        return Err(user_error(format!(
            "there is no state folder at {}: cdflow reads `{app}`'s records from ${} when set, \
             else from .cdflow in the folder it runs in. Set {} to the state folder `{app}` was \
             deployed with (its checkout's .cdflow by default), or run this in its checkout",
            root.display(),
            state::ENV_VAR,
            state::ENV_VAR
        )));
    }
    let known = known_envs(state);
    let apps: Vec<&str> = known.keys().map(String::as_str).collect();
    let Some(envs) = known.get(app) else {
        return Err(user_error(format!(
            "the state folder {} has no record of an app `{app}`: {}. Name one of them, or set \
             {} to the state folder `{app}` was deployed with",
            root.display(),
            listed("the apps it knows are", &apps, "it knows no app"),
            state::ENV_VAR
        )));
    };
    if !envs.iter().any(|e| e == env) {
        let envs: Vec<&str> = envs.iter().map(String::as_str).collect();
        return Err(user_error(format!(
            "`{app}` has no environment `{env}` in the state folder {}: {}",
            root.display(),
            listed("the ones deployed from it are", &envs, "none was deployed")
        )));
    }
    let file = path(state, app, env);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(user_error(format!(
                "the state folder records no settings for `{env}` of `{app}` (its platform, and \
                 on cf its api, org and space; {} is missing): it was last deployed by an older \
                 cdflow. Run this in `{app}`'s checkout, where cdflow.toml gives them; its next \
                 push, promote or rollback (`cdflow rollback --env {env}` there) records them",
                file.display()
            )))
        }
        Err(err) => return Err(err).with_context(|| format!("could not read {}", file.display())),
    };
    let record: EnvRecord = serde_json::from_str(&text).map_err(|err| {
        user_error(format!(
            "{} is damaged ({err}): remove it, and run this in `{app}`'s checkout; its next push, \
             promote or rollback writes it again",
            file.display()
        ))
    })?;
    let platform = match record.platform.as_str() {
        "local" => PlatformKind::Local,
        "cf" => PlatformKind::Cf,
        other => {
            return Err(user_error(format!(
                "{} names the platform `{other}`, which this cdflow does not know: run this in \
                 `{app}`'s checkout, or with the cdflow that deployed it",
                file.display()
            )))
        }
    };
    if platform == PlatformKind::Cf {
        let missing: Vec<&str> = [
            ("api", &record.api),
            ("org", &record.org),
            ("space", &record.space),
        ]
        .into_iter()
        .filter(|(_, value)| value.is_none())
        .map(|(key, _)| key)
        .collect();
        if !missing.is_empty() {
            return Err(user_error(format!(
                "{} records no {} for `{env}` of `{app}`, which cf needs: run this in `{app}`'s \
                 checkout, where cdflow.toml gives them; its next push, promote or rollback \
                 (`cdflow rollback --env {env}` there) records them",
                file.display(),
                match missing.split_last() {
                    Some((last, [])) => last.to_string(),
                    Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
                    None => String::new(),
                }
            )));
        }
    }
    let config = EnvSection {
        platform,
        port: record.port,
        metrics_port: record.metrics_port,
        api: record.api.clone(),
        org: record.org.clone(),
        space: record.space.clone(),
        url: record.url.clone(),
        secrets: record.secrets.clone(),
        ..EnvSection::default()
    };
    Ok(Subject::Recorded(Box::new(Recorded {
        app: app.to_string(),
        env: env.to_string(),
        secrets: record.secrets,
        config,
        services: IndexMap::new(),
    })))
}

/// Every app the state folder has records of, with the environments deployed from it, sorted:
/// from the releases cdflow recorded, and from the local platform's own folders (which older
/// cdflows kept before they recorded releases).
fn known_envs(state: &State) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut known: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for app in subfolders(&releases_dir(state)) {
        let envs = known.entry(app.clone()).or_default();
        for file in files(&releases_dir(state).join(&app)) {
            let env = ["env-", "deployed-"]
                .iter()
                .find_map(|prefix| file.strip_prefix(prefix)?.strip_suffix(".json"));
            envs.extend(env.map(str::to_string));
        }
    }
    for (app, env) in crate::platform::local::environments(state) {
        known.entry(app).or_default().push(env);
    }
    for envs in known.values_mut() {
        envs.sort();
        envs.dedup();
    }
    known
}

fn listed(lead: &str, names: &[&str], none: &str) -> String {
    if names.is_empty() {
        return none.to_string();
    }
    let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    format!("{lead} {}", names.join(", "))
}

fn subfolders(dir: &Path) -> Vec<String> {
    entries(dir, true)
}

fn files(dir: &Path) -> Vec<String> {
    entries(dir, false)
}

fn entries(dir: &Path, folders: bool) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().is_dir() == folders)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(
        name: &'a str,
        config: &'a EnvSection,
        services: &'a IndexMap<String, ServiceSection>,
    ) -> Target<'a> {
        Target {
            name,
            config,
            services,
        }
    }

    fn message(result: Result<Subject>) -> String {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(err) => format!("{err:#}"),
        }
    }

    #[test]
    fn a_recorded_environment_is_found_by_app_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::locate(dir.path());
        let exec = Exec::for_tests(dir.path());
        let services = IndexMap::new();
        let cf = EnvSection {
            platform: PlatformKind::Cf,
            api: Some("https://api.example".into()),
            org: Some("acme".into()),
            space: Some("prod".into()),
            ..EnvSection::default()
        };
        let secrets = vec!["TOKEN".to_string()];
        let production = target("production", &cf, &services);
        record(&exec, &state, "orders", &production, &secrets, "push").unwrap();

        let elsewhere = dir.path().join("elsewhere");
        let found = Subject::find(&elsewhere, &state, Some("orders"), "production").unwrap();
        assert_eq!(found.name(), "orders");
        assert_eq!(found.secret_names(), secrets);
        let env = found.target("production").unwrap();
        assert_eq!(env.platform(), PlatformKind::Cf);
        assert_eq!(env.config.space.as_deref(), Some("prod"));

        let unknown = message(Subject::find(
            &elsewhere,
            &state,
            Some("billing"),
            "staging",
        ));
        assert!(
            unknown.contains("no record of an app `billing`"),
            "{unknown}"
        );
        assert!(unknown.contains("`orders`"), "{unknown}");
        let no_env = message(Subject::find(&elsewhere, &state, Some("orders"), "qa"));
        assert!(no_env.contains("no environment `qa`"), "{no_env}");
        assert!(no_env.contains("`production`"), "{no_env}");
        let outside = message(Subject::find(&elsewhere, &state, Some("../x"), "qa"));
        assert!(outside.contains("not an app name"), "{outside}");
        let no_app = message(Subject::find(&elsewhere, &state, None, "production"));
        assert!(no_app.contains("--app NAME"), "{no_app}");
    }

    #[test]
    fn an_environment_deployed_by_an_older_cdflow_says_what_records_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::locate(dir.path());
        let releases = dir.path().join(".cdflow/releases/orders");
        std::fs::create_dir_all(&releases).unwrap();
        std::fs::write(releases.join("deployed-staging.json"), "[]").unwrap();
        let err = message(Subject::find(dir.path(), &state, Some("orders"), "staging"));
        assert!(err.contains("records no settings for `staging`"), "{err}");
        assert!(err.contains("cdflow rollback --env staging"), "{err}");

        let none = tempfile::tempdir().unwrap();
        let missing = State::locate(&none.path().join("nowhere"));
        let err = message(Subject::find(
            none.path(),
            &missing,
            Some("orders"),
            "staging",
        ));
        assert!(err.contains("there is no state folder"), "{err}");
        assert!(err.contains(state::ENV_VAR), "{err}");
    }

    #[test]
    fn a_cf_record_without_its_space_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::locate(dir.path());
        let file = path(&state, "orders", "staging");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, r#"{"platform": "cf", "api": "https://api.example"}"#).unwrap();
        let err = message(Subject::find(dir.path(), &state, Some("orders"), "staging"));
        assert_eq!(
            err,
            format!(
                "{} records no org and space for `staging` of `orders`, which cf needs: run this \
                 in `orders`'s checkout, where cdflow.toml gives them; its next push, promote or \
                 rollback (`cdflow rollback --env staging` there) records them",
                file.display()
            )
        );
    }

    #[test]
    fn a_record_of_an_older_shape_still_reads() {
        let record: EnvRecord = serde_json::from_str(r#"{"platform": "local"}"#).unwrap();
        assert_eq!(record.port, None);
        assert!(record.secrets.is_empty());
    }
}
