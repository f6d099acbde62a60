//! Instances: each one a process of its own group, started with the environment a Cloud Foundry
//! cell gives (PORT, VCAP_APPLICATION, VCAP_SERVICES, the manifest's env), health-checked as the
//! manifest says, and restarted with back-off when it exits or fails its health check.
//!
//! One task supervises each instance. Health is checked every [`START_INTERVAL`] until the
//! instance first passes, then every [`RUN_INTERVAL`]; after [`UNHEALTHY_AFTER`] failures in a
//! row a running instance leaves the route and is restarted. Stopping is SIGTERM to the group, a
//! grace period, then SIGKILL.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::logs::{LogSink, MAX_LINE};
use super::memory;
use super::pids::{signal, Registry};
use super::proxy::{Backend, Proxy, Slot};
use super::sandbox::Sandbox;
use super::spec::{HealthCheck, RunSpec, Runtime};

pub const START_INTERVAL: Duration = Duration::from_millis(50);
pub const RUN_INTERVAL: Duration = Duration::from_secs(1);
/// Cloud Foundry's default health-check invocation timeout.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// The User-Agent of an `http` health check. An app that logs every request with its user
/// agent (gunicorn's access log, any combined-format log) would write a line per check, a
/// line a second per instance; output lines that carry it are left out of the log unless they
/// show a failing status (see [`pump`]). What the checks find is logged by the platform itself,
/// when it changes.
pub const CHECK_USER_AGENT: &str = "cdflow-health-check";
pub const UNHEALTHY_AFTER: u32 = 3;
/// Cloud Foundry's default time between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Waits before the 1st, 2nd, ... restart in a row; an instance healthy for
/// [`STABLE_AFTER`] starts the count again.
const BACKOFF: [Duration; 7] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(30),
];
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Lines of output kept per instance, to show when it fails to start.
const TAIL: usize = 30;

/// Variables an instance inherits from the server; everything else it gets is set on purpose
/// (cdflow's own environment may hold deploy credentials). HOME and TMPDIR are the instance's
/// own ([`Sandbox`]).
const INHERITED: [&str; 7] = [
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    Healthy,
    Unhealthy,
    Crashed,
    Stopping,
    Stopped,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Phase::Starting => "starting",
            Phase::Healthy => "healthy",
            Phase::Unhealthy => "unhealthy",
            Phase::Crashed => "crashed",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
        };
        f.write_str(text)
    }
}

#[derive(Debug, Clone)]
pub struct InstanceStatus {
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub phase: Phase,
    pub restarts: u32,
    /// Exits and failed starts since the instance was created.
    pub crashes: u32,
    pub last_check: String,
    pub last_exit: Option<String>,
    /// The last lines of its output.
    pub tail: VecDeque<String>,
    /// How long its first start took to pass the health check.
    pub healthy_after: Option<Duration>,
    /// What its processes held at the last sample (every [`RUN_INTERVAL`]), in bytes.
    pub memory: Option<u64>,
}

/// What `cdflow status` shows of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    pub index: u32,
    pub version: String,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub phase: Phase,
    pub restarts: u32,
    pub check: String,
    /// Bytes its processes hold now, when it runs.
    #[serde(default)]
    pub memory: Option<u64>,
    /// The manifest's limit, in bytes.
    #[serde(default)]
    pub memory_limit: Option<u64>,
}

pub struct Instance {
    pub index: u32,
    pub spec: Arc<RunSpec>,
    pub slot: Arc<Slot>,
    pub status: Arc<Mutex<InstanceStatus>>,
    stop: watch::Sender<Option<Duration>>,
    task: Option<JoinHandle<()>>,
}

/// What an instance needs from the server.
#[derive(Clone)]
pub struct Cell {
    pub logs: LogSink,
    pub registry: Arc<Registry>,
    pub proxy: Arc<Proxy>,
    /// Where the instances' folders go ([`Sandbox`]).
    pub instances: PathBuf,
}

impl Instance {
    pub fn start(cell: &Cell, spec: Arc<RunSpec>, index: u32) -> Instance {
        let slot = Arc::new(Slot::new(index, cell.proxy.version_stats(&spec.version)));
        let status = Arc::new(Mutex::new(InstanceStatus {
            pid: None,
            port: None,
            phase: Phase::Starting,
            restarts: 0,
            crashes: 0,
            last_check: "not checked yet".into(),
            last_exit: None,
            tail: VecDeque::new(),
            healthy_after: None,
            memory: None,
        }));
        let (stop, stop_rx) = watch::channel(None);
        let task = tokio::spawn(supervise(
            cell.clone(),
            Arc::clone(&spec),
            index,
            Arc::clone(&slot),
            Arc::clone(&status),
            stop_rx,
        ));
        Instance {
            index,
            spec,
            slot,
            status,
            stop,
            task: Some(task),
        }
    }

    pub fn status(&self) -> InstanceStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn view(&self) -> InstanceView {
        let status = self.status();
        InstanceView {
            index: self.index,
            version: self.spec.version.clone(),
            pid: status.pid,
            port: status.port,
            phase: status.phase,
            restarts: status.restarts,
            check: status.last_check,
            memory: status.pid.and(status.memory),
            memory_limit: self.spec.memory_limit(),
        }
    }

    /// Asks the instance to stop, giving it `grace` between SIGTERM and SIGKILL.
    pub fn signal_stop(&self, grace: Duration) {
        self.slot.healthy.store(false, Ordering::SeqCst);
        let _ = self.stop.send(Some(grace));
    }

    /// Stops the instance and waits until its process is gone.
    pub async fn stop(&mut self, grace: Duration) {
        self.signal_stop(grace);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

enum Outcome {
    Stop(Duration),
    Exited,
    Unhealthy,
    OutOfMemory,
}

async fn supervise(
    cell: Cell,
    spec: Arc<RunSpec>,
    index: u32,
    slot: Arc<Slot>,
    status: Arc<Mutex<InstanceStatus>>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let set =
        |f: &dyn Fn(&mut InstanceStatus)| f(&mut status.lock().unwrap_or_else(|e| e.into_inner()));
    let mut in_a_row = 0usize;
    loop {
        if stop.borrow().is_some() {
            break;
        }
        let (outcome, healthy_for) = run_once(&cell, &spec, index, &slot, &status, &mut stop).await;
        slot.healthy.store(false, Ordering::SeqCst);
        cell.proxy.notify();
        let what = match outcome {
            Outcome::Stop(_) => break,
            Outcome::Exited => "exited",
            Outcome::Unhealthy => "failed its health check",
            Outcome::OutOfMemory => "went over its memory limit",
        };
        if healthy_for >= STABLE_AFTER {
            in_a_row = 0;
        }
        let delay = BACKOFF[in_a_row.min(BACKOFF.len() - 1)];
        in_a_row += 1;
        cell.logs.event(
            &format!("CELL/{index}"),
            format!(
                "instance {index} {what}; restarting in {}s",
                delay.as_secs()
            ),
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => break,
        }
        set(&|s| s.restarts += 1);
    }
    set(&|s| {
        s.phase = Phase::Stopped;
        s.pid = None;
    });
}

/// One process of the instance, from its start to its end; returns how it ended and how long
/// it was healthy.
async fn run_once(
    cell: &Cell,
    spec: &RunSpec,
    index: u32,
    slot: &Slot,
    status: &Arc<Mutex<InstanceStatus>>,
    stop: &mut watch::Receiver<Option<Duration>>,
) -> (Outcome, Duration) {
    let source = format!("CELL/{index}");
    let set =
        |f: &dyn Fn(&mut InstanceStatus)| f(&mut status.lock().unwrap_or_else(|e| e.into_inner()));
    // A fresh copy of the app at every start, as a container is; made off the thread that
    // proxies.
    let (instances, app) = (cell.instances.clone(), spec.droplet.join("app"));
    let sandbox = tokio::task::spawn_blocking(move || Sandbox::create(&instances, index, &app))
        .await
        .unwrap_or_else(|err| Err(anyhow::anyhow!("{err}")));
    let spawned = sandbox
        .map_err(|err| format!("{err:#}"))
        .and_then(|sandbox| {
            let started = super::ports::free_port()
                .and_then(|port| spawn(spec, index, port, &sandbox).map(|child| (port, child)));
            match started {
                Ok((port, child)) => Ok((port, child, sandbox)),
                Err(err) => {
                    sandbox.remove();
                    Err(err.to_string())
                }
            }
        });
    let (port, mut child, sandbox) = match spawned {
        Ok(spawned) => spawned,
        Err(err) => {
            let text = format!("could not start `{}`: {err}", spec.command);
            cell.logs.event(&source, text.clone());
            set(&|s| {
                s.crashes += 1;
                s.phase = Phase::Crashed;
                s.last_exit = Some(text.clone());
            });
            return (Outcome::Exited, Duration::ZERO);
        }
    };
    let pid = child.id().unwrap_or_default();
    cell.registry.add(pid);
    set(&|s| {
        s.pid = Some(pid);
        s.port = Some(port);
        s.phase = Phase::Starting;
        s.last_check = "not checked yet".into();
        s.memory = None;
    });
    let app_source: Arc<str> = format!("APP/{index}").into();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(
            out,
            cell.logs.clone(),
            app_source.clone(),
            "OUT",
            Arc::clone(status),
        ));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(
            err,
            cell.logs.clone(),
            app_source,
            "ERR",
            Arc::clone(status),
        ));
    }
    let backend = Arc::new(Backend::new(port));
    slot.backend.store(Some(Arc::clone(&backend)));
    cell.logs.event(
        &source,
        format!(
            "started instance {index} of {} {} (pid {pid}, port {port}) in {}, its app copied \
             in {:.1} ms",
            spec.app,
            spec.version,
            sandbox.root().display(),
            sandbox.copied_in.as_secs_f64() * 1000.0
        ),
    );

    let started = Instant::now();
    let mut healthy_since: Option<Instant> = None;
    let mut failures = 0;
    let memory_limit = spec.memory_limit();
    let mut memory_check = tokio::time::interval(RUN_INTERVAL);
    memory_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Kept across the loop's turns, so that the other branches (the memory check) never put
    // the next health check off; replaced each time it completes.
    let next_check = check_after(START_INTERVAL, &spec.health_check, port);
    tokio::pin!(next_check);
    let outcome = loop {
        tokio::select! {
            exit = child.wait() => {
                let text = match exit {
                    Ok(status) => describe_exit(status),
                    Err(err) => format!("could not be waited for: {err}"),
                };
                cell.logs.event(&source, format!("instance {index} (pid {pid}) {text}"));
                set(&|s| {
                    s.crashes += 1;
                    s.phase = Phase::Crashed;
                    s.last_exit = Some(text.clone());
                });
                // Whatever the app started in its group goes with it.
                signal(-(pid as i32), libc::SIGKILL);
                break Outcome::Exited;
            }
            changed = stop.changed() => {
                let grace = if changed.is_ok() { (*stop.borrow()).unwrap_or(STOP_GRACE) } else { STOP_GRACE };
                break Outcome::Stop(grace);
            }
            _ = memory_check.tick() => {
                // Reading /proc takes a moment: off the thread that proxies.
                let used = tokio::task::spawn_blocking(move || memory::group_bytes(pid))
                    .await
                    .unwrap_or(0);
                set(&|s| s.memory = Some(used));
                let Some(limit) = memory_limit.filter(|limit| used > *limit) else {
                    continue;
                };
                // As a container's limit would: at once, without a grace period.
                signal(-(pid as i32), libc::SIGKILL);
                let _ = child.wait().await;
                let text = format!(
                    "was killed: its processes held {}, over the manifest's memory limit of {}",
                    memory::Size(used),
                    memory::Size(limit)
                );
                cell.logs.event(&source, format!("instance {index} (pid {pid}) {text}"));
                set(&|s| {
                    s.crashes += 1;
                    s.phase = Phase::Crashed;
                    s.last_exit = Some(text.clone());
                });
                break Outcome::OutOfMemory;
            }
            result = &mut next_check => {
                match result {
                    Ok(detail) => {
                        if failures > 0 {
                            let checks = if failures == 1 { "check" } else { "checks" };
                            cell.logs.event(&format!("HEALTH/{index}"), format!("healthy again after {failures} failed {checks}: {detail}"));
                        }
                        failures = 0;
                        if backend.back_up() {
                            // The route took it out on a refused connection; it answers again.
                            cell.proxy.notify();
                            cell.logs.event(&format!("HEALTH/{index}"), format!("back in the route: {detail}"));
                        }
                        if healthy_since.is_none() {
                            healthy_since = Some(Instant::now());
                            slot.healthy.store(true, Ordering::SeqCst);
                            cell.proxy.notify();
                            let took = started.elapsed();
                            cell.logs.event(&format!("HEALTH/{index}"), format!("healthy after {:.2}s: {detail}", took.as_secs_f64()));
                            set(&|s| {
                                s.phase = Phase::Healthy;
                                s.last_check = detail.clone();
                                s.healthy_after.get_or_insert(took);
                            });
                        } else {
                            set(&|s| s.last_check = detail.clone());
                        }
                    }
                    Err(detail) => {
                        set(&|s| s.last_check = detail.clone());
                        if healthy_since.is_some() {
                            failures += 1;
                            cell.logs.event(&format!("HEALTH/{index}"), format!("check {failures} of {UNHEALTHY_AFTER} failed: {detail}"));
                            if failures >= UNHEALTHY_AFTER {
                                slot.healthy.store(false, Ordering::SeqCst);
                                set(&|s| s.phase = Phase::Unhealthy);
                                break Outcome::Unhealthy;
                            }
                        }
                    }
                }
                let interval = if healthy_since.is_some() { RUN_INTERVAL } else { START_INTERVAL };
                next_check.set(check_after(interval, &spec.health_check, port));
            }
        }
    };
    slot.healthy.store(false, Ordering::SeqCst);
    let healthy_for = healthy_since.map(|t| t.elapsed()).unwrap_or_default();
    match outcome {
        Outcome::Stop(grace) => {
            set(&|s| s.phase = Phase::Stopping);
            let how = terminate(&mut child, pid, grace).await;
            cell.logs.event(
                &source,
                format!("stopped instance {index} (pid {pid}): {how}"),
            );
        }
        Outcome::Unhealthy => {
            let how = terminate(&mut child, pid, STOP_GRACE).await;
            cell.logs.event(
                &source,
                format!("stopped unhealthy instance {index} (pid {pid}): {how}"),
            );
            set(&|s| {
                s.crashes += 1;
                s.last_exit = Some(format!(
                    "stopped after {UNHEALTHY_AFTER} failed health checks"
                ));
            });
        }
        Outcome::Exited | Outcome::OutOfMemory => {}
    }
    cell.registry.remove(pid);
    set(&|s| s.memory = None);
    // The group was killed: nothing writes there any more.
    let _ = tokio::task::spawn_blocking(move || sandbox.remove()).await;
    (outcome, healthy_for)
}

/// SIGTERM to the group, then SIGKILL after `grace`; returns how the process ended.
async fn terminate(child: &mut Child, pid: u32, grace: Duration) -> String {
    signal(-(pid as i32), libc::SIGTERM);
    // A stopped process (SIGSTOP, a debugger) gets its SIGTERM only once it runs again.
    signal(-(pid as i32), libc::SIGCONT);
    let how = match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => describe_exit(status),
        Ok(Err(err)) => format!("could not be waited for: {err}"),
        Err(_) => {
            signal(-(pid as i32), libc::SIGKILL);
            let _ = child.wait().await;
            format!("killed after a grace of {}s", grace.as_secs())
        }
    };
    signal(-(pid as i32), libc::SIGKILL);
    how
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "exited".into(),
    }
}

fn spawn(spec: &RunSpec, index: u32, port: u16, sandbox: &Sandbox) -> std::io::Result<Child> {
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(shell_command(&spec.command))
        .current_dir(sandbox.app())
        .env_clear()
        .envs(instance_env(
            spec,
            index,
            port,
            &sandbox.home(),
            &sandbox.tmp(),
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    super::forks::spawning(|| command.spawn())
}

/// A simple command replaces the shell (`exec`), so that the pid shown is the app's own.
fn shell_command(command: &str) -> String {
    let simple = !command
        .chars()
        .any(|c| matches!(c, ';' | '&' | '|' | '\n' | '(' | ')' | '`' | '<' | '>'));
    if simple {
        format!("exec {command}")
    } else {
        command.to_string()
    }
}

/// The environment of instance `index` listening on `port`, with `home` and `tmp` of its own.
pub fn instance_env(
    spec: &RunSpec,
    index: u32,
    port: u16,
    home: &Path,
    tmp: &Path,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = INHERITED
        .iter()
        .filter_map(|key| {
            std::env::var(key)
                .ok()
                .map(|value| (key.to_string(), value))
        })
        .collect();
    let mut set = |key: &str, value: String| {
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value));
    };
    if spec.runtime == Runtime::Python {
        let venv = spec.droplet.join("venv");
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        set("PATH", format!("{}:{path}", venv.join("bin").display()));
        set("VIRTUAL_ENV", venv.display().to_string());
        set("PYTHONUNBUFFERED", "1".into());
        // Bytecode written next to the sources would change the artifact.
        set("PYTHONDONTWRITEBYTECODE", "1".into());
    }
    for (key, value) in &spec.env_vars {
        set(key, value.clone());
    }
    // An app with `no-route` has no URIs, as on Cloud Foundry.
    let uris: Vec<String> = spec
        .route_url()
        .map(|_| format!("127.0.0.1:{}", spec.route_port))
        .into_iter()
        .collect();
    let vcap_application = serde_json::json!({
        "application_id": format!("{}-{}", spec.app, spec.env),
        "application_name": spec.app,
        "application_uris": uris,
        "application_version": spec.version,
        "instance_id": format!("{}-{}-{index}", spec.app, spec.env),
        "instance_index": index,
        "name": spec.app,
        "uris": uris,
        "version": spec.version,
        "space_name": spec.env,
        "host": "0.0.0.0",
        "port": port,
        "limits": { "mem": spec.memory_limit().map(|bytes| bytes / (1024 * 1024)) },
    });
    set("PORT", port.to_string());
    set("VCAP_APP_PORT", port.to_string());
    set("VCAP_APP_HOST", "0.0.0.0".into());
    set("VCAP_APPLICATION", vcap_application.to_string());
    set("VCAP_SERVICES", spec.services.to_string());
    set("CF_INSTANCE_INDEX", index.to_string());
    set("CF_INSTANCE_PORT", port.to_string());
    set("CF_INSTANCE_IP", "127.0.0.1".into());
    set("CF_INSTANCE_ADDR", format!("127.0.0.1:{port}"));
    set("INSTANCE_INDEX", index.to_string());
    if let Some(memory) = &spec.memory {
        set("MEMORY_LIMIT", memory.to_ascii_lowercase());
    }
    // After the manifest's env: they are the instance's own folders, as on a cell.
    set("HOME", home.display().to_string());
    set("TMPDIR", tmp.display().to_string());
    env
}

/// Copies an instance's output into the log, and into its status's tail until it is healthy
/// (the tail is what a failed start shows; afterwards, the log is enough). Lines about the
/// platform's own health checks, which hold [`CHECK_USER_AGENT`], are left out unless they show
/// a status other than 2xx: a passing check's line says nothing, and the checks' results are
/// logged as the platform's events, once per change; a failing one's may say why.
async fn pump(
    pipe: impl AsyncRead + Unpin,
    logs: LogSink,
    source: Arc<str>,
    stream: &'static str,
    status: Arc<Mutex<InstanceStatus>>,
) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    let mut keep_tail = true;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        line.truncate(MAX_LINE);
        let text = String::from_utf8_lossy(&line).into_owned();
        if text.contains(CHECK_USER_AGENT) && !shows_failure(&text) {
            continue;
        }
        if keep_tail {
            let mut status = status.lock().unwrap_or_else(|e| e.into_inner());
            keep_tail = status.phase == Phase::Starting;
            if status.tail.len() == TAIL {
                status.tail.pop_front();
            }
            status.tail.push_back(format!("[{source}] {stream} {text}"));
        }
        logs.output(&source, stream, text);
    }
}

/// Whether an access-log line shows an HTTP status other than 2xx: the number after the
/// request line of the common and combined formats (`"GET /health HTTP/1.1" 500 ...`, as
/// gunicorn, nginx and Python's http.server write it), or a JSON log's `"status":500`. A line
/// that shows no status is taken for a passing check's.
fn shows_failure(line: &str) -> bool {
    // Three digits at the start of `rest`, after blanks (and a JSON key's `":`).
    let status_at = |rest: &str| {
        let rest = rest.trim_start_matches([' ', ':', '"']);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        (digits.len() == 3)
            .then(|| digits.parse::<u16>().ok())
            .flatten()
    };
    let after_request_line = line
        .match_indices("HTTP/")
        .find_map(|(at, _)| line[at..].find('"').map(|end| &line[at + end + 1..]))
        .and_then(status_at);
    let json_status = || {
        line.match_indices("\"status\"")
            .find_map(|(at, key)| status_at(&line[at + key.len()..]))
    };
    after_request_line
        .or_else(json_status)
        .is_some_and(|code| !(200..300).contains(&code))
}

/// One health check after `delay`.
async fn check_after(delay: Duration, health: &HealthCheck, port: u16) -> Result<String, String> {
    tokio::time::sleep(delay).await;
    check(health, port).await
}

/// One health check; `Ok` and `Err` both say what was seen.
pub async fn check(health: &HealthCheck, port: u16) -> Result<String, String> {
    match health {
        HealthCheck::Process => Ok("the process runs".into()),
        HealthCheck::Port => {
            match tokio::time::timeout(CHECK_TIMEOUT, TcpStream::connect(("127.0.0.1", port))).await
            {
                Ok(Ok(_)) => Ok(format!("port {port} accepts connections")),
                Ok(Err(err)) => Err(format!("port {port}: {err}")),
                Err(_) => Err(format!(
                    "port {port}: no connection within {}s",
                    CHECK_TIMEOUT.as_secs()
                )),
            }
        }
        HealthCheck::Http { endpoint } => {
            match tokio::time::timeout(CHECK_TIMEOUT, http_status(port, endpoint)).await {
                Ok(Ok(line)) => {
                    let code = line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|c| c.parse::<u16>().ok());
                    let seen = format!(
                        "GET {endpoint} answered {}",
                        line.split_once(' ').map_or(line.as_str(), |(_, rest)| rest)
                    );
                    match code {
                        Some(200..=299) => Ok(seen),
                        _ => Err(seen),
                    }
                }
                Ok(Err(err)) => Err(format!("GET {endpoint} on port {port}: {err}")),
                Err(_) => Err(format!(
                    "GET {endpoint} on port {port}: no answer within {}s",
                    CHECK_TIMEOUT.as_secs()
                )),
            }
        }
    }
}

/// The status line of a GET, on a connection of its own.
async fn http_status(port: u16, endpoint: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!(
        "GET {endpoint} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {CHECK_USER_AGENT}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let line = line.trim_end().to_string();
    if line.is_empty() {
        return Err(std::io::Error::other(
            "the connection closed without an answer",
        ));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_environment_of_an_instance() {
        let spec = RunSpec {
            app: "web".into(),
            env: "staging".into(),
            version: "1.2.3".into(),
            artifact: "sha256:ab".into(),
            droplet: PathBuf::from("/d"),
            runtime: Runtime::Python,
            command: "python app.py".into(),
            instances: 2,
            memory: Some("64M".into()),
            env_vars: vec![
                ("PORT".into(), "1".into()),
                ("VERSION".into(), "1.2.3".into()),
            ],
            services: serde_json::json!({}),
            bindings: vec![],
            health_check: HealthCheck::Port,
            start_timeout_secs: 60,
            route_port: 8081,
            no_route: false,
            metrics_port: None,
        };
        let env: std::collections::HashMap<_, _> = instance_env(
            &spec,
            1,
            41000,
            Path::new("/i/1-a/home"),
            Path::new("/i/1-a/tmp"),
        )
        .into_iter()
        .collect();
        assert_eq!(
            env["PORT"], "41000",
            "the platform's PORT wins over the manifest's"
        );
        assert_eq!(env["VERSION"], "1.2.3");
        assert!(env["PATH"].starts_with("/d/venv/bin:"));
        let vcap: serde_json::Value = serde_json::from_str(&env["VCAP_APPLICATION"]).unwrap();
        assert_eq!(vcap["instance_index"], 1);
        assert_eq!(vcap["application_uris"][0], "127.0.0.1:8081");
        assert_eq!(vcap["limits"]["mem"], 64);
        assert_eq!(env["VCAP_SERVICES"], "{}");
        assert_eq!(env["HOME"], "/i/1-a/home");
        assert_eq!(env["TMPDIR"], "/i/1-a/tmp");
    }

    #[test]
    fn only_failing_checks_access_lines_are_kept() {
        let combined = |code: u16| {
            format!(
                "127.0.0.1 - - [27/Nov/2026:10:00:00 +0000] \"GET /health HTTP/1.1\" {code} 15 \
                 \"-\" \"{CHECK_USER_AGENT}\""
            )
        };
        assert!(!shows_failure(&combined(200)));
        assert!(!shows_failure(&combined(204)));
        assert!(shows_failure(&combined(500)));
        assert!(shows_failure(&combined(404)));
        assert!(!shows_failure(&format!(
            "{{\"method\":\"GET\",\"path\":\"/health\",\"status\":200,\"ua\":\"{CHECK_USER_AGENT}\"}}"
        )));
        assert!(shows_failure(&format!(
            "{{\"status\": 503, \"user_agent\": \"{CHECK_USER_AGENT}\"}}"
        )));
        // No status to be seen: taken for a pass.
        assert!(!shows_failure(&format!(
            "GET /health from {CHECK_USER_AGENT}"
        )));
    }

    #[test]
    fn simple_commands_replace_the_shell() {
        assert_eq!(shell_command("./app --x"), "exec ./app --x");
        assert_eq!(shell_command("cd a && ./app"), "cd a && ./app");
    }
}
