//! `cdflow watch --env ENV`: the talk's monitoring. The app's e2e tier (or the `[watch]`
//! command) runs against the environment every interval; each result is printed as one line,
//! recorded in the state folder (`watch/APP/ENV.json`, the last one, and `ENV.jsonl`, all of
//! them), and counted in Prometheus metrics served on a loopback port. A failure runs the
//! `on_failure` command, once per streak of failures; with `rollback_after = N`, N failures in a
//! row soon after a deployment roll the environment back, as `cdflow rollback` would.
//!
//! The checks run through the Exec seam like every command; the metrics are served by a thread
//! of their own, so that a scrape is answered while a check runs.

use std::borrow::Cow;
use std::convert::Infallible;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::app::App;
use crate::env_record;
use crate::error::{is_interrupted, user_error};
use crate::events::Event;
use crate::exec::{CommandFailed, Exec, Mode, TimedOut};
use crate::lock;
use crate::platform::{self, Deployment, Platform, Target};
use crate::releases;
use crate::runner;
use crate::secrets::Secrets;
use crate::signals;
use crate::stages;
use crate::state::State;
use crate::ui::{Style, Ui, Verbosity};

/// Seconds between checks when neither `--interval` nor `[watch] interval` says.
pub const DEFAULT_INTERVAL: u64 = 60;
/// Seconds a check may take when `[watch] timeout` does not say: long enough for an e2e suite,
/// short enough that a hung one is told within minutes rather than never.
pub const DEFAULT_TIMEOUT: u64 = 300;
/// The metrics port when neither `--metrics-port` nor `[watch] metrics_port` says.
pub const DEFAULT_METRICS_PORT: u16 = 9469;
/// How long after a deployment `rollback_after` applies, when `rollback_within` does not say.
pub const DEFAULT_ROLLBACK_WITHIN: u64 = 600;
/// Past this size, `ENV.jsonl` is moved to `ENV.jsonl.1` (replacing the one before) and begun
/// again, so that a watch that runs for months keeps a bounded history.
const HISTORY_BYTES: u64 = 1 << 20;

/// What the command line asks for.
#[derive(Debug, Clone)]
pub struct Options {
    pub env: String,
    pub interval: Option<u64>,
    /// Stop after this many checks (`--count`, `--once`).
    pub count: Option<u64>,
    pub metrics_port: Option<u16>,
    /// Print what one check would run, and run nothing (`--dry-run`).
    pub dry_run: bool,
}

/// The settings of one watch: the command line over `[watch]` over the defaults.
#[derive(Debug, Clone)]
struct Settings {
    command: String,
    /// Where the command comes from, to say it.
    source: &'static str,
    interval: Duration,
    /// How long a check, or `on_failure`, may run before it is stopped (its process group).
    timeout: Duration,
    on_failure: Option<String>,
    rollback_after: Option<u64>,
    rollback_within: Duration,
    /// `None`: no metrics (a bounded watch given no port).
    metrics_port: Option<u16>,
}

impl Settings {
    fn resolve(app: &App, options: &Options) -> Result<Settings> {
        let config = &app.loaded.config;
        let watch = &config.watch;
        let (command, source) =
            match (&watch.command, &config.e2e) {
                (Some(command), _) => (command.clone(), "[watch] command"),
                (None, Some(e2e)) => (e2e.command.clone(), "[e2e] command"),
                (None, None) => return Err(user_error(
                    "cdflow.toml has no check to watch with: add\n\n[watch]\ncommand = \"...\"   \
                     # run with APP_URL set\n\nor an [e2e] command, which the watch runs by \
                     default",
                )),
            };
        // A bounded watch is a check in CI: it serves metrics only when asked to, so that two
        // jobs on one machine do not fight over the default port.
        let metrics_port = match (options.metrics_port.or(watch.metrics_port), options.count) {
            (Some(port), _) => Some(port),
            (None, None) => Some(DEFAULT_METRICS_PORT),
            (None, Some(_)) => None,
        };
        Ok(Settings {
            command,
            source,
            interval: Duration::from_secs(
                options
                    .interval
                    .or(watch.interval)
                    .unwrap_or(DEFAULT_INTERVAL),
            ),
            timeout: Duration::from_secs(watch.timeout.unwrap_or(DEFAULT_TIMEOUT)),
            on_failure: watch.on_failure.clone(),
            rollback_after: watch.rollback_after,
            rollback_within: Duration::from_secs(
                watch.rollback_within.unwrap_or(DEFAULT_ROLLBACK_WITHIN),
            ),
            metrics_port,
        })
    }
}

/// One check, as printed, recorded and shown by `cdflow status`: the event's type, so that
/// the record and the event are one shape.
pub use crate::events::WatchCheck as Check;

/// What the watch did besides checking, which `say` reports.
#[derive(Debug, Clone, Copy)]
enum Said {
    OnFailure,
    Rollback,
}

/// Runs the watch until `--count` checks are done or a signal stops it. A bounded watch fails
/// when its last check failed.
pub fn run(ui: &Ui, state: &State, app: &App, options: &Options) -> Result<()> {
    let target = app.target(&options.env)?;
    let settings = Settings::resolve(app, options)?;
    if options.dry_run {
        return dry_run(ui, state, app, target, &settings);
    }
    let metrics = Metrics::new(&app.name, target.name);
    let address = match settings.metrics_port {
        Some(port) => Some(serve_metrics(port, metrics.registry.clone())?),
        None => None,
    };
    announce(ui, app, &target, &settings, address);

    let watcher = Watcher {
        ui,
        quiet: quiet_ui(ui, app),
        mode: Mode::Real,
        state,
        app,
        target,
        platform: platform::for_env(state, &target),
        settings: &settings,
        metrics: &metrics,
    };
    let mut failures = 0;
    let mut done = 0;
    let mut last: Option<Check> = None;
    // The artifact a rollback was tried from: one try per artifact, failed or not.
    let mut rollback_tried: Option<String> = None;
    while !signals::stop_requested() {
        let started = Instant::now();
        let Some(mut check) = watcher.check(failures)? else {
            break;
        };
        failures = check.failures_in_a_row;
        if !check.passed {
            if failures == 1 {
                check.on_failure = watcher.on_failure(&check)?;
            }
            if let Some(to) = watcher.maybe_roll_back(&check, &mut rollback_tried)? {
                check.rolled_back_to = Some(to);
                // A new streak begins on the release that serves now.
                failures = 0;
            }
        }
        // A full disk must not stop the monitoring: the line and the metrics still tell.
        if let Err(err) = watcher.record(&check) {
            ui.warn(&format!("{err:#}"));
        }
        last = Some(check);
        done += 1;
        if options.count.is_some_and(|count| done >= count) {
            break;
        }
        if !sleep_until(started + settings.interval) {
            break;
        }
    }
    let stopped = if signals::stop_requested() {
        "stopped"
    } else {
        "done"
    };
    ui.note(&format!(
        "watch of `{}` {stopped} after {done} check(s)",
        target.name
    ));
    match last {
        Some(last) if !last.passed && options.count.is_some() => Err(anyhow::anyhow!(
            "the last check of `{}` failed",
            target.name
        )),
        _ => Ok(()),
    }
}

/// `--dry-run`: the commands of one check, as a real one would run them (what finds the URL,
/// the check with `APP_URL`, `on_failure`), printed and not run; nothing recorded or served.
fn dry_run(ui: &Ui, state: &State, app: &App, target: Target, settings: &Settings) -> Result<()> {
    let metrics = Metrics::new(&app.name, target.name);
    let watcher = Watcher {
        ui,
        quiet: ui.clone(),
        mode: Mode::DryRun,
        state,
        app,
        target,
        platform: platform::for_env(state, &target),
        settings,
        metrics: &metrics,
    };
    let env = target.name;
    ui.note(&format!(
        "dry run: a check of `{env}` of {}, every {}s, stopped after {}s:",
        app.name,
        settings.interval.as_secs(),
        settings.timeout.as_secs()
    ));
    let exec = watcher.exec()?;
    let deployment = watcher
        .platform
        .serving(&exec, &app.name, &watcher.target)?;
    // The check would fail without a URL: said as the check would say it.
    let url = watcher
        .url(deployment.as_ref())
        .map_err(|why| user_error(format!("a check would fail: {why}")))?;
    watcher.run_check(&exec, &url)?;
    if let Some(command) = &settings.on_failure {
        ui.note("when checks start failing, with CDFLOW_WATCH_* set:");
        let (program, args) = words(command)?;
        exec.run(exec.sh().cmd(program).args(args))?;
    }
    if let Some(after) = settings.rollback_after {
        ui.note(&format!(
            "after {after} failed checks in a row within {}s of a deployment: a rollback to \
             the release before, as `cdflow rollback --env {env}` makes",
            settings.rollback_within.as_secs()
        ));
    }
    ui.note("dry run: nothing was run");
    Ok(())
}

fn announce(ui: &Ui, app: &App, target: &Target, settings: &Settings, metrics: Option<String>) {
    let every = settings.interval.as_secs();
    if ui.is_json() {
        ui.emit(Event::WatchStarted {
            app: app.name.clone(),
            env: target.name.to_string(),
            command: settings.command.clone(),
            interval: every,
            metrics,
        });
        return;
    }
    let metrics = metrics
        .map(|url| format!("; metrics at {url}"))
        .unwrap_or_default();
    ui.note(&format!(
        "watching `{}` of {} every {every}s with `{}` ({}){metrics}",
        target.name, app.name, settings.command, settings.source
    ));
}

/// What the checks print: nothing but what `watch` says itself, unless `-v` asks for every
/// command and its output.
fn quiet_ui(ui: &Ui, app: &App) -> Ui {
    if ui.is_verbose() {
        return ui.clone();
    }
    let quiet = Ui::new(Style::Plain, Secrets::from_env([])).with_verbosity(Verbosity::Quiet);
    quiet.set_acting(true);
    quiet.add_secrets(&app.secret_names());
    quiet
}

struct Watcher<'a> {
    ui: &'a Ui,
    quiet: Ui,
    /// Real, or a dry run that prints the commands and runs none.
    mode: Mode,
    state: &'a State,
    app: &'a App,
    target: Target<'a>,
    platform: Box<dyn Platform>,
    settings: &'a Settings,
    metrics: &'a Metrics,
}

impl Watcher<'_> {
    /// A seam for one check: a fresh one each time, so that a watch that runs for months does
    /// not keep the record of every command it ever ran.
    fn exec(&self) -> Result<Exec> {
        Exec::new(&self.app.dir, self.mode, self.quiet.clone())
    }

    /// Runs one check; `None` when a signal stopped it.
    fn check(&self, failures: u64) -> Result<Option<Check>> {
        let exec = self.exec()?;
        let started = Instant::now();
        let started_at = crate::ui::timestamp();
        // What serves is part of the check: a `cf` call that hangs must not block the watch
        // any more than a check that hangs.
        exec.set_timeout(self.settings.timeout);
        let serving = self.platform.serving(&exec, &self.app.name, &self.target);
        let (deployment, result) = match serving {
            Err(err) if is_interrupted(&err) => return Ok(None),
            Err(err) => (
                None,
                Err(format!(
                    "cdflow could not tell what serves `{}`: {err:#}",
                    self.target.name
                )),
            ),
            Ok(deployment) => {
                let result = match self.url(deployment.as_ref()) {
                    Ok(url) => match self.run_check(&exec, &url) {
                        Err(err) if is_interrupted(&err) => return Ok(None),
                        Err(err) => Err(failure_output(&err)),
                        Ok(()) => Ok(()),
                    },
                    Err(why) => Err(why),
                };
                (deployment, result)
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let passed = result.is_ok();
        let check = Check {
            app: self.app.name.clone(),
            env: self.target.name.to_string(),
            started: started_at,
            version: deployment.as_ref().map(|d| d.version.clone()),
            artifact: deployment.as_ref().map(|d| d.artifact.clone()),
            url: self.url(deployment.as_ref()).ok(),
            passed,
            seconds,
            failures_in_a_row: if passed { 0 } else { failures + 1 },
            output: result.err(),
            on_failure: None,
            rolled_back_to: None,
        };
        self.metrics.observe(&check);
        self.show(&check);
        Ok(Some(check))
    }

    /// Where the environment answers: what serves it, else the `url` of its settings.
    fn url(&self, deployment: Option<&Deployment>) -> std::result::Result<String, String> {
        match (deployment, &self.target.config.url) {
            (Some(deployment), _) if !deployment.url.is_empty() => Ok(deployment.url.clone()),
            (_, Some(url)) => Ok(url.clone()),
            (Some(_), None) => Err(format!(
                "cdflow cannot tell where `{}` answers: set `url` in [env.{}]",
                self.target.name, self.target.name
            )),
            (None, None) => Err(format!("nothing serves `{}`", self.target.name)),
        }
    }

    fn run_check(&self, exec: &Exec, url: &str) -> Result<()> {
        let mut env = stages::build_env(self.state, self.app);
        env.push(("APP_URL".into(), url.to_string()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (program, args) = words(&self.settings.command)?;
        exec.set_timeout(self.settings.timeout);
        exec.run_with_env(exec.sh().cmd(program).args(args), &env)?;
        Ok(())
    }

    /// The check's line: plain text, or a JSON event.
    fn show(&self, check: &Check) {
        if self.ui.is_json() {
            self.ui.emit(Event::Check(check.clone()));
            return;
        }
        let version = shown_version(check);
        let line = if check.passed {
            format!(
                "[{}] {} {version}: passed in {:.1}s",
                check.started, check.env, check.seconds
            )
        } else {
            let why = check
                .output
                .as_deref()
                .and_then(|output| output.lines().rev().find(|l| !l.trim().is_empty()))
                .unwrap_or("");
            format!(
                "[{}] {} {version}: FAILED in {:.1}s ({} in a row): {why}",
                check.started, check.env, check.seconds, check.failures_in_a_row
            )
        };
        // With `-q`, a failure is still told, as a warning: it is what the watch is for.
        if !check.passed && self.ui.silenced() {
            self.ui.warn(&line);
        } else {
            self.ui.note(&line);
        }
    }

    /// Runs `on_failure` with the failure in its environment; `None` when there is none. Its
    /// own failure is told, and the watch goes on.
    fn on_failure(&self, check: &Check) -> Result<Option<bool>> {
        let Some(command) = &self.settings.on_failure else {
            return Ok(None);
        };
        let exec = self.exec()?;
        // A hung alert must not stop the monitoring either.
        exec.set_timeout(self.settings.timeout);
        let (program, args) = words(command)?;
        let failures = check.failures_in_a_row.to_string();
        // Values are given as variables of the command's environment, never spliced into its
        // words: the output is whatever the failing check printed.
        let variables = [
            ("CDFLOW_WATCH_APP", check.app.as_str()),
            ("CDFLOW_WATCH_ENV", check.env.as_str()),
            (
                "CDFLOW_WATCH_VERSION",
                check.version.as_deref().unwrap_or(""),
            ),
            ("CDFLOW_WATCH_URL", check.url.as_deref().unwrap_or("")),
            ("CDFLOW_WATCH_TIME", check.started.as_str()),
            ("CDFLOW_WATCH_FAILURES", failures.as_str()),
            ("CDFLOW_WATCH_OUTPUT", check.output.as_deref().unwrap_or("")),
        ];
        let mut cmd = exec.sh().cmd(program).args(args);
        for (name, value) in variables {
            cmd = cmd.env(name, value);
        }
        match exec.run(cmd) {
            Ok(_) => {
                self.say(Said::OnFailure, &format!("ran `{command}`"));
                Ok(Some(true))
            }
            // Stopped by a signal, or failed: told either way, and the watch goes on (or, after
            // a signal, stops cleanly at the top of its loop).
            Err(err) => {
                self.ui.warn(&format!("on_failure: {err:#}"));
                Ok(Some(false))
            }
        }
    }

    /// Rolls the environment back when `rollback_after` failures in a row came soon after a
    /// deployment; returns the version that serves after it.
    fn maybe_roll_back(&self, check: &Check, tried: &mut Option<String>) -> Result<Option<String>> {
        let Some(after) = self.settings.rollback_after else {
            return Ok(None);
        };
        let Some(artifact) = check.artifact.as_deref() else {
            return Ok(None);
        };
        if tried.as_deref() == Some(artifact) {
            return Ok(None);
        }
        let last = releases::last_deployed(self.state, &self.app.name, self.target.name)?
            .map(|(release, at)| (release.deployment.artifact, at));
        let due = rollback_due(
            after,
            check.failures_in_a_row,
            artifact,
            last.as_ref().map(|(a, at)| (a.as_str(), *at)),
            self.settings.rollback_within,
            SystemTime::now(),
        );
        if !due {
            return Ok(None);
        }
        *tried = Some(artifact.to_string());
        let env = self.target.name;
        let from = check.version.as_deref().unwrap_or("?");
        let exec = self.exec()?;
        // The lock `cdflow rollback` and releases take: never switch an environment under a
        // run that is deploying to it.
        let holder = format!("watch of {} on {env}: rollback", self.app.name);
        let rolled = lock::acquire(
            self.ui,
            &runner::lock_path(self.state, &self.app.name, env),
            &holder,
            lock::Wait::No,
        )
        .and_then(|_lock| {
            self.platform
                .rollback(&exec, &self.app.name, &self.target, None)
        });
        match rolled {
            Ok(deployment) => {
                let secrets = self.app.secret_names();
                let recorded = env_record::record(
                    &exec,
                    self.state,
                    &self.app.name,
                    &self.target,
                    &secrets,
                    "rollback",
                );
                if let Err(err) = recorded {
                    self.ui.warn(&format!("{err:#}"));
                }
                self.metrics.rollbacks.inc();
                deployment.announce(self.ui, crate::events::DeployedBy::Rollback);
                self.say(
                    Said::Rollback,
                    &format!(
                        "rolled `{env}` back from {from} to {} ({}) after {}",
                        deployment.version,
                        deployment.artifact,
                        match check.failures_in_a_row {
                            1 => "1 failed check".to_string(),
                            n => format!("{n} failed checks in a row"),
                        }
                    ),
                );
                Ok(Some(deployment.version))
            }
            Err(err) => {
                self.ui
                    .warn(&format!("could not roll `{env}` back from {from}: {err:#}"));
                Ok(None)
            }
        }
    }

    /// A line about what the watch did, as text or as an event of its own kind.
    fn say(&self, kind: Said, message: &str) {
        if self.ui.is_json() {
            let (env, message) = (self.target.name.to_string(), message.to_string());
            self.ui.emit(match kind {
                Said::OnFailure => Event::OnFailure { env, message },
                Said::Rollback => Event::Rollback { env, message },
            });
        } else {
            let line = format!("{}: {message}", self.target.name);
            // With `-q`, a rollback is still told, as a warning: the environment changed.
            match kind {
                Said::Rollback if self.ui.silenced() => self.ui.warn(&line),
                _ => self.ui.note(&line),
            }
        }
    }

    /// Writes the check into the state folder: the last one, and the history.
    fn record(&self, check: &Check) -> Result<()> {
        let (last, history) = paths(self.state, &self.app.name, self.target.name);
        let exec = self.exec()?;
        let line = serde_json::to_string(check)?;
        exec.save(&last, line.as_bytes())?;
        append(&history, &line)
            .with_context(|| format!("could not record the check in {}", history.display()))
    }
}

/// What the check ran against: the version that serves, else the URL it was given.
fn shown_version(check: &Check) -> &str {
    check
        .version
        .as_deref()
        .or(check.url.as_deref())
        .unwrap_or("(nothing serves it)")
}

/// The words of a command written as a string, split as a shell would, run without one.
fn words(command: &str) -> Result<(String, Vec<String>)> {
    let mut words = shlex::split(command)
        .filter(|w| !w.is_empty())
        .ok_or_else(|| user_error(format!("`{command}` is not a command: check its quotes")))?;
    let program = words.remove(0);
    Ok((program, words))
}

/// What a failed check has to say: the end of its output, or why it could not run.
fn failure_output(err: &anyhow::Error) -> String {
    if let Some(timed_out) = err.chain().find_map(|e| e.downcast_ref::<TimedOut>()) {
        // The reason last: it is the line a check's line shows.
        let stopped = format!(
            "the check was stopped after {}s, its time limit (`timeout` in [watch])",
            timed_out.after.as_secs()
        );
        return if timed_out.tail.is_empty() {
            stopped
        } else {
            format!("the end of its output:\n{}\n{stopped}", timed_out.tail)
        };
    }
    match err.chain().find_map(|e| e.downcast_ref::<CommandFailed>()) {
        Some(failed) => {
            let how = match failed.code {
                Some(code) => format!("exited with code {code}"),
                None => "was killed by a signal".into(),
            };
            // The command's own last line last: the one a check's line shows.
            if failed.tail.is_empty() {
                format!("the check {how}")
            } else {
                format!("the check {how}; the end of its output:\n{}", failed.tail)
            }
        }
        None => format!("{err:#}"),
    }
}

/// Whether the `failures`-th failure in a row of `serving` rolls it back: `after` of them, on
/// the release cdflow deployed last, no later than `within` after that deployment.
fn rollback_due(
    after: u64,
    failures: u64,
    serving: &str,
    last: Option<(&str, SystemTime)>,
    within: Duration,
    now: SystemTime,
) -> bool {
    let Some((artifact, at)) = last else {
        return false;
    };
    failures >= after
        && artifact == serving
        && now.duration_since(at).is_ok_and(|since| since <= within)
}

/// Sleeps until `deadline`, waking to notice a signal; false when one came.
fn sleep_until(deadline: Instant) -> bool {
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if signals::stop_requested() {
            return false;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
    !signals::stop_requested()
}

/// `watch/APP/ENV.json` (the last check) and `watch/APP/ENV.jsonl` (every check).
fn paths(state: &State, app: &str, env: &str) -> (PathBuf, PathBuf) {
    let dir = state.root().join("watch").join(app);
    (
        dir.join(format!("{env}.json")),
        dir.join(format!("{env}.jsonl")),
    )
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > HISTORY_BYTES) {
        std::fs::rename(path, path.with_extension("jsonl.1"))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // One write per line, so that a reader never sees half of one.
    file.write_all(format!("{line}\n").as_bytes())
}

/// The last check of every environment watched from this state folder.
pub fn last_checks(state: &State) -> Vec<Check> {
    let mut checks = Vec::new();
    let Ok(apps) = std::fs::read_dir(state.root().join("watch")) else {
        return checks;
    };
    for app in apps.flatten() {
        let Ok(files) = std::fs::read_dir(app.path()) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_some_and(|e| e == "json") {
                if let Ok(check) = std::fs::read_to_string(&path)
                    .map_err(anyhow::Error::from)
                    .and_then(|text| Ok(serde_json::from_str::<Check>(&text)?))
                {
                    checks.push(check);
                }
            }
        }
    }
    checks.sort_by(|a, b| (&a.app, &a.env).cmp(&(&b.app, &b.env)));
    checks
}

/// `cdflow status`: a line per watched environment, with its last check.
pub fn status(state: &State, ui: &Ui) {
    for check in last_checks(state) {
        if ui.is_json() {
            ui.emit(Event::Check(check));
            continue;
        }
        let version = shown_version(&check);
        let result = if check.passed {
            "passed".to_string()
        } else {
            format!("FAILED ({} in a row)", check.failures_in_a_row)
        };
        let rolled = check
            .rolled_back_to
            .as_deref()
            .map(|to| format!("; rolled back to {to}"))
            .unwrap_or_default();
        ui.note(&format!(
            "{}: last watch check of {} {version} {result} at {}{rolled}",
            check.env, check.app, check.started
        ));
    }
}

/// The watch's own metrics, labelled with the app and the environment.
struct Metrics {
    registry: Arc<Registry>,
    checks: Family<Vec<(String, String)>, Counter>,
    failures_in_a_row: Gauge,
    up: Gauge,
    last_check: Gauge<f64, AtomicU64>,
    last_success: Gauge<f64, AtomicU64>,
    duration: Histogram,
    rollbacks: Counter,
}

impl Metrics {
    fn new(app: &str, env: &str) -> Metrics {
        let labels = [
            (Cow::Borrowed("app"), Cow::Owned(app.to_string())),
            (Cow::Borrowed("env"), Cow::Owned(env.to_string())),
        ];
        let mut registry = Registry::with_prefix_and_labels("cdflow_watch", labels.into_iter());
        let checks = Family::<Vec<(String, String)>, Counter>::default();
        let failures_in_a_row = Gauge::default();
        let up = Gauge::default();
        let last_check = Gauge::<f64, AtomicU64>::default();
        let last_success = Gauge::<f64, AtomicU64>::default();
        // 0.1 s to about 7 minutes: a health probe to a whole e2e suite.
        let duration = Histogram::new(exponential_buckets(0.1, 2.0, 13));
        let rollbacks = Counter::default();
        registry.register(
            "checks",
            "Checks run, by result (passed or failed)",
            checks.clone(),
        );
        registry.register(
            "failures_in_a_row",
            "Failed checks since the last one that passed",
            failures_in_a_row.clone(),
        );
        registry.register("up", "1 when the last check passed, else 0", up.clone());
        registry.register(
            "last_check_timestamp_seconds",
            "When the last check ran (Unix time)",
            last_check.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "When a check last passed (Unix time; 0 before the first)",
            last_success.clone(),
        );
        registry.register(
            "check_duration_seconds",
            "How long each check took",
            duration.clone(),
        );
        registry.register(
            "rollbacks",
            "Rollbacks made after rollback_after failed checks",
            rollbacks.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            checks,
            failures_in_a_row,
            up,
            last_check,
            last_success,
            duration,
            rollbacks,
        }
    }

    fn observe(&self, check: &Check) {
        let result = if check.passed { "passed" } else { "failed" };
        self.checks
            .get_or_create(&vec![("result".to_string(), result.to_string())])
            .inc();
        self.failures_in_a_row
            .set(i64::try_from(check.failures_in_a_row).unwrap_or(i64::MAX));
        self.up.set(i64::from(check.passed));
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.last_check.set(now);
        if check.passed {
            self.last_success.set(now);
        }
        self.duration.observe(check.seconds);
    }
}

/// Serves `registry` at `/metrics` on 127.0.0.1:`port` from a thread of its own, for as long as
/// cdflow runs; returns the URL. The port is bound here, so that a port in use is an error
/// before the first check.
fn serve_metrics(port: u16, registry: Arc<Registry>) -> Result<String> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|err| {
        user_error(format!(
            "the watch's metrics cannot listen on 127.0.0.1:{port}: {err}; set another port with \
             --metrics-port or `metrics_port` in [watch] of cdflow.toml (0 takes any free one)"
        ))
    })?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}/metrics", listener.local_addr()?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the metrics server")?;
    std::thread::Builder::new()
        .name("watch-metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        // Out of descriptors, say: try again shortly rather than spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let registry = Arc::clone(&registry);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let answer = answer(&registry, &request);
                            async move { Ok::<_, Infallible>(answer) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        })
        .context("could not start the metrics server")?;
    Ok(url)
}

fn answer<B>(registry: &Registry, request: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(kind) = hyper::header::HeaderValue::from_str(kind) {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, kind);
        }
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "cdflow watch serves its metrics at /metrics\n".into(),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".into(),
        );
    }
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text,
        ),
        Err(err) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{err}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollback_is_due_only_on_the_last_deployment_soon_after_it() {
        let deployed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let minute = Duration::from_secs(60);
        let within = 10 * minute;
        let due = |failures, serving, last, now| {
            rollback_due(2, failures, serving, last, within, deployed + now)
        };
        assert!(due(2, "d2", Some(("d2", deployed)), minute));
        assert!(due(3, "d2", Some(("d2", deployed)), within));
        // Not yet: one failure of two.
        assert!(!due(1, "d2", Some(("d2", deployed)), minute));
        // Too late: an old release that starts failing is not a bad deployment.
        assert!(!due(5, "d2", Some(("d2", deployed)), within + minute));
        // What serves is not what cdflow deployed last (already rolled back, say).
        assert!(!due(5, "d1", Some(("d2", deployed)), minute));
        // Nothing deployed by cdflow: nothing to go back from.
        assert!(!due(5, "d2", None, minute));
    }

    #[test]
    fn the_metrics_are_prometheus_text() {
        let metrics = Metrics::new("web", "production");
        let check = |passed, failures| Check {
            app: "web".into(),
            env: "production".into(),
            started: crate::ui::timestamp(),
            version: Some("1.0.0".into()),
            artifact: None,
            url: None,
            passed,
            seconds: 0.25,
            failures_in_a_row: failures,
            output: None,
            on_failure: None,
            rolled_back_to: None,
        };
        metrics.observe(&check(true, 0));
        metrics.observe(&check(false, 1));
        metrics.observe(&check(false, 2));
        let request = Request::get("/metrics").body(()).unwrap();
        let response = answer(&metrics.registry, &request);
        assert_eq!(response.status(), StatusCode::OK);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        for line in [
            r#"cdflow_watch_checks_total{app="web",env="production",result="failed"} 2"#,
            r#"cdflow_watch_checks_total{app="web",env="production",result="passed"} 1"#,
            r#"cdflow_watch_failures_in_a_row{app="web",env="production"} 2"#,
            r#"cdflow_watch_up{app="web",env="production"} 0"#,
            r#"cdflow_watch_check_duration_seconds_count{app="web",env="production"} 3"#,
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
        let other = answer(&metrics.registry, &Request::get("/").body(()).unwrap());
        assert_eq!(other.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_failed_command_is_told_by_its_last_lines() {
        let err = anyhow::Error::new(CommandFailed {
            command: "check".into(),
            code: Some(3),
            tail: "GET / answered 500".into(),
            log: None,
        })
        .context("while watching");
        assert_eq!(
            failure_output(&err),
            "the check exited with code 3; the end of its output:\nGET / answered 500"
        );
        assert_eq!(
            failure_output(&anyhow::anyhow!("nothing serves")),
            "nothing serves"
        );
    }

    #[test]
    fn a_stopped_check_ends_with_why() {
        let timed_out = |tail: &str| {
            anyhow::Error::new(TimedOut {
                command: "check".into(),
                after: Duration::from_secs(300),
                tail: tail.into(),
            })
        };
        let stopped = "the check was stopped after 300s, its time limit (`timeout` in [watch])";
        assert_eq!(failure_output(&timed_out("")), stopped);
        assert_eq!(
            failure_output(&timed_out("GET / ...")),
            format!("the end of its output:\nGET / ...\n{stopped}")
        );
    }
}
