//! `cdflow watch --dry-run`: the commands one check would run, printed as a real check runs
//! them, and nothing run, recorded or served.

use crate::cf::CfApp;
use crate::harness::Project;

#[test]
fn a_dry_run_prints_the_check_and_on_failure_and_runs_nothing() {
    let project = Project::git(&[(
        "cdflow.toml",
        "[app]\nname = \"w\"\n\n[version]\ncurrent = \"0.1.0\"\n\n[env.staging]\n\
         url = \"http://127.0.0.1:1\"\n\n[watch]\ncommand = \"touch checked\"\n\
         on_failure = \"touch alerted\"\nrollback_after = 2\ntimeout = 30\n",
    )]);
    let run = project.cdflow(&["watch", "--env", "staging", "--dry-run"]);
    run.success()
        .stdout_has("stopped after 30s")
        .stdout_has("$ APP_URL=http://127.0.0.1:1 touch checked\n")
        .stdout_has("$ touch alerted\n")
        .stdout_has("after 2 failed checks in a row")
        .stdout_has("dry run: nothing was run");
    assert!(!project.path("checked").exists(), "{run}");
    assert!(!project.path("alerted").exists(), "{run}");
    assert!(
        !project.path(".cdflow/watch").exists(),
        "nothing recorded: {run}"
    );

    // Without a URL, the dry run says why a check would fail.
    let toml = project.read("cdflow.toml").replace("url = ", "# url = ");
    project.write("cdflow.toml", &toml);
    project
        .cdflow(&["watch", "--env", "staging", "--dry-run"])
        .failure(2)
        .stderr_has("a check would fail: nothing serves `staging`");

    project
        .cdflow(&["watch", "--env", "staging", "--dry-run", "--once"])
        .failure(2)
        .stderr_has("cannot be used with");
}

/// On cf, what finds the route is part of the check: its cf commands are printed, not run.
#[test]
fn a_dry_run_on_cf_runs_no_cf_command() {
    let app = CfApp::new();
    let run = app.cdflow(&["watch", "--env", "staging", "--dry-run"], None);
    run.success()
        .stdout_has("$ CF_HOME=")
        .stdout_has("cf target -o acme -s staging")
        .stdout_has("APP_URL=");
    assert_eq!(app.calls(), Vec::<String>::new(), "{run}");
    assert!(!app.marker.exists(), "the check did not run: {run}");
}
