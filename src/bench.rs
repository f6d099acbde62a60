//! The `bench` stage, the talk's comparison table inside the pipeline: a load of a set length
//! and number of connections against an environment's route, its requests/s, p50, p99 and
//! errors kept in the run record, and compared with the numbers of the last successful run of
//! the same app, pipeline, stage and environment. The stage fails when requests/s fall or p99
//! rises past the pipeline's `max_regression`, or when there are more errors than `max_errors`.
//!
//! The load is httpress's (a library on the hyper client cdflow already builds), run in this
//! process: no load generator of cdflow's own, and no tool to install.

use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::error::Interrupted;
use crate::events::{BenchBaseline, BenchResult, Event};
use crate::exec::Exec;
use crate::pipeline::{Stage, Thresholds};
use crate::platform::Deployment;
use crate::record::{self, RunRecord, Status};
use crate::state::State;

/// What a stage gives no value for.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
pub const DEFAULT_CONNECTIONS: u32 = 16;
pub const DEFAULT_PATH: &str = "/";

/// A request that has no answer after this long counts as an error, and the load stops
/// waiting for it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One `bench` stage as the pipeline says it, with the defaults filled in.
#[derive(Debug, Clone)]
pub struct Plan {
    pub stage: String,
    pub env: String,
    pub duration: Duration,
    pub connections: u32,
    pub path: String,
    pub thresholds: Thresholds,
}

impl Plan {
    /// The plan of a `bench` stage; `None` for another kind.
    pub fn of(stage: &Stage) -> Option<Plan> {
        let Stage::Bench {
            against,
            duration,
            connections,
            path,
            thresholds,
            ..
        } = stage
        else {
            return None;
        };
        Some(Plan {
            stage: stage.name(),
            env: against.clone(),
            duration: duration.unwrap_or(DEFAULT_DURATION),
            connections: connections.unwrap_or(DEFAULT_CONNECTIONS),
            path: path.clone().unwrap_or_else(|| DEFAULT_PATH.into()),
            thresholds: thresholds.clone(),
        })
    }

    /// The URL loaded: the route's, with the plan's path.
    fn url(&self, route: &str) -> String {
        format!("{}{}", route.trim_end_matches('/'), self.path)
    }
}

/// Runs the stage: measures (or, in a dry run, says what it would measure), compares, records
/// the numbers in `record` whatever the verdict, and fails with the evidence.
/// `route` is where the environment answers and what serves it, or why cdflow cannot tell.
pub fn run(
    exec: &Exec,
    state: &State,
    record: &mut RunRecord,
    app: &str,
    plan: &Plan,
    route: Result<(Option<Deployment>, String)>,
) -> Result<()> {
    let ui = exec.ui();
    let earlier = record::all(state)?;
    let baseline = baseline(&earlier, &record.id, app, &record.pipeline, plan);
    if exec.is_dry_run() {
        // Nothing serves yet in a dry run that pushes first: the route is then the one a real
        // run would find.
        let url = match route {
            Ok((_, url)) => plan.url(&url),
            Err(_) => format!("the route of `{}`{}", plan.env, plan.path),
        };
        let against = match &baseline {
            Some(base) => format!("compare with run {} ({})", base.run, numbers_of_base(base)),
            None => "record the first numbers (no earlier run to compare with)".into(),
        };
        ui.note(&format!(
            "would send GET {url} on {} connection(s) for {}, then {against}; failing if \
             requests/s fall or p99 rises more than {}%, or on more than {} error(s)",
            plan.connections,
            humantime::format_duration(plan.duration),
            plan.thresholds.max_regression,
            plan.thresholds.max_errors
        ));
        return Ok(());
    }
    let (deployment, route) = route?;
    let url = plan.url(&route);
    ui.note(&format!(
        "sending GET {url} on {} connection(s) for {}",
        plan.connections,
        humantime::format_duration(plan.duration)
    ));
    let measured = measure(&url, plan.duration, plan.connections)?;
    let ms = |d: Duration| round(d.as_secs_f64() * 1000.0, 3);
    let mut result = BenchResult {
        stage: plan.stage.clone(),
        env: plan.env.clone(),
        url,
        version: deployment.map(|d| d.version),
        connections: plan.connections,
        seconds: round(measured.duration.as_secs_f64(), 3),
        requests: measured.total_requests as u64,
        errors: measured.failed_requests as u64,
        requests_per_second: round(measured.throughput, 1),
        p50_ms: ms(measured.latency_p50),
        p99_ms: ms(measured.latency_p99),
        baseline,
        max_regression: plan.thresholds.max_regression,
        max_errors: plan.thresholds.max_errors,
        passed: true,
        failures: Vec::new(),
    };
    judge(&mut result);
    // Kept whatever the verdict: `history` shows a failed release's numbers too, and a resumed
    // run's second measurement replaces its first.
    record.bench.retain(|b| b.stage != result.stage);
    record.bench.push(result.clone());
    if ui.is_json() {
        ui.emit(Event::Bench(result.clone()));
    } else {
        ui.note(&format!("{}: {}", result.stage, numbers_of(&result)));
        ui.note(&comparison(&result));
    }
    if result.passed {
        return Ok(());
    }
    Err(anyhow::anyhow!(evidence(&result)))
}

/// Sends GET `url` on `connections` keep-alive connections for `duration`, each sending its
/// next request when its answer came. A SIGINT or SIGTERM stops the load at once. The
/// library's numbers, which `run` keeps, rounded, as a [`BenchResult`].
fn measure(url: &str, duration: Duration, connections: u32) -> Result<httpress::BenchmarkResults> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the load's runtime")?;
    let aside = StdoutAside::new();
    let results = runtime.block_on(async {
        let benchmark = httpress::Benchmark::builder()
            .url(url)
            .concurrency(connections as usize)
            .duration(duration)
            .timeout(REQUEST_TIMEOUT)
            .max_retries(0)
            .build()
            .with_context(|| format!("cannot send a load to {url}"))?;
        tokio::select! {
            results = benchmark.run() => results
                .map(Some)
                .with_context(|| format!("the load against {url} failed")),
            () = stop_requested() => Ok(None),
        }
    });
    // The load's tasks still in flight after a stop end with the runtime; its threads are
    // waited for (a moment at most: nothing in the load blocks), so that none of them writes
    // to stdout once it is cdflow's again.
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(aside);
    let results = results?;
    // On a SIGINT the library also ends the load itself, early, with the numbers so far:
    // numbers of a cut load are not a measurement.
    let (Some(results), false) = (results, crate::signals::stop_requested()) else {
        return Err(anyhow::Error::new(Interrupted).context("the load was stopped"));
    };
    Ok(results)
}

/// While it lives, what is written to stdout goes to stderr. The load library (httpress)
/// listens for Ctrl-C itself, and on one prints a line of its own to stdout, which would break
/// `--json`'s one event per line. It has no option to leave signals alone, and the handler
/// cannot be told apart from cdflow's in the signal registry, so its stdout is moved aside for
/// the length of the load (when nothing of cdflow's prints: the load blocks the thread that
/// does). Not a fork of the crate, nor a process of its own for the load.
struct StdoutAside(Option<std::os::fd::OwnedFd>);

impl StdoutAside {
    fn new() -> StdoutAside {
        use std::io::Write as _;
        use std::os::fd::AsFd as _;
        let _ = std::io::stdout().flush();
        let Ok(saved) = std::io::stdout().as_fd().try_clone_to_owned() else {
            return StdoutAside(None);
        };
        // SAFETY: dup2(2) between the process's own standard descriptors; touches no memory.
        if unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
            return StdoutAside(None);
        }
        StdoutAside(Some(saved))
    }
}

impl Drop for StdoutAside {
    fn drop(&mut self) {
        use std::io::Write as _;
        use std::os::fd::AsRawFd as _;
        let Some(saved) = self.0.take() else {
            return;
        };
        let _ = std::io::stdout().flush();
        // SAFETY: as above, with the descriptor saved by `new`, still open.
        unsafe { libc::dup2(saved.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

/// Returns once cdflow was asked to stop.
async fn stop_requested() {
    while !crate::signals::stop_requested() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The numbers to compare with: those of the latest successful run (other than `current`) of
/// the same app and pipeline whose stage of this name passed against this environment.
pub fn baseline(
    records: &[RunRecord],
    current: &str,
    app: &str,
    pipeline: &str,
    plan: &Plan,
) -> Option<BenchBaseline> {
    records
        .iter()
        .rev()
        .filter(|r| {
            r.id != current
                && r.status == Status::Succeeded
                && r.app.as_deref() == Some(app)
                && r.pipeline == pipeline
        })
        .find_map(|r| {
            let b = r
                .bench
                .iter()
                .find(|b| b.stage == plan.stage && b.env == plan.env && b.passed)?;
            Some(BenchBaseline {
                run: r.id.clone(),
                version: b.version.clone(),
                requests_per_second: b.requests_per_second,
                p50_ms: b.p50_ms,
                p99_ms: b.p99_ms,
                errors: b.errors,
            })
        })
}

/// Fills in `passed` and `failures` from the numbers, the baseline and the thresholds.
pub fn judge(result: &mut BenchResult) {
    let mut failures = Vec::new();
    if result.requests == 0 {
        failures.push(format!("no request was answered in {:.1}s", result.seconds));
    }
    if result.errors > result.max_errors {
        failures.push(format!(
            "{} error(s) in {} requests (at most {} allowed)",
            result.errors, result.requests, result.max_errors
        ));
    }
    if let (Some(base), true) = (&result.baseline, result.requests > 0) {
        let limit = f64::from(result.max_regression);
        if let Some(fall) = change(base.requests_per_second, result.requests_per_second) {
            if -fall > limit {
                failures.push(format!(
                    "requests/s fell {:.1}%, from {:.1} to {:.1} (at most {}% allowed)",
                    -fall, base.requests_per_second, result.requests_per_second, limit
                ));
            }
        }
        if let Some(rise) = change(base.p99_ms, result.p99_ms) {
            if rise > limit {
                failures.push(format!(
                    "p99 rose {rise:.1}%, from {:.2} ms to {:.2} ms (at most {limit}% allowed)",
                    base.p99_ms, result.p99_ms
                ));
            }
        }
    }
    result.passed = failures.is_empty();
    result.failures = failures;
}

/// The change from `before` to `after`, in percent of `before`; none from nothing.
fn change(before: f64, after: f64) -> Option<f64> {
    (before > 0.0).then(|| (after - before) / before * 100.0)
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// One result's numbers on a line.
pub fn numbers_of(result: &BenchResult) -> String {
    format!(
        "{:.1} req/s, p50 {:.2} ms, p99 {:.2} ms, {} error(s) in {} requests ({} connection(s), \
         {:.1}s{})",
        result.requests_per_second,
        result.p50_ms,
        result.p99_ms,
        result.errors,
        result.requests,
        result.connections,
        result.seconds,
        result
            .version
            .as_ref()
            .map(|v| format!(", version {v}"))
            .unwrap_or_default()
    )
}

fn numbers_of_base(base: &BenchBaseline) -> String {
    format!(
        "{}{:.1} req/s, p50 {:.2} ms, p99 {:.2} ms, {} error(s)",
        base.version
            .as_ref()
            .map(|v| format!("version {v}: "))
            .unwrap_or_default(),
        base.requests_per_second,
        base.p50_ms,
        base.p99_ms,
        base.errors
    )
}

/// What the result was compared with, and how it came out, on a line.
pub fn comparison(result: &BenchResult) -> String {
    let Some(base) = &result.baseline else {
        return format!(
            "no earlier numbers for `{}` against `{}` in this pipeline: recorded as the first, \
             passed",
            result.stage, result.env
        );
    };
    let signed = |value: Option<f64>| match value {
        Some(v) => format!("{v:+.1}%"),
        None => "-".into(),
    };
    format!(
        "compared with run {} ({}): requests/s {}, p99 {} (at most {}% worse allowed): {}",
        base.run,
        numbers_of_base(base),
        signed(change(base.requests_per_second, result.requests_per_second)),
        signed(change(base.p99_ms, result.p99_ms)),
        result.max_regression,
        if result.passed { "passed" } else { "failed" }
    )
}

/// Why a result failed, with both runs' numbers and the thresholds.
fn evidence(result: &BenchResult) -> String {
    let mut text = format!(
        "`{}` failed its thresholds:\n- {}\nthis run: {}",
        result.stage,
        result.failures.join("\n- "),
        numbers_of(result)
    );
    match &result.baseline {
        Some(base) => text.push_str(&format!("\nrun {}: {}", base.run, numbers_of_base(base))),
        None => text.push_str("\nno earlier run to compare with"),
    }
    text.push_str(&format!(
        "\nthresholds: max_regression {}%, max_errors {}; if the change is meant, raise them \
         under the stage's `thresholds:` (later runs compare with the last run that passed)",
        result.max_regression, result.max_errors
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(rps: f64, p99: f64, errors: u64, baseline: Option<(f64, f64)>) -> BenchResult {
        BenchResult {
            stage: "bench staging".into(),
            env: "staging".into(),
            url: "http://127.0.0.1:1/".into(),
            version: Some("1.0.1".into()),
            connections: 8,
            seconds: 3.0,
            requests: (rps * 3.0) as u64,
            errors,
            requests_per_second: rps,
            p50_ms: p99 / 2.0,
            p99_ms: p99,
            baseline: baseline.map(|(rps, p99)| BenchBaseline {
                run: "20261127T150000-1".into(),
                version: Some("1.0.0".into()),
                requests_per_second: rps,
                p50_ms: p99 / 2.0,
                p99_ms: p99,
                errors: 0,
            }),
            max_regression: 30,
            max_errors: 0,
            passed: false,
            failures: Vec::new(),
        }
    }

    #[test]
    fn the_first_numbers_pass_and_say_so() {
        let mut first = result(400.0, 25.0, 0, None);
        judge(&mut first);
        assert!(first.passed, "{:?}", first.failures);
        assert!(comparison(&first).contains("recorded as the first"));
    }

    #[test]
    fn numbers_within_the_threshold_pass() {
        // 25% fewer requests/s and a p99 29% higher, with 30% allowed.
        let mut within = result(300.0, 25.8, 0, Some((400.0, 20.0)));
        judge(&mut within);
        assert!(within.passed, "{:?}", within.failures);
        let line = comparison(&within);
        assert!(line.contains("requests/s -25.0%, p99 +29.0%"), "{line}");
        assert!(line.contains("run 20261127T150000-1"), "{line}");
    }

    #[test]
    fn twice_as_slow_fails_with_both_runs_numbers() {
        let mut slow = result(200.0, 40.0, 0, Some((400.0, 20.0)));
        judge(&mut slow);
        assert!(!slow.passed);
        assert_eq!(slow.failures.len(), 2, "{:?}", slow.failures);
        let text = evidence(&slow);
        assert!(
            text.contains("requests/s fell 50.0%, from 400.0 to 200.0 (at most 30% allowed)"),
            "{text}"
        );
        assert!(
            text.contains("p99 rose 100.0%, from 20.00 ms to 40.00 ms"),
            "{text}"
        );
        assert!(text.contains("this run: 200.0 req/s"), "{text}");
        assert!(
            text.contains("run 20261127T150000-1: version 1.0.0: 400.0 req/s"),
            "{text}"
        );
        assert!(text.contains("max_regression 30%"), "{text}");
    }

    #[test]
    fn errors_past_the_threshold_fail_even_without_a_baseline() {
        let mut failing = result(400.0, 20.0, 3, None);
        judge(&mut failing);
        assert!(!failing.passed);
        assert!(
            failing.failures[0].contains("3 error(s) in 1200 requests (at most 0 allowed)"),
            "{:?}",
            failing.failures
        );
        let mut allowed = result(400.0, 20.0, 3, None);
        allowed.max_errors = 5;
        judge(&mut allowed);
        assert!(allowed.passed);
    }

    #[test]
    fn no_answer_at_all_fails() {
        let mut silent = result(0.0, 0.0, 0, Some((400.0, 20.0)));
        judge(&mut silent);
        assert!(!silent.passed);
        assert_eq!(silent.failures, ["no request was answered in 3.0s"]);
    }

    fn run_with(id: &str, status: Status, bench: Vec<BenchResult>) -> RunRecord {
        let mut record = RunRecord::new("perf", "/repo", None);
        record.id = id.into();
        record.app = Some("pyapp".into());
        record.status = status;
        record.bench = bench;
        record
    }

    #[test]
    fn the_baseline_is_the_last_successful_run_of_that_stage() {
        let plan = Plan {
            stage: "bench staging".into(),
            env: "staging".into(),
            duration: DEFAULT_DURATION,
            connections: 8,
            path: "/".into(),
            thresholds: Thresholds::default(),
        };
        let passed = |rps: f64| {
            let mut r = result(rps, 20.0, 0, None);
            judge(&mut r);
            r
        };
        let mut failed_stage = result(100.0, 80.0, 0, Some((400.0, 20.0)));
        judge(&mut failed_stage);
        let mut other_env = passed(999.0);
        other_env.env = "production".into();
        let mut other_app = run_with("5", Status::Succeeded, vec![passed(888.0)]);
        other_app.app = Some("other".into());
        let records = vec![
            run_with("1", Status::Succeeded, vec![passed(300.0)]),
            run_with("2", Status::Succeeded, vec![passed(400.0)]),
            run_with("3", Status::Failed, vec![failed_stage]),
            run_with("4", Status::Succeeded, vec![other_env]),
            other_app,
            run_with("6", Status::Running, vec![passed(777.0)]),
        ];
        let base = baseline(&records, "6", "pyapp", "perf", &plan).unwrap();
        assert_eq!(base.run, "2");
        assert_eq!(base.requests_per_second, 400.0);
        assert!(baseline(&records, "6", "pyapp", "other-pipeline", &plan).is_none());
    }
}
