//! `[watch] timeout`: a check (or an `on_failure` command) that hangs is stopped with its
//! process group, and the check is recorded as failed with the reason, rather than blocking the
//! watch for ever.

use std::time::{Duration, Instant};

use crate::harness::{pid_alive, run_of, Project};

/// A watch's settings with a check that hangs (and leaves a grandchild that hangs too), and an
/// `on_failure` that hangs as well; each writes its pid where the test can find it.
fn hanging_watch() -> Project {
    Project::git(&[(
        "cdflow.toml",
        "[app]\nname = \"w\"\n\n[version]\ncurrent = \"0.1.0\"\n\n[env.staging]\n\
         url = \"http://127.0.0.1:1\"\n\n[watch]\n\
         command = \"sh -c 'echo checking; sleep 600 & echo $! > check.pid; wait'\"\n\
         on_failure = \"sh -c 'echo $$ > alert.pid; exec sleep 600'\"\n\
         timeout = 1\n",
    )])
}

#[test]
fn a_hung_check_is_stopped_and_recorded_as_failed() {
    let project = hanging_watch();
    let mut child = project
        .command(env!("CARGO_BIN_EXE_cdflow"))
        .args(["watch", "--env", "staging", "--once"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Without the timeout this would wait ten minutes: a minute is proof enough, and the test
    // fails (and cleans up) rather than hangs.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            for file in ["check.pid", "alert.pid"] {
                if let Ok(pid) = std::fs::read_to_string(project.path(file)) {
                    // SAFETY: kill(2) touches no memory.
                    unsafe { libc::kill(pid.trim().parse().unwrap(), libc::SIGKILL) };
                }
            }
            panic!("the watch still runs after a minute: the hung check was never stopped");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let watch = run_of(child.wait_with_output().unwrap());
    watch
        .failure(1)
        .stdout_has("FAILED")
        .stdout_has("the check was stopped after 1s, its time limit (`timeout` in [watch])")
        .stderr_has("on_failure: `sh -c")
        .stderr_has("was stopped after 1s");
    // The check's own child and the alert were stopped with their groups.
    for file in ["check.pid", "alert.pid"] {
        let pid = project.read(file);
        assert!(!pid_alive(pid.trim()), "{file}: {pid} still runs");
    }
    let record: serde_json::Value =
        serde_json::from_str(&project.read(".cdflow/watch/w/staging.json")).unwrap();
    assert_eq!(record["passed"], false, "{record}");
    assert_eq!(record["on_failure"], false, "{record}");
    let output = record["output"].as_str().unwrap();
    assert!(output.contains("checking"), "its output is kept: {output}");
    assert!(output.ends_with("(`timeout` in [watch])"), "{output}");
}

/// The setting is read strictly, like the others.
#[test]
fn a_timeout_of_zero_is_refused_at_its_line() {
    let project = hanging_watch();
    let toml = project
        .read("cdflow.toml")
        .replace("timeout = 1", "timeout = 0");
    project.write("cdflow.toml", &toml);
    project
        .cdflow(&["watch", "--env", "staging", "--once"])
        .failure(2)
        .stderr_has("cdflow.toml")
        .stderr_has("timeout");
}
