//! Backing services on the local platform: a real redis-server and a real PostgreSQL per app,
//! environment and service, bound through the manifest's `services:` and `VCAP_SERVICES`.
//!
//! CI installs redis-server and postgresql (.ci/run); a machine without them fails these tests
//! with the command that installs them, rather than skipping what they check.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::MutexGuard;

use crate::harness::{
    environment_of, free_port, get, one_at_a_time, pid_alive, run_of, tags_of, wait_for, Guard,
    Project, Run,
};

/// The test app: `/set?v=X` stores X under the key `k` in its redis and in a table of its
/// PostgreSQL; `/get` answers `redis=X pg=Y` (`-` for nothing); `/env` shows VCAP_SERVICES.
/// Redis is spoken with a few lines of RESP on a raw socket, PostgreSQL through `psql`: the
/// standard library is all it needs.
const APP_PY: &str = include_str!("../fixtures/apps/services/app.py");

/// The secret that the user-provided service reads from the environment.
const TOKEN: &str = "tok-5ecret-value-42";

fn cdflow_toml(version: &str, staging: u16, production: u16) -> String {
    format!(
        "[app]\nname = \"svcapp\"\n\n[version]\ncurrent = \"{version}\"\n\n[test]\nunit = \
         \"true\"\n\n[e2e]\ncommand = \"true\"\n\n[env.staging]\nport = {staging}\n\n\
         [env.production]\nport = {production}\n\n[services.cache]\nkind = \"redis\"\n\n\
         [services.db]\nkind = \"postgres\"\n\n[services.api]\nkind = \"user-provided\"\n\
         credentials = {{ url = \"https://api.example.com\", token = {{ env = \"SVC_TOKEN\" }} }}\n"
    )
}

fn manifest(version: &str, services: &str) -> String {
    format!(
        "applications:\n- name: svcapp\n  command: python app.py\n  buildpacks: \
         [python_buildpack]\n  health-check-type: http\n  health-check-http-endpoint: /health\n  \
         timeout: 60\n  services: [{services}]\n  env:\n    VERSION: \"{version}\"\n"
    )
}

/// The test app with its own state folder and route ports; stops what it started when
/// dropped, even on panic.
struct Svc {
    // Dropped first, while the project and the state folder are still there.
    _environments: Guard,
    project: Project,
    state: tempfile::TempDir,
    staging: u16,
    production: u16,
    /// The manifest's `services:`.
    services: String,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Svc {
    fn new(services: &str) -> Svc {
        let serial = one_at_a_time();
        require_servers();
        let (staging, production) = (free_port(), free_port());
        let project = Project::git(&[
            ("app.py", APP_PY),
            ("cdflow.toml", &cdflow_toml("1.0.0", staging, production)),
            ("manifest.yml", &manifest("1.0.0", services)),
        ]);
        let state = tempfile::tempdir().unwrap();
        Svc {
            _environments: Guard::environments(
                Svc::cdflow_command(&project, state.path(), &["down"]),
                state.path(),
            ),
            project,
            state,
            staging,
            production,
            services: services.to_string(),
            _one_at_a_time: serial,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        Svc::cdflow_command(&self.project, self.state.path(), args)
    }

    fn cdflow_command(project: &Project, state: &Path, args: &[&str]) -> Command {
        let mut command = project.command(env!("CARGO_BIN_EXE_cdflow"));
        command
            .env("CDFLOW_STATE_DIR", state)
            .env("SVC_TOKEN", TOKEN)
            .args(args);
        command
    }

    fn cdflow(&self, args: &[&str]) -> Run {
        run_of(self.command(args).output().unwrap())
    }

    #[track_caller]
    fn push(&self, version: &str) -> Run {
        self.push_binding(version, &self.services)
    }

    /// Pushes `version` with `services` as the manifest's `services:`.
    #[track_caller]
    fn push_binding(&self, version: &str, services: &str) -> Run {
        self.project.write(
            "cdflow.toml",
            &cdflow_toml(version, self.staging, self.production),
        );
        self.project
            .write("manifest.yml", &manifest(version, services));
        self.project
            .git_cmd(&["commit", "-q", "--allow-empty", "-am", version]);
        let run = self.cdflow(&["push", "--to", "staging"]);
        run.success();
        run
    }

    fn service_dir(&self, env: &str, service: &str) -> PathBuf {
        self.state
            .path()
            .join("local/services/svcapp")
            .join(env)
            .join(service)
    }

    /// `(port, pid)` of a service, as `cdflow status --json` shows it: a pid while it runs.
    fn status_of(&self, env: &str, service: &str) -> (u16, Option<u32>) {
        let status = self.cdflow(&["status", "--json"]);
        status.success();
        let environment = environment_of(&status, "svcapp", env)
            .unwrap_or_else(|| panic!("no environment {env}:\n{status}"));
        let found = environment["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == service)
            .unwrap_or_else(|| panic!("no service {service} in {env}:\n{status}"));
        let port = found["port"].as_u64().unwrap() as u16;
        (port, found["pid"].as_u64().map(|pid| pid as u32))
    }
}

/// Fails, with the fix, where redis-server or PostgreSQL is missing.
fn require_servers() {
    assert!(
        which("redis-server").is_some(),
        "redis-server is not installed: `apt-get install -y redis-server` (as .ci/run does)"
    );
    let postgres = which("initdb").is_some()
        || std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .any(|version| version.path().join("bin/initdb").exists());
    assert!(
        postgres && which("psql").is_some(),
        "PostgreSQL is not installed: `apt-get install -y postgresql` (as .ci/run does)"
    );
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

#[track_caller]
fn assert_get(port: u16, path: &str, expected: &str) {
    assert_eq!(
        get(port, path).unwrap(),
        (200, expected.to_string()),
        "GET {path}"
    );
}

/// The talk's promise for state: data written through the bound services outlives every kind
/// of redeploy, and each environment has its own.
#[test]
fn service_data_survives_pushes_promote_rollback_down_and_up_apart_per_environment() {
    let svc = Svc::new("cache, db, api");
    let first = svc.push("1.0.0");

    // What the instances are given, as CF's brokers give it; the secrets nowhere in cdflow's
    // output.
    let (code, body) = get(svc.staging, "/env").unwrap();
    assert_eq!(code, 200, "{body}");
    let vcap: serde_json::Value = serde_json::from_str(&body).unwrap();
    let redis = &vcap["p-redis"][0];
    assert_eq!(redis["name"], "cache");
    let password = redis["credentials"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(password.len(), 48);
    assert_eq!(
        redis["credentials"]["uri"],
        format!(
            "redis://:{password}@127.0.0.1:{}",
            redis["credentials"]["port"]
        )
    );
    let postgres = &vcap["postgresql"][0]["credentials"];
    assert_eq!(postgres["name"], "db");
    assert_eq!(postgres["username"], "db_user");
    assert_eq!(vcap["user-provided"][0]["name"], "api");
    assert_eq!(vcap["user-provided"][0]["credentials"]["token"], TOKEN);
    assert_eq!(
        vcap["user-provided"][0]["credentials"]["url"],
        "https://api.example.com"
    );
    let mode = |path: PathBuf| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(
        mode(svc.service_dir("staging", "cache").join("password")),
        0o600
    );
    assert_eq!(
        mode(svc.service_dir("staging", "api").join("credentials.json")),
        0o600
    );
    first.stdout_has("service `cache` (redis) runs on port");
    first.stdout_has("service `db` (postgres) runs on port");

    assert_get(svc.staging, "/get", "redis=- pg=-");
    assert_get(svc.staging, "/set?v=staging1", "ok");
    assert_get(svc.staging, "/get", "redis=staging1 pg=staging1");

    // Two more pushes: new instances, the same services and data.
    svc.push("1.0.1");
    let third = svc.push("1.0.2");
    assert!(
        !third.stdout.contains("runs on port"),
        "running services are not started again:\n{third}"
    );
    assert_get(svc.staging, "/get", "redis=staging1 pg=staging1");

    // Production has services of its own.
    svc.cdflow(&[
        "promote",
        "--from",
        "staging",
        "--to",
        "production",
        "--force",
    ])
    .success();
    assert_get(svc.production, "/get", "redis=- pg=-");
    assert_get(svc.production, "/set?v=prod1", "ok");
    assert_get(svc.staging, "/get", "redis=staging1 pg=staging1");
    assert_ne!(
        svc.status_of("staging", "cache").0,
        svc.status_of("production", "cache").0
    );

    svc.cdflow(&["rollback", "--env", "staging"]).success();
    assert_get(svc.staging, "/get", "redis=staging1 pg=staging1");

    // A service that dies is started again, on its port, with its data.
    let (port, pid) = svc.status_of("staging", "cache");
    // SAFETY: kill(2) touches no memory; the pid is redis's, as status shows it.
    unsafe { libc::kill(pid.unwrap() as i32, libc::SIGKILL) };
    wait_for("redis to be restarted", || {
        let now = svc.status_of("staging", "cache");
        now.1.is_some() && now.1 != pid
    });
    assert_eq!(svc.status_of("staging", "cache").0, port);
    assert_get(svc.staging, "/get", "redis=staging1 pg=staging1");

    // A version that no longer binds a service stops it; a rollback to one that does starts
    // it again, with its data.
    svc.push_binding("1.0.3", "db, api")
        .stdout_has("service `cache` stopped");
    assert_eq!(svc.status_of("staging", "cache"), (port, None));
    svc.cdflow(&["rollback", "--env", "staging"])
        .success()
        .stdout_has("service `cache` (redis) runs on port");
    assert_get(svc.staging, "/get", "redis=staging1 pg=staging1");

    // Status: each environment's services, running; the secrets masked in the logs.
    let (redis_port, redis_pid) = svc.status_of("staging", "cache");
    let (pg_port, pg_pid) = svc.status_of("staging", "db");
    let (redis_pid, pg_pid) = (redis_pid.unwrap(), pg_pid.unwrap());
    let status = svc.cdflow(&["status"]);
    status.success().stdout_has(&format!(
        "  service cache: redis, port {redis_port}, running (pid {redis_pid}), data in {}",
        svc.service_dir("staging", "cache").join("data").display()
    ));
    status.stdout_has("  service api: user-provided");
    // The instances printed their VCAP_SERVICES: the logs show it masked.
    let logs = svc.cdflow(&["logs", "--env", "staging"]);
    logs.success()
        .stdout_has("bound to")
        .stdout_has(r#""password":"****""#)
        .stdout_has(r#""token":"****""#);
    for run in [&first, &third, &status, &logs] {
        assert!(
            !run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN),
            "{run}"
        );
        assert!(!run.stdout.contains(&password), "{run}");
    }

    // Down stops the services with the instances; up brings all back, with the data, on the
    // same ports.
    svc.cdflow(&["down"]).success();
    assert!(!pid_alive(redis_pid), "redis-server still runs");
    assert!(!pid_alive(pg_pid), "postgres still runs");
    assert!(TcpStream::connect(("127.0.0.1", redis_port)).is_err());
    assert!(TcpStream::connect(("127.0.0.1", pg_port)).is_err());
    assert_eq!(svc.status_of("staging", "cache"), (redis_port, None));
    svc.cdflow(&["up"]).success();
    assert_get(svc.staging, "/get", "redis=staging1 pg=staging1");
    assert_get(svc.production, "/get", "redis=prod1 pg=prod1");
    assert_eq!(svc.status_of("staging", "cache").0, redis_port);
    assert_eq!(svc.status_of("staging", "db").0, pg_port);
}

/// A folder of links to every program of /usr/bin but redis's, for a PATH without redis.
fn path_without_redis(root: &Path) -> PathBuf {
    let bin = root.join("bin-without-redis");
    std::fs::create_dir_all(&bin).unwrap();
    for dir in ["/usr/local/bin", "/usr/bin"] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("redis") {
                continue;
            }
            let _ = std::os::unix::fs::symlink(entry.path(), bin.join(&name));
        }
    }
    bin
}

/// A service the manifest binds but cdflow.toml does not declare, and a service whose server
/// is not installed, are refused before the version is bumped and pushed.
#[test]
fn an_undeclared_service_and_a_missing_server_are_refused_before_the_bump() {
    let svc = Svc::new("cache, nosuch");
    let origin = svc.project.add_origin();
    let release = |path: Option<&Path>| {
        let mut command = svc.command(&["release", "--repo", origin.to_str().unwrap()]);
        if let Some(path) = path {
            command.env("PATH", path);
        }
        run_of(command.output().unwrap())
    };
    release(None)
        .failure(2)
        .stderr_has("nothing was changed")
        .stderr_has("the manifest binds the service `nosuch`, which cdflow.toml does not declare")
        .stderr_has("add [services.nosuch] with kind =");
    assert_eq!(tags_of(&origin), "", "no version was pushed");

    svc.project
        .write("manifest.yml", &manifest("1.0.0", "cache, db"));
    svc.project
        .git_cmd(&["commit", "-q", "-am", "declared only"]);
    svc.project.git_cmd(&["push", "-q", "origin", "main"]);
    let bin = path_without_redis(svc.project.dir.parent().unwrap());
    release(Some(&bin))
        .failure(2)
        .stderr_has("nothing was changed")
        .stderr_has("the service `cache` is a redis, but `redis-server` is not installed")
        .stderr_has("apt-get install redis-server");
    assert_eq!(tags_of(&origin), "", "no version was pushed");
    assert!(
        !svc.state.path().join("local/services").exists(),
        "no service was made"
    );
}
