//! Canary releases on the local platform, verified by cdflow (docs/canary.md).
//!
//! The environment's server starts the new version's instances as for any deploy but, once
//! they are healthy, gives them only the first step's share of the route's requests (see
//! [`super::proxy`]); the stable instances keep the rest. At each step cdflow measures a
//! window: the route's counts per version ([`super::metrics`], the control socket's `stats`)
//! before and after it, while its probes (and whatever users send) go through the route. So
//! unlike on cf, the canary is judged on its own requests, compared with the stable version's
//! over the same window. Then the e2e tier runs against the route. A canary that passes every
//! step is finished (the route's switch, the stable instances retired); one that fails is
//! cancelled: the stable instances, which never stopped, take the whole route again, and the
//! run fails with the numbers.
//!
//! The canary lives as long as the control connection that started it (its lease, see
//! [`super::control`]): a cdflow killed mid-canary leaves no half-canary behind.

use anyhow::{Context, Result};

use super::control::{self, Request, Session};
use super::layout::EnvPaths;
use super::metrics::{Latency, Snapshot, VersionSnapshot};
use super::spec::{EnvFile, RunSpec};
use crate::canary::{self, Plan, Sample};
use crate::exec::Exec;
use crate::platform::{Deployment, Release};
use crate::state::State;

/// The canary's share of the requests when the plan gives no steps: one step, then all.
const DEFAULT_WEIGHT: u32 = 10;

/// What the route's counts are named in the run's output and the verdict.
const UNIT: &str = "requests";

/// The shares of the route's requests (percent) the canary gets, one step at a time.
pub(super) fn steps(plan: &Plan) -> Vec<u32> {
    match plan.steps.is_empty() {
        true => vec![DEFAULT_WEIGHT],
        false => plan.steps.clone(),
    }
}

/// Deploys `spec` as a canary of the environment of `paths`, verifies it step by step, and
/// finishes it (writing `next` as the environment's record) or cancels it.
pub(super) fn run(
    exec: &Exec,
    state: &State,
    paths: &EnvPaths,
    spec: RunSpec,
    next: EnvFile,
    plan: &Plan,
    release: &Release,
) -> Result<Deployment> {
    let deployment = spec.deployment();
    let url = spec.url();
    let version = spec.version.clone();
    let env = paths.env.clone();
    let note = |text: &str| exec.ui().note(&format!("{env}: {text}"));
    let steps = steps(plan);
    control::ensure_server(state.root(), paths)?;
    refuse_without_counts(paths)?;
    let mut session = Session::open(paths)?;
    let request = Request::Deploy {
        spec: Box::new(spec),
        env_file: Box::new(next),
        canary: Some(steps[0]),
    };
    let mut said_why = false;
    let status = session
        .send(&request, true, |text| {
            said_why |= text.starts_with("no canary:");
            note(text)
        })
        .with_context(|| format!("`{env}` did not switch to {version}"))?;
    if status.canary.is_none() {
        // The server said why there is no canary (nothing served before, say), unless it is
        // the server of an older cdflow, which knows no canaries and switched.
        if !said_why {
            exec.ui().warn(&format!(
                "the server of `{env}` was started by an older cdflow, which runs no canaries: \
                 it switched to {version} at once (`cdflow down --env {env}` then `cdflow up` \
                 restarts it with this cdflow)"
            ));
        }
        return Ok(deployment);
    }
    let stable = status.serving.map(|spec| spec.version).unwrap_or_default();
    let versions = Versions {
        stable: &stable,
        canary: &version,
    };
    // The stable version's numbers of the last window in which it had a share: at a step of
    // 100% it answers only what was in flight, and the canary is compared with what it did
    // before.
    let mut reference = Sample::default();
    for (index, weight) in steps.iter().enumerate() {
        let pause = index as u32 + 1;
        let step = Step {
            pause,
            weight: *weight,
        };
        let moved = match index {
            0 => Ok(()),
            _ => session
                .send(&Request::CanaryWeight { weight: *weight }, true, note)
                .map(|_| ())
                .map_err(|err| format!("the canary could not take {weight}%: {err:#}")),
        };
        let verified = moved.and_then(|()| {
            verify(
                exec,
                paths,
                release,
                &url,
                plan,
                &versions,
                &step,
                &mut reference,
            )
        });
        if let Err(why) = verified {
            let err = cancel(exec, &mut session, paths, &versions, why);
            // Stopped while verifying (the probes or the e2e tier were stopped) or moving the
            // share: cancelled all the same, and the run ends as interrupted.
            if crate::signals::stop_requested() {
                return Err(
                    anyhow::Error::new(crate::error::Interrupted).context(format!("{err:#}"))
                );
            }
            return Err(err);
        }
    }
    // Seen to its end even when cdflow is being stopped: the switch is under way in the server
    // either way, and the run says what serves.
    session
        .send_to_the_end(&Request::CanaryFinish, note)
        .with_context(|| {
            format!("the canary passed, but `{env}` could not switch to it: {stable} serves")
        })?;
    Ok(deployment)
}

/// Why the same version again gets no canary, in the server's words.
const SAME_VERSION: &str =
    "the stable version is the same version, which the route's counts cannot tell apart";

/// What a deploy to a canary environment would meet, for a dry run.
pub(super) enum Outlook {
    /// A canary beside `stable`, the version serving now.
    Canary { stable: String },
    /// A plain switch, for this reason.
    NoCanary(String),
}

/// Whether a deploy of `version` on `port` would run as a canary, from what the environment's
/// server serves now, by the server's own rules (`deploy_locked` in [`super::server`]); refused
/// as the real run would be when the route counts nothing. A server that does not run serves
/// nothing: the deploy starts it afresh.
pub(super) fn outlook(paths: &EnvPaths, version: &str, port: u16) -> Result<Outlook> {
    let status = control::status(paths);
    let serving = status.as_ref().and_then(|status| status.serving.as_ref());
    let why = match serving {
        None => format!(
            "nothing serves `{}` now, so there is no stable version to compare",
            paths.env
        ),
        Some(stable) if stable.version == version => SAME_VERSION.to_string(),
        Some(_) if status.as_ref().and_then(|s| s.route_port) != Some(port) => {
            "the route moves to another port".to_string()
        }
        Some(stable) => {
            refuse_without_counts(paths)?;
            return Ok(Outlook::Canary {
                stable: stable.version.clone(),
            });
        }
    };
    Ok(Outlook::NoCanary(why))
}

/// Refuses a canary, before anything starts, in an environment whose route serves a version
/// but counts nothing: its server was started with the route's metrics off
/// ([`super::proxy::METRICS_SWITCH`]), or by an older cdflow. The canary would be judged on
/// empty numbers.
fn refuse_without_counts(paths: &EnvPaths) -> Result<()> {
    let Some(status) = control::status(paths) else {
        return Ok(());
    };
    let routed = status.serving.as_ref().is_some_and(|spec| !spec.no_route);
    if routed && status.metrics_port.is_none() {
        let env = &paths.env;
        return Err(crate::error::user_error(format!(
            "[env.{env}] strategy = \"canary\": the route of `{env}` counts no requests (its \
             server was started with {}=off, or by an older cdflow), so its canary could not \
             be judged: restart the server with its counts (`cdflow down --env {env}`, then \
             `cdflow up` without {}=off), or set `strategy = \"rolling\"`",
            super::proxy::METRICS_SWITCH,
            super::proxy::METRICS_SWITCH
        )));
    }
    Ok(())
}

/// The stable version and the canary's.
struct Versions<'a> {
    stable: &'a str,
    canary: &'a str,
}

/// One step of a canary: its number from 1, and the canary's share of the requests.
struct Step {
    pause: u32,
    weight: u32,
}

/// One step's verification: the canary's own requests over the window against the stable
/// version's, then the e2e tier; the error says what failed.
#[allow(clippy::too_many_arguments)]
fn verify(
    exec: &Exec,
    paths: &EnvPaths,
    release: &Release,
    url: &str,
    plan: &Plan,
    versions: &Versions,
    step: &Step,
    reference: &mut Sample,
) -> std::result::Result<(), String> {
    let text = |err: anyhow::Error| format!("{err:#}");
    exec.ui().note(&format!(
        "canary pause {} in `{}`: {} takes {}% of {url}; measuring {} s of its requests \
         against {}'s",
        step.pause, paths.env, versions.canary, step.weight, plan.window_secs, versions.stable
    ));
    let before = control::stats(paths).map_err(text)?;
    // Probes, so that an environment without users gets a verdict too; they count with
    // whatever else goes through the route.
    canary::probe(exec, url, plan.window_secs).map_err(text)?;
    let after = control::stats(paths).map_err(text)?;
    let stable = window(&before, &after, versions.stable);
    let canary = window(&before, &after, versions.canary);
    if stable.requests > 0 && step.weight < 100 {
        *reference = stable;
    }
    exec.ui().note(&format!(
        "stable {}: {}",
        versions.stable,
        canary::describe(reference, UNIT)
    ));
    let verdict = canary::judge(plan, reference, &canary, UNIT);
    canary::report(
        exec,
        &paths.env,
        step.pause,
        (reference, &canary),
        &verdict,
        UNIT,
    );
    verdict?;
    canary::e2e(exec, release, url)
}

/// Cancels the canary (the stable version takes the whole route again) and returns the
/// failure with what was done.
fn cancel(
    exec: &Exec,
    session: &mut Session,
    paths: &EnvPaths,
    versions: &Versions,
    why: String,
) -> anyhow::Error {
    let env = &paths.env;
    // Run to its end even when cdflow is being stopped: a canary left in the route would keep
    // its share (the server would cancel it anyway when this cdflow's connection closes).
    let cancelled = exec.critical(|| {
        session.send_to_the_end(&Request::CanaryCancel, |text| {
            exec.ui().note(&format!("{env}: {text}"))
        })
    });
    match cancelled {
        // A stage failed (exit code 1), not bad input: in a release the bump is pushed by now.
        Ok(_) => anyhow::anyhow!(
            "{why}\nthe canary of {} in `{env}` was cancelled: {} serves the whole route again",
            versions.canary,
            versions.stable
        ),
        Err(err) => err.context(format!(
            "{why}\ncancelling the canary in `{env}` failed too: its server cancels it when \
             this cdflow exits (see `cdflow status`)"
        )),
    }
}

/// What `version` answered between two of the route's snapshots.
///
/// Requests are the answers it gave plus its attempts that failed and were sent again (to
/// another instance, perhaps of the other version); errors are its 5xx answers (the route's own
/// 502 after a last failed attempt included) plus those failed attempts. So a canary that
/// breaks connections shows even when the route's retries hide it from the clients.
fn window(before: &Snapshot, after: &Snapshot, version: &str) -> Sample {
    let find = |snapshot: &Snapshot| {
        snapshot
            .versions
            .iter()
            .find(|v| v.version == version)
            .cloned()
    };
    let Some(after) = find(after) else {
        return Sample::default();
    };
    let before = find(before);
    let answered = |v: &VersionSnapshot, class: Option<&str>| -> u64 {
        v.requests
            .iter()
            .filter(|count| class.is_none_or(|class| count.status == class))
            .map(|count| count.count)
            .sum()
    };
    let delta = |read: &dyn Fn(&VersionSnapshot) -> u64| {
        read(&after).saturating_sub(before.as_ref().map_or(0, read))
    };
    let retries = delta(&|v| v.retries);
    let requests = delta(&|v| answered(v, None)) + retries;
    let errors = delta(&|v| answered(v, Some("5xx"))) + retries;
    let buckets: Vec<u64> = after
        .latency
        .buckets
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let earlier = before
                .as_ref()
                .and_then(|b| b.latency.buckets.get(i).copied())
                .unwrap_or(0);
            n.saturating_sub(earlier)
        })
        .collect();
    Sample {
        requests: requests as usize,
        errors: errors as usize,
        p99_ms: quantile(&after.latency, &buckets, 0.99) * 1000.0,
    }
}

/// The `q` quantile, in seconds, of the requests counted in `buckets` (a histogram with the
/// bounds of `latency`), as Prometheus's `histogram_quantile` reads it: the bucket that holds
/// it, interpolated linearly inside. Exact to within that bucket's width (see
/// [`super::metrics::LATENCY_BOUNDS`]); beyond the last bound, the last bound.
fn quantile(latency: &Latency, buckets: &[u64], q: f64) -> f64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, count) in buckets.iter().enumerate() {
        let upto = below + count;
        if upto as f64 >= rank && *count > 0 {
            let Some(upper) = latency.bounds.get(i) else {
                return latency.bounds.last().copied().unwrap_or(0.0);
            };
            let lower = match i {
                0 => 0.0,
                _ => latency.bounds[i - 1],
            };
            return lower + (upper - lower) * (rank - below as f64) / *count as f64;
        }
        below = upto;
    }
    latency.bounds.last().copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::super::metrics::RequestCount;
    use super::*;

    fn version(
        name: &str,
        ok: u64,
        errors: u64,
        retries: u64,
        buckets: Vec<u64>,
    ) -> VersionSnapshot {
        let mut requests = vec![RequestCount {
            method: "GET".into(),
            status: "2xx".into(),
            count: ok,
        }];
        if errors > 0 {
            requests.push(RequestCount {
                method: "GET".into(),
                status: "5xx".into(),
                count: errors,
            });
        }
        VersionSnapshot {
            version: name.into(),
            healthy_instances: 2,
            requests,
            upstream_errors: retries,
            retries,
            latency: Latency {
                bounds: vec![0.01, 0.1, 1.0],
                count: buckets.iter().sum(),
                buckets,
                sum_seconds: 0.0,
            },
        }
    }

    #[test]
    fn a_window_counts_what_each_version_answered_in_it() {
        let before = Snapshot {
            versions: vec![version("1.0.0", 100, 0, 0, vec![100, 0, 0, 0])],
        };
        let after = Snapshot {
            versions: vec![
                version("1.0.0", 1000, 0, 0, vec![1000, 0, 0, 0]),
                version("2.0.0", 95, 4, 1, vec![0, 90, 9, 0]),
            ],
        };
        let stable = window(&before, &after, "1.0.0");
        assert_eq!((stable.requests, stable.errors), (900, 0));
        assert!(stable.p99_ms > 0.0 && stable.p99_ms <= 10.0, "{stable:?}");
        let canary = window(&before, &after, "2.0.0");
        // 99 answers and 1 attempt sent again elsewhere; 4 answers of 5xx and that attempt.
        assert_eq!((canary.requests, canary.errors), (100, 5));
        assert_eq!(canary.error_rate(), 5.0);
        // 99 requests: rank 98.01 is in the third bucket (90 below it, 9 in it), 100 ms to 1 s.
        let expected = 100.0 + 900.0 * (98.01 - 90.0) / 9.0;
        assert!((canary.p99_ms - expected).abs() < 1e-6, "{canary:?}");
        assert_eq!(window(&before, &after, "3.0.0"), Sample::default());
    }

    #[test]
    fn a_quantile_beyond_the_last_bound_is_the_last_bound() {
        let latency = Latency {
            bounds: vec![0.01, 0.1],
            buckets: vec![],
            count: 0,
            sum_seconds: 0.0,
        };
        assert_eq!(quantile(&latency, &[0, 0, 10], 0.99), 0.1);
        assert_eq!(quantile(&latency, &[0, 0, 0], 0.99), 0.0);
        assert_eq!(quantile(&latency, &[10, 0, 0], 0.5), 0.005);
    }

    #[test]
    fn without_steps_the_canary_takes_one_share_then_all() {
        assert_eq!(steps(&Plan::default()), vec![DEFAULT_WEIGHT]);
        let plan = Plan {
            steps: vec![10, 50, 100],
            ..Plan::default()
        };
        assert_eq!(steps(&plan), vec![10, 50, 100]);
    }
}
