//! What the local platform runs for an environment ([`RunSpec`]: an artifact and the manifest's
//! settings for it) and what it remembers of each environment ([`EnvFile`], `env.json`).
//!
//! A spec is complete on its own, so that `rollback` and `up` can run an earlier deployment
//! again without the app's checkout or manifest.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::layout::EnvPaths;
use crate::app_manifest::Application;
use crate::error::user_error;
use crate::exec::Exec;
use crate::platform::Deployment;

/// How an instance is started from the droplet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// A program in `droplet/app` (a Rust binary, or what a binary buildpack pushes).
    Binary,
    /// A Python app in `droplet/app` with its virtual environment in `droplet/venv`.
    Python,
}

/// The manifest's `health-check-type`, as Cloud Foundry reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HealthCheck {
    /// A GET on `endpoint` answers 2xx.
    Http { endpoint: String },
    /// The instance's port accepts a TCP connection (Cloud Foundry's default).
    Port,
    /// The process is running.
    Process,
}

impl std::fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HealthCheck::Http { endpoint } => write!(f, "http {endpoint}"),
            HealthCheck::Port => f.write_str("port"),
            HealthCheck::Process => f.write_str("process"),
        }
    }
}

/// Cloud Foundry's default for `timeout`: seconds an app gets to become healthy.
pub const DEFAULT_START_TIMEOUT_SECS: u64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    pub app: String,
    pub env: String,
    pub version: String,
    /// `sha256:<hex>` of the droplet.
    pub artifact: String,
    /// The artifact's `droplet` folder.
    pub droplet: PathBuf,
    pub runtime: Runtime,
    /// The start command, run by `/bin/sh -c` in `droplet/app`.
    pub command: String,
    pub instances: u32,
    pub memory: Option<String>,
    /// The manifest's `env`, in its order.
    pub env_vars: Vec<(String, String)>,
    /// `VCAP_SERVICES`, as JSON: filled in by the environment's server from `bindings` once it
    /// has started them (their ports and passwords are known only then).
    pub services: serde_json::Value,
    /// The service instances the manifest's `services` bind to.
    #[serde(default)]
    pub bindings: Vec<super::services::Binding>,
    pub health_check: HealthCheck,
    pub start_timeout_secs: u64,
    /// The port of the environment's route on 127.0.0.1.
    pub route_port: u16,
    /// The manifest's `no-route`: the route's port is not bound, and nothing is proxied.
    #[serde(default)]
    pub no_route: bool,
    /// The port of the route's metrics on 127.0.0.1 (`metrics_port` in cdflow.toml); `None`:
    /// any free one, kept while the server lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_port: Option<u16>,
}

impl RunSpec {
    /// The manifest's `memory`, in bytes.
    pub fn memory_limit(&self) -> Option<u64> {
        self.memory
            .as_deref()
            .and_then(crate::app_manifest::parse_bytes)
    }

    /// The spec for `application` of the manifest, running `droplet` with `command`.
    pub fn from_manifest(
        application: &Application,
        placement: Placement<'_>,
        default_command: &str,
    ) -> Result<RunSpec> {
        if let Some(problem) = application.problems().into_iter().next() {
            return Err(user_error(problem));
        }
        let health_check = match application.health_check_type.as_deref() {
            None | Some("port") => HealthCheck::Port,
            Some("http") => HealthCheck::Http {
                endpoint: application
                    .health_check_http_endpoint
                    .clone()
                    .unwrap_or_else(|| "/".into()),
            },
            Some("process") | Some("none") => HealthCheck::Process,
            Some(other) => {
                return Err(user_error(format!(
                    "the manifest's health-check-type `{other}` is unknown: use `http`, `port` \
                     or `process`"
                )))
            }
        };
        let command = application
            .command
            .clone()
            .filter(|c| !c.trim().is_empty())
            .unwrap_or_else(|| default_command.to_string());
        Ok(RunSpec {
            app: application.name.clone(),
            env: placement.env.to_string(),
            version: placement.version.to_string(),
            artifact: placement.artifact.to_string(),
            droplet: placement.droplet.to_path_buf(),
            runtime: placement.runtime,
            command,
            instances: application.instances(),
            memory: application.memory.clone(),
            env_vars: application.env_strings(),
            services: serde_json::json!({}),
            bindings: Vec::new(),
            health_check,
            start_timeout_secs: application
                .timeout
                .unwrap_or(DEFAULT_START_TIMEOUT_SECS)
                .max(1),
            route_port: placement.route_port,
            no_route: application.no_route == Some(true),
            metrics_port: placement.metrics_port,
        })
    }

    /// Where the route answers; none with `no-route`.
    pub fn route_url(&self) -> Option<String> {
        (!self.no_route).then(|| format!("http://127.0.0.1:{}", self.route_port))
    }

    /// The route as shown to people.
    pub fn url(&self) -> String {
        self.route_url()
            .unwrap_or_else(|| "no route (no-route)".into())
    }

    pub fn deployment(&self) -> Deployment {
        Deployment {
            env: self.env.clone(),
            platform: super::NAME.into(),
            version: self.version.clone(),
            // Empty with `no-route`: e2e tests then need the environment's `url`.
            url: self.route_url().unwrap_or_default(),
            artifact: self.artifact.clone(),
        }
    }
}

/// Where and what a spec runs, apart from the manifest's settings.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    pub env: &'a str,
    pub version: &'a str,
    pub artifact: &'a str,
    pub droplet: &'a Path,
    pub runtime: super::spec::Runtime,
    pub route_port: u16,
    pub metrics_port: Option<u16>,
}

/// One switch of an environment's route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `push`, `promote from staging`, `rollback`, `up`.
    pub how: String,
    pub at: String,
    pub spec: RunSpec,
}

/// `env.json`: written by the environment's server when it switches the route, read by cdflow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvFile {
    /// Deployments that a rollback goes back through; the last one is the current one.
    pub stack: Vec<Record>,
    /// Every switch, oldest first (the last [`HISTORY_LEN`]).
    pub history: Vec<Record>,
}

pub const HISTORY_LEN: usize = 100;

impl EnvFile {
    pub fn load(paths: &EnvPaths) -> Result<EnvFile> {
        let path = paths.env_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is damaged; remove it to start over", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(EnvFile::default()),
            Err(err) => Err(err).with_context(|| format!("could not read {}", path.display())),
        }
    }

    pub fn save(&self, exec: &Exec, paths: &EnvPaths) -> Result<()> {
        exec.save(
            &paths.env_file(),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }

    pub fn current(&self) -> Option<&Record> {
        self.stack.last()
    }

    /// This file after `record` became the current deployment on top of the stack.
    pub fn pushed(&self, record: Record) -> EnvFile {
        let mut next = self.clone();
        next.stack.push(record.clone());
        next.record(record);
        next
    }

    /// Appends to the history, keeping its last entries.
    pub fn record(&mut self, record: Record) {
        self.history.push(record);
        let extra = self.history.len().saturating_sub(HISTORY_LEN);
        self.history.drain(..extra);
        let extra = self.stack.len().saturating_sub(HISTORY_LEN);
        self.stack.drain(..extra);
    }

    /// The file after a rollback to `version` (or to the deployment before the current one),
    /// and the record to run. The stack is unwound like an undo: rolling back twice goes two
    /// deployments back; a version no longer on the stack is found in the history.
    pub fn rolled_back(&self, version: Option<&str>, at: &str) -> Result<(EnvFile, Record)> {
        let Some(current) = self.current() else {
            return Err(user_error(
                "nothing was ever deployed there, so there is nothing to roll back to",
            ));
        };
        let mut next = self.clone();
        let target = match version {
            None => {
                if self.stack.len() < 2 {
                    // The stack unwinds like an undo; the history may still hold other versions
                    // (the one just rolled back from, say), which only a named rollback reaches.
                    let mut others: Vec<&str> = Vec::new();
                    for record in self.history.iter().rev() {
                        let version = record.spec.version.as_str();
                        if version != current.spec.version && !others.contains(&version) {
                            others.push(version);
                        }
                    }
                    if others.is_empty() {
                        return Err(user_error(format!(
                            "it has served only {} since its history began, so there is \
                             nothing earlier to roll back to",
                            current.spec.version
                        )));
                    }
                    return Err(user_error(format!(
                        "{} is the first deployment left to undo there (a rollback undoes the \
                         last one), so there is nothing earlier to roll back to; it has also \
                         served {}: `--version {}` serves that again",
                        current.spec.version,
                        others.join(", "),
                        others[0]
                    )));
                }
                next.stack.pop();
                next.stack.last().cloned()
            }
            Some(version) => {
                let on_stack = self.stack[..self.stack.len() - 1]
                    .iter()
                    .rposition(|r| r.spec.version == version);
                match on_stack {
                    Some(index) => {
                        next.stack.truncate(index + 1);
                        next.stack.last().cloned()
                    }
                    None => {
                        let found = self
                            .history
                            .iter()
                            .rev()
                            .find(|r| r.spec.version == version);
                        if let Some(found) = found {
                            next.stack.push(found.clone());
                        }
                        found.cloned()
                    }
                }
            }
        };
        let Some(mut target) = target else {
            let known: Vec<&str> = self
                .history
                .iter()
                .map(|r| r.spec.version.as_str())
                .collect();
            return Err(user_error(format!(
                "version {} was never deployed there; the history holds: {}",
                version.unwrap_or_default(),
                known.join(", ")
            )));
        };
        target.how = format!("rollback from {}", current.spec.version);
        target.at = at.to_string();
        next.record(target.clone());
        Ok((next, target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: &str) -> Record {
        Record {
            how: "push".into(),
            at: "t".into(),
            spec: RunSpec {
                app: "app".into(),
                env: "staging".into(),
                version: version.into(),
                artifact: format!("sha256:{version}"),
                droplet: PathBuf::from("/d"),
                runtime: Runtime::Binary,
                command: "./app".into(),
                instances: 1,
                memory: None,
                env_vars: vec![],
                services: serde_json::json!({}),
                bindings: vec![],
                health_check: HealthCheck::Port,
                start_timeout_secs: 60,
                route_port: 8081,
                no_route: false,
                metrics_port: None,
            },
        }
    }

    fn pushed(versions: &[&str]) -> EnvFile {
        versions
            .iter()
            .fold(EnvFile::default(), |file, v| file.pushed(record(v)))
    }

    fn stack(file: &EnvFile) -> Vec<&str> {
        file.stack.iter().map(|r| r.spec.version.as_str()).collect()
    }

    #[test]
    fn rollback_unwinds_the_stack_like_an_undo() {
        let file = pushed(&["1", "2", "3"]);
        let (file, target) = file.rolled_back(None, "t").unwrap();
        assert_eq!(target.spec.version, "2");
        assert_eq!(target.how, "rollback from 3");
        let (file, target) = file.rolled_back(None, "t").unwrap();
        assert_eq!(target.spec.version, "1");
        assert_eq!(stack(&file), ["1"]);
        let err = file.rolled_back(None, "t").unwrap_err().to_string();
        // 3 and 2 served before: the way back to them is by name.
        assert!(!err.contains("served only"), "{err}");
        assert!(
            err.contains("1 is the first deployment left to undo"),
            "{err}"
        );
        assert!(err.contains("also served 2, 3: `--version 2`"), "{err}");
        assert_eq!(file.history.len(), 5);
        let err = pushed(&["1"])
            .rolled_back(None, "t")
            .unwrap_err()
            .to_string();
        // One deployment only: that one is all there is.
        assert!(err.contains("served only 1"), "{err}");
    }

    #[test]
    fn rollback_to_a_version_finds_it_on_the_stack_then_in_the_history() {
        let file = pushed(&["1", "2", "3"]);
        let (file, target) = file.rolled_back(Some("1"), "t").unwrap();
        assert_eq!(target.spec.version, "1");
        assert_eq!(stack(&file), ["1"]);
        let (file, target) = file.rolled_back(Some("3"), "t").unwrap();
        assert_eq!(target.spec.artifact, "sha256:3");
        assert_eq!(stack(&file), ["1", "3"]);
        let err = file.rolled_back(Some("9"), "t").unwrap_err().to_string();
        assert!(err.contains("version 9 was never deployed"), "{err}");
    }

    #[test]
    fn manifest_settings_become_a_spec() {
        let application: Application = serde_yaml::from_str(
            "name: web\ninstances: 2\nhealth-check-type: http\nhealth-check-http-endpoint: /health\ntimeout: 5\nservices: [db, {name: cache}]\nenv:\n  VERSION: 1.0.0\n",
        )
        .unwrap();
        let placement = Placement {
            env: "staging",
            version: "1.0.0",
            artifact: "sha256:ab",
            droplet: Path::new("/d"),
            runtime: Runtime::Python,
            route_port: 8081,
            metrics_port: None,
        };
        let spec = RunSpec::from_manifest(&application, placement, "python app.py").unwrap();
        assert_eq!(spec.command, "python app.py");
        assert_eq!(spec.instances, 2);
        assert_eq!(spec.start_timeout_secs, 5);
        assert_eq!(
            spec.health_check,
            HealthCheck::Http {
                endpoint: "/health".into()
            }
        );
        assert_eq!(
            spec.env_vars,
            [("VERSION".to_string(), "1.0.0".to_string())]
        );
        let bad: Application = serde_yaml::from_str("name: web\nhealth-check-type: tcp\n").unwrap();
        assert!(RunSpec::from_manifest(&bad, placement, "x").is_err());

        let limited: Application = serde_yaml::from_str("name: web\nmemory: 1G\n").unwrap();
        let spec = RunSpec::from_manifest(&limited, placement, "x").unwrap();
        assert_eq!(spec.memory_limit(), Some(1024 * 1024 * 1024));
        let bad: Application = serde_yaml::from_str("name: web\nmemory: lots\n").unwrap();
        let err = RunSpec::from_manifest(&bad, placement, "x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("memory `lots` of `web` is not a size"),
            "{err}"
        );
    }
}
