//! One plain function per stage kind, and the one exhaustive `match` that calls them.
//! Every stage can also be run alone (`cdflow test`, `cdflow push`, `cdflow e2e`,
//! `cdflow promote`): those are one-stage pipelines.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use xshell::cmd;

use crate::app::App;
use crate::app_manifest::Resolved;
use crate::bench;
use crate::bump;
use crate::env_record;
use crate::error::user_error;
use crate::events;
use crate::exec::Exec;
use crate::facts::Facts;
use crate::git;
use crate::pipeline::Stage;
use crate::platform::{self, Deployment, E2e, Release, Target};
use crate::record::{RunRecord, StepState, VersionIntent};
use crate::releases;
use crate::repo_url::RepoUrl;
use crate::settings::Settings;
use crate::state::State;
use crate::version::Bump;

/// What the stages of one run share.
pub struct Context<'a> {
    pub exec: &'a Exec,
    pub state: &'a State,
    pub settings: &'a Settings,
    /// The repository the run clones and pushes the version back to.
    pub repo: RepoUrl,
    /// What the checkout says, once there is one: gathered after the clone, and again after
    /// the bump changed it.
    pub facts: Option<Facts>,
    pub record: RunRecord,
    /// A dry run's throwaway clone, read for facts only and removed at the end.
    pub scratch: Option<Scratch>,
}

impl Context<'_> {
    pub fn app(&self) -> Result<&App> {
        Ok(&facts_of(&self.facts)?.app)
    }

    pub fn facts(&self) -> Result<&Facts> {
        facts_of(&self.facts)
    }

    /// The version being delivered: the one this run bumped to, else the checkout's.
    fn version(&self) -> Result<String> {
        if let Some(version) = &self.record.version {
            return Ok(version.clone());
        }
        Ok(self.facts()?.version()?.to_string())
    }
}

/// A folder removed when dropped.
pub struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one stage.
pub fn run(ctx: &mut Context, stage: &Stage) -> Result<()> {
    match stage {
        Stage::Clone { .. } => clone(ctx),
        Stage::Test { tiers, .. } => test(ctx, tiers.as_deref()),
        Stage::Bump { part, .. } => bump_stage(ctx, part.as_deref()),
        Stage::Push { to, .. } => push(ctx, to),
        Stage::E2e { against, .. } => e2e(ctx, against),
        Stage::Promote { from, to, .. } => promote(ctx, from, to),
        Stage::Run { command, env, .. } => {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            run_words(ctx.exec, command, &env)
        }
        Stage::Bench { .. } => bench(ctx, &bench::Plan::of(stage).expect("a bench stage")),
    }
}

/// Refuses repository URLs and refs that git would read as options or as a command to run.
pub fn check_repo_and_ref(repo: &str, git_ref: Option<&str>) -> Result<()> {
    if repo.starts_with('-') || repo.contains("::") || repo.starts_with("fd:") {
        return Err(user_error(format!(
            "the repository `{repo}` is refused: it would be read as an option or a transport \
             that runs a command; give a URL (https://, ssh://, git@host:path, file://) or a path"
        )));
    }
    if let Some(git_ref) = git_ref {
        if git_ref.starts_with('-') || git_ref.contains("..") || git_ref.is_empty() {
            return Err(user_error(format!(
                "the ref `{git_ref}` is refused: give a branch, a tag or a full commit id"
            )));
        }
    }
    Ok(())
}

/// Whether a ref is a full commit id (SHA-1 or SHA-256), which a clone cannot take as
/// `--branch`: it is checked out after the clone, on the branch the version goes to.
pub fn is_commit_id(git_ref: &str) -> bool {
    matches!(git_ref.len(), 40 | 64) && git_ref.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The repository a release clones by default: the current one's `origin`, else its folder.
pub fn default_repo(exec: &Exec, releases_checkout: bool) -> Result<String> {
    if !git::is_repository(exec)? {
        return Err(user_error(format!(
            "{} is not in a git repository: pass --repo URL to say what to release",
            exec.dir().display()
        )));
    }
    if let Ok(url) = exec.query(cmd!(exec.sh(), "git remote get-url origin")) {
        // The release clones origin: commits only this checkout has would silently not be
        // released. (Not a question when --ref names what to release, or on a resume.)
        let ahead = match releases_checkout {
            true => git::ahead_of_upstream(exec)?,
            false => None,
        };
        if let Some(ahead) = ahead.filter(|&n| n > 0) {
            return Err(user_error(format!(
                "this checkout has {ahead} commit(s) that origin does not: a release clones \
                 origin, so they would not be released; push them first (git push), or pass \
                 --repo to say what to release"
            )));
        }
        return Ok(url);
    }
    exec.query(cmd!(exec.sh(), "git rev-parse --show-toplevel"))
}

fn clone(ctx: &mut Context) -> Result<()> {
    let exec = ctx.exec;
    let repo = ctx.repo.url();
    let (auth_options, auth_env) = ctx.repo.git_auth();
    let auth = &auth_options;
    let auth_env: Vec<(&str, &str)> = auth_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let git_ref = ctx.record.git_ref.clone();
    check_repo_and_ref(repo, git_ref.as_deref())?;
    let workspace = ctx.state.workspaces().join(&ctx.record.id);
    let commit = git_ref.clone().filter(|r| is_commit_id(r));
    let branch_args: &[String] = &match &git_ref {
        Some(git_ref) if commit.is_none() => vec!["--branch".into(), git_ref.clone()],
        _ => Vec::new(),
    };
    // A resumed run goes on in the workspace its clone finished; one the run was stopped in
    // the middle of cloning is made again.
    let reusing =
        ctx.record.workspace.as_ref() == Some(&workspace) && workspace.join(".git").is_dir();
    if ctx.record.intent.is_some() && !reusing {
        // A fresh clone would not hold the version step's commit and tag.
        return Err(user_error(format!(
            "the workspace {} of run {}, which made its version commit, is gone: the release \
             cannot be finished safely; start a new one (without --resume)",
            workspace.display(),
            ctx.record.id
        )));
    }
    if reusing {
        exec.ui()
            .note(&format!("reusing the workspace {}", workspace.display()));
    } else {
        if workspace.exists() {
            exec.ui().note(&format!(
                "removing {}, a clone the stopped run did not finish",
                workspace.display()
            ));
            exec.for_real(|| {
                std::fs::remove_dir_all(&workspace)
                    .with_context(|| format!("could not remove {}", workspace.display()))
            })?;
        }
        exec.create_dir_all(&ctx.state.workspaces())?;
        exec.run_with_env(
            cmd!(
                exec.sh(),
                "git {auth...} clone --quiet --recursive {branch_args...} -- {repo} {workspace}"
            ),
            &auth_env,
        )
        .map_err(|err| ctx.repo.explain(err))?;
    }
    let checkout = workspace.clone();
    if exec.is_dry_run() && !workspace.exists() {
        // Nothing was cloned, but later stages need facts from a checkout (the app's
        // settings, its version): a throwaway clone stands in at the very path a real run
        // uses, so that the commands printed are exactly those a real run would execute.
        exec.query(
            cmd!(
                exec.sh(),
                "git {auth...} clone --quiet {branch_args...} -- {repo} {workspace}"
            )
            .envs(auth_env.iter().copied()),
        )
        .map_err(|err| ctx.repo.explain(err))?;
        ctx.scratch = Some(Scratch(workspace.clone()));
    }
    exec.set_dir(&checkout);
    if let (Some(commit), false) = (&commit, reusing) {
        // The very commit CI tested, on the branch its version commit will go to, with its
        // own submodules.
        let branch = match &ctx.settings.branch {
            Some(branch) => branch.clone(),
            None => default_branch(exec)?,
        };
        exec.run(cmd!(exec.sh(), "git checkout -q -B {branch} {commit}"))?;
        exec.run_with_env(
            cmd!(
                exec.sh(),
                "git {auth...} submodule update -q --init --recursive"
            ),
            &auth_env,
        )
        .map_err(|err| ctx.repo.explain(err))?;
        if ctx.scratch.is_some() {
            // A dry run's throwaway clone follows too, so that its facts are the commit's.
            exec.query(cmd!(exec.sh(), "git checkout -q -B {branch} {commit}"))?;
        }
    }
    ctx.record.workspace = Some(workspace);
    ctx.facts = Some(Facts::gather(exec, &checkout)?);
    Ok(())
}

/// The branch origin's HEAD names: the repository's default branch.
fn default_branch(exec: &Exec) -> Result<String> {
    let head = exec
        .query(cmd!(
            exec.sh(),
            "git symbolic-ref --short refs/remotes/origin/HEAD"
        ))
        .map_err(|_| {
            user_error("origin names no default branch: pass --branch with a commit id as --ref")
        })?;
    Ok(head.trim_start_matches("origin/").to_string())
}

/// Environment for the commands that build a Rust app: its shared cargo target folder.
pub fn build_env(state: &State, app: &App) -> Vec<(String, String)> {
    if !app.dir.join("Cargo.toml").is_file() {
        return Vec::new();
    }
    let target = state.cargo_target(&app.name);
    vec![("CARGO_TARGET_DIR".into(), target.display().to_string())]
}

fn test(ctx: &mut Context, only: Option<&[String]>) -> Result<()> {
    let app = ctx.app()?;
    let tiers = &app.loaded.config.test;
    if tiers.is_empty() {
        return Err(user_error(
            "cdflow.toml defines no test tiers: add them in order, such as\n\n[test]\nunit = \
             \"cargo test --lib --bins\"\nservice = \"cargo test --test service\"",
        ));
    }
    if let Some(only) = only {
        for name in only {
            if !tiers.contains_key(name) {
                return Err(user_error(format!(
                    "there is no test tier `{name}`: cdflow.toml defines {}",
                    tiers.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    let env = build_env(ctx.state, app);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for (name, command) in tiers {
        if only.is_some_and(|only| !only.contains(name)) {
            continue;
        }
        ctx.exec.ui().note(&format!("test tier `{name}`"));
        run_words(ctx.exec, command, &env)
            .with_context(|| format!("the test tier `{name}` failed"))?;
    }
    Ok(())
}

/// Runs a command written as a string in cdflow.toml or a pipeline, split into words as a
/// POSIX shell would (quotes respected) but run without one.
pub fn run_words(exec: &Exec, command: &str, env: &[(&str, &str)]) -> Result<()> {
    let words = shlex::split(command)
        .filter(|w| !w.is_empty())
        .ok_or_else(|| user_error(format!("`{command}` is not a command: check its quotes")))?;
    let (program, args) = words.split_first().expect("not empty");
    exec.run_with_env(exec.sh().cmd(program).args(args), env)?;
    Ok(())
}

/// What a release's bump does: the stage's part unless `--part` says otherwise, committed and
/// tagged, from a clean tree.
pub fn bump_options(settings: &Settings, part: Option<&str>) -> Result<bump::Options> {
    let part = match (&settings.part, part) {
        (Some(part), _) => part.clone(),
        (None, Some(part)) => part.parse()?,
        (None, None) => Bump::Patch,
    };
    Ok(bump::Options {
        bump: part,
        commit: true,
        tag: true,
        allow_dirty: false,
        message: None,
    })
}

fn bump_stage(ctx: &mut Context, part: Option<&str>) -> Result<()> {
    let exec = ctx.exec;
    if let Some(version) = &ctx.record.version {
        exec.ui().note(&format!(
            "version {version} was committed and tagged by this run already"
        ));
    } else {
        let intent = match ctx.record.intent.clone() {
            Some(intent) => {
                reconcile_version(ctx, &intent)?;
                intent
            }
            None => {
                let app = ctx.app()?;
                let facts = bump::read_version(&app.dir, &app.loaded)?;
                let options = bump_options(ctx.settings, part)?;
                let new = bump::check(exec, &facts, &options)?;
                let intent = VersionIntent {
                    old: facts.current.to_string(),
                    new: new.to_string(),
                    tag: facts.tag_name(&new),
                    message: facts.commit_message(&options, &new),
                    base: git::head(exec)?.unwrap_or_default(),
                };
                // Write-ahead: from here on, whatever instant the run is killed at, a resumed
                // run finishes this very version and never makes a second one.
                ctx.record.intent = Some(intent.clone());
                save(ctx)?;
                make_version(ctx, &intent)?;
                intent
            }
        };
        ctx.record.version = Some(intent.new.clone());
        save(ctx)?;
        // The version is in every file now: what the stages after this one deploy.
        ctx.facts = Some(Facts::gather(exec, &exec.dir())?);
    }
    if !ctx.record.pushed_back {
        let step = "push the version commit and tag to origin";
        // push_back also writes the record (a refusal ends the run for good): the journal's
        // two lines are written around it by hand.
        ctx.record.journal(step, StepState::Intended);
        save(ctx)?;
        push_back(ctx)?;
        ctx.record.journal(step, StepState::Done);
        save(ctx)?;
        ctx.record.pushed_back = true;
    }
    Ok(())
}

/// Saves the run record, so that a kill from here on finds it (nothing in a dry run).
fn save(ctx: &Context) -> Result<()> {
    save_record(ctx.exec, ctx.state, &ctx.record)
}

fn save_record(exec: &Exec, state: &State, record: &RunRecord) -> Result<()> {
    record.save(exec, state)
}

/// Runs `body`, a step that changes something outside cdflow, with the run's journal saying
/// before it starts that it is about to happen and after it that it did. The record is passed
/// apart from the context so that `body` can borrow the rest of it.
fn journaled<T>(
    exec: &Exec,
    state: &State,
    record: &mut RunRecord,
    step: &str,
    body: impl FnOnce() -> Result<T>,
) -> Result<T> {
    record.journal(step, StepState::Intended);
    save_record(exec, state, record)?;
    let value = body()?;
    record.journal(step, StepState::Done);
    save_record(exec, state, record)?;
    Ok(value)
}

/// The facts of a run, borrowed apart from its record (which the journal writes meanwhile).
fn facts_of(facts: &Option<Facts>) -> Result<&Facts> {
    facts
        .as_ref()
        .context("no checkout to read the app from: the pipeline needs a `clone` stage first")
}

/// The planned version's files, commit and tag, all or nothing (`bump::bump`).
fn make_version(ctx: &mut Context, intent: &VersionIntent) -> Result<()> {
    let app = ctx.app()?;
    let facts = bump::read_version(&app.dir, &app.loaded)?;
    let options = bump::Options {
        bump: Bump::Exact(intent.new.parse()?),
        ..bump_options(ctx.settings, None)?
    };
    let step = format!("commit and tag version {}", intent.new);
    let exec = ctx.exec;
    journaled(exec, ctx.state, &mut ctx.record, &step, || {
        bump::bump(exec, &facts, &options)
    })?;
    Ok(())
}

/// After a run was stopped inside its version step, finds what the step left in the workspace
/// and finishes it: a tag of the intended version is adopted, a version commit with no tag gets
/// its tag, and a commit that never happened is made, from the files as they were. Never a
/// second version.
fn reconcile_version(ctx: &mut Context, intent: &VersionIntent) -> Result<()> {
    let exec = ctx.exec;
    let own_workspace = ctx.record.workspace.as_deref() == Some(exec.dir().as_path());
    if own_workspace {
        exec.for_real(|| git::remove_stale_locks(exec))?;
    }
    let head = git::head(exec)?.unwrap_or_default();
    let mismatch = |what: &str| {
        user_error(format!(
            "the workspace {} is not as the stopped run left it ({what}); its version {} \
             cannot be finished safely: check it with git, or start a new release without \
             --resume",
            exec.dir().display(),
            intent.new
        ))
    };
    if git::tag_exists(exec, &intent.tag)? {
        let tagged = git::commit_of(exec, &intent.tag)?;
        if git::parent(exec, &tagged)?.as_deref() != Some(intent.base.as_str()) {
            return Err(mismatch(&format!(
                "the tag {} is not on a commit made on {}",
                intent.tag, intent.base
            )));
        }
        if head != tagged {
            return Err(mismatch(&format!("HEAD is not the tag {}", intent.tag)));
        }
        exec.ui().note(&format!(
            "version {} was committed and tagged before the run stopped: adopted",
            intent.new
        ));
        return Ok(());
    }
    if head != intent.base {
        let is_version_commit = git::parent(exec, &head)?.as_deref() == Some(intent.base.as_str())
            // The subject line: a commit-msg hook may add trailers (a Change-Id, say).
            && git::message(exec, &head)?.lines().next() == intent.message.lines().next();
        if !is_version_commit {
            return Err(mismatch(
                "HEAD is neither the release's base nor its version commit",
            ));
        }
        exec.ui().note(&format!(
            "the version commit of {} was made before the run stopped: adopted, and tagged now",
            intent.new
        ));
        let step = format!("tag version {}", intent.new);
        return journaled(exec, ctx.state, &mut ctx.record, &step, || {
            git::tag_annotated(exec, &intent.tag, &intent.message)
        });
    }
    // The commit never happened. What the stopped bump wrote is put back first; only the
    // run's own clone is reset, a checkout of the user's is left for the user to look at.
    if !git::dirty_files(exec)?.is_empty() {
        if !own_workspace {
            return Err(mismatch(
                "uncommitted changes, left by the stopped bump or by hand",
            ));
        }
        git::reset_hard(exec, &intent.base)?;
        // The facts were read from the half-bumped files: read them again.
        ctx.facts = Some(Facts::gather(exec, &exec.dir())?);
    }
    exec.ui().note(&format!(
        "the version commit of {} was not made before the run stopped: making it now",
        intent.new
    ));
    make_version(ctx, intent)
}

/// The version commit and tag go back to the repository, together or not at all, before
/// anything is deployed: a version number is never used twice. A push-back that already
/// reached origin (the run was stopped while `git push` waited for its answer) is adopted.
fn push_back(ctx: &mut Context) -> Result<()> {
    let exec = ctx.exec;
    let app = ctx.app()?;
    let facts = bump::read_version(&app.dir, &app.loaded)?;
    let version = semver::Version::parse(ctx.record.version.as_deref().unwrap_or_default())
        .unwrap_or(facts.current.clone());
    let tag_name = facts.tag_name(&version);
    let tag = format!("refs/tags/{tag_name}");
    let branch = exec
        .query(cmd!(exec.sh(), "git symbolic-ref --short HEAD"))
        .map_err(|_| {
            user_error(
                "the checkout is not on a branch (a tag or a commit was given as --ref): a \
                 release needs a branch to push its version commit to",
            )
        })?;
    let (auth, auth_env) = ctx.repo.git_auth();
    let auth_env: Vec<(&str, &str)> = auth_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // No local tag in a dry run, whose bump made none: then there is nothing to compare.
    let local_tag = exec
        .query(cmd!(exec.sh(), "git rev-parse -q --verify {tag}"))
        .ok();
    let remote_tag = || {
        let auth = &auth;
        let listed = cmd!(exec.sh(), "git {auth...} ls-remote origin {tag}");
        let listed = exec
            .query(listed.envs(auth_env.iter().copied()))
            .map_err(|err| ctx.repo.explain(err))?;
        anyhow::Ok(git::ref_in_listing(&listed, &tag))
    };
    if local_tag.is_some() && remote_tag()? == local_tag {
        exec.ui().note(&format!(
            "origin has the tag {tag_name} of this run already: the push-back was done"
        ));
        return Ok(());
    }
    let head = format!("HEAD:refs/heads/{branch}");
    let auth_words = &auth;
    let pushed = exec.run_with_env(
        cmd!(
            exec.sh(),
            "git {auth_words...} push --quiet --atomic origin {head} {tag}"
        ),
        &auth_env,
    );
    if let Err(err) = pushed {
        if err.chain().any(|c| c.is::<crate::error::Interrupted>()) {
            return Err(err);
        }
        // Refused credentials changed nothing in origin: once they are fixed, `--resume`
        // pushes the same version commit and tag.
        if RepoUrl::is_auth_failure(&err) {
            return Err(ctx.repo.explain(err));
        }
        // The connection may have dropped after origin took the refs: then they are there.
        if local_tag.is_some() && remote_tag().ok() == Some(local_tag.clone()) {
            exec.ui().note(&format!(
                "origin has the tag {tag_name} of this run although `git push` failed: adopted"
            ));
            return Ok(());
        }
        let why = format!(
            "origin refused the version commit and tag of {version} (its branch `{branch}` \
             moved, or it rejects pushes): nothing was deployed, and {tag_name} is not used in \
             origin. Start a new release (`cdflow release`, without --resume): it tests and \
             bumps the new head"
        );
        ctx.record.dead_end = Some(why.clone());
        return Err(err.context(why));
    }
    Ok(())
}

fn platform_release<'a>(
    facts: &'a Facts,
    manifest: &'a Resolved,
    version: &'a str,
    e2e_env: &'a [(String, String)],
) -> Release<'a> {
    let app = &facts.app;
    Release {
        app: &app.name,
        origin: &facts.origin,
        dir: &app.dir,
        manifest,
        version,
        e2e: app.loaded.config.e2e.as_ref().map(|e2e| E2e {
            command: &e2e.command,
            env: e2e_env,
        }),
    }
}

fn push(ctx: &mut Context, to: &str) -> Result<()> {
    let version = ctx.version()?;
    let facts = facts_of(&ctx.facts)?;
    let app = &facts.app;
    let target = app.target(to)?;
    let manifest = facts.manifest(to)?;
    let e2e_env = build_env(ctx.state, app);
    let release = platform_release(facts, manifest, &version, &e2e_env);
    let platform = platform::for_env(ctx.state, &target);
    let step = format!("push {version} to {to}");
    let exec = ctx.exec;
    let deployment = journaled(exec, ctx.state, &mut ctx.record, &step, || {
        platform
            .push(exec, &release, &target)
            .with_context(|| format!("push to `{to}` failed"))
    })?;
    let template = std::fs::read_to_string(&app.manifest)?;
    releases::deployed(ctx.exec, ctx.state, &app.name, &deployment, &template)?;
    let secrets = app.secret_names();
    env_record::record(ctx.exec, ctx.state, &app.name, &target, &secrets, "push")?;
    if !ctx.exec.is_dry_run() {
        deployment.announce(ctx.exec.ui(), events::DeployedBy::Push);
    }
    ctx.exec.ui().note(&format!(
        "{to} serves {} at {}",
        deployment.version, deployment.url
    ));
    ctx.record.set_deployment(deployment);
    Ok(())
}

/// Where an environment answers: what this run deployed there, else what serves it now,
/// else the `url` of its settings.
fn deployment_of(ctx: &Context, env: &Target) -> Result<Option<Deployment>> {
    if let Some(deployment) = ctx.record.deployment(env.name) {
        return Ok(Some(deployment.clone()));
    }
    let app = ctx.app()?;
    platform::for_env(ctx.state, env).serving(ctx.exec, &app.name, env)
}

/// Where an environment answers, with what serves it when cdflow knows: what this run deployed
/// there, else what serves it now, else the `url` of its settings.
fn route_of(ctx: &Context, env: &str) -> Result<(Option<Deployment>, String)> {
    let target = ctx.app()?.target(env)?;
    let deployment = deployment_of(ctx, &target)?;
    let url = match (&deployment, &target.config.url) {
        (Some(deployment), _) if !deployment.url.is_empty() => deployment.url.clone(),
        (_, Some(url)) => url.clone(),
        (Some(_), None) => {
            return Err(user_error(format!(
                "cdflow cannot tell where `{env}` answers: set `url` in [env.{env}]"
            )))
        }
        (None, None) => {
            return Err(user_error(format!(
                "nothing serves `{env}` yet: push to it first (cdflow push --to {env})"
            )))
        }
    };
    Ok((deployment, url))
}

fn e2e(ctx: &mut Context, against: &str) -> Result<()> {
    let app = ctx.app()?;
    app.target(against)?;
    let command = app
        .loaded
        .config
        .e2e
        .as_ref()
        .map(|e2e| e2e.command.clone())
        .ok_or_else(|| {
            user_error(
                "cdflow.toml has no e2e command: add\n\n[e2e]\ncommand = \"...\"   # run with \
                 APP_URL set",
            )
        })?;
    let (deployment, url) = route_of(ctx, against)?;
    let mut env = build_env(ctx.state, app);
    env.push(("APP_URL".into(), url));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_words(ctx.exec, &command, &env)
        .with_context(|| format!("the e2e tests against `{against}` failed"))?;
    if let Some(deployment) = deployment {
        releases::verify(ctx.exec, ctx.state, &app.name, &deployment)?;
        ctx.record.verified.push(deployment);
    }
    Ok(())
}

fn bench(ctx: &mut Context, plan: &bench::Plan) -> Result<()> {
    let app = ctx.app()?.name.clone();
    // The environment must be one of the app's even when nothing serves it in a dry run.
    ctx.app()?.target(&plan.env)?;
    let route = route_of(ctx, &plan.env);
    bench::run(ctx.exec, ctx.state, &mut ctx.record, &app, plan, route)
}

fn promote(ctx: &mut Context, from: &str, to: &str) -> Result<()> {
    let version = ctx.version()?;
    let facts = facts_of(&ctx.facts)?;
    let app = &facts.app;
    let source = app.target(from)?;
    let target = app.target(to)?;
    if source.platform() != target.platform() {
        return Err(user_error(format!(
            "`{from}` is on {} and `{to}` on {}: promote moves an artifact within one \
             platform; push to `{to}` instead",
            source.platform(),
            target.platform()
        )));
    }
    let platform = platform::for_env(ctx.state, &target);
    let serving = deployment_of(ctx, &source)?;
    let verified = releases::verified(ctx.state, &app.name, from)?;
    // In a dry run, nothing was pushed to `from`: the release it would serve stands in.
    let (candidate, planned) = match serving {
        Some(serving) => (serving, false),
        None => {
            ctx.exec.for_real(|| -> Result<()> {
                Err(user_error(format!(
                    "nothing serves `{from}`, so there is nothing to promote: push to it first"
                )))
            })?;
            let planned = Deployment {
                env: from.to_string(),
                platform: source.platform().name().to_string(),
                version: version.clone(),
                url: String::new(),
                artifact: "(dry run)".into(),
            };
            (planned, true)
        }
    };
    let passed = planned
        || ctx.record.verified.contains(&candidate)
        || verified
            .as_ref()
            .is_some_and(|v| v.deployment.artifact == candidate.artifact);
    if !passed && !ctx.settings.force {
        // A dry run asks no platform what serves (cf answers placeholders), so it cannot
        // tell: it says what a real run checks.
        ctx.exec.for_real(|| -> Result<()> {
            Err(user_error(format!(
                "`{from}` serves {} ({}), which has not passed e2e there: run `cdflow e2e \
                 --against {from}` first, or pass --force",
                candidate.version, candidate.artifact
            )))
        })?;
        ctx.exec.ui().note(&format!(
            "would check that what `{from}` serves has passed e2e there (else refuse, unless \
             --force)"
        ));
    }
    // The manifest the candidate was deployed with on `from`, not the checkout's: production
    // runs the configuration that was verified, with only its own values filled in.
    let release = releases::of(ctx.state, &app.name, &candidate)?;
    let template = match release.manifest {
        Some(template) => template,
        None => {
            if !planned {
                ctx.exec.ui().warn(&format!(
                    "cdflow has no record of the manifest {} was deployed to `{from}` with: \
                     promoting with the checkout's {}",
                    candidate.version,
                    app.manifest.display()
                ));
            }
            std::fs::read_to_string(&app.manifest)?
        }
    };
    let path = releases::write_promoting_manifest(ctx.exec, ctx.state, &app.name, from, &template)?;
    let manifest = match ctx.exec.for_real(|| app.manifest_from(&path, &target))? {
        Some(manifest) => manifest,
        // Nothing was written in a dry run: the checkout's manifest, under the file name a
        // real run gives it.
        None => Resolved {
            path,
            ..app.manifest_for(&target)?
        },
    };
    let e2e_env = build_env(ctx.state, app);
    let release = platform_release(facts, &manifest, &candidate.version, &e2e_env);
    let step = format!("promote {} from {from} to {to}", candidate.version);
    let exec = ctx.exec;
    let deployment = journaled(exec, ctx.state, &mut ctx.record, &step, || {
        platform
            .promote(exec, &release, &source, &target, &candidate)
            .with_context(|| format!("promote from `{from}` to `{to}` failed"))
    })?;
    releases::deployed(ctx.exec, ctx.state, &app.name, &deployment, &template)?;
    let secrets = app.secret_names();
    env_record::record(ctx.exec, ctx.state, &app.name, &target, &secrets, "promote")?;
    if !ctx.exec.is_dry_run() {
        deployment.announce(ctx.exec.ui(), events::DeployedBy::Promote);
    }
    ctx.exec.ui().note(&format!(
        "{to} serves {} at {}",
        deployment.version, deployment.url
    ));
    ctx.record.set_deployment(deployment);
    Ok(())
}
