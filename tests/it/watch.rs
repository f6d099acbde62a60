//! `cdflow watch` on the local platform: real instances, a real check command run against the
//! route, a real `on_failure` command, the metrics scraped over loopback, and a real rollback.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cf::CfApp;
use crate::harness::{free_port, get, pid_alive, run_of, schema_error, Guard, Local, Project};

/// The app: `GET /` answers its version, or 500 while the file named by `BROKEN_WHEN` exists
/// (the fault is injected from outside, into the version that has the variable); `/health`
/// always passes, so that the broken version deploys as a real bad release would.
const APP_PY: &str = include_str!("../fixtures/apps/breakable/app.py");

/// The check: what an e2e tier does, in a few lines.
const CHECK_PY: &str = include_str!("../fixtures/apps/breakable/check.py");

/// The alert: one JSON line per call with what cdflow gave it, as a webhook would get it.
const ALERT_PY: &str = include_str!("../fixtures/apps/breakable/alert.py");

/// The test app, released as 1.0.0 (healthy) and promoted, then 1.0.1 (which breaks when the
/// flag file appears) promoted over it.
fn two_releases_in_production(local: &Local, flag: &str) {
    local.project.write("app.py", APP_PY);
    local.project.write("check.py", CHECK_PY);
    local.project.write("alert.py", ALERT_PY);
    local.project.git_cmd(&["add", "-A"]);
    local
        .project
        .git_cmd(&["commit", "-q", "-m", "the watch's app"]);
    for (version, extra) in [
        ("1.0.0", String::new()),
        ("1.0.1", format!("    BROKEN_WHEN: \"{flag}\"\n")),
    ] {
        local.release(version, 20, &extra);
        local.cdflow(&["push", "--to", "staging"]).success();
        local.promote();
    }
    assert_eq!(get(local.production, "/").unwrap(), (200, "1.0.1\n".into()));
}

fn add_watch_settings(local: &Local, settings: &str) {
    let toml = local.project.read("cdflow.toml");
    local
        .project
        .write("cdflow.toml", &format!("{toml}\n[watch]\n{settings}"));
}

/// A `cdflow watch` running in the background, its JSON lines read as they come and each
/// checked against the published schema; killed if the test ends without stopping it.
struct Watch {
    child: Guard,
    /// Each line's event, or why it is not a valid one.
    lines: mpsc::Receiver<Result<Value, String>>,
    seen: Vec<Value>,
}

impl Watch {
    fn start(local: &Local, args: &[&str]) -> Watch {
        let mut child = local
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Told to the test's thread, which fails with it: a panic here would only
                // end the reading.
                let event = match serde_json::from_str::<Value>(&line) {
                    Err(_) => Err(format!("not a JSON line: {line}")),
                    Ok(value) => match schema_error(&value) {
                        Some(error) => Err(format!("{error}\n{line}")),
                        None => Ok(value),
                    },
                };
                if sender.send(event).is_err() {
                    break;
                }
            }
        });
        Watch {
            child: Guard::child(child),
            lines,
            seen: Vec::new(),
        }
    }

    /// The next event of kind `event` (the ones before it are kept in `seen`).
    #[track_caller]
    fn next(&mut self, event: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let value = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `{event}` event; saw {:#?}", self.seen))
                .unwrap_or_else(|error| panic!("{error}"));
            self.seen.push(value.clone());
            if value["event"] == event {
                return value;
            }
        }
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(name))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[test]
fn a_failing_production_is_alerted_within_an_interval_and_rolled_back() {
    let local = Local::python(1);
    let flag = local.state.path().join("break-production");
    two_releases_in_production(&local, flag.to_str().unwrap());
    add_watch_settings(
        &local,
        "command = \"python3 check.py\"\non_failure = \"python3 alert.py\"\nrollback_after = 2\n",
    );
    let metrics_port = free_port();
    let interval = 1;
    let mut watch = Watch::start(
        &local,
        &[
            "watch",
            "--env",
            "production",
            "--interval",
            &interval.to_string(),
            "--metrics-port",
            &metrics_port.to_string(),
            "--json",
        ],
    );
    let started = watch.next("watch_started");
    assert_eq!(
        started["metrics"],
        format!("http://127.0.0.1:{metrics_port}/metrics")
    );
    let first = watch.next("check");
    assert_eq!(first["passed"], true, "{first}");
    assert_eq!(first["version"], "1.0.1");
    assert!(!local.project.path("alerts.jsonl").exists());

    // Production starts failing.
    std::fs::write(&flag, "").unwrap();
    let broke = Instant::now();
    // Alerted by the first check that started after the fault: only the one in flight when
    // the file appeared may still pass.
    let mut passed_after = 0;
    let failed = loop {
        let check = watch.next("check");
        if check["passed"] == false {
            break check;
        }
        passed_after += 1;
    };
    assert!(passed_after <= 1, "{:#?}", watch.seen);
    let alerted = broke.elapsed();
    assert_eq!(failed["failures_in_a_row"], 1, "{failed}");
    assert!(
        failed["output"]
            .as_str()
            .unwrap()
            .contains("GET / answered 500 broken on purpose in 1.0.1"),
        "{failed}"
    );
    // So at most one interval after the fault, plus the time that check and the one in flight
    // took (and some for a busy machine).
    let checks_took = Duration::from_secs_f64(
        failed["seconds"].as_f64().unwrap() + first["seconds"].as_f64().unwrap(),
    );
    assert!(
        alerted <= Duration::from_secs(interval) + checks_took + Duration::from_secs(5),
        "alerted {alerted:?} after the fault"
    );
    // The line comes as soon as the check ends; what the watch did about it follows.
    let ran = watch.next("on_failure");
    assert_eq!(ran["message"], "ran `python3 alert.py`", "{ran}");
    let alerts = local.project.read("alerts.jsonl");
    let alert: Value = serde_json::from_str(alerts.lines().next().unwrap()).unwrap();
    assert_eq!(alert["CDFLOW_WATCH_ENV"], "production");
    assert_eq!(alert["CDFLOW_WATCH_APP"], "pyapp");
    assert_eq!(alert["CDFLOW_WATCH_VERSION"], "1.0.1");
    assert_eq!(alert["CDFLOW_WATCH_FAILURES"], "1");
    assert_eq!(
        alert["CDFLOW_WATCH_URL"],
        format!("http://127.0.0.1:{}", local.production)
    );
    assert!(alert["CDFLOW_WATCH_OUTPUT"]
        .as_str()
        .unwrap()
        .contains("broken on purpose in 1.0.1"));

    // The second failure in a row rolls production back to the release before.
    let rollback = watch.next("rollback");
    assert!(
        rollback["message"]
            .as_str()
            .unwrap()
            .contains("rolled `production` back from 1.0.1 to 1.0.0"),
        "{rollback}"
    );
    // What serves production changed: a `deployment` event says so, typed.
    let deployed = watch
        .seen
        .iter()
        .find(|v| v["event"] == "deployment")
        .unwrap_or_else(|| panic!("no `deployment` event; saw {:#?}", watch.seen));
    assert_eq!(deployed["by"], "rollback", "{deployed}");
    assert_eq!(deployed["env"], "production", "{deployed}");
    assert_eq!(deployed["platform"], "local", "{deployed}");
    assert_eq!(deployed["version"], "1.0.0", "{deployed}");
    assert_eq!(
        deployed["url"],
        format!("http://127.0.0.1:{}", local.production)
    );
    let second = watch
        .seen
        .iter()
        .rev()
        .find(|v| v["event"] == "check")
        .unwrap();
    assert_eq!(second["failures_in_a_row"], 2, "{second}");
    assert_eq!(get(local.production, "/").unwrap(), (200, "1.0.0\n".into()));
    let after = watch.next("check");
    assert_eq!(after["passed"], true, "{after}");
    assert_eq!(after["version"], "1.0.0");
    // One alert for the streak, however long it was.
    assert_eq!(local.project.read("alerts.jsonl").lines().count(), 1);

    let (code, text) = get(metrics_port, "/metrics").unwrap();
    assert_eq!(code, 200);
    let labels = "{app=\"pyapp\",env=\"production\"";
    assert_eq!(
        metric(
            &text,
            &format!("cdflow_watch_checks_total{labels},result=\"failed\"}}")
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, &format!("cdflow_watch_rollbacks_total{labels}}}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, &format!("cdflow_watch_up{labels}}}")),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(
            &text,
            &format!("cdflow_watch_last_success_timestamp_seconds{labels}}}")
        )
        .unwrap()
            > 0.0
    );

    // SIGTERM stops it cleanly, between two checks or in one.
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(watch.child.process().id() as i32, libc::SIGTERM) };
    watch.next("note");
    let status = watch.child.process().wait().unwrap();
    assert_eq!(status.code(), Some(0), "{:#?}", watch.seen);

    local
        .cdflow(&["status"])
        .success()
        .stdout_has("production: last watch check of pyapp 1.0.0 passed at ");
    let history =
        std::fs::read_to_string(local.state.path().join("watch/pyapp/production.jsonl")).unwrap();
    let recorded: Vec<Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(recorded.len() >= 4, "{history}");
    let rolled: Vec<&Value> = recorded
        .iter()
        .filter(|c| c["rolled_back_to"] == "1.0.0")
        .collect();
    assert_eq!(rolled.len(), 1, "{history}");
    assert_eq!(rolled[0]["failures_in_a_row"], 2, "{history}");
    assert_eq!(
        recorded.iter().filter(|c| c["on_failure"] == true).count(),
        1,
        "{history}"
    );
}

#[test]
fn a_bounded_watch_fails_with_its_last_check_and_alerts_once_per_streak() {
    let local = Local::python(1);
    let flag = local.state.path().join("broken");
    two_releases_in_production(&local, flag.to_str().unwrap());
    std::fs::write(&flag, "").unwrap();
    // No [watch] command: the e2e tier is the check; no rollback_after: no rollback.
    add_watch_settings(&local, "on_failure = \"python3 alert.py\"\n");
    local
        .cdflow(&["watch", "--env", "production", "--once"])
        .failure(2)
        .stderr_has("cdflow.toml has no check to watch with");
    let toml = local.project.read("cdflow.toml");
    local.project.write(
        "cdflow.toml",
        &toml.replace(
            "[watch]",
            "[e2e]\ncommand = \"python3 check.py\"\n\n[watch]",
        ),
    );
    // A metrics port in use is refused before the first check.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    local
        .cdflow(&[
            "watch",
            "--env",
            "production",
            "--once",
            "--metrics-port",
            &port,
        ])
        .failure(2)
        .stderr_has(&format!("cannot listen on 127.0.0.1:{port}"))
        .stderr_has("--metrics-port");
    assert!(!local.project.path("alerts.jsonl").exists());
    let run = local.cdflow(&[
        "watch",
        "--env",
        "production",
        "--count",
        "2",
        "--interval",
        "1",
    ]);
    run.failure(1)
        .stdout_has("production 1.0.1: FAILED in ")
        .stdout_has("(2 in a row): GET / answered 500 broken on purpose in 1.0.1")
        .stderr_has("the last check of `production` failed");
    assert_eq!(local.project.read("alerts.jsonl").lines().count(), 1);
    // Nothing rolled back, and no metrics port was taken by a bounded watch.
    assert!(!run.stdout.contains("metrics at"), "{run}");
    assert_eq!(
        get(local.production, "/").unwrap().1,
        "broken on purpose in 1.0.1\n"
    );
    local
        .cdflow(&["status"])
        .success()
        .stdout_has("production: last watch check of pyapp 1.0.1 FAILED (2 in a row)");
}

/// On cf (the stand-in): the check fails, `on_failure` runs, and the rollback is the one `cdflow
/// rollback` makes: `cf rollback` to the revision that deployed the release before.
#[test]
fn on_cf_a_failing_release_is_rolled_back_with_cf_rollback() {
    let app = crate::cf::CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    // Production gets 0.1.1 (revision 4), then 0.1.2 (revision 5).
    for _ in 0..2 {
        app.cdflow(&["release", "--repo", &origin], None).success();
    }
    let config = app.project.read("cdflow.toml").replace(
        "space = \"production\"\n",
        "space = \"production\"\nurl = \"https://filter.example.invalid\"\n",
    );
    app.project.write(
        "cdflow.toml",
        &format!(
            "{config}\n[watch]\ncommand = \"sh -c 'echo GET $APP_URL/health answered 503; exit 1'\"\n\
             on_failure = \"sh -c 'echo $CDFLOW_WATCH_VERSION > alerted'\"\nrollback_after = 1\n"
        ),
    );
    let before = app.calls().len();
    let run = app.cdflow(&["watch", "--env", "production", "--once"], None);
    run.failure(1)
        .stdout_has("production 0.1.2: FAILED in ")
        .stdout_has("(1 in a row): GET https://filter.example.invalid/health answered 503")
        .stdout_has(
            "rolled `production` back from 0.1.2 to 0.1.1 (droplet-copy-1) after 1 failed check\n",
        );
    assert_eq!(app.project.read("alerted"), "0.1.2\n");
    let rollbacks: Vec<String> = app.calls()[before..]
        .iter()
        .filter(|c| c.contains("rollback"))
        .cloned()
        .collect();
    assert_eq!(
        rollbacks,
        ["production: rollback filter --version 4 -f"],
        "{:#?}",
        app.calls()
    );
}

// `cdflow watch --dry-run`: the commands one check would run, printed as a real check runs
// them, and nothing run, recorded or served.

#[test]
fn a_dry_run_prints_the_check_and_on_failure_and_runs_nothing() {
    let project = Project::git(&[(
        "cdflow.toml",
        "[app]\nname = \"w\"\n\n[version]\ncurrent = \"0.1.0\"\n\n[env.staging]\n\
         url = \"http://127.0.0.1:1\"\n\n[watch]\ncommand = \"touch checked\"\n\
         on_failure = \"touch alerted\"\nrollback_after = 2\ntimeout = 30\n",
    )]);
    let run = project.cdflow(&["watch", "--env", "staging", "--dry-run"]);
    run.success()
        .stdout_has("stopped after 30s")
        .stdout_has("$ APP_URL=http://127.0.0.1:1 touch checked\n")
        .stdout_has("$ touch alerted\n")
        .stdout_has("after 2 failed checks in a row")
        .stdout_has("dry run: nothing was run");
    assert!(!project.path("checked").exists(), "{run}");
    assert!(!project.path("alerted").exists(), "{run}");
    assert!(
        !project.path(".cdflow/watch").exists(),
        "nothing recorded: {run}"
    );

    // Without a URL, the dry run says why a check would fail.
    let toml = project.read("cdflow.toml").replace("url = ", "# url = ");
    project.write("cdflow.toml", &toml);
    project
        .cdflow(&["watch", "--env", "staging", "--dry-run"])
        .failure(2)
        .stderr_has("a check would fail: nothing serves `staging`");

    project
        .cdflow(&["watch", "--env", "staging", "--dry-run", "--once"])
        .failure(2)
        .stderr_has("cannot be used with");
}

/// On cf, what finds the route is part of the check: its cf commands are printed, not run.
#[test]
fn a_dry_run_on_cf_runs_no_cf_command() {
    let app = CfApp::new();
    let run = app.cdflow(&["watch", "--env", "staging", "--dry-run"], None);
    run.success()
        .stdout_has("$ CF_HOME=")
        .stdout_has("cf target -o acme -s staging")
        .stdout_has("APP_URL=");
    assert_eq!(app.calls(), Vec::<String>::new(), "{run}");
    assert!(!app.marker.exists(), "the check did not run: {run}");
}

// `[watch] timeout`: a check (or an `on_failure` command) that hangs is stopped with its
// process group, and the check is recorded as failed with the reason, rather than blocking the
// watch for ever.

/// A watch's settings with a check that hangs (and leaves a grandchild that hangs too), and an
/// `on_failure` that hangs as well; each writes its pid where the test can find it.
fn hanging_watch() -> Project {
    Project::git(&[(
        "cdflow.toml",
        "[app]\nname = \"w\"\n\n[version]\ncurrent = \"0.1.0\"\n\n[env.staging]\n\
         url = \"http://127.0.0.1:1\"\n\n[watch]\n\
         command = \"sh -c 'echo checking; sleep 600 & echo $! > check.pid; wait'\"\n\
         on_failure = \"sh -c 'echo $$ > alert.pid; exec sleep 600'\"\n\
         timeout = 1\n",
    )])
}

#[test]
fn a_hung_check_is_stopped_and_recorded_as_failed() {
    let project = hanging_watch();
    let mut child = project
        .command(env!("CARGO_BIN_EXE_cdflow"))
        .args(["watch", "--env", "staging", "--once"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Without the timeout this would wait ten minutes: a minute is proof enough, and the test
    // fails (and cleans up) rather than hangs.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            for file in ["check.pid", "alert.pid"] {
                if let Ok(pid) = std::fs::read_to_string(project.path(file)) {
                    // SAFETY: kill(2) touches no memory.
                    unsafe { libc::kill(pid.trim().parse().unwrap(), libc::SIGKILL) };
                }
            }
            panic!("the watch still runs after a minute: the hung check was never stopped");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let watch = run_of(child.wait_with_output().unwrap());
    watch
        .failure(1)
        .stdout_has("FAILED")
        .stdout_has("the check was stopped after 1s, its time limit (`timeout` in [watch])")
        .stderr_has("on_failure: `sh -c")
        .stderr_has("was stopped after 1s");
    // The check's own child and the alert were stopped with their groups.
    for file in ["check.pid", "alert.pid"] {
        let pid = project.read(file);
        assert!(!pid_alive(pid.trim()), "{file}: {pid} still runs");
    }
    let record: serde_json::Value =
        serde_json::from_str(&project.read(".cdflow/watch/w/staging.json")).unwrap();
    assert_eq!(record["passed"], false, "{record}");
    assert_eq!(record["on_failure"], false, "{record}");
    let output = record["output"].as_str().unwrap();
    assert!(output.contains("checking"), "its output is kept: {output}");
    assert!(output.ends_with("(`timeout` in [watch])"), "{output}");
}

/// Finding what serves is part of the check: on cf, a `cf` call that hangs there is stopped by
/// the same limit, and the check fails saying so.
#[test]
fn a_hung_lookup_of_what_serves_is_stopped_too() {
    let app = CfApp::new();
    let config = app.project.read("cdflow.toml");
    app.project.write(
        "cdflow.toml",
        &format!("{config}\n[watch]\ncommand = \"true\"\ntimeout = 1\n"),
    );
    let mark = app.project.dir.parent().unwrap().join("cf-sleep.pid");
    let started = Instant::now();
    let run = run_of(
        app.command(&["watch", "--env", "staging", "--once"], None)
            .env("CF_STANDIN_SLEEP", "staging app filter --guid")
            .env("CF_STANDIN_SLEEP_MARK", &mark)
            .output()
            .unwrap(),
    );
    let took = started.elapsed();
    let sleeper = std::fs::read_to_string(&mark).expect("the stand-in was asked what serves");
    let alive = pid_alive(sleeper.trim());
    if alive {
        // SAFETY: kill(2) touches no memory.
        unsafe { libc::kill(sleeper.trim().parse().unwrap(), libc::SIGKILL) };
    }
    run.failure(1)
        .stdout_has(": FAILED in ")
        .stdout_has("(1 in a row): cdflow could not tell what serves `staging`")
        .stdout_has("cf app filter --guid` was stopped after 1s, its time limit");
    assert!(!alive, "the hung cf call still runs: {run}");
    // The stand-in's call sleeps for a minute: the limit, not the call, ended the check.
    assert!(took < Duration::from_secs(50), "{took:?}: {run}");
}

/// The setting is read strictly, like the others.
#[test]
fn a_timeout_of_zero_is_refused_at_its_line() {
    let project = hanging_watch();
    let toml = project
        .read("cdflow.toml")
        .replace("timeout = 1", "timeout = 0");
    project.write("cdflow.toml", &toml);
    project
        .cdflow(&["watch", "--env", "staging", "--once"])
        .failure(2)
        .stderr_has("cdflow.toml")
        .stderr_has("timeout");
}
