//! The embedded local platform: a small PaaS on this machine.
//!
//! (Being built: see issue 5. Until then every operation says so.)

use std::path::Path;

use anyhow::{bail, Result};

use super::{Deployment, Platform, Release, Target};
use crate::exec::Exec;
use crate::state::State;
use crate::ui::Ui;

pub const NAME: &str = "local";

pub struct Local {
    state: State,
}

impl Local {
    pub fn new(state: &State) -> Local {
        Local {
            state: state.clone(),
        }
    }
}

impl Platform for Local {
    fn push(&self, _exec: &Exec, _release: &Release, env: &Target) -> Result<Deployment> {
        bail!(
            "the local platform cannot push to `{}` yet (state in {})",
            env.name,
            self.state.root().display()
        )
    }

    fn promote(
        &self,
        _exec: &Exec,
        _release: &Release,
        _from: &Target,
        to: &Target,
        _verified: &Deployment,
    ) -> Result<Deployment> {
        bail!("the local platform cannot promote to `{}` yet", to.name)
    }

    fn rollback(
        &self,
        _exec: &Exec,
        _app: &str,
        env: &Target,
        _version: Option<&str>,
    ) -> Result<Deployment> {
        bail!("the local platform cannot roll back `{}` yet", env.name)
    }

    fn serving(&self, _exec: &Exec, _app: &str, _env: &Target) -> Result<Option<Deployment>> {
        Ok(None)
    }

    fn logs(&self, _exec: &Exec, _app: &str, env: &Target, _follow: bool) -> Result<()> {
        bail!("the local platform has no logs for `{}` yet", env.name)
    }
}

/// `cdflow status`: per local environment, version, digest, route and instances.
pub fn status(_state: &State, _ui: &Ui) -> Result<()> {
    bail!("the local platform has no status yet")
}

/// `cdflow down [--env ENV]`: stops everything cdflow started and frees the ports.
pub fn down(_state: &State, _env: Option<&str>) -> Result<()> {
    bail!("the local platform has nothing to stop yet")
}

/// `cdflow up`: brings back the last deployed version of every environment.
pub fn up(_state: &State) -> Result<()> {
    bail!("the local platform has nothing to bring up yet")
}

/// The background process that serves one environment (started by cdflow itself).
pub fn serve_env(_state_root: &Path, env: &str) -> Result<()> {
    bail!("the local platform cannot serve `{env}` yet")
}
