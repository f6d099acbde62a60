//! What the local platform does with each key of a Cloud Foundry app manifest: it honours it,
//! refuses it (saying why and what to do), or says that it applies on cf only. No key is
//! silently ignored. [`KEYS`] is the list, and `docs/local-platform.md` has it as a table (a
//! test keeps the two the same); [`review`] applies it to a manifest.
//!
//! The keys are those of Cloud Foundry's "App manifest attribute reference" (cf CLI v7 and
//! later, with v3 `processes`), its deprecated ones included.

use std::path::Path;

use serde_yaml::{Mapping, Value};

use crate::app_manifest::Resolved;

/// Where a key is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Beside `applications`.
    Top,
    /// In an application.
    App,
    /// In one of an application's `processes`.
    Process,
    /// In one of an application's `routes`.
    Route,
}

#[cfg(test)]
impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Top => "top",
            Level::App => "app",
            Level::Process => "process",
            Level::Route => "route",
        }
    }
}

/// What the local platform does with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It acts on it as Cloud Foundry would (some values may still be refused: see [`review`]).
    Honoured,
    /// Cloud Foundry acts on it; the local platform says so, and why it does not.
    CfOnly(&'static str),
    /// The local platform cannot do what it asks: the push is refused, with why and the fix.
    Refused(&'static str),
}

#[cfg(test)]
impl Answer {
    fn name(self) -> &'static str {
        match self {
            Answer::Honoured => "honoured",
            Answer::CfOnly(_) => "cf only",
            Answer::Refused(_) => "refused",
        }
    }
}

pub struct Key {
    pub level: Level,
    pub name: &'static str,
    pub answer: Answer,
}

const fn key(level: Level, name: &'static str, answer: Answer) -> Key {
    Key {
        level,
        name,
        answer,
    }
}

use Answer::{CfOnly, Honoured, Refused};
use Level::{App, Process, Route, Top};

const NO_DISK_LIMIT: &str = "the local platform sets no disk limit";
const FIXED_CHECKS: &str =
    "the local platform checks each instance every second, each check with a 1 s timeout";
const NO_READINESS: &str = "the local platform has no readiness checks: an instance serves once \
                            its health check passes";
const NO_LOG_LIMIT: &str = "the local platform does not limit the rate of logs";
const V6_ROUTES: &str = "the cf CLI removed it in v7: list the app's routes under `routes`";

/// Every key of the manifest reference, and what the local platform does with it.
pub const KEYS: &[Key] = &[
    key(Top, "version", Honoured),
    key(Top, "applications", Honoured),
    key(
        Top,
        "inherit",
        Refused("the cf CLI removed manifest inheritance in v7: use `((vars))` instead"),
    ),
    key(App, "name", Honoured),
    key(App, "buildpacks", Honoured),
    key(App, "buildpack", Honoured),
    key(App, "command", Honoured),
    key(App, "disk_quota", CfOnly(NO_DISK_LIMIT)),
    key(App, "disk-quota", CfOnly(NO_DISK_LIMIT)),
    key(
        App,
        "docker",
        Refused(
            "the local platform cannot run a Docker image; it stages from source with a \
             buildpack: push this app to a cf environment, or give it a buildpack instead",
        ),
    ),
    key(App, "env", Honoured),
    key(App, "health-check-http-endpoint", Honoured),
    key(App, "health-check-invocation-timeout", CfOnly(FIXED_CHECKS)),
    key(App, "health-check-interval", CfOnly(FIXED_CHECKS)),
    key(App, "health-check-type", Honoured),
    key(App, "readiness-health-check-type", CfOnly(NO_READINESS)),
    key(
        App,
        "readiness-health-check-http-endpoint",
        CfOnly(NO_READINESS),
    ),
    key(
        App,
        "readiness-health-check-invocation-timeout",
        CfOnly(NO_READINESS),
    ),
    key(App, "readiness-health-check-interval", CfOnly(NO_READINESS)),
    key(App, "instances", Honoured),
    key(App, "lifecycle", Honoured),
    key(App, "log-rate-limit-per-second", CfOnly(NO_LOG_LIMIT)),
    key(App, "memory", Honoured),
    key(
        App,
        "metadata",
        CfOnly("labels and annotations are Cloud Controller records"),
    ),
    key(App, "no-route", Honoured),
    key(App, "path", Honoured),
    key(App, "processes", Honoured),
    key(
        App,
        "random-route",
        CfOnly("locally the route is the environment's port on 127.0.0.1, with no hostname"),
    ),
    key(
        App,
        "default-route",
        CfOnly("locally the route is the environment's port on 127.0.0.1"),
    ),
    key(
        App,
        "routes",
        CfOnly("locally each environment has its one route, its port on 127.0.0.1"),
    ),
    key(App, "services", Honoured),
    key(
        App,
        "sidecars",
        CfOnly("the local platform does not run sidecar processes"),
    ),
    key(
        App,
        "stack",
        CfOnly("the local platform runs the droplet on this machine's own system"),
    ),
    key(App, "timeout", Honoured),
    key(App, "host", Refused(V6_ROUTES)),
    key(App, "hosts", Refused(V6_ROUTES)),
    key(App, "domain", Refused(V6_ROUTES)),
    key(App, "domains", Refused(V6_ROUTES)),
    key(App, "no-hostname", Refused(V6_ROUTES)),
    key(Process, "type", Honoured),
    key(Process, "command", Honoured),
    key(Process, "disk_quota", CfOnly(NO_DISK_LIMIT)),
    key(Process, "disk-quota", CfOnly(NO_DISK_LIMIT)),
    key(Process, "health-check-http-endpoint", Honoured),
    key(
        Process,
        "health-check-invocation-timeout",
        CfOnly(FIXED_CHECKS),
    ),
    key(Process, "health-check-interval", CfOnly(FIXED_CHECKS)),
    key(Process, "health-check-type", Honoured),
    key(Process, "readiness-health-check-type", CfOnly(NO_READINESS)),
    key(
        Process,
        "readiness-health-check-http-endpoint",
        CfOnly(NO_READINESS),
    ),
    key(
        Process,
        "readiness-health-check-invocation-timeout",
        CfOnly(NO_READINESS),
    ),
    key(
        Process,
        "readiness-health-check-interval",
        CfOnly(NO_READINESS),
    ),
    key(Process, "instances", Honoured),
    key(Process, "log-rate-limit-per-second", CfOnly(NO_LOG_LIMIT)),
    key(Process, "memory", Honoured),
    key(Process, "timeout", Honoured),
    key(
        Route,
        "route",
        CfOnly("locally each environment has its one route"),
    ),
    key(Route, "protocol", CfOnly("the local route speaks HTTP/1.1")),
    key(
        Route,
        "options",
        CfOnly("the local route spreads requests round-robin"),
    ),
];

/// The settings of the web process that can be written both for the app and in its `web`
/// process.
const WEB_SETTINGS: [&str; 6] = [
    "command",
    "memory",
    "instances",
    "health-check-type",
    "health-check-http-endpoint",
    "timeout",
];

fn answer(level: Level, name: &str) -> Option<Answer> {
    KEYS.iter()
        .find(|k| k.level == level && k.name == name)
        .map(|k| k.answer)
}

/// What the local platform makes of one application of a manifest.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Review {
    /// Why the push is refused, each with its fix.
    pub refused: Vec<String>,
    /// What applies on cf only, and keys that nothing reads: said in the push's output.
    pub notes: Vec<String>,
}

/// The review of the application `app` of `manifest` (else its first, as the push takes).
pub fn review(manifest: &Resolved, app: &str) -> Review {
    let mut review = Review::default();
    let Ok(Value::Mapping(top)) = serde_yaml::from_str::<Value>(&manifest.text) else {
        // `resolve` read it already; nothing more to say.
        return review;
    };
    let shown = manifest.path.display();
    for (name, value) in &top {
        let Some(name) = name.as_str() else { continue };
        match (name, answer(Top, name)) {
            ("version", _) if value.as_u64() != Some(1) && value.as_str() != Some("1") => {
                review.refused.push(format!(
                    "{shown}: `version` is {}, but the only manifest version is 1: write \
                     `version: 1`, or remove it",
                    scalar(value)
                ));
            }
            (_, Some(Refused(why))) => review.refused.push(format!("{shown}: `{name}`: {why}")),
            // Other top-level keys hold YAML anchors (`defaults: &defaults`): cf reads nothing
            // there either.
            _ => {}
        }
    }
    let applications = top
        .get("applications")
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let application = applications
        .iter()
        .find(|a| a.get("name").and_then(Value::as_str) == Some(app))
        .or_else(|| applications.first())
        .and_then(Value::as_mapping);
    if let Some(application) = application {
        review_app(&mut review, manifest, application);
    }
    review
}

fn review_app(review: &mut Review, manifest: &Resolved, application: &Mapping) {
    let app = application
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let of = format!("of `{app}`");
    let no_route = application.get("no-route").and_then(Value::as_bool) == Some(true);
    for (name, value) in application {
        let Some(name) = name.as_str() else { continue };
        match answer(App, name) {
            None => review.notes.push(unknown(name, &of)),
            Some(Refused(why)) => review.refused.push(format!("`{name}` {of}: {why}")),
            Some(CfOnly(why)) => {
                let off = matches!(value, Value::Bool(false) | Value::Null);
                if no_route && ["routes", "random-route", "default-route"].contains(&name) {
                    review.notes.push(format!(
                        "`{name}` {of} does nothing: the app has `no-route`, which overrides it \
                         (on cf too)"
                    ));
                } else if !off {
                    review
                        .notes
                        .push(format!("`{name}` {of} applies on cf only: {why}"));
                }
            }
            Some(Honoured) => match name {
                "lifecycle" => match value.as_str() {
                    Some("buildpack") | None => {}
                    Some(other) => review.refused.push(format!(
                        "`lifecycle: {other}` {of}: the local platform stages with buildpacks \
                         only (`lifecycle: buildpack`): push this app to a cf environment, or \
                         use a buildpack"
                    )),
                },
                "path" => review.refused.extend(path_problem(manifest, value, &of)),
                "processes" => review_processes(review, application, value, app),
                _ => {}
            },
        }
    }
}

fn review_processes(review: &mut Review, application: &Mapping, processes: &Value, app: &str) {
    for process in processes.as_sequence().into_iter().flatten() {
        let Some(process) = process.as_mapping() else {
            continue;
        };
        let kind = process
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let of = format!("of the `{kind}` process of `{app}`");
        if kind != "web" {
            review.notes.push(format!(
                "the `{kind}` process of `{app}` runs on cf only: the local platform runs the \
                 web process alone"
            ));
            continue;
        }
        for (name, value) in process {
            let Some(name) = name.as_str() else { continue };
            match answer(Process, name) {
                None => review.notes.push(unknown(name, &of)),
                Some(Refused(why)) => review.refused.push(format!("`{name}` {of}: {why}")),
                Some(CfOnly(why)) => review
                    .notes
                    .push(format!("`{name}` {of} applies on cf only: {why}")),
                Some(Honoured) => {
                    let both = application
                        .get(name)
                        .filter(|app_level| *app_level != value);
                    if let (true, Some(app_level)) = (WEB_SETTINGS.contains(&name), both) {
                        review.refused.push(format!(
                            "`{name}` of `{app}` is {} for the app and {} for its `web` \
                             process, which are the same process: set it in one place",
                            scalar(app_level),
                            scalar(value)
                        ));
                    }
                }
            }
        }
    }
}

/// Why `path` cannot be staged from, if it cannot: it is relative to the manifest's folder.
fn path_problem(manifest: &Resolved, value: &Value, of: &str) -> Option<String> {
    let Some(written) = value.as_str() else {
        return Some(format!(
            "`path` {of} is {}, not a folder: write the app's folder, relative to the manifest",
            scalar(value)
        ));
    };
    let folder = app_folder(&manifest.path, written);
    if folder.is_dir() {
        None
    } else if folder.exists() {
        Some(format!(
            "`path: {written}` {of} is a file ({}): cf pushes it as an archive, which the local \
             platform does not unpack; point `path` at the app's folder",
            folder.display()
        ))
    } else {
        Some(format!(
            "`path: {written}` {of} names no folder ({} does not exist): write the app's folder, \
             relative to the manifest's",
            folder.display()
        ))
    }
}

/// The folder that `path` names, as the cf CLI reads it: relative to the manifest's folder.
pub fn app_folder(manifest: &Path, path: &str) -> std::path::PathBuf {
    let manifest = std::path::absolute(manifest).unwrap_or_else(|_| manifest.to_path_buf());
    manifest.parent().unwrap_or(Path::new("/")).join(path)
}

fn unknown(name: &str, of: &str) -> String {
    format!(
        "`{name}` {of} is not a key of Cloud Foundry's app manifest: nothing reads it here \
         (a typo?)"
    )
}

/// A value as the manifest writes it, for messages.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => format!("`{s}`"),
        other => format!(
            "`{}`",
            serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim_end()
                .replace('\n', " ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn resolved(dir: &Path, text: &str) -> Resolved {
        let path = dir.join("manifest.yml");
        std::fs::write(&path, text).unwrap();
        crate::app_manifest::resolve(&path, &crate::app_manifest::Vars::default()).unwrap()
    }

    #[test]
    fn every_key_is_honoured_refused_or_said_to_apply_on_cf_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        let manifest = resolved(
            dir.path(),
            "version: 1\ndefaults: &d\n  stack: cflinuxfs4\napplications:\n- name: web\n  \
             path: src\n  stack: cflinuxfs4\n  disk_quota: 1G\n  random-route: true\n  \
             log-rate-limit-per-second: 16K\n  instanses: 2\n  processes:\n  - type: web\n    \
             instances: 2\n    memory: 64M\n    disk_quota: 512M\n  - type: worker\n    \
             command: ./work\n",
        );
        let review = review(&manifest, "web");
        assert!(review.refused.is_empty(), "{:?}", review.refused);
        let notes = review.notes.join("\n");
        for said in [
            "`stack` of `web` applies on cf only",
            "`disk_quota` of `web` applies on cf only",
            "`random-route` of `web` applies on cf only: locally the route is the environment's \
             port",
            "`log-rate-limit-per-second` of `web` applies on cf only",
            "`instanses` of `web` is not a key",
            "`disk_quota` of the `web` process of `web` applies on cf only",
            "the `worker` process of `web` runs on cf only",
        ] {
            assert!(notes.contains(said), "{said}\n{notes}");
        }
        assert_eq!(review.notes.len(), 7, "{notes}");
        let app = &manifest.applications[0];
        assert_eq!(app.instances(), 2, "the web process's instances");
        assert_eq!(app.memory.as_deref(), Some("64M"));
    }

    #[test]
    fn what_the_local_platform_cannot_do_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.jar"), "PK").unwrap();
        let refused = |text: &str| {
            review(&resolved(dir.path(), text), "web")
                .refused
                .join("\n")
        };
        let docker = refused("applications:\n- name: web\n  docker:\n    image: nginx\n");
        assert!(
            docker.contains("`docker` of `web`: the local platform cannot run a Docker image"),
            "{docker}"
        );
        let cnb = refused("applications:\n- name: web\n  lifecycle: cnb\n");
        assert!(cnb.contains("`lifecycle: cnb` of `web`"), "{cnb}");
        let version = refused("version: 2\napplications:\n- name: web\n");
        assert!(
            version.contains("the only manifest version is 1"),
            "{version}"
        );
        let host = refused("applications:\n- name: web\n  host: www\n");
        assert!(
            host.contains("`host` of `web`: the cf CLI removed it"),
            "{host}"
        );
        let archive = refused("applications:\n- name: web\n  path: app.jar\n");
        assert!(
            archive.contains("`path: app.jar` of `web` is a file"),
            "{archive}"
        );
        let missing = refused("applications:\n- name: web\n  path: nowhere\n");
        assert!(missing.contains("names no folder"), "{missing}");
        let both = refused(
            "applications:\n- name: web\n  memory: 128M\n  processes:\n  - type: web\n    \
             memory: 64M\n",
        );
        assert!(
            both.contains("`memory` of `web` is `128M` for the app and `64M` for its `web`"),
            "{both}"
        );
        // The same value in both places is no conflict.
        assert_eq!(
            refused(
                "applications:\n- name: web\n  memory: 64M\n  processes:\n  - type: web\n    \
                 memory: 64M\n"
            ),
            ""
        );
    }

    /// The rows of the table of keys in docs/local-platform.md, as (level, key, answer).
    fn documented() -> BTreeSet<(String, String, String)> {
        let doc = include_str!("../../../docs/local-platform.md");
        let table = doc
            .split("## Manifest keys")
            .nth(1)
            .expect("docs/local-platform.md has a section `## Manifest keys`");
        table
            .lines()
            .skip_while(|line| !line.starts_with('|'))
            .take_while(|line| line.starts_with('|'))
            .skip(2)
            .map(|row| {
                let cells: Vec<&str> = row.split('|').map(str::trim).collect();
                let answer = cells[3]
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .trim_matches('*')
                    .to_string();
                (
                    cells[1].to_string(),
                    cells[2].trim_matches('`').to_string(),
                    answer,
                )
            })
            .collect()
    }

    #[test]
    fn the_table_in_the_docs_is_the_list_of_keys() {
        let known: BTreeSet<(String, String, String)> = KEYS
            .iter()
            .map(|k| {
                (
                    k.level.name().to_string(),
                    k.name.to_string(),
                    k.answer.name().to_string(),
                )
            })
            .collect();
        assert_eq!(known.len(), KEYS.len(), "a key listed twice");
        let documented = documented();
        let missing: Vec<_> = known.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&known).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "docs/local-platform.md, `## Manifest keys`: rows missing (level, key, answer): \
             {missing:?}; rows the code does not know: {extra:?}"
        );
    }
}
