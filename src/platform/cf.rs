//! Cloud Foundry, through the real `cf` CLI.
//!
//! Each environment gets a `CF_HOME` of its own under the state folder, so that the logins and
//! targets of staging and production never mix. Credentials come from `CF_USERNAME` and
//! `CF_PASSWORD` in the environment, which `cf auth` reads itself: they are never on a command
//! line. Promotion copies the droplet that staging runs (Cloud Controller v3, through
//! `cf curl`) and deploys it with a rolling deployment, as Heroku promotes a slug; an
//! environment with `strategy = "canary"` gets canary deployments that cdflow verifies itself
//! (`canary`). A Rust app for `binary_buildpack` is pushed as the binary cdflow builds for the
//! stack (`binary`).
//!
//! Every droplet cdflow deploys carries the version it released as v3 metadata (`cf curl -X
//! PATCH`; `cf set-label` reaches neither droplets nor revisions): the full version in an
//! annotation, and as a label too where the version fits one (label values take no `+` and
//! at most 63 characters), for `label_selector`. It goes on the droplet because a revision made
//! by `cf rollback` reuses the droplet but copies no metadata. So the foundation itself says
//! which version each revision runs, which `status` and `rollback --version` read before cdflow's
//! own records (a CI runner's state folder may be new).

mod binary;
mod canary;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use xshell::cmd;

use super::{Deployment, Platform, Release, Target};
use crate::app_manifest::Resolved;
use crate::error::user_error;
use crate::events::{EnvState, EnvironmentStatus};
use crate::exec::{Exec, Output};
use crate::state::State;

pub const NAME: &str = "cf";

/// The metadata key of the version cdflow released, on the droplets it deploys.
const VERSION_KEY: &str = "cdflow/version";
/// The version of a droplet that neither its annotation nor cdflow's records name.
const UNKNOWN: &str = "unknown";

/// How many times a droplet copy or a deployment is polled, and how long between polls.
const POLLS: u32 = 600;
const POLL_EVERY: Duration = Duration::from_secs(1);

pub struct Cf {
    state: State,
}

/// The settings a cf environment needs, as problems for the preflight.
pub fn check_settings(env: &Target) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value) in [
        ("api", &env.config.api),
        ("org", &env.config.org),
        ("space", &env.config.space),
    ] {
        if value.is_none() {
            problems.push(format!(
                "[env.{}] is on cf but has no `{key}`: add it to cdflow.toml",
                env.name
            ));
        }
    }
    if env.config.port.is_some() {
        problems.push(format!(
            "[env.{}] is on cf, where `port` means nothing: remove it (cf gives the route)",
            env.name
        ));
    }
    problems
}

/// The credentials `cf auth` reads from the environment, as problems for the preflight.
fn check_credentials(env: &Target) -> Vec<String> {
    if Credentials::from_env().is_some() {
        return Vec::new();
    }
    vec![format!(
        "no credentials for [env.{}]: set CF_USERNAME and CF_PASSWORD (a user), or \
         CF_CLIENT_ID and CF_CLIENT_SECRET (a client, as CI systems use); `cf auth` reads them \
         from the environment",
        env.name
    )]
}

/// The oldest cf CLI cdflow drives: v7 brought `--strategy rolling` and v3 manifests.
const OLDEST_CLI: u64 = 7;

/// A cf CLI too old for what cdflow runs, as a problem for the preflight. Asked once per
/// process: every cf environment of a run uses the same CLI.
fn check_cli_version(exec: &Exec) -> Option<String> {
    let version = cli_version_text(exec)?;
    let (major, _) = numbers(&version)?;
    (major < OLDEST_CLI).then(|| {
        format!(
            "the cf CLI is {version}: cdflow needs v{OLDEST_CLI} or later (rolling \
             deployments, v3 manifests); install the cf CLI v8"
        )
    })
}

/// A problem when the cf CLI is older than `least` (major, minor), which `what` needs.
fn check_cli_version_at_least(exec: &Exec, least: (u64, u64), what: &str) -> Option<String> {
    let version = cli_version_text(exec)?;
    (numbers(&version)? < least).then(|| {
        format!(
            "{what} needs the cf CLI {}.{} or later, and this one is {version}: install a \
             newer cf CLI v8",
            least.0, least.1
        )
    })
}

/// The cf CLI's major and minor version; `None` when it cannot be told.
fn cli_version(exec: &Exec) -> Option<(u64, u64)> {
    numbers(&cli_version_text(exec)?)
}

/// What `cf version` says the version is (`8.7.10+5b7ce3c.2024-04-04`), asked once per
/// process: every cf environment of a run uses the same CLI.
fn cli_version_text(exec: &Exec) -> Option<String> {
    static VERSION: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    VERSION
        .get_or_init(|| {
            let answer = exec.query(cmd!(exec.sh(), "cf version")).ok()?;
            Some(answer.split_whitespace().nth(2)?.to_string())
        })
        .clone()
}

/// The major and minor numbers of a cf CLI version.
fn numbers(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.split(['.', '+', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// How `cf auth` logs in, from the environment: never on a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credentials {
    /// CF_USERNAME and CF_PASSWORD, which `cf auth` reads itself.
    User,
    /// CF_CLIENT_ID and CF_CLIENT_SECRET, handed to `cf auth --client-credentials` as the
    /// CF_USERNAME and CF_PASSWORD of that one command.
    Client,
}

impl Credentials {
    fn from_env() -> Option<Credentials> {
        let set = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty());
        if set("CF_CLIENT_ID") && set("CF_CLIENT_SECRET") {
            Some(Credentials::Client)
        } else if set("CF_USERNAME") && set("CF_PASSWORD") {
            Some(Credentials::User)
        } else {
            None
        }
    }
}

/// The text of a request body for `cf curl -d`, its objects' keys in sorted order at every
/// depth: the same text whether serde_json keeps insertion order (a feature another crate of
/// the build may turn on) or sorts, so that the printed command is stable.
fn request_body(value: Value) -> String {
    fn sorted(value: Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(String, Value)> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
            other => other,
        }
    }
    sorted(value).to_string()
}

/// Whether a cf command failed because its token expired: what cf prints when it cannot
/// refresh it.
fn token_expired(err: &anyhow::Error) -> bool {
    let text = format!("{err:#}");
    text.contains("Please log back in to re-authenticate") || text.contains("token expired")
}

/// The environments this process has logged in to: one login per environment and run, not
/// one per stage. Each environment has its own CF_HOME, where cf keeps (and refreshes) its
/// token.
static LOGGED_IN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl Cf {
    pub fn new(state: &State) -> Cf {
        Cf {
            state: state.clone(),
        }
    }

    fn home(&self, env: &Target) -> PathBuf {
        self.state.root().join("cf").join(env.name)
    }

    /// Runs a cf command in the environment's own CF_HOME, which holds cf's OAuth tokens and
    /// so is its owner's alone (0700). A token that expired in a long run (cf refreshes a
    /// user's token itself, but keeps no client secret to refresh a client's with) gets a new
    /// login and the command one more try: cf refused it before doing anything.
    fn cf(&self, exec: &Exec, env: &Target, args: &[String]) -> Result<Output> {
        match self.cf_once(exec, env, args) {
            Err(err) if token_expired(&err) && self.forget_login(env) => {
                exec.ui().note(&format!(
                    "cf's token for `{}` expired: logging in again",
                    env.name
                ));
                self.login(exec, env)?;
                self.cf_once(exec, env, args)
            }
            other => other,
        }
    }

    fn cf_once(&self, exec: &Exec, env: &Target, args: &[String]) -> Result<Output> {
        let home = self.home(env);
        exec.create_private_dir_all(&home)?;
        let home = home.display().to_string();
        exec.run_with_env(cmd!(exec.sh(), "cf {args...}"), &[("CF_HOME", &home)])
    }

    /// Forgets that this process logged in to `env`; whether it had.
    fn forget_login(&self, env: &Target) -> bool {
        let home = self.home(env).display().to_string();
        let mut logged_in = LOGGED_IN.lock().unwrap_or_else(|e| e.into_inner());
        let before = logged_in.len();
        logged_in.retain(|known| *known != home);
        logged_in.len() != before
    }

    /// `cf api`, `cf auth`, `cf target`: logged in and pointed at the environment's space.
    fn login(&self, exec: &Exec, env: &Target) -> Result<()> {
        let setting = |value: &Option<String>, key: &str| {
            value
                .clone()
                .with_context(|| format!("[env.{}] has no `{key}`", env.name))
        };
        let api = setting(&env.config.api, "api")?;
        let org = setting(&env.config.org, "org")?;
        let space = setting(&env.config.space, "space")?;
        let home = self.home(env).display().to_string();
        let mut logged_in = LOGGED_IN.lock().unwrap_or_else(|e| e.into_inner());
        if logged_in.contains(&home) {
            return Ok(());
        }
        self.cf_once(exec, env, &args(&["api", &api]))?;
        match Credentials::from_env() {
            Some(Credentials::Client) => {
                let id = std::env::var("CF_CLIENT_ID").unwrap_or_default();
                let secret = std::env::var("CF_CLIENT_SECRET").unwrap_or_default();
                exec.run_with_env(
                    cmd!(exec.sh(), "cf auth --client-credentials"),
                    &[
                        ("CF_HOME", &home),
                        ("CF_USERNAME", &id),
                        ("CF_PASSWORD", &secret),
                    ],
                )?;
            }
            Some(Credentials::User) | None => {
                self.cf_once(exec, env, &args(&["auth"]))?;
            }
        }
        self.cf_once(exec, env, &args(&["target", "-o", &org, "-s", &space]))?;
        logged_in.push(home);
        Ok(())
    }

    fn app_guid(&self, exec: &Exec, env: &Target, app: &str) -> Result<String> {
        let output = self.cf(exec, env, &args(&["app", app, "--guid"]))?;
        let guid = output.stdout.last().cloned().unwrap_or_default();
        Ok(exec.answer(guid.trim(), "APP-GUID"))
    }

    /// `cf curl` with the JSON answer parsed; a CC error answer is an error.
    fn curl(&self, exec: &Exec, env: &Target, words: &[&str]) -> Result<Value> {
        let mut all = vec!["curl"];
        all.extend_from_slice(words);
        let output = self.cf(exec, env, &args(&all))?;
        if !output.ran {
            return Ok(Value::Null);
        }
        let text = output.stdout.join("\n");
        let json = text.find('{').map(|at| &text[at..]).unwrap_or("null");
        let value: Value = serde_json::from_str(json).with_context(|| {
            format!("`cf curl {}` did not answer JSON: {text}", words.join(" "))
        })?;
        if let Some(errors) = value.get("errors") {
            bail!("`cf curl {}` failed: {errors}", words.join(" "));
        }
        Ok(value)
    }

    /// The droplet the app runs now.
    fn current_droplet(&self, exec: &Exec, env: &Target, guid: &str) -> Result<String> {
        Ok(self.current_droplet_marked(exec, env, guid)?.0)
    }

    /// The droplet the app runs now, and the version its annotation says, if cdflow marked it.
    fn current_droplet_marked(
        &self,
        exec: &Exec,
        env: &Target,
        guid: &str,
    ) -> Result<(String, Option<String>)> {
        let path = format!("/v3/apps/{guid}/droplets/current");
        let droplet = self.curl(exec, env, &[&path])?;
        Ok((
            exec.answer(&text_at(&droplet, &["guid"]), "DROPLET-GUID"),
            marked_version(&droplet),
        ))
    }

    /// Marks `droplet` with the version it delivers (see the module's comment). A droplet that
    /// could not be marked still runs: the run goes on, with a warning, and what it deployed is
    /// found through cdflow's records instead.
    fn mark(&self, exec: &Exec, env: &Target, droplet: &str, version: &str) {
        let labels = match label_value(version) {
            Some(label) => json!({ VERSION_KEY: label }),
            None => json!({}),
        };
        let body = request_body(json!({
            "metadata": { "annotations": { VERSION_KEY: version }, "labels": labels }
        }));
        let path = format!("/v3/droplets/{droplet}");
        if let Err(err) = self.curl(exec, env, &["-X", "PATCH", &path, "-d", &body]) {
            exec.ui().warn(&format!(
                "warning: the droplet {droplet} in `{}` could not be marked with version \
                 {version} ({err:#}); `rollback --version {version}` will rely on cdflow's records",
                env.name
            ));
        }
    }

    /// The newest deployable revision whose droplet cdflow marked with `version`, as (revision
    /// number, droplet); `None` when no droplet of the app says it (or in a dry run).
    fn revision_marked(
        &self,
        exec: &Exec,
        env: &Target,
        guid: &str,
        version: &str,
    ) -> Result<Option<(u64, String)>> {
        let path = format!("/v3/apps/{guid}/droplets?per_page=5000");
        let droplets = self.curl(exec, env, &[&path])?;
        let marked: Vec<String> = resources(&droplets)
            .filter(|droplet| marked_version(droplet).as_deref() == Some(version))
            .map(|droplet| text_at(droplet, &["guid"]))
            .collect();
        if marked.is_empty() {
            return Ok(None);
        }
        let path = format!("/v3/apps/{guid}/revisions?per_page=5000");
        let revisions = self.curl(exec, env, &[&path])?;
        Ok(resources(&revisions)
            .filter(|revision| revision.get("deployable") != Some(&Value::Bool(false)))
            .filter_map(|revision| {
                let droplet = text_at(revision, &["droplet", "guid"]);
                marked
                    .contains(&droplet)
                    .then(|| Some((revision.get("version")?.as_u64()?, droplet)))?
            })
            .max_by_key(|(number, _)| *number))
    }

    /// Checks that at least one instance of the app's web process runs, and returns its first
    /// route: both from the Cloud Controller's v3 API as JSON, not from the text `cf app`
    /// prints for people.
    fn check_running(&self, exec: &Exec, env: &Target, app: &str, guid: &str) -> Result<String> {
        let stats = self.instance_states(exec, env, guid)?;
        let route = self.first_route(exec, env, guid)?;
        let Some(states) = stats else {
            // A dry run: nothing answered.
            return Ok(String::new());
        };
        if !states.iter().any(|s| s == "RUNNING") {
            bail!(
                "no instance of {app} runs in `{}`: the web process's instances are {}",
                env.name,
                match states.is_empty() {
                    true => "none".to_string(),
                    false => states.join(", "),
                }
            );
        }
        Ok(route)
    }

    /// The states of the web process's instances (`RUNNING`, `CRASHED`, ...), from the Cloud
    /// Controller's stats; `None` in a dry run, where nothing answers.
    fn instance_states(
        &self,
        exec: &Exec,
        env: &Target,
        guid: &str,
    ) -> Result<Option<Vec<String>>> {
        let path = format!("/v3/apps/{guid}/processes/web/stats");
        let stats = self.curl(exec, env, &[&path])?;
        if stats.is_null() {
            return Ok(None);
        }
        let instances = stats.get("resources").and_then(Value::as_array);
        Ok(Some(
            instances
                .into_iter()
                .flatten()
                .map(|instance| text_at(instance, &["state"]))
                .collect(),
        ))
    }

    /// One line on what serves `env`, for `cdflow status`: the version cdflow deployed with the
    /// droplet that runs, the route, and how many instances run.
    /// What `cdflow status` shows of a cf environment, from the v3 API.
    pub fn status(&self, exec: &Exec, app: &str, env: &Target) -> Result<EnvironmentStatus> {
        self.login(exec, env)?;
        let guid = self.app_guid(exec, env, app)?;
        let serving = self.deployment_of(exec, app, env, &guid)?;
        let states = self.instance_states(exec, env, &guid)?.unwrap_or_default();
        let running = states.iter().filter(|s| *s == "RUNNING").count();
        Ok(EnvironmentStatus {
            app: app.to_string(),
            origin: None,
            env: env.name.to_string(),
            platform: NAME.into(),
            state: if running > 0 {
                EnvState::Serving
            } else {
                EnvState::Stopped
            },
            version: Some(serving.version),
            artifact: Some(serving.artifact),
            url: Some(serving.url).filter(|url| !url.is_empty()),
            metrics: None,
            server_pid: None,
            instances: Vec::new(),
            running: Some(running as u32),
            desired: Some(states.len() as u32),
            services: Vec::new(),
            up_refused: None,
            orphans: None,
            canary: None,
        })
    }

    /// The line of `cdflow status` on a cf environment.
    pub fn status_line(report: &EnvironmentStatus) -> String {
        let url = report
            .url
            .as_deref()
            .map(|url| format!(" at {url}"))
            .unwrap_or_default();
        format!(
            "{}: {} {} ({}){url} on cf, {} of {} instance(s) running",
            report.env,
            report.app,
            report.version.as_deref().unwrap_or("unknown"),
            report.artifact.as_deref().unwrap_or("-"),
            report.running.unwrap_or_default(),
            report.desired.unwrap_or_default()
        )
    }

    /// What the app of `guid` runs in `env`: its droplet, and the version cdflow deployed with
    /// it, if cdflow did.
    fn deployment_of(
        &self,
        exec: &Exec,
        app: &str,
        env: &Target,
        guid: &str,
    ) -> Result<Deployment> {
        let (droplet, marked) = self.current_droplet_marked(exec, env, guid)?;
        // The droplet's own annotation first: cdflow's records may be on another machine.
        let known = match marked {
            Some(version) => Some(version),
            None => crate::releases::find(&self.state, app, env.name, &droplet)?
                .map(|release| release.deployment.version),
        };
        // The route only when cdflow.toml gives no `url`, which wins.
        let route = match env.config.url {
            Some(_) => String::new(),
            None => self.first_route(exec, env, guid)?,
        };
        Ok(Deployment {
            env: env.name.to_string(),
            platform: NAME.into(),
            version: known.unwrap_or_else(|| UNKNOWN.into()),
            url: self.url(exec, env, app, &route),
            artifact: droplet,
        })
    }

    /// Where `env` answers: its `url` setting, else the app's first route. A dry run, where
    /// cf answers nothing, shows a placeholder that names the route it stands for, so that the
    /// plan (the e2e command's `APP_URL`) reads as a real run's would; a real run with neither
    /// has no URL, which the e2e stage refuses, naming the setting.
    fn url(&self, exec: &Exec, env: &Target, app: &str, route: &str) -> String {
        match &env.config.url {
            Some(url) => url.clone(),
            None if !route.is_empty() => format!("https://{route}"),
            None if exec.is_dry_run() => {
                let space = env.config.space.as_deref().unwrap_or(env.name);
                format!("https://<route of {app} in {space}>")
            }
            None => String::new(),
        }
    }

    /// The app's first route, from the v3 API (empty when it has none, or in a dry run).
    fn first_route(&self, exec: &Exec, env: &Target, guid: &str) -> Result<String> {
        let routes = self.curl(exec, env, &[&format!("/v3/apps/{guid}/routes")])?;
        Ok(routes
            .get("resources")
            .and_then(Value::as_array)
            .and_then(|all| all.first())
            .map(|route| text_at(route, &["url"]))
            .unwrap_or_default())
    }

    /// The revision that serves now, to roll back to if a deployment fails.
    fn deployed_revision(&self, exec: &Exec, env: &Target, guid: &str) -> Result<Option<u64>> {
        let path = format!("/v3/apps/{guid}/revisions/deployed");
        let revisions = self.curl(exec, env, &[&path])?;
        Ok(revisions
            .get("resources")
            .and_then(Value::as_array)
            .and_then(|all| all.iter().filter_map(|r| r.get("version")?.as_u64()).max()))
    }

    /// The revision that deployed `release`: the newest of the app's revisions that runs its
    /// droplet (cf's `--version` is a revision number, not a release's version).
    fn revision_of(
        &self,
        exec: &Exec,
        env: &Target,
        app: &str,
        guid: &str,
        release: &Deployment,
    ) -> Result<String> {
        // The Cloud Controller's largest page: an app keeps 100 revisions unless told otherwise.
        let path = format!("/v3/apps/{guid}/revisions?per_page=5000");
        let revisions = self.curl(exec, env, &[&path])?;
        if revisions.is_null() {
            return Ok(exec.answer("", "REVISION"));
        }
        let found = revisions
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|revision| text_at(revision, &["droplet", "guid"]) == release.artifact)
            .filter_map(|revision| Some((revision.get("version")?.as_u64()?, revision)))
            .max_by_key(|(number, _)| *number);
        let Some((number, revision)) = found else {
            return Err(user_error(format!(
                "no revision of `{app}` in `{}` runs the droplet {} that deployed {}: cf keeps \
                 only an app's latest revisions (`cf revisions {app}` lists them)",
                env.name, release.artifact, release.version
            )));
        };
        if revision.get("deployable") == Some(&Value::Bool(false)) {
            return Err(user_error(format!(
                "revision {number} of `{app}` in `{}` ({}) can no longer be deployed: its \
                 droplet {} is gone",
                env.name, release.version, release.artifact
            )));
        }
        Ok(number.to_string())
    }

    fn wait_for(
        &self,
        exec: &Exec,
        env: &Target,
        path: &str,
        done: impl Fn(&Value) -> Result<bool>,
    ) -> Result<()> {
        for _ in 0..POLLS {
            let answer = self.curl(exec, env, &[path])?;
            // Nothing answers in a dry run: one poll shows the command.
            if answer.is_null() || done(&answer)? {
                return Ok(());
            }
            if crate::signals::stop_requested() {
                return Err(anyhow::Error::new(crate::error::Interrupted));
            }
            std::thread::sleep(POLL_EVERY);
        }
        bail!("`cf curl {path}` did not finish in time")
    }

    /// Copies the droplet into the target app and starts a rolling deployment of it; returns
    /// the copy's guid and the deployment's. Until the deployment's POST answers a guid, the
    /// app is as it was.
    fn start_deployment(
        &self,
        exec: &Exec,
        env: &Target,
        app_guid: &str,
        droplet: &str,
        version: &str,
        canary_steps: Option<&[u32]>,
    ) -> Result<(String, String)> {
        let app = json!({ "app": { "data": { "guid": app_guid } } });
        let relationship = request_body(json!({ "relationships": app }));
        let copy_path = format!("/v3/droplets?source_guid={droplet}");
        let copy = self.curl(exec, env, &["-X", "POST", &copy_path, "-d", &relationship])?;
        let copied = exec.answer(&text_at(&copy, &["guid"]), "COPIED-DROPLET-GUID");
        self.wait_for(
            exec,
            env,
            &format!("/v3/droplets/{copied}"),
            |droplet| match text_at(droplet, &["state"]).as_str() {
                "STAGED" => Ok(true),
                "FAILED" | "EXPIRED" => bail!("the droplet copy failed: {droplet}"),
                _ => Ok(false),
            },
        )?;
        // A copy has no metadata of its own: marked before it is deployed, so that the
        // revision the deployment makes runs a marked droplet (unless nothing says which
        // version it is: a forced promote of a droplet cdflow did not deploy).
        if version != UNKNOWN {
            self.mark(exec, env, &copied, version);
        }
        let mut body = json!({
            "droplet": { "guid": copied },
            "relationships": app,
            "strategy": "rolling",
        });
        if let Some(steps) = canary_steps {
            body["strategy"] = Value::from("canary");
            if let Some(options) = canary::deployment_options(steps) {
                body["options"] = options;
            }
        }
        let body = request_body(body);
        let deployment = self.curl(exec, env, &["-X", "POST", "/v3/deployments", "-d", &body])?;
        let id = exec.answer(&text_at(&deployment, &["guid"]), "DEPLOYMENT-GUID");
        if id.is_empty() {
            bail!("`cf curl -X POST /v3/deployments` answered no deployment guid: {deployment}");
        }
        Ok((copied, id))
    }

    /// Waits until the deployment `id` has replaced every instance.
    fn finish_deployment(&self, exec: &Exec, env: &Target, id: &str) -> Result<()> {
        self.wait_for(exec, env, &format!("/v3/deployments/{id}"), |deployment| {
            let value = text_at(deployment, &["status", "value"]);
            let reason = text_at(deployment, &["status", "reason"]);
            match (value.as_str(), reason.as_str()) {
                ("FINALIZED", "DEPLOYED") => Ok(true),
                ("FINALIZED", _) => bail!("the deployment ended as {reason}"),
                _ => Ok(false),
            }
        })
    }

    fn manifest_args(release: &Release, env: &Target) -> Vec<String> {
        let mut words = vec![
            "-f".to_string(),
            release.manifest.path.display().to_string(),
        ];
        for file in &env.config.vars_files {
            words.push("--vars-file".into());
            words.push(release.dir.join(file).display().to_string());
        }
        for (key, value) in &env.config.vars {
            words.push("--var".into());
            words.push(format!("{key}={value}"));
        }
        words
    }
}

impl Platform for Cf {
    fn preflight(
        &self,
        exec: &Exec,
        app: &str,
        _origin: &str,
        env: &Target,
        manifest: &Resolved,
    ) -> Vec<String> {
        let mut problems = check_settings(env);
        // A dry run logs in nowhere, so it needs no credentials.
        let credentials = exec.for_real(|| Ok(check_credentials(env)));
        problems.extend(credentials.ok().flatten().unwrap_or_default());
        match crate::tools::missing("cf", &exec.dir()) {
            Some(why) => problems.push(format!("[env.{}] is on cf, but {why}", env.name)),
            None => problems.extend(check_cli_version(exec)),
        }
        if let Some(plan) = env.config.canary() {
            problems.extend(canary::preflight(exec, env, &plan));
        }
        for application in &manifest.applications {
            problems.extend(application.problems());
        }
        let dir = manifest.path.parent().unwrap_or(std::path::Path::new("."));
        let rust_app = manifest.applications.iter().find(|a| a.name == app);
        if let Some(warning) =
            rust_app.and_then(|a| binary::preflight_warning(exec, a, manifest, dir))
        {
            exec.ui().warn(&warning);
        }
        problems
    }

    fn push(&self, exec: &Exec, release: &Release, env: &Target) -> Result<Deployment> {
        // Built before logging in: a build that fails needs no login.
        let application = release
            .manifest
            .applications
            .iter()
            .find(|application| application.name == release.app);
        let folder = match application {
            Some(application) if binary::is_rust_binary(application, release.dir) => Some(
                binary::stage(exec, &self.state, release, application, env.name)?,
            ),
            _ => None,
        };
        self.login(exec, env)?;
        let mut words = args(&["push", release.app]);
        words.extend(Self::manifest_args(release, env));
        if let Some(folder) = folder {
            words.extend(["-p".to_string(), folder.display().to_string()]);
        }
        match env.config.canary() {
            Some(plan) => self.push_canary(exec, release, env, words, &plan)?,
            None => {
                words.extend(args(&["--strategy", "rolling"]));
                self.cf(exec, env, &words)?;
            }
        }
        let guid = self.app_guid(exec, env, release.app)?;
        let route = self.check_running(exec, env, release.app, &guid)?;
        let droplet = self.current_droplet(exec, env, &guid)?;
        self.mark(exec, env, &droplet, release.version);
        Ok(Deployment {
            env: env.name.to_string(),
            platform: NAME.into(),
            version: release.version.to_string(),
            url: self.url(exec, env, release.app, &route),
            artifact: droplet,
        })
    }

    fn promote(
        &self,
        exec: &Exec,
        release: &Release,
        from: &Target,
        to: &Target,
        verified: &Deployment,
    ) -> Result<Deployment> {
        // The droplet that serves the source must still be the one that was verified.
        self.login(exec, from)?;
        let source_guid = self.app_guid(exec, from, release.app)?;
        let droplet = self.current_droplet(exec, from, &source_guid)?;
        if droplet != exec.answer(&verified.artifact, &droplet) {
            bail!(
                "`{}` now runs the droplet {droplet}, not {} that passed e2e: run the e2e \
                 tests again before promoting",
                from.name,
                verified.artifact
            );
        }
        self.login(exec, to)?;
        // The verified release's manifest, stored as the app's configuration. The Cloud
        // Controller restarts nothing for it: command, env, memory and disk take effect in the
        // instances that the rolling deployment below starts (the CLI's `cf scale -m` restarts
        // by itself; the API does not), and an instance count scales the running droplet.
        let mut words = vec!["apply-manifest".to_string()];
        words.extend(Self::manifest_args(release, to));
        self.cf(exec, to, &words)?;
        let target_guid = self.app_guid(exec, to, release.app)?;
        let previous = self.deployed_revision(exec, to, &target_guid)?;
        let plan = to.config.canary();
        let canary = match &plan {
            Some(plan) => Some(self.before_canary(exec, to, release.app, plan)?),
            None => None,
        };
        let steps = canary.as_ref().map(|before| before.steps.as_slice());
        let started =
            self.start_deployment(exec, to, &target_guid, &droplet, &verified.version, steps);
        let (copied, deployment) = match started {
            Ok(started) => started,
            // Stopped while cf ran: whether the deployment was created is not known.
            Err(err) if crate::error::is_interrupted(&err) => return Err(err),
            // The CC refused, or answered no deployment: no instance was replaced, so nothing
            // is rolled back (a rollback would restart what serves for nothing).
            Err(err) => {
                return Err(err.context(format!(
                    "no deployment was created in `{}`, so nothing was rolled back: the \
                     droplet that served there still serves (the manifest applied before is \
                     stored for its next deployment)",
                    to.name
                )))
            }
        };
        if let (Some(plan), Some(before)) = (&plan, canary) {
            // A canary that fails its verification is cancelled, which gives the route back to
            // the stable instances: nothing to roll back.
            let (url, stable) = (before.url, before.stable);
            self.run_canary(exec, release, to, &deployment, &url, plan, stable)?;
        }
        let deployed = self
            .finish_deployment(exec, to, &deployment)
            .and_then(|()| self.check_running(exec, to, release.app, &target_guid));
        match deployed {
            Ok(route) => Ok(Deployment {
                env: to.name.to_string(),
                platform: NAME.into(),
                version: verified.version.clone(),
                url: self.url(exec, to, release.app, &route),
                artifact: copied,
            }),
            Err(err) => {
                let Some(revision) = previous else {
                    return Err(err.context(format!(
                        "the deployment to `{}` failed, and there was no earlier revision to \
                         roll back to",
                        to.name
                    )));
                };
                let revision = revision.to_string();
                self.cf(
                    exec,
                    to,
                    &args(&["rollback", release.app, "--version", &revision, "-f"]),
                )
                .context("rolling back after a failed deployment also failed")?;
                self.check_running(exec, to, release.app, &target_guid)
                    .context("the rollback ran, but the app does not run")?;
                Err(err.context(format!(
                    "the deployment to `{}` failed; it was rolled back to revision {revision}, \
                     which serves again",
                    to.name
                )))
            }
        }
    }

    fn rollback(
        &self,
        exec: &Exec,
        app: &str,
        env: &Target,
        version: Option<&str>,
    ) -> Result<Deployment> {
        self.login(exec, env)?;
        let guid = self.app_guid(exec, env, app)?;
        let serving = self.current_droplet(exec, env, &guid)?;
        // A version asked for is looked for on the foundation first, in the droplets' own
        // annotations; else in cdflow's records, as is the release before the one serving.
        let marked = match version {
            Some(version) => self.revision_marked(exec, env, &guid, version)?,
            None => None,
        };
        let (revision, target, how) = match (marked, version) {
            (Some((_, droplet)), Some(version)) if droplet == serving => {
                return Err(user_error(format!(
                    "`{}` already serves {version} ({serving}): there is nothing to roll back",
                    env.name
                )))
            }
            (Some((number, droplet)), Some(version)) => (
                number.to_string(),
                Deployment {
                    env: env.name.to_string(),
                    platform: NAME.into(),
                    version: version.to_string(),
                    url: String::new(),
                    artifact: droplet,
                },
                "its droplet's annotation",
            ),
            _ => {
                let history = crate::releases::history(&self.state, app, env.name)?;
                let target =
                    crate::releases::rollback_target(&history, env.name, &serving, version)?;
                let revision = self.revision_of(exec, env, app, &guid, &target.deployment)?;
                (revision, target.deployment, "cdflow's records")
            }
        };
        exec.ui().note(&format!(
            "rolling `{}` back to {} (found by {how}): revision {revision}, droplet {}",
            env.name, target.version, target.artifact
        ));
        self.cf(
            exec,
            env,
            &args(&["rollback", app, "--version", &revision, "-f"]),
        )?;
        let route = self.check_running(exec, env, app, &guid)?;
        let droplet = self.current_droplet(exec, env, &guid)?;
        let wanted = exec.answer(&target.artifact, &droplet);
        if droplet != wanted {
            bail!(
                "`cf rollback {app} --version {revision}` ran, but `{}` runs the droplet \
                 {droplet}, not {wanted} of {}",
                env.name,
                target.version
            );
        }
        Ok(Deployment {
            env: env.name.to_string(),
            platform: NAME.into(),
            version: target.version,
            url: self.url(exec, env, app, &route),
            artifact: droplet,
        })
    }

    fn serving(&self, exec: &Exec, app: &str, env: &Target) -> Result<Option<Deployment>> {
        self.login(exec, env)?;
        let guid = self.app_guid(exec, env, app)?;
        self.deployment_of(exec, app, env, &guid).map(Some)
    }

    fn logs(&self, exec: &Exec, app: &str, env: &Target, follow: bool) -> Result<()> {
        self.login(exec, env)?;
        let mut words = args(&["logs", app]);
        if !follow {
            words.push("--recent".into());
        }
        let home = self.home(env).display().to_string();
        exec.run_live(cmd!(exec.sh(), "cf {words...}"), &[("CF_HOME", &home)])?;
        Ok(())
    }
}

/// The version an object's `cdflow/version` annotation holds.
fn marked_version(object: &Value) -> Option<String> {
    let version = text_at(object, &["metadata", "annotations", VERSION_KEY]);
    (!version.is_empty()).then_some(version)
}

/// `version` as a label value, which takes letters, digits, `-`, `_` and `.`, starts and ends
/// with a letter or digit, and is at most 63 characters: `+` (semver's build metadata) becomes
/// `_`. `None` when the version does not fit (it is in the annotation anyway).
fn label_value(version: &str) -> Option<String> {
    let value: String = version.replace('+', "_");
    let fits = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    fits.then_some(value)
}

/// The `resources` of a v3 list.
fn resources(list: &Value) -> impl Iterator<Item = &Value> {
    list.get("resources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn text_at(value: &Value, keys: &[&str]) -> String {
    keys.iter()
        .try_fold(value, |value, key| value.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_have_their_keys_sorted_at_every_depth() {
        let mut body = json!({ "strategy": "canary", "droplet": { "guid": "d" } });
        body["options"] = json!({ "canary": { "steps": [{ "z": 1, "a": 2 }] } });
        assert_eq!(
            request_body(body),
            r#"{"droplet":{"guid":"d"},"options":{"canary":{"steps":[{"a":2,"z":1}]}},"strategy":"canary"}"#
        );
    }

    #[test]
    fn a_version_is_a_label_where_it_fits_one() {
        assert_eq!(label_value("1.2.3").as_deref(), Some("1.2.3"));
        assert_eq!(label_value("1.0.0-rc.1").as_deref(), Some("1.0.0-rc.1"));
        // Labels take no `+`: build metadata keeps its meaning with `_`.
        assert_eq!(
            label_value("1.2.3+build.5").as_deref(),
            Some("1.2.3_build.5")
        );
        let long = format!("1.0.0-{}", "a".repeat(58));
        assert_eq!(long.len(), 64);
        assert_eq!(label_value(&long), None, "over 63 characters");
        assert_eq!(label_value(&long[..63]).as_deref(), Some(&long[..63]));
        assert_eq!(label_value("1.0.0-"), None, "ends with a letter or digit");
        assert_eq!(label_value(""), None);
    }

    #[test]
    fn the_version_comes_from_the_annotation() {
        let droplet = json!({
            "guid": "d-1",
            "metadata": {
                "labels": { VERSION_KEY: "1.2.3_b" },
                "annotations": { VERSION_KEY: "1.2.3+b" }
            }
        });
        assert_eq!(marked_version(&droplet).as_deref(), Some("1.2.3+b"));
        let bare = json!({"guid": "d-2", "metadata": {"labels": {}, "annotations": {}}});
        assert_eq!(marked_version(&bare), None);
    }
}
