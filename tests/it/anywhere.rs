//! `rollback` and `logs` from any folder, given the app's name (`--app`): no checkout, only the
//! state folder's records of what was deployed where, and with which settings.

use std::path::Path;
use std::process::Command;

use crate::cf::{calls_since, release_times, rollback_to_revision, CfApp, LOGIN_STAGING, TOKEN};
use crate::harness::{get, Local};
use crate::harness::{run_of, wait_for, Project, Run};

/// Runs `command` in `dir` (a folder that is no checkout).
fn in_folder(mut command: Command, dir: &Path) -> Run {
    run_of(command.current_dir(dir).output().unwrap())
}

#[test]
fn a_local_environment_is_rolled_back_and_its_logs_shown_from_an_empty_folder() {
    let local = Local::python(1);
    local.push("1.0.0");
    local.push("1.0.1");
    let empty = tempfile::tempdir().unwrap();
    let elsewhere = |args: &[&str]| in_folder(local.command(args), empty.path());

    elsewhere(&["rollback", "--app", "pyapp", "--env", "staging"])
        .success()
        .stdout_has("staging now serves 1.0.0 (sha256:");
    assert_eq!(get(local.staging, "/").unwrap(), (200, "1.0.0\n".into()));
    get(local.staging, "/say?after-the-rollback").unwrap();
    let said = "[APP/0] OUT said: after-the-rollback";
    wait_for("the instance's line in the log", || {
        let logs = elsewhere(&["logs", "--app", "pyapp", "--env", "staging"]);
        logs.success().stdout_has("[APP/0] OUT listening on");
        logs.stdout.contains(said)
    });
    elsewhere(&[
        "rollback",
        "--app",
        "pyapp",
        "--env",
        "staging",
        "--version",
        "1.0.1",
    ])
    .success();
    assert_eq!(get(local.staging, "/").unwrap().1, "1.0.1\n");

    // Another app's checkout is no obstacle: `--app` names the one to work on.
    let other = Project::git(&[("cdflow.toml", "[app]\nname = \"other\"\n")]);
    in_folder(
        local.command(&["logs", "--app", "pyapp", "--env", "staging"]),
        &other.dir,
    )
    .success()
    .stdout_has(said);

    // What cannot be found is named, with the fix; nothing changes.
    elsewhere(&["rollback", "--app", "nope", "--env", "staging"])
        .failure(2)
        .stderr_has("has no record of an app `nope`: the apps it knows are `pyapp`");
    elsewhere(&["logs", "--app", "pyapp", "--env", "qa"])
        .failure(2)
        .stderr_has("`pyapp` has no environment `qa`")
        .stderr_has("the ones deployed from it are `staging`");
    let mut stateless = local.command(&["rollback", "--app", "pyapp", "--env", "staging"]);
    stateless.env_remove("CDFLOW_STATE_DIR");
    in_folder(stateless, empty.path())
        .failure(2)
        .stderr_has("there is no state folder at")
        .stderr_has("Set CDFLOW_STATE_DIR");
    in_folder(local.command(&["logs", "--env", "staging"]), empty.path())
        .failure(2)
        .stderr_has("--app NAME");
    assert_eq!(
        std::fs::read_dir(empty.path()).unwrap().count(),
        0,
        "nothing is written where cdflow runs"
    );

    // An environment last deployed by a cdflow that did not record its settings.
    let record = local.state.path().join("releases/pyapp/env-staging.json");
    std::fs::remove_file(&record).unwrap();
    elsewhere(&["rollback", "--app", "pyapp", "--env", "staging"])
        .failure(2)
        .stderr_has("records no settings for `staging` of `pyapp`")
        .stderr_has("`cdflow rollback --env staging` there");
    assert_eq!(get(local.staging, "/").unwrap().1, "1.0.1\n");
    // A rollback in the checkout records them again.
    local
        .cdflow(&["rollback", "--env", "staging"])
        .success()
        .stdout_has("staging now serves 1.0.0");
    assert!(record.is_file());
    elsewhere(&[
        "rollback", "--app", "pyapp", "--env", "staging", "--to", "1.0.1",
    ])
    .success()
    .stdout_has("staging now serves 1.0.1");
}

#[test]
fn a_cf_environment_is_rolled_back_and_its_logs_shown_from_an_empty_folder_with_the_same_calls() {
    let app = CfApp::new();
    // Production: revisions 4 (0.1.1) and 5 (0.1.2).
    release_times(&app, 2);
    let empty = tempfile::tempdir().unwrap();
    let elsewhere = |args: &[&str]| in_folder(app.command(args, None), empty.path());

    let before = app.calls().len();
    elsewhere(&[
        "rollback",
        "--app",
        "filter",
        "--env",
        "production",
        "--version",
        "0.1.1",
    ])
    .success()
    .stdout_has("production now serves 0.1.1 (droplet-copy-1)");
    assert_eq!(calls_since(&app, before), rollback_to_revision(4, true));

    // The staging secret is masked from the names the records keep.
    let before = app.calls().len();
    let logs = elsewhere(&["logs", "--app", "filter", "--env", "staging"]);
    logs.success()
        .stdout_has("[APP/PROC/WEB/0] OUT started with token=****");
    assert!(!logs.stdout.contains(TOKEN), "{logs}");
    let mut expected: Vec<String> = LOGIN_STAGING.iter().map(|s| s.to_string()).collect();
    expected.push("staging: logs filter --recent".into());
    assert_eq!(calls_since(&app, before), expected);

    // Without the recorded settings, nothing is asked of cf.
    std::fs::remove_file(app.state.join("releases/filter/env-production.json")).unwrap();
    let before = app.calls().len();
    elsewhere(&["rollback", "--app", "filter", "--env", "production"])
        .failure(2)
        .stderr_has("records no settings for `production` of `filter`")
        .stderr_has("on cf its api, org and space");
    assert_eq!(calls_since(&app, before), Vec::<String>::new());
}
