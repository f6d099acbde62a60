//! What every run of a pipeline does, whatever the platform: interruption, locks, refused
//! repositories, failing tiers, the one-stage commands, the list of pipelines.

use std::time::{Duration, Instant};

use crate::cf::CfApp;
use crate::harness::{pid_alive, run_of, wait_for};

/// Replaces the `lint` tier of the app's cdflow.toml and pushes the change to origin.
fn with_lint(app: &CfApp, command: &str) {
    let config = app.project.read("cdflow.toml");
    app.project.write(
        "cdflow.toml",
        &config.replace("lint = \"true\"", &format!("lint = {command:?}")),
    );
    app.project.git_cmd(&["commit", "-qam", "lint"]);
    app.project.git_cmd(&["push", "-q", "origin", "main"]);
}

#[test]
fn sigterm_stops_the_running_command_and_its_children_and_records_the_interruption() {
    let app = CfApp::new();
    let pid_file = app.project.dir.parent().unwrap().join("sleeper.pid");
    with_lint(
        &app,
        &format!("sh -c 'sleep 300 & echo $! > {}; wait'", pid_file.display()),
    );
    let origin = app.origin.to_str().unwrap().to_string();
    let child = app
        .command(&["release", "--repo", &origin], None)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the test tier to start", || pid_file.exists());
    let sleeper = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    let started = Instant::now();
    // SAFETY: kill(2) on the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    let run = run_of(output);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    run.failure(130)
        .stderr_has("stage `test` of `release` was interrupted");
    wait_for("the tier's child to be stopped", || !pid_alive(&sleeper));
    let history = app.cdflow(&["history"], None);
    history
        .success()
        .stdout_has("interrupted")
        .stdout_has("(stopped in `test`)");
    assert_eq!(app.origin_git(&["tag", "-l"]), "", "nothing was bumped");
}

#[test]
fn a_second_run_on_the_same_environment_is_refused_naming_the_first() {
    let app = CfApp::new();
    let pid_file = app.project.dir.parent().unwrap().join("sleeper.pid");
    with_lint(
        &app,
        &format!("sh -c 'echo $$ > {}; sleep 300'", pid_file.display()),
    );
    let origin = app.origin.to_str().unwrap().to_string();
    let mut first = app
        .command(&["release", "--repo", &origin], None)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first run to hold its locks", || pid_file.exists());
    let second = app.cdflow(&["release", "--repo", &origin], None);
    // SAFETY: kill(2) on the child we started; SIGKILL, so the kernel frees its locks.
    unsafe { libc::kill(first.id() as i32, libc::SIGKILL) };
    first.wait().unwrap();
    let sleeper = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    // SAFETY: as above, on the tier's own process (its group survived the SIGKILL).
    unsafe { libc::kill(sleeper.parse::<i32>().unwrap(), libc::SIGKILL) };
    second
        .failure(2)
        .stderr_has("the environment `production` is busy")
        .stderr_has("of `release` for filter on production (pid");
    // The lock of a run killed with SIGKILL is free again: a dry run can take it.
    let third = app.cdflow(&["push", "--to", "staging"], None);
    third.success();
    // No record says "running" for ever: the killed run is abandoned, the refused one failed.
    let history = app.cdflow(&["history"], None);
    history
        .success()
        .stdout_has("abandoned")
        .stdout_has("failed");
    assert!(!history.stdout.contains("running"), "{history}");
}

#[test]
fn repositories_and_refs_that_git_would_run_are_refused() {
    let app = CfApp::new();
    for repo in [
        "--upload-pack=touch /tmp/pwned",
        "ext::sh -c touch% /tmp/pwned",
    ] {
        app.cdflow(&["release", &format!("--repo={repo}")], None)
            .failure(2)
            .stderr_has("is refused");
    }
    let origin = app.origin.to_str().unwrap().to_string();
    app.cdflow(&["release", "--repo", &origin, "--ref=--orphan"], None)
        .failure(2)
        .stderr_has("the ref `--orphan` is refused");
    assert!(app.calls().is_empty());
}

#[test]
fn a_failing_tier_shows_its_command_exit_code_and_last_lines() {
    let app = CfApp::new();
    with_lint(
        &app,
        "sh -c 'for i in $(seq 1 100); do echo lint line $i; done; exit 7'",
    );
    let origin = app.origin.to_str().unwrap().to_string();
    let run = app.cdflow(&["release", "--repo", &origin], None);
    run.failure(1)
        .stderr_has("the test tier `lint` failed")
        .stderr_has("exited with code 7")
        .stderr_has("lint line 61\n")
        .stderr_has("lint line 100");
    assert!(
        !run.stderr.contains("lint line 60\n"),
        "only the last 40 lines:\n{run}"
    );
    app.assert_nothing_released();
}

#[test]
fn one_stage_commands_run_in_the_checkout() {
    let app = CfApp::new();
    app.cdflow(&["test", "--tier", "unit"], None)
        .success()
        .stdout_has("$ sh -c 'echo unit tier ran'");
    app.cdflow(&["test", "--tier", "nope"], None)
        .failure(2)
        .stderr_has("there is no test tier `nope`");
    app.cdflow(&["push", "--to", "staging", "--dry-run"], None)
        .success()
        .stdout_has("cf push filter -f");
    assert!(app.calls().is_empty());
    app.cdflow(&["push", "--to", "qa"], None)
        .failure(2)
        .stderr_has("stage `push qa` names the environment `qa`");
}

#[test]
fn pipelines_lists_the_built_in_ones_and_the_apps_own() {
    let app = CfApp::new();
    app.project.write(
        "pipelines/release.yml",
        "description: our own road\nstages:\n  - kind: test\n",
    );
    let run = app.cdflow(&["pipelines"], None);
    run.success()
        .stdout_has("release    our own road  (pipelines/release.yml)")
        .stdout_has("promote    promote the version verified on staging to production  (built in)");
}

#[test]
fn a_rejected_version_push_fails_the_run_before_anything_is_deployed() {
    let app = CfApp::new();
    // The repository refuses the version commit and tag, as it would if someone had pushed
    // to main since the clone.
    let hook = app.origin.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'main moved: someone released first' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let origin = app.origin.to_str().unwrap().to_string();
    let run = app.cdflow(&["release", "--repo", &origin], None);
    run.failure(1)
        .stderr_has("stage `bump` of `release` failed")
        .stderr_has("origin refused the version commit and tag of 0.1.1")
        .stderr_has("someone released first");
    assert!(
        !run.stderr.contains("--resume` continues"),
        "a resume could only fail again: {run}"
    );
    assert!(
        app.calls().is_empty(),
        "nothing may be deployed: {:#?}",
        app.calls()
    );
    assert_eq!(app.origin_git(&["tag", "-l"]), "");
    // --resume is no dead end that bumps again: it says what to do instead.
    app.cdflow(&["release", "--repo", &origin, "--resume"], None)
        .failure(2)
        .stderr_has("cannot be resumed")
        .stderr_has("Start a new release");
}

#[test]
fn json_prints_one_typed_event_per_line() {
    let app = CfApp::new();
    let run = app.cdflow(&["--json", "test", "--tier", "unit"], None);
    run.success();
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "run_started",
            "stage_started",
            "note",
            "command_started",
            "command_finished",
            "stage_finished",
            "summary"
        ]
    );
    // Every event carries the schema's version and the run's id; numbers are numbers.
    let run_id = events[0]["run"].as_str().unwrap();
    assert!(!run_id.is_empty());
    for event in &events {
        assert_eq!(event["schema"], 1, "{event}");
        assert_eq!(event["run"], run_id, "{event}");
    }
    assert_eq!(events[1]["index"], 1);
    assert_eq!(events[3]["command"], "sh -c 'echo unit tier ran'");
    assert_eq!(events[4]["exit_code"], 0);
    assert!(events[4]["seconds"].as_f64().unwrap() >= 0.0);
    assert!(events[4]["log"].as_str().unwrap().contains(run_id));
    assert_eq!(events[5]["outcome"], "passed");
    assert!(events[5]["seconds"].is_f64());
    assert_eq!(events[6]["stages"][0]["stage"], "test");
    // The read commands answer with typed rows, not prose.
    let history = app.cdflow(&["--json", "history"], None);
    history.success();
    let row: serde_json::Value =
        serde_json::from_str(history.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(row["event"], "history_row");
    assert_eq!(row["id"], run_id);
    assert_eq!(row["status"], "succeeded");
    assert!(row["seconds"].is_f64());
}

/// The hint after a failed one-stage command is that command, never a pipeline that does not
/// exist, and nothing a shell would read as a redirection.
#[test]
fn a_failed_one_stage_command_hints_at_itself() {
    let app = CfApp::new();
    let push = app.cdflow(&["push", "--to", "staging"], Some("staging push"));
    push.failure(1)
        .stderr_has("fix it and run `cdflow push --to staging` again");
    assert!(!push.stderr.contains("--pipeline"), "{push}");
    let promote = app.cdflow(&["promote", "--force"], Some("production"));
    promote
        .failure(1)
        .stderr_has("fix it and run `cdflow promote --force` again");
    let hint = promote.stderr.split("fix it and run").nth(1).unwrap_or("");
    assert!(!hint.contains("->"), "{promote}");
}

/// The state folder holds secrets: nobody but its owner can read anything in it, whether cdflow
/// made it or found it open.
#[test]
fn nothing_in_the_state_folder_is_readable_by_other_users() {
    use std::os::unix::fs::PermissionsExt;
    /// Paths under `dir` that another user could read: every folder on the way enterable by
    /// others, and the path itself readable by them.
    fn readable_by_others(dir: &std::path::Path, out: &mut Vec<String>) {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        if mode & 0o004 != 0 {
            out.push(dir.display().to_string());
        }
        if mode & 0o001 == 0 {
            return;
        }
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                readable_by_others(&path, out);
            } else if entry.metadata().unwrap().permissions().mode() & 0o004 != 0 {
                out.push(path.display().to_string());
            }
        }
    }
    let app = CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    app.cdflow(&["release", "--repo", &origin], None).success();
    let mut open = Vec::new();
    readable_by_others(&app.state, &mut open);
    assert!(open.is_empty(), "readable by others: {open:#?}");

    // An existing folder left open (by an older cdflow, say) is closed on first use.
    std::fs::set_permissions(&app.state, std::fs::Permissions::from_mode(0o755)).unwrap();
    app.cdflow(&["history"], None)
        .success()
        .stdout_has("private (0700)");
    let mode = std::fs::metadata(&app.state).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

/// On a terminal with stderr redirected (`cdflow test 2>err.log`), what a stage prints is shown,
/// not swallowed by a spinner drawn on the redirected stderr.
#[test]
fn a_terminal_with_stderr_redirected_shows_every_line() {
    let app = CfApp::new();
    let cdflow = app.command(&["test"], None);
    let err_log = app.project.dir.parent().unwrap().join("err.log");
    // `script` gives the command a pseudo-terminal as stdout; the shell line is the test's own.
    let line = format!(
        "'{}' test 2>'{}'",
        env!("CARGO_BIN_EXE_cdflow"),
        err_log.display()
    );
    let mut terminal = std::process::Command::new("script");
    terminal
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .current_dir(cdflow.get_current_dir().unwrap())
        .env("TERM", "xterm");
    for (key, value) in cdflow.get_envs() {
        match value {
            Some(value) => terminal.env(key, value),
            None => terminal.env_remove(key),
        };
    }
    let run = run_of(terminal.output().unwrap());
    run.success()
        .stdout_has("test tier `unit`")
        .stdout_has("unit tier ran");
}

/// A release of a tag has no branch to push its version commit to: refused before anything.
#[test]
fn a_release_of_a_tag_is_refused_before_anything_runs() {
    let app = CfApp::new();
    app.project.git_cmd(&["tag", "v0.0.9"]);
    app.project.git_cmd(&["push", "-q", "origin", "v0.0.9"]);
    let origin = app.origin.to_str().unwrap().to_string();
    app.cdflow(&["release", "--repo", &origin, "--ref", "v0.0.9"], None)
        .failure(2)
        .stderr_has("nothing was changed")
        .stderr_has("the checkout is not on a branch");
    assert!(app.calls().is_empty());
    assert_eq!(app.origin_git(&["tag", "-l"]), "v0.0.9");
}

/// `-q` prints nothing but errors while stages run; `-v` adds each command's own output.
#[test]
fn quiet_and_verbose() {
    let app = CfApp::new();
    let quiet = app.cdflow(&["-q", "test"], None);
    quiet.success();
    assert_eq!(quiet.stdout, "", "{quiet}");
    with_lint(&app, "sh -c 'echo lint says no; exit 3'");
    app.cdflow(&["-q", "test"], None)
        .failure(1)
        .stderr_has("exited with code 3")
        .stderr_has("lint says no");

    let verbose = app.cdflow(&["-v", "test", "--tier", "unit"], None);
    verbose.success();
    assert!(
        verbose.stdout.lines().any(|line| line == "unit tier ran"),
        "the tier's own line, not only the command: {verbose}"
    );
    let normal = app.cdflow(&["test", "--tier", "unit"], None);
    assert!(
        !normal.stdout.lines().any(|line| line == "unit tier ran"),
        "{normal}"
    );
}

/// From a subfolder, cdflow finds the app's cdflow.toml in the folders above, as cargo finds
/// Cargo.toml, and with it the app's own state folder.
#[test]
fn a_subfolder_finds_the_app_and_its_state_folder() {
    let app = CfApp::new();
    std::fs::create_dir_all(app.project.path("deep/er")).unwrap();
    app.project
        .cdflow(&["-C", "deep/er", "manifest", "--env", "staging"])
        .success()
        .stdout_has("- name: filter");
    let state = app.project.dir.join(".cdflow").join("runs");
    app.project
        .cdflow(&["-C", "deep/er", "history"])
        .success()
        .stdout_has(&format!("no runs recorded in {}", state.display()));

    // The issue's own example: `status` from a subfolder reads the app's state folder, not
    // one of its own. (CfApp's runs point CDFLOW_STATE_DIR elsewhere; these do not.)
    let in_app = |dir: &str, args: &[&str]| {
        let mut command = app.command(args, None);
        command
            .env_remove("CDFLOW_STATE_DIR")
            .current_dir(app.project.path(dir));
        run_of(command.output().unwrap())
    };
    in_app(".", &["push", "--env", "staging"]).success();
    let cf_homes = format!("CF_HOME={}/cf/", app.project.path(".cdflow").display());
    let home = format!("{cf_homes}staging ");
    let status = in_app("deep/er", &["status", "--json"]);
    status.success();
    let events = status.events();
    let staging = events
        .iter()
        .find(|e| e["event"] == "environment" && e["env"] == "staging")
        .unwrap_or_else(|| panic!("no staging row: {status}"));
    assert_eq!(staging["version"], "0.1.0", "{status}");
    let commands: Vec<&str> = events
        .iter()
        .filter_map(|e| e["command"].as_str())
        .collect();
    assert!(!commands.is_empty(), "{status}");
    for command in &commands {
        assert!(
            command.starts_with(&cf_homes),
            "{command} not with {cf_homes}"
        );
    }
    // A dry run from the subfolder plans the push of the app's own manifest, with its state.
    in_app("deep/er", &["push", "--env", "staging", "--dry-run"])
        .success()
        .stdout_has(&format!(
            "$ {home}cf push filter -f {} ",
            app.project.path("manifest.yml").display()
        ))
        .stdout_has("dry run: nothing was changed");
    for folder in ["deep/er/.cdflow", "deep/.cdflow"] {
        assert!(!app.project.path(folder).exists(), "{folder} made");
    }
}

/// One word per idea: `--env` names the environment of push, e2e and promote, whose older
/// names stay as aliases.
#[test]
fn env_names_the_environment_in_every_command() {
    let app = CfApp::new();
    app.cdflow(&["push", "--env", "staging"], None).success();
    app.cdflow(&["e2e", "--env", "staging"], None).success();
    app.cdflow(
        &["promote", "--from", "staging", "--env", "production"],
        None,
    )
    .success();
    app.cdflow(&["e2e", "--against", "staging"], None).success();
    let calls = app.calls();
    assert!(
        calls.iter().any(|c| c.starts_with("staging: push filter")),
        "{calls:#?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("production: apply-manifest")),
        "{calls:#?}"
    );
}

/// CI releases the commit it tested: a full commit id as --ref. While its branch has moved on,
/// the release is refused before anything, naming both commits; at the branch's head, it
/// releases exactly that commit.
#[test]
fn a_commit_id_as_ref_releases_exactly_that_commit_or_refuses() {
    let app = CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    let tested = app.project.git_cmd(&["rev-parse", "HEAD"]);
    app.project
        .write("later.txt", "a commit CI has not tested\n");
    app.project.git_cmd(&["add", "later.txt"]);
    app.project.git_cmd(&["commit", "-qm", "later"]);
    app.project.git_cmd(&["push", "-q", "origin", "main"]);
    let head = app.project.git_cmd(&["rev-parse", "HEAD"]);

    app.cdflow(&["release", "--repo", &origin, "--ref", &tested], None)
        .failure(2)
        .stderr_has("nothing was changed")
        .stderr_has(&format!(
            "`main` moved 1 commit(s) past the commit to release, {tested}, to {head}"
        ));
    app.assert_nothing_released();

    app.cdflow(
        &["release", "--repo", &origin, "--ref", &head, "--dry-run"],
        None,
    )
    .success()
    .stdout_has(&format!("$ git checkout -q -B main {head}"));
    assert_eq!(
        app.origin_git(&["tag", "-l"]),
        "",
        "a dry run pushes nothing"
    );
    app.cdflow(&["release", "--repo", &origin, "--ref", &head], None)
        .success();
    assert_eq!(app.origin_git(&["rev-parse", "v0.1.1^{commit}^"]), head);
    assert_eq!(
        app.origin_git(&["rev-parse", "main"]),
        app.origin_git(&["rev-parse", "v0.1.1^{commit}"])
    );
}

/// A failed command shows its last lines and the file that holds all of them, masked; only the
/// latest runs and those that may be resumed keep their logs (CDFLOW_KEEP_RUNS), while every
/// record stays.
#[test]
fn a_failure_points_at_the_whole_output_and_old_logs_are_pruned() {
    let app = CfApp::new();
    with_lint(
        &app,
        "sh -c 'for i in $(seq 1 100); do echo lint line $i; done; echo token=$FILTER_TOKEN; exit 7'",
    );
    let run = app.cdflow(&["test"], None);
    run.failure(1).stderr_has("lint line 100");
    assert!(
        !run.stderr.contains("lint line 1\n"),
        "only the last lines: {run}"
    );
    let log = run
        .stderr
        .split("(all of its output: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no log path in {run}"));
    let whole = std::fs::read_to_string(log).unwrap();
    assert!(
        whole.contains("lint line 1\n") && whole.contains("lint line 100\n"),
        "{whole}"
    );
    assert!(whole.contains("token=****"), "masked: {whole}");

    for _ in 0..3 {
        let output = app
            .command(&["test", "--tier", "unit"], None)
            .env("CDFLOW_KEEP_RUNS", "2")
            .output()
            .unwrap();
        assert!(output.status.success());
    }
    let runs = std::fs::read_dir(app.state.join("runs")).unwrap();
    let (folders, records): (Vec<_>, Vec<_>) = runs
        .map(|entry| entry.unwrap().path())
        .partition(|path| path.is_dir());
    // The latest two runs keep their logs, and so does the failed one, which may be resumed.
    assert_eq!(folders.len(), 3, "{folders:?}");
    assert_eq!(records.len(), 4, "every record stays: {records:?}");
}

/// A release from the checkout clones origin: commits the checkout has and origin lacks would
/// silently not be released, so the release refuses and says to push them.
#[test]
fn unpushed_commits_are_refused_not_ignored() {
    let app = CfApp::new();
    app.project.git_cmd(&["fetch", "-q", "origin"]);
    app.project.write("local.txt", "only here\n");
    app.project.git_cmd(&["add", "local.txt"]);
    app.project.git_cmd(&["commit", "-qm", "not pushed"]);
    app.cdflow(&["release"], None)
        .failure(2)
        .stderr_has("this checkout has 1 commit(s) that origin does not")
        .stderr_has("git push");
    app.project.git_cmd(&["push", "-q", "origin", "main"]);
    app.project.git_cmd(&["fetch", "-q", "origin"]);
    app.cdflow(&["release", "--dry-run"], None).success();
}
