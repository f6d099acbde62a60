//! The embedded local platform: a small PaaS on this machine, the default for any environment
//! that names no platform. See `docs/local-platform.md` for the whole design.
//!
//! - Staging ([`stage`]) turns a checkout into an immutable, content-addressed artifact
//!   ([`artifacts`]): a Rust binary, or a Python app with its virtual environment.
//! - Each environment is served by a background process of its own ([`server`]): a reverse
//!   proxy on the environment's stable port ([`proxy`]) over the instances it supervises
//!   ([`supervisor`]). It outlives cdflow; cdflow talks to it over a unix socket ([`control`]).
//! - What serves an environment, and what served it before, is in its `env.json` ([`spec`]),
//!   which `rollback` walks back through and `up` restores after a reboot.
//!
//! This file is the cdflow side: the [`Platform`] operations and `status`, `down`, `up`.

mod artifacts;
mod control;
mod layout;
mod logs;
mod memory;
mod pids;
mod ports;
mod proxy;
mod sandbox;
mod server;
mod spec;
mod stage;
mod supervisor;
mod time;

use std::path::Path;

use anyhow::{Context, Result};

use self::layout::{check_env_name, EnvPaths};
use self::spec::{EnvFile, Placement, Record, RunSpec};
use super::{Deployment, Platform, Release, Target};
use crate::app_manifest::{Application, Resolved};
use crate::error::user_error;
use crate::exec::Exec;
use crate::lock::{self, Wait};
use crate::state::State;
use crate::ui::Ui;

pub const NAME: &str = "local";

/// Route ports of environments whose cdflow.toml gives none: the talk's two environments get
/// the ports `cdflow init` writes; any other one a port derived from its name, stable across
/// runs, in [`HASHED_PORTS`].
const DEFAULT_PORTS: [(&str, u16); 2] = [("staging", 8081), ("production", 8082)];
pub(super) const HASHED_PORTS: std::ops::Range<u16> = 18_000..19_000;

pub struct Local {
    state: State,
}

impl Local {
    pub fn new(state: &State) -> Local {
        Local {
            state: state.clone(),
        }
    }

    /// Runs `spec` on its environment, recorded as `how` (push, promote), with the deploy lock
    /// held.
    fn deploy(&self, exec: &Exec, spec: RunSpec, how: &str) -> Result<Deployment> {
        let paths = EnvPaths::new(&self.state, &spec.env);
        let _lock = deploy_lock(
            exec.ui(),
            &self.state,
            &spec.env,
            &format!("{how} of {} {}", spec.app, spec.version),
        )?;
        let file = EnvFile::load(&paths)?;
        check_same_app(&file, &spec.env, &spec.app)?;
        let record = Record {
            how: how.to_string(),
            at: time::now(),
            spec,
        };
        let next = file.pushed(record.clone());
        run(exec, &self.state, &paths, record.spec, next)
    }
}

impl Platform for Local {
    fn preflight(&self, _exec: &Exec, app: &str, env: &Target, manifest: &Resolved) -> Vec<String> {
        if let Err(err) = check_env_name(env.name) {
            return vec![err.to_string()];
        }
        let mut problems = Vec::new();
        match manifest_application(manifest, app) {
            Ok(application) => problems.extend(application.problems()),
            Err(err) => problems.push(err.to_string()),
        }
        let paths = EnvPaths::new(&self.state, env.name);
        match EnvFile::load(&paths) {
            Ok(file) => problems.extend(
                check_same_app(&file, env.name, app)
                    .err()
                    .map(|e| e.to_string()),
            ),
            Err(err) => problems.push(format!("{err:#}")),
        }
        problems.extend(check_settings(env));
        let port = route_port(env);
        let ours = control::status(&paths).is_some_and(|status| status.route_port == Some(port));
        let in_use =
            ports::try_bind(port).is_err_and(|err| err.kind() == std::io::ErrorKind::AddrInUse);
        if !ours && in_use {
            problems.push(format!(
                "the route of `{}`, port {port} on 127.0.0.1, is in use by another program: \
                 stop it, or set another `port` in [env.{}] of cdflow.toml",
                env.name, env.name
            ));
        }
        problems
    }

    fn push(&self, exec: &Exec, release: &Release, env: &Target) -> Result<Deployment> {
        check_env_name(env.name)?;
        let application = application(release)?;
        let port = route_port(env);
        let Some(artifact) = stage::stage(exec, &self.state, release, application)? else {
            return Ok(dry_run(exec, env, release.version, port, application));
        };
        exec.ui().note(&format!(
            "staged {} {} as {} ({})",
            application.name,
            release.version,
            artifact.short(),
            artifact.meta.buildpack
        ));
        let placement = Placement {
            env: env.name,
            version: release.version,
            artifact: &artifact.meta.digest,
            droplet: &artifact.droplet(),
            runtime: artifact.meta.runtime,
            route_port: port,
        };
        let spec = RunSpec::from_manifest(application, placement, &artifact.meta.default_command)?;
        self.deploy(exec, spec, "push")
    }

    fn promote(
        &self,
        exec: &Exec,
        release: &Release,
        from: &Target,
        to: &Target,
        verified: &Deployment,
    ) -> Result<Deployment> {
        check_env_name(to.name)?;
        let application = application(release)?;
        let port = route_port(to);
        if verified.platform != NAME {
            return Err(user_error(format!(
                "`{}` runs on {}, so its artifact is not in the local store: push to `{}` instead",
                from.name, verified.platform, to.name
            )));
        }
        // The very bytes that ran on `from`, checked against their digest; nothing is rebuilt.
        let opened = exec.for_real(|| {
            artifacts::open(&self.state.local(), &verified.artifact).with_context(|| {
                format!("cannot promote {} from `{}`", verified.version, from.name)
            })
        })?;
        let Some(artifact) = opened else {
            exec.ui().note(&format!(
                "would check the artifact {} byte for byte",
                verified.artifact
            ));
            return Ok(dry_run(exec, to, &verified.version, port, application));
        };
        let placement = Placement {
            env: to.name,
            version: &verified.version,
            artifact: &artifact.meta.digest,
            droplet: &artifact.droplet(),
            runtime: artifact.meta.runtime,
            route_port: port,
        };
        let spec = RunSpec::from_manifest(application, placement, &artifact.meta.default_command)?;
        self.deploy(exec, spec, &format!("promote from {}", from.name))
    }

    fn rollback(
        &self,
        exec: &Exec,
        app: &str,
        env: &Target,
        version: Option<&str>,
    ) -> Result<Deployment> {
        check_env_name(env.name)?;
        let paths = EnvPaths::new(&self.state, env.name);
        let _lock = deploy_lock(
            exec.ui(),
            &self.state,
            env.name,
            &format!("rollback of {app} in {}", env.name),
        )?;
        let file = EnvFile::load(&paths)?;
        check_same_app(&file, env.name, app)?;
        let (next, mut target) = file
            .rolled_back(version, &time::now())
            .map_err(|err| user_error(format!("cannot roll back `{}`: {err}", env.name)))?;
        // The route stays where cdflow.toml says it is now.
        target.spec.route_port = route_port(env);
        let opened = exec.for_real(|| {
            artifacts::open(&self.state.local(), &target.spec.artifact)
                .with_context(|| format!("cannot roll back to {}", target.spec.version))
        })?;
        if opened.is_none() {
            exec.ui().note(&format!(
                "would switch `{}` back to {} ({})",
                env.name, target.spec.version, target.spec.artifact
            ));
            return Ok(target.spec.deployment());
        }
        let mut next = next;
        if let Some(last) = next.history.last_mut() {
            last.spec.route_port = target.spec.route_port;
        }
        run(exec, &self.state, &paths, target.spec, next)
    }

    fn serving(&self, _exec: &Exec, app: &str, env: &Target) -> Result<Option<Deployment>> {
        check_env_name(env.name)?;
        let paths = EnvPaths::new(&self.state, env.name);
        Ok(control::status(&paths)
            .and_then(|status| status.serving)
            .filter(|spec| spec.app == app)
            .map(|spec| spec.deployment()))
    }

    fn logs(&self, exec: &Exec, _app: &str, env: &Target, follow: bool) -> Result<()> {
        check_env_name(env.name)?;
        let paths = EnvPaths::new(&self.state, env.name);
        if !paths.log().exists() {
            return Err(user_error(format!(
                "`{}` has no logs: nothing was deployed there (state in {})",
                env.name,
                self.state.root().display()
            )));
        }
        logs::show(exec.ui(), &paths, follow)
    }
}

/// The application of the manifest that is being released.
fn application<'a>(release: &'a Release) -> Result<&'a Application> {
    manifest_application(release.manifest, release.app)
}

/// The application named `app` in `manifest`, else its first.
fn manifest_application<'a>(manifest: &'a Resolved, app: &str) -> Result<&'a Application> {
    let applications = &manifest.applications;
    applications
        .iter()
        .find(|a| a.name == app)
        .or_else(|| applications.first())
        .ok_or_else(|| user_error(format!("{} lists no applications", manifest.path.display())))
}

/// Problems with a local environment's settings, found before a run changes anything.
fn check_settings(env: &Target) -> Vec<String> {
    let port = route_port(env);
    ports::privileged_problem(port, ports::try_bind)
        .map(|why| {
            format!(
                "[env.{}] port {port}: {why}; choose a port from 1024 up with `port` under \
                 [env.{}] in cdflow.toml",
                env.name, env.name
            )
        })
        .into_iter()
        .collect()
}

/// The port of an environment's route: from cdflow.toml, else a default.
fn route_port(env: &Target) -> u16 {
    if let Some(port) = env.config.port {
        return port;
    }
    if let Some((_, port)) = DEFAULT_PORTS.iter().find(|(name, _)| *name == env.name) {
        return *port;
    }
    // FNV-1a: stable across runs and Rust versions, unlike the std hasher.
    let hash = env.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    HASHED_PORTS.start + (hash % u64::from(HASHED_PORTS.end - HASHED_PORTS.start)) as u16
}

/// One deploy per environment at a time; a second one waits, saying who it waits for.
fn deploy_lock(ui: &Ui, state: &State, env: &str, holder: &str) -> Result<lock::Lock> {
    lock::acquire(
        ui,
        &state.locks().join(format!("local-{env}.lock")),
        holder,
        Wait::Yes,
    )
}

/// Environments are folders of the state folder, shared by the apps that use it; one app's
/// environment is not silently taken over by another.
fn check_same_app(file: &EnvFile, env: &str, app: &str) -> Result<()> {
    match file.current() {
        Some(current) if current.spec.app != app => Err(user_error(format!(
            "`{env}` in this state folder serves the app `{}`, not `{app}`: use another \
             environment name, or another state folder (CDFLOW_STATE_DIR)",
            current.spec.app
        ))),
        _ => Ok(()),
    }
}

/// Asks the environment's server (started if need be) to run `spec`, recording `next` as the
/// environment's file once the route has switched.
fn run(
    exec: &Exec,
    state: &State,
    paths: &EnvPaths,
    spec: RunSpec,
    next: EnvFile,
) -> Result<Deployment> {
    let deployment = spec.deployment();
    control::ensure_server(state.root(), paths)?;
    let request = control::Request::Deploy {
        spec: Box::new(spec),
        env_file: Box::new(next),
    };
    let env = paths.env.clone();
    control::call(paths, &request, true, |text| {
        exec.ui().note(&format!("{env}: {text}"))
    })
    .with_context(|| format!("`{env}` did not switch to {}", deployment.version))?;
    Ok(deployment)
}

fn dry_run(
    exec: &Exec,
    env: &Target,
    version: &str,
    port: u16,
    application: &Application,
) -> Deployment {
    exec.ui().note(&format!(
        "would start {} instance(s) of {} {version} and switch http://127.0.0.1:{port} to them",
        application.instances(),
        application.name
    ));
    Deployment {
        env: env.name.to_string(),
        platform: NAME.into(),
        version: version.to_string(),
        url: format!("http://127.0.0.1:{port}"),
        artifact: "(dry run)".into(),
    }
}

/// `cdflow status`: per local environment, version, digest, route and instances.
pub fn status(state: &State, ui: &Ui) -> Result<()> {
    let all = EnvPaths::all(&state.local());
    if all.is_empty() {
        ui.note(&format!(
            "the local platform serves nothing (state in {})",
            state.root().display()
        ));
        return Ok(());
    }
    for paths in all {
        let file = EnvFile::load(&paths).unwrap_or_default();
        match control::status(&paths) {
            Some(status) => {
                match &status.serving {
                    Some(spec) => ui.note(&format!(
                        "{}: {} {} ({}) at {} (server pid {})",
                        paths.env,
                        spec.app,
                        spec.version,
                        artifacts::short(&spec.artifact),
                        spec.url(),
                        status.server_pid
                    )),
                    None => ui.note(&format!(
                        "{}: nothing serves yet (server pid {} is deploying or about to exit)",
                        paths.env, status.server_pid
                    )),
                }
                for instance in &status.instances {
                    let restarts = match instance.restarts {
                        1 => "1 restart".to_string(),
                        n => format!("{n} restarts"),
                    };
                    let pid = instance.pid.map_or("-".into(), |p| p.to_string());
                    let port = instance.port.map_or("-".into(), |p| p.to_string());
                    let old = match &status.serving {
                        Some(spec) if spec.version != instance.version => {
                            format!(" ({})", instance.version)
                        }
                        _ => String::new(),
                    };
                    // As `cf app` shows it: what the processes hold, of the manifest's limit.
                    let memory = match (instance.memory, instance.memory_limit) {
                        (Some(used), Some(limit)) => {
                            format!(", memory {} of {}", memory::Size(used), memory::Size(limit))
                        }
                        (Some(used), None) => format!(", memory {}", memory::Size(used)),
                        (None, _) => String::new(),
                    };
                    ui.note(&format!(
                        "  instance {}{old}: pid {pid}, port {port}, {}, {restarts}{memory} ({})",
                        instance.index, instance.phase, instance.check
                    ));
                }
            }
            None => {
                let orphans = pids::load(&paths)
                    .groups
                    .iter()
                    .filter(|p| p.alive())
                    .count();
                if orphans > 0 {
                    ui.note(&format!(
                        "{}: its server died, leaving {orphans} instance process(es) running: \
                         `cdflow down --env {}` stops them, `cdflow up` replaces them",
                        paths.env, paths.env
                    ));
                    continue;
                }
                match file.current() {
                    Some(current) => {
                        let last = format!(
                            "{}: stopped; it last served {} {} ({}) at {}",
                            paths.env,
                            current.spec.app,
                            current.spec.version,
                            artifacts::short(&current.spec.artifact),
                            current.spec.url()
                        );
                        // `up` runs only an intact artifact: promise it only for one.
                        match artifacts::open(&state.local(), &current.spec.artifact) {
                            Ok(_) => ui.note(&format!("{last}: `cdflow up` brings it back")),
                            Err(err) => ui.note(&format!(
                                "{last}; `cdflow up` cannot bring it back: {err:#}"
                            )),
                        }
                    }
                    None => ui.note(&format!(
                        "{}: stopped; nothing was deployed there",
                        paths.env
                    )),
                }
            }
        }
    }
    Ok(())
}

/// `cdflow down [--env ENV]`: stops everything cdflow started and frees the ports. What was
/// deployed stays recorded, for `cdflow up`.
pub fn down(state: &State, ui: &Ui, env: Option<&str>) -> Result<()> {
    let local = state.local();
    let all = match env {
        Some(env) => {
            check_env_name(env)?;
            vec![EnvPaths::at(&local, env)]
        }
        None => EnvPaths::all(&local),
    };
    let mut said = false;
    for paths in all {
        if !paths.dir.exists() {
            continue;
        }
        let stopped = control::stop_server(&paths)?;
        if stopped > 0 {
            ui.note(&format!("{}: stopped ({stopped} process(es))", paths.env));
            said = true;
        }
    }
    if !said {
        ui.note("nothing was running");
    }
    Ok(())
}

/// `cdflow up`: brings back the last deployed version of every local environment that is not
/// running (after a reboot, or a `cdflow down`).
pub fn up(state: &State, ui: &Ui) -> Result<()> {
    let all = EnvPaths::all(&state.local());
    let mut failures = Vec::new();
    let mut said = false;
    for paths in all {
        let file = EnvFile::load(&paths)?;
        let Some(current) = file.current().cloned() else {
            continue;
        };
        said = true;
        if control::status(&paths).is_some_and(|s| s.serving.is_some()) {
            ui.note(&format!(
                "{}: already serves {} at {}",
                paths.env,
                current.spec.version,
                current.spec.url()
            ));
            continue;
        }
        let result = (|| -> Result<()> {
            let _lock = deploy_lock(ui, state, &paths.env, &format!("up of {}", paths.env))?;
            artifacts::open(&state.local(), &current.spec.artifact)?;
            let mut next = file.clone();
            next.record(Record {
                how: "up".into(),
                at: time::now(),
                spec: current.spec.clone(),
            });
            control::ensure_server(state.root(), &paths)?;
            let request = control::Request::Deploy {
                spec: Box::new(current.spec.clone()),
                env_file: Box::new(next),
            };
            control::call(&paths, &request, true, |text| {
                ui.note(&format!("{}: {text}", paths.env))
            })?;
            Ok(())
        })();
        match result {
            Ok(()) => ui.note(&format!(
                "{}: serves {} at {}",
                paths.env,
                current.spec.version,
                current.spec.url()
            )),
            Err(err) => {
                ui.note(&format!(
                    "{}: could not be brought back: {err:#}",
                    paths.env
                ));
                failures.push(paths.env.clone());
            }
        }
    }
    if !said {
        ui.note(&format!(
            "nothing to bring up: no environment was deployed (state in {})",
            state.root().display()
        ));
    }
    if !failures.is_empty() {
        anyhow::bail!("could not bring back {}", failures.join(", "));
    }
    Ok(())
}

/// `down` and `up` are given no `Ui` by main; they print as it would without `--json`.
/// The background process that serves one environment (started by cdflow itself).
pub fn serve_env(state_root: &Path, env: &str) -> Result<()> {
    server::run(state_root, env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnvSection;

    #[test]
    fn route_ports_from_the_config_else_defaults() {
        let config = EnvSection {
            port: Some(9000),
            ..EnvSection::default()
        };
        let none = EnvSection::default();
        let target = |name, config| Target { name, config };
        assert_eq!(route_port(&target("staging", &config)), 9000);
        assert_eq!(route_port(&target("staging", &none)), 8081);
        assert_eq!(route_port(&target("production", &none)), 8082);
        let qa = route_port(&target("qa", &none));
        assert!(HASHED_PORTS.contains(&qa));
        assert_eq!(qa, route_port(&target("qa", &none)), "stable");
    }
}
