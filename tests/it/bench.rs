//! The `bench` stage on the local platform: a pipeline that pushes to staging and measures it
//! passes a release that is as fast as the last one and fails one made twice as slow, with both
//! runs' numbers; `cdflow history` shows them.
//!
//! The app here sleeps a set time per request (DELAY_MS, from its manifest), so that its speed
//! is set by the release rather than by how busy the machine is: 100 ms against 200 ms is a
//! fall of nearly 50% in requests/s and a rise of about 100% in p99, well past the pipeline's
//! 40%, while an unchanged release stays well within it.

use crate::harness::Local;

/// GET / answers the version after DELAY_MS milliseconds; /health at once.
const DELAYED_APP: &str = include_str!("../fixtures/apps/delayed/app.py");

const PERF_PIPELINE: &str = "description: push to staging, then measure it against the last release
stages:
  - kind: push
    to: staging
  - kind: bench
    against: staging
    duration: 3s
    connections: 8
    thresholds:
      max_regression: 40
";

/// Releases `version` with DELAY_MS `delay` through the `perf` pipeline, with --json; returns
/// the run and its `bench` event.
fn release(local: &Local, version: &str, delay: u32) -> (crate::harness::Run, serde_json::Value) {
    local.release(version, 20, &format!("    DELAY_MS: \"{delay}\"\n"));
    let run = local.cdflow(&["release", "--pipeline", "perf", "--json"]);
    let bench = run
        .events()
        .into_iter()
        .find(|e| e["event"] == "bench")
        .unwrap_or_else(|| panic!("no bench event:\n{run}"));
    (run, bench)
}

fn run_id(run: &crate::harness::Run) -> String {
    run.events()
        .into_iter()
        .find_map(|e| e["run"].as_str().map(str::to_string))
        .expect("the run's events carry its id")
}

#[test]
fn a_release_made_twice_as_slow_fails_the_bench_and_an_unchanged_one_passes() {
    let local = Local::python(1);
    local.project.write("app.py", DELAYED_APP);
    local.project.write("pipelines/perf.yml", PERF_PIPELINE);
    local.project.git_cmd(&["add", "-A"]);

    // The first numbers: nothing to compare with, recorded and passed.
    let (first, bench) = release(&local, "1.0.0", 100);
    first.success();
    let first_id = run_id(&first);
    assert_eq!(bench["passed"], true, "{bench}");
    assert!(bench.get("baseline").is_none(), "{bench}");
    assert_eq!(bench["version"], "1.0.0");
    assert_eq!(bench["connections"], 8);
    assert_eq!(bench["errors"], 0, "{bench}");
    assert!(
        bench["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://127.0.0.1:{}", local.staging)),
        "{bench}"
    );
    let first_rps = bench["requests_per_second"].as_f64().unwrap();
    // Eight connections, 100 ms a request: at most 80 requests/s, and not far below.
    assert!((30.0..=85.0).contains(&first_rps), "{bench}");
    assert!(bench["p99_ms"].as_f64().unwrap() >= 100.0, "{bench}");

    // Unchanged: compared with the first run, and passed.
    let (second, bench) = release(&local, "1.0.1", 100);
    second.success();
    let second_id = run_id(&second);
    assert_eq!(bench["passed"], true, "{bench}");
    assert_eq!(bench["baseline"]["run"], first_id.as_str(), "{bench}");
    assert_eq!(bench["baseline"]["version"], "1.0.0");

    // Twice as slow: compared with the last run that passed, and failed with the numbers.
    let (third, bench) = release(&local, "1.0.2", 200);
    third
        .failure(1)
        .stdout_has("`bench staging` failed its thresholds")
        .stdout_has("requests/s fell")
        .stdout_has(&format!("run {second_id}: version 1.0.1: "))
        .stdout_has("max_regression 40%");
    assert_eq!(bench["passed"], false, "{bench}");
    assert_eq!(bench["baseline"]["run"], second_id.as_str(), "{bench}");
    let slow_rps = bench["requests_per_second"].as_f64().unwrap();
    let base_rps = bench["baseline"]["requests_per_second"].as_f64().unwrap();
    assert!(slow_rps < base_rps * 0.6, "{bench}");
    assert!(
        bench["failures"][0]
            .as_str()
            .unwrap()
            .starts_with("requests/s fell"),
        "{bench}"
    );

    // The record keeps every run's numbers, the failed one's too; history shows them.
    let history = local.cdflow(&["history", "--json"]);
    history.success();
    let rows: Vec<serde_json::Value> = history
        .events()
        .into_iter()
        .filter(|e| e["event"] == "history_row")
        .collect();
    assert_eq!(rows.len(), 3, "{history}");
    let passed: Vec<Option<bool>> = rows
        .iter()
        .map(|r| r["bench"][0]["passed"].as_bool())
        .collect();
    assert_eq!(passed, [Some(true), Some(true), Some(false)]);
    assert_eq!(rows[2]["bench"][0]["version"], "1.0.2");
    let text = local.cdflow(&["history"]);
    text.success()
        .stdout_has("bench staging: ")
        .stdout_has(" req/s, p50 ")
        .stdout_has("(first numbers)")
        .stdout_has(&format!("against run {second_id}: failed"));

    // A dry run loads nothing and says what it would compare with: the last run that passed.
    let plan = local.cdflow(&["release", "--pipeline", "perf", "--dry-run"]);
    plan.success()
        .stdout_has("would send GET http://127.0.0.1:")
        .stdout_has(&format!("compare with run {second_id} (version 1.0.1: "));
}

/// A SIGTERM in the middle of a load stops it at once: the run ends as interrupted in the
/// bench stage, with nothing recorded as numbers, and every line it printed is an event.
#[test]
fn a_sigterm_stops_the_load_at_once() {
    the_load_stops_at_once_on(libc::SIGTERM);
}

/// `signal` sent to `cdflow release --json` in the middle of a load stops it at once, and every
/// line cdflow printed, before and after, is an event.
pub(crate) fn the_load_stops_at_once_on(signal: libc::c_int) {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    let local = Local::python(1);
    local.project.write("app.py", DELAYED_APP);
    local.project.write(
        "pipelines/perf.yml",
        &PERF_PIPELINE.replace("duration: 3s", "duration: 60s"),
    );
    local.project.git_cmd(&["add", "-A"]);
    local.release("1.0.0", 20, "    DELAY_MS: \"10\"\n");
    let mut release = local
        .command(&["release", "--pipeline", "perf", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(release.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let loading = line.contains("sending GET");
        printed.push(line);
        if loading {
            break;
        }
    }
    assert!(
        printed.last().is_some_and(|l| l.contains("sending GET")),
        "the load never started:\n{}",
        printed.join("\n")
    );
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(release.id() as i32, signal) };
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = release.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > Duration::from_secs(20) {
            let _ = release.kill();
            panic!("cdflow still runs 20 s after signal {signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    printed.extend(lines.map(|l| l.unwrap()));
    for line in &printed {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not an event: {line}"
        );
    }
    crate::harness::check_events(&printed.join("\n"));

    let history = local.cdflow(&["history", "--json"]);
    history.success();
    let row = history
        .events()
        .into_iter()
        .find(|e| e["event"] == "history_row")
        .unwrap();
    assert_eq!(row["status"], "interrupted", "{row}");
    assert_eq!(row["stopped_in"], "bench staging", "{row}");
    assert!(row.get("bench").is_none(), "{row}");
}

// A SIGINT (Ctrl-C) in the middle of a `bench` stage's load: the load library listens for
// Ctrl-C too, and must not print its own line into cdflow's `--json` output.

/// As a SIGTERM does: the load stops at once, the run ends as interrupted, and every line on
/// stdout is an event.
#[test]
fn a_sigint_stops_the_load_and_prints_only_events() {
    the_load_stops_at_once_on(libc::SIGINT);
}
