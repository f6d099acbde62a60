//! Canary verification, whatever the platform: the plan an environment's settings give
//! (`strategy = "canary"`, docs/canary.md), the probe traffic cdflow measures itself, the
//! verdict that compares the canary's numbers with the stable version's, and the e2e tier run
//! against the route with the canary in it. Where the numbers come from is the platform's:
//! on cf the probes' own answers, on the local platform the route's counts per version.
//!
//! The probes are GETs of the environment's URL at a steady rate for the window, sent by
//! `curl` (through the Exec seam, so a dry run shows them): it speaks the HTTPS of a real
//! route, which cdflow's own HTTP client does not.

use anyhow::{Context, Result};
use xshell::cmd;

use crate::exec::Exec;
use crate::platform::Release;

/// How many probes per second of the window.
const PROBES_PER_SECOND: u64 = 10;
/// How long one probe may take before it counts as an error.
const PROBE_TIMEOUT_SECS: u64 = 10;

/// What an environment's canary settings say, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The share of instances (percent) the new version has at each pause. Empty: the
    /// platform's default, one canary instance, then all.
    pub steps: Vec<u32>,
    /// The seconds of probe traffic measured at each pause.
    pub window_secs: u64,
    /// How many percentage points the error rate may rise above the stable version's.
    pub max_error_rate: f64,
    /// How many milliseconds the p99 latency may rise above the stable version's.
    pub max_p99_ms: u64,
    /// How many requests (probes on cf) of the canary a window needs to be judged at all: a
    /// window with fewer does not pass, whatever its numbers.
    pub min_requests: u64,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            steps: Vec::new(),
            window_secs: 60,
            max_error_rate: 1.0,
            max_p99_ms: 500,
            // Enough that one unlucky error is not a failure by chance at the default threshold
            // (1 of 50 is 2%), and what the defaults give: 60 s of probes at 10 a second is
            // 600, of which 60 at the local platform's first step of 10%.
            min_requests: 50,
        }
    }
}

/// What one window measured: the probes, or (local platform) the requests a version answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub requests: usize,
    /// Answers of 5xx, and probes that got no answer in time.
    pub errors: usize,
    pub p99_ms: f64,
}

impl Sample {
    /// The error rate, in percent.
    pub fn error_rate(&self) -> f64 {
        match self.requests {
            0 => 0.0,
            n => self.errors as f64 * 100.0 / n as f64,
        }
    }

    /// Reads curl's `--write-out "%{http_code} %{time_total}"` lines, one per probe.
    pub fn from_curl(lines: &[String]) -> Sample {
        let mut latencies = Vec::new();
        let mut errors = 0;
        for line in lines {
            let mut words = line.split_whitespace();
            let (Some(code), Some(seconds)) = (words.next(), words.next()) else {
                continue;
            };
            let code: u16 = code.parse().unwrap_or(0);
            if code == 0 || code >= 500 {
                errors += 1;
            }
            latencies.push(seconds.parse::<f64>().unwrap_or(0.0) * 1000.0);
        }
        latencies.sort_by(f64::total_cmp);
        // The nearest-rank p99: the smallest latency that 99% of the probes did not exceed.
        let p99_ms = match latencies.len() {
            0 => 0.0,
            n => latencies[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1],
        };
        Sample {
            requests: latencies.len(),
            errors,
            p99_ms,
        }
    }
}

/// Sends the window's probes to `url` and measures them; `None` in a dry run, where nothing
/// is sent.
pub fn probe(exec: &Exec, url: &str, window_secs: u64) -> Result<Option<Sample>> {
    let count = window_secs * PROBES_PER_SECOND;
    // The URLs on stdin (`--config -`), not on the command line: the same URL many times.
    // curl's exit status is that of its last transfer, so a last one that cannot fail (the
    // empty file) lets every probe's line be read, failed probes included; its line is dropped.
    let quoted = url.replace('\\', "\\\\").replace('"', "\\\"");
    let mut config = String::new();
    for _ in 0..count {
        config.push_str(&format!("url = \"{quoted}\"\noutput = \"/dev/null\"\n"));
    }
    config.push_str("url = \"file:///dev/null\"\noutput = \"/dev/null\"\n");
    let rate = format!("{PROBES_PER_SECOND}/s");
    let timeout = PROBE_TIMEOUT_SECS.to_string();
    // `\n` as two characters: curl makes it a newline, and the echoed command stays one line.
    let write_out = "%{http_code} %{time_total}\\n";
    let output = exec
        .run_with_input(
            cmd!(
                exec.sh(),
                "curl --silent --max-time {timeout} --rate {rate} --write-out {write_out} --config -"
            ),
            config.as_bytes(),
        )
        .with_context(|| format!("the canary's probes of {url} could not run"))?;
    if !output.ran {
        return Ok(None);
    }
    let lines = &output.stdout[..output.stdout.len().saturating_sub(1)];
    Ok(Some(Sample::from_curl(lines)))
}

/// Whether the canary's numbers stay within the plan's thresholds of the stable version's;
/// the error says why not, with the numbers. `unit` names what was counted (`probes`,
/// `requests`). A window with fewer of the canary's than the plan's minimum does not pass: a
/// handful of requests proves nothing, and none at all would read as 0% errors.
pub fn judge(
    plan: &Plan,
    stable: &Sample,
    canary: &Sample,
    unit: &str,
) -> std::result::Result<(), String> {
    if (canary.requests as u64) < plan.min_requests {
        // The window that would hold the minimum at the rate this one saw.
        let enough =
            (plan.window_secs * plan.min_requests).div_ceil((canary.requests as u64).max(1));
        let longer = match canary.requests {
            0 => "a longer canary_window".to_string(),
            _ => format!("canary_window = {enough} or more"),
        };
        return Err(format!(
            "the canary cannot be judged: the {} s window counted {} {unit} of it, fewer than \
             the {} needed (canary_min_requests); give it {longer}, or lower canary_min_requests",
            plan.window_secs, canary.requests, plan.min_requests
        ));
    }
    let mut broken = Vec::new();
    let rise = canary.error_rate() - stable.error_rate();
    if rise > plan.max_error_rate {
        broken.push(format!(
            "error rate {:.1}% ({} of {} {unit}) against the stable version's {:.1}%: up \
             {rise:.1} points, more than the {:.1} allowed (canary_max_error_rate)",
            canary.error_rate(),
            canary.errors,
            canary.requests,
            stable.error_rate(),
            plan.max_error_rate
        ));
    }
    let slower = canary.p99_ms - stable.p99_ms;
    if slower > plan.max_p99_ms as f64 {
        broken.push(format!(
            "p99 latency {:.0} ms against the stable version's {:.0} ms: up {slower:.0} ms, \
             more than the {} allowed (canary_max_p99_ms)",
            canary.p99_ms, stable.p99_ms, plan.max_p99_ms
        ));
    }
    match broken.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "the canary broke its thresholds: {}",
            broken.join("; ")
        )),
    }
}

impl From<&Sample> for crate::events::Probes {
    fn from(sample: &Sample) -> crate::events::Probes {
        crate::events::Probes {
            requests: sample.requests as u64,
            errors: sample.errors as u64,
            error_rate: sample.error_rate(),
            p99_ms: sample.p99_ms,
        }
    }
}

/// Tells the reader what a pause measured and the verdict: a line, or with `--json` a typed
/// `canary` event. `unit` names what was counted, as for [`judge`].
pub fn report(
    exec: &Exec,
    env: &str,
    pause: u32,
    (stable, canary): (&Sample, &Sample),
    verdict: &std::result::Result<(), String>,
    unit: &str,
) {
    let ui = exec.ui();
    if ui.is_json() {
        ui.emit(crate::events::Event::Canary(crate::events::CanaryCheck {
            env: env.to_string(),
            pause,
            stable: stable.into(),
            canary: canary.into(),
            passed: verdict.is_ok(),
            reason: verdict.clone().err(),
        }));
    } else {
        ui.note(&format!("canary pause {pause}: {}", describe(canary, unit)));
    }
}

/// One line on a window's numbers, for the run's output.
pub fn describe(sample: &Sample, unit: &str) -> String {
    format!(
        "{} {unit}, {:.1}% errors, p99 {:.0} ms",
        sample.requests,
        sample.error_rate(),
        sample.p99_ms
    )
}

/// Runs the app's e2e tier, if it has one, against `url` (its `APP_URL`) with the canary in
/// the route; the error says it failed.
pub fn e2e(exec: &Exec, release: &Release, url: &str) -> std::result::Result<(), String> {
    let Some(e2e) = &release.e2e else {
        return Ok(());
    };
    let mut vars: Vec<(&str, &str)> = e2e
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    vars.push(("APP_URL", url));
    crate::stages::run_words(exec, e2e.command, &vars)
        .map_err(|err| format!("the e2e tests against the canary failed: {err:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    #[test]
    fn curl_lines_give_the_error_rate_and_the_p99() {
        let mut text = String::new();
        for i in 0..98 {
            text.push_str(&format!("200 0.0{:02}\n", i % 10));
        }
        text.push_str("503 0.500\n000 10.000\n");
        let sample = Sample::from_curl(&lines(&text));
        assert_eq!(sample.requests, 100);
        assert_eq!(sample.errors, 2);
        assert_eq!(sample.error_rate(), 2.0);
        // 99 of the 100 took at most 500 ms.
        assert_eq!(sample.p99_ms, 500.0);
        assert_eq!(Sample::from_curl(&[]).p99_ms, 0.0);
    }

    #[test]
    fn the_verdict_names_the_numbers_that_broke_the_thresholds() {
        let plan = Plan::default();
        let stable = Sample {
            requests: 100,
            errors: 0,
            p99_ms: 20.0,
        };
        let fine = Sample {
            requests: 100,
            errors: 1,
            p99_ms: 400.0,
        };
        assert_eq!(judge(&plan, &stable, &fine, "probes"), Ok(()));
        let bad = Sample {
            requests: 100,
            errors: 5,
            p99_ms: 900.0,
        };
        let why = judge(&plan, &stable, &bad, "probes").unwrap_err();
        assert!(why.contains("error rate 5.0% (5 of 100 probes)"), "{why}");
        assert!(why.contains("stable version's 0.0%"), "{why}");
        assert!(why.contains("p99 latency 900 ms"), "{why}");
        assert!(why.contains("the 500 allowed"), "{why}");
    }

    #[test]
    fn a_window_with_too_few_of_the_canarys_requests_does_not_pass() {
        let plan = Plan {
            window_secs: 2,
            ..Plan::default()
        };
        let stable = Sample {
            requests: 100,
            errors: 0,
            p99_ms: 20.0,
        };
        // No request at all is not 0% errors.
        let why = judge(&plan, &stable, &Sample::default(), "requests").unwrap_err();
        assert!(why.contains("counted 0 requests of it"), "{why}");
        assert!(why.contains("a longer canary_window"), "{why}");
        // Three clean requests prove nothing either: 2 s gave 3, so 34 s would give 50.
        let few = Sample {
            requests: 3,
            errors: 0,
            p99_ms: 20.0,
        };
        let why = judge(&plan, &stable, &few, "probes").unwrap_err();
        assert!(
            why.contains("the 2 s window counted 3 probes of it, fewer than the 50 needed"),
            "{why}"
        );
        assert!(why.contains("canary_window = 34 or more"), "{why}");
        assert!(why.contains("lower canary_min_requests"), "{why}");
        let enough = Sample {
            requests: 50,
            ..few
        };
        assert_eq!(judge(&plan, &stable, &enough, "probes"), Ok(()));
    }
}
