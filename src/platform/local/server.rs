//! The background server of one environment (`cdflow serve-env`): the route's reverse proxy,
//! the supervisor of its instances, and the control socket through which cdflow deploys.
//!
//! One server per environment, started by the first cdflow that deploys there, in a session of
//! its own so that it outlives that cdflow. It holds `server.lock` for its whole life (so a
//! second server for the same environment refuses to start), records its processes in
//! `pids.json`, and stops every instance before it exits (on `stop`, SIGTERM or SIGINT). With
//! nothing to serve (a first deploy that failed, or never a deploy), it exits once no call has
//! come for [`IDLE_EXIT`].
//!
//! A deploy, one at a time: bind the route's port (first deploy or a port change), start the new
//! instances, wait until every one passes its health check, switch the route in one step (and
//! only now serve the new port and close the old one), write `env.json`, then retire the old
//! instances: wait for their requests in flight (up to [`DRAIN_TIMEOUT`]), SIGTERM, grace,
//! SIGKILL. If a new instance fails (exits, or is not
//! healthy by the manifest's `timeout`), the new instances are stopped and the route never
//! moved.
//!
//! A canary deploy (docs/canary.md) stops short of the switch: the healthy new instances get a
//! share of the route's requests next to the stable ones. cdflow, which measures, then moves
//! the share, and finishes the canary (the switch above, from the retirement of the stable
//! instances on) or cancels it (the canary's instances are retired and stopped the same way;
//! the stable ones never stopped). The canary lives as long as the control connection of the
//! cdflow that started it (see [`super::control`]).

use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::artifacts::short;
use super::control::{socket_path, CanaryView, Reply, Request, Status};
use super::layout::{local_dir, EnvPaths};
use super::logs::LogSink;
use super::pids::Registry;
use super::proxy::Proxy;
use super::services;
use super::spec::{EnvFile, RunSpec};
use super::supervisor::{Cell, Instance, Phase, STOP_GRACE};

/// How long the old instances get to finish the requests they were given before a switch.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// A server with nothing to serve exits after this long.
pub const IDLE_EXIT: Duration = Duration::from_secs(30);

/// `cdflow serve-env --state DIR --app APP --env NAME`.
pub fn run(state_root: &Path, app: &str, env: &str) -> Result<()> {
    super::layout::check_env_name(env)?;
    super::layout::check_app_name(app)?;
    let paths = EnvPaths::at(&local_dir(state_root), app, env);
    std::fs::create_dir_all(&paths.dir)
        .with_context(|| format!("could not create {}", paths.dir.display()))?;
    let _lock = take_server_lock(&paths)?;
    // One thread: the proxy's work per request is small and mostly in the kernel, and a single
    // thread saves the wake-ups between workers that cost more than they give on a few cores
    // (measured: about a quarter less CPU per proxied request than two workers).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(paths))
}

/// The server lock, held until the process ends; the kernel frees it if it is killed.
fn take_server_lock(paths: &EnvPaths) -> Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(paths.server_lock())?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        // SAFETY: flock(2) on a descriptor we own; it touches no memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        // A cdflow probing the lock holds it shared for an instant: try again a little.
        if Instant::now() > deadline {
            bail!("another server already serves `{}`", paths.env);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Server {
    paths: EnvPaths,
    cell: Cell,
    /// The backing services this server started: started before the instances that bind
    /// them, stopped after every instance (see [`services`] for why the server owns them).
    services: Arc<Mutex<services::Running>>,
    /// One deploy at a time.
    deploying: tokio::sync::Mutex<()>,
    inner: Mutex<Inner>,
    exit: Notify,
    /// Numbers the canaries, so that a connection acts only on its own.
    canaries: AtomicU64,
}

/// The progress lines of a piece of work, for its caller.
type Progress = Arc<dyn Fn(String) + Send + Sync>;

/// A canary in progress: its instances take `weight` percent of the route's requests.
struct CanaryRun {
    id: u64,
    generation: Arc<Generation>,
    weight: u32,
    /// What the environment's record becomes when the canary finishes.
    env_file: EnvFile,
}

#[derive(Default)]
struct Inner {
    current: Option<Arc<Generation>>,
    /// A canary next to `current`, taking a share of the route.
    canary: Option<CanaryRun>,
    /// Instances started but not (or no longer) serving: a deploy's new ones while they start,
    /// the old ones while they drain. Kept so that a stop reaches them too.
    others: Vec<Arc<Generation>>,
    route: Option<Route>,
    /// The route's metrics, served at `/metrics` on their own port while the route serves.
    metrics: Option<Route>,
    /// Since when nothing has served and nobody has called; `None` while something serves or
    /// a deploy runs.
    idle_since: Option<Instant>,
}

struct Route {
    port: u16,
    task: JoinHandle<()>,
}

impl Drop for Route {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The instances of one deployment.
struct Generation {
    spec: Arc<RunSpec>,
    instances: Mutex<Vec<Instance>>,
}

impl Generation {
    fn start(cell: &Cell, spec: RunSpec) -> Generation {
        let spec = Arc::new(spec);
        let instances = (0..spec.instances)
            .map(|index| Instance::start(cell, Arc::clone(&spec), index))
            .collect();
        Generation {
            spec,
            instances: Mutex::new(instances),
        }
    }

    fn slots(&self) -> Vec<Arc<super::proxy::Slot>> {
        self.lock().iter().map(|i| Arc::clone(&i.slot)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
        self.instances.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops every instance (concurrently) and waits until all are gone.
    async fn stop(&self, grace: Duration) {
        let mut instances = std::mem::take(&mut *self.lock());
        for instance in &instances {
            instance.signal_stop(grace);
        }
        for instance in &mut instances {
            instance.stop(grace).await;
        }
    }

    /// Takes the instances out of the route's rotation for good and waits until their requests
    /// in flight are answered; false if some were still running at `timeout`.
    async fn drain(&self, timeout: Duration) -> bool {
        let slots = self.slots();
        for slot in &slots {
            slot.retired.store(true, Ordering::SeqCst);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if slots
                .iter()
                .all(|s| s.in_flight.load(Ordering::SeqCst) == 0)
            {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn serve(paths: EnvPaths) -> Result<()> {
    let socket = socket_path(&paths)?;
    let _ = std::fs::remove_file(&socket.path);
    let listener = UnixListener::bind(&socket.path)
        .with_context(|| format!("could not listen on {}", paths.socket().display()))?;
    let logs = LogSink::open(&paths)?;
    // What a server killed before it could stop its instances left behind.
    super::sandbox::remove_stale(&paths.instances());
    let registry = Arc::new(Registry::new(&paths));
    let server = Arc::new(Server {
        cell: Cell {
            logs: logs.clone(),
            registry: Arc::clone(&registry),
            proxy: Arc::new(Proxy::new(logs.clone())),
            instances: paths.instances(),
        },
        paths: paths.clone(),
        services: Arc::default(),
        deploying: tokio::sync::Mutex::new(()),
        inner: Mutex::new(Inner {
            idle_since: Some(Instant::now()),
            ..Inner::default()
        }),
        exit: Notify::new(),
        canaries: AtomicU64::new(0),
    });
    logs.event(
        "API",
        format!(
            "server of `{}` of `{}` started (pid {})",
            paths.env,
            paths.app,
            std::process::id()
        ),
    );

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut idle_check = tokio::time::interval(Duration::from_secs(1));
    let why = loop {
        tokio::select! {
            // Biased, so that a caller already waiting is accepted before an idle exit.
            biased;
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    // A call restarts the idle clock: `cdflow push` asks for the status and
                    // then deploys, and the server must not go away in between.
                    if let Some(since) = server.inner().idle_since.as_mut() {
                        *since = Instant::now();
                    }
                    tokio::spawn(Arc::clone(&server).handle(stream));
                }
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = server.exit.notified() => break "a stop request",
            _ = idle_check.tick() => {
                server.watch_services();
                let idle = server.inner().idle_since.is_some_and(|since| since.elapsed() > IDLE_EXIT);
                if idle {
                    break "having nothing to serve";
                }
            }
        }
    };
    logs.event("API", format!("server stopping on {why}"));
    server.stop_everything().await;
    let _ = std::fs::remove_file(&socket.path);
    registry.clear();
    logs.event("API", "server stopped");
    // Lets the log writer flush.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

impl Server {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn handle(self: Arc<Self>, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let request = match lines.next_line().await {
            Ok(Some(line)) => serde_json::from_str::<Request>(&line)
                .map_err(|err| format!("cannot read the request: {err}")),
            _ => return,
        };
        match request {
            Err(err) => {
                let _ = write
                    .write_all(line_of(&Reply::Failed(err)).as_bytes())
                    .await;
            }
            Ok(Request::Ping | Request::Status) => {
                let status = self.status();
                let _ = write
                    .write_all(line_of(&Reply::Done(Box::new(status))).as_bytes())
                    .await;
            }
            Ok(Request::Stats) => {
                let stats = Reply::Stats(Box::new(self.cell.proxy.stats()));
                let _ = write.write_all(line_of(&stats).as_bytes()).await;
            }
            Ok(Request::Stop) => {
                let status = self.status();
                let _ = write
                    .write_all(line_of(&Reply::Done(Box::new(status))).as_bytes())
                    .await;
                self.exit.notify_one();
            }
            Ok(Request::Deploy {
                spec,
                env_file,
                canary,
            }) => {
                let server = Arc::clone(&self);
                let started = relayed(&mut write, move |progress| async move {
                    server
                        .deploy(*spec, *env_file, canary, move |text| progress(text))
                        .await
                })
                .await
                .flatten();
                if let Some(id) = started {
                    self.canary_session(id, &mut lines, &mut write).await;
                }
            }
            Ok(Request::CanaryWeight { .. } | Request::CanaryFinish | Request::CanaryCancel) => {
                let refused = Reply::Failed(
                    "a canary's steps are asked on the connection of its deploy".into(),
                );
                let _ = write.write_all(line_of(&refused).as_bytes()).await;
            }
        }
        let _ = write.shutdown().await;
    }

    /// The steps of canary `id`, asked on the connection of its deploy, until it finishes or
    /// is cancelled. The connection is the canary's lease: when it closes first, the canary is
    /// cancelled.
    async fn canary_session(
        self: &Arc<Self>,
        id: u64,
        lines: &mut tokio::io::Lines<BufReader<OwnedReadHalf>>,
        write: &mut OwnedWriteHalf,
    ) {
        loop {
            let request = match lines.next_line().await {
                Ok(Some(line)) => serde_json::from_str::<Request>(&line)
                    .map_err(|err| format!("cannot read the request: {err}")),
                _ => {
                    let why = "the cdflow running it went away";
                    let _ = self.cancel_canary(Some(id), why, Arc::new(|_| {})).await;
                    return;
                }
            };
            let server = Arc::clone(self);
            match request {
                Ok(Request::CanaryWeight { weight }) => {
                    relayed(write, move |_| async move {
                        server.canary_weight(id, weight).map(|status| (status, ()))
                    })
                    .await;
                }
                Ok(Request::CanaryFinish) => {
                    relayed(write, move |progress| async move {
                        server.finish_canary(id, progress).await
                    })
                    .await;
                    return;
                }
                Ok(Request::CanaryCancel) => {
                    relayed(write, move |progress| async move {
                        server
                            .cancel_canary(Some(id), "cdflow cancelled it", progress)
                            .await
                    })
                    .await;
                    return;
                }
                other => {
                    let text = match other {
                        Err(text) => text,
                        Ok(_) => "a canary's connection takes only its steps (canary_weight, \
                                  canary_finish, canary_cancel)"
                            .into(),
                    };
                    let _ = write
                        .write_all(line_of(&Reply::Failed(text)).as_bytes())
                        .await;
                }
            }
        }
    }

    fn status(&self) -> Status {
        let inner = self.inner();
        let mut instances = Vec::new();
        if let Some(current) = &inner.current {
            instances.extend(current.lock().iter().map(Instance::view));
        }
        if let Some(canary) = &inner.canary {
            instances.extend(canary.generation.lock().iter().map(Instance::view));
        }
        for other in &inner.others {
            instances.extend(other.lock().iter().map(Instance::view));
        }
        Status {
            app: self.paths.app.clone(),
            env: self.paths.env.clone(),
            server_pid: std::process::id(),
            serving: inner.current.as_ref().map(|g| (*g.spec).clone()),
            route_port: inner.route.as_ref().map(|r| r.port),
            metrics_port: inner.metrics.as_ref().map(|r| r.port),
            instances,
            canary: inner.canary.as_ref().map(|run| CanaryView {
                version: run.generation.spec.version.clone(),
                weight: run.weight,
            }),
        }
    }

    /// A listener on the route's port when the route is not there yet (a first deploy, or a
    /// port change). Bound before any instance starts, so that a port in use fails the deploy
    /// at once; it serves only once the new version is healthy ([`Server::open_route`]).
    async fn bind_route(&self, port: u16) -> Result<Option<TcpListener>, String> {
        if self.inner().route.as_ref().is_some_and(|r| r.port == port) {
            return Ok(None);
        }
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|err| {
                let why = if err.kind() == std::io::ErrorKind::PermissionDenied {
                    "ports below 1024 need root or CAP_NET_BIND_SERVICE;"
                } else {
                    "another program holds it?"
                };
                format!(
                    "the route's port {port} cannot be used ({err}): {why} choose another with \
                     `port` under [env.{}] in cdflow.toml",
                    self.paths.env
                )
            })?;
        Ok(Some(listener))
    }

    /// A listener for the route's metrics when there is none yet or `metrics_port` changed;
    /// none when they are off. Bound, like the route's, before any instance starts. Without a
    /// `metrics_port`, a free port, kept for the server's life.
    async fn bind_metrics(&self, spec: &RunSpec) -> Result<Option<TcpListener>, String> {
        if spec.no_route || !self.cell.proxy.counts() {
            return Ok(None);
        }
        let wanted = spec.metrics_port;
        let current = self.inner().metrics.as_ref().map(|r| r.port);
        if current.is_some() && (wanted.is_none() || wanted == current) {
            return Ok(None);
        }
        let listener = TcpListener::bind(("127.0.0.1", wanted.unwrap_or(0)))
            .await
            .map_err(|err| {
                format!(
                    "the route's metrics port {} cannot be used ({err}): choose another with \
                     `metrics_port` under [env.{}] in cdflow.toml",
                    wanted.unwrap_or(0),
                    self.paths.env
                )
            })?;
        Ok(Some(listener))
    }

    /// Serves the route's metrics on `listener`, in place of any before.
    fn open_metrics(&self, listener: TcpListener) {
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let task = tokio::spawn(super::metrics::serve(
            listener,
            Arc::clone(&self.cell.proxy),
            self.paths.app.clone(),
            self.paths.env.clone(),
        ));
        self.inner().metrics = Some(Route { port, task });
    }

    /// Serves the route on `listener`. A route on another port closes; its open connections
    /// finish.
    fn open_route(&self, port: u16, listener: TcpListener) {
        let task = tokio::spawn(Arc::clone(&self.cell.proxy).serve(listener));
        self.inner().route = Some(Route { port, task });
    }

    /// Deploys `spec`, as a canary with `canary` percent of the requests when asked and
    /// something else serves; returns the status, and the canary's number when one started.
    async fn deploy(
        self: &Arc<Self>,
        spec: RunSpec,
        env_file: EnvFile,
        canary: Option<u32>,
        progress: impl Fn(String),
    ) -> Result<(Status, Option<u64>), String> {
        let _one_at_a_time = self.deploying.lock().await;
        self.inner().idle_since = None;
        // Whoever asked for a canary in progress lost the deploy lock: a new deploy wins.
        let _ = self
            .cancel_canary_locked(None, "a new deploy came", &progress)
            .await;
        let result = self.deploy_locked(spec, env_file, canary, &progress).await;
        let mut inner = self.inner();
        if inner.current.is_none() {
            // Nothing serves: free the ports, and let the server go if nothing comes.
            inner.route = None;
            inner.metrics = None;
            inner.idle_since = Some(Instant::now());
        }
        drop(inner);
        result.map(|canary| (self.status(), canary))
    }

    async fn deploy_locked(
        self: &Arc<Self>,
        spec: RunSpec,
        env_file: EnvFile,
        canary: Option<u32>,
        progress: &impl Fn(String),
    ) -> Result<Option<u64>, String> {
        let logs = &self.cell.logs;
        let started = Instant::now();
        // Until the switch, the route stays where it is, even when its port changes.
        let new_route = match spec.no_route {
            true => None,
            false => self.bind_route(spec.route_port).await?,
        };
        let new_metrics = self.bind_metrics(&spec).await?;
        let what = format!("{} {} ({})", spec.app, spec.version, short(&spec.artifact));
        let message = format!(
            "starting {} instance(s) of {what}, health check {}",
            spec.instances, spec.health_check
        );
        logs.event("API", message.clone());
        progress(message);
        let spec = self.start_services(spec, progress).await?;
        let timeout = Duration::from_secs(spec.start_timeout_secs);
        let generation = Arc::new(Generation::start(&self.cell, spec));
        self.inner().others.push(Arc::clone(&generation));

        if let Err(failure) = self
            .wait_healthy(&generation, started, timeout, progress)
            .await
        {
            logs.event(
                "API",
                format!("{what} did not become healthy; the route stays as it was"),
            );
            generation.stop(STOP_GRACE).await;
            self.forget(&generation);
            let serving = match &self.inner().current {
                Some(current) => format!(
                    "the route stays on {} {}",
                    current.spec.app, current.spec.version
                ),
                None => "nothing serves the route".into(),
            };
            return Err(format!("{failure}\n{what} was stopped; {serving}"));
        }

        if let Some(weight) = canary {
            let stable = self.inner().current.clone();
            let no_canary = match &stable {
                None => Some("nothing served before, so there is no stable version to compare"),
                Some(_) if generation.spec.no_route => Some("the app has no route (no-route)"),
                Some(_) if new_route.is_some() => Some("the route moves to another port"),
                Some(stable) if stable.spec.version == generation.spec.version => Some(
                    "the stable version is the same version, which the route's counts cannot \
                     tell apart",
                ),
                Some(_) => None,
            };
            match no_canary {
                Some(why) => {
                    let message = format!("no canary: {why}; {what} takes the whole route");
                    logs.event("API", message.clone());
                    progress(message);
                }
                None => {
                    if let Some(listener) = new_metrics {
                        self.open_metrics(listener);
                    }
                    let id = self.begin_canary(&generation, env_file, weight);
                    let message = format!(
                        "{what} healthy after {:.2}s; it takes {weight}% of the route's \
                         requests as a canary",
                        started.elapsed().as_secs_f64()
                    );
                    logs.event("API", message.clone());
                    progress(message);
                    return Ok(Some(id));
                }
            }
        }

        // The switch: one store, the route now points at the new instances only.
        self.cell.proxy.switch(generation.slots());
        if let Some(listener) = new_route {
            self.open_route(generation.spec.route_port, listener);
        } else if generation.spec.no_route {
            // An app with `no-route` has no route: a route it had before closes.
            self.inner().route = None;
            self.inner().metrics = None;
        }
        if let Some(listener) = new_metrics {
            self.open_metrics(listener);
        }
        let old = {
            let mut inner = self.inner();
            inner.others.retain(|g| !Arc::ptr_eq(g, &generation));
            let old = inner.current.replace(Arc::clone(&generation));
            if let Some(old) = &old {
                inner.others.push(Arc::clone(old));
            }
            old
        };
        let message = match generation.spec.route_url() {
            Some(url) => format!(
                "route {url} switched to {what} in {:.2}s",
                started.elapsed().as_secs_f64()
            ),
            None => format!(
                "{what} runs, with no route (no-route), after {:.2}s",
                started.elapsed().as_secs_f64()
            ),
        };
        logs.event("API", message.clone());
        progress(message);
        self.record_and_retire(&generation, old, env_file, progress)
            .await;
        Ok(None)
    }

    /// After a switch to `generation`: writes `env_file` as the environment's record, retires
    /// and stops the `old` instances once their requests are answered, and stops the services
    /// that nothing binds any more.
    async fn record_and_retire(
        &self,
        generation: &Arc<Generation>,
        old: Option<Arc<Generation>>,
        env_file: EnvFile,
        progress: &impl Fn(String),
    ) {
        let logs = &self.cell.logs;
        // Synced to disk, off the thread that proxies.
        let paths = self.paths.clone();
        let saved = tokio::task::spawn_blocking(move || {
            // The server only ever runs for real; its writes go through the same seam.
            let ui = crate::ui::Ui::new(crate::ui::Style::Plain, Default::default());
            let exec = crate::exec::Exec::new(&paths.dir, crate::exec::Mode::Real, ui)?;
            env_file.save(&exec, &paths)
        })
        .await
        .unwrap_or_else(|err| Err(anyhow::anyhow!("{err}")));
        if let Err(err) = saved {
            let text = format!(
                "could not record the deployment in {}: {err:#}",
                self.paths.env_file().display()
            );
            logs.event("API", text.clone());
            progress(text);
        }

        if let Some(old) = old {
            let drain_started = Instant::now();
            let drained = old.drain(DRAIN_TIMEOUT).await;
            let old_what = format!("{} {}", old.spec.app, old.spec.version);
            let message = if drained {
                format!(
                    "{old_what}: requests in flight answered in {:.2}s; stopping it",
                    drain_started.elapsed().as_secs_f64()
                )
            } else {
                format!(
                    "{old_what}: requests still in flight after {}s; stopping it anyway",
                    DRAIN_TIMEOUT.as_secs()
                )
            };
            logs.event("API", message.clone());
            progress(message);
            old.stop(STOP_GRACE).await;
            self.forget(&old);
            progress(format!("{old_what} stopped"));
        }
        // Services that the manifest no longer binds; their data stays, for a rollback.
        let running = Arc::clone(&self.services);
        let registry = Arc::clone(&self.cell.registry);
        let bindings = generation.spec.bindings.clone();
        let stopped = tokio::task::spawn_blocking(move || {
            let mut running = running.lock().unwrap_or_else(|e| e.into_inner());
            running.stop_unbound(&bindings, &registry)
        })
        .await
        .unwrap_or_default();
        for text in stopped {
            logs.event("API", text.clone());
            progress(text);
        }
    }

    /// Gives `generation` `weight` percent of the route's requests next to what serves;
    /// returns the canary's number.
    fn begin_canary(&self, generation: &Arc<Generation>, env_file: EnvFile, weight: u32) -> u64 {
        let id = self.canaries.fetch_add(1, Ordering::Relaxed) + 1;
        self.cell.proxy.start_canary(generation.slots(), weight);
        let mut inner = self.inner();
        inner.others.retain(|g| !Arc::ptr_eq(g, generation));
        inner.canary = Some(CanaryRun {
            id,
            generation: Arc::clone(generation),
            weight,
            env_file,
        });
        id
    }

    /// Gives canary `id` `weight` percent of the route's requests.
    fn canary_weight(&self, id: u64, weight: u32) -> Result<Status, String> {
        let what = {
            let mut inner = self.inner();
            let run = match inner.canary.as_mut() {
                Some(run) if run.id == id => run,
                _ => return Err(GONE.into()),
            };
            run.weight = weight;
            self.cell.proxy.set_weight(weight);
            format!(
                "{} {}",
                run.generation.spec.app, run.generation.spec.version
            )
        };
        self.cell.logs.event(
            "API",
            format!("canary {what} takes {weight}% of the route's requests"),
        );
        Ok(self.status())
    }

    /// Makes canary `id` the whole route, then retires the stable version as a switch does.
    async fn finish_canary(&self, id: u64, progress: Progress) -> Result<(Status, ()), String> {
        let _one_at_a_time = self.deploying.lock().await;
        let (run, old) = {
            let mut inner = self.inner();
            let run = match inner.canary.take() {
                Some(run) if run.id == id => run,
                other => {
                    inner.canary = other;
                    return Err(GONE.into());
                }
            };
            self.cell.proxy.finish_canary();
            let old = inner.current.replace(Arc::clone(&run.generation));
            if let Some(old) = &old {
                inner.others.push(Arc::clone(old));
            }
            (run, old)
        };
        let spec = &run.generation.spec;
        let message = format!(
            "route {} switched to {} {}: the canary takes every request",
            spec.url(),
            spec.app,
            spec.version
        );
        self.cell.logs.event("API", message.clone());
        progress(message);
        self.record_and_retire(&run.generation, old, run.env_file, &|text| progress(text))
            .await;
        Ok((self.status(), ()))
    }

    /// Cancels canary `id` (any, with `None`): what serves takes the whole route again, and the
    /// canary's instances stop once their requests are answered.
    async fn cancel_canary(
        &self,
        id: Option<u64>,
        why: &str,
        progress: Progress,
    ) -> Result<(Status, ()), String> {
        let _one_at_a_time = self.deploying.lock().await;
        self.cancel_canary_locked(id, why, &|text| progress(text))
            .await?;
        Ok((self.status(), ()))
    }

    async fn cancel_canary_locked(
        &self,
        id: Option<u64>,
        why: &str,
        progress: &impl Fn(String),
    ) -> Result<(), String> {
        let run = {
            let mut inner = self.inner();
            let run = match inner.canary.take() {
                Some(run) if id.is_none_or(|id| run.id == id) => run,
                other => {
                    inner.canary = other;
                    return match id {
                        Some(_) => Err(GONE.into()),
                        None => Ok(()),
                    };
                }
            };
            self.cell.proxy.end_canary();
            // Listed while it drains, so that a stop reaches it.
            inner.others.push(Arc::clone(&run.generation));
            run
        };
        let generation = run.generation;
        let what = format!("{} {}", generation.spec.app, generation.spec.version);
        let stable = match &self.inner().current {
            Some(current) => format!("{} {}", current.spec.app, current.spec.version),
            None => "nothing".into(),
        };
        let message = format!("canary {what} cancelled ({why}): {stable} takes the whole route");
        self.cell.logs.event("API", message.clone());
        progress(message);
        let drained = generation.drain(DRAIN_TIMEOUT).await;
        if !drained {
            let message = format!(
                "canary {what}: requests still in flight after {}s; stopping it anyway",
                DRAIN_TIMEOUT.as_secs()
            );
            self.cell.logs.event("API", message.clone());
            progress(message);
        }
        generation.stop(STOP_GRACE).await;
        self.forget(&generation);
        progress(format!("canary {what} stopped"));
        Ok(())
    }

    /// Starts again, in the background, a service of what serves that stopped by itself. Not
    /// during a deploy, which starts what it binds itself.
    fn watch_services(self: &Arc<Self>) {
        let Some(current) = self.inner().current.clone() else {
            return;
        };
        if current.spec.bindings.is_empty() {
            return;
        }
        let server = Arc::clone(self);
        tokio::spawn(async move {
            let Ok(_no_deploy) = server.deploying.try_lock() else {
                return;
            };
            let running = Arc::clone(&server.services);
            let registry = Arc::clone(&server.cell.registry);
            let bindings = current.spec.bindings.clone();
            let revived = tokio::task::spawn_blocking(move || {
                let mut running = running.lock().unwrap_or_else(|e| e.into_inner());
                running.revive(&bindings, &registry)
            })
            .await
            .unwrap_or_else(|err| Err(err.to_string()));
            match revived {
                Ok(texts) => {
                    for text in texts {
                        server.cell.logs.event("API", format!("restarted: {text}"));
                    }
                }
                Err(text) => server.cell.logs.event("API", text),
            }
        });
    }

    /// Starts the services `spec` binds that do not run yet (a first deploy, or after a
    /// `down`), and gives its instances their `VCAP_SERVICES`.
    async fn start_services(
        &self,
        mut spec: RunSpec,
        progress: &impl Fn(String),
    ) -> Result<RunSpec, String> {
        if spec.bindings.is_empty() {
            return Ok(spec);
        }
        let running = Arc::clone(&self.services);
        let registry = Arc::clone(&self.cell.registry);
        let bindings = spec.bindings.clone();
        // Blocking: a first PostgreSQL start creates its cluster, which takes seconds.
        let (started, vcap) = tokio::task::spawn_blocking(move || {
            let mut running = running.lock().unwrap_or_else(|e| e.into_inner());
            let started = running.ensure(&bindings, &registry)?;
            Ok::<_, String>((started, services::vcap_services(&bindings)?))
        })
        .await
        .map_err(|err| err.to_string())??;
        for text in started {
            self.cell.logs.event("API", text.clone());
            progress(text);
        }
        spec.services = vcap;
        Ok(spec)
    }

    fn forget(&self, generation: &Arc<Generation>) {
        self.inner().others.retain(|g| !Arc::ptr_eq(g, generation));
    }

    /// Waits until every instance of `generation` has passed its health check. Fails at the
    /// first exit of one, or at the timeout, with what its health check saw and the end of its
    /// output.
    async fn wait_healthy(
        &self,
        generation: &Generation,
        started: Instant,
        timeout: Duration,
        progress: &impl Fn(String),
    ) -> Result<(), String> {
        let count = generation.lock().len();
        let mut announced = vec![false; count];
        loop {
            let statuses: Vec<_> = generation
                .lock()
                .iter()
                .map(|i| (i.index, i.status()))
                .collect();
            for (index, status) in &statuses {
                if status.phase == Phase::Healthy && !announced[*index as usize] {
                    announced[*index as usize] = true;
                    progress(format!(
                        "instance {index} healthy on port {} after {:.2}s",
                        status.port.unwrap_or_default(),
                        status.healthy_after.unwrap_or_default().as_secs_f64()
                    ));
                }
            }
            if announced.iter().all(|a| *a) {
                return Ok(());
            }
            let failed = statuses.iter().find(|(_, s)| s.crashes > 0);
            let timed_out = started.elapsed() > timeout;
            if let Some((index, status)) = failed.or(if timed_out {
                statuses.iter().find(|(i, _)| !announced[*i as usize])
            } else {
                None
            }) {
                let why = match &status.last_exit {
                    Some(exit) if status.crashes > 0 => {
                        format!("instance {index} {exit} before it became healthy")
                    }
                    _ => format!(
                        "instance {index} was not healthy within {}s (the manifest's `timeout`)",
                        timeout.as_secs()
                    ),
                };
                let tail: Vec<&str> = status.tail.iter().map(String::as_str).collect();
                let tail = if tail.is_empty() {
                    "  (no output)".to_string()
                } else {
                    tail.iter()
                        .map(|l| format!("  {l}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                return Err(format!(
                    "{why}\nits last health check ({}): {}\nthe end of its output:\n{tail}",
                    generation.spec.health_check, status.last_check
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops every instance, serving or not, then lets the server exit.
    async fn stop_everything(&self) {
        let (current, others) = {
            let mut inner = self.inner();
            inner.route = None;
            inner.metrics = None;
            let canary = inner.canary.take().map(|run| run.generation);
            (
                inner.current.take().into_iter().chain(canary),
                std::mem::take(&mut inner.others),
            )
        };
        let mut all: Vec<Arc<Generation>> = others;
        all.extend(current);
        for generation in &all {
            for instance in generation.lock().iter() {
                instance.signal_stop(STOP_GRACE);
            }
        }
        for generation in &all {
            generation.stop(STOP_GRACE).await;
        }
        let running = Arc::clone(&self.services);
        let registry = Arc::clone(&self.cell.registry);
        let stopped = tokio::task::spawn_blocking(move || {
            let mut running = running.lock().unwrap_or_else(|e| e.into_inner());
            running.stop_all(&registry)
        })
        .await
        .unwrap_or_default();
        for text in stopped {
            self.cell.logs.event("API", text);
        }
    }
}

/// What a canary's step answers when the canary is no longer the connection's.
const GONE: &str = "the canary no longer runs: a later deploy to the environment cancelled it";

/// A reply as the line that carries it.
fn line_of(reply: &Reply) -> String {
    let mut line = serde_json::to_string(reply).unwrap_or_default();
    line.push('\n');
    line
}

/// Runs `work` in a task of its own (a client that goes away does not cut it in half), passing
/// its progress lines and then its end to `write`; returns what it returned with its status.
async fn relayed<T, Fut>(
    write: &mut OwnedWriteHalf,
    work: impl FnOnce(Progress) -> Fut,
) -> Option<T>
where
    T: Send + 'static,
    Fut: Future<Output = Result<(Status, T), String>> + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
    let progress_tx = tx.clone();
    let progress: Progress = Arc::new(move |text| {
        let _ = progress_tx.send(Reply::Progress(text));
    });
    let work = work(progress);
    let task = tokio::spawn(async move {
        let (reply, value) = match work.await {
            Ok((status, value)) => (Reply::Done(Box::new(status)), Some(value)),
            Err(text) => (Reply::Failed(text), None),
        };
        let _ = tx.send(reply);
        value
    });
    while let Some(reply) = rx.recv().await {
        if write.write_all(line_of(&reply).as_bytes()).await.is_err() {
            break;
        }
    }
    task.await.ok().flatten()
}
