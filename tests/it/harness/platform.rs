//! The local platform as the tests drive it: the test app (tests/fixtures/apps/echo) in a
//! project with a state folder of its own and free route ports ([`Local`]), the cdflow.toml and
//! manifest it is released with, `cdflow status --json` read back, and `cdflow logs` waited on.
//! Every `Local` stops what it started when it is dropped, even on panic.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{free_port, run_of, Guard, Project, Run};

/// The tests that deploy to the local platform start many processes and watch timing on a
/// small machine: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Held while a test deploys to the local platform, so that no other such test runs meanwhile
/// (a panic in one does not stop the next).
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The test app: `GET /` answers its version; `/slow?ms=N` after N ms; `/health` fails when
/// FAIL_HEALTH is set, and for the next N checks after `POST /sick?checks=N`; `/env` shows what
/// the platform gave it; `/say?x` prints x to stdout; `POST /grow?mb=N` holds N more megabytes;
/// `/echo` with `Upgrade: echo` switches protocols and sends back every byte it gets. With
/// ACCESS_LOG set it logs every request to stdout as gunicorn's access log does (the combined
/// format: address, time, request line, status, size, referrer, user agent). With CRASH_AFTER=S
/// the instance whose index is CRASH_INSTANCE (default 0) kills itself with SIGKILL S seconds
/// after it starts listening, whatever it is doing; with CRASH_LINGER=L as well, it first
/// closes its port and closes each kept-alive connection after its answer, for L seconds.
pub const APP_PY: &str = include_str!("../../fixtures/apps/echo/app.py");

/// A project of the test app with its own state folder and route ports; what it started is
/// stopped when it is dropped, even by a panic: `cdflow down`, then a kill of whatever the
/// state folder's records still list.
pub struct Local {
    // Dropped first, while the project and the state folder are still there.
    _environments: Guard,
    pub project: Project,
    pub state: tempfile::TempDir,
    pub staging: u16,
    pub production: u16,
    instances: u32,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Local {
    /// The test app (tests/fixtures/apps/echo) as `pyapp` 1.0.0, running `instances`
    /// instances, with a state folder of its own.
    pub fn python(instances: u32) -> Local {
        Local::python_in(instances, tempfile::tempdir().unwrap())
    }

    /// The test app with `state` as its state folder.
    pub fn python_in(instances: u32, state: tempfile::TempDir) -> Local {
        let staging = free_port();
        let production = free_port();
        let project = Project::git(&[
            ("app.py", APP_PY),
            ("cdflow.toml", &cdflow_toml("1.0.0", staging, production)),
            ("manifest.yml", &manifest("1.0.0", instances, 20, "")),
        ]);
        Local::new(project, state, staging, production, instances)
    }

    /// `project`, deployed with `state` as its state folder to routes on the given ports;
    /// `release` writes manifests of `instances` instances.
    pub fn new(
        project: Project,
        state: tempfile::TempDir,
        staging: u16,
        production: u16,
        instances: u32,
    ) -> Local {
        let serial = one_at_a_time();
        let mut down = project.command(env!("CARGO_BIN_EXE_cdflow"));
        down.env("CDFLOW_STATE_DIR", state.path()).arg("down");
        Local {
            _environments: Guard::environments(down, state.path()),
            project,
            state,
            staging,
            production,
            instances,
            _one_at_a_time: serial,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = self.project.command(env!("CARGO_BIN_EXE_cdflow"));
        command
            .env("CDFLOW_STATE_DIR", self.state.path())
            .args(args);
        command
    }

    pub fn cdflow(&self, args: &[&str]) -> Run {
        run_of(self.command(args).output().unwrap())
    }

    /// Makes `version` the app's version, with `extra` lines under the manifest's env and the
    /// given start timeout, and commits.
    pub fn release(&self, version: &str, timeout: u32, extra: &str) {
        self.project.write(
            "cdflow.toml",
            &cdflow_toml(version, self.staging, self.production),
        );
        self.project.write(
            "manifest.yml",
            &manifest(version, self.instances, timeout, extra),
        );
        self.project
            .git_cmd(&["commit", "-q", "--allow-empty", "-am", version]);
    }

    /// Pushes `version` to staging, and returns how long the push took.
    #[track_caller]
    pub fn push(&self, version: &str) -> Duration {
        self.release(version, 20, "");
        let started = Instant::now();
        self.cdflow(&["push", "--to", "staging"])
            .success()
            .stdout_has(&format!("route http://127.0.0.1:{} switched", self.staging))
            // The summary tells the version that now serves, though the push bumped none.
            .stdout_has(&format!("succeeded: version {version}\n"));
        started.elapsed()
    }

    #[track_caller]
    pub fn promote(&self) -> Duration {
        let started = Instant::now();
        self.cdflow(&[
            "promote",
            "--from",
            "staging",
            "--to",
            "production",
            "--force",
        ])
        .success();
        started.elapsed()
    }

    pub fn artifacts(&self) -> usize {
        std::fs::read_dir(self.state.path().join("local/artifacts"))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    /// `(index, pid, port, state, restarts)` of each instance `cdflow status` shows for `env`.
    pub fn instances(&self, env: &str) -> Vec<(u32, u32, u16, String, u32)> {
        let Some(environment) = self.status_of(env) else {
            return Vec::new();
        };
        environment["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["pid"].is_u64())
            .map(|i| {
                let number = |key: &str| i[key].as_u64().unwrap();
                (
                    number("index") as u32,
                    number("pid") as u32,
                    number("port") as u16,
                    i["phase"].as_str().unwrap().to_string(),
                    number("restarts") as u32,
                )
            })
            .collect()
    }

    /// The `environment` event that `cdflow status --json` prints for `env` of the test app.
    pub fn status_of(&self, env: &str) -> Option<serde_json::Value> {
        let status = self.cdflow(&["status", "--json"]);
        status.success();
        environment_of(&status, "pyapp", env)
    }

    /// Waits up to `timeout` until staging's instance 0 runs again in place of process
    /// `victim`: a new pid, healthy, restarted once. Returns the new pid.
    #[track_caller]
    pub fn wait_for_restart(&self, victim: u32, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.instances("staging");
            let zero = now.iter().find(|i| i.0 == 0);
            if let Some((_, pid, _, state, restarts)) = zero {
                if *pid != victim && state == "healthy" && *restarts == 1 {
                    return *pid;
                }
            }
            assert!(
                Instant::now() < deadline,
                "instance 0 (pid {victim}) was not restarted: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The local platform's folder of the test app's environment `env` in the state folder.
    pub fn env_dir(&self, env: &str) -> PathBuf {
        self.state.path().join("local/apps/pyapp/envs").join(env)
    }

    /// The environment's whole log, as the platform wrote it (the API's lines included).
    pub fn app_log(&self, env: &str) -> String {
        std::fs::read_to_string(self.env_dir(env).join("app.log")).unwrap()
    }

    /// Waits up to `timeout` until `cdflow logs` of staging shows `text`; returns the log.
    #[track_caller]
    pub fn wait_for_log(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.cdflow(&["logs", "--env", "staging"]).stdout;
            if log.contains(text) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the log never showed {text:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The test app's cdflow.toml: `pyapp` at `version`, its routes on the given ports, and a
/// user-provided service `db`.
pub fn cdflow_toml(version: &str, staging: u16, production: u16) -> String {
    format!(
        "[app]\nname = \"pyapp\"\n\n[version]\ncurrent = \"{version}\"\n\n\
         [env.staging]\nport = {staging}\n\n[env.production]\nport = {production}\n\n\
         [services.db]\nkind = \"user-provided\"\n"
    )
}

/// The test app's manifest: `instances` instances checked on `/health`, `timeout` seconds to
/// start, bound to `db`, with `extra_env` (indented lines) after its env.
pub fn manifest(version: &str, instances: u32, timeout: u32, extra_env: &str) -> String {
    format!(
        "applications:\n- name: pyapp\n  command: python app.py\n  instances: {instances}\n  \
         buildpacks: [python_buildpack]\n  health-check-type: http\n  \
         health-check-http-endpoint: /health\n  timeout: {timeout}\n  services: [db]\n  env:\n    \
         VERSION: \"{version}\"\n    GREETING: \"hello, world\"\n{extra_env}"
    )
}

/// The test app under another name, in a repository with an origin, its environments on the
/// given ports, its tiers and e2e passing at once: another team's service on the same machine.
pub fn python_app(name: &str, staging: u16, production: u16) -> (Project, PathBuf) {
    let toml = cdflow_toml("1.0.0", staging, production).replace("pyapp", name)
        + "\n[test]\nunit = \"true\"\n\n[e2e]\ncommand = \"true\"\n";
    let manifest = manifest("1.0.0", 1, 20, "").replace("name: pyapp", &format!("name: {name}"));
    let project = Project::git(&[
        ("app.py", APP_PY),
        ("cdflow.toml", &toml),
        ("manifest.yml", &manifest),
    ]);
    let origin = project.add_origin();
    (project, origin)
}

/// Another app, `other`, in a repository with an origin, whose environments are local on the
/// given ports and whose tiers and e2e pass at once: what a second team releases on the same
/// machine.
pub fn other_app(staging: u16, production: u16) -> (Project, PathBuf) {
    let project = Project::git(&[
        (
            "cdflow.toml",
            &format!(
                "[app]\nname = \"other\"\n\n[version]\ncurrent = \"0.1.0\"\n\n[test]\nunit = \
                 \"true\"\n\n[e2e]\ncommand = \"true\"\n\n[env.staging]\nport = {staging}\n\n\
                 [env.production]\nport = {production}\n"
            ),
        ),
        (
            "manifest.yml",
            "applications:\n- name: other\n  command: python app.py\n  memory: 64M\n",
        ),
        ("app.py", "print('other')\n"),
    ]);
    let origin = project.add_origin();
    (project, origin)
}

/// A release of `project` from `origin` with `state` as the state folder.
pub fn release_from(project: &Project, origin: &Path, state: &Path, dry_run: bool) -> Run {
    let mut command = project.command(env!("CARGO_BIN_EXE_cdflow"));
    command
        .env("CDFLOW_STATE_DIR", state)
        .args(["release", "--repo", origin.to_str().unwrap()]);
    if dry_run {
        command.arg("--dry-run");
    }
    run_of(command.output().unwrap())
}

/// The `environment` event of `env` of `app` among the events of a `cdflow status --json`.
pub fn environment_of(status: &Run, app: &str, env: &str) -> Option<serde_json::Value> {
    status
        .events()
        .into_iter()
        .find(|event| event["event"] == "environment" && event["env"] == env && event["app"] == app)
}

/// `cdflow logs -f` running in the background, its output read line by line.
pub struct FollowLogs {
    _child: Guard,
    lines: std::sync::mpsc::Receiver<String>,
}

impl FollowLogs {
    pub fn start(mut command: Command) -> FollowLogs {
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        FollowLogs {
            _child: Guard::child(child),
            lines,
        }
    }

    #[track_caller]
    pub fn wait_for(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!(
            "`cdflow logs -f` did not show {text:?}; it showed:\n{}",
            seen.join("\n")
        );
    }
}
