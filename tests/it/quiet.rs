//! `-q`: errors and warnings only from every command that acts (init, bump, down, watch...),
//! while what a read command prints as its answer stays.

use crate::harness::Project;

/// `init` and `bump` print nothing with `-q`, and still do their work; `bump --show`,
/// `pipelines` and `history` still answer.
#[test]
fn quiet_silences_the_commands_that_act_not_the_answers() {
    let project = Project::empty();
    let state = project.dir.join("state");
    let state = state.to_str().unwrap();
    let init = project.cdflow(&["-q", "init", "web"]);
    init.success();
    assert_eq!(init.stdout, "", "{init}");
    assert_eq!(init.stderr, "", "{init}");
    let web = |args: &[&str]| {
        let output = project
            .command(env!("CARGO_BIN_EXE_cdflow"))
            .current_dir(project.path("web"))
            .env("CDFLOW_STATE_DIR", state)
            .args(args)
            .output()
            .unwrap();
        crate::harness::run_of(output)
    };
    let git_log = || {
        let output = project
            .command("git")
            .current_dir(project.path("web"))
            .args(["log", "--oneline"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).lines().count()
    };
    assert_eq!(git_log(), 1, "init committed the service");

    let bump = web(&["-q", "bump", "patch"]);
    bump.success();
    assert_eq!(bump.stdout, "", "{bump}");
    assert_eq!(git_log(), 2, "the bump committed");

    web(&["-q", "bump", "--show"])
        .success()
        .stdout_has("current version: 0.1.1");
    web(&["-q", "pipelines"]).success().stdout_has("release");
    web(&["-q", "history"])
        .success()
        .stdout_has("no runs recorded");

    let down = web(&["-q", "down"]);
    down.success();
    assert_eq!(down.stdout, "", "{down}");
    // Without -q, the same commands say what they did.
    web(&["down"]).success().stdout_has("nothing was running");
    web(&["bump", "patch", "--dry-run"])
        .success()
        .stdout_has("$ git");
}

/// A quiet watch prints no progress, but a failed check is still told, as a warning.
#[test]
fn a_quiet_watch_tells_only_its_failures() {
    let project = Project::git(&[(
        "cdflow.toml",
        "[app]\nname = \"w\"\n\n[version]\ncurrent = \"0.1.0\"\n\n[env.staging]\n\
         url = \"http://127.0.0.1:1\"\n\n[watch]\ncommand = \"sh -c 'echo down; exit 1'\"\n",
    )]);
    let args = ["-q", "watch", "--env", "staging", "--once"];
    let watch = project.cdflow(&args);
    watch
        .failure(1)
        .stderr_has("FAILED")
        .stderr_has("down")
        .stderr_has("the last check of `staging` failed");
    assert_eq!(watch.stdout, "", "{watch}");

    project.write(
        "cdflow.toml",
        &project
            .read("cdflow.toml")
            .replace("sh -c 'echo down; exit 1'", "true"),
    );
    let passed = project.cdflow(&args);
    passed.success();
    assert_eq!(passed.stdout, "", "{passed}");
    assert_eq!(passed.stderr, "", "{passed}");
    project
        .cdflow(&["watch", "--env", "staging", "--once"])
        .success()
        .stdout_has("watching `staging`")
        .stdout_has("passed");
}

/// A dry run's plan and `init --list` are answers, not progress: `-q` keeps them.
#[test]
fn quiet_keeps_the_plan_of_a_dry_run_and_the_template_list() {
    let list = Project::empty().cdflow(&["-q", "init", "--list"]);
    list.success()
        .stdout_has("rust-service")
        .stdout_has("python-falcon")
        .stdout_has("--with redis");

    let local = crate::harness::Local::python(1);
    let config = local.project.read("cdflow.toml");
    local.project.write(
        "cdflow.toml",
        &format!("{config}\n[test]\nunit = \"true\"\n\n[e2e]\ncommand = \"true\"\n"),
    );
    local.project.git_cmd(&["commit", "-qam", "tiers"]);
    local
        .cdflow(&["-q", "push", "--env", "staging", "--dry-run"])
        .success()
        .stdout_has("would start 1 instance(s) of pyapp 1.0.0");
    local
        .cdflow(&["-q", "bump", "patch", "--dry-run"])
        .success()
        .stdout_has("+current = \"1.0.1\"")
        .stdout_has("$ git tag -a v1.0.1");
    local
        .cdflow(&["-q", "release", "--dry-run"])
        .success()
        .stdout_has("stage 1/")
        .stdout_has("$ git clone")
        .stdout_has("would start 1 instance(s) of pyapp 1.0.1");
    // The real thing is still quiet.
    let bump = local.cdflow(&["-q", "bump", "patch"]);
    bump.success();
    assert_eq!(bump.stdout, "", "{bump}");
}
