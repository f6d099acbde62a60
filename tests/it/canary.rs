//! Canary releases on the local platform (docs/canary.md): the route splits the requests
//! between the stable version and the canary, cdflow judges the canary on its own requests and
//! finishes or cancels it, under 64 clients that see no failure but the canary's own.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use crate::harness::{get, wait_for, Load, Local, Tally};

/// The canary tests' app: `GET /` answers its version, `/health` is up; with FAIL_EVERY=N,
/// every Nth request of each instance (health checks aside) answers 500 `injected VERSION`; with
/// SLEEP_MS=N, each such request waits N ms before its answer.
const APP_PY: &str = r#"
import os, signal, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

VERSION = os.environ.get("VERSION", "?")
FAIL_EVERY = int(os.environ.get("FAIL_EVERY", "0"))
SLEEP = int(os.environ.get("SLEEP_MS", "0")) / 1000
COUNT = [0]
LOCK = threading.Lock()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, code, body):
        body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            return self.answer(200, "up\n")
        if SLEEP:
            time.sleep(SLEEP)
        if FAIL_EVERY:
            with LOCK:
                COUNT[0] += 1
                fail = COUNT[0] % FAIL_EVERY == 0
            if fail:
                return self.answer(500, "injected " + VERSION + "\n")
        return self.answer(200, VERSION + "\n")

signal.signal(signal.SIGTERM, lambda *args: os._exit(0))
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 256
server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
server.serve_forever()
"#;

/// The test app with this file's app, two instances.
fn canary_app() -> Local {
    let local = Local::python(2);
    local.project.write("app.py", APP_PY);
    local
}

/// Commits `version` of the app, `extra` lines under its manifest's env, with staging a canary
/// environment of these `steps` and a `window` of seconds. Its minimum of the canary's requests
/// is 10, which a short window of a loaded machine holds.
fn release(local: &Local, version: &str, extra: &str, steps: &str, window: u32) {
    release_with_min(
        local,
        version,
        extra,
        steps,
        window,
        "canary_min_requests = 10\n",
    );
}

/// [`release`], with `min` the line of the minimum (empty: the default).
fn release_with_min(
    local: &Local,
    version: &str,
    extra: &str,
    steps: &str,
    window: u32,
    min: &str,
) {
    local.release(version, 20, extra);
    let toml = local.project.read("cdflow.toml").replace(
        &format!("[env.staging]\nport = {}\n", local.staging),
        &format!(
            "[env.staging]\nport = {}\nstrategy = \"canary\"\ncanary_steps = {steps}\n\
             canary_window = {window}\n{min}",
            local.staging
        ),
    );
    assert!(toml.contains("strategy = \"canary\""), "{toml}");
    local.project.write("cdflow.toml", &toml);
    local
        .project
        .git_cmd(&["commit", "-q", "-am", "a canary environment"]);
}

/// The versions of staging's instances, as `cdflow status --json` shows them.
fn instance_versions(local: &Local) -> Vec<String> {
    let status = local.status_of("staging").unwrap();
    status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["version"].as_str().unwrap().to_string())
        .collect()
}

/// The failures that are not the canary's injected 500s, and how many of those there were.
fn failures_besides_injected(tally: &Tally) -> (Vec<&String>, usize) {
    let injected = tally
        .failures
        .iter()
        .filter(|f| f.ends_with(": 500 injected 2.0.0"))
        .count();
    let others = tally
        .failures
        .iter()
        .filter(|f| !f.ends_with(": 500 injected 2.0.0"))
        .collect();
    (others, injected)
}

/// A canary whose every 20th request fails (5%) is cancelled at its first step: the run fails
/// with its error rate, the stable version serves alone again, and the 64 clients saw no
/// failure but the canary's.
#[test]
fn a_canary_answering_five_percent_errors_is_cancelled_with_its_error_rate() {
    let local = canary_app();
    release(&local, "1.0.0", "", "[10, 50, 100]", 2);
    local
        .cdflow(&["push", "--to", "staging"])
        .success()
        .stdout_has("no canary: nothing served before");
    let load = Load::start(local.staging, 64, usize::MAX);
    std::thread::sleep(Duration::from_millis(300));

    release(
        &local,
        "2.0.0",
        "    FAIL_EVERY: \"20\"\n",
        "[10, 50, 100]",
        2,
    );
    let run = local.cdflow(&["push", "--to", "staging"]);
    std::thread::sleep(Duration::from_millis(300));
    let (tally, _) = load.finish();
    run.failure(1)
        .stdout_has("canary pause 1")
        .stderr_has("the canary broke its thresholds: error rate ")
        .stderr_has("against the stable version's 0.0%")
        .stderr_has("was cancelled: 1.0.0 serves the whole route again");
    assert!(!run.stdout.contains("canary pause 2"), "{run}");
    let rate: f64 = run
        .stderr
        .split("error rate ")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|number| number.parse().ok())
        .unwrap();
    // About 5%: each instance's count of requests runs on from before the window, and a
    // window of a loaded machine may hold only some tens of the canary's requests.
    assert!((2.5..=7.5).contains(&rate), "{rate}% in\n{run}");

    let status = local.status_of("staging").unwrap();
    assert_eq!(status["version"], "1.0.0");
    assert!(status.get("canary").is_none(), "{status}");
    assert_eq!(instance_versions(&local), ["1.0.0", "1.0.0"]);
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));

    let (others, injected) = failures_besides_injected(&tally);
    assert!(
        others.is_empty(),
        "{} of {} requests failed besides the injected errors, e.g. {:?}",
        others.len(),
        tally.sent,
        &others[..others.len().min(10)]
    );
    assert!(injected > 0, "the clients met the canary: {tally:?}");
    assert!(tally.versions.contains_key("2.0.0"), "{:?}", tally.versions);
}

/// A healthy canary goes through its steps to the whole route; the old instances stop, and
/// the 64 clients saw no failure.
#[test]
fn a_healthy_canary_reaches_the_whole_route_with_no_failed_request() {
    let local = canary_app();
    release(&local, "1.0.0", "", "[10, 50, 100]", 2);
    local.cdflow(&["push", "--to", "staging"]).success();
    let load = Load::start(local.staging, 64, usize::MAX);
    std::thread::sleep(Duration::from_millis(300));

    release(&local, "2.0.0", "", "[10, 50, 100]", 2);
    let run = local.cdflow(&["push", "--to", "staging", "--json"]);
    std::thread::sleep(Duration::from_millis(300));
    let (tally, _) = load.finish();
    run.success();
    let checks: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["event"] == "canary")
        .collect();
    assert_eq!(checks.len(), 3, "{run}");
    for (check, pause) in checks.iter().zip(1..) {
        assert_eq!(check["pause"], pause, "{check}");
        assert_eq!(check["passed"], true, "{check}");
        assert!(check["canary"]["requests"].as_u64().unwrap() > 0, "{check}");
        assert_eq!(check["canary"]["errors"], 0, "{check}");
    }

    let status = local.status_of("staging").unwrap();
    assert_eq!(status["version"], "2.0.0");
    assert!(status.get("canary").is_none(), "{status}");
    assert_eq!(instance_versions(&local), ["2.0.0", "2.0.0"]);
    assert_eq!(get(local.staging, "/").unwrap(), (200, "2.0.0\n".into()));
    assert!(
        tally.failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        tally.failures.len(),
        tally.sent,
        &tally.failures[..tally.failures.len().min(10)]
    );
    assert_eq!(tally.ok, tally.sent);
    assert!(tally.versions.contains_key("1.0.0") && tally.versions.contains_key("2.0.0"));
}

/// A cdflow killed in the middle of a canary's window leaves no half-canary: the canary's
/// connection to the server was its lease, and the stable version takes the whole route again
/// with no request failed. `status` shows the canary while it runs.
#[test]
fn a_cdflow_killed_mid_canary_leaves_the_stable_version_serving() {
    let local = canary_app();
    release(&local, "1.0.0", "", "[25]", 30);
    local.cdflow(&["push", "--to", "staging"]).success();
    let load = Load::start(local.staging, 64, usize::MAX);
    release(&local, "2.0.0", "", "[25]", 30);
    let mut command = local.command(&["push", "--to", "staging"]);
    // A group of its own, so that its probes (curl) go with it.
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut cdflow = command.spawn().unwrap();
    wait_for("the canary to take its share", || {
        local
            .status_of("staging")
            .is_some_and(|status| status["canary"]["weight"] == 25)
    });
    let shown = local.cdflow(&["status"]);
    shown
        .success()
        .stdout_has("canary 2.0.0 takes 25% of the requests");
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) of the process group this test started.
    unsafe { libc::kill(-(cdflow.id() as i32), libc::SIGKILL) };
    cdflow.wait().unwrap();
    wait_for("the canary to be cancelled", || {
        local
            .status_of("staging")
            .is_some_and(|status| status.get("canary").is_none())
            && instance_versions(&local) == ["1.0.0", "1.0.0"]
    });
    std::thread::sleep(Duration::from_millis(300));
    let (tally, _) = load.finish();
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));
    assert!(
        tally.failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        tally.failures.len(),
        tally.sent,
        &tally.failures[..tally.failures.len().min(10)]
    );
    assert!(tally.versions.contains_key("2.0.0"), "{:?}", tally.versions);
    let log = local.app_log("staging");
    assert!(
        log.contains("cancelled (the cdflow running it went away)"),
        "{log}"
    );
}

/// A promote to a canary environment runs the canary there, the e2e tier against its route;
/// a dry run shows the probes.
#[test]
fn a_promote_runs_a_canary_and_a_dry_run_shows_its_probes() {
    let local = canary_app();
    let e2e_urls = local.state.path().join("e2e-urls");
    let canary_production = |local: &Local| {
        let toml = local.project.read("cdflow.toml").replace(
            &format!("[env.production]\nport = {}\n", local.production),
            &format!(
                "[env.production]\nport = {}\nstrategy = \"canary\"\ncanary_window = 1\n\
                 canary_min_requests = 1\n",
                local.production
            ),
        );
        // The e2e tier notes where it was sent.
        let toml = format!(
            "{toml}\n[e2e]\ncommand = \"sh -c 'echo $APP_URL >> {}'\"\n",
            e2e_urls.display()
        );
        assert!(toml.contains("canary_window = 1"), "{toml}");
        local.project.write("cdflow.toml", &toml);
        local
            .project
            .git_cmd(&["commit", "-q", "-am", "a canary production"]);
    };
    local.release("1.0.0", 20, "");
    canary_production(&local);
    local.cdflow(&["push", "--to", "staging"]).success();
    local.promote();
    local.release("2.0.0", 20, "");
    canary_production(&local);
    local.cdflow(&["push", "--to", "staging"]).success();

    let plan = local.cdflow(&[
        "promote",
        "--from",
        "staging",
        "--to",
        "production",
        "--force",
        "--dry-run",
    ]);
    plan.success()
        .stdout_has(&format!(
            "as a canary of http://127.0.0.1:{}, give it 10% of the requests",
            local.production
        ))
        .stdout_has("curl --silent --max-time 10 --rate 10/s");
    assert_eq!(get(local.production, "/").unwrap().1, "1.0.0\n");

    let run = local.cdflow(&[
        "promote",
        "--from",
        "staging",
        "--to",
        "production",
        "--force",
    ]);
    run.success()
        .stdout_has("takes 10% of the route's requests as a canary")
        .stdout_has("canary pause 1");
    assert_eq!(get(local.production, "/").unwrap().1, "2.0.0\n");
    assert_eq!(
        std::fs::read_to_string(&e2e_urls).unwrap(),
        format!("http://127.0.0.1:{}\n", local.production),
        "the e2e tier ran once, against the route with the canary in it"
    );
}

/// A cdflow stopped with SIGTERM in the middle of a canary's window cancels the canary itself
/// before it exits, says so, and ends as interrupted; its probes stop with it.
#[test]
fn a_cdflow_stopped_mid_canary_cancels_it_and_ends_as_interrupted() {
    let local = canary_app();
    release(&local, "1.0.0", "", "[50]", 30);
    local.cdflow(&["push", "--to", "staging"]).success();
    release(&local, "2.0.0", "", "[50]", 30);
    let mut command = local.command(&["push", "--to", "staging"]);
    command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let cdflow = command.spawn().unwrap();
    let group = cdflow.id() as i32;
    wait_for("the canary to take its share", || {
        local
            .status_of("staging")
            .is_some_and(|status| status["canary"]["weight"] == 50)
    });
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) of the child this test started.
    unsafe { libc::kill(group, libc::SIGTERM) };
    let output = cdflow.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // SAFETY: kill(2) with signal 0 only asks whether the group has a process left.
    let left = unsafe { libc::kill(-group, 0) } == 0;
    if left {
        // SAFETY: kill(2) of the process group this test started.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("was cancelled: 1.0.0 serves the whole route again"),
        "{stderr}"
    );
    assert!(!left, "the probes stopped with cdflow");
    let status = local.status_of("staging").unwrap();
    assert!(status.get("canary").is_none(), "{status}");
    assert_eq!(instance_versions(&local), ["1.0.0", "1.0.0"]);
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));
}

/// The same version again cannot be told from the stable one by the route's counts, which are
/// kept per version: it is deployed with a plain switch, and the run says so.
#[test]
fn the_same_version_again_is_switched_with_no_canary() {
    let local = canary_app();
    release(&local, "1.0.0", "", "[10]", 1);
    local.cdflow(&["push", "--to", "staging"]).success();
    let first = local.status_of("staging").unwrap()["instances"][0]["pid"].clone();
    local
        .cdflow(&["push", "--to", "staging"])
        .success()
        .stdout_has("no canary: the stable version is the same version");
    let status = local.status_of("staging").unwrap();
    assert_eq!(status["version"], "1.0.0");
    assert_ne!(status["instances"][0]["pid"], first, "new instances serve");
    assert_eq!(instance_versions(&local), ["1.0.0", "1.0.0"]);
}

/// An app with `no-route` has no requests to split: its canary is refused before anything is
/// staged.
#[test]
fn a_canary_of_an_app_without_a_route_is_refused_before_anything_runs() {
    let local = canary_app();
    release(&local, "1.0.0", "", "[10]", 1);
    let manifest = local.project.read("manifest.yml").replace(
        "  command: python app.py\n",
        "  command: python app.py\n  no-route: true\n",
    );
    assert!(manifest.contains("no-route: true"), "{manifest}");
    local.project.write("manifest.yml", &manifest);
    local.project.git_cmd(&["commit", "-q", "-am", "no route"]);
    local
        .cdflow(&["push", "--to", "staging"])
        .failure(2)
        .stderr_has("[env.staging] strategy = \"canary\": `pyapp` has no route (no-route)");
    assert!(local.status_of("staging").is_none(), "nothing was deployed");
}

/// A canary that answered fewer requests in its window than the minimum is not passed on them:
/// here one probe in ten of a one-second window, against the default 50. It is cancelled with
/// the numbers and the fix.
#[test]
fn a_canary_with_too_few_requests_in_its_window_is_cancelled_with_the_fix() {
    let local = canary_app();
    release_with_min(&local, "1.0.0", "", "[10]", 1, "");
    local.cdflow(&["push", "--to", "staging"]).success();
    release_with_min(&local, "2.0.0", "", "[10]", 1, "");
    let run = local.cdflow(&["push", "--to", "staging"]);
    run.failure(1)
        .stderr_has("the canary cannot be judged: the 1 s window counted ")
        .stderr_has("fewer than the 50 needed (canary_min_requests)")
        .stderr_has("lower canary_min_requests")
        .stderr_has("was cancelled: 1.0.0 serves the whole route again");
    let status = local.status_of("staging").unwrap();
    assert_eq!(status["version"], "1.0.0");
    assert_eq!(instance_versions(&local), ["1.0.0", "1.0.0"]);
}

/// A route that counts nothing (its server started with CDFLOW_ROUTE_METRICS=off) cannot judge
/// a canary: it is refused before anything starts, and the stable version serves on.
#[test]
fn a_canary_where_the_route_counts_nothing_is_refused_before_anything_starts() {
    let local = canary_app();
    release(&local, "1.0.0", "", "[10]", 1);
    let run_of = |local: &Local| {
        let mut command = local.command(&["push", "--to", "staging"]);
        command.env("CDFLOW_ROUTE_METRICS", "off");
        crate::harness::run_of(command.output().unwrap())
    };
    run_of(&local).success();
    let first = local.status_of("staging").unwrap()["instances"][0]["pid"].clone();
    release(&local, "2.0.0", "", "[10]", 1);
    run_of(&local)
        .failure(2)
        .stderr_has("the route of `staging` counts no requests")
        .stderr_has("CDFLOW_ROUTE_METRICS=off");
    let status = local.status_of("staging").unwrap();
    assert_eq!(status["version"], "1.0.0");
    assert_eq!(status["instances"][0]["pid"], first, "nothing was started");
    assert_eq!(instance_versions(&local), ["1.0.0", "1.0.0"]);
}

/// A dry run says what the real run will do: with nothing serving, or the same version again,
/// a plain switch, and why; beside a stable version, a canary against it, with its probes.
#[test]
fn a_dry_run_says_whether_a_canary_would_run() {
    let local = canary_app();
    release(&local, "1.0.0", "", "[10]", 1);
    let plan = local.cdflow(&["push", "--to", "staging", "--dry-run"]);
    plan.success().stdout_has(&format!(
        "and switch http://127.0.0.1:{} to them, with no canary: nothing serves `staging` now",
        local.staging
    ));
    assert!(!plan.stdout.contains("as a canary"), "{plan}");
    assert!(!plan.stdout.contains("curl --silent"), "{plan}");
    local.cdflow(&["push", "--to", "staging"]).success();
    let plan = local.cdflow(&["push", "--to", "staging", "--dry-run"]);
    plan.success()
        .stdout_has("with no canary: the stable version is the same version");
    assert!(!plan.stdout.contains("as a canary"), "{plan}");
    release(&local, "2.0.0", "", "[10]", 1);
    local
        .cdflow(&["push", "--to", "staging", "--dry-run"])
        .success()
        .stdout_has("pyapp 2.0.0 as a canary of")
        .stdout_has("against 1.0.0's, with these probes")
        .stdout_has("curl --silent --max-time 10 --rate 10/s");
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));
}

/// A canary that answers slower than the stable version by more than canary_max_p99_ms is
/// cancelled with its p99 and the stable version's.
#[test]
fn a_canary_answering_slower_is_cancelled_with_its_p99() {
    let local = canary_app();
    let settings = "canary_min_requests = 10\ncanary_max_p99_ms = 100\n";
    release_with_min(&local, "1.0.0", "", "[50]", 2, settings);
    local.cdflow(&["push", "--to", "staging"]).success();
    release_with_min(
        &local,
        "2.0.0",
        "    SLEEP_MS: \"300\"\n",
        "[50]",
        2,
        settings,
    );
    let run = local.cdflow(&["push", "--to", "staging"]);
    run.failure(1)
        .stderr_has("the canary broke its thresholds: p99 latency ")
        .stderr_has("more than the 100 allowed (canary_max_p99_ms)")
        .stderr_has("was cancelled: 1.0.0 serves the whole route again");
    assert!(!run.stderr.contains("error rate"), "{run}");
    let number = |after: &str| -> f64 {
        run.stderr
            .split(after)
            .nth(1)
            .and_then(|rest| rest.split(" ms").next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no number after {after:?} in\n{run}"))
    };
    // The canary's p99 is read from the route's histogram: within its bucket of the 300 ms.
    let canary = number("p99 latency ");
    let stable = number("against the stable version's ");
    assert!((250.0..=500.0).contains(&canary), "{canary} ms in\n{run}");
    assert!(stable < 100.0, "{stable} ms in\n{run}");
    assert_eq!(local.status_of("staging").unwrap()["version"], "1.0.0");
    assert_eq!(instance_versions(&local), ["1.0.0", "1.0.0"]);
}
