//! Runs a pipeline: every precondition checked before the first change, then the stages in
//! order with progress, a record written after each, locks held for the environments it
//! touches, and `--resume` picking up a run at the stage that did not finish.

use std::time::Instant;

use anyhow::{Context as _, Result};

use crate::app::App;
use crate::bump;
use crate::error::{user_error, Interrupted};
use crate::events::{self, Event};
use crate::exec::Exec;
use crate::facts::Facts;
use crate::lock::{self, Lock, Wait};
use crate::pipeline::{Pipeline, Stage};
use crate::record::{self, CommandRecord, RunRecord, StageRecord, Status};
use crate::repo_url::{self, RepoUrl};
use crate::settings::Settings;
use crate::stages::{self, Context};
use crate::state::State;
use crate::ui::Outcome;

/// Runs `pipeline` and returns its record.
pub fn run(
    exec: &Exec,
    state: &State,
    pipeline: &Pipeline,
    settings: &Settings,
) -> Result<RunRecord> {
    let clones = pipeline
        .stages
        .iter()
        .any(|s| matches!(s, Stage::Clone { .. }));
    let mut repo = RepoUrl::parse(&match (&settings.repo, clones) {
        (Some(repo), _) => repo.clone(),
        (None, true) => stages::default_repo(exec, settings.git_ref.is_none() && !settings.resume)?,
        (None, false) => exec.dir().display().to_string(),
    });
    // Before anything can print the URL: from here on its credentials are masked, and only
    // the URL without them is given to git or recorded.
    exec.ui().add_secret_values(repo.secrets());
    if clones {
        git_credentials(exec, &mut repo, settings.repo.is_some());
    }
    stages::check_repo_and_ref(repo.url(), settings.git_ref.as_deref())?;

    let mut record = None;
    if settings.resume {
        record = record::unfinished(state, &pipeline.name, repo.url())?;
        if let Some(why) = record.as_ref().and_then(|r| r.dead_end.as_ref()) {
            return Err(user_error(format!(
                "run {} cannot be resumed: {why}",
                record.as_ref().map(|r| r.id.as_str()).unwrap_or_default()
            )));
        }
        if let Some(holder) = record.as_ref().and_then(|r| r.holder) {
            if holder.alive() {
                return Err(user_error(format!(
                    "run {} is still running (process {}): wait for it, or stop it first",
                    record.as_ref().map(|r| r.id.as_str()).unwrap_or_default(),
                    holder.pid
                )));
            }
        }
        match &record {
            Some(found) => exec.ui().note(&format!(
                "resuming run {} of `{}` (stopped in `{}`)",
                found.id,
                pipeline.name,
                found.stopped_in.as_deref().unwrap_or("?")
            )),
            None => {
                return Err(user_error(format!(
                    "there is no unfinished run of `{}` from {} to resume",
                    pipeline.name,
                    repo.url()
                )))
            }
        }
    }
    let mut record = record
        .unwrap_or_else(|| RunRecord::new(&pipeline.name, repo.url(), settings.git_ref.as_deref()));
    record.status = Status::Running;
    record.stopped_in = None;
    record.holder = crate::process::Process::current();
    record.resume_with = Some(exec.ui().mask(&resume_command(pipeline)));
    // Saved before the first stage, so that a run killed inside it is in `history` too.
    record.save(exec, state)?;
    record::prune(exec, state, settings.runs_kept(), &record.id)?;
    exec.keep_logs_in(&record.logs(state));
    exec.ui().set_run(&record.id);
    if exec.ui().is_json() {
        exec.ui().emit(Event::RunStarted {
            pipeline: pipeline.name.clone(),
            app: record.app.clone(),
            dry_run: exec.is_dry_run(),
        });
    }

    let mut ctx = Context {
        exec,
        state,
        settings,
        repo,
        facts: None,
        record,
        scratch: None,
    };
    if !clones {
        ctx.facts = Some(Facts::gather(exec, &exec.dir())?);
    }
    let mut locks: Vec<Lock> = Vec::new();
    let mut checked = false;
    let total = pipeline.stages.len();
    for (index, stage) in pipeline.stages.iter().enumerate() {
        let index = index + 1;
        let name = stage.name();
        if let (Some(facts), false) = (&ctx.facts, checked) {
            let app = &facts.app;
            exec.ui().add_secrets(&app.secret_names());
            // A dry run changes nothing, so it takes no lock.
            let checks = preflight(&ctx, pipeline).and_then(|()| {
                locks = exec
                    .for_real(|| take_locks(&ctx, pipeline))?
                    .unwrap_or_default();
                Ok(())
            });
            if let Err(err) = checks {
                // Refused before the stage started: the record says so, rather than "running"
                // for ever.
                ctx.record.status = Status::Failed;
                ctx.record.stopped_in = Some(name.clone());
                ctx.record.finished = Some(crate::ui::timestamp());
                ctx.record.save(exec, state)?;
                return Err(err);
            }
            checked = true;
        }
        let resumed_past = ctx.record.passed(&name) && !matches!(stage, Stage::Clone { .. });
        if resumed_past {
            exec.ui()
                .stage_finished(index, total, &name, Outcome::Skipped, Default::default());
            continue;
        }
        exec.ui().stage_started(index, total, &name);
        let started = Instant::now();
        let commands_before = exec.records().len();
        let result = stages::run(&mut ctx, stage);
        let took = started.elapsed();
        let interrupted = result
            .as_ref()
            .err()
            .is_some_and(|e| e.chain().any(|c| c.is::<Interrupted>()))
            || crate::signals::stop_requested();
        let status = match (&result, interrupted) {
            (_, true) => Status::Interrupted,
            (Ok(()), false) => Status::Succeeded,
            (Err(_), false) => Status::Failed,
        };
        let outcome = match status {
            Status::Succeeded => Outcome::Passed,
            Status::Interrupted => Outcome::Interrupted,
            _ => Outcome::Failed,
        };
        exec.ui().stage_finished(index, total, &name, outcome, took);
        ctx.record.stages.retain(|s| s.name != name);
        ctx.record.stages.push(StageRecord {
            name: name.clone(),
            status,
            seconds: took.as_secs_f64(),
            commands: exec.records()[commands_before..]
                .iter()
                .map(|r| CommandRecord {
                    command: r.command.clone(),
                    status: r.status,
                })
                .collect(),
            error: result
                .as_ref()
                .err()
                .map(|e| exec.ui().mask(&format!("{e:#}"))),
        });
        if ctx.facts.is_some() && ctx.record.app.is_none() {
            ctx.record.app = ctx.facts.as_ref().map(|f| f.app.name.clone());
        }
        if status != Status::Succeeded {
            ctx.record.status = status;
            ctx.record.stopped_in = Some(name.clone());
            ctx.record.finished = Some(crate::ui::timestamp());
            ctx.record.save(exec, state)?;
            drop(locks);
            let err = match result {
                Err(err) => err,
                Ok(()) => anyhow::Error::new(Interrupted),
            };
            let err = if interrupted && !err.chain().any(|c| c.is::<Interrupted>()) {
                err.context(Interrupted)
            } else {
                err
            };
            let what = if interrupted {
                "was interrupted"
            } else {
                "failed"
            };
            let next = match &ctx.record.dead_end {
                Some(_) => String::new(),
                None if pipeline.resumable() => format!(
                    "; `{}` continues from there",
                    ctx.record.resume_with.as_deref().unwrap_or_default()
                ),
                None => format!(
                    "; fix it and run `{}` again",
                    ctx.record.resume_with.as_deref().unwrap_or_default()
                ),
            };
            return Err(err.context(format!(
                "stage `{name}` of `{}` {what}{next}",
                pipeline.name
            )));
        }
        ctx.record.save(exec, state)?;
    }
    ctx.record.status = Status::Succeeded;
    ctx.record.finished = Some(crate::ui::timestamp());
    ctx.record.save(exec, state)?;
    summary(exec, &ctx.record);
    drop(locks);
    Ok(ctx.record)
}

/// Gives git the token of `CDFLOW_GIT_TOKEN` for a run that clones (and so pushes back), and
/// says when credentials come in a way that exposes them (in `--repo`) or are not used.
fn git_credentials(exec: &Exec, repo: &mut RepoUrl, from_command_line: bool) {
    let in_url = repo.source() == repo_url::Source::Url;
    let Some(token) = repo_url::env_token() else {
        if in_url && from_command_line {
            exec.ui().warn(&format!(
                "warning: --repo carries credentials, and so they are on cdflow's command line \
                 (seen by `ps`, kept in shell histories and CI logs of the command); put the \
                 token in {} instead and give the URL without it (see docs/ci.md)",
                repo_url::TOKEN_VAR
            ));
        }
        return;
    };
    if !repo.use_env_token(token) {
        exec.ui().note(&format!(
            "{} is set, but {} is not an http(s) URL: git reaches it without the token",
            repo_url::TOKEN_VAR,
            repo.url()
        ));
    } else if in_url {
        exec.ui().note(&format!(
            "the credentials in the repository URL are not used: {} gives the token",
            repo_url::TOKEN_VAR
        ));
    }
}

/// The command that continues a run: cdflow's own arguments, as typed, with `--resume` added
/// for a pipeline that can be resumed. Quoted for a shell, so that it can be pasted as it is
/// (a stage name such as `promote staging -> production` never reaches a shell unquoted).
fn resume_command(pipeline: &Pipeline) -> String {
    let mut words: Vec<String> = std::env::args().skip(1).collect();
    if pipeline.resumable() && !words.iter().any(|w| w == "--resume") {
        words.push("--resume".into());
    }
    std::iter::once("cdflow".to_string())
        .chain(words.iter().map(|w| crate::exec::quote(w)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every precondition, checked before the first change; all problems reported at once.
fn preflight(ctx: &Context, pipeline: &Pipeline) -> Result<()> {
    let app = ctx.app()?;
    let mut problems: Vec<String> = Vec::new();
    let known: Vec<&str> = app.envs.keys().map(String::as_str).collect();
    if let Err(err) = pipeline.check_environments(&known) {
        problems.push(err.to_string());
    }
    let mut used_envs: Vec<&str> = Vec::new();
    for stage in &pipeline.stages {
        for (_, env) in stage.environments() {
            if known.contains(&env) && !used_envs.contains(&env) {
                used_envs.push(env);
            }
        }
    }
    for env in &used_envs {
        let target = app.target(env)?;
        match ctx.facts()?.manifest(env) {
            Ok(manifest) => {
                let platform = crate::platform::for_env(ctx.state, &target);
                let origin = &ctx.facts()?.origin;
                problems.extend(platform.preflight(ctx.exec, &app.name, origin, &target, manifest));
            }
            Err(err) => problems.push(format!("[env.{env}]: {err}")),
        }
    }
    let secret_names = app.secret_names();
    problems.extend(crate::secrets::too_short(
        secret_names.iter().map(String::as_str),
    ));
    let config = &app.loaded.config;
    for stage in &pipeline.stages {
        match stage {
            Stage::Test { tiers: only, .. } => {
                if config.test.is_empty() {
                    problems.push(
                        "cdflow.toml defines no test tiers: add a [test] section (see the README)"
                            .into(),
                    );
                }
                let chosen = config
                    .test
                    .iter()
                    .filter(|(name, _)| only.as_ref().is_none_or(|only| only.contains(name)));
                for (name, command) in chosen {
                    problems.extend(tool_problem(
                        app,
                        &format!("cdflow.toml [test] {name}"),
                        command,
                    ));
                }
            }
            Stage::E2e { against, .. } => {
                match &config.e2e {
                    None => problems.push("cdflow.toml has no [e2e] command".into()),
                    Some(e2e) => problems.extend(tool_problem(
                        app,
                        "cdflow.toml [e2e] command",
                        &e2e.command,
                    )),
                }
                problems.extend(url_problem(
                    ctx,
                    app,
                    against,
                    &format!("the e2e tests against `{against}` have"),
                ));
            }
            Stage::Bump { part, .. } => {
                // A resumed version step is reconciled with what it left, not checked afresh.
                if ctx.record.intent.is_none() {
                    problems.extend(bump_problems(ctx, app, part.as_deref()));
                }
            }
            Stage::Run { command, .. } => problems.extend(tool_problem(
                app,
                &format!("stage `{}`", stage.name()),
                command,
            )),
            Stage::Bench { against, .. } => problems.extend(url_problem(
                ctx,
                app,
                against,
                &format!("the bench against `{against}` has"),
            )),
            Stage::Clone { .. } | Stage::Push { .. } | Stage::Promote { .. } => {}
        }
    }
    // Environments that share a problem (the same CLI, the same secret) report it once.
    let mut seen = std::collections::HashSet::new();
    problems.retain(|problem| seen.insert(problem.clone()));
    if problems.is_empty() {
        return Ok(());
    }
    Err(user_error(format!(
        "the run cannot start; nothing was changed:\n- {}",
        problems.join("\n- ")
    )))
}

/// Why the e2e tests or a bench against `env` would have no URL to run against: both platforms
/// give the app's route, unless the manifest says `no-route` and cdflow.toml gives no `url`.
/// `subject` says who has no URL.
fn url_problem(ctx: &Context, app: &App, env: &str, subject: &str) -> Option<String> {
    let target = app.target(env).ok()?;
    if target.config.url.is_some() {
        return None;
    }
    let manifest = ctx.facts().ok()?.manifest(env).ok()?;
    let routeless = manifest
        .applications
        .iter()
        .find(|a| a.name == app.name)
        .is_some_and(|a| a.no_route == Some(true));
    routeless.then(|| {
        format!(
            "{subject} no URL: its manifest says `no-route`; set `url` in [env.{env}] of \
             cdflow.toml"
        )
    })
}

/// A command whose program cannot be started, named by where it is written, with the fix.
fn tool_problem(app: &App, written_in: &str, command: &str) -> Option<String> {
    let program = crate::tools::program_of(command)?;
    crate::tools::missing(&program, &app.dir).map(|why| format!("{written_in}: {why}"))
}

/// The bump's own checks (version going up, files agreeing, tag free, tree clean, branch not
/// behind), early.
fn bump_problems(ctx: &Context, app: &App, part: Option<&str>) -> Vec<String> {
    let checked = bump::read_version(&app.dir, &app.loaded).and_then(|facts| {
        let options = stages::bump_options(ctx.settings, part)?;
        bump::check(ctx.exec, &facts, &options)
    });
    let mut problems: Vec<String> = checked
        .err()
        .map(|e| format!("{e:#}"))
        .into_iter()
        .collect();
    // The version commit goes back to a branch: a checkout of a tag or a commit has none.
    let on_branch = ctx
        .exec
        .check(xshell::cmd!(ctx.exec.sh(), "git symbolic-ref -q HEAD"));
    if let Some(commit) = ctx
        .record
        .git_ref
        .as_deref()
        .filter(|r| stages::is_commit_id(r))
    {
        problems.extend(branch_moved(ctx, commit));
    }
    if !on_branch.unwrap_or(false) {
        problems.push(
            "the checkout is not on a branch (--ref named a tag or a commit): a release pushes \
             its version commit to a branch; give --ref a branch"
                .into(),
        );
    }
    problems
}

/// With a commit id as --ref, why its version commit could not go to its branch: the branch
/// moved past the tested commit, or never held it.
fn branch_moved(ctx: &Context, commit: &str) -> Option<String> {
    let exec = ctx.exec;
    let branch = exec
        .query(xshell::cmd!(exec.sh(), "git symbolic-ref --short HEAD"))
        .ok()?;
    let remote = format!("refs/remotes/origin/{branch}");
    let Ok(head) = exec.query(xshell::cmd!(exec.sh(), "git rev-parse {remote}")) else {
        return Some(format!(
            "origin has no branch `{branch}` to push the version of {commit} to: give --branch"
        ));
    };
    if head == commit {
        return None;
    }
    let holds = exec
        .check(xshell::cmd!(
            exec.sh(),
            "git merge-base --is-ancestor {commit} {head}"
        ))
        .unwrap_or(false);
    if !holds {
        return Some(format!(
            "the commit {commit} is not on `{branch}` (its head is {head}): release a commit of \
             that branch, or give --branch"
        ));
    }
    let range = format!("{commit}..{head}");
    let moved = exec
        .query(xshell::cmd!(exec.sh(), "git rev-list --count {range}"))
        .unwrap_or_default();
    Some(format!(
        "`{branch}` moved {moved} commit(s) past the commit to release, {commit}, to {head}: its \
         version commit could not be pushed there; release the branch's head (test it first)"
    ))
}

/// The lock of an app's environment, held by whatever changes what serves it.
pub fn lock_path(state: &State, app: &str, env: &str) -> std::path::PathBuf {
    state.locks().join(format!("{app}-{env}.lock"))
}

/// One lock per app and environment, so that two runs never deploy to one environment at once.
fn take_locks(ctx: &Context, pipeline: &Pipeline) -> Result<Vec<Lock>> {
    let app = ctx.app()?;
    let mut envs: Vec<&str> = pipeline
        .stages
        .iter()
        .flat_map(|s| s.environments().into_iter().map(|(_, env)| env))
        .collect();
    envs.sort();
    envs.dedup();
    let wait = if ctx.settings.lock_wait {
        Wait::Yes
    } else {
        Wait::No
    };
    let holder = format!(
        "run {} of `{}` for {}",
        ctx.record.id, pipeline.name, app.name
    );
    envs.into_iter()
        .map(|env| {
            let path = lock_path(ctx.state, &app.name, env);
            lock::acquire(ctx.exec.ui(), &path, &format!("{holder} on {env}"), wait)
                .with_context(|| format!("the environment `{env}` is busy"))
        })
        .collect()
}

fn summary(exec: &Exec, record: &RunRecord) {
    let ui = exec.ui();
    if exec.is_dry_run() {
        ui.note("dry run: nothing was changed");
        return;
    }
    if ui.is_json() {
        ui.emit(Event::Summary {
            pipeline: record.pipeline.clone(),
            version: record.version.clone(),
            deployments: record
                .deployments
                .iter()
                .map(|d| events::Deployment {
                    env: d.env.clone(),
                    platform: d.platform.clone(),
                    version: d.version.clone(),
                    url: d.url.clone(),
                    artifact: d.artifact.clone(),
                })
                .collect(),
            stages: record
                .stages
                .iter()
                .map(|s| events::StageTime {
                    stage: s.name.clone(),
                    seconds: s.seconds,
                })
                .collect(),
        });
        return;
    }
    // The run's version is the one it bumped to; a run without a bump (`cdflow push`, the
    // `staging` pipeline) still deployed a version, which is the one to tell.
    let mut versions: Vec<&str> = Vec::new();
    match &record.version {
        Some(version) => versions.push(version),
        None => {
            for deployment in &record.deployments {
                if !versions.contains(&deployment.version.as_str()) {
                    versions.push(&deployment.version);
                }
            }
        }
    }
    if versions.is_empty() {
        ui.note(&format!("`{}` succeeded", record.pipeline));
    } else {
        ui.note(&format!(
            "`{}` succeeded: version {}",
            record.pipeline,
            versions.join(", ")
        ));
    }
    for deployment in &record.deployments {
        ui.note(&format!(
            "  {:<12} {}  ({} {})",
            deployment.env, deployment.url, deployment.version, deployment.artifact
        ));
    }
    for stage in &record.stages {
        ui.note(&format!("  {:<32} {:>7.1}s", stage.name, stage.seconds));
    }
}

/// `cdflow history`: one line per run, oldest first.
pub fn history(exec: &Exec, state: &State) -> Result<()> {
    let records = record::all(state)?;
    if records.is_empty() {
        exec.ui()
            .note(&format!("no runs recorded in {}", state.runs().display()));
        return Ok(());
    }
    for r in records {
        let seconds: f64 = r.stages.iter().map(|s| s.seconds).sum();
        if exec.ui().is_json() {
            exec.ui().emit(Event::HistoryRow {
                id: r.id.clone(),
                started: r.started.clone(),
                pipeline: r.pipeline.clone(),
                app: r.app.clone(),
                version: r.version.clone(),
                status: r.run_status(),
                seconds,
                stopped_in: r.stopped_in.clone(),
                resume_with: r.resume_with.clone(),
                bench: (!r.bench.is_empty()).then(|| r.bench.clone()),
            });
            continue;
        }
        exec.ui().note(&format!(
            "{}  {}  {:<10} {:<14} {:<12} {:<11} {:>7.1}s{}",
            r.id,
            r.started,
            r.pipeline,
            r.app.as_deref().unwrap_or("-"),
            r.version.as_deref().unwrap_or("-"),
            r.shown_status(),
            seconds,
            r.stopped_in
                .as_ref()
                .map(|s| format!("  (stopped in `{s}`)"))
                .unwrap_or_default()
        ));
        for bench in &r.bench {
            exec.ui().note(&format!(
                "    {}: {}{}",
                bench.stage,
                crate::bench::numbers_of(bench),
                match &bench.baseline {
                    Some(base) => format!(
                        "; against run {}: {}",
                        base.run,
                        if bench.passed { "passed" } else { "failed" }
                    ),
                    None => " (first numbers)".into(),
                }
            ));
        }
        if let (true, Some(resume)) = (r.shown_status() == "abandoned", &r.resume_with) {
            exec.ui()
                .note(&format!("    its process died; `{resume}` finishes it"));
        }
    }
    Ok(())
}
