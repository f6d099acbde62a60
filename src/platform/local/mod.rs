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
//! - Environments belong to an app ([`layout`]): apps of several repositories share a machine
//!   and a state folder, each with its own routes; an app name stands for one repository
//!   ([`identity`]). Folders of the layout before that are moved into it ([`legacy`]).
//!
//! This file is the cdflow side: the [`Platform`] operations and `status`, `down`, `up`,
//! `forget`.

mod artifacts;
mod canary;
mod control;
mod forks;
mod identity;
mod keys;
mod layout;
mod legacy;
mod logs;
mod memory;
mod metrics;
mod pids;
mod ports;
mod proxy;
mod python;
mod sandbox;
mod server;
mod services;
mod spec;
mod stage;
mod supervisor;
mod time;

/// The alphabet of names that become folders in the state folder, for the records beside it.
pub(crate) use layout::safe_name;

use std::path::Path;

use anyhow::{Context, Result};

use self::layout::{check_app_name, check_env_name, EnvPaths};
use self::spec::{EnvFile, Placement, Record, RunSpec};
use super::{Deployment, Platform, Release, Target};
use crate::app_manifest::{Application, Resolved};
use crate::config::Strategy;
use crate::error::user_error;
use crate::events::{CanaryShare, EnvState, EnvironmentStatus, Event, InstanceState};
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
    /// held: as a canary verified for `release` when `env` says `strategy = "canary"`. `origin`
    /// is the app's repository, recorded as its identity by a first deploy.
    fn deploy(
        &self,
        exec: &Exec,
        spec: RunSpec,
        (release, env): (&Release, &Target),
        how: &str,
    ) -> Result<Deployment> {
        let origin = release.origin;
        check_app_name(&spec.app)?;
        let paths = EnvPaths::new(&self.state, &spec.app, &spec.env);
        let _lock = deploy_lock(
            exec.ui(),
            &self.state,
            &paths,
            &format!("{how} of {} {}", spec.app, spec.version),
        )?;
        identity::record(exec, &self.state.local(), &spec.app, origin)?;
        let file = EnvFile::load(&paths)?;
        let record = Record {
            how: how.to_string(),
            at: time::now(),
            spec,
        };
        let next = file.pushed(record.clone());
        match env.config.canary() {
            Some(plan) => canary::run(exec, &self.state, &paths, record.spec, next, &plan, release),
            None => run(exec, &self.state, &paths, record.spec, next),
        }
    }

    /// Moves environments of the layout before apps had folders into it; not in a dry run,
    /// which changes nothing.
    fn upgrade(&self, exec: &Exec) {
        if !exec.is_dry_run() {
            legacy::migrate(&self.state.local(), exec.ui());
        }
    }
}

impl Local {
    /// The services `app`'s manifest binds on `env`, and their generated passwords added to
    /// what cdflow masks.
    fn bind(
        &self,
        exec: &Exec,
        app: &str,
        env: &Target,
        manifest_services: &[serde_yaml::Value],
    ) -> Result<Vec<services::Binding>> {
        let bindings = services::bind(exec, &self.state.local(), app, env, manifest_services)?;
        self.mask_passwords(exec, app, env.name);
        Ok(bindings)
    }

    fn mask_passwords(&self, exec: &Exec, app: &str, env: &str) {
        exec.ui()
            .add_secret_values(&services::passwords(&self.state.local(), app, env));
    }
}

impl Platform for Local {
    fn preflight(
        &self,
        exec: &Exec,
        app: &str,
        origin: &str,
        env: &Target,
        manifest: &Resolved,
    ) -> Vec<String> {
        if let Err(err) = check_env_name(env.name).and_then(|()| check_app_name(app)) {
            return vec![err.to_string()];
        }
        self.upgrade(exec);
        let local = self.state.local();
        let mut problems = Vec::new();
        let mut no_route = false;
        match manifest_application(manifest, app) {
            Ok(application) => {
                problems.extend(application.problems());
                problems.extend(keys::review(manifest, &application.name).refused);
                no_route = application.no_route == Some(true);
                if no_route && env.config.strategy == Strategy::Canary {
                    problems.push(format!(
                        "[env.{}] strategy = \"canary\": `{}` has no route (no-route), so \
                         there is no traffic to split; remove the strategy, or give the app \
                         its route",
                        env.name, application.name
                    ));
                }
                problems.extend(services::problems(env, &application.services));
                // What Python staging would refuse, found before anything is bumped or pushed,
                // in the folder that staging reads (the manifest's `path`, if it gives one).
                let dir = match &application.path {
                    Some(path) => keys::app_folder(&manifest.path, path),
                    None => exec.dir(),
                };
                if let Ok(stage::Buildpack::Python) = stage::buildpack(application, &dir) {
                    problems.extend(python::problems(exec, &dir));
                }
            }
            Err(err) => problems.push(err.to_string()),
        }
        let paths = EnvPaths::new(&self.state, app, env.name);
        if let Err(err) = EnvFile::load(&paths) {
            problems.push(format!("{err:#}"));
        }
        if let Err(err) = identity::check(&local, app, origin) {
            problems.push(format!("{err:#}"));
        }
        problems.extend(check_settings(env));
        if env.config.strategy == Strategy::Canary {
            if let Some(why) = crate::tools::missing("curl", &exec.dir()) {
                problems.push(format!(
                    "[env.{}] verifies its canary with probes that curl sends, but {why}",
                    env.name
                ));
            }
        }
        let port = route_port(env);
        let ours = control::status(&paths).is_some_and(|status| status.route_port == Some(port));
        let in_use =
            ports::try_bind(port).is_err_and(|err| err.kind() == std::io::ErrorKind::AddrInUse);
        let holders = route_holders(&local, &paths, port);
        // An app with `no-route` leaves the route's port alone.
        if let (Some(holder), false) = (holders.first(), no_route) {
            problems.push(clash_problem(&local, &paths, env, port, holder));
        } else if !ours && in_use && !no_route {
            problems.push(format!(
                "the route of `{}`, port {port} on 127.0.0.1, is in use by another program: \
                 stop it, or set another `port` in [env.{}] of cdflow.toml",
                env.name, env.name
            ));
        }
        if let (Some(metrics), false) = (env.config.metrics_port, no_route) {
            problems.extend(metrics_problem(&local, &paths, env.name, port, metrics));
        }
        problems
    }

    fn push(&self, exec: &Exec, release: &Release, env: &Target) -> Result<Deployment> {
        check_env_name(env.name)?;
        let application = application(release)?;
        review_keys(exec, release)?;
        let port = route_port(env);
        let Some(artifact) = stage::stage(exec, &self.state, release, application)? else {
            return dry_run(exec, &self.state, env, release.version, port, application);
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
            metrics_port: env.config.metrics_port,
        };
        let mut spec =
            RunSpec::from_manifest(application, placement, &artifact.meta.default_command)?;
        spec.bindings = self.bind(exec, &spec.app, env, &application.services)?;
        self.deploy(exec, spec, (release, env), "push")
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
        review_keys(exec, release)?;
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
            return dry_run(exec, &self.state, to, &verified.version, port, application);
        };
        let placement = Placement {
            env: to.name,
            version: &verified.version,
            artifact: &artifact.meta.digest,
            droplet: &artifact.droplet(),
            runtime: artifact.meta.runtime,
            route_port: port,
            metrics_port: to.config.metrics_port,
        };
        let mut spec =
            RunSpec::from_manifest(application, placement, &artifact.meta.default_command)?;
        spec.bindings = self.bind(exec, &spec.app, to, &application.services)?;
        self.deploy(
            exec,
            spec,
            (release, to),
            &format!("promote from {}", from.name),
        )
    }

    fn rollback(
        &self,
        exec: &Exec,
        app: &str,
        env: &Target,
        version: Option<&str>,
    ) -> Result<Deployment> {
        check_env_name(env.name)?;
        check_app_name(app)?;
        self.upgrade(exec);
        let paths = EnvPaths::new(&self.state, app, env.name);
        let _lock = deploy_lock(
            exec.ui(),
            &self.state,
            &paths,
            &format!("rollback of {app} in {}", env.name),
        )?;
        let file = EnvFile::load(&paths)?;
        self.mask_passwords(exec, app, env.name);
        let (next, mut target) = file
            .rolled_back(version, &time::now())
            .map_err(|err| user_error(format!("cannot roll back `{}`: {err}", env.name)))?;
        // The route and its metrics stay where cdflow.toml says they are now.
        target.spec.route_port = route_port(env);
        target.spec.metrics_port = env.config.metrics_port;
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
            last.spec.metrics_port = target.spec.metrics_port;
        }
        run(exec, &self.state, &paths, target.spec, next)
    }

    fn serving(&self, exec: &Exec, app: &str, env: &Target) -> Result<Option<Deployment>> {
        check_env_name(env.name)?;
        check_app_name(app)?;
        self.upgrade(exec);
        let paths = EnvPaths::new(&self.state, app, env.name);
        Ok(control::status(&paths)
            .and_then(|status| status.serving)
            .filter(|spec| spec.app == app)
            .map(|spec| spec.deployment()))
    }

    fn logs(&self, exec: &Exec, app: &str, env: &Target, follow: bool) -> Result<()> {
        check_env_name(env.name)?;
        check_app_name(app)?;
        self.upgrade(exec);
        let paths = EnvPaths::new(&self.state, app, env.name);
        if !paths.log().exists() {
            return Err(user_error(format!(
                "`{}` of `{app}` has no logs: nothing was deployed there (state in {})",
                env.name,
                self.state.root().display()
            )));
        }
        self.mask_passwords(exec, app, env.name);
        logs::show(exec.ui(), &paths, follow)
    }
}

/// The application of the manifest that is being released.
fn application<'a>(release: &'a Release) -> Result<&'a Application> {
    manifest_application(release.manifest, release.app)
}

/// Refuses what the local platform cannot do with the manifest, and says what applies on cf
/// only, before anything is staged or started.
fn review_keys(exec: &Exec, release: &Release) -> Result<()> {
    let review = keys::review(release.manifest, release.app);
    if !review.refused.is_empty() {
        return Err(user_error(format!(
            "{} cannot run on the local platform:\n- {}",
            release.manifest.path.display(),
            review.refused.join("\n- ")
        )));
    }
    for note in review.notes {
        exec.ui().note(&note);
    }
    Ok(())
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

/// Why the route's metrics cannot be served on `metrics` (`metrics_port` of [env.NAME]), found
/// before a run changes anything: the route's own port, a port another environment's server
/// holds, a port in use by another program, or one this user may not bind.
fn metrics_problem(
    local: &Path,
    ours: &EnvPaths,
    name: &str,
    route: u16,
    metrics: u16,
) -> Option<String> {
    let fix = format!("set another `metrics_port` under [env.{name}] in cdflow.toml");
    if metrics == route {
        return Some(format!(
            "[env.{name}] metrics_port {metrics} is also the route's port: the metrics need a \
             port of their own; {fix}"
        ));
    }
    if let Some(why) = ports::privileged_problem(metrics, ports::try_bind) {
        return Some(format!("[env.{name}] metrics_port {metrics}: {why}; {fix}"));
    }
    if control::status(ours).is_some_and(|status| status.metrics_port == Some(metrics)) {
        return None;
    }
    let holder = EnvPaths::all(local)
        .into_iter()
        .filter(|p| !(p.app == ours.app && p.env == ours.env))
        .find_map(|p| {
            let status = control::status(&p)?;
            let what = if status.metrics_port == Some(metrics) {
                "metrics"
            } else if status.route_port == Some(metrics) {
                "route"
            } else {
                return None;
            };
            Some(format!("the {what} of `{}` of the app `{}`", p.env, p.app))
        });
    let in_use =
        ports::try_bind(metrics).is_err_and(|err| err.kind() == std::io::ErrorKind::AddrInUse);
    match holder {
        Some(holder) => Some(format!(
            "the metrics port of `{name}`, {metrics}, is already {holder} on this machine: {fix}"
        )),
        None if in_use => Some(format!(
            "the metrics port of `{name}`, {metrics} on 127.0.0.1, is in use by another \
             program: stop it, or {fix}"
        )),
        None => None,
    }
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

/// Every environment the local platform has a folder for, as (app, environment): what
/// `rollback --app` and `logs --app` may name.
pub fn environments(state: &State) -> Vec<(String, String)> {
    EnvPaths::all(&state.local())
        .into_iter()
        .map(|paths| (paths.app, paths.env))
        .collect()
}

/// One deploy per environment at a time; a second one waits, saying who it waits for.
fn deploy_lock(ui: &Ui, state: &State, paths: &EnvPaths, holder: &str) -> Result<lock::Lock> {
    lock::acquire(ui, &paths.deploy_lock(state), holder, Wait::Yes)
}

/// The route port a live server of `paths` holds: what it says, else (starting, or hung) what
/// its record says.
fn live_route_port(paths: &EnvPaths) -> Option<u16> {
    if let Some(status) = control::status(paths) {
        return status.route_port;
    }
    if !control::server_lock_held(paths) {
        return None;
    }
    let file = EnvFile::load(paths).ok()?;
    file.current().map(|current| current.spec.route_port)
}

/// The other environments on this machine (of any app, or of the old layout) whose running
/// server holds `port`. A stopped environment holds no port; `cdflow up` finds a clash then.
fn route_holders(local: &Path, ours: &EnvPaths, port: u16) -> Vec<(EnvPaths, bool)> {
    let current = EnvPaths::all(local)
        .into_iter()
        .filter(|p| !(p.app == ours.app && p.env == ours.env))
        .map(|p| (p, false));
    let old = legacy::find(local).into_iter().map(|p| (p, true));
    current
        .chain(old)
        .filter(|(p, _)| live_route_port(p) == Some(port))
        .collect()
}

/// The preflight problem of a route port that another environment's server holds, with a fix.
fn clash_problem(
    local: &Path,
    ours: &EnvPaths,
    env: &Target,
    port: u16,
    (other, old): &(EnvPaths, bool),
) -> String {
    let (app, name) = (&other.app, &other.env);
    let stop = format!("cdflow down --app {app} --env {name}");
    if *old && *app == ours.app && *name == ours.env {
        return format!(
            "`{name}` of `{app}` is still served from the layout of an older cdflow ({}): run \
             `{stop}` once (it moves the record where this cdflow keeps it), then deploy again",
            other.dir.display()
        );
    }
    let default = DEFAULT_PORTS
        .iter()
        .any(|(default, p)| *default == env.name && *p == port);
    let why = if default {
        format!(
            " (the port every app's `{}` gets unless its cdflow.toml says otherwise)",
            env.name
        )
    } else {
        String::new()
    };
    let suggestion = free_port_after(local, port)
        .map(|free| format!("`port = {free}` (free now)"))
        .unwrap_or_else(|| "`port = N`".into());
    format!(
        "the route of `{}`, port {port}{why}, is already the route of `{name}` of the app `{app}` \
         on this machine{}: give `{}` a port of its own with {suggestion} under [env.{}] in \
         cdflow.toml, or stop the other with `{stop}`",
        env.name,
        if *old {
            " (served from an older cdflow's layout)"
        } else {
            ""
        },
        env.name,
        env.name,
    )
}

/// A port after `port` that no environment on this machine records, that is not a default
/// (which every app's environment of that name gets), and that nothing holds now.
fn free_port_after(local: &Path, port: u16) -> Option<u16> {
    let recorded: Vec<u16> = EnvPaths::all(local)
        .iter()
        .filter_map(|p| Some(EnvFile::load(p).ok()?.current()?.spec.route_port))
        .collect();
    (port.saturating_add(1)..=port.saturating_add(200))
        .filter(|p| !DEFAULT_PORTS.iter().any(|(_, default)| default == p))
        .find(|p| *p >= 1024 && !recorded.contains(p) && ports::try_bind(*p).is_ok())
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
        canary: None,
    };
    let env = paths.env.clone();
    control::call(paths, &request, true, |text| {
        exec.ui().note(&format!("{env}: {text}"))
    })
    .with_context(|| format!("`{env}` did not switch to {}", deployment.version))?;
    Ok(deployment)
}

/// Says what a deploy of `version` to `env` would do, changing nothing: for a canary
/// environment, whether a canary would run, from what its server serves now, as the real run
/// will find it.
fn dry_run(
    exec: &Exec,
    state: &State,
    env: &Target,
    version: &str,
    port: u16,
    application: &Application,
) -> Result<Deployment> {
    let switch = format!(
        "would start {} instance(s) of {} {version} and switch http://127.0.0.1:{port} to them",
        application.instances(),
        application.name
    );
    let paths = EnvPaths::new(state, &application.name, env.name);
    match env.config.canary() {
        None => exec.ui().note(&switch),
        Some(plan) => match canary::outlook(&paths, version, port)? {
            canary::Outlook::NoCanary(why) => {
                exec.ui().note(&format!("{switch}, with no canary: {why}"))
            }
            canary::Outlook::Canary { stable } => {
                let steps: Vec<String> = canary::steps(&plan)
                    .iter()
                    .map(|weight| format!("{weight}%"))
                    .collect();
                exec.ui().note(&format!(
                    "would start {} instance(s) of {} {version} as a canary of \
                     http://127.0.0.1:{port}, give it {} of the requests, and at each step \
                     measure {} s of its requests against {stable}'s, with these probes:",
                    application.instances(),
                    application.name,
                    steps.join(", then "),
                    plan.window_secs
                ));
                crate::canary::probe(exec, &format!("http://127.0.0.1:{port}"), plan.window_secs)?;
            }
        },
    }
    Ok(Deployment {
        env: env.name.to_string(),
        platform: NAME.into(),
        version: version.to_string(),
        url: format!("http://127.0.0.1:{port}"),
        artifact: "(dry run)".into(),
    })
}

/// Keeps the environments that `app` and `env` (each, if given) name; an empty choice of a
/// named app or environment is an error that lists what there is.
fn chosen(
    local: &Path,
    all: Vec<EnvPaths>,
    app: Option<&str>,
    env: Option<&str>,
) -> Result<Vec<EnvPaths>> {
    if let Some(app) = app {
        check_app_name(app)?;
    }
    if let Some(env) = env {
        check_env_name(env)?;
    }
    let known: Vec<String> = all
        .iter()
        .map(|p| format!("`{}` {}", p.app, p.env))
        .collect();
    let picked: Vec<EnvPaths> = all
        .into_iter()
        .filter(|p| app.is_none_or(|a| a == p.app) && env.is_none_or(|e| e == p.env))
        .collect();
    if picked.is_empty() && (app.is_some() || env.is_some()) {
        let what = match (app, env) {
            (Some(app), Some(env)) => format!("environment `{env}` of the app `{app}`"),
            (Some(app), None) => format!("app `{app}`"),
            (None, Some(env)) => format!("environment `{env}` of any app"),
            (None, None) => unreachable!(),
        };
        let there = if known.is_empty() {
            "it has none".to_string()
        } else {
            format!("it has {}", known.join(", "))
        };
        return Err(user_error(format!(
            "the local platform of this state folder ({}) has no {what}: {there}",
            local.display()
        )));
    }
    Ok(picked)
}

/// `cdflow status`: per app, then per local environment, version, digest, route and instances.
pub fn status(state: &State, ui: &Ui) -> Result<()> {
    let local = state.local();
    legacy::migrate(&local, ui);
    // Each app: the line that heads it, its origin, its environments.
    let mut groups: Vec<(String, Option<String>, Vec<EnvPaths>)> = layout::apps(&local)
        .into_iter()
        .map(|app| {
            let envs = EnvPaths::of_app(&local, &app);
            let origin = match identity::load(&local, &app) {
                Ok(Some(known)) => Some(known.origin),
                _ => None,
            };
            let from = origin
                .as_ref()
                .map(|origin| format!(" (from {origin})"))
                .unwrap_or_default();
            (format!("app {app}{from}"), origin, envs)
        })
        .filter(|(_, _, envs)| !envs.is_empty())
        .collect();
    for old in legacy::find(&local) {
        groups.push((
            format!(
                "app {} (`{}` in the layout of an older cdflow: `cdflow down --app {} --env {}` \
                 stops it and moves it)",
                old.app, old.env, old.app, old.env
            ),
            None,
            vec![old],
        ));
    }
    if groups.is_empty() && !ui.is_json() {
        ui.note(&format!(
            "the local platform serves nothing (state in {})",
            state.root().display()
        ));
        return Ok(());
    }
    for (header, origin, envs) in groups {
        if !ui.is_json() {
            ui.note(&header);
        }
        for paths in envs {
            let report = env_report(&local, &paths, origin.as_deref());
            if ui.is_json() {
                ui.emit(Event::Environment(report));
            } else {
                show_env(ui, &report);
            }
        }
    }
    Ok(())
}

/// What `cdflow status` knows of one environment: what serves it, its instances, its services.
fn env_report(local: &Path, paths: &EnvPaths, origin: Option<&str>) -> EnvironmentStatus {
    let file = EnvFile::load(paths).unwrap_or_default();
    let mut report = EnvironmentStatus {
        app: paths.app.clone(),
        origin: origin.map(str::to_string),
        env: paths.env.clone(),
        platform: NAME.into(),
        state: EnvState::Empty,
        version: None,
        artifact: None,
        url: None,
        metrics: None,
        server_pid: None,
        instances: Vec::new(),
        running: None,
        desired: None,
        services: services::statuses(local, &paths.app, &paths.env),
        up_refused: None,
        orphans: None,
        canary: None,
    };
    let shown = |report: &mut EnvironmentStatus, spec: &RunSpec| {
        report.version = Some(spec.version.clone());
        report.artifact = Some(spec.artifact.clone());
        report.url = spec.route_url();
    };
    match control::status(paths) {
        Some(status) => {
            report.server_pid = Some(status.server_pid);
            report.metrics = status
                .metrics_port
                .map(|port| format!("http://127.0.0.1:{port}/metrics"));
            report.canary = status.canary.as_ref().map(|canary| CanaryShare {
                version: canary.version.clone(),
                weight: canary.weight,
            });
            match &status.serving {
                Some(spec) => {
                    report.state = EnvState::Serving;
                    shown(&mut report, spec);
                }
                None => report.state = EnvState::Deploying,
            }
            report.instances = status
                .instances
                .iter()
                .map(|instance| InstanceState {
                    index: instance.index,
                    version: instance.version.clone(),
                    pid: instance.pid,
                    port: instance.port,
                    phase: instance.phase.to_string(),
                    restarts: instance.restarts,
                    memory_bytes: instance.memory,
                    memory_limit_bytes: instance.memory_limit,
                    check: instance.check.clone(),
                })
                .collect();
        }
        None => {
            let orphans = pids::load(paths)
                .groups
                .iter()
                .filter(|p| p.alive())
                .count();
            if orphans > 0 {
                report.state = EnvState::Orphaned;
                report.orphans = Some(orphans as u32);
            } else if let Some(current) = file.current() {
                report.state = EnvState::Stopped;
                shown(&mut report, &current.spec);
                // `up` runs only an intact artifact: promise it only for one.
                if let Err(err) = artifacts::open(local, &current.spec.artifact) {
                    report.up_refused = Some(format!("{err:#}"));
                }
            }
        }
    }
    report
}

/// The lines of `cdflow status` on one environment: what serves it, a line per instance, and
/// one per service.
fn show_env(ui: &Ui, report: &EnvironmentStatus) {
    let env = &report.env;
    let version = report.version.as_deref().unwrap_or("-");
    let artifact = artifacts::short(report.artifact.as_deref().unwrap_or_default());
    let url = report.url.as_deref().unwrap_or("no route (no-route)");
    match report.state {
        EnvState::Serving => ui.note(&format!(
            "{env}: {} {version} ({artifact}) at {url} (server pid {}){}",
            report.app,
            report.server_pid.unwrap_or_default(),
            report
                .metrics
                .as_deref()
                .map(|url| format!("; metrics at {url}"))
                .unwrap_or_default()
        )),
        EnvState::Deploying => ui.note(&format!(
            "{env}: nothing serves yet (server pid {} is deploying or about to exit)",
            report.server_pid.unwrap_or_default()
        )),
        EnvState::Orphaned => ui.note(&format!(
            "{env}: its server died, leaving {} instance process(es) running: `cdflow down \
             --app {} --env {env}` stops them, `cdflow up` replaces them",
            report.orphans.unwrap_or_default(),
            report.app
        )),
        EnvState::Stopped => {
            let last = format!(
                "{env}: stopped; it last served {} {version} ({artifact}) at {url}",
                report.app
            );
            match &report.up_refused {
                None => ui.note(&format!("{last}: `cdflow up` brings it back")),
                Some(why) => ui.note(&format!("{last}; `cdflow up` cannot bring it back: {why}")),
            }
        }
        EnvState::Empty => ui.note(&format!("{env}: stopped; nothing was deployed there")),
    }
    if let Some(canary) = &report.canary {
        ui.note(&format!(
            "  canary {} takes {}% of the requests (docs/canary.md)",
            canary.version, canary.weight
        ));
    }
    for instance in &report.instances {
        let restarts = match instance.restarts {
            1 => "1 restart".to_string(),
            n => format!("{n} restarts"),
        };
        let pid = instance.pid.map_or("-".into(), |p| p.to_string());
        let port = instance.port.map_or("-".into(), |p| p.to_string());
        let old = match &report.version {
            Some(serving) if report.state == EnvState::Serving && *serving != instance.version => {
                format!(" ({})", instance.version)
            }
            _ => String::new(),
        };
        // As `cf app` shows it: what the processes hold, of the manifest's limit.
        let memory = match (instance.memory_bytes, instance.memory_limit_bytes) {
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
    for service in &report.services {
        ui.note(&services::status_line(service));
    }
}

/// `cdflow down [--app APP] [--env ENV]`: stops everything cdflow started (for every app, or
/// the one named) and frees the ports. What was deployed stays recorded, for `cdflow up`. A
/// server of the old layout is stopped too, and its record moved to the new one.
pub fn down(state: &State, ui: &Ui, app: Option<&str>, env: Option<&str>) -> Result<()> {
    let local = state.local();
    legacy::migrate(&local, ui);
    let old: Vec<EnvPaths> = legacy::find(&local);
    let mut all = EnvPaths::all(&local);
    all.extend(old.iter().cloned());
    let mut said = false;
    for paths in chosen(&local, all, app, env)? {
        if !paths.dir.exists() {
            continue;
        }
        let stopped = control::stop_server(&paths)?;
        if stopped > 0 {
            ui.note(&format!(
                "{} of {}: stopped ({stopped} process(es))",
                paths.env, paths.app
            ));
            said = true;
        }
        if old.iter().any(|o| o.dir == paths.dir) {
            legacy::move_one(&local, &paths, ui)?;
        }
    }
    if !said {
        ui.note("nothing was running");
    }
    Ok(())
}

/// `cdflow up [--app APP]`: brings back the last deployed version of every local environment
/// (of every app, or the one named) that is not running (after a reboot, or a `cdflow down`).
pub fn up(state: &State, ui: &Ui, app: Option<&str>) -> Result<()> {
    let local = state.local();
    legacy::migrate(&local, ui);
    let all = chosen(&local, EnvPaths::all(&local), app, None)?;
    let mut failures = Vec::new();
    let mut said = false;
    for paths in all {
        let file = EnvFile::load(&paths)?;
        let Some(current) = file.current().cloned() else {
            continue;
        };
        said = true;
        let name = format!("{} of {}", paths.env, paths.app);
        if control::status(&paths).is_some_and(|s| s.serving.is_some()) {
            ui.note(&format!(
                "{name}: already serves {} at {}",
                current.spec.version,
                current.spec.url()
            ));
            continue;
        }
        let result = (|| -> Result<()> {
            let _lock = deploy_lock(ui, state, &paths, &format!("up of {name}"))?;
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
                canary: None,
            };
            control::call(&paths, &request, true, |text| {
                ui.note(&format!("{name}: {text}"))
            })?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                current
                    .spec
                    .deployment()
                    .announce(ui, crate::events::DeployedBy::Up);
                ui.note(&format!(
                    "{name}: serves {} at {}",
                    current.spec.version,
                    current.spec.url()
                ))
            }
            Err(err) => {
                ui.note(&format!("{name}: could not be brought back: {err:#}"));
                failures.push(name);
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

/// `cdflow forget --app APP [--env ENV]`: removes the record and folder (logs included) of
/// stopped environments of an app, and the app's identity with its last environment, which
/// frees its name for another repository. The artifacts stay in the shared store: they are
/// content-addressed and another environment may run the same bytes.
pub fn forget(state: &State, ui: &Ui, app: &str, env: Option<&str>) -> Result<()> {
    // Before any path is made of them: `--app ..` must not name a folder outside.
    check_app_name(app)?;
    if let Some(env) = env {
        check_env_name(env)?;
    }
    let local = state.local();
    legacy::migrate(&local, ui);
    let still_old: Vec<EnvPaths> = legacy::find(&local)
        .into_iter()
        .filter(|p| p.app == app && env.is_none_or(|e| e == p.env))
        .collect();
    if let Some(old) = still_old.first() {
        return Err(user_error(format!(
            "`{}` of `{app}` is running (from the layout of an older cdflow): stop it first with \
             `cdflow down --app {app} --env {}`",
            old.env, old.env
        )));
    }
    let envs = EnvPaths::of_app(&local, app);
    let dir = layout::app_dir(&local, app);
    if envs.is_empty() && env.is_none() && dir.exists() {
        // A name recorded by a first deploy that never got as far as an environment.
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("could not remove {}", dir.display()))?;
        ui.note(&format!(
            "`{app}` has no environment on this machine: its name is free for any repository"
        ));
        return Ok(());
    }
    let envs = chosen(&local, envs, Some(app), env)?;
    let mut locks = Vec::new();
    for paths in &envs {
        let running =
            control::server_running(paths) || pids::load(paths).groups.iter().any(|p| p.alive());
        if running {
            return Err(user_error(format!(
                "`{}` of `{app}` is running: stop it first with `cdflow down --app {app} --env \
                 {}`; forget removes only what a stopped environment leaves",
                paths.env, paths.env
            )));
        }
        // Not while a deploy to it is under way.
        locks.push(lock::acquire(
            ui,
            &paths.deploy_lock(state),
            &format!("forget of {} of {app}", paths.env),
            Wait::No,
        )?);
    }
    for paths in &envs {
        std::fs::remove_dir_all(&paths.dir)
            .with_context(|| format!("could not remove {}", paths.dir.display()))?;
        ui.note(&format!(
            "{} of {app}: forgotten (its record and logs are removed; its artifacts stay in {})",
            paths.env,
            layout::artifacts_dir(&local).display()
        ));
    }
    if EnvPaths::of_app(&local, app).is_empty() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("could not remove {}", dir.display()))?;
        ui.note(&format!(
            "`{app}` has no environment left on this machine: its name is free for any repository"
        ));
    }
    Ok(())
}

/// The background process that serves one environment of an app (started by cdflow itself).
pub fn serve_env(state_root: &Path, app: &str, env: &str) -> Result<()> {
    server::run(state_root, app, env)
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
        let services = Default::default();
        let target = |name, config| Target {
            name,
            config,
            services: &services,
        };
        assert_eq!(route_port(&target("staging", &config)), 9000);
        assert_eq!(route_port(&target("staging", &none)), 8081);
        assert_eq!(route_port(&target("production", &none)), 8082);
        let qa = route_port(&target("qa", &none));
        assert!(HASHED_PORTS.contains(&qa));
        assert_eq!(qa, route_port(&target("qa", &none)), "stable");
    }
}
