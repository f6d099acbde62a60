//! How cdflow talks to an environment's server: one request per connection on the unix socket
//! `apps/<app>/envs/<env>/control.sock`, as one line of JSON; the server answers with lines of JSON, zero
//! or more `{"progress": "..."}` and then one `{"done": STATUS}` or `{"failed": "..."}`.
//!
//! ```text
//! > {"op":"ping"}                          < {"done":{...status...}}
//! > {"op":"status"}                        < {"done":{...status...}}
//! > {"op":"deploy","spec":{...},"env_file":{...}}
//!                                          < {"progress":"instance 0 healthy on port 41234"}
//!                                          < {"done":{...status...}}
//! > {"op":"stop"}                          < {"done":{...status...}}  (then the server exits)
//! > {"op":"stats"}                         < {"stats":{"versions":[...]}}
//! ```
//!
//! A deploy that asks for a canary (`"canary": 10`, its first weight) starts the new version's
//! instances as a deploy does but, once they are healthy, gives them that percentage of the
//! route's requests instead of the whole route (see [`super::proxy`]), and answers `done` with
//! the status's `canary` set. The connection then stays open for the canary's next steps, one
//! request and its answer at a time:
//!
//! ```text
//! > {"op":"canary_weight","weight":50}     < {"done":{...status...}}
//! > {"op":"canary_finish"}                 < progress..., {"done":{...status...}}
//! > {"op":"canary_cancel"}                 < progress..., {"done":{...status...}}
//! ```
//!
//! The canary lives as long as that connection, its lease: when the connection closes before
//! a finish (the cdflow running the canary was killed, say), the server cancels the canary,
//! and the stable version, which never stopped, takes the whole route again. A deploy (or a
//! rollback) that comes while a canary runs cancels it first.
//!
//! `stats` gives what the route counted per version (see [`super::metrics`]): requests by method
//! and status class, upstream errors, retries, a latency histogram and healthy instances.
//!
//! This file also holds the client side: starting a server when none runs, and stopping one.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::layout::EnvPaths;
use super::metrics::Snapshot;
use super::spec::{EnvFile, RunSpec};
use super::supervisor::InstanceView;
use crate::error::Interrupted;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Status,
    /// Start `spec`'s instances, switch the route to them once healthy, stop the old ones, and
    /// write `env_file` as the environment's record.
    Deploy {
        spec: Box<RunSpec>,
        env_file: Box<EnvFile>,
        /// Start as a canary with this share of the requests (percent), if something else
        /// serves; `env_file` is then written when the canary finishes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        canary: Option<u32>,
    },
    /// On the connection of a canary's deploy: give the canary this share of the requests.
    CanaryWeight {
        weight: u32,
    },
    /// On the connection of a canary's deploy: make the canary the whole route and retire the
    /// stable version, as a deploy's switch does.
    CanaryFinish,
    /// On the connection of a canary's deploy: give the whole route back to the stable version
    /// and stop the canary.
    CanaryCancel,
    /// Stop every instance and exit.
    Stop,
    /// What the route has counted per version ([`Snapshot`]): the same numbers as its
    /// Prometheus metrics, for an analysis that compares versions.
    Stats,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Progress(String),
    Done(Box<Status>),
    Failed(String),
    /// The answer to `stats`.
    Stats(Box<Snapshot>),
}

/// What a server says of its environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The app whose environment it is (absent from the answers of servers of older cdflows).
    #[serde(default)]
    pub app: String,
    pub env: String,
    pub server_pid: u32,
    /// What the route serves, if anything.
    pub serving: Option<RunSpec>,
    pub route_port: Option<u16>,
    /// Where the route's metrics are served on 127.0.0.1 (none with `no-route`, or before a
    /// first deploy).
    #[serde(default)]
    pub metrics_port: Option<u16>,
    /// The serving deployment's instances, then any others still running (a canary, or
    /// starting, or draining).
    pub instances: Vec<InstanceView>,
    /// A canary in progress: the version, and its share of the route's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryView>,
}

/// A canary in progress, as the server says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryView {
    pub version: String,
    /// Percent of the route's requests.
    pub weight: u32,
}

/// Paths of unix sockets are limited to about 100 bytes; a longer one is reached through
/// `/proc/self/fd/<dir>/control.sock`, which names the same file.
pub struct SocketPath {
    pub path: PathBuf,
    _dir: Option<std::fs::File>,
}

pub fn socket_path(paths: &EnvPaths) -> std::io::Result<SocketPath> {
    let full = paths.socket();
    if full.as_os_str().len() < 100 {
        return Ok(SocketPath {
            path: full,
            _dir: None,
        });
    }
    let dir = std::fs::File::open(&paths.dir)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}/control.sock", dir.as_raw_fd()));
    Ok(SocketPath {
        path,
        _dir: Some(dir),
    })
}

fn connect(paths: &EnvPaths) -> std::io::Result<UnixStream> {
    let socket = socket_path(paths)?;
    UnixStream::connect(&socket.path)
}

/// Sends `request` and returns the final reply, passing progress lines to `progress`. With
/// `patient`, it waits as long as the server works (a deploy), noticing an interruption of
/// cdflow; otherwise a server that does not answer within seconds is an error.
pub fn call(
    paths: &EnvPaths,
    request: &Request,
    patient: bool,
    progress: impl FnMut(&str),
) -> Result<Status> {
    Session::open(paths)?.send(request, patient, progress)
}

/// What the route has counted per version (the `stats` request).
pub fn stats(paths: &EnvPaths) -> Result<Snapshot> {
    let mut stream =
        connect(paths).with_context(|| format!("the server of `{}` does not answer", paths.env))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"{\"op\":\"stats\"}\n")?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .with_context(|| format!("the server of `{}` did not give its stats", paths.env))?;
    match serde_json::from_str::<Reply>(&line) {
        Ok(Reply::Stats(snapshot)) => Ok(*snapshot),
        Ok(Reply::Failed(text)) => Err(anyhow!(text)),
        _ => bail!(
            "the server of `{}` answered its stats with nonsense: {line}",
            paths.env
        ),
    }
}

/// One connection to the server, kept for several requests: a canary's (see the module's
/// documentation), whose lease ends when this is dropped.
pub struct Session<'a> {
    paths: &'a EnvPaths,
    reader: BufReader<UnixStream>,
}

impl<'a> Session<'a> {
    pub fn open(paths: &'a EnvPaths) -> Result<Session<'a>> {
        let stream = connect(paths)
            .with_context(|| format!("the server of `{}` does not answer", paths.env))?;
        Ok(Session {
            paths,
            reader: BufReader::new(stream),
        })
    }

    /// Sends `request` and returns the final reply, as [`call`] does.
    pub fn send(
        &mut self,
        request: &Request,
        patient: bool,
        progress: impl FnMut(&str),
    ) -> Result<Status> {
        self.send_with(request, patient, true, progress)
    }

    /// Sends `request` and waits for its final reply however long it takes, even when cdflow
    /// is being stopped: for a canary's finish or cancel, whose end the run reports.
    pub fn send_to_the_end(
        &mut self,
        request: &Request,
        progress: impl FnMut(&str),
    ) -> Result<Status> {
        self.send_with(request, true, false, progress)
    }

    fn send_with(
        &mut self,
        request: &Request,
        patient: bool,
        interruptible: bool,
        mut progress: impl FnMut(&str),
    ) -> Result<Status> {
        let paths = self.paths;
        let tick = if patient {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        self.reader.get_ref().set_read_timeout(Some(tick))?;
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        self.reader.get_mut().write_all(line.as_bytes())?;
        let reader = &mut self.reader;
        let mut buffer = Vec::new();
        loop {
            match reader.read_until(b'\n', &mut buffer) {
                Ok(0) => bail!(
                    "the server of `{}` closed the connection before answering; see {}",
                    paths.env,
                    paths.server_log().display()
                ),
                Ok(_) if buffer.ends_with(b"\n") => {
                    let reply: Reply = serde_json::from_slice(&buffer).with_context(|| {
                        format!("the server of `{}` answered nonsense", paths.env)
                    })?;
                    buffer.clear();
                    match reply {
                        Reply::Progress(text) => progress(&text),
                        Reply::Done(status) => return Ok(*status),
                        Reply::Failed(text) => return Err(anyhow!(text)),
                        Reply::Stats(_) => {
                            bail!("the server of `{}` answered out of turn", paths.env)
                        }
                    }
                }
                Ok(_) => {}
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if !patient {
                        bail!(
                            "the server of `{}` did not answer within {}s",
                            paths.env,
                            tick.as_secs()
                        );
                    }
                    if interruptible && crate::signals::stop_requested() {
                        return Err(anyhow::Error::new(Interrupted).context(format!(
                            "stopped waiting; the server of `{}` finishes what it was asked on its \
                             own (see `cdflow status`)",
                            paths.env
                        )));
                    }
                }
                Err(err) => return Err(err).context("reading the server's answer"),
            }
        }
    }
}

/// The server's status, or `None` when no server answers.
pub fn status(paths: &EnvPaths) -> Option<Status> {
    if !paths.socket().exists() {
        return None;
    }
    call(paths, &Request::Status, false, |_| {}).ok()
}

/// Whether a server lives for the environment: it answers, or holds its lock.
pub fn server_running(paths: &EnvPaths) -> bool {
    server_lock_held(paths) || status(paths).is_some()
}

/// Whether a live process holds the server lock (the server, or one starting).
pub fn server_lock_held(paths: &EnvPaths) -> bool {
    let Ok(file) = std::fs::File::open(paths.server_lock()) else {
        return false;
    };
    // SAFETY: flock(2) on a descriptor we own; it touches no memory.
    let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
    // Closing the file releases the probe's shared lock.
    !free
}

/// How long a starting server gets to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Makes sure a server runs for the environment, starting one (detached, in a session of its
/// own, so that it outlives cdflow) when none does.
pub fn ensure_server(state_root: &Path, paths: &EnvPaths) -> Result<()> {
    if status(paths).is_some() {
        return Ok(());
    }
    if server_lock_held(paths) {
        // Starting, or hung: give it the time a start takes.
        if wait_for_server(paths, None).is_ok() {
            return Ok(());
        }
        bail!(
            "the server of `{}` holds {} but does not answer; stop it with `cdflow down --app {} \
             --env {}`",
            paths.env,
            paths.server_lock().display(),
            paths.app,
            paths.env
        );
    }
    // A server that died leaves its instances running: stop them, they hold ports.
    super::pids::stop_leftovers(paths, Duration::from_secs(5));
    std::fs::create_dir_all(&paths.dir)
        .with_context(|| format!("could not create {}", paths.dir.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.server_log())?;
    let exe = std::env::current_exe().context("could not find cdflow's own executable")?;
    let mut command = Command::new(exe);
    command
        .arg("serve-env")
        .arg("--state")
        .arg(state_root)
        .arg("--app")
        .arg(&paths.app)
        .arg("--env")
        .arg(&paths.env)
        .current_dir(&paths.dir)
        .env_clear()
        .envs(
            std::env::vars_os()
                .filter(|(key, _)| SERVER_ENV.iter().any(|keep| key.to_str() == Some(keep))),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid(2) is async-signal-safe; the child is alone between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start the server of `{}`", paths.env))?;
    let result = wait_for_server(paths, Some(&mut child));
    // Reaped by a thread, so that it leaves no zombie while this cdflow runs on.
    std::thread::spawn(move || child.wait());
    result
}

/// What the server keeps of cdflow's environment (and so what instances may inherit).
const SERVER_ENV: [&str; 12] = [
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "RUST_BACKTRACE",
    "RUST_LOG",
    // `off` turns the route's metrics off, to measure what they cost (bench/metrics).
    super::proxy::METRICS_SWITCH,
];

fn wait_for_server(paths: &EnvPaths, mut child: Option<&mut std::process::Child>) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if status(paths).is_some() {
            return Ok(());
        }
        if let Some(child) = child.as_deref_mut() {
            if let Ok(Some(exit)) = child.try_wait() {
                bail!(
                    "the server of `{}` exited at once ({exit}); the end of {}:\n{}",
                    paths.env,
                    paths.server_log().display(),
                    tail_of(&paths.server_log(), 20)
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the server of `{}` did not answer within {}s; see {}",
                paths.env,
                START_TIMEOUT.as_secs(),
                paths.server_log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn tail_of(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// How long `down` waits for a server to stop its instances before killing everything.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Stops the environment's server and everything it started; returns how many instances were
/// running. Works when the server is gone or hung too, from `pids.json`.
pub fn stop_server(paths: &EnvPaths) -> Result<usize> {
    let mut stopped = 0;
    if let Some(status) = status(paths) {
        stopped = status.instances.len();
        let _ = call(paths, &Request::Stop, false, |_| {});
        let deadline = Instant::now() + STOP_TIMEOUT;
        while server_lock_held(paths) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Whatever is left (a hung server, instances of a server that died) goes by force.
    stopped = stopped.max(super::pids::stop_leftovers(paths, Duration::from_secs(5)));
    let _ = std::fs::remove_file(paths.socket());
    remove_instance_folders(paths);
    Ok(stopped)
}

/// Removes the folders that instances of a dead server left (a live one removes its own). Done
/// holding the server lock, so that no server starts instances meanwhile; skipped if one holds it.
fn remove_instance_folders(paths: &EnvPaths) {
    let Ok(file) = std::fs::File::open(paths.server_lock()) else {
        return;
    };
    // SAFETY: flock(2) on a descriptor we own; it touches no memory.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        super::sandbox::remove_stale(&paths.instances());
    }
    // Closing the file releases the lock.
}
