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

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::artifacts::short;
use super::control::{socket_path, Reply, Request, Status};
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
}

#[derive(Default)]
struct Inner {
    current: Option<Arc<Generation>>,
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
        let send = |reply: Reply| {
            let mut line = serde_json::to_string(&reply).unwrap_or_default();
            line.push('\n');
            line
        };
        match request {
            Err(err) => {
                let _ = write.write_all(send(Reply::Failed(err)).as_bytes()).await;
            }
            Ok(Request::Ping | Request::Status) => {
                let status = self.status();
                let _ = write
                    .write_all(send(Reply::Done(Box::new(status))).as_bytes())
                    .await;
            }
            Ok(Request::Stats) => {
                let stats = Reply::Stats(Box::new(self.cell.proxy.stats()));
                let _ = write.write_all(send(stats).as_bytes()).await;
            }
            Ok(Request::Stop) => {
                let status = self.status();
                let _ = write
                    .write_all(send(Reply::Done(Box::new(status))).as_bytes())
                    .await;
                self.exit.notify_one();
            }
            Ok(Request::Deploy { spec, env_file }) => {
                let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
                // A task of its own: a client that goes away does not cut a deploy in half.
                let server = Arc::clone(&self);
                let deploy = tokio::spawn(async move {
                    let progress = tx.clone();
                    let result = server
                        .deploy(*spec, *env_file, move |text| {
                            let _ = progress.send(Reply::Progress(text));
                        })
                        .await;
                    let _ = tx.send(match result {
                        Ok(status) => Reply::Done(Box::new(status)),
                        Err(text) => Reply::Failed(text),
                    });
                });
                while let Some(reply) = rx.recv().await {
                    if write.write_all(send(reply).as_bytes()).await.is_err() {
                        break;
                    }
                }
                let _ = deploy.await;
            }
        }
        let _ = write.shutdown().await;
    }

    fn status(&self) -> Status {
        let inner = self.inner();
        let mut instances = Vec::new();
        if let Some(current) = &inner.current {
            instances.extend(current.lock().iter().map(Instance::view));
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

    async fn deploy(
        self: &Arc<Self>,
        spec: RunSpec,
        env_file: EnvFile,
        progress: impl Fn(String),
    ) -> Result<Status, String> {
        let _one_at_a_time = self.deploying.lock().await;
        self.inner().idle_since = None;
        let result = self.deploy_locked(spec, env_file, &progress).await;
        let mut inner = self.inner();
        if inner.current.is_none() {
            // Nothing serves: free the ports, and let the server go if nothing comes.
            inner.route = None;
            inner.metrics = None;
            inner.idle_since = Some(Instant::now());
        }
        drop(inner);
        result.map(|()| self.status())
    }

    async fn deploy_locked(
        self: &Arc<Self>,
        spec: RunSpec,
        env_file: EnvFile,
        progress: &impl Fn(String),
    ) -> Result<(), String> {
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
            (inner.current.take(), std::mem::take(&mut inner.others))
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
