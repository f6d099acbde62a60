//! The README's main command, on free ports: the example app released on the local platform
//! from a repository seeded by scripts/seed-example, twice, through every stage.

use crate::harness::{
    environment_of, free_port, get, run_of, shared_target, tags_of, Guard, Project, Request,
};

#[test]
fn the_example_app_is_released_through_every_stage_twice() {
    let project = Project::example_app();
    let (staging, production) = (free_port(), free_port());
    let config = project
        .read("cdflow.toml")
        .replace("port = 8081", &format!("port = {staging}"))
        .replace("port = 8082", &format!("port = {production}"));
    project.write("cdflow.toml", &config);
    project.git_cmd(&["commit", "-qam", "free ports for the test"]);
    let origin = project.dir.parent().unwrap().join("example-app.git");
    project.git_cmd(&["clone", "-q", "--bare", ".", origin.to_str().unwrap()]);
    let state = project.dir.parent().unwrap().join("state");
    let cdflow_command = |args: &[&str]| {
        let mut command = project.command(env!("CARGO_BIN_EXE_cdflow"));
        command
            .args(args)
            .env("CDFLOW_STATE_DIR", &state)
            .env("CARGO_TARGET_DIR", shared_target());
        command
    };
    let cdflow = |args: &[&str]| run_of(cdflow_command(args).output().unwrap());
    let _environments = Guard::environments(cdflow_command(&["down"]), &state);

    for version in ["0.1.1", "0.1.2"] {
        let run = cdflow(&["release", "--repo", origin.to_str().unwrap()]);
        run.success()
            .stdout_has(&format!("`release` succeeded: version {version}"))
            .stdout_has(&format!("staging      http://127.0.0.1:{staging}"))
            .stdout_has(&format!("production   http://127.0.0.1:{production}"));
        for port in [staging, production] {
            let (status, body) = get(port, "/health").unwrap();
            assert_eq!(status, 200);
            assert!(
                body.contains(&format!("\"version\":\"{version}\"")),
                "{body}"
            );
            let answer = Request::post("/")
                .json(r#"{"abra": 123, "kadabra": 4}"#)
                .send(port)
                .unwrap();
            assert_eq!(
                (answer.status, answer.body.as_str()),
                (200, r#"{"abra":123}"#)
            );
        }
    }
    // The version went back to the repository each time, as CI would leave it.
    assert_eq!(tags_of(&origin), "v0.1.1\nv0.1.2");
    // Production runs the very artifact that passed e2e on staging.
    let status = cdflow(&["status", "--json"]);
    status.success();
    let digests: Vec<serde_json::Value> = ["staging", "production"]
        .iter()
        .filter_map(|env| environment_of(&status, "example-app", env))
        .filter(|environment| environment["version"] == "0.1.2")
        .map(|environment| environment["artifact"].clone())
        .collect();
    assert_eq!(digests.len(), 2, "{status}");
    assert!(digests[0].is_string(), "{status}");
    assert_eq!(digests[0], digests[1], "{status}");
}
