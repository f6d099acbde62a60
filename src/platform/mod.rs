//! The one interface to a PaaS. Pipelines speak only to [`Platform`]; `cf` (the real Cloud
//! Foundry CLI) and `local` (the embedded platform) are behind it.

pub mod cf;
pub mod local;
mod rust_binary;

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::app_manifest::Resolved;
use crate::config::{EnvSection, PlatformKind, ServiceSection};
use crate::exec::Exec;
use crate::state::State;

/// An environment, by name, with its settings from cdflow.toml.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub name: &'a str,
    pub config: &'a EnvSection,
    /// The service instances cdflow.toml declares (`[services.NAME]`), for every environment.
    pub services: &'a indexmap::IndexMap<String, ServiceSection>,
}

impl Target<'_> {
    pub fn platform(&self) -> PlatformKind {
        self.config.platform
    }
}

/// What is being delivered: one version of one app, from a checkout.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    /// The app's name (the manifest's first application).
    pub app: &'a str,
    /// The repository it comes from ([`crate::facts::origin_of`]).
    pub origin: &'a str,
    /// The checkout to stage from.
    pub dir: &'a Path,
    /// The manifest, resolved for the environment it goes to.
    pub manifest: &'a Resolved,
    pub version: &'a str,
    /// The app's e2e tier, which verifies a canary (none when cdflow.toml has no `[e2e]`).
    pub e2e: Option<E2e<'a>>,
}

/// The e2e command and the environment it runs in; `APP_URL` is added for the route tested.
#[derive(Debug, Clone, Copy)]
pub struct E2e<'a> {
    pub command: &'a str,
    pub env: &'a [(String, String)],
}

/// What serves an environment after a push, a promote or a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub env: String,
    pub platform: String,
    pub version: String,
    /// Where the environment answers.
    pub url: String,
    /// The artifact that runs: a content digest (local) or a droplet guid (cf).
    pub artifact: String,
}

impl Deployment {
    /// Tells `--json` readers that the environment now serves this, by a `deployment` event
    /// (text output says so in a note of its own). For a real change only: a dry run's
    /// deployment is what would serve.
    pub fn announce(&self, ui: &crate::ui::Ui, by: crate::events::DeployedBy) {
        if !ui.is_json() {
            return;
        }
        ui.emit(crate::events::Event::Deployment(crate::events::Deployed {
            env: self.env.clone(),
            platform: self.platform.clone(),
            version: self.version.clone(),
            url: self.url.clone(),
            artifact: self.artifact.clone(),
            by,
        }));
    }
}

pub trait Platform {
    /// Everything that would make a later push, promote or rollback to `env` refuse, each with
    /// its fix: checked before the first irreversible step of a run, and in a dry run too.
    /// `origin` is the repository the app comes from ([`crate::facts::origin_of`]).
    fn preflight(
        &self,
        exec: &Exec,
        app: &str,
        origin: &str,
        env: &Target,
        manifest: &Resolved,
    ) -> Vec<String>;

    /// Stages `release` and makes it serve `env`, replacing what served before without
    /// dropping a request. If the new version does not become healthy, the previous one keeps
    /// serving and this fails.
    fn push(&self, exec: &Exec, release: &Release, env: &Target) -> Result<Deployment>;

    /// Makes `to` serve the very artifact that `verified` (a deployment of `from`) runs, with
    /// `release.manifest` resolved for `to`. Nothing is rebuilt.
    fn promote(
        &self,
        exec: &Exec,
        release: &Release,
        from: &Target,
        to: &Target,
        verified: &Deployment,
    ) -> Result<Deployment>;

    /// Switches `env` back to an earlier artifact (the previous one, or the one of `version`).
    fn rollback(
        &self,
        exec: &Exec,
        app: &str,
        env: &Target,
        version: Option<&str>,
    ) -> Result<Deployment>;

    /// What serves `env` now, if anything.
    fn serving(&self, exec: &Exec, app: &str, env: &Target) -> Result<Option<Deployment>>;

    /// Prints the recent logs of `env` (and follows them with `follow`).
    fn logs(&self, exec: &Exec, app: &str, env: &Target, follow: bool) -> Result<()>;
}

/// The platform an environment names.
pub fn for_env(state: &State, env: &Target) -> Box<dyn Platform> {
    match env.platform() {
        PlatformKind::Cf => Box::new(cf::Cf::new(state)),
        PlatformKind::Local => Box::new(local::Local::new(state)),
    }
}
