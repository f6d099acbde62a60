//! `cdflow.toml`: an app's delivery settings, read strictly (unknown keys are errors that name
//! the file, the line and the key).

use std::path::{Path, PathBuf};

use anyhow::Result;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_spanned::Spanned;

use crate::error::user_error;

pub const FILE_NAME: &str = "cdflow.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub app: AppSection,
    #[serde(default)]
    pub version: VersionSection,
    /// Test tiers, run in the order they are written.
    #[serde(default)]
    pub test: IndexMap<String, String>,
    #[serde(default)]
    pub e2e: Option<E2eSection>,
    /// Environments, in the order they are written.
    #[serde(default)]
    pub env: IndexMap<String, EnvSection>,
    /// Service instances that the manifest's `services:` bind to, by name.
    #[serde(default)]
    pub services: IndexMap<String, ServiceSection>,
    /// `cdflow watch`: the periodic check of a running environment.
    #[serde(default)]
    pub watch: WatchSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    pub name: Option<String>,
    pub manifest: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSection {
    /// The Cargo.toml the version is read from (default: `Cargo.toml` when there is one).
    pub source: Option<Spanned<String>>,
    /// The version itself, for apps with no Cargo.toml (a Python service, say).
    pub current: Option<Spanned<String>>,
    /// Other files that carry the version.
    #[serde(default)]
    pub files: Vec<Spanned<VersionFile>>,
    /// The tag name, `{version}` being the new version. Default `v{version}`.
    pub tag: Option<String>,
    /// The commit message, with `{old}` and `{new}`. Default `Bump version: {old} → {new}`.
    pub message: Option<String>,
}

/// A file that carries the version: a path alone (its kind is told from its name and content),
/// or a path with a search pattern, as bump-my-version allows.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum VersionFile {
    Path(String),
    Pattern(PatternFile),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternFile {
    pub path: String,
    /// What to look for; `{version}` stands for the current version. Default `{version}`.
    pub search: Option<String>,
    /// What to put instead; `{version}` stands for the new version. Default: `search`.
    pub replace: Option<String>,
}

impl VersionFile {
    pub fn path(&self) -> &str {
        match self {
            VersionFile::Path(path) => path,
            VersionFile::Pattern(pattern) => &pattern.path,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct E2eSection {
    /// Run with `APP_URL` set to the environment's route.
    pub command: String,
}

/// `cdflow watch` (docs/watch.md). Every key is optional: with none, the e2e command is run
/// every minute.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchSection {
    /// The check, run with `APP_URL` set (default: the `[e2e]` command).
    #[serde(default, deserialize_with = "command_words")]
    pub command: Option<String>,
    /// Seconds between the starts of two checks.
    #[serde(default, deserialize_with = "positive")]
    pub interval: Option<u64>,
    /// Seconds a check (and `on_failure`) may take before it is stopped and counts as failed.
    #[serde(default, deserialize_with = "positive")]
    pub timeout: Option<u64>,
    /// Run once per streak of failed checks, the failure given in `CDFLOW_WATCH_*` variables.
    #[serde(default, deserialize_with = "command_words")]
    pub on_failure: Option<String>,
    /// This many failed checks in a row, soon after a deployment, roll the environment back.
    #[serde(default, deserialize_with = "positive")]
    pub rollback_after: Option<u64>,
    /// How many seconds after a deployment `rollback_after` applies (default 600).
    #[serde(default, deserialize_with = "positive")]
    pub rollback_within: Option<u64>,
    /// The loopback port of the watch's Prometheus metrics; 0 takes any free port.
    #[serde(default, deserialize_with = "metrics_port")]
    pub metrics_port: Option<u16>,
}

/// A command written as a string, split as a POSIX shell would split it (it runs without one):
/// one that cannot be split is refused at its line, not at the first failure it should report.
fn command_words<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let command = String::deserialize(deserializer)?;
    match shlex::split(&command) {
        Some(words) if !words.is_empty() => Ok(Some(command)),
        _ => Err(serde::de::Error::custom(format!(
            "`{command}` is not a command: write the program and its arguments, quoted as in a \
             shell (no shell runs it; for one, write `sh -c '...'`)"
        ))),
    }
}

/// A count or a number of seconds: 1 or more.
fn positive<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let value = i64::deserialize(deserializer)?;
    u64::try_from(value)
        .ok()
        .filter(|&value| value > 0)
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!("{value} is not allowed here: give 1 or more"))
        })
}

/// The metrics port: 0 (any free port, printed when the watch starts) to 65535.
fn metrics_port<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u16>, D::Error> {
    let port = i64::deserialize(deserializer)?;
    u16::try_from(port).map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "port {port} is not a port: give one from 1 to 65535, or 0 for any free port"
        ))
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSection {
    /// Where the environment runs; an unknown name is an error at its line.
    #[serde(default)]
    pub platform: PlatformKind,
    /// local: the port of the environment's stable route.
    #[serde(default, deserialize_with = "route_port")]
    pub port: Option<u16>,
    /// local: the loopback port where the route serves its Prometheus metrics; without it, a
    /// free port chosen when the environment's server starts (`cdflow status` shows it).
    #[serde(default, deserialize_with = "fixed_metrics_port")]
    pub metrics_port: Option<u16>,
    /// cf: the API endpoint, org and space.
    pub api: Option<String>,
    pub org: Option<String>,
    pub space: Option<String>,
    /// The route the environment answers on, when cdflow cannot tell it by itself.
    pub url: Option<String>,
    /// Values for the manifest's `((var))` placeholders.
    #[serde(default)]
    pub vars: IndexMap<String, String>,
    /// Files of values for the manifest's placeholders, as `cf push --vars-file` reads them.
    #[serde(default)]
    pub vars_files: Vec<String>,
    /// Names of environment variables whose values are secret, masked everywhere.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// How a new version replaces the old one: `rolling` (the default) or `canary`.
    #[serde(default)]
    pub strategy: Strategy,
    /// canary: the share of instances (percent, rising, the last at most 100) the new
    /// version has at each pause; each pause is verified before the next step.
    pub canary_steps: Option<Spanned<Vec<i64>>>,
    /// canary: the seconds of probe traffic measured at each pause.
    pub canary_window: Option<Spanned<i64>>,
    /// canary: how many percentage points the error rate may rise above the stable version's.
    pub canary_max_error_rate: Option<Spanned<f64>>,
    /// canary: how many milliseconds the p99 latency may rise above the stable version's.
    pub canary_max_p99_ms: Option<Spanned<i64>>,
    /// canary: how many of the canary's requests (probes on cf) a window needs to be judged.
    pub canary_min_requests: Option<Spanned<i64>>,
}

/// How a push or a promote replaces what serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Instance by instance, each new one healthy before an old one stops.
    #[default]
    Rolling,
    /// A share of the instances first, verified (docs/canary.md) before the rest follow.
    Canary,
}

impl EnvSection {
    /// The canary plan, with its defaults filled in, when the strategy is `canary`; the values
    /// were checked by [`parse`].
    pub fn canary(&self) -> Option<crate::canary::Plan> {
        if self.strategy != Strategy::Canary {
            return None;
        }
        let defaults = crate::canary::Plan::default();
        Some(crate::canary::Plan {
            steps: match &self.canary_steps {
                Some(steps) => steps.get_ref().iter().map(|&s| s as u32).collect(),
                None => defaults.steps,
            },
            window_secs: self
                .canary_window
                .as_ref()
                .map_or(defaults.window_secs, |w| *w.get_ref() as u64),
            max_error_rate: self
                .canary_max_error_rate
                .as_ref()
                .map_or(defaults.max_error_rate, |r| *r.get_ref()),
            max_p99_ms: self
                .canary_max_p99_ms
                .as_ref()
                .map_or(defaults.max_p99_ms, |p| *p.get_ref() as u64),
            min_requests: self
                .canary_min_requests
                .as_ref()
                .map_or(defaults.min_requests, |n| *n.get_ref() as u64),
        })
    }
}

/// A route's port: 1 to 65535. Port 0 would ask the kernel for any free port, a different one
/// on every deploy, so the route would not be stable (and cdflow would report `:0`). Refused
/// here, the error carries the line of the value. Ports below 1024 are accepted: whether this
/// machine lets cdflow bind them (root, CAP_NET_BIND_SERVICE, a lowered
/// `net.ipv4.ip_unprivileged_port_start`) is checked before a run, by the local platform.
fn route_port<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    let port = i64::deserialize(deserializer)?;
    u16::try_from(port)
        .ok()
        .filter(|&port| port != 0)
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "port {port} is not a port a route can stay on: give one from 1 to 65535, such \
                 as 8081 (below 1024 only where cdflow may bind such ports)"
            ))
        })
}

/// The route's metrics port: 1 to 65535. 0 is refused: leaving the key out already means a free
/// port, and a scraper needs one that stays.
fn fixed_metrics_port<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u16>, D::Error> {
    let port = i64::deserialize(deserializer)?;
    u16::try_from(port)
        .ok()
        .filter(|&port| port != 0)
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "metrics_port {port} is not a port: give one from 1 to 65535, or leave \
                 `metrics_port` out for a free port chosen when the environment's server starts"
            ))
        })
}

/// A service instance an app binds to (`[services.NAME]`). The local platform runs one of each
/// per app and environment; on cf, the foundation provides them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// What it is; its span gives later errors about the service their line.
    pub kind: Spanned<ServiceKind>,
    /// user-provided only: the credentials an app finds in `VCAP_SERVICES`.
    pub credentials: Option<Spanned<IndexMap<String, Credential>>>,
}

impl ServiceSection {
    /// The environment variables its credentials are read from: secrets, masked everywhere.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.credentials
            .iter()
            .flat_map(|credentials| credentials.get_ref().values())
            .filter_map(|value| match value {
                Credential::Env(name) => Some(name.as_str()),
                Credential::Value(_) => None,
            })
    }
}

/// The kinds of service the local platform provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    /// A `redis-server` of its own.
    Redis,
    /// A PostgreSQL server of its own, with a database and a user for the app.
    Postgres,
    /// Credentials written in cdflow.toml, as `cf create-user-provided-service` gives them.
    UserProvided,
}

impl ServiceKind {
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Redis => "redis",
            ServiceKind::Postgres => "postgres",
            ServiceKind::UserProvided => "user-provided",
        }
    }
}

/// One value of a user-provided service's credentials: written as it is, or `{ env = "NAME" }`,
/// read from the environment variable NAME when cdflow deploys and masked as a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Value(String),
    Env(String),
}

impl<'de> Deserialize<'de> for Credential {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Credential;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a string, or { env = \"NAME\" } to read a secret from the environment \
                     variable NAME",
                )
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Credential, E> {
                Ok(Credential::Value(value.to_string()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Credential, A::Error> {
                use serde::de::Error;
                let mut env = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "env" {
                        return Err(A::Error::unknown_field(&key, &["env"]));
                    }
                    env = Some(map.next_value::<String>()?);
                }
                env.map(Credential::Env)
                    .ok_or_else(|| A::Error::missing_field("env"))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The platforms cdflow drives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformKind {
    /// The embedded local platform.
    #[default]
    Local,
    /// Cloud Foundry, through the `cf` CLI.
    Cf,
}

impl PlatformKind {
    pub fn name(self) -> &'static str {
        match self {
            PlatformKind::Local => "local",
            PlatformKind::Cf => "cf",
        }
    }
}

impl std::fmt::Display for PlatformKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The configuration and where it came from.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// The file, when there is one (an app without one gets the defaults).
    pub path: Option<PathBuf>,
    /// Its text, to point at lines in later errors.
    pub text: String,
}

impl Loaded {
    /// `FILE:LINE` for a byte offset of the configuration file.
    pub fn location(&self, offset: usize) -> String {
        let line = self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1;
        match &self.path {
            Some(path) => format!("{}:{line}", path.display()),
            None => FILE_NAME.to_string(),
        }
    }
}

/// Reads `DIR/cdflow.toml`, or the defaults when there is none.
pub fn load(dir: &Path) -> Result<Loaded> {
    let path = dir.join(FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Loaded {
                config: Config::default(),
                path: None,
                text: String::new(),
            })
        }
        Err(err) => {
            return Err(user_error(format!(
                "could not read {}: {err}",
                path.display()
            )))
        }
    };
    let config = parse(&text).map_err(|err| {
        user_error(format!(
            "{}: {}\nfix the key or value above; the keys cdflow knows are documented in the README",
            path.display(),
            err.trim_end()
        ))
    })?;
    Ok(Loaded {
        config,
        path: Some(path),
        text,
    })
}

/// Parses the text of a `cdflow.toml`; the error names the line, the column and the key.
pub fn parse(text: &str) -> std::result::Result<Config, String> {
    let config: Config = toml_edit::de::from_str(text).map_err(|err| err.to_string())?;
    check_services(text, &config)?;
    check_canaries(text, &config)?;
    Ok(config)
}

/// What the types cannot say about the canary settings of `[env.NAME]`: steps that rise from
/// 1 to at most 100, a window and thresholds that mean something, and no canary setting on an
/// environment whose strategy is not `canary` (it would be ignored without a word).
fn check_canaries(text: &str, config: &Config) -> std::result::Result<(), String> {
    let line = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    for (name, env) in &config.env {
        let set = [
            ("canary_steps", env.canary_steps.as_ref().map(Spanned::span)),
            (
                "canary_window",
                env.canary_window.as_ref().map(Spanned::span),
            ),
            (
                "canary_max_error_rate",
                env.canary_max_error_rate.as_ref().map(Spanned::span),
            ),
            (
                "canary_max_p99_ms",
                env.canary_max_p99_ms.as_ref().map(Spanned::span),
            ),
            (
                "canary_min_requests",
                env.canary_min_requests.as_ref().map(Spanned::span),
            ),
        ];
        if env.strategy != Strategy::Canary {
            if let Some((key, Some(span))) = set.iter().find(|(_, span)| span.is_some()) {
                return Err(format!(
                    "line {}: [env.{name}] sets `{key}` but its strategy is not canary: add \
                     `strategy = \"canary\"`, or remove `{key}`",
                    line(span.start)
                ));
            }
            continue;
        }
        if let Some(steps) = &env.canary_steps {
            let values = steps.get_ref();
            let rising = values.windows(2).all(|pair| pair[0] < pair[1]);
            let in_range = values.iter().all(|&step| (1..=100).contains(&step));
            if values.is_empty() || !rising || !in_range {
                return Err(format!(
                    "line {}: canary_steps = {values:?} in [env.{name}] is not a list of rising \
                     percentages from 1 to 100: write them as canary_steps = [10, 50, 100]",
                    line(steps.span().start)
                ));
            }
        }
        if let Some(window) = &env.canary_window {
            if *window.get_ref() < 1 {
                return Err(format!(
                    "line {}: canary_window = {} in [env.{name}] is not a number of seconds: \
                     give 1 or more (such as 60)",
                    line(window.span().start),
                    window.get_ref()
                ));
            }
        }
        if let Some(rate) = &env.canary_max_error_rate {
            if !(0.0..=100.0).contains(rate.get_ref()) {
                return Err(format!(
                    "line {}: canary_max_error_rate = {} in [env.{name}] is not a percentage: \
                     give the percentage points the error rate may rise, from 0 to 100 (such \
                     as 1.0)",
                    line(rate.span().start),
                    rate.get_ref()
                ));
            }
        }
        if let Some(p99) = &env.canary_max_p99_ms {
            if *p99.get_ref() < 0 {
                return Err(format!(
                    "line {}: canary_max_p99_ms = {} in [env.{name}] is not a duration: give \
                     the milliseconds the p99 latency may rise, 0 or more (such as 250)",
                    line(p99.span().start),
                    p99.get_ref()
                ));
            }
        }
        if let Some(min) = &env.canary_min_requests {
            if *min.get_ref() < 1 {
                return Err(format!(
                    "line {}: canary_min_requests = {} in [env.{name}] would judge a canary on \
                     no requests: give 1 or more (such as 50)",
                    line(min.span().start),
                    min.get_ref()
                ));
            }
        }
    }
    Ok(())
}

/// What the types cannot say about `[services.NAME]`: names that can be folder names, and
/// credentials only where cdflow does not make them.
fn check_services(text: &str, config: &Config) -> std::result::Result<(), String> {
    let line = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    for (name, service) in &config.services {
        let safe = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !safe {
            return Err(format!(
                "line {}: the service name `{name}` cannot be used: use letters, digits, `-`, \
                 `_` and `.` in [services.NAME]",
                line(service.kind.span().start)
            ));
        }
        let kind = *service.kind.get_ref();
        if let (Some(credentials), ServiceKind::Redis | ServiceKind::Postgres) =
            (&service.credentials, kind)
        {
            return Err(format!(
                "line {}: [services.{name}] is a {} service, whose credentials cdflow makes \
                 itself: remove `credentials`, or make it kind = \"user-provided\"",
                line(credentials.span().start),
                kind.name()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_product_guide_example() {
        let config = parse(
            r#"
[app]
name = "example-app"
manifest = "manifest.yml"

[version]
source = "Cargo.toml"
files = ["manifest.yml", { path = "README.md", search = "badge-{version}" }]
tag = "v{version}"

[test]
unit = "cargo test --lib --bins"
service = "cargo test --test service"

[e2e]
command = "cargo test --test e2e"

[env.staging]
platform = "local"
port = 8081

[env.production]
platform = "cf"
api = "https://api.cf.example.com"
org = "acme"
space = "production"
"#,
        )
        .unwrap();
        assert_eq!(config.app.name.as_deref(), Some("example-app"));
        assert_eq!(config.test.keys().collect::<Vec<_>>(), ["unit", "service"]);
        assert_eq!(
            config.env.keys().collect::<Vec<_>>(),
            ["staging", "production"]
        );
        assert_eq!(config.version.files.len(), 2);
        assert_eq!(config.version.files[1].get_ref().path(), "README.md");
    }

    #[test]
    fn a_port_outside_1_to_65535_is_refused_at_its_line() {
        for port in ["0", "70000", "-1"] {
            let err = parse(&format!(
                "[env.staging]\nplatform = \"local\"\nport = {port}\n"
            ))
            .unwrap_err();
            assert!(err.contains("line 3"), "{err}");
            assert!(err.contains(&format!("port {port} ")), "{err}");
            assert!(err.contains("from 1 to 65535"), "{err}");
        }
        let config = parse("[env.staging]\nport = 65535\n").unwrap();
        assert_eq!(config.env["staging"].port, Some(65535));
        for port in ["0", "70000"] {
            let err = parse(&format!("[env.staging]\nmetrics_port = {port}\n")).unwrap_err();
            assert!(err.contains("line 2"), "{err}");
            assert!(err.contains(&format!("metrics_port {port} ")), "{err}");
            assert!(err.contains("leave `metrics_port` out"), "{err}");
        }
        let config = parse("[env.staging]\nmetrics_port = 9464\n").unwrap();
        assert_eq!(config.env["staging"].metrics_port, Some(9464));
    }

    #[test]
    fn an_unknown_platform_is_refused_at_its_line() {
        let err = parse("[env.staging]\nport = 9000\nplatform = \"heroku\"\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(
            err.contains("heroku") && err.contains("`local`") && err.contains("`cf`"),
            "{err}"
        );
        let config = parse("[env.production]\nplatform = \"cf\"\n").unwrap();
        assert_eq!(config.env["production"].platform, PlatformKind::Cf);
        assert_eq!(
            parse("[env.staging]\n").unwrap().env["staging"].platform,
            PlatformKind::Local
        );
    }

    #[test]
    fn services_are_parsed_strictly_at_their_line() {
        let config = parse(
            "[services.cache]\nkind = \"redis\"\n\n[services.db]\nkind = \"postgres\"\n\n\
             [services.api]\nkind = \"user-provided\"\n\
             credentials = { url = \"https://api.example.com\", token = { env = \"API_TOKEN\" } }\n",
        )
        .unwrap();
        assert_eq!(
            config.services.keys().collect::<Vec<_>>(),
            ["cache", "db", "api"]
        );
        assert_eq!(*config.services["db"].kind.get_ref(), ServiceKind::Postgres);
        let api = &config.services["api"];
        let credentials = api.credentials.as_ref().unwrap().get_ref();
        assert_eq!(
            credentials["url"],
            Credential::Value("https://api.example.com".into())
        );
        assert_eq!(credentials["token"], Credential::Env("API_TOKEN".into()));
        assert_eq!(api.secret_names().collect::<Vec<_>>(), ["API_TOKEN"]);

        for (text, line, words) in [
            (
                "[services.x]\nkind = \"mysql\"\n",
                2,
                vec!["mysql", "`redis`"],
            ),
            (
                "[services.x]\nkind = \"redis\"\nport = 1\n",
                3,
                vec!["port"],
            ),
            ("[services.x]\n", 1, vec!["kind"]),
            (
                "[services.x]\nkind = \"redis\"\ncredentials = { a = \"b\" }\n",
                3,
                vec!["remove `credentials`"],
            ),
            (
                "[services.x]\nkind = \"user-provided\"\ncredentials = { a = 1 }\n",
                3,
                vec!["{ env = \"NAME\" }"],
            ),
            (
                "[services.x]\nkind = \"user-provided\"\ncredentials = { a = { var = \"X\" } }\n",
                3,
                vec!["var"],
            ),
            ("[services.\"a b\"]\nkind = \"redis\"\n", 2, vec!["`a b`"]),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(&format!("line {line}")), "{text}: {err}");
            for word in words {
                assert!(err.contains(word), "{text}: {err}");
            }
        }
        let empty = parse("[services.x]\nkind = \"user-provided\"\n").unwrap();
        assert!(empty.services["x"].credentials.is_none());
    }

    #[test]
    fn the_watch_section_is_read_strictly() {
        let config = parse(
            "[watch]\ncommand = \"python3 check.py --quick\"\ninterval = 30\n\
             on_failure = \"curl -fsS https://hooks.example.invalid/x\"\nrollback_after = 2\n\
             rollback_within = 300\nmetrics_port = 0\n",
        )
        .unwrap();
        let watch = config.watch;
        assert_eq!(watch.command.as_deref(), Some("python3 check.py --quick"));
        assert_eq!(watch.interval, Some(30));
        assert_eq!(watch.rollback_after, Some(2));
        assert_eq!(watch.rollback_within, Some(300));
        assert_eq!(watch.metrics_port, Some(0));
        assert!(parse("").unwrap().watch.command.is_none());
        for (text, line, says) in [
            ("[watch]\ninterval = 0\n", "line 2", "give 1 or more"),
            (
                "[watch]\n\nrollback_after = -3\n",
                "line 3",
                "give 1 or more",
            ),
            (
                "[watch]\nmetrics_port = 70000\n",
                "line 2",
                "from 1 to 65535",
            ),
            (
                "[watch]\non_failure = \"curl 'x\"\n",
                "line 2",
                "is not a command",
            ),
            ("[watch]\ncommand = \"\"\n", "line 2", "is not a command"),
            ("[watch]\nintervall = 5\n", "line 2", "intervall"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(line) && err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn canary_settings_are_read_strictly_at_their_line() {
        let config = parse(
            "[env.production]\nplatform = \"cf\"\nstrategy = \"canary\"\n\
             canary_steps = [10, 50, 100]\ncanary_window = 30\ncanary_max_error_rate = 0.5\n\
             canary_max_p99_ms = 250\ncanary_min_requests = 200\n",
        )
        .unwrap();
        let plan = config.env["production"].canary().unwrap();
        assert_eq!(plan.steps, [10, 50, 100]);
        assert_eq!(plan.window_secs, 30);
        assert_eq!(plan.max_error_rate, 0.5);
        assert_eq!(plan.max_p99_ms, 250);
        assert_eq!(plan.min_requests, 200);
        let defaults = parse("[env.p]\nstrategy = \"canary\"\n").unwrap();
        assert_eq!(
            defaults.env["p"].canary().unwrap(),
            crate::canary::Plan::default()
        );
        assert!(parse("[env.p]\n").unwrap().env["p"].canary().is_none());
        for (text, at, says) in [
            ("[env.p]\nstrategy = \"blue-green\"\n", "line 2", "`canary`"),
            (
                "[env.p]\n\ncanary_steps = [10]\n",
                "line 3",
                "add `strategy = \"canary\"`",
            ),
            (
                "[env.p]\nstrategy = \"canary\"\ncanary_steps = [50, 10]\n",
                "line 3",
                "rising percentages",
            ),
            (
                "[env.p]\nstrategy = \"canary\"\ncanary_steps = [10, 150]\n",
                "line 3",
                "rising percentages",
            ),
            (
                "[env.p]\nstrategy = \"canary\"\ncanary_steps = []\n",
                "line 3",
                "rising percentages",
            ),
            (
                "[env.p]\nstrategy = \"canary\"\ncanary_window = 0\n",
                "line 3",
                "give 1 or more",
            ),
            (
                "[env.p]\nstrategy = \"canary\"\ncanary_max_error_rate = 101.0\n",
                "line 3",
                "from 0 to 100",
            ),
            (
                "[env.p]\nstrategy = \"canary\"\ncanary_max_p99_ms = -1\n",
                "line 3",
                "0 or more",
            ),
            (
                "[env.p]\nstrategy = \"canary\"\ncanary_min_requests = 0\n",
                "line 3",
                "give 1 or more",
            ),
            (
                "[env.p]\ncanary_min_requests = 10\n",
                "line 2",
                "add `strategy = \"canary\"`",
            ),
            (
                "[env.p]\nstrategy = \"canary\"\ncanary_step = [10]\n",
                "line 3",
                "canary_step",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(at) && err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_keys_name_the_line_and_the_key() {
        let err = parse("[app]\nname = \"x\"\n\n[version]\ncurent = \"1.0.0\"\n").unwrap_err();
        assert!(err.contains("line 5"), "{err}");
        assert!(err.contains("curent"), "{err}");
    }
}
