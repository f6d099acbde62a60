//! `--json`: typed events, valid against the published schema (which `run_of` checks for every
//! test), and a typed answer from each read command.

use crate::cf::CfApp;
use crate::harness::{check_events, Project, Run};

/// Each stdout line of a `--json` run, parsed.
fn events(run: &Run) -> Vec<serde_json::Value> {
    run.stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

fn kinds(events: &[serde_json::Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}

/// The check that every test relies on does catch what the schema forbids.
#[test]
fn the_schema_check_catches_a_field_it_does_not_name_and_a_number_as_text() {
    let good = r#"{"schema":1,"time":"2026-11-27T15:00:00Z","event":"note","message":"hi"}"#;
    check_events(good);
    let time = r#""time":"2026-11-27T15:00:00Z""#;
    for bad in [
        format!(r#"{{"schema":1,{time},"event":"note","message":"hi","extra":1}}"#),
        format!(
            r#"{{"schema":1,{time},"event":"stage_started","stage":"test","index":"1","total":2}}"#
        ),
        format!(r#"{{"schema":2,{time},"event":"note","message":"hi"}}"#),
        format!(r#"{{"schema":1,{time},"event":"no_such_event"}}"#),
        // `time` is a date-time, which the check holds it to.
        r#"{"schema":1,"time":"yesterday","event":"note","message":"hi"}"#.to_string(),
    ] {
        let caught = std::panic::catch_unwind(|| check_events(&bad));
        assert!(caught.is_err(), "not caught: {bad}");
    }
}

#[test]
fn pipelines_and_bump_show_answer_with_typed_rows() {
    let app = CfApp::new();
    let run = app.cdflow(&["--json", "pipelines"], None);
    run.success();
    let pipelines = events(&run);
    assert!(pipelines.iter().all(|e| e["event"] == "pipeline"), "{run}");
    let release = pipelines.iter().find(|e| e["name"] == "release").unwrap();
    assert_eq!(release["source"], "built in");
    assert_eq!(release["stages"][0], "clone");

    let project = Project::git(&[(
        "Cargo.toml",
        "[package]\nname = \"plain\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )]);
    let run = project.cdflow(&["--json", "bump", "--show"]);
    run.success();
    let plan = events(&run);
    assert_eq!(kinds(&plan), ["bump_plan"], "{run}");
    assert_eq!(plan[0]["current"], "0.1.0");
    assert_eq!(plan[0]["source"], "Cargo.toml");
    assert_eq!(plan[0]["line"], 3);
    let part = |name: &str| {
        plan[0]["next"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["part"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(part("minor")["version"], "0.2.0");
    // A part that cannot apply has no version, rather than a "-" to parse.
    assert!(part("release").get("version").is_none());
}

/// A dry run's plan, as events: the commands it would run, marked as not run, and no
/// `command_finished`.
#[test]
fn a_dry_run_lists_the_commands_it_would_run() {
    let app = CfApp::new();
    let run = app.cdflow(&["--json", "push", "--dry-run", "--env", "staging"], None);
    run.success();
    let events = events(&run);
    let commands: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "command_started")
        .collect();
    assert!(!commands.is_empty(), "{run}");
    assert!(commands.iter().all(|e| e["dry_run"] == true), "{run}");
    assert!(commands
        .iter()
        .any(|e| e["command"].as_str().unwrap().contains("cf push ")));
    assert!(!kinds(&events).contains(&"command_finished"), "{run}");
    assert_eq!(events[0]["event"], "run_started");
    assert_eq!(events[0]["dry_run"], true);
}

/// A failure ends with an `error` event on stdout, typed like the others.
#[test]
fn a_failure_is_an_error_event() {
    let app = CfApp::new();
    let run = app.cdflow(&["--json", "push", "--env", "nowhere"], None);
    run.failure(2);
    let events = events(&run);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "error", "{run}");
    assert!(
        last["message"].as_str().unwrap().contains("nowhere"),
        "{run}"
    );
}

/// Every change of what serves an environment is a `deployment` event, with what made it:
/// a release's push and promote, and a rollback; a dry run changes nothing and has none.
#[test]
fn each_push_promote_and_rollback_is_a_deployment_event() {
    let app = CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    let dry = app.cdflow(&["--json", "release", "--repo", &origin, "--dry-run"], None);
    dry.success();
    assert!(!kinds(&events(&dry)).contains(&"deployment"), "{dry}");

    let deployments = |run: &Run| -> Vec<serde_json::Value> {
        events(run)
            .into_iter()
            .filter(|e| e["event"] == "deployment")
            .collect()
    };
    app.cdflow(&["--json", "release", "--repo", &origin], None)
        .success();
    let release = app.cdflow(&["--json", "release", "--repo", &origin], None);
    release.success();
    let deployed = deployments(&release);
    let shown: Vec<(&str, &str, &str, &str)> = deployed
        .iter()
        .map(|e| {
            (
                e["env"].as_str().unwrap(),
                e["by"].as_str().unwrap(),
                e["version"].as_str().unwrap(),
                e["platform"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("staging", "push", "0.1.2", "cf"),
            ("production", "promote", "0.1.2", "cf")
        ],
        "{release}"
    );
    // The same as the summary lists, and in the run.
    let summary = events(&release).pop().unwrap();
    assert_eq!(summary["event"], "summary", "{release}");
    for (event, listed) in deployed
        .iter()
        .zip(summary["deployments"].as_array().unwrap())
    {
        for field in ["env", "platform", "version", "url", "artifact"] {
            assert_eq!(event[field], listed[field], "{field}: {release}");
        }
        assert_eq!(event["run"], summary["run"], "{release}");
    }

    let rollback = app.cdflow(&["--json", "rollback", "--env", "production"], None);
    rollback.success();
    let rolled = deployments(&rollback);
    assert_eq!(rolled.len(), 1, "{rollback}");
    assert_eq!(rolled[0]["by"], "rollback");
    assert_eq!(rolled[0]["env"], "production");
    assert_eq!(rolled[0]["version"], "0.1.1");
    assert_eq!(rolled[0]["artifact"], "droplet-copy-1", "{rollback}");
    assert!(
        rolled[0]["url"].as_str().unwrap().starts_with("http"),
        "{rollback}"
    );
}

/// `init --list` and `manifest` answer with typed events, not prose.
#[test]
fn init_list_and_manifest_answer_with_typed_events() {
    let list = Project::empty().cdflow(&["--json", "init", "--list"]);
    list.success();
    let templates = events(&list);
    assert!(templates.iter().all(|e| e["event"] == "template"), "{list}");
    let falcon = templates
        .iter()
        .find(|e| e["name"] == "python-falcon")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(falcon["default"], false);
    assert!(falcon["options"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["name"] == "redis" && o["description"].as_str().unwrap().contains("Redis")));
    let defaults: Vec<&serde_json::Value> =
        templates.iter().filter(|e| e["default"] == true).collect();
    assert_eq!(defaults.len(), 1, "{list}");
    assert_eq!(defaults[0]["name"], "rust-service");

    let app = CfApp::new();
    let run = app.cdflow(&["--json", "manifest", "--env", "staging"], None);
    run.success();
    let events = events(&run);
    assert_eq!(events.len(), 1, "{run}");
    assert_eq!(events[0]["event"], "manifest");
    assert_eq!(events[0]["env"], "staging");
    assert!(events[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("manifest.yml"));
    let text = events[0]["text"].as_str().unwrap();
    assert!(text.contains("applications:"), "{run}");
    assert!(!text.contains("(("), "placeholders are filled: {run}");
}

/// The commands whose answer is text of its own refuse `--json`, with an `error` event, rather
/// than print something that is not an event.
#[test]
fn completions_man_and_logs_refuse_json() {
    let project = Project::empty();
    for args in [
        &["--json", "completions", "bash"][..],
        &["man", "--json"],
        &["--json", "logs", "--env", "staging", "--app", "nothing"],
    ] {
        let run = project.cdflow(args);
        run.failure(2);
        let events = events(&run);
        assert_eq!(events.len(), 1, "{run}");
        assert_eq!(events[0]["event"], "error", "{run}");
        let message = events[0]["message"].as_str().unwrap();
        assert!(message.contains("run it without --json"), "{run}");
    }
    // Without --json they still answer.
    project
        .cdflow(&["completions", "bash"])
        .success()
        .stdout_has("complete");
}

/// `cdflow up` brings back what a `down` stopped: a `deployment` event says what serves again.
#[test]
fn up_is_a_deployment_event() {
    let local = crate::harness::Local::python(1);
    local.push("1.0.0");
    local.cdflow(&["down"]).success();
    let up = local.cdflow(&["--json", "up"]);
    up.success();
    let deployed: Vec<serde_json::Value> = events(&up)
        .into_iter()
        .filter(|e| e["event"] == "deployment")
        .collect();
    assert_eq!(deployed.len(), 1, "{up}");
    assert_eq!(deployed[0]["by"], "up");
    assert_eq!(deployed[0]["env"], "staging");
    assert_eq!(deployed[0]["platform"], "local");
    assert_eq!(deployed[0]["version"], "1.0.0");
    assert_eq!(
        deployed[0]["url"],
        format!("http://127.0.0.1:{}", local.staging)
    );
    assert!(deployed[0]["artifact"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
}
