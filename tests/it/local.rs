//! The local platform: real processes and real HTTP on loopback.
//!
//! Most tests deploy a tiny Python app that uses only the standard library, so that staging it
//! takes a fraction of a second and no network. One builds and serves the real example app.
//! Every test has its own state folder and free ports, and stops what it started when its
//! [`Local`] is dropped, even on panic (see tests/it/harness/platform.rs). Requests are sent by
//! the harness's HTTP/1.1 client, which counts the outcome of every request it sends and never
//! hides a reconnect.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    assert_all_answered, cdflow_toml, files_under, free_port, get, git_at, manifest, other_app,
    pid_alive, post, python_app, release_from, run_of, tags_of, FollowLogs, Load, Local, Project,
    Request, Run, Tally, APP_PY,
};

#[test]
fn zero_downtime_through_twenty_pushes_and_promotes_under_load() {
    let local = Local::python(2);
    local.push("1.0.0");
    local.promote();
    // 64 clients on the production route, which every promote switches, and 16 more on the
    // staging route, which every push switches.
    let production = Load::start(local.production, 64, 10);
    let staging = Load::start(local.staging, 16, 10);
    std::thread::sleep(Duration::from_millis(300));
    let mut pushes = Vec::new();
    let mut promotes = Vec::new();
    for i in 1..=10 {
        pushes.push(local.push(&format!("1.0.{i}")));
        promotes.push(local.promote());
    }
    std::thread::sleep(Duration::from_millis(300));
    let (production, took) = production.finish();
    let (staging, _) = staging.finish();
    eprintln!(
        "production: {} requests in {:.1}s ({} slow, {} keep-alive reconnects), versions {:?}",
        production.sent,
        took.as_secs_f64(),
        production.slow,
        production.keep_alive_reconnects,
        production.versions
    );
    eprintln!(
        "staging: {} requests, versions {:?}",
        staging.sent, staging.versions
    );
    eprintln!("push (stage + switch) times: {pushes:.2?}");
    eprintln!("promote times: {promotes:.2?}");
    assert_all_answered(&production, "production");
    assert_all_answered(&staging, "staging");
    assert!(production.sent >= 1000, "only {} requests", production.sent);
    assert!(production.slow > 0);
    let expected: Vec<String> = (0..=10).map(|i| format!("1.0.{i}")).collect();
    for version in &expected {
        assert!(
            production.versions.contains_key(version),
            "production never answered {version}: {:?}",
            production.versions
        );
    }
    assert_eq!(
        production.keep_alive_reconnects, 0,
        "the route never closes a keep-alive connection"
    );
    assert_eq!(get(local.production, "/").unwrap().1, "1.0.10\n");
}

#[test]
fn a_version_that_fails_its_health_check_never_gets_traffic() {
    let local = Local::python(2);
    local.push("1.0.0");
    let load = Load::start(local.staging, 16, 5);
    std::thread::sleep(Duration::from_millis(200));
    local.release("1.0.1", 3, "    FAIL_HEALTH: \"1\"\n");
    let run = local.cdflow(&["push", "--to", "staging"]);
    let (tally, _) = load.finish();

    assert_ne!(run.code, Some(0), "the push must fail:\n{run}");
    run.stderr_has("instance 0 was not healthy within 3s")
        .stderr_has("GET /health answered 500")
        // The end of the instance's output.
        .stderr_has("[APP/0] OUT listening on")
        .stderr_has("the route stays on pyapp 1.0.0");
    assert_all_answered(&tally, "staging");
    assert_eq!(
        tally.versions.keys().collect::<Vec<_>>(),
        ["1.0.0"],
        "only the old version answered"
    );
    assert!(tally.sent > 50, "only {} requests", tally.sent);
    let instances = local.instances("staging");
    assert_eq!(
        instances.len(),
        2,
        "only the old instances run: {instances:?}"
    );
    local
        .cdflow(&["status"])
        .success()
        .stdout_has("staging: pyapp 1.0.0");
    // The failed instances are gone.
    let log = local.app_log("staging");
    let failed_pids: Vec<u32> = log
        .lines()
        .filter(|l| l.contains("of pyapp 1.0.1 (pid"))
        .filter_map(|l| l.split("(pid ").nth(1)?.split(',').next()?.parse().ok())
        .collect();
    assert_eq!(failed_pids.len(), 2, "{log}");
    assert!(
        failed_pids.iter().all(|pid| !pid_alive(*pid)),
        "{failed_pids:?}"
    );
}

#[test]
fn a_new_route_port_serves_only_once_the_new_version_is_healthy() {
    let mut local = Local::python(1);
    local.push("1.0.0");
    let old_port = local.staging;
    local.staging = free_port();

    // On the new port, a version that never becomes healthy: the old port keeps serving.
    local.release("1.0.1", 3, "    FAIL_HEALTH: \"1\"\n");
    let run = local.cdflow(&["push", "--to", "staging"]);
    assert_ne!(run.code, Some(0), "the push must fail:\n{run}");
    run.stderr_has("the route stays on pyapp 1.0.0");
    assert_eq!(get(old_port, "/").unwrap().1, "1.0.0\n");
    assert!(
        TcpStream::connect(("127.0.0.1", local.staging)).is_err(),
        "the new port is closed again"
    );

    // A healthy version moves the route to the new port and closes the old one.
    local.push("1.0.2");
    assert_eq!(get(local.staging, "/").unwrap().1, "1.0.2\n");
    assert!(
        TcpStream::connect(("127.0.0.1", old_port)).is_err(),
        "the old port is closed"
    );
    local
        .cdflow(&["status"])
        .success()
        .stdout_has(&format!("at http://127.0.0.1:{}", local.staging));
}

#[test]
fn an_instance_killed_with_sigkill_is_restarted_and_the_route_keeps_answering() {
    let local = Local::python(2);
    local.push("1.0.0");
    let load = Load::start(local.staging, 8, 5);
    std::thread::sleep(Duration::from_millis(200));
    let before = local.instances("staging");
    let victim = before.iter().find(|i| i.0 == 0).unwrap().1;
    // SAFETY: kill(2) on the instance's pid, read from `cdflow status` just now.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let restarted = local.wait_for_restart(victim, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(300));
    let (tally, _) = load.finish();
    assert!(pid_alive(restarted));
    assert!(!pid_alive(victim));
    assert_all_answered(&tally, "staging");
    assert!(tally.sent > 50, "only {} requests", tally.sent);
    let log = local.cdflow(&["logs", "--env", "staging"]);
    log.success()
        .stdout_has(&format!(
            "[CELL/0] instance 0 (pid {victim}) was killed by signal 9"
        ))
        .stdout_has("[CELL/0] instance 0 exited; restarting in 0s");
}

/// 64 clients send GETs for `seconds` while instance 0 of `instances` crashes three seconds
/// after each of its starts (SIGKILL, in the middle of whatever it serves), its port closed
/// `linger` before (as an app whose crash takes a moment: it refuses new connections and closes
/// each kept-alive one after its answer). Returns what the clients saw and the log.
fn load_while_instance_0_crashes(instances: u32, linger: &str, seconds: u64) -> (Tally, String) {
    let local = Local::python(instances);
    local.release(
        "1.0.0",
        20,
        &format!("    CRASH_AFTER: \"3\"\n    CRASH_LINGER: \"{linger}\"\n"),
    );
    local.cdflow(&["push", "--to", "staging"]).success();
    let load = Load::start(local.staging, 64, 10);
    std::thread::sleep(Duration::from_secs(seconds));
    let (tally, took) = load.finish();
    let log = local.cdflow(&["logs", "--env", "staging"]).stdout;
    let crashes = log
        .lines()
        .filter(|l| l.contains("[CELL/0] instance 0 (pid ") && l.contains("killed by signal 9"))
        .count();
    eprintln!(
        "{instances} instances, port closed {linger}s before each crash: {} requests in {:.1}s \
         ({} slow), {crashes} crashes of instance 0, {} failed",
        tally.sent,
        took.as_secs_f64(),
        tally.slow,
        tally.failures.len()
    );
    assert!(crashes >= 3, "instance 0 crashed {crashes} times:\n{log}");
    assert!(
        !log.contains("[CELL/1] instance 1 (pid "),
        "only instance 0 crashed:\n{log}"
    );
    assert!(tally.sent > 1000, "only {} requests", tally.sent);
    (tally, log)
}

/// The only instance crashes every few seconds: the route takes its closed port out at the
/// first refused connection and has each GET wait for the restarted instance, instead of
/// sending it to the dead port again until the supervisor notices.
#[test]
fn a_crashing_single_instance_fails_no_get_the_route_waits_for_its_restart() {
    let (tally, log) = load_while_instance_0_crashes(1, "0.5", 15);
    assert_all_answered(&tally, "staging");
    let taken_out = log
        .lines()
        .find(|l| l.contains("[RTR/0] instance 0 (port "))
        .unwrap_or_else(|| panic!("the route never took instance 0 out:\n{log}"));
    assert!(
        taken_out.contains("Connection refused")
            && taken_out.ends_with("out of the route until it passes a health check"),
        "{taken_out}"
    );
}

/// One of two instances crashes every few seconds: a GET that finds it dead is sent to the
/// other one.
#[test]
fn one_of_two_instances_crashing_fails_no_get_under_64_clients() {
    let (tally, _) = load_while_instance_0_crashes(2, "0", 15);
    assert_all_answered(&tally, "staging");
}

/// With `health-check-type: process` an instance is healthy as soon as it runs, before it
/// listens: the route takes it out at its first refused connection, the next passing check puts
/// it back, and a GET sent meanwhile waits for it instead of failing.
#[test]
fn an_instance_that_refuses_connections_is_taken_out_until_its_next_passing_check() {
    let local = Local::python(1);
    local.release("1.0.0", 20, "");
    let manifest = local
        .project
        .read("manifest.yml")
        .replace("health-check-type: http", "health-check-type: process")
        .replace("  health-check-http-endpoint: /health\n", "")
        .replace("    VERSION:", "    START_DELAY: \"1.5\"\n    VERSION:");
    local.project.write("manifest.yml", &manifest);
    local
        .project
        .git_cmd(&["commit", "-q", "-am", "process health check"]);
    local.cdflow(&["push", "--to", "staging"]).success();

    let started = Instant::now();
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));
    let waited = started.elapsed();
    eprintln!("the GET waited {waited:.2?} for the instance to listen");
    let log = local.wait_for_log(
        "[HEALTH/0] back in the route: the process runs",
        Duration::from_secs(5),
    );
    assert!(
        log.contains("[RTR/0] instance 0 (port ")
            && log.contains("out of the route until it passes a health check"),
        "{log}"
    );
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}

#[test]
fn an_instance_over_its_memory_limit_is_killed_and_restarted() {
    let local = Local::python(1);
    local.release("1.0.0", 20, "  memory: 64M\n");
    local.cdflow(&["push", "--to", "staging"]).success();
    local
        .cdflow(&["status"])
        .success()
        .stdout_has(" of 64M (GET /health answered 200");
    let victim = local.instances("staging")[0].1;

    // 100 MB more: over the limit, so the instance is killed within a second and restarted.
    // A POST, which the route never sends twice: a retry would grow the new instance too.
    // The instance may be killed before it answers: the outcome is in the log, not here.
    let _ = Request::post("/grow?mb=100").send(local.staging);
    local.wait_for_restart(victim, Duration::from_secs(15));
    assert!(!pid_alive(victim));
    assert_eq!(get(local.staging, "/").unwrap().1, "1.0.0\n");
    local
        .cdflow(&["logs", "--env", "staging"])
        .success()
        .stdout_has(&format!(
            "[CELL/0] instance 0 (pid {victim}) was killed: its processes held"
        ))
        .stdout_has("over the manifest's memory limit of 64M")
        .stdout_has("[CELL/0] instance 0 went over its memory limit; restarting in 0s");
}

#[test]
fn a_hung_instance_with_a_memory_limit_still_fails_its_health_checks_and_is_restarted() {
    let local = Local::python(1);
    // The memory check ticks every second too: it must not put the health checks off.
    local.release("1.0.0", 20, "  memory: 256M\n");
    local.cdflow(&["push", "--to", "staging"]).success();
    let victim = local.instances("staging")[0].1;
    // SAFETY: kill(2) on the instance's pid, read from `cdflow status` just now.
    unsafe { libc::kill(victim as i32, libc::SIGSTOP) };
    local.wait_for_restart(victim, Duration::from_secs(30));
    assert!(!pid_alive(victim));
    assert_eq!(get(local.staging, "/").unwrap().1, "1.0.0\n");
    local
        .cdflow(&["logs", "--env", "staging"])
        .success()
        .stdout_has("[HEALTH/0] check 3 of 3 failed")
        .stdout_has(&format!("stopped unhealthy instance 0 (pid {victim})"));
}

/// A running instance is checked every second. An app that logs every request (as gunicorn
/// does) would put a line a second per instance into the log for the checks alone, so those
/// stay out unless the check fails; what the platform logs of its checks is what changes: the first pass, a failure,
/// a pass after failures, the restart of an instance that fails three in a row.
#[test]
fn passing_health_checks_stay_out_of_the_log_and_failures_show_once() {
    let local = Local::python(2);
    local.release("1.0.0", 20, "    ACCESS_LOG: \"1\"\n");
    local.cdflow(&["push", "--to", "staging"]).success();
    assert_eq!(get(local.staging, "/say?through-the-route").unwrap().0, 200);
    // Three checks of each instance at least.
    std::thread::sleep(Duration::from_millis(3500));
    let log = local.cdflow(&["logs", "--env", "staging"]).stdout;
    assert!(
        log.contains("\"GET /say?through-the-route HTTP/1.1\" 200"),
        "the app's own access lines are kept:\n{log}"
    );
    assert_eq!(
        access_lines_of_checks(&log),
        Vec::<&str>::new(),
        "the checks' requests are left out of the log"
    );
    assert_eq!(
        log.matches("] healthy after ").count(),
        2,
        "one line per instance, when it became healthy:\n{log}"
    );
    assert_health_events_are_changes(&log);

    let pids: Vec<u32> = local.instances("staging").iter().map(|i| i.1).collect();
    // One failed check, then passes again: logged once each, the instance stays.
    assert_eq!(post(local.staging, "/sick?checks=1"), 200);
    let log = local.wait_for_log("healthy again", Duration::from_secs(10));
    let sick = if log.contains("[HEALTH/0] check 1 of 3 failed") {
        0
    } else {
        1
    };
    assert_eq!(
        log.matches(&format!(
            "[HEALTH/{sick}] check 1 of 3 failed: GET /health answered 500"
        ))
        .count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches(&format!(
            "[HEALTH/{sick}] healthy again after 1 failed check: GET /health answered 200"
        ))
        .count(),
        1,
        "{log}"
    );
    assert_eq!(
        local
            .instances("staging")
            .iter()
            .map(|i| i.1)
            .collect::<Vec<_>>(),
        pids,
        "no instance was restarted"
    );
    // The failed check's own access line is kept: it may say more than the status.
    let failed = access_lines_of_checks(&log);
    assert!(
        failed.len() == 1 && failed[0].contains("\"GET /health HTTP/1.1\" 500"),
        "{failed:?}\n{log}"
    );
    // Nothing more while the checks pass, a second and a half later.
    std::thread::sleep(Duration::from_millis(1500));
    let log = local.cdflow(&["logs", "--env", "staging"]).stdout;
    assert_eq!(access_lines_of_checks(&log), failed);
    assert_health_events_are_changes(&log);
}

/// Every line the platform logs about health checks is a change: a first pass, a failure, a
/// pass after failures (a slow machine may add a failure, never a line per passing check).
#[track_caller]
fn assert_health_events_are_changes(log: &str) {
    for line in log.lines().filter(|l| l.contains("[HEALTH/")) {
        let event = line.split_once("] ").map_or("", |(_, event)| event);
        assert!(
            ["healthy after ", "check ", "healthy again after "]
                .iter()
                .any(|kind| event.starts_with(kind)),
            "not a change: {line}\n{log}"
        );
    }
}

/// The app's access-log lines of the platform's health checks.
fn access_lines_of_checks(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("\"GET /health HTTP/1.1\""))
        .collect()
}

#[test]
fn the_route_passes_on_a_protocol_switch_and_joins_the_connections() {
    let local = Local::python(1);
    local.push("1.0.0");
    let mut stream = TcpStream::connect(("127.0.0.1", local.staging)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo\r\n"), "{head}");
    assert!(head.contains("connection: upgrade\r\n"), "{head}");
    // Both ways, twice: the connection is now the instance's.
    for word in ["ping\n", "pong pong\n"] {
        stream.write_all(word.as_bytes()).unwrap();
        let mut echoed = vec![0u8; word.len()];
        stream.read_exact(&mut echoed).unwrap();
        assert_eq!(String::from_utf8(echoed).unwrap(), word);
    }
    // A plain request on the same route still gets an answer.
    assert_eq!(get(local.staging, "/").unwrap().1, "1.0.0\n");
}

#[test]
fn rollback_switches_back_to_the_staged_artifact_without_a_build() {
    let local = Local::python(1);
    local.push("1.0.0");
    local.push("1.0.1");
    assert_eq!(local.artifacts(), 2);

    let started = Instant::now();
    let run = local.cdflow(&["rollback", "--env", "staging"]);
    let took = started.elapsed();
    run.success()
        .stdout_has("staging now serves 1.0.0 (sha256:");
    assert!(
        !run.stdout.contains("$ "),
        "a rollback runs no build:\n{run}"
    );
    eprintln!("rollback took {took:.2?}");
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));
    assert_eq!(local.artifacts(), 2, "nothing was staged");

    // 1.0.1 served before 1.0.0 came back: the error says so, and how to serve it again.
    let again = local.cdflow(&["rollback", "--env", "staging"]);
    again
        .failure(2)
        .stderr_has("1.0.0 is the first deployment left to undo there")
        .stderr_has("it has also served 1.0.1: `--version 1.0.1` serves that again");
    assert!(!again.stderr.contains("served only"), "{again}");
    local
        .cdflow(&["rollback", "--env", "staging", "--version", "1.0.1"])
        .success();
    assert_eq!(get(local.staging, "/").unwrap().1, "1.0.1\n");

    // An artifact changed after staging is refused, and the route stays where it was.
    let artifacts = local.state.path().join("local/artifacts");
    let mut tampered = false;
    for dir in std::fs::read_dir(&artifacts).unwrap().flatten() {
        let app = dir.path().join("droplet/app/app.py");
        let meta = std::fs::read_to_string(dir.path().join("artifact.json")).unwrap();
        if meta.contains("\"version\": \"1.0.0\"") {
            std::fs::write(&app, "print('tampered')\n").unwrap();
            tampered = true;
        }
    }
    assert!(tampered);
    local
        .cdflow(&["rollback", "--env", "staging", "--version", "1.0.0"])
        .failure(1)
        .stderr_has("was changed after staging");
    assert_eq!(get(local.staging, "/").unwrap().1, "1.0.1\n");
}

#[test]
fn status_logs_down_and_up() {
    let local = Local::python(2);
    local.push("1.0.0");

    // What an instance is given, as a Cloud Foundry cell gives it.
    let (code, body) = get(local.staging, "/env").unwrap();
    assert_eq!(code, 200);
    let env: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(env["PORT"], env["VCAP_APP_PORT"]);
    assert_eq!(env["GREETING"], "hello, world");
    assert!(env["VIRTUAL_ENV"]
        .as_str()
        .unwrap()
        .contains("/local/artifacts/"));
    let vcap: serde_json::Value =
        serde_json::from_str(env["VCAP_APPLICATION"].as_str().unwrap()).unwrap();
    assert_eq!(vcap["application_name"], "pyapp");
    assert_eq!(vcap["application_version"], "1.0.0");
    assert_eq!(
        vcap["application_uris"][0],
        format!("127.0.0.1:{}", local.staging)
    );
    assert_eq!(
        vcap["instance_index"].to_string(),
        env["CF_INSTANCE_INDEX"].as_str().unwrap()
    );
    let services: serde_json::Value =
        serde_json::from_str(env["VCAP_SERVICES"].as_str().unwrap()).unwrap();
    assert_eq!(services["user-provided"][0]["name"], "db");

    let status = local.cdflow(&["status"]);
    status
        .success()
        .stdout_has("staging: pyapp 1.0.0 (sha256:")
        .stdout_has(&format!("at http://127.0.0.1:{}", local.staging));
    let instances = local.instances("staging");
    assert_eq!(instances.len(), 2, "{status}");
    assert!(
        instances.iter().all(|i| i.3 == "healthy" && i.4 == 0),
        "{instances:?}"
    );
    let staging = local.status_of("staging").unwrap();
    assert_eq!(staging["state"], "serving");
    assert_eq!(staging["version"], "1.0.0");
    assert_eq!(staging["platform"], "local");
    assert!(staging["server_pid"].as_u64().unwrap() > 0);
    assert!(staging["artifact"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(
        staging["url"],
        format!("http://127.0.0.1:{}", local.staging)
    );
    assert_eq!(staging["services"][0]["kind"], "user-provided");

    // Logs, then following them while the app prints.
    local
        .cdflow(&["logs", "--env", "staging"])
        .success()
        .stdout_has("[APP/0] OUT listening on")
        .stdout_has("[HEALTH/1] healthy after")
        .stdout_has(&format!(
            "[API] route http://127.0.0.1:{} switched",
            local.staging
        ));
    let mut follow = FollowLogs::start(local.command(&["logs", "--env", "staging", "-f"]));
    std::thread::sleep(Duration::from_millis(300));
    get(local.staging, "/say?marker-42").unwrap();
    follow.wait_for("OUT said: marker-42", Duration::from_secs(10));
    drop(follow);

    // Down: every process gone and both ports free.
    local
        .cdflow(&["down"])
        .success()
        .stdout_has("staging of pyapp: stopped");
    for (_, pid, port, _, _) in &instances {
        assert!(!pid_alive(*pid), "instance pid {pid} still runs");
        assert!(TcpStream::connect(("127.0.0.1", *port)).is_err());
    }
    assert!(TcpStream::connect(("127.0.0.1", local.staging)).is_err());
    local
        .cdflow(&["status"])
        .success()
        .stdout_has("staging: stopped; it last served pyapp 1.0.0");
    let stopped = local.status_of("staging").unwrap();
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["version"], "1.0.0");
    assert!(stopped.get("server_pid").is_none());
    assert!(stopped.get("up_refused").is_none());

    // Up: the last deployed version again, on the same route.
    local
        .cdflow(&["up"])
        .success()
        .stdout_has("staging of pyapp: serves 1.0.0");
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));
    assert_eq!(local.instances("staging").len(), 2);
}

#[test]
fn deploys_to_one_environment_queue_and_a_killed_deployer_blocks_nobody() {
    let local = Local::python(1);
    local.push("1.0.0");

    // Two pushes at once: the second is refused, or waits for the first with --lock-wait, and
    // the log shows the deploys one after the other, never interleaved.
    local.release("1.0.1", 20, "    START_DELAY: \"1.5\"\n");
    let first = local
        .command(&["push", "--to", "staging"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    local.release("1.0.2", 20, "");
    // Refused with a clear message, or queued when asked to.
    local
        .cdflow(&["push", "--to", "staging"])
        .failure(2)
        .stderr_has("busy")
        .stderr_has("pid");
    let second = local.cdflow(&["push", "--to", "staging", "--lock-wait"]);
    let first = run_of(first.wait_with_output().unwrap());
    first.success();
    second.success().stderr_has("waiting for");
    assert_eq!(get(local.staging, "/").unwrap().1, "1.0.2\n");
    let log = local.app_log("staging");
    let api: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("[API] ").nth(1))
        .filter(|l| l.starts_with("starting") || l.starts_with("route"))
        .collect();
    let order: Vec<String> = api
        .iter()
        .map(|l| {
            let verb = l.split_whitespace().next().unwrap();
            let version = l
                .split_whitespace()
                .find(|w| w.starts_with("1.0."))
                .unwrap();
            format!("{verb} {version}")
        })
        .collect();
    assert_eq!(
        order,
        [
            "starting 1.0.0",
            "route 1.0.0",
            "starting 1.0.1",
            "route 1.0.1",
            "starting 1.0.2",
            "route 1.0.2"
        ],
        "{log}"
    );

    // A deployer killed while it holds the lock: the kernel frees the lock, and the next push
    // goes through.
    local.release("1.0.3", 20, "    START_DELAY: \"1\"\n");
    let mut killed = local
        .command(&["push", "--to", "staging"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    killed.kill().unwrap();
    killed.wait().unwrap();
    local.release("1.0.4", 20, "");
    let started = Instant::now();
    local.cdflow(&["push", "--to", "staging"]).success();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(get(local.staging, "/").unwrap().1, "1.0.4\n");
}

#[test]
fn a_state_folder_deep_enough_to_overflow_a_socket_path_still_works() {
    // A unix socket path holds about 100 bytes; this state folder's is longer.
    let shallow = tempfile::tempdir().unwrap();
    let deep = shallow.path().join("a-folder-with-a-long-name".repeat(5));
    std::fs::create_dir_all(&deep).unwrap();
    let local = Local::python_in(1, tempfile::Builder::new().tempdir_in(&deep).unwrap());
    local.push("1.0.0");
    assert_eq!(get(local.staging, "/").unwrap().1, "1.0.0\n");
    local
        .cdflow(&["status"])
        .success()
        .stdout_has("staging: pyapp 1.0.0");
    local
        .cdflow(&["down"])
        .success()
        .stdout_has("staging of pyapp: stopped");
    assert!(TcpStream::connect(("127.0.0.1", local.staging)).is_err());
    // The deep folder goes with the shallow one, after the test's own down.
    drop(local);
    drop(shallow);
}

/// Writes a wheel of the package `hello-srv` whose console script `hello-srv` runs `app.py`
/// from the current folder (made by tests/fixtures/wheels/hello_srv.py with Python's zipfile:
/// no network, no build tools).
fn write_console_script_wheel(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wheels/hello_srv.py");
    let status = Command::new("python3")
        .arg(script)
        .arg(dir.join("hello_srv-1.0-py3-none-any.whl"))
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_python_app_runs_with_its_requirements_from_a_relocated_virtual_environment() {
    let local = Local::python(1);
    write_console_script_wheel(&local.project.path("vendor"));
    local.project.write(
        "requirements.txt",
        "./vendor/hello_srv-1.0-py3-none-any.whl\n",
    );
    // Started through the console script that pip wrote into the venv, after the venv moved
    // from the staging folder into the artifact store.
    let manifest =
        manifest("1.0.0", 1, 20, "").replace("command: python app.py", "command: hello-srv");
    local.project.write("manifest.yml", &manifest);
    local.project.git_cmd(&["add", "-A"]);
    local
        .project
        .git_cmd(&["commit", "-q", "-m", "requirements"]);
    let run = local.cdflow(&["push", "--to", "staging"]);
    run.success()
        .stdout_has("-m pip install")
        .stdout_has("-r ")
        .stdout_has("requirements.txt");
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));
    let staged = |run: &Run| {
        run.stdout
            .split("as sha256:")
            .nth(1)
            .map(|r| r[..12].to_string())
    };
    // The same source stages to the same bytes: the same artifact.
    let again = local.cdflow(&["push", "--to", "staging"]);
    again.success();
    assert_eq!(staged(&run), staged(&again));
    assert_eq!(local.artifacts(), 1);
}

/// `3.11` of the `python3` on PATH: what the tests' apps ask for, so that it is there.
fn host_python_minor() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Commits the app as it is, with `command` as its start command.
fn commit_python_app(local: &Local, command: &str, message: &str) {
    let manifest = manifest("1.0.0", 1, 20, "")
        .replace("command: python app.py", &format!("command: {command}"));
    local.project.write("manifest.yml", &manifest);
    local.project.git_cmd(&["add", "-A"]);
    local.project.git_cmd(&["commit", "-q", "-m", message]);
}

/// A Pipfile app: the lock's `default` section is installed, from `vendor/` alone (the lock's
/// index is left out, as the buildpack does for a vendored app), with the Python that the lock
/// names; `.python-version`, which the buildpack does not read, is warned about.
#[test]
fn a_pipfile_lock_app_stages_from_its_lock_with_the_python_it_names() {
    let local = Local::python(1);
    let minor = host_python_minor();
    write_console_script_wheel(&local.project.path("vendor"));
    local.project.write(
        "Pipfile",
        &format!("[packages]\nhello-srv = \"==1.0\"\n\n[requires]\npython_version = \"{minor}\"\n"),
    );
    local.project.write(
        "Pipfile.lock",
        &format!(
            r#"{{
    "_meta": {{
        "pipfile-spec": 6,
        "requires": {{"python_version": "{minor}"}},
        "sources": [{{"name": "pypi", "url": "https://pypi.org/simple", "verify_ssl": true}}]
    }},
    "default": {{"hello-srv": {{"hashes": [], "version": "==1.0"}}}},
    "develop": {{"no-such-test-tool": {{"version": "==9.9"}}}}
}}
"#
        ),
    );
    local.project.write(".python-version", "3.4.10\n");
    commit_python_app(&local, "hello-srv", "pipenv");
    let run = local.cdflow(&["push", "--to", "staging"]);
    run.success()
        .stdout_has("installing from Pipfile.lock")
        .stdout_has(&format!(
            "Pipfile.lock's python_version asks (`python-{minor}.x`)"
        ))
        .stdout_has("-m venv ")
        .stdout_has("--no-index")
        .stderr_has(".python-version is ignored")
        .stderr_has("runtime.txt");
    assert!(
        run.stdout.contains(&format!("$ python{minor} -m venv"))
            || run.stdout.contains("$ python3 -m venv"),
        "{}",
        run.stdout
    );
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));
    // The requirements written from the lock were for pip alone.
    for artifact in std::fs::read_dir(local.state.path().join("local/artifacts")).unwrap() {
        let artifact = artifact.unwrap().path();
        assert!(!artifact.join("requirements.txt").exists(), "{artifact:?}");
        assert!(
            artifact.join("droplet/app/Pipfile.lock").exists(),
            "{artifact:?}"
        );
    }
}

/// A setup.py app is installed as `-e .` (its install_requires from `vendor/`) with the Python
/// its runtime.txt names, and its own console script still imports it from the app's folder
/// once the droplet is in the store.
#[test]
fn a_setup_py_app_stages_as_an_editable_install_that_survives_the_move_into_the_store() {
    let local = Local::python(1);
    write_console_script_wheel(&local.project.path("vendor"));
    local.project.write(
        "setup.py",
        "from setuptools import setup\nsetup(name='greetapp', version='0.1', \
         py_modules=['greet'], install_requires=['hello-srv'], \
         entry_points={'console_scripts': ['greet-srv = greet:main']})\n",
    );
    local.project.write(
        "greet.py",
        "import hello_srv\n\ndef main():\n    hello_srv.main()\n",
    );
    let minor = host_python_minor();
    local
        .project
        .write("runtime.txt", &format!("python-{minor}.x\n"));
    commit_python_app(&local, "greet-srv", "setup.py");
    // No network here for pip to fetch setuptools and wheel into an isolated build: the venv's
    // setuptools builds the editable install (`setup.py develop`).
    let push = || {
        run_of(
            local
                .command(&["push", "--to", "staging"])
                .env("PIP_USE_PEP517", "0")
                .output()
                .unwrap(),
        )
    };
    let run = push();
    run.success()
        .stdout_has("installing from setup.py (-e .)")
        .stdout_has(&format!("runtime.txt asks (`python-{minor}.x`)"))
        .stdout_has("--no-build-isolation");
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));
    let staged = |run: &Run| {
        run.stdout
            .split("as sha256:")
            .nth(1)
            .map(|r| r[..12].to_string())
    };
    // Nothing in the venv names the staging folder: the same source, the same artifact.
    let again = push();
    again.success();
    assert_eq!(staged(&run), staged(&again));
    assert_eq!(local.artifacts(), 1);
}

/// What the python buildpack would not install, and a Python this machine lacks, are refused
/// before the version is bumped and pushed, in a dry run too, each with its fix.
#[test]
fn a_pyproject_only_app_and_a_missing_python_are_refused_before_the_version_is_pushed() {
    let state = tempfile::tempdir().unwrap();
    let cases = [
        (
            vec![(
                "pyproject.toml",
                "[project]\nname = \"other\"\ndependencies = [\"flask\"]\n",
            )],
            vec![
                "pyproject.toml",
                "does not read pyproject.toml",
                "pip freeze > requirements.txt",
            ],
        ),
        (
            vec![("requirements.txt", ""), ("runtime.txt", "python-3.4.x\n")],
            vec![
                "runtime.txt asks for Python `python-3.4.x`",
                "install Python 3.4",
                "change runtime.txt",
            ],
        ),
    ];
    for (files, expected) in cases {
        let (other, origin) = other_app(free_port(), free_port());
        for (path, text) in files {
            other.write(path, text);
        }
        other.git_cmd(&["add", "-A"]);
        other.git_cmd(&["commit", "-q", "-m", "python"]);
        other.git_cmd(&["push", "-q", "origin", "main"]);
        let head = || other.git_cmd(&["ls-remote", "origin", "main"]);
        let before = head();
        for dry_run in [true, false] {
            let run = release_from(&other, &origin, state.path(), dry_run);
            run.failure(2).stderr_has("nothing was changed");
            for text in &expected {
                run.stderr_has(text);
            }
        }
        assert_eq!(tags_of(&origin), "", "no version was tagged");
        assert_eq!(head(), before, "nothing was pushed");
    }
}

#[test]
fn an_unknown_buildpack_is_a_clear_error() {
    let local = Local::python(1);
    local.project.write(
        "manifest.yml",
        "applications:\n- name: pyapp\n  command: ruby app.rb\n  buildpacks: [ruby_buildpack]\n",
    );
    local.project.git_cmd(&["commit", "-q", "-am", "ruby"]);
    local
        .cdflow(&["push", "--to", "staging"])
        .failure(2)
        .stderr_has("no buildpack `ruby_buildpack`")
        .stderr_has("python_buildpack");
    assert_eq!(local.artifacts(), 0);
}

/// The example app's crate as a project of its own: its Cargo.toml inherits from cdflow's
/// workspace, so the inherited keys are written out, and the workspace's lock file goes with it
/// so that nothing is resolved afresh (and no network is needed).
fn example_app_project(staging: u16, production: u16) -> Project {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("example_app");
    let project = Project::empty();
    copy_dir(&source, &project.dir);
    let cargo_toml = std::fs::read_to_string(source.join("Cargo.toml")).unwrap();
    let standalone: String = cargo_toml
        .lines()
        .map(|line| match line.replace(' ', "").as_str() {
            "edition.workspace=true" => "edition = \"2021\"".to_string(),
            "license.workspace=true" => "license = \"MIT\"".to_string(),
            "repository.workspace=true" | "rust-version.workspace=true" => String::new(),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let standalone = if standalone.contains("[workspace]") {
        standalone
    } else {
        format!("{standalone}\n\n[workspace]\n")
    };
    project.write("Cargo.toml", &standalone);
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock");
    std::fs::copy(lock, project.path("Cargo.lock")).unwrap();
    project.write(
        "cdflow.toml",
        &format!(
            "[app]\nname = \"example-app\"\n\n[version]\nsource = \"Cargo.toml\"\n\n\
             [env.staging]\nport = {staging}\n\n[env.production]\nport = {production}\n"
        ),
    );
    project
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        if name == "target" {
            continue;
        }
        let target: PathBuf = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn the_example_app_is_built_once_and_serves_its_route() {
    let staging = free_port();
    let production = free_port();
    let project = example_app_project(staging, production);
    // The workspace's lock file lists cdflow's packages too: drop those, offline.
    let pruned = project
        .command(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["update", "--offline", "--workspace", "--quiet"])
        .output()
        .unwrap();
    assert!(
        pruned.status.success(),
        "{}",
        String::from_utf8_lossy(&pruned.stderr)
    );
    project.git_cmd(&["init", "-q", "-b", "main"]);
    project.git_cmd(&["add", "-A"]);
    project.git_cmd(&["commit", "-q", "-m", "example app"]);
    let local = Local::new(
        project,
        tempfile::tempdir().unwrap(),
        staging,
        production,
        2,
    );
    // Built once for every run of this test, like the build cache of a CI machine.
    let target = crate::harness::shared_target();
    let push = || {
        let started = Instant::now();
        let run = run_of(
            local
                .command(&["push", "--to", "staging"])
                .env("CARGO_TARGET_DIR", &target)
                .env("CARGO_NET_OFFLINE", "true")
                .output()
                .unwrap(),
        );
        (run, started.elapsed())
    };
    let (first, first_took) = push();
    first
        .success()
        .stdout_has("cargo build --release --locked --bin example_app")
        .stdout_has("(rust_buildpack)");
    assert_eq!(get(staging, "/").unwrap(), (200, "Hello world\n".into()));
    let (code, health) = get(staging, "/health").unwrap();
    assert_eq!(code, 200);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "up");
    assert_eq!(health["version"], "0.1.0");

    // Pushing again builds nothing new and stages the same artifact, byte for byte.
    let (second, second_took) = push();
    second.success();
    let digest = |run: &Run| {
        run.stdout
            .split("as sha256:")
            .nth(1)
            .map(|rest| rest[..12].to_string())
            .unwrap()
    };
    assert_eq!(digest(&first), digest(&second));
    let promote_took = local.promote();
    assert_eq!(get(production, "/").unwrap().1, "Hello world\n");
    eprintln!(
        "example app: first push {first_took:.2?}, push of a built artifact {second_took:.2?}, \
         promote {promote_took:.2?}"
    );
    print_copy_times(&local, "staging");
}

/// Prints how long copying the app took at each start of an instance, from the log.
fn print_copy_times(local: &Local, env: &str) {
    let log = local.cdflow(&["logs", "--env", env]).stdout;
    let times: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("its app copied in ").nth(1))
        .collect();
    eprintln!("{env}: each instance's app copied in {times:?}");
}

/// The version `cdflow.toml` says on origin's main: what a release would have bumped.
fn version_on(origin: &Path) -> String {
    git_at(origin, &["show", "main:cdflow.toml"])
        .lines()
        .find_map(|line| line.strip_prefix("current = "))
        .unwrap_or_default()
        .trim_matches('"')
        .to_string()
}

/// Problems that a deploy would refuse on are found before the version commit and tag are
/// pushed, in a dry run too: a route port another program holds, and a route port that another
/// app's running environment holds.
#[test]
fn a_port_in_use_and_another_apps_route_are_refused_before_the_version_is_pushed() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let (other, origin) = other_app(port, free_port());
    let state = tempfile::tempdir().unwrap();
    for dry_run in [true, false] {
        release_from(&other, &origin, state.path(), dry_run)
            .failure(2)
            .stderr_has("nothing was changed")
            .stderr_has(&format!(
                "port {port} on 127.0.0.1, is in use by another program"
            ));
    }
    assert_eq!(tags_of(&origin), "", "no version was pushed");
    drop(held);

    // pyapp's `staging` serves on the port that `other` gives its own `staging`: the second
    // app is told which app holds it, and the two ways out.
    let local = Local::python(1);
    local.push("1.0.0");
    let (other, origin) = other_app(local.staging, free_port());
    for dry_run in [true, false] {
        release_from(&other, &origin, local.state.path(), dry_run)
            .failure(2)
            .stderr_has("nothing was changed")
            .stderr_has(&format!(
                "the route of `staging`, port {}, is already the route of `staging` of the app \
                 `pyapp` on this machine",
                local.staging
            ))
            .stderr_has("under [env.staging] in cdflow.toml")
            .stderr_has("`cdflow down --app pyapp --env staging`");
    }
    assert_eq!(tags_of(&origin), "", "no version was pushed");
    assert_eq!(version_on(&origin), "0.1.0", "no version commit was pushed");
    assert!(
        !local.state.path().join("local/apps/other").exists(),
        "nothing of `other` was recorded"
    );
    let (status, body) = get(local.staging, "/").unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "1.0.0\n"),
        "pyapp still serves"
    );
}

/// What promote deploys is the release that serves staging, with the manifest it was deployed
/// with there (its instances, command and env), not the checkout's: here staging was rolled back
/// under a checkout that moved on.
#[test]
fn promote_after_a_staging_rollback_runs_that_release_with_its_own_manifest() {
    let local = Local::python(1);
    local.push("1.0.0");
    // 1.0.1 runs two instances; the checkout stays at 1.0.1.
    local.project.write(
        "cdflow.toml",
        &cdflow_toml("1.0.1", local.staging, local.production),
    );
    local
        .project
        .write("manifest.yml", &manifest("1.0.1", 2, 20, ""));
    local.project.git_cmd(&["commit", "-qam", "1.0.1"]);
    local.cdflow(&["push", "--to", "staging"]).success();
    local.cdflow(&["rollback", "--env", "staging"]).success();
    assert_eq!(get(local.staging, "/").unwrap().1, "1.0.0\n");

    local.cdflow(&["promote", "--force"]).success();
    let (status, body) = get(local.production, "/").unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "1.0.0\n"),
        "production answers with 1.0.0's own env (VERSION), not the checkout's"
    );
    assert_eq!(
        local.instances("production").len(),
        1,
        "1.0.0's manifest runs one instance, the checkout's two"
    );
    local
        .cdflow(&["status"])
        .success()
        .stdout_has("production: pyapp 1.0.0");
}

/// Starts `cdflow ARGS`, waits until it prints a line holding `marker`, then a moment more, and
/// SIGKILLs it: the instant a CI runner's cancel would pick.
fn sigkill_after(local: &Local, args: &[&str], marker: &str, then: Duration) {
    let mut child = local
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(marker) {
            break;
        }
    }
    assert!(
        seen.contains(marker),
        "cdflow never printed {marker:?}:\n{seen}"
    );
    std::thread::sleep(then);
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
}

/// A SIGKILL of cdflow in the middle of a deploy and of a promote, under load: the previous
/// version answers every request until a new one is healthy, and the next run goes through.
#[test]
fn a_sigkill_during_a_deploy_and_a_promote_drops_no_request() {
    let local = Local::python(2);
    local.push("1.0.0");
    local.promote();
    let production = Load::start(local.production, 16, 10);
    let staging = Load::start(local.staging, 16, 10);
    std::thread::sleep(Duration::from_millis(200));

    // 1.0.1 takes two seconds to start: the kill lands while its instances start.
    local.release("1.0.1", 20, "    START_DELAY: \"2\"\n");
    sigkill_after(
        &local,
        &["push", "--to", "staging"],
        "staged pyapp 1.0.1",
        Duration::from_millis(500),
    );
    assert!(
        get(local.staging, "/").is_ok_and(|(status, _)| status == 200),
        "staging answers after the kill"
    );
    local.cdflow(&["push", "--to", "staging"]).success();
    assert_eq!(get(local.staging, "/").unwrap().1, "1.0.1\n");

    sigkill_after(
        &local,
        &["promote", "--force"],
        "stage 1/1",
        Duration::from_millis(800),
    );
    assert!(
        get(local.production, "/").is_ok_and(|(status, _)| status == 200),
        "production answers after the kill"
    );
    local.promote();
    assert_eq!(get(local.production, "/").unwrap().1, "1.0.1\n");

    std::thread::sleep(Duration::from_millis(200));
    let (production, _) = production.finish();
    let (staging, _) = staging.finish();
    assert_all_answered(&production, "production");
    assert_all_answered(&staging, "staging");
}

/// The files of the droplet of the only artifact in the state folder, sorted.
fn droplet_app_files(local: &Local) -> Vec<String> {
    let artifacts = local.state.path().join("local/artifacts");
    let artifact = std::fs::read_dir(&artifacts)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| !path.file_name().unwrap().to_string_lossy().starts_with('.'))
        .expect("an artifact");
    let app = artifact.join("droplet/app");
    let mut files: Vec<String> = files_under(&app)
        .iter()
        .map(|path| {
            path.strip_prefix(&app)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    files
}

/// A v3 manifest: the `web` process's instances, memory, command and health check are the
/// app's; `path` stages from that folder, relative to the manifest, with its `.cfignore` (`!`
/// lines included); a `worker` process and `stack` are said to apply on cf only.
#[test]
fn a_v3_web_process_runs_its_instances_with_its_memory_from_the_manifests_path() {
    let local = Local::python(1);
    local.project.write("service/app.py", APP_PY);
    local.project.write("service/notes.txt", "left out");
    local.project.write("service/keep.txt", "brought back");
    local
        .project
        .write("service/.cfignore", "*.txt\n!keep.txt\n");
    local.project.write(
        "manifest.yml",
        "version: 1\napplications:\n- name: pyapp\n  path: service\n  buildpacks: \
         [python_buildpack]\n  stack: cflinuxfs4\n  env:\n    VERSION: \"1.0.0\"\n  processes:\n  \
         - type: web\n    command: python app.py\n    instances: 2\n    memory: 64M\n    \
         health-check-type: http\n    health-check-http-endpoint: /health\n    timeout: 20\n  \
         - type: worker\n    command: python worker.py\n",
    );
    local.project.git_cmd(&["add", "-A"]);
    local.project.git_cmd(&["commit", "-q", "-m", "v3"]);
    local
        .cdflow(&["push", "--to", "staging"])
        .success()
        .stdout_has("`stack` of `pyapp` applies on cf only")
        .stdout_has("the `worker` process of `pyapp` runs on cf only")
        .stdout_has("starting 2 instance(s)")
        .stdout_has("health check http /health");
    let staging = local.status_of("staging").unwrap();
    // What the instances hold, of the web process's limit of 64M.
    let limited = staging["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["memory_bytes"].is_u64() && i["memory_limit_bytes"] == 64 * 1024 * 1024)
        .count();
    assert_eq!(limited, 2, "{staging}");
    assert_eq!(local.instances("staging").len(), 2, "{staging}");
    assert_eq!(get(local.staging, "/").unwrap().1, "1.0.0\n");
    // The folder `path` names, not the checkout (whose cdflow.toml and manifest stay out).
    // `.cfignore` itself stays out, as with the cf CLI.
    assert_eq!(droplet_app_files(&local), ["app.py", "keep.txt"]);
}

/// `docker` is refused by name before anything is staged; a `no-route` app runs without its
/// route, and e2e tests against it with no `url` are refused before they run.
#[test]
fn docker_is_refused_and_a_no_route_app_runs_without_its_route() {
    let local = Local::python(1);
    let base = manifest("1.0.0", 1, 20, "");
    local.project.write(
        "manifest.yml",
        &format!("{base}  docker:\n    image: nginx:latest\n"),
    );
    local.project.git_cmd(&["commit", "-q", "-am", "docker"]);
    local
        .cdflow(&["push", "--to", "staging"])
        .failure(2)
        .stderr_has("`docker` of `pyapp`: the local platform cannot run a Docker image")
        .stderr_has("push this app to a cf environment");
    assert_eq!(local.artifacts(), 0);

    let routeless = base.replace("health-check-type: http", "health-check-type: process")
        + "  no-route: true\n";
    local.project.write("manifest.yml", &routeless);
    local.project.write(
        "cdflow.toml",
        &(cdflow_toml("1.0.0", local.staging, local.production) + "\n[e2e]\ncommand = \"true\"\n"),
    );
    local.project.git_cmd(&["commit", "-q", "-am", "no route"]);
    local
        .cdflow(&["push", "--to", "staging"])
        .success()
        .stdout_has("runs, with no route (no-route)");
    let instances = local.instances("staging");
    assert_eq!(instances.len(), 1);
    local
        .cdflow(&["status"])
        .success()
        .stdout_has("at no route (no-route)");
    // The instance itself listens on its port (once started: a `process` check does not wait
    // for that); it is told it has no URIs, as on cf.
    let port = instances[0].2;
    crate::harness::wait_for("the instance to listen", || get(port, "/env").is_ok());
    let env: serde_json::Value = serde_json::from_str(&get(port, "/env").unwrap().1).unwrap();
    let application: serde_json::Value =
        serde_json::from_str(env["VCAP_APPLICATION"].as_str().unwrap()).unwrap();
    assert_eq!(application["uris"], serde_json::json!([]), "{application}");
    let refused = TcpStream::connect(("127.0.0.1", local.staging)).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    local
        .cdflow(&["e2e", "--against", "staging"])
        .failure(2)
        .stderr_has("the e2e tests against `staging` have no URL: its manifest says `no-route`");
}

/// Two apps share a machine and a state folder, each with its own routes; `down --app` stops
/// one of them only, and `forget` drops a stopped environment's record but not a running one's.
#[test]
fn two_apps_release_side_by_side_in_one_state_folder() {
    let local = Local::python(1);
    local.push("1.0.0");
    let (staging, production) = (free_port(), free_port());
    let (second, origin) = python_app("second", staging, production);
    release_from(&second, &origin, local.state.path(), false).success();
    assert_eq!(tags_of(&origin), "v1.0.1");
    for port in [local.staging, staging, production] {
        assert_eq!(get(port, "/").unwrap().0, 200, "port {port}");
    }
    assert_eq!(get(local.staging, "/").unwrap().1, "1.0.0\n");

    let status = local.cdflow(&["status"]);
    status
        .success()
        .stdout_has("app pyapp (from ")
        .stdout_has(&format!("app second (from {})", origin.display()))
        .stdout_has("staging: pyapp 1.0.0")
        .stdout_has("staging: second 1.0.1")
        .stdout_has("production: second 1.0.1");
    let lines: Vec<&str> = status.stdout.lines().collect();
    let second_at = lines
        .iter()
        .position(|l| l.starts_with("app second"))
        .unwrap();
    assert!(
        lines[..second_at]
            .iter()
            .any(|l| l.starts_with("staging: pyapp")),
        "grouped by app:\n{status}"
    );

    // Down for one app: the other keeps serving.
    local
        .cdflow(&["down", "--app", "second"])
        .success()
        .stdout_has("staging of second: stopped")
        .stdout_has("production of second: stopped");
    assert!(TcpStream::connect(("127.0.0.1", staging)).is_err());
    assert!(TcpStream::connect(("127.0.0.1", production)).is_err());
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));
    local
        .cdflow(&["down", "--app", "nosuch"])
        .failure(2)
        .stderr_has("has no app `nosuch`: it has `pyapp` staging, `second` production");

    // Forget: refused for a name that is no app's folder, and while running; nothing removed.
    let apps = local.state.path().join("local/apps");
    local
        .cdflow(&["forget", "--app", ".."])
        .failure(2)
        .stderr_has("the app name `..` cannot be served locally");
    assert!(apps.join("pyapp/app.json").is_file());
    local
        .cdflow(&["forget", "--app", "pyapp", "--env", "staging"])
        .failure(2)
        .stderr_has(
            "`staging` of `pyapp` is running: stop it first with `cdflow down --app pyapp --env \
             staging`",
        );
    assert!(apps.join("pyapp/envs/staging/env.json").is_file());
    assert_eq!(get(local.staging, "/").unwrap().0, 200);
    local
        .cdflow(&["forget", "--app", "second", "--env", "staging"])
        .success()
        .stdout_has("staging of second: forgotten");
    assert!(!apps.join("second/envs/staging").exists());
    assert!(apps.join("second/envs/production/env.json").is_file());
    assert!(
        apps.join("second/app.json").is_file(),
        "the name stays taken"
    );
    local
        .cdflow(&["forget", "--app", "second"])
        .success()
        .stdout_has("its name is free for any repository");
    assert!(!apps.join("second").exists());
    let status = local.cdflow(&["status"]);
    status.success().stdout_has("staging: pyapp 1.0.0");
    assert!(!status.stdout.contains("second"), "{status}");

    // Up for one app brings back only its environments.
    local.cdflow(&["down"]).success();
    local
        .cdflow(&["up", "--app", "pyapp"])
        .success()
        .stdout_has("staging of pyapp: serves 1.0.0");
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));
}

/// An app name stands for one repository on a machine: another repository whose manifest uses
/// the same name is refused before its version is made, naming both origins.
#[test]
fn the_same_app_name_from_another_repository_is_refused_before_the_version_is_pushed() {
    let local = Local::python(1);
    local.push("1.0.0");
    let (impostor, origin) = python_app("pyapp", free_port(), free_port());
    for dry_run in [true, false] {
        release_from(&impostor, &origin, local.state.path(), dry_run)
            .failure(2)
            .stderr_has("nothing was changed")
            .stderr_has("the app `pyapp` on this machine comes from ")
            .stderr_has(&format!("and this one from {}", origin.display()))
            .stderr_has("`cdflow forget --app pyapp`");
    }
    assert_eq!(tags_of(&origin), "", "no version was pushed");
    assert_eq!(version_on(&origin), "1.0.0", "no version commit was pushed");
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));
}

/// A state folder of the layout before apps had folders (`local/envs/<env>/`): a stopped
/// environment there is moved into its app's folder, and a running one is stopped by `down`
/// (through its control socket, as an older cdflow's would be) and then moved.
#[test]
fn environments_of_the_old_layout_are_moved_and_their_servers_stopped_by_down() {
    let local = Local::python(1);
    local.push("1.0.0");
    let new = local.env_dir("staging");
    let old = local.state.path().join("local/envs/staging");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();

    // Running where an older cdflow kept it.
    std::fs::rename(&new, &old).unwrap();
    local
        .cdflow(&["status"])
        .success()
        .stdout_has("in the layout of an older cdflow")
        .stdout_has("staging: pyapp 1.0.0");
    local.release("1.0.1", 20, "");
    local
        .cdflow(&["push", "--to", "staging"])
        .failure(2)
        .stderr_has("`staging` of `pyapp` is still served from the layout of an older cdflow")
        .stderr_has("`cdflow down --app pyapp --env staging`");
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));
    local
        .cdflow(&["down", "--app", "pyapp", "--env", "staging"])
        .success()
        .stdout_has("staging of pyapp: stopped")
        .stdout_has("moved the record of `staging` (app `pyapp`)");
    assert!(TcpStream::connect(("127.0.0.1", local.staging)).is_err());
    assert!(!old.exists());
    assert!(new.join("env.json").is_file());

    // Stopped there: moved at the next look, and brought back by `up`.
    std::fs::rename(&new, &old).unwrap();
    local
        .cdflow(&["status"])
        .success()
        .stdout_has("moved the record of `staging` (app `pyapp`)")
        .stdout_has("staging: stopped; it last served pyapp 1.0.0");
    assert!(!old.exists());
    local
        .cdflow(&["up"])
        .success()
        .stdout_has("staging of pyapp: serves 1.0.0");
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));
    local.push("1.0.1");
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.1\n".into()));
}

/// An app that writes where apps do, on every request but its health check: appends a line to
/// a file of its working folder (`visits.log`), to one of its own sources (`app.py`: a hard
/// link to the artifact would change the artifact's inode), to `$HOME/notes.txt` and to
/// `$TMPDIR/scratch`; it answers what it sees there, as JSON.
const WRITER_PY: &str = include_str!("../fixtures/apps/writer/app.py");

/// Every file and folder under `root`: its mode and content (a symlink's target).
fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let content = if meta.file_type().is_symlink() {
                std::fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if meta.is_dir() {
                dirs.push(path.clone());
                Vec::new()
            } else {
                std::fs::read(&path).unwrap()
            };
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            found.insert(relative, (meta.permissions().mode() & 0o7777, content));
        }
    }
    found
}

/// `n` GETs of `/` through the route, parsed; panics on any failure.
fn writer_answers(port: u16, n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|_| {
            let (code, body) = get(port, "/").unwrap();
            assert_eq!(code, 200, "{body}");
            serde_json::from_str(&body).unwrap()
        })
        .collect()
}

/// The instance folders of an environment now.
fn instance_dirs(local: &Local, env: &str) -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(local.env_dir(env).join("instances"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    dirs
}

/// As on a Diego cell: each instance runs in a writable copy of the app of its own, with its own
/// HOME and TMPDIR; two instances writing the same file names do not clash, and nothing they
/// write reaches the artifact, which promote, rollback and up therefore run again.
#[test]
fn instances_write_in_folders_of_their_own_and_the_artifact_stays_as_staged() {
    let local = Local::python(2);
    local.project.write("app.py", WRITER_PY);
    local.release("1.0.0", 20, "");
    local.cdflow(&["push", "--to", "staging"]).success();
    let artifacts = local.state.path().join("local/artifacts");
    let staged = tree(&artifacts);
    let (first_dir, _) = staged
        .iter()
        .find(|(p, _)| p.components().count() == 1)
        .unwrap();
    let first_dir = first_dir.clone();
    let mode = |path: &str| staged[&first_dir.join(path)].0;
    assert_eq!(mode("droplet/app/app.py"), 0o444, "stored read-only");
    assert_eq!(mode("droplet/app"), 0o555);
    assert_eq!(mode("artifact.json"), 0o444);

    let answers = writer_answers(local.staging, 20);
    let instances_root = local.env_dir("staging").join("instances");
    let mut seen: BTreeMap<String, &serde_json::Value> = BTreeMap::new();
    for answer in &answers {
        let index = answer["index"].as_str().unwrap().to_string();
        // Each instance sees its own lines only, in each of its files.
        let own = format!("instance {index}\n");
        for file in ["visits", "notes"] {
            let text = answer[file].as_str().unwrap();
            assert!(
                !text.is_empty() && text.lines().all(|l| format!("{l}\n") == own),
                "instance {index} sees another's {file}: {text:?}"
            );
        }
        assert!(answer["scratch"]
            .as_str()
            .unwrap()
            .lines()
            .all(|l| l == index));
        let cwd = Path::new(answer["cwd"].as_str().unwrap());
        let home = Path::new(answer["home"].as_str().unwrap());
        let tmp = Path::new(answer["tmp"].as_str().unwrap());
        let folder = cwd.parent().unwrap();
        assert!(folder.starts_with(&instances_root), "{cwd:?}");
        assert!(folder
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&format!("{index}-")));
        assert_eq!(home, folder.join("home"));
        assert_eq!(tmp, folder.join("tmp"));
        if let Some(other) = seen.insert(index.clone(), answer) {
            assert_eq!(
                other["cwd"], answer["cwd"],
                "one folder per running instance"
            );
        }
    }
    assert_eq!(seen.len(), 2, "both instances answered: {answers:?}");
    print_copy_times(&local, "staging");
    assert_ne!(seen["0"]["home"], seen["1"]["home"]);
    assert_ne!(seen["0"]["tmp"], seen["1"]["tmp"]);
    assert_eq!(instance_dirs(&local, "staging").len(), 2);
    assert_eq!(tree(&artifacts), staged, "the artifact is as staged");

    // Promote, a new version, a rollback to the written-to artifact, down, up: all run it.
    local.promote();
    assert_eq!(writer_answers(local.production, 4)[0]["version"], "1.0.0");
    local.push("1.0.1");
    assert_eq!(writer_answers(local.staging, 4)[0]["version"], "1.0.1");
    local
        .cdflow(&["rollback", "--env", "staging"])
        .success()
        .stdout_has("staging now serves 1.0.0");
    assert_eq!(
        instance_dirs(&local, "staging").len(),
        2,
        "the stopped instances' folders are gone"
    );
    writer_answers(local.staging, 4);
    local.cdflow(&["down"]).success();
    assert_eq!(instance_dirs(&local, "staging"), Vec::<String>::new());
    assert_eq!(instance_dirs(&local, "production"), Vec::<String>::new());
    local
        .cdflow(&["status"])
        .success()
        .stdout_has("staging: stopped; it last served pyapp 1.0.0")
        .stdout_has("`cdflow up` brings it back");
    local.cdflow(&["up"]).success();
    // A fresh copy: what the instances wrote before is gone, as in a new container.
    let after_up = writer_answers(local.staging, 1);
    assert_eq!(after_up[0]["version"], "1.0.0");
    assert_eq!(
        after_up[0]["visits"].as_str().unwrap().lines().count(),
        1,
        "{after_up:?}"
    );
    let now = tree(&artifacts);
    let first_now: BTreeMap<_, _> = now
        .iter()
        .filter(|(p, _)| p.starts_with(&first_dir))
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect();
    assert_eq!(first_now, staged, "the artifact is as staged");
    local.cdflow(&["status"]).success().stdout_has(&format!(
        "staging: pyapp 1.0.0 (sha256:{}",
        &first_dir.to_str().unwrap()[..12]
    ));

    // Changed anyway (root ignores the read-only mode): status says so instead of promising
    // what `up` cannot do, and `up` refuses it.
    local.cdflow(&["down"]).success();
    let app_py = artifacts.join(&first_dir).join("droplet/app/app.py");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&app_py, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::write(&app_py, "print('changed')\n").unwrap();
    let status = local.cdflow(&["status"]);
    status
        .success()
        .stdout_has("staging: stopped; it last served pyapp 1.0.0")
        .stdout_has("`cdflow up` cannot bring it back")
        .stdout_has("is damaged")
        .stdout_has("a new push of the version stages it afresh");
    assert!(!status.stdout.contains("brings it back"), "{status}");
    let up = local.cdflow(&["up"]);
    assert_ne!(up.code, Some(0), "{up}");
    assert!(format!("{up}").contains("is damaged"), "{up}");
}

/// A server killed with SIGKILL cannot remove its instances' folders: `cdflow down` (which
/// stops the instances it left) removes them, and so would the next server.
#[test]
fn instance_folders_left_by_a_killed_server_are_removed() {
    let local = Local::python(1);
    local.push("1.0.0");
    let server = local.status_of("staging").unwrap()["server_pid"]
        .as_i64()
        .expect("a server pid") as i32;
    // SAFETY: kill(2) on the server's pid, read from `cdflow status` just now.
    unsafe { libc::kill(server, libc::SIGKILL) };
    crate::harness::wait_for("the server to die", || !pid_alive(server as u32));
    let left = instance_dirs(&local, "staging");
    assert_eq!(left.len(), 1, "{left:?}");
    local.cdflow(&["down"]).success();
    assert_eq!(instance_dirs(&local, "staging"), Vec::<String>::new());
    local.cdflow(&["up"]).success();
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));
    assert_eq!(instance_dirs(&local, "staging").len(), 1);
}

/// Instance 0 answers `/half` with its headers and is killed before its body; instance 1
/// answers in full. The route sends the GET again rather than cut the client's connection.
const HALF_PY: &str = include_str!("../fixtures/apps/half/app.py");

#[test]
fn an_instance_killed_between_its_headers_and_its_body_fails_no_get() {
    let local = Local::python(2);
    local.project.write("app.py", HALF_PY);
    local.release("1.0.0", 20, "");
    local.cdflow(&["push", "--to", "staging"]).success();
    for _ in 0..6 {
        assert_eq!(
            get(local.staging, "/half").unwrap(),
            (200, "a whole answer from instance 1\n".into())
        );
    }
    let log = local.cdflow(&["logs", "--env", "staging"]).stdout;
    assert!(
        log.contains("[CELL/0] instance 0 (pid ") && log.contains("was killed by signal 9"),
        "instance 0 was never hit:\n{log}"
    );
}

/// Commits `version` of the test app with `metrics_port = metrics` under `[env.staging]`, and
/// `extra` lines under the manifest's env.
fn release_with_metrics_port(local: &Local, version: &str, metrics: u16, extra: &str) {
    local.release(version, 20, extra);
    let toml = local.project.read("cdflow.toml").replace(
        &format!("port = {}\n", local.staging),
        &format!("port = {}\nmetrics_port = {metrics}\n", local.staging),
    );
    local.project.write("cdflow.toml", &toml);
    local
        .project
        .git_cmd(&["commit", "-q", "-am", "the route's metrics port"]);
}

/// The route's metrics as Prometheus text, from `port`.
fn scrape(port: u16) -> String {
    let (status, text) = get(port, "/metrics").unwrap();
    assert_eq!(status, 200, "{text}");
    text
}

/// The value of the series `name{labels}` of the test app's staging in `text`; labels in the
/// order the route writes them, after `app` and `env`.
#[track_caller]
fn series(text: &str, name: &str, labels: &str) -> u64 {
    let prefix = format!("{name}{{app=\"pyapp\",env=\"staging\",{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
        .parse()
        .unwrap()
}

/// The answer to `{"op":"stats"}` on the control socket of the test app's staging.
fn stats(local: &Local) -> serde_json::Value {
    use std::os::unix::net::UnixStream;
    let socket = local.env_dir("staging").join("control.sock");
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.write_all(b"{\"op\":\"stats\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&line).unwrap();
    reply["stats"].clone()
}

/// Each request the test sends through the route is counted once, for the version that
/// answered it, by method and status class; a new version counts apart, and the old one's
/// healthy instances go to 0. The same numbers answer the control socket's `stats`.
#[test]
fn the_route_counts_requests_per_version_method_and_status_class_on_its_metrics_port() {
    let local = Local::python(2);
    let metrics = free_port();
    release_with_metrics_port(&local, "1.0.0", metrics, "");
    local.cdflow(&["push", "--to", "staging"]).success();
    let url = format!("http://127.0.0.1:{metrics}/metrics");
    local
        .cdflow(&["status"])
        .success()
        .stdout_has(&format!("; metrics at {url}"));
    assert_eq!(local.status_of("staging").unwrap()["metrics"], url.as_str());

    for _ in 0..10 {
        assert_eq!(get(local.staging, "/").unwrap().0, 200);
    }
    for _ in 0..4 {
        assert_eq!(post(local.staging, "/nothing"), 404);
    }
    let text = scrape(metrics);
    let requests = "cdflow_route_requests_total";
    let one = "version=\"1.0.0\"";
    assert_eq!(
        series(
            &text,
            requests,
            &format!("{one},method=\"GET\",status=\"2xx\"")
        ),
        10
    );
    assert_eq!(
        series(
            &text,
            requests,
            &format!("{one},method=\"POST\",status=\"4xx\"")
        ),
        4
    );
    assert!(!text.contains("status=\"5xx\""), "{text}");
    let latency = "cdflow_route_request_duration_seconds";
    assert_eq!(series(&text, &format!("{latency}_count"), one), 14);
    assert_eq!(
        series(
            &text,
            &format!("{latency}_bucket"),
            &format!("le=\"+Inf\",{one}")
        ),
        14
    );
    assert_eq!(series(&text, "cdflow_route_instances_healthy", one), 2);
    assert_eq!(series(&text, "cdflow_route_upstream_errors_total", one), 0);
    assert_eq!(series(&text, "cdflow_route_retries_total", one), 0);

    // A new version: counted apart, on the same port.
    release_with_metrics_port(&local, "2.0.0", metrics, "");
    local.cdflow(&["push", "--to", "staging"]).success();
    for _ in 0..5 {
        assert_eq!(get(local.staging, "/").unwrap(), (200, "2.0.0\n".into()));
    }
    let text = scrape(metrics);
    let two = "version=\"2.0.0\"";
    assert_eq!(
        series(
            &text,
            requests,
            &format!("{two},method=\"GET\",status=\"2xx\"")
        ),
        5
    );
    assert_eq!(
        series(
            &text,
            requests,
            &format!("{one},method=\"GET\",status=\"2xx\"")
        ),
        10
    );
    assert_eq!(series(&text, "cdflow_route_instances_healthy", two), 2);
    assert_eq!(series(&text, "cdflow_route_instances_healthy", one), 0);

    let stats = stats(&local);
    let versions = stats["versions"].as_array().unwrap();
    let of = |version: &str| {
        versions
            .iter()
            .find(|v| v["version"] == version)
            .unwrap_or_else(|| panic!("no {version} in {stats}"))
    };
    assert_eq!(of("2.0.0")["healthy_instances"], 2);
    assert_eq!(
        of("2.0.0")["requests"],
        serde_json::json!([{"method": "GET", "status": "2xx", "count": 5}])
    );
    assert_eq!(of("1.0.0")["latency"]["count"], 14);
    let buckets = of("1.0.0")["latency"]["buckets"].as_array().unwrap();
    assert_eq!(
        buckets.len(),
        of("1.0.0")["latency"]["bounds"].as_array().unwrap().len() + 1
    );
    assert_eq!(buckets.iter().map(|n| n.as_u64().unwrap()).sum::<u64>(), 14);
}

/// Under 16 clients, instance 0 of 2 closes its port and is killed every few seconds: every
/// answer the clients got is counted (exactly), the refused and broken attempts are counted
/// as upstream errors, and the GETs sent again as retries. No `metrics_port`: the metrics are on
/// a free port that `cdflow status` tells.
#[test]
fn retries_after_an_instance_is_killed_are_counted_and_every_answer_is() {
    let local = Local::python(2);
    local.release(
        "1.0.0",
        20,
        "    CRASH_AFTER: \"2\"\n    CRASH_LINGER: \"0.5\"\n",
    );
    local.cdflow(&["push", "--to", "staging"]).success();
    let url = local.status_of("staging").unwrap()["metrics"]
        .as_str()
        .unwrap()
        .to_string();
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    let load = Load::start(local.staging, 16, 10);
    std::thread::sleep(Duration::from_secs(8));
    let (tally, _) = load.finish();
    assert_all_answered(&tally, "staging");
    let text = scrape(port);
    let one = "version=\"1.0.0\"";
    assert_eq!(
        series(
            &text,
            "cdflow_route_requests_total",
            &format!("{one},method=\"GET\",status=\"2xx\"")
        ),
        tally.ok as u64,
        "every answer the clients got, no more"
    );
    assert_eq!(
        series(&text, "cdflow_route_request_duration_seconds_count", one),
        tally.ok as u64
    );
    let log = local.cdflow(&["logs", "--env", "staging"]).stdout;
    let crashes = log.matches("killed by signal 9").count();
    assert!(crashes >= 2, "instance 0 crashed {crashes} times:\n{log}");
    let errors = series(&text, "cdflow_route_upstream_errors_total", one);
    let retries = series(&text, "cdflow_route_retries_total", one);
    eprintln!(
        "{} GETs, {crashes} crashes: {errors} upstream errors, {retries} retries",
        tally.ok
    );
    assert!(retries >= 1, "no retry counted:\n{text}");
    // Every failed GET was sent again: the clients saw no failure.
    assert_eq!(errors, retries, "{text}");
    crate::harness::wait_for("both instances healthy again", || {
        series(&scrape(port), "cdflow_route_instances_healthy", one) == 2
    });
}

/// A `metrics_port` in use, the route's own port, or another environment's route is refused
/// before anything is pushed or promoted, the holder named.
#[test]
fn a_metrics_port_in_use_or_the_routes_own_is_refused_before_the_push() {
    let local = Local::python(1);
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    release_with_metrics_port(&local, "1.0.0", port, "");
    local
        .cdflow(&["push", "--to", "staging"])
        .failure(2)
        .stderr_has("nothing was changed")
        .stderr_has(&format!(
            "the metrics port of `staging`, {port} on 127.0.0.1, is in use by another program: \
             stop it, or set another `metrics_port` under [env.staging] in cdflow.toml"
        ));
    release_with_metrics_port(&local, "1.0.0", local.staging, "");
    local
        .cdflow(&["push", "--to", "staging"])
        .failure(2)
        .stderr_has(&format!(
            "[env.staging] metrics_port {} is also the route's port",
            local.staging
        ));
    assert!(local.status_of("staging").is_none(), "nothing was deployed");
    drop(held);

    // Another environment's route holds it: that one is named.
    local.push("1.0.0");
    let toml = local.project.read("cdflow.toml").replace(
        &format!("port = {}\n", local.production),
        &format!(
            "port = {}\nmetrics_port = {}\n",
            local.production, local.staging
        ),
    );
    local.project.write("cdflow.toml", &toml);
    local.project.git_cmd(&[
        "commit",
        "-q",
        "-am",
        "production's metrics on staging's route",
    ]);
    local
        .cdflow(&[
            "promote",
            "--from",
            "staging",
            "--to",
            "production",
            "--force",
        ])
        .failure(2)
        .stderr_has(&format!(
            "the metrics port of `production`, {}, is already the route of `staging` of the app \
             `pyapp` on this machine",
            local.staging
        ));
    assert!(
        local.status_of("production").is_none(),
        "nothing was promoted"
    );
}
