//! A SIGKILL of cdflow at the worst instants (what a CI runner's cancel sends), inside the git
//! children of the version step, then `--resume`: one version commit and one tag in origin per
//! release, whatever the instant; no child of the killed run left; `history` truthful.
//!
//! Each instant is held open by a real git hook that sleeps the first time it runs (and only
//! then, so that the resumed run goes through): git runs hooks from `core.hooksPath`, set in the
//! test's own HOME, so the hooks reach the release's fresh clone and the origin alike.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cf::CfApp;
use crate::harness::{git_at, pid_alive, run_of, wait_for};

/// A hook that, the first time, writes the pid of its `sleep` to `mark` and sleeps; `filter` is
/// shell code that exits 0 early when this call is not the instant wanted.
fn install_hook(app: &CfApp, hook: &str, filter: &str) -> PathBuf {
    let root = app.project.dir.parent().unwrap();
    let hooks = root.join("hooks");
    let mark = root.join(format!("{hook}.sleeping"));
    std::fs::create_dir_all(&hooks).unwrap();
    let script = format!(
        "#!/bin/sh\n{filter}\n[ -e '{mark}' ] && exit 0\nsleep 60 &\necho $! > '{mark}'\nwait\n",
        mark = mark.display()
    );
    let path = hooks.join(hook);
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    app.project.git_cmd(&[
        "config",
        "--global",
        "core.hooksPath",
        hooks.to_str().unwrap(),
    ]);
    mark
}

/// Starts a release, waits until the hook sleeps, SIGKILLs cdflow, and checks that the hook's
/// process does not outlive it; then resumes and checks origin.
fn kill_inside(hook: &str, filter: &str) {
    let app = CfApp::new();
    let mark = install_hook(&app, hook, filter);
    kill_then_resume(&app, &mark, &format!("the {hook} hook"), &[]);
}

/// A release of `app` with `env` set, SIGKILLed once the process whose pid `mark` receives
/// sleeps; then `--resume`, which must finish the one release.
fn kill_then_resume(app: &CfApp, mark: &Path, what: &str, env: &[(&str, &str)]) {
    let origin = app.origin.to_str().unwrap().to_string();
    let mut release = app
        .command(&["release", "--repo", &origin], None)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&format!("{what} to sleep"), || {
        std::fs::read_to_string(mark).is_ok_and(|pid| pid.ends_with('\n'))
    });
    sigkill_and_check(&mut release, mark, what);

    app.cdflow(&["history"], None)
        .success()
        .stdout_has("abandoned")
        .stdout_has("--resume` finishes it");
    let resumed = run_of(
        app.command(&["release", "--repo", &origin, "--resume"], None)
            .envs(env.iter().copied())
            .output()
            .unwrap(),
    );
    resumed.success();
    assert_one_release(&app.origin, "v0.1.1");
    let history = app.cdflow(&["history"], None);
    history.success().stdout_has("succeeded");
    assert!(!history.stdout.contains("abandoned"), "{history}");
}

/// SIGKILLs cdflow, then checks that the sleeping grandchild whose pid is in `mark` is gone
/// soon after: a second is the promise, five leave room for a loaded machine.
fn sigkill_and_check(cdflow: &mut std::process::Child, mark: &Path, what: &str) {
    let sleeper = std::fs::read_to_string(mark).unwrap().trim().to_string();
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(cdflow.id() as i32, libc::SIGKILL) };
    cdflow.wait().unwrap();
    let killed = Instant::now();
    while pid_alive(&sleeper) && killed.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pid_alive(&sleeper), "{what}'s child outlived cdflow");
}

/// Origin holds exactly one version commit, on top of the first commit, and exactly one tag,
/// on it.
fn assert_one_release(origin: &Path, tag: &str) {
    let git = |args: &[&str]| git_at(origin, args);
    assert_eq!(git(&["tag", "-l"]), tag, "one tag in origin");
    let subjects = git(&["log", "--format=%s", "main"]);
    let bumps = subjects
        .lines()
        .filter(|s| s.starts_with("Bump version"))
        .count();
    assert_eq!(bumps, 1, "one version commit in origin:\n{subjects}");
    let tagged = format!("{tag}^{{commit}}");
    assert_eq!(
        git(&["rev-parse", &tagged]),
        git(&["rev-parse", "main"]),
        "the tag is on the version commit, the head of main"
    );
}

#[test]
fn killed_inside_git_commit_before_the_commit() {
    kill_inside("pre-commit", "");
}

#[test]
fn killed_inside_git_commit_after_the_commit() {
    kill_inside("post-commit", "");
}

#[test]
fn killed_inside_git_tag_before_the_tag_is_written() {
    kill_inside(
        "reference-transaction",
        "[ \"$1\" = prepared ] || exit 0\ngrep -q ' refs/tags/' || exit 0",
    );
}

#[test]
fn killed_inside_git_tag_after_the_tag_is_written() {
    kill_inside(
        "reference-transaction",
        "[ \"$1\" = committed ] || exit 0\ngrep -q ' refs/tags/' || exit 0",
    );
}

#[test]
fn killed_inside_git_push_before_origin_has_it() {
    kill_inside("pre-push", "");
}

#[test]
fn killed_inside_git_push_after_origin_has_it() {
    kill_inside("post-receive", "");
}

#[test]
fn a_killed_test_tier_takes_its_children_with_it() {
    let app = CfApp::new();
    let root = app.project.dir.parent().unwrap().to_path_buf();
    let mark = root.join("tier.sleeping");
    let config = app.project.read("cdflow.toml").replace(
        "lint = \"true\"",
        &format!(
            "lint = \"sh -c 'sleep 60 & echo $! > {}; wait'\"",
            mark.display()
        ),
    );
    app.project.write("cdflow.toml", &config);
    let mut test = app
        .command(&["test"], None)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the tier to sleep", || {
        std::fs::read_to_string(&mark).is_ok_and(|pid| pid.ends_with('\n'))
    });
    sigkill_and_check(&mut test, &mark, "the tier");
}

/// A cf command of the run that hangs until cdflow is killed, at `at` ("HOME arguments").
fn kill_inside_cf(at: &str) {
    let app = CfApp::new();
    let mark = app.project.dir.parent().unwrap().join("cf.sleeping");
    let mark_text = mark.to_str().unwrap().to_string();
    let env = [
        ("CF_STANDIN_SLEEP", at),
        ("CF_STANDIN_SLEEP_MARK", &mark_text),
    ];
    kill_then_resume(&app, &mark, &format!("`cf` at {at}"), &env);
    assert!(
        app.calls()
            .iter()
            .any(|c| c.starts_with("production: curl /v3/deployments/")),
        "the resumed run deployed to production: {:#?}",
        app.calls()
    );
}

#[test]
fn killed_inside_the_push_to_staging() {
    kill_inside_cf("staging push");
}

#[test]
fn killed_inside_the_promote_to_production() {
    kill_inside_cf("production curl -X POST /v3/deployments");
}

#[test]
fn killed_inside_the_e2e_tests() {
    let app = CfApp::new();
    let mark = app.project.dir.parent().unwrap().join("e2e.sleeping");
    let config = app.project.read("cdflow.toml").replace(
        "command = \"sh -c '",
        &format!(
            "command = \"sh -c '[ -e {mark} ] || {{ sleep 60 & echo $! > {mark}; wait; }}; ",
            mark = mark.display()
        ),
    );
    app.project.write("cdflow.toml", &config);
    app.project.git_cmd(&["commit", "-qam", "a slow e2e"]);
    app.project.git_cmd(&["push", "-q", "origin", "main"]);
    kill_then_resume(&app, &mark, "the e2e tier", &[]);
    assert!(app.marker.exists(), "the resumed run ran e2e to the end");
}

#[test]
fn killed_inside_git_clone() {
    // The branch is written into the new clone before its files are checked out.
    kill_inside(
        "reference-transaction",
        "[ \"$1\" = committed ] || exit 0\ngrep -q ' refs/remotes/origin/' || exit 0",
    );
}
