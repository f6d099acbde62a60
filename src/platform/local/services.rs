//! Backing services: the service instances that a manifest's `services:` bind to, declared in
//! cdflow.toml as `[services.NAME]` (`kind` = `redis`, `postgres` or `user-provided`), and the
//! `VCAP_SERVICES` that the instances find them in.
//!
//! Each app, environment and service has a folder of its own ([`dir`]), so staging's data is
//! apart from production's, and nothing in it depends on how the environments' own folders
//! are laid out:
//!
//! ```text
//! <state>/local/services/<app>/<env>/<service>/
//!   service.json       its kind, written by cdflow when it binds the service
//!   credentials.json   user-provided: the credentials as cdflow read them at the last deploy (0600)
//!   password           redis, postgres: generated once (0600)
//!   port               the port it listens on: the same across restarts while it is free
//!   pid                the running server process, while it runs
//!   service.log        its output
//!   redis.conf         redis: its settings, written at every start (0600: it holds the password)
//!   data/              redis's append-only file, or the PostgreSQL cluster
//! ```
//!
//! Who runs them: the environment's background server ([`super::server`]) starts the services
//! a deployment binds before its instances, and stops them after its instances when it exits.
//! It is the one process that already outlives cdflow, that every push, promote, rollback and
//! `up` goes through, and that `down` stops; and its `pids.json` lets `down` stop them even
//! after the server itself was killed. Detached processes owned by cdflow would need a second
//! set of start, stop and restart paths for the same life cycle. Their data stays in the
//! folder, so it outlives deploys, rollbacks, `down` and `up`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::pids::Registry;
use crate::config::{Credential, ServiceKind};
use crate::error::user_error;
use crate::events::ServiceState;
use crate::exec::Exec;
use crate::platform::Target;
use crate::process::Process;

/// The folder of one service instance. With [`apps_dir`], the one place that knows where
/// service data lives.
pub fn dir(local: &Path, app: &str, env: &str, service: &str) -> PathBuf {
    apps_dir(local).join(app).join(env).join(service)
}

/// The folder of every app's services.
fn apps_dir(local: &Path) -> PathBuf {
    local.join("services")
}

/// A service that a deployment binds to, as its spec records it: a rollback or an `up` binds
/// to the same instance, whose data and credentials are in `dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub name: String,
    pub kind: ServiceKind,
    pub dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct ServiceFile {
    kind: ServiceKind,
}

/// The names of the manifest's `services`: `- name` or `- { name: name }`.
pub fn manifest_names(services: &[serde_yaml::Value]) -> Vec<String> {
    services
        .iter()
        .filter_map(|service| match service {
            serde_yaml::Value::String(name) => Some(name.clone()),
            other => other
                .get("name")
                .and_then(|name| name.as_str())
                .map(str::to_string),
        })
        .collect()
}

/// Why the services `manifest_services` names cannot be bound on `env`, each with its fix:
/// one not declared in cdflow.toml, a server program not installed, a credential's variable
/// not set.
pub fn problems(env: &Target, manifest_services: &[serde_yaml::Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for name in manifest_names(manifest_services) {
        let Some(service) = env.services.get(&name) else {
            problems.push(undeclared(&name));
            continue;
        };
        match *service.kind.get_ref() {
            ServiceKind::Redis => {
                if which::which("redis-server").is_err() {
                    problems.push(format!(
                        "the service `{name}` is a redis, but `redis-server` is not installed: \
                         install the Debian package redis-server (`apt-get install \
                         redis-server`), or put redis-server on PATH"
                    ));
                }
            }
            ServiceKind::Postgres => {
                if postgres_bin().is_none() {
                    problems.push(format!(
                        "the service `{name}` is a PostgreSQL, but `initdb` and `postgres` are \
                         neither on PATH nor in /usr/lib/postgresql/*/bin: install the Debian \
                         package postgresql (`apt-get install postgresql`)"
                    ));
                } else if is_root() && which::which("setpriv").is_err() {
                    problems.push(format!(
                        "the service `{name}` is a PostgreSQL, which refuses to run as root, and \
                         `setpriv` (which runs it as another user) is not installed: install \
                         the Debian package util-linux"
                    ));
                }
            }
            ServiceKind::UserProvided => {
                for variable in service.secret_names() {
                    if std::env::var_os(variable).is_none() {
                        problems.push(format!(
                            "the credentials of the service `{name}` read the environment \
                             variable {variable}, which is not set: set it, or write the value \
                             in [services.{name}] of cdflow.toml"
                        ));
                    }
                }
            }
        }
    }
    problems
}

fn undeclared(name: &str) -> String {
    format!(
        "the manifest binds the service `{name}`, which cdflow.toml does not declare: add \
         [services.{name}] with kind = \"redis\", \"postgres\" or \"user-provided\""
    )
}

/// The bindings of a deployment of `app` to `env`, with each service's folder made and what
/// cdflow knows of it written there (its kind; a user-provided one's credentials, read now).
pub fn bind(
    exec: &Exec,
    local: &Path,
    app: &str,
    env: &Target,
    manifest_services: &[serde_yaml::Value],
) -> Result<Vec<Binding>> {
    let mut bindings = Vec::new();
    for name in manifest_names(manifest_services) {
        let service = env
            .services
            .get(&name)
            .ok_or_else(|| user_error(undeclared(&name)))?;
        let kind = *service.kind.get_ref();
        let binding = Binding {
            dir: dir(local, app, env.name, &name),
            name,
            kind,
        };
        exec.create_private_dir_all(&binding.dir)?;
        let file = serde_json::to_vec_pretty(&ServiceFile { kind })?;
        exec.for_real(|| write_private(&binding.dir.join("service.json"), &file))?;
        if kind == ServiceKind::UserProvided {
            let mut credentials = serde_json::Map::new();
            for (key, value) in service.credentials.iter().flat_map(|c| c.get_ref()) {
                let value = match value {
                    Credential::Value(value) => value.clone(),
                    Credential::Env(variable) => std::env::var(variable).map_err(|_| {
                        user_error(format!(
                            "the credentials of the service `{}` read the environment variable \
                             {variable}, which is not set: set it",
                            binding.name
                        ))
                    })?,
                };
                credentials.insert(key.clone(), Value::String(value));
            }
            let text = serde_json::to_vec_pretty(&credentials)?;
            exec.for_real(|| write_private(&binding.dir.join("credentials.json"), &text))?;
        }
        bindings.push(binding);
    }
    Ok(bindings)
}

/// The generated passwords of `app`'s services on `env`, to be masked in what cdflow prints.
pub fn passwords(local: &Path, app: &str, env: &str) -> Vec<String> {
    std::fs::read_dir(apps_dir(local).join(app).join(env))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("password")).ok())
        .map(|password| password.trim().to_string())
        .filter(|password| !password.is_empty())
        .collect()
}

/// The services of an app's environment, as `cdflow status` shows them: kind, port, whether
/// it runs, and its data folder.
pub fn statuses(local: &Path, app: &str, env: &str) -> Vec<ServiceState> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(apps_dir(local).join(app).join(env))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    folders.sort();
    folders
        .into_iter()
        .filter_map(|folder| {
            let name = folder.file_name()?.to_string_lossy().into_owned();
            let kind = read_kind(&folder)?;
            if kind == ServiceKind::UserProvided {
                return Some(ServiceState {
                    name,
                    kind: kind.name().to_string(),
                    port: None,
                    running: false,
                    pid: None,
                    data: None,
                });
            }
            let process = running_process(&folder);
            Some(ServiceState {
                name,
                kind: kind.name().to_string(),
                port: read_port(&folder),
                running: process.is_some(),
                pid: process.map(|p| p.pid),
                data: Some(folder.join("data").display().to_string()),
            })
        })
        .collect()
}

/// One line of `cdflow status` on a service.
pub fn status_line(service: &ServiceState) -> String {
    if service.kind == ServiceKind::UserProvided.name() {
        return format!("  service {}: user-provided", service.name);
    }
    let port = service.port.map_or("-".into(), |p| p.to_string());
    let running = match service.pid {
        Some(pid) if service.running => format!("running (pid {pid})"),
        _ => "not running".into(),
    };
    format!(
        "  service {}: {}, port {port}, {running}, data in {}",
        service.name,
        service.kind,
        service.data.as_deref().unwrap_or("-")
    )
}

fn read_kind(folder: &Path) -> Option<ServiceKind> {
    let text = std::fs::read_to_string(folder.join("service.json")).ok()?;
    serde_json::from_str::<ServiceFile>(&text)
        .ok()
        .map(|file| file.kind)
}

fn read_port(folder: &Path) -> Option<u16> {
    std::fs::read_to_string(folder.join("port"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The process the `pid` file names, if it still runs.
fn running_process(folder: &Path) -> Option<Process> {
    let text = std::fs::read_to_string(folder.join("pid")).ok()?;
    serde_json::from_str::<Process>(&text)
        .ok()
        .filter(Process::alive)
}

/// The label, tags and plan a binding of `kind` has in `VCAP_SERVICES`, as Cloud Foundry's
/// common brokers give them: the open-source cf-redis-broker (also VMware Tanzu's shared
/// Redis) labels its instances `p-redis`; PostgreSQL brokers vary (`elephantsql`,
/// `csb-aws-postgresql`, ...), so the plain `postgresql` is used, with tags that libraries
/// which look a service up by tag (`postgresql`, `relational`) find.
fn label(kind: ServiceKind) -> (&'static str, &'static [&'static str]) {
    match kind {
        ServiceKind::Redis => ("p-redis", &["redis", "pivotal", "key-value"]),
        ServiceKind::Postgres => ("postgresql", &["postgresql", "postgres", "relational"]),
        ServiceKind::UserProvided => ("user-provided", &[]),
    }
}

/// One binding's entry in `VCAP_SERVICES`, with its credentials.
fn entry(name: &str, kind: ServiceKind, credentials: Value) -> Value {
    let (label, tags) = label(kind);
    let mut entry = json!({
        "label": label,
        "name": name,
        "instance_name": name,
        "binding_name": null,
        "tags": tags,
        "credentials": credentials,
        "syslog_drain_url": null,
        "volume_mounts": [],
    });
    if kind != ServiceKind::UserProvided {
        entry["plan"] = json!("local");
        entry["provider"] = json!(null);
    }
    entry
}

/// The credentials of a redis on `port` with `password`.
fn redis_credentials(port: u16, password: &str) -> Value {
    json!({
        "host": HOST,
        "port": port,
        "password": password,
        "uri": format!("redis://:{password}@{HOST}:{port}"),
    })
}

/// The credentials of the app's database `name`, owned by `username`, on a PostgreSQL on
/// `port`.
fn postgres_credentials(port: u16, name: &str, username: &str, password: &str) -> Value {
    json!({
        "host": HOST,
        "port": port,
        "name": name,
        "username": username,
        "password": password,
        "uri": format!("postgres://{username}:{password}@{HOST}:{port}/{name}"),
        "jdbcUrl": format!(
            "jdbc:postgresql://{HOST}:{port}/{name}?user={username}&password={password}"
        ),
    })
}

const HOST: &str = "127.0.0.1";

/// `VCAP_SERVICES` for `bindings`, grouped by label as Cloud Foundry groups them, from what
/// their folders hold now (ports and passwords of the running services, user-provided
/// credentials of the last deploy).
pub fn vcap_services(bindings: &[Binding]) -> Result<Value, String> {
    let mut by_label = serde_json::Map::new();
    for binding in bindings {
        let folder = &binding.dir;
        let credentials = match binding.kind {
            ServiceKind::UserProvided => {
                let path = folder.join("credentials.json");
                std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|text| serde_json::from_str(&text).ok())
                    .unwrap_or_else(|| json!({}))
            }
            kind => {
                let port = read_port(folder);
                let password = read_password(folder);
                let (Some(port), Some(password)) = (port, password) else {
                    return Err(format!(
                        "the service `{}` has no port or password in {}",
                        binding.name,
                        folder.display()
                    ));
                };
                match kind {
                    ServiceKind::Redis => redis_credentials(port, &password),
                    _ => {
                        let name = database_name(&binding.name);
                        postgres_credentials(port, &name, &user_name(&name), &password)
                    }
                }
            }
        };
        let (label, _) = label(binding.kind);
        let list = by_label
            .entry(label)
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            list.push(entry(&binding.name, binding.kind, credentials));
        }
    }
    Ok(Value::Object(by_label))
}

fn read_password(folder: &Path) -> Option<String> {
    let password = std::fs::read_to_string(folder.join("password")).ok()?;
    Some(password.trim().to_string()).filter(|p| !p.is_empty())
}

/// The app's database: the service's name as a plain SQL identifier.
fn database_name(service: &str) -> String {
    service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The app's database user: apart from the cluster's superuser, named after the system user
/// that runs the server (`postgres`, say).
fn user_name(database: &str) -> String {
    format!("{database}_user")
}

/// The folder holding PostgreSQL's `initdb` and `postgres`: on PATH, else Debian's
/// `/usr/lib/postgresql/<version>/bin`, the newest version.
pub fn postgres_bin() -> Option<PathBuf> {
    if let (Ok(initdb), Ok(_)) = (which::which("initdb"), which::which("postgres")) {
        return initdb.parent().map(Path::to_path_buf);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no failure and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Writes a file only its owner may read (0600), replacing it whole.
fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // A temporary file is created 0600, and keeps that mode when it takes the file's place.
    let mut temp = tempfile::Builder::new()
        .prefix(".cdflow-")
        .tempfile_in(dir)
        .with_context(|| format!("could not create a file in {}", dir.display()))?;
    temp.write_all(contents)?;
    temp.as_file().sync_all()?;
    temp.persist(path)
        .with_context(|| format!("could not write {}", path.display()))?;
    Ok(())
}

/// How long a service gets to start (a PostgreSQL recovering after a crash takes a while).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a service gets to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The service processes an environment's server started, by folder.
#[derive(Default)]
pub struct Running {
    children: BTreeMap<PathBuf, (String, Child)>,
    /// When [`Running::revive`] last failed to start one, so that a service that cannot start
    /// is tried again only every [`REVIVE_BACKOFF`].
    revive_failed: Option<Instant>,
    /// Set once the server stops them all: nothing starts after that.
    closed: bool,
}

/// How long a service that could not be started again is left before the next try.
const REVIVE_BACKOFF: Duration = Duration::from_secs(30);

impl Running {
    /// Starts the services of `bindings` that do not run; returns what it did, to report.
    pub fn ensure(
        &mut self,
        bindings: &[Binding],
        registry: &Registry,
    ) -> Result<Vec<String>, String> {
        if self.closed {
            return Err("the environment's server is stopping".into());
        }
        let mut done = Vec::new();
        for binding in bindings {
            if binding.kind == ServiceKind::UserProvided {
                continue;
            }
            if let Some((_, child)) = self.children.get_mut(&binding.dir) {
                if matches!(child.try_wait(), Ok(None)) {
                    continue;
                }
                let _ = std::fs::remove_file(binding.dir.join("pid"));
                if let Some((_, child)) = self.children.remove(&binding.dir) {
                    registry.remove(child.id());
                }
            }
            let port_before = read_port(&binding.dir);
            let (child, port) = start(binding).map_err(|err| {
                format!(
                    "the service `{}` ({}) did not start: {err:#}\nthe end of {}:\n{}",
                    binding.name,
                    binding.kind.name(),
                    binding.dir.join("service.log").display(),
                    super::control::tail_of(&binding.dir.join("service.log"), 15)
                )
            })?;
            registry.add(child.id());
            let moved = match port_before {
                Some(before) if before != port => format!(" (port {before} was taken)"),
                _ => String::new(),
            };
            done.push(format!(
                "service `{}` ({}) runs on port {port}{moved}, data in {}",
                binding.name,
                binding.kind.name(),
                binding.dir.join("data").display()
            ));
            self.children
                .insert(binding.dir.clone(), (binding.name.clone(), child));
        }
        Ok(done)
    }

    /// Starts again the services of `bindings` (what serves) that stopped by themselves
    /// (crashed, killed), as a broker keeps its instances up. One comes back on its port when
    /// that is free, with its data; else the instances learn its new port at the next deploy.
    pub fn revive(
        &mut self,
        bindings: &[Binding],
        registry: &Registry,
    ) -> Result<Vec<String>, String> {
        let resting = self
            .revive_failed
            .is_some_and(|at| at.elapsed() < REVIVE_BACKOFF);
        if self.closed || resting {
            return Ok(Vec::new());
        }
        let result = self.ensure(bindings, registry);
        self.revive_failed = result.is_err().then(Instant::now);
        result
    }

    /// Stops the services that `bindings` (what serves now) no longer bind.
    pub fn stop_unbound(&mut self, bindings: &[Binding], registry: &Registry) -> Vec<String> {
        let unbound: Vec<PathBuf> = self
            .children
            .keys()
            .filter(|dir| !bindings.iter().any(|b| &b.dir == *dir))
            .cloned()
            .collect();
        let children = unbound
            .into_iter()
            .filter_map(|dir| self.children.remove_entry(&dir))
            .collect();
        stop(children, registry)
    }

    /// Stops every service; returns what it did, to report.
    pub fn stop_all(&mut self, registry: &Registry) -> Vec<String> {
        self.closed = true;
        stop(std::mem::take(&mut self.children), registry)
    }
}

/// Stops `children` (redis saves, PostgreSQL shuts down cleanly), killing one that does not
/// stop in time; returns what it did, to report.
fn stop(children: BTreeMap<PathBuf, (String, Child)>, registry: &Registry) -> Vec<String> {
    for (dir, (_, child)) in &children {
        let signal = match read_kind(dir) {
            // PostgreSQL's fast shutdown: SIGTERM would wait for clients to leave.
            Some(ServiceKind::Postgres) => libc::SIGINT,
            _ => libc::SIGTERM,
        };
        super::pids::signal(child.id() as i32, signal);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    let mut done = Vec::new();
    for (dir, (name, mut child)) in children {
        let exited = loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break true,
                Ok(None) if Instant::now() > deadline => break false,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        if !exited {
            super::pids::signal(-(child.id() as i32), libc::SIGKILL);
            let _ = child.wait();
        }
        registry.remove(child.id());
        let _ = std::fs::remove_file(dir.join("pid"));
        done.push(if exited {
            format!("service `{name}` stopped")
        } else {
            format!(
                "service `{name}` did not stop within {}s and was killed",
                STOP_TIMEOUT.as_secs()
            )
        });
    }
    done
}

/// Starts the server of `binding` and waits until it answers; returns it and its port.
fn start(binding: &Binding) -> Result<(Child, u16)> {
    let folder = &binding.dir;
    std::fs::create_dir_all(folder)?;
    // One left by a server that was killed would hold the data: stop it first.
    if let Some(old) = running_process(folder) {
        super::pids::signal(-(old.pid as i32), libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while old.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let password = match read_password(folder) {
        Some(password) => password,
        None => {
            let password = generate_password()?;
            write_private(&folder.join("password"), password.as_bytes())?;
            password
        }
    };
    let port = choose_port(folder)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(folder.join("service.log"))?;
    let mut child = match binding.kind {
        ServiceKind::Redis => start_redis(folder, port, &password, &log)?,
        ServiceKind::Postgres => start_postgres(binding, port, &password, &log)?,
        ServiceKind::UserProvided => unreachable!("user-provided services run nothing"),
    };
    if let Some(process) = Process::of(child.id()) {
        let _ = write_private(&folder.join("pid"), &serde_json::to_vec(&process)?);
    }
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(exit) = child.try_wait()? {
            let _ = std::fs::remove_file(folder.join("pid"));
            anyhow::bail!("it exited at once ({exit})");
        }
        let ready = match binding.kind {
            ServiceKind::Redis => redis_answers(port, &password),
            _ => postgres_ready(&folder.join("data"), child.id()),
        };
        if ready {
            return Ok((child, port));
        }
        if Instant::now() > deadline {
            super::pids::signal(-(child.id() as i32), libc::SIGKILL);
            let _ = child.wait();
            let _ = std::fs::remove_file(folder.join("pid"));
            anyhow::bail!("it did not answer within {}s", START_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 24 random bytes, in hex: nothing to quote in a URI or a configuration file.
fn generate_password() -> Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("could not read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The port kept in the folder when it is still free, else a new one, kept.
fn choose_port(folder: &Path) -> Result<u16> {
    if let Some(port) = read_port(folder) {
        if super::ports::try_bind(port).is_ok() {
            return Ok(port);
        }
    }
    let port = super::ports::free_port()?;
    std::fs::write(folder.join("port"), format!("{port}\n"))?;
    Ok(port)
}

/// A command whose output goes to the service's log, in a process group of its own (so that
/// `down` can stop it from `pids.json` when the server is gone).
fn service_command(program: impl AsRef<std::ffi::OsStr>, log: &std::fs::File) -> Result<Command> {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(program);
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .process_group(0);
    Ok(command)
}

fn start_redis(folder: &Path, port: u16, password: &str, log: &std::fs::File) -> Result<Child> {
    let data = folder.join("data");
    std::fs::create_dir_all(&data)?;
    // The password in a file rather than on the command line, where `ps` would show it.
    let config = format!(
        "port {port}\nbind {HOST}\nprotected-mode yes\ndir {}\nrequirepass {password}\n\
         appendonly yes\nappendfsync everysec\ndaemonize no\nlogfile \"\"\n",
        redis_quote(&data.to_string_lossy())
    );
    let config_path = folder.join("redis.conf");
    write_private(&config_path, config.as_bytes())?;
    let program = which::which("redis-server")
        .context("redis-server is not installed (Debian: apt-get install redis-server)")?;
    let mut command = service_command(program, log)?;
    command.arg(&config_path).current_dir(&data);
    super::forks::spawning(|| command.spawn()).context("could not start redis-server")
}

/// A string in redis.conf's double quotes.
fn redis_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Whether the redis on `port` answers PING once authenticated (it answers `-LOADING` while
/// it reads its append-only file).
fn redis_answers(port: u16, password: &str) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect((HOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(format!("AUTH {password}\r\nPING\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let mut buffer = [0u8; 256];
    while !answer.ends_with(b"\r\n") || answer.iter().filter(|b| **b == b'\n').count() < 2 {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return false,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    answer == b"+OK\r\n+PONG\r\n"
}

/// Who runs PostgreSQL: this user, unless it is root, which PostgreSQL refuses to run as; then
/// the `postgres` system user when there is one, else `nobody`.
fn postgres_user() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    for name in [c"postgres", c"nobody"] {
        // SAFETY: getpwnam(3) with a NUL-terminated name; the record is copied out at once, and
        // the server calls it from one thread at a time (under the services' lock).
        let entry = unsafe { libc::getpwnam(name.as_ptr()) };
        if !entry.is_null() {
            // SAFETY: a non-null record from getpwnam(3).
            let entry = unsafe { &*entry };
            return Some((entry.pw_uid, entry.pw_gid));
        }
    }
    Some((65534, 65534))
}

/// A PostgreSQL program run as [`postgres_user`]. As root, through `setpriv`, which also
/// lends it the capability to pass through folders it does not own: the state folder is
/// root's alone (0700), and the data folder inside it belongs to the PostgreSQL user. The
/// capability is the narrowest this machine allows: reading and searching folders
/// (CAP_DAC_READ_SEARCH), else overriding file permissions (CAP_DAC_OVERRIDE, which container
/// runtimes grant more often).
fn postgres_command(program: &Path, log: &std::fs::File) -> Result<Command> {
    let Some((uid, gid)) = postgres_user() else {
        return service_command(program, log);
    };
    let mut command = service_command("setpriv", log)?;
    command
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups");
    if let Some(capability) = traversal_capability() {
        command
            .arg(format!("--inh-caps=+{capability}"))
            .arg(format!("--ambient-caps=+{capability}"));
    }
    command.arg("--").arg(program);
    Ok(command)
}

/// The capability that lets PostgreSQL reach its data folder through root's folders, among
/// those this process may hand on (its bounding set).
fn traversal_capability() -> Option<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let bounding = status
        .lines()
        .find_map(|line| line.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())?;
    const CAP_DAC_OVERRIDE: u64 = 1;
    const CAP_DAC_READ_SEARCH: u64 = 2;
    if bounding & (1 << CAP_DAC_READ_SEARCH) != 0 {
        Some("dac_read_search")
    } else if bounding & (1 << CAP_DAC_OVERRIDE) != 0 {
        Some("dac_override")
    } else {
        None
    }
}

fn start_postgres(
    binding: &Binding,
    port: u16,
    password: &str,
    log: &std::fs::File,
) -> Result<Child> {
    let folder = &binding.dir;
    let bin = postgres_bin().context(
        "PostgreSQL is not installed (Debian: apt-get install postgresql): no initdb and \
         postgres on PATH nor in /usr/lib/postgresql/*/bin",
    )?;
    let data = folder.join("data");
    if !data.join("PG_VERSION").exists() {
        create_cluster(binding, &bin, password, log)?;
    }
    let mut command = postgres_command(&bin.join("postgres"), log)?;
    command
        .arg("-D")
        .arg(&data)
        .arg("-p")
        .arg(port.to_string())
        .args(["-c", &format!("listen_addresses={HOST}")])
        .args(["-c", "shared_buffers=16MB", "-c", "max_connections=50"]);
    // Its unix socket in the data folder, when the path fits in a socket address (about 100
    // bytes); else TCP alone, which is what the app is given anyway.
    let socket = data.join(format!(".s.PGSQL.{port}"));
    let sockets = if socket.as_os_str().len() < 100 {
        data.to_string_lossy().into_owned()
    } else {
        String::new()
    };
    command.args(["-c", &format!("unix_socket_directories={sockets}")]);
    command.current_dir(folder);
    super::forks::spawning(|| command.spawn())
        .with_context(|| format!("could not start {}", bin.join("postgres").display()))
}

/// A new cluster in `data`, with the app's user and database: made in a folder beside it and
/// renamed into place once whole, so that a failed attempt is simply made again.
fn create_cluster(
    binding: &Binding,
    bin: &Path,
    password: &str,
    log: &std::fs::File,
) -> Result<()> {
    let folder = &binding.dir;
    let fresh = folder.join("data.new");
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh)?;
    }
    std::fs::create_dir_all(&fresh)?;
    if let Some((uid, gid)) = postgres_user() {
        std::os::unix::fs::chown(&fresh, Some(uid), Some(gid))
            .with_context(|| format!("could not give {} to uid {uid}", fresh.display()))?;
    }
    let mut initdb = postgres_command(&bin.join("initdb"), log)?;
    initdb
        .arg("-D")
        .arg(&fresh)
        .args([
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-instructions",
        ])
        .current_dir(folder);
    let status = super::forks::spawning(|| initdb.spawn())
        .and_then(|mut child| child.wait())
        .with_context(|| format!("could not run {}", bin.join("initdb").display()))?;
    if !status.success() {
        anyhow::bail!("initdb failed ({status})");
    }
    // The app's user and database, made in single-user mode: no server, no connection, no
    // superuser password needed. One statement per line.
    let database = database_name(&binding.name);
    let user = user_name(&database);
    let script = format!(
        "CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}';\n\
         CREATE DATABASE \"{database}\" OWNER \"{user}\";\n"
    );
    let mut single = postgres_command(&bin.join("postgres"), log)?;
    single
        .arg("--single")
        .arg("-D")
        .arg(&fresh)
        .arg("postgres")
        .current_dir(folder)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child =
        super::forks::spawning(|| single.spawn()).context("could not run postgres --single")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    // Its output, minus the statements (which hold the password), goes to the log.
    let mut log = log.try_clone()?;
    log.write_all(&output.stderr)?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || text.contains("ERROR:") {
        anyhow::bail!(
            "could not create the database `{database}` and its user ({}): {}",
            output.status,
            text.lines()
                .filter(|l| l.contains("ERROR"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    std::fs::rename(&fresh, folder.join("data"))?;
    Ok(())
}

/// Whether the PostgreSQL `pid` runs on `data` and accepts connections, as `pg_ctl` tells:
/// the last line of `postmaster.pid` says `ready`.
fn postgres_ready(data: &Path, pid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(data.join("postmaster.pid")) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    // setpriv replaces itself with postgres, so the pid is the postmaster's.
    lines.first().map(|l| l.trim()) == Some(&pid.to_string())
        && lines.get(7).is_some_and(|status| status.trim() == "ready")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcap_services_groups_bindings_by_label_as_cloud_foundry_does() {
        let root = tempfile::tempdir().unwrap();
        let folder = |name: &str| {
            let dir = root.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        };
        let cache = folder("cache");
        std::fs::write(cache.join("port"), "16379\n").unwrap();
        std::fs::write(cache.join("password"), "pw0123456789").unwrap();
        let db = folder("falcon-db");
        std::fs::write(db.join("port"), "15432\n").unwrap();
        std::fs::write(db.join("password"), "pgpw012345").unwrap();
        let api = folder("api");
        std::fs::write(
            api.join("credentials.json"),
            r#"{"url": "https://api.example.com", "token": "t0ken"}"#,
        )
        .unwrap();
        let other = folder("other");
        let binding = |name: &str, kind, dir: &PathBuf| Binding {
            name: name.into(),
            kind,
            dir: dir.clone(),
        };
        let vcap = vcap_services(&[
            binding("cache", ServiceKind::Redis, &cache),
            binding("falcon-db", ServiceKind::Postgres, &db),
            binding("api", ServiceKind::UserProvided, &api),
            binding("other", ServiceKind::UserProvided, &other),
        ])
        .unwrap();
        let labels: Vec<&String> = vcap.as_object().unwrap().keys().collect();
        assert_eq!(labels, ["p-redis", "postgresql", "user-provided"]);

        let redis = &vcap["p-redis"][0];
        assert_eq!(redis["name"], "cache");
        assert_eq!(redis["instance_name"], "cache");
        assert_eq!(redis["label"], "p-redis");
        assert_eq!(redis["plan"], "local");
        assert!(redis["tags"].as_array().unwrap().contains(&json!("redis")));
        assert_eq!(
            redis["credentials"],
            json!({
                "host": "127.0.0.1",
                "port": 16379,
                "password": "pw0123456789",
                "uri": "redis://:pw0123456789@127.0.0.1:16379",
            })
        );

        let postgres = &vcap["postgresql"][0]["credentials"];
        assert_eq!(postgres["name"], "falcon_db");
        assert_eq!(postgres["username"], "falcon_db_user");
        assert_eq!(postgres["port"], 15432);
        assert_eq!(
            postgres["uri"],
            "postgres://falcon_db_user:pgpw012345@127.0.0.1:15432/falcon_db"
        );
        assert_eq!(
            postgres["jdbcUrl"],
            "jdbc:postgresql://127.0.0.1:15432/falcon_db?user=falcon_db_user&password=pgpw012345"
        );

        let provided = vcap["user-provided"].as_array().unwrap();
        assert_eq!(provided.len(), 2);
        assert_eq!(provided[0]["name"], "api");
        assert_eq!(provided[0]["credentials"]["token"], "t0ken");
        assert_eq!(provided[0]["tags"], json!([]));
        assert!(provided[0].get("plan").is_none());
        assert_eq!(provided[1]["credentials"], json!({}));

        // A redis that never started has nothing to give yet.
        let never = folder("never");
        let err = vcap_services(&[binding("never", ServiceKind::Redis, &never)]).unwrap_err();
        assert!(err.contains("no port or password"), "{err}");
        assert_eq!(vcap_services(&[]).unwrap(), json!({}));
    }

    #[test]
    fn problems_and_bindings_come_from_the_declared_services() {
        let config = crate::config::parse(
            "[services.cache]\nkind = \"redis\"\n\n[services.api]\nkind = \"user-provided\"\n\
             credentials = { plain = \"x\", path = { env = \"PATH\" } }\n\n\
             [services.bad]\nkind = \"user-provided\"\n\
             credentials = { token = { env = \"CDFLOW_TEST_SURELY_UNSET\" } }\n",
        )
        .unwrap();
        let env_config = crate::config::EnvSection::default();
        let env = Target {
            name: "staging",
            config: &env_config,
            services: &config.services,
        };
        let manifest: Vec<serde_yaml::Value> = serde_yaml::from_str("[api, bad, nosuch]").unwrap();
        let problems = problems(&env, &manifest);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("variable CDFLOW_TEST_SURELY_UNSET, which is not set"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("binds the service `nosuch`, which cdflow.toml does not declare"),
            "{problems:?}"
        );

        let state = tempfile::tempdir().unwrap();
        let exec = Exec::for_tests(state.path());
        let api: Vec<serde_yaml::Value> = serde_yaml::from_str("[api]").unwrap();
        let bindings = bind(&exec, state.path(), "app", &env, &api).unwrap();
        let folder = dir(state.path(), "app", "staging", "api");
        assert_eq!(
            bindings,
            [Binding {
                name: "api".into(),
                kind: ServiceKind::UserProvided,
                dir: folder.clone(),
            }]
        );
        assert_eq!(read_kind(&folder), Some(ServiceKind::UserProvided));
        let vcap = vcap_services(&bindings).unwrap();
        let credentials = &vcap["user-provided"][0]["credentials"];
        assert_eq!(credentials["plain"], "x");
        assert_eq!(credentials["path"], std::env::var("PATH").unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(folder.join("credentials.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = bind(&exec, state.path(), "app", &env, &manifest[2..])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`nosuch`"), "{err}");
    }

    #[test]
    fn manifest_services_are_named_either_way() {
        let services: Vec<serde_yaml::Value> =
            serde_yaml::from_str("[cache, {name: db, parameters: {a: 1}}]").unwrap();
        assert_eq!(manifest_names(&services), ["cache", "db"]);
    }

    #[test]
    fn service_data_lives_apart_per_app_environment_and_service() {
        let local = Path::new("/state/local");
        assert_eq!(
            dir(local, "falcon", "staging", "redis30-example"),
            Path::new("/state/local/services/falcon/staging/redis30-example")
        );
        assert_ne!(
            dir(local, "falcon", "staging", "cache"),
            dir(local, "falcon", "production", "cache")
        );
    }

    #[test]
    fn a_password_is_generated_fresh_and_needs_no_quoting() {
        let one = generate_password().unwrap();
        assert_eq!(one.len(), 48);
        assert!(one.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(one, generate_password().unwrap());
        assert_eq!(redis_quote(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(database_name("Redis30-Example.x"), "redis30_example_x");
    }
}
