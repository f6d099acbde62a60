//! Canary deployments on Cloud Foundry, verified by cdflow (docs/canary.md).
//!
//! cf v8 runs the canary and pauses it (`cf push --strategy canary`, cf CLI 8.8 or later;
//! `--instance-steps` from 8.10, on a Cloud Controller of API 3.189.0 or later), but a person
//! must decide: `cf continue-deployment` or `cf cancel-deployment`. cdflow decides: at each
//! pause it sends its probes to the route, compares their error rate and p99 with what the
//! stable version answered before the deployment, runs the e2e tier, and then continues or
//! cancels. Cancelling gives the route back to the stable instances, which never stopped.
//!
//! What cf cannot tell: which instance answered a request. The probes measure the route as a
//! whole while the canary takes its share, so a canary at 10% that fails every request shows
//! as about 10% errors; the thresholds apply to the route's numbers.

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{args, check_cli_version_at_least, cli_version, text_at, Cf, POLLS, POLL_EVERY};
use crate::canary::{self, Plan, Sample};
use crate::exec::Exec;
use crate::platform::{Release, Target};

/// The cf CLI that brought `cf push --strategy canary`.
const CANARY_CLI: (u64, u64) = (8, 8);
/// The cf CLI that brought `cf push --instance-steps`.
const STEPS_CLI: (u64, u64) = (8, 10);
/// The Cloud Controller API that brought canary deployments.
const CANARY_API: (u64, u64, u64) = (3, 173, 0);
/// The Cloud Controller API that takes canary steps (`options.canary.steps`); older ones run
/// one canary instance, then all.
const STEPS_API: (u64, u64, u64) = (3, 189, 0);

/// What a canary environment needs of the machine, as problems for the preflight.
pub fn preflight(exec: &Exec, env: &Target, plan: &Plan) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(problem) = check_cli_version_at_least(exec, CANARY_CLI, "strategy = \"canary\"") {
        problems.push(format!("[env.{}]: {problem}", env.name));
    }
    if let Some(why) = crate::tools::missing("curl", &exec.dir()) {
        problems.push(format!(
            "[env.{}] verifies its canary with probes that curl sends, but {why}",
            env.name
        ));
    }
    let old_cli = cli_version(exec).is_some_and(|v| v < STEPS_CLI);
    if !plan.steps.is_empty() && old_cli && problems.is_empty() {
        exec.ui().warn(&format!(
            "[env.{}]: the cf CLI is older than {}.{}, which brought `cf push --instance-steps`: \
             a push runs one canary instance, then all, not canary_steps {:?} (promote, through \
             the API, still takes them)",
            env.name, STEPS_CLI.0, STEPS_CLI.1, plan.steps
        ));
    }
    problems
}

/// What a promote's canary knows before its deployment starts.
pub(super) struct Before {
    pub steps: Vec<u32>,
    pub url: String,
    pub stable: Option<Sample>,
}

/// The `options` of a canary deployment's body: its steps, when there are any.
pub(super) fn deployment_options(steps: &[u32]) -> Option<Value> {
    (!steps.is_empty()).then(|| {
        let steps: Vec<Value> = steps
            .iter()
            .map(|weight| serde_json::json!({ "instance_weight": weight }))
            .collect();
        serde_json::json!({ "canary": { "steps": steps } })
    })
}

impl Cf {
    /// The Cloud Controller's API version, from `cf curl /`; `None` in a dry run.
    fn api_version(&self, exec: &Exec, env: &Target) -> Result<Option<(u64, u64, u64)>> {
        let root = self.curl(exec, env, &["/"])?;
        if root.is_null() {
            return Ok(None);
        }
        let text = text_at(&root, &["links", "cloud_controller_v3", "meta", "version"]);
        let mut parts = text.split('.').map(|part| part.parse::<u64>().ok());
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Some(a)), Some(Some(b)), Some(Some(c))) => Ok(Some((a, b, c))),
            _ => bail!("`cf curl /` gave no Cloud Controller v3 version: {root}"),
        }
    }

    /// The plan's steps, where the Cloud Controller takes them; else none (one canary
    /// instance, then all), said in a warning. A Cloud Controller with no canary deployments
    /// at all is refused.
    fn steps_taken(&self, exec: &Exec, env: &Target, plan: &Plan) -> Result<Vec<u32>> {
        let api = self.api_version(exec, env)?;
        if let Some(api) = api.filter(|&api| api < CANARY_API) {
            return Err(crate::error::user_error(format!(
                "the Cloud Controller of `{}` has API {}.{}.{}, older than {}.{}.{}, which \
                 brought canary deployments: set `strategy = \"rolling\"` in [env.{}] until \
                 the foundation is upgraded",
                env.name, api.0, api.1, api.2, CANARY_API.0, CANARY_API.1, CANARY_API.2, env.name
            )));
        }
        if plan.steps.is_empty() {
            return Ok(Vec::new());
        }
        match api {
            Some(api) if api < STEPS_API => {
                exec.ui().warn(&format!(
                    "the Cloud Controller of `{}` has API {}.{}.{}, older than {}.{}.{}, which \
                     takes canary steps: one canary instance, then all, not canary_steps {:?}",
                    env.name,
                    api.0,
                    api.1,
                    api.2,
                    STEPS_API.0,
                    STEPS_API.1,
                    STEPS_API.2,
                    plan.steps
                ));
                Ok(Vec::new())
            }
            _ => Ok(plan.steps.clone()),
        }
    }

    /// Where the canary is probed: the environment's `url`, else the app's route; empty when
    /// nothing answers yet (a first push).
    fn probe_url(&self, exec: &Exec, env: &Target, app: &str) -> String {
        if let Some(url) = &env.config.url {
            return url.clone();
        }
        let route = self
            .app_guid(exec, env, app)
            .and_then(|guid| self.first_route(exec, env, &guid))
            .unwrap_or_default();
        self.url(exec, env, app, &route)
    }

    /// What the stable version answers before the deployment, to compare the canary with.
    fn stable_sample(&self, exec: &Exec, url: &str, plan: &Plan) -> Result<Option<Sample>> {
        if url.is_empty() {
            return Ok(None);
        }
        exec.ui().note(&format!(
            "measuring the stable version at {url} for {} s",
            plan.window_secs
        ));
        let sample = canary::probe(exec, url, plan.window_secs)?;
        if let Some(sample) = &sample {
            exec.ui().note(&format!(
                "stable version: {}",
                canary::describe(sample, "probes")
            ));
        }
        Ok(sample)
    }

    /// `cf push` with the canary strategy, verified at each pause, then continued to the end or
    /// cancelled. `words` is the push command without a strategy.
    pub(super) fn push_canary(
        &self,
        exec: &Exec,
        release: &Release,
        env: &Target,
        mut words: Vec<String>,
        plan: &Plan,
    ) -> Result<()> {
        let steps = self.steps_taken(exec, env, plan)?;
        let url = self.probe_url(exec, env, release.app);
        let stable = self.stable_sample(exec, &url, plan)?;
        words.extend(args(&["--strategy", "canary"]));
        // Warned about in the preflight: this CLI has no --instance-steps.
        let old_cli = cli_version(exec).is_some_and(|v| v < STEPS_CLI);
        let steps = if old_cli { Vec::new() } else { steps };
        if !steps.is_empty() {
            let list: Vec<String> = steps.iter().map(u32::to_string).collect();
            words.extend(["--instance-steps".to_string(), list.join(",")]);
        }
        // cf returns once the canary pauses (or, for an app that ran nothing, once it runs).
        self.cf(exec, env, &words)?;
        let guid = self.app_guid(exec, env, release.app)?;
        let Some(deployment) = self.active_deployment(exec, env, &guid)? else {
            exec.ui().note(&format!(
                "no deployment of {} is active in `{}`: nothing served before, so there is no \
                 canary to verify",
                release.app, env.name
            ));
            return Ok(());
        };
        let url = match url.is_empty() {
            true => self.probe_url(exec, env, release.app),
            false => url,
        };
        self.run_canary(exec, release, env, &deployment, &url, plan, stable)
    }

    /// Before a promote's canary deployment: the steps the Cloud Controller takes (refused
    /// before anything changes when it has no canaries), where the canary will be probed, and
    /// what the stable version answers there.
    pub(super) fn before_canary(
        &self,
        exec: &Exec,
        env: &Target,
        app: &str,
        plan: &Plan,
    ) -> Result<Before> {
        let steps = self.steps_taken(exec, env, plan)?;
        let url = self.probe_url(exec, env, app);
        let stable = self.stable_sample(exec, &url, plan)?;
        Ok(Before { steps, url, stable })
    }

    /// The newest active deployment of the app, as `cf continue-deployment` finds it.
    fn active_deployment(&self, exec: &Exec, env: &Target, guid: &str) -> Result<Option<String>> {
        let path =
            format!("/v3/deployments?app_guids={guid}&status_values=ACTIVE&order_by=-created_at");
        let found = self.curl(exec, env, &[&path])?;
        if found.is_null() {
            return Ok(Some(exec.answer("", "DEPLOYMENT-GUID")));
        }
        Ok(found
            .get("resources")
            .and_then(Value::as_array)
            .and_then(|all| all.first())
            .map(|deployment| text_at(deployment, &["guid"])))
    }

    /// Verifies the paused canary `deployment` at each pause and continues it, to the end; a
    /// canary that fails its verification is cancelled, the stable version serves again, and
    /// this fails with the numbers.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run_canary(
        &self,
        exec: &Exec,
        release: &Release,
        env: &Target,
        deployment: &str,
        url: &str,
        plan: &Plan,
        stable: Option<Sample>,
    ) -> Result<()> {
        let stable = stable.unwrap_or_default();
        let path = format!("/v3/deployments/{deployment}");
        let mut pause = 0;
        let mut polls = 0;
        loop {
            let answer = self.curl(exec, env, &[&path])?;
            let value = text_at(&answer, &["status", "value"]);
            let reason = text_at(&answer, &["status", "reason"]);
            // A dry run, where nothing answers, shows one pause.
            let paused = answer.is_null() || (value == "ACTIVE" && reason == "PAUSED");
            match (value.as_str(), reason.as_str()) {
                ("FINALIZED", "DEPLOYED") => return Ok(()),
                ("FINALIZED", _) => bail!("the canary deployment {deployment} ended as {reason}"),
                _ if paused => {
                    pause += 1;
                    polls = 0;
                    if let Err(why) = self.verify(exec, release, env, url, plan, &stable, pause) {
                        let err = self.cancel(exec, release, env, deployment, why);
                        // Stopped while verifying (the probes or the e2e tier were stopped):
                        // cancelled all the same, and the run ends as interrupted.
                        if crate::signals::stop_requested() {
                            return Err(anyhow::Error::new(crate::error::Interrupted)
                                .context(format!("{err:#}")));
                        }
                        return Err(err);
                    }
                    self.cf(exec, env, &args(&["continue-deployment", release.app]))
                        .with_context(|| {
                            format!(
                                "the canary passed, but continuing it failed: it stays paused \
                                 (`cf continue-deployment {app}` or `cf cancel-deployment {app}` \
                                 in `{}`)",
                                env.name,
                                app = release.app
                            )
                        })?;
                    if answer.is_null() {
                        return Ok(());
                    }
                }
                _ => {
                    polls += 1;
                    if polls > POLLS {
                        bail!(
                            "the canary deployment {deployment} did not pause nor finish in time"
                        );
                    }
                    if crate::signals::stop_requested() {
                        return Err(anyhow::Error::new(crate::error::Interrupted));
                    }
                    std::thread::sleep(POLL_EVERY);
                }
            }
        }
    }

    /// One pause's verification: the probes' numbers against the stable version's, then the
    /// e2e tier; the error says what failed.
    #[allow(clippy::too_many_arguments)]
    fn verify(
        &self,
        exec: &Exec,
        release: &Release,
        env: &Target,
        url: &str,
        plan: &Plan,
        stable: &Sample,
        pause: u32,
    ) -> std::result::Result<(), String> {
        if url.is_empty() {
            return Err(format!(
                "cdflow cannot tell where `{}` answers, so it cannot verify the canary: set \
                 `url` in [env.{}]",
                env.name, env.name
            ));
        }
        exec.ui().note(&format!(
            "canary pause {pause} in `{}`: probing {url} for {} s",
            env.name, plan.window_secs
        ));
        let sample =
            canary::probe(exec, url, plan.window_secs).map_err(|err| format!("{err:#}"))?;
        if let Some(sample) = sample {
            let verdict = canary::judge(plan, stable, &sample, "probes");
            canary::report(exec, env.name, pause, (stable, &sample), &verdict, "probes");
            verdict?;
        }
        canary::e2e(exec, release, url)
    }

    /// Cancels the canary (the stable instances take the whole route again), waits for cf to
    /// say so, and returns the failure with what was done.
    fn cancel(
        &self,
        exec: &Exec,
        release: &Release,
        env: &Target,
        deployment: &str,
        why: String,
    ) -> anyhow::Error {
        // Run to its end even when cdflow is being stopped: a canary left paused would keep
        // its share of the route.
        let cancelled = exec
            .critical(|| self.cf(exec, env, &args(&["cancel-deployment", release.app])))
            .and_then(|_| {
                if crate::signals::stop_requested() {
                    // Stopping: cf finishes the cancel by itself; nothing more is waited for.
                    return Ok(String::new());
                }
                self.wait_for(exec, env, &format!("/v3/deployments/{deployment}"), |d| {
                    Ok(text_at(d, &["status", "value"]) == "FINALIZED")
                })?;
                let guid = self.app_guid(exec, env, release.app)?;
                self.check_running(exec, env, release.app, &guid)
            });
        match cancelled {
            // A stage failed (exit code 1), not bad input: in a release the bump is pushed
            // by now.
            Ok(_) => anyhow::anyhow!(
                "{why}\nthe canary deployment in `{}` was cancelled: the stable version serves \
                 again",
                env.name
            ),
            Err(err) => err.context(format!(
                "{why}\ncancelling the canary in `{}` failed too: run `cf cancel-deployment {}` \
                 there",
                env.name, release.app
            )),
        }
    }
}
