//! `cdflow release`, `promote` and friends against Cloud Foundry, through a stand-in `cf` on
//! PATH (tests/fixtures/cf) that records every call. Git, the test tiers and the e2e command
//! are real; the e2e command talks to a real HTTP server on loopback.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use crate::harness::{
    environment_of, files_under, free_port, git_at, run_of, shared_target, Guard, Project, Run,
};

const PASSWORD: &str = "pa55-w0rd-never-shown";
pub(crate) const TOKEN: &str = "filter-token-never-shown";

/// A repository with a bare `origin`, holding a small app released to two cf spaces.
pub struct CfApp {
    pub project: Project,
    pub origin: PathBuf,
    pub state: PathBuf,
    log: PathBuf,
    pub marker: PathBuf,
}

/// A loopback HTTP server that answers 200 to anything, standing for the deployed app.
fn serve_ok() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"status\":\"up\"}",
            );
        }
    });
    url
}

impl CfApp {
    pub fn new() -> CfApp {
        let url = serve_ok();
        let config = format!(
            r#"[app]
name = "filter"

[version]
current = "0.1.0"
files = ["manifest.yml"]

[test]
unit = "sh -c 'echo unit tier ran'"
lint = "true"

[e2e]
command = "sh -c 'curl -fsS \"$APP_URL/health\" && touch \"$E2E_MARKER\"'"

[env.staging]
platform = "cf"
api = "https://api.cf.example.com"
org = "acme"
space = "staging"
url = "{url}"
vars = {{ instances = "1" }}
secrets = ["FILTER_TOKEN"]

[env.production]
platform = "cf"
api = "https://api.cf.example.com"
org = "acme"
space = "production"
vars = {{ instances = "2" }}
"#
        );
        let manifest = "---\napplications:\n- name: filter\n  memory: 64M\n  instances: ((instances))\n  buildpacks:\n  - python_buildpack\n  command: python3 app.py\n  env:\n    VERSION: \"0.1.0\"\n";
        let project = Project::git(&[
            ("cdflow.toml", &config),
            ("manifest.yml", manifest),
            ("app.py", "print('filter')\n"),
        ]);
        CfApp::with_origin(project)
    }

    /// The real example app (scripts/seed-example), released to cf spaces whose staging route
    /// is `staging_url`.
    pub fn example_app(staging_url: &str) -> CfApp {
        let project = Project::example_app();
        let config = project.read("cdflow.toml");
        let envs_at = config.find("[env.staging]").unwrap();
        let config = format!(
            "{}[env.staging]\nplatform = \"cf\"\napi = \"https://api.cf.example.com\"\norg = \"acme\"\nspace = \"staging\"\nurl = \"{staging_url}\"\n\n[env.production]\nplatform = \"cf\"\napi = \"https://api.cf.example.com\"\norg = \"acme\"\nspace = \"production\"\n",
            &config[..envs_at]
        );
        project.write("cdflow.toml", &config);
        project.git_cmd(&["commit", "-qam", "deliver to cf"]);
        CfApp::with_origin(project)
    }

    fn with_origin(project: Project) -> CfApp {
        let origin = project.add_origin();
        let root = project.dir.parent().unwrap().to_path_buf();
        CfApp {
            origin,
            state: root.join("state"),
            log: root.join("cf.log"),
            marker: root.join("e2e-ran"),
            project,
        }
    }

    pub fn cdflow(&self, args: &[&str], fail_at: Option<&str>) -> Run {
        run_of(self.command(args, fail_at).output().unwrap())
    }

    /// The cdflow command with the stand-in cf first on PATH and the test's credentials.
    pub fn command(&self, args: &[&str], fail_at: Option<&str>) -> std::process::Command {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let path = format!("{}:{}", fixtures.display(), std::env::var("PATH").unwrap());
        let mut command = self.project.command(env!("CARGO_BIN_EXE_cdflow"));
        command
            .args(args)
            .env("PATH", path)
            .env("CDFLOW_STATE_DIR", &self.state)
            .env("CF_STANDIN_LOG", &self.log)
            .env("CF_USERNAME", "ci-bot")
            .env("CF_PASSWORD", PASSWORD)
            .env("FILTER_TOKEN", TOKEN)
            .env("E2E_MARKER", &self.marker)
            .env_remove("CF_STANDIN_FAIL");
        if let Some(fail_at) = fail_at {
            command.env("CF_STANDIN_FAIL", fail_at);
        }
        command
    }

    /// The recorded cf calls, as "home: arguments", with the state folder shown as STATE;
    /// `cf version`, the preflight's look at the CLI, which changes nothing, left out.
    pub fn calls(&self) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|line| line.split('\t').nth(1) != Some("version"))
            .map(|line| {
                let mut fields = line.split('\t');
                let home = fields.next().unwrap_or("");
                let args = fields.next().unwrap_or("");
                normalize(&format!("{home}: {args}"), &self.state)
            })
            .collect()
    }

    /// Asserts that nothing irreversible happened: no cf call, and no version tag in origin.
    #[track_caller]
    pub fn assert_nothing_released(&self) {
        assert_eq!(self.calls(), Vec::<String>::new(), "no cf call");
        assert_eq!(self.origin_git(&["tag", "-l"]), "", "no version in origin");
    }

    pub fn origin_git(&self, args: &[&str]) -> String {
        git_at(&self.origin, args)
    }

    /// Every file the run left in the state folder, as text.
    fn state_text(&self) -> String {
        files_under(&self.state)
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .collect()
    }
}

/// Replaces the run-specific parts of a command line (the workspace under the state folder)
/// with stable names.
fn normalize(line: &str, state: &Path) -> String {
    let workspaces = format!("{}/workspaces/", state.display());
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find(&workspaces) {
        out.push_str(&rest[..at]);
        out.push_str("WORKSPACE");
        let after = &rest[at + workspaces.len()..];
        let end = after.find('/').unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out.replace(&format!("{}/", state.display()), "STATE/")
}

pub(crate) const LOGIN_STAGING: [&str; 3] = [
    "staging: api https://api.cf.example.com",
    "staging: auth",
    "staging: target -o acme -s staging",
];
const LOGIN_PRODUCTION: [&str; 3] = [
    "production: api https://api.cf.example.com",
    "production: auth",
    "production: target -o acme -s production",
];

/// The call that marks a droplet with the version it delivers: v3 metadata, the full version in
/// an annotation (and in a label, where it fits one).
fn mark(env: &str, droplet: &str, version: &str) -> String {
    format!(
        "{env}: curl -X PATCH /v3/droplets/{droplet} -d \
         {{\"metadata\":{{\"annotations\":{{\"cdflow/version\":\"{version}\"}},\
         \"labels\":{{\"cdflow/version\":\"{version}\"}}}}}}"
    )
}

fn push_to_staging() -> Vec<String> {
    let mut calls: Vec<String> = LOGIN_STAGING.iter().map(|s| s.to_string()).collect();
    calls.extend(
        [
            "staging: push filter -f WORKSPACE/manifest.yml --var instances=1 --strategy rolling",
            "staging: app filter --guid",
            // Whether it runs, and where, from the v3 API as JSON.
            "staging: curl /v3/apps/guid-filter-staging/processes/web/stats",
            "staging: curl /v3/apps/guid-filter-staging/routes",
            "staging: curl /v3/apps/guid-filter-staging/droplets/current",
        ]
        .map(String::from),
    );
    calls.push(mark("staging", "droplet-staging-1", "0.1.1"));
    calls
}

/// The promote's calls after a push to staging in the same run, which logged in to staging
/// already: one login per environment and run.
fn promote_to_production() -> Vec<String> {
    let mut calls: Vec<String> = Vec::new();
    calls.extend(
        [
            "staging: app filter --guid",
            "staging: curl /v3/apps/guid-filter-staging/droplets/current",
        ]
        .map(String::from),
    );
    calls.extend(LOGIN_PRODUCTION.iter().map(|s| s.to_string()));
    calls.extend([
        // The manifest deployed to staging and verified there, not the checkout's.
        "production: apply-manifest -f STATE/releases/filter/promoting-staging.manifest.yml --var instances=2".to_string(),
        "production: app filter --guid".to_string(),
        "production: curl /v3/apps/guid-filter-production/revisions/deployed".to_string(),
        "production: curl -X POST /v3/droplets?source_guid=droplet-staging-1 -d {\"relationships\":{\"app\":{\"data\":{\"guid\":\"guid-filter-production\"}}}}".to_string(),
        "production: curl /v3/droplets/droplet-copy-1".to_string(),
        // A copy has no metadata: marked before it is deployed.
        mark("production", "droplet-copy-1", "0.1.1"),
        "production: curl -X POST /v3/deployments -d {\"droplet\":{\"guid\":\"droplet-copy-1\"},\"relationships\":{\"app\":{\"data\":{\"guid\":\"guid-filter-production\"}}},\"strategy\":\"rolling\"}".to_string(),
        "production: curl /v3/deployments/deployment-1".to_string(),
        "production: curl /v3/apps/guid-filter-production/processes/web/stats".to_string(),
        "production: curl /v3/apps/guid-filter-production/routes".to_string(),
    ]);
    calls
}

#[test]
fn release_of_the_example_app_runs_its_real_tiers_and_its_e2e_against_a_running_instance() {
    // The instance that staging stands for: the example app itself, built and started here.
    let port = free_port();
    let app = CfApp::example_app(&format!("http://127.0.0.1:{port}"));
    let build = app
        .project
        .command("cargo")
        .args(["build", "--quiet", "--bin", "example_app"])
        .env("CARGO_TARGET_DIR", shared_target())
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let _instance = Guard::child(
        app.project
            .command(shared_target().join("debug/example_app"))
            .env("PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("LOG_LEVEL", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let origin = app.origin.to_str().unwrap().to_string();
    let run = run_of(
        app.command(&["release", "--repo", &origin], None)
            .env("CARGO_TARGET_DIR", shared_target())
            .output()
            .unwrap(),
    );
    run.success()
        .stdout_has("cargo test --lib --bins")
        .stdout_has("cargo test --test service")
        .stdout_has(&format!(
            "APP_URL=http://127.0.0.1:{port} cargo test --test e2e -- --ignored"
        ))
        .stdout_has("`release` succeeded: version 0.1.1");
    assert_eq!(app.origin_git(&["tag", "-l"]), "v0.1.1");
    // The bump reached every file that carries the version, and the lock file.
    let show = app.origin_git(&["show", "v0.1.1", "--stat", "--format=%s"]);
    for file in ["Cargo.toml", "Cargo.lock", "manifest.yml"] {
        assert!(show.contains(file), "{show}");
    }
    // Its manifest names binary_buildpack: what cf gets is the release binary its `command`
    // runs, with a Procfile, not the sources.
    assert!(
        app.calls().contains(
            &"staging: push example-app -f WORKSPACE/manifest.yml -p STATE/cf-push/staging \
              --strategy rolling"
                .to_string()
        ),
        "{:#?}",
        app.calls()
    );
    let foundation = format!("{}.foundation", app.log.display());
    let uploaded =
        std::fs::read_to_string(Path::new(&foundation).join("staging/uploaded")).unwrap();
    assert_eq!(uploaded, "644 Procfile\n755 example_app\n");
    assert_eq!(
        std::fs::read_to_string(app.state.join("cf-push/staging/Procfile")).unwrap(),
        "web: ./example_app\n"
    );
}

#[test]
fn release_runs_the_exact_cf_sequence_and_records_it() {
    let app = CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    let run = app.cdflow(&["release", "--repo", &origin], None);
    run.success()
        .stdout_has("`release` succeeded: version 0.1.1")
        .stdout_has("production   https://filter-production.apps.example.com");
    let mut expected = push_to_staging();
    expected.extend(promote_to_production());
    assert_eq!(app.calls(), expected);
    // Every cf call saw the credentials and its own CF_HOME, by name only (`cf version`, which
    // reads nothing of an environment's, needs neither).
    let log = std::fs::read_to_string(&app.log).unwrap();
    for line in log
        .lines()
        .filter(|l| l.split('\t').nth(1) != Some("version"))
    {
        assert!(line.ends_with("CF_HOME,CF_PASSWORD,CF_USERNAME"), "{line}");
    }
    assert!(app.marker.exists(), "the e2e command ran");
    // The version commit and tag reached origin before anything was deployed.
    assert_eq!(app.origin_git(&["tag", "-l"]), "v0.1.1");
    assert_eq!(
        app.origin_git(&["log", "-1", "--format=%s", "main"]),
        "Bump version: 0.1.0 → 0.1.1"
    );
    // The record says what happened.
    let history = app.cdflow(&["history"], None);
    history
        .success()
        .stdout_has("release")
        .stdout_has("filter")
        .stdout_has("0.1.1");
    assert!(history.stdout.contains("succeeded"), "{history}");
}

#[test]
fn dry_run_prints_the_commands_a_real_run_records_and_changes_nothing() {
    let app = CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    let dry = app.cdflow(&["release", "--repo", &origin, "--dry-run"], None);
    dry.success().stdout_has("dry run: nothing was changed");
    assert!(app.calls().is_empty(), "a dry run calls no cf");
    assert_eq!(
        app.origin_git(&["tag", "-l"]),
        "",
        "a dry run pushes nothing"
    );
    assert!(!app.marker.exists(), "a dry run runs no e2e");
    assert!(
        !app.state.join("runs").exists(),
        "a dry run records no run, which --resume would pick up"
    );
    let printed: Vec<String> = dry
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("$ CF_HOME="))
        .map(|line| {
            let (home, args) = line.split_once(" cf ").unwrap();
            let home = Path::new(home)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            normalize(&format!("{home}: {args}"), &app.state)
        })
        .collect();
    for line in [
        "$ git clone",
        "$ sh -c",
        " git commit -q -m",
        "$ git tag -a v0.1.1",
        "$ git push --quiet --atomic origin HEAD:refs/heads/main refs/tags/v0.1.1",
    ] {
        assert!(dry.stdout.contains(line), "dry run lacks {line}:\n{dry}");
    }

    app.cdflow(&["release", "--repo", &origin], None).success();
    // The same cf commands in the same order; where only a real answer gives a value (guids),
    // the dry run prints a placeholder naming it.
    let real: Vec<String> = app
        .calls()
        .iter()
        .map(|line| {
            line.replace("guid-filter-staging", "APP-GUID")
                .replace("guid-filter-production", "APP-GUID")
                .replace("droplet-staging-1", "DROPLET-GUID")
                .replace("droplet-copy-1", "COPIED-DROPLET-GUID")
                .replace("deployment-1", "DEPLOYMENT-GUID")
        })
        .collect();
    let printed: Vec<String> = printed.iter().map(|line| line.replace('\'', "")).collect();
    assert_eq!(printed, real);
}

#[test]
fn a_failed_staging_push_stops_before_e2e_and_promote_and_resume_does_not_bump_again() {
    let app = CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    let run = app.cdflow(&["release", "--repo", &origin], Some("staging push"));
    run.failure(1)
        .stderr_has("stage `push staging` of `release` failed")
        .stderr_has("told to fail at: staging push")
        .stderr_has("--resume");
    assert!(!app.marker.exists(), "e2e must not run after a failed push");
    assert!(
        !app.calls().iter().any(|c| c.starts_with("production")),
        "nothing may reach production: {:#?}",
        app.calls()
    );
    assert_eq!(
        app.origin_git(&["tag", "-l"]),
        "v0.1.1",
        "the bump was pushed before deploying"
    );

    let resumed = app.cdflow(&["release", "--repo", &origin, "--resume"], None);
    resumed
        .success()
        .stdout_has("resuming run")
        .stdout_has("`release` succeeded: version 0.1.1");
    assert_eq!(app.origin_git(&["tag", "-l"]), "v0.1.1", "no second bump");
    assert_eq!(app.origin_git(&["rev-list", "--count", "main"]), "2");
    assert!(app.marker.exists());
}

#[test]
fn secrets_appear_in_no_output_record_or_log() {
    let app = CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    // The secret values also reach the output of a command, which must be masked too.
    app.project.write(
        "cdflow.toml",
        &app.project.read("cdflow.toml").replace(
            "lint = \"true\"",
            "lint = \"sh -c 'echo password=$CF_PASSWORD token=$FILTER_TOKEN; exit 1'\"",
        ),
    );
    app.project.git_cmd(&["commit", "-qam", "leaky lint"]);
    app.project.git_cmd(&["push", "-q", "origin", "main"]);
    let failed = app.cdflow(&["release", "--repo", &origin], None);
    failed.failure(1).stderr_has("password=**** token=****");
    let ok = app.cdflow(
        &[
            "release",
            "--repo",
            &origin,
            "--pipeline",
            "promote",
            "--force",
        ],
        None,
    );
    let everything = format!(
        "{failed}{ok}{}{}",
        app.state_text(),
        std::fs::read_to_string(&app.log).unwrap_or_default()
    );
    assert!(!everything.contains(PASSWORD), "CF_PASSWORD leaked");
    assert!(!everything.contains(TOKEN), "a configured secret leaked");
}

#[test]
fn promote_refuses_an_unverified_version_unless_forced() {
    let app = CfApp::new();
    let run = app.cdflow(&["promote"], None);
    run.failure(2)
        .stderr_has("`staging` serves unknown (droplet-staging), which has not passed e2e there")
        .stderr_has("--force");
    assert!(!app.calls().iter().any(|c| c.starts_with("production")));
    app.cdflow(&["promote", "--force"], None).success();
    assert!(app
        .calls()
        .iter()
        .any(|c| c == "production: curl /v3/deployments/deployment-1"));
}

#[test]
fn a_failed_production_deployment_rolls_back_and_confirms() {
    let app = CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    let run = app.cdflow(
        &["release", "--repo", &origin],
        Some("production curl /v3/deployments/deployment-1"),
    );
    run.failure(1)
        .stderr_has("rolled back to revision 3, which serves again");
    let calls = app.calls();
    let tail: Vec<&str> = calls
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "production: rollback filter --version 3 -f",
            "production: curl /v3/apps/guid-filter-production/processes/web/stats",
            "production: curl /v3/apps/guid-filter-production/routes",
        ]
    );
}

/// A deployment that was never created (its POST failed) changed nothing: production is not
/// rolled back, which would restart it for nothing.
#[test]
fn a_failed_deployment_post_leaves_production_alone() {
    let app = CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    let run = app.cdflow(
        &["release", "--repo", &origin],
        Some("production curl -X POST /v3/deployments"),
    );
    run.failure(1)
        .stderr_has("no deployment was created in `production`, so nothing was rolled back")
        .stderr_has("the droplet that served there still serves");
    assert!(!run.stderr.contains("rolled back to revision"), "{run}");
    let mut expected = push_to_staging();
    let mut promote = promote_to_production();
    // Nothing after the failed POST: no poll, no `cf rollback`, no check.
    let post = promote
        .iter()
        .position(|c| c.starts_with("production: curl -X POST /v3/deployments"))
        .unwrap();
    promote.truncate(post + 1);
    expected.extend(promote);
    assert_eq!(app.calls(), expected);
}

#[test]
fn unknown_environments_and_missing_settings_are_reported_before_anything_runs() {
    let app = CfApp::new();
    app.project.write(
        "cdflow.toml",
        &app.project
            .read("cdflow.toml")
            .replace("org = \"acme\"\nspace = \"production\"\n", "")
            .replace("vars = { instances = \"1\" }\n", ""),
    );
    app.project.write(
        "pipelines/qa.yml",
        "description: to qa\nstages:\n  - kind: push\n    to: qa\n  - kind: push\n    to: production\n  - kind: push\n    to: staging\n",
    );
    app.project.git_cmd(&["add", "-A"]);
    app.project.git_cmd(&["commit", "-qm", "qa"]);
    let run = app.cdflow(&["release", "--pipeline", "qa"], None);
    run.failure(2)
        .stderr_has("pipelines/qa.yml:4: stage `push qa` names the environment `qa`")
        .stderr_has("[env.production] is on cf but has no `org`")
        .stderr_has("[env.production] is on cf but has no `space`")
        .stderr_has("((instances)) on line 5");
    assert!(app.calls().is_empty());
}

#[test]
fn logs_come_from_the_environments_own_login_masked() {
    let app = CfApp::new();
    let run = app.cdflow(&["logs", "--env", "staging"], None);
    run.success()
        .stdout_has("[APP/PROC/WEB/0] OUT started with token=****");
    assert!(!run.stdout.contains(TOKEN));
    assert_eq!(
        app.calls(),
        [
            LOGIN_STAGING[0],
            LOGIN_STAGING[1],
            LOGIN_STAGING[2],
            "staging: logs filter --recent"
        ]
    );
}

/// A memory value cf would not read and a machine without `cf` are found before the version is
/// pushed to origin, by a dry run too.
#[test]
fn bad_memory_and_a_missing_cf_are_refused_before_the_version_is_pushed() {
    let app = CfApp::new();
    let manifest = app
        .project
        .read("manifest.yml")
        .replace("memory: 64M", "memory: 512");
    app.project.write("manifest.yml", &manifest);
    app.project
        .git_cmd(&["commit", "-qam", "memory without a unit"]);
    app.project.git_cmd(&["push", "-q", "origin", "main"]);
    // The machine's PATH without any folder that holds a `cf`: neither the stand-in nor another.
    let machine = std::env::var_os("PATH").unwrap();
    let without_cf: Vec<PathBuf> = std::env::split_paths(&machine)
        .filter(|dir| !dir.join("cf").exists())
        .collect();
    let path = std::env::join_paths(without_cf).unwrap();
    let origin = app.origin.to_str().unwrap().to_string();
    for dry_run in [true, false] {
        let mut command = app.command(&["release", "--repo", &origin], None);
        command.env("PATH", &path);
        if dry_run {
            command.arg("--dry-run");
        }
        run_of(command.output().unwrap())
            .failure(2)
            .stderr_has("nothing was changed")
            .stderr_has("the manifest's memory `512` of `filter` is not a size cf reads")
            .stderr_has("[env.staging] is on cf, but `cf` is not on PATH");
    }
    app.assert_nothing_released();
}

/// A later `cdflow promote` applies the manifest that was verified on staging (the released
/// tag's), not the checkout's, even after the checkout's manifest changed.
#[test]
fn promote_applies_the_verified_manifest_from_the_tag_not_the_checkout() {
    let app = CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    app.cdflow(&["release", "--repo", &origin], None).success();
    let tagged = app.origin_git(&["show", "v0.1.1:manifest.yml"]);
    assert!(tagged.contains("VERSION: \"0.1.1\""), "{tagged}");
    // The checkout moves on: more memory, and it never saw the version commit.
    let changed = app
        .project
        .read("manifest.yml")
        .replace("memory: 64M", "memory: 1G");
    app.project.write("manifest.yml", &changed);
    app.project.git_cmd(&["commit", "-qam", "more memory"]);

    let before = app.calls().len();
    app.cdflow(&["promote"], None).success();
    let calls = app.calls();
    let apply = calls[before..]
        .iter()
        .find(|c| c.starts_with("production: apply-manifest"))
        .expect("promote applies a manifest to production");
    let file = apply
        .split_whitespace()
        .skip_while(|w| *w != "-f")
        .nth(1)
        .expect("apply-manifest -f FILE");
    let file = file.replacen("STATE", app.state.to_str().unwrap(), 1);
    assert!(
        file.ends_with("/releases/filter/promoting-staging.manifest.yml"),
        "{apply}"
    );
    let applied = std::fs::read_to_string(&file).unwrap();
    assert_eq!(applied.trim_end(), tagged.trim_end(), "{apply}");
}

/// A secret too short to mask is refused before the run starts, rather than masking every
/// occurrence of its letters or showing it.
#[test]
fn a_secret_too_short_to_mask_is_refused_before_anything_runs() {
    let app = CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    let run = run_of(
        app.command(&["release", "--repo", &origin], None)
            .env("FILTER_TOKEN", "ab")
            .output()
            .unwrap(),
    );
    run.failure(2)
        .stderr_has("the secret FILTER_TOKEN is shorter than 4 characters");
    app.assert_nothing_released();
}

/// Every request body cdflow sends through `cf curl -d` is JSON, whatever the guids it carries
/// hold (here an app guid with a quote and a backslash, which JSON must escape).
#[test]
fn request_bodies_are_json_whatever_the_guids_hold() {
    let app = CfApp::new();
    let tail = r#"-q"b\s"#;
    let run = run_of(
        app.command(&["promote", "--force"], None)
            .env("CF_STANDIN_GUID_TAIL", tail)
            .output()
            .unwrap(),
    );
    run.success();
    let target = format!("guid-filter-production{tail}");
    let bodies: Vec<serde_json::Value> = app
        .calls()
        .iter()
        .filter_map(|call| call.split_once(" -d ").map(|(_, body)| body.to_string()))
        .map(|body| {
            serde_json::from_str(&body).unwrap_or_else(|err| panic!("not JSON ({err}): {body}"))
        })
        .collect();
    assert_eq!(
        bodies,
        [
            serde_json::json!({"relationships": {"app": {"data": {"guid": target}}}}),
            serde_json::json!({
                "droplet": {"guid": "droplet-copy-1"},
                "strategy": "rolling",
                "relationships": {"app": {"data": {"guid": target}}},
            }),
        ]
    );
}

/// Each environment's CF_HOME holds cf's OAuth tokens: it is its owner's alone, when cdflow
/// creates it and when an older cdflow left it open.
#[test]
fn each_cf_home_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let app = CfApp::new();
    let mode = |env: &str| {
        std::fs::metadata(app.state.join("cf").join(env))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    app.cdflow(&["logs", "--env", "staging"], None).success();
    assert_eq!(mode("staging"), 0o700);
    let open = app.state.join("cf/production");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    app.cdflow(&["logs", "--env", "production"], None).success();
    assert_eq!(mode("production"), 0o700);
}

/// Releases the next `count` patch versions (0.1.1, 0.1.2, ...) to staging and production.
pub(crate) fn release_times(app: &CfApp, count: usize) {
    let origin = app.origin.to_str().unwrap().to_string();
    for _ in 0..count {
        app.cdflow(&["release", "--repo", &origin], None).success();
    }
}

/// The cf calls made since the first `before` of them.
pub(crate) fn calls_since(app: &CfApp, before: usize) -> Vec<String> {
    app.calls()[before..].to_vec()
}

/// The cf calls of a rollback of production to `revision`: with `--to`, found through the
/// droplets' annotations first.
pub(crate) fn rollback_to_revision(revision: u32, to_version: bool) -> Vec<String> {
    let mut calls: Vec<String> = LOGIN_PRODUCTION.iter().map(|s| s.to_string()).collect();
    calls.extend([
        "production: app filter --guid".to_string(),
        "production: curl /v3/apps/guid-filter-production/droplets/current".to_string(),
    ]);
    if to_version {
        calls.push(
            "production: curl /v3/apps/guid-filter-production/droplets?per_page=5000".to_string(),
        );
    }
    calls.extend([
        "production: curl /v3/apps/guid-filter-production/revisions?per_page=5000".to_string(),
        format!("production: rollback filter --version {revision} -f"),
        "production: curl /v3/apps/guid-filter-production/processes/web/stats".to_string(),
        "production: curl /v3/apps/guid-filter-production/routes".to_string(),
        "production: curl /v3/apps/guid-filter-production/droplets/current".to_string(),
    ]);
    calls
}

/// `--to VERSION` is a release's version; cf's `--version` is the revision that deployed it.
#[test]
fn rollback_to_a_version_runs_cf_rollback_with_the_revision_that_deployed_it() {
    let app = CfApp::new();
    // Production starts at revision 3; the releases deploy revisions 4 (0.1.1) and 5 (0.1.2).
    release_times(&app, 2);
    let before = app.calls().len();
    let run = app.cdflow(&["rollback", "--env", "production", "--to", "0.1.1"], None);
    run.success()
        .stdout_has("production now serves 0.1.1 (droplet-copy-1)")
        .stdout_has("(found by its droplet's annotation): revision 4, droplet droplet-copy-1");
    assert_eq!(calls_since(&app, before), rollback_to_revision(4, true));
    // A version cdflow never deployed there is refused, naming the ones it did.
    let before = app.calls().len();
    app.cdflow(&["rollback", "--env", "production", "--to", "1.0.1"], None)
        .failure(2)
        .stderr_has("1.0.1 was never deployed to `production` by cdflow")
        .stderr_has("0.1.1, 0.1.2");
    assert!(
        !calls_since(&app, before)
            .iter()
            .any(|c| c.contains("rollback")),
        "{:#?}",
        app.calls()
    );
}

/// A rollback without `--to` goes to the release before the one that serves, by cdflow's own
/// history, and `cf rollback`'s own new revision does not count: twice goes two releases back,
/// and a third finds nothing older.
#[test]
fn bare_rollbacks_go_back_release_by_release_and_never_oscillate() {
    let app = CfApp::new();
    // Revisions 4, 5 and 6 in production: 0.1.1, 0.1.2, 0.1.3.
    release_times(&app, 3);
    let before = app.calls().len();
    app.cdflow(&["rollback", "--env", "production"], None)
        .success()
        .stdout_has("production now serves 0.1.2 (droplet-copy-2)");
    assert_eq!(calls_since(&app, before), rollback_to_revision(5, false));
    // That rollback deployed revision 7; the one before 0.1.2 is 0.1.1, revision 4.
    let before = app.calls().len();
    app.cdflow(&["rollback", "--env", "production"], None)
        .success()
        .stdout_has("production now serves 0.1.1 (droplet-copy-1)");
    assert_eq!(calls_since(&app, before), rollback_to_revision(4, false));
    let before = app.calls().len();
    app.cdflow(&["rollback", "--env", "production"], None)
        .failure(2)
        .stderr_has(
            "`production` serves 0.1.1, the oldest release cdflow remembers deploying there",
        )
        .stderr_has("--to VERSION");
    assert!(
        !calls_since(&app, before)
            .iter()
            .any(|c| c.contains("rollback")),
        "{:#?}",
        app.calls()
    );
    // Two `cf rollback`s in all: the refused third ran none.
    let log = std::fs::read_to_string(&app.log).unwrap();
    assert_eq!(log.matches("\trollback filter").count(), 2);
}

/// CI systems log in with a client: CF_CLIENT_ID and CF_CLIENT_SECRET become the one `cf auth
/// --client-credentials` call's credentials, never on its command line, and each environment
/// is logged in to once per run.
#[test]
fn client_credentials_log_in_once_per_environment() {
    let app = CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    let secret = "client-secret-never-shown";
    let output = app
        .command(&["release", "--repo", &origin], None)
        .env_remove("CF_USERNAME")
        .env_remove("CF_PASSWORD")
        .env("CF_CLIENT_ID", "ci-client")
        .env("CF_CLIENT_SECRET", secret)
        .output()
        .unwrap();
    let run = run_of(output);
    run.success()
        .stdout_has("CF_USERNAME=ci-client CF_PASSWORD=**** cf auth --client-credentials");
    assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
    let calls = app.calls();
    let auths: Vec<&String> = calls.iter().filter(|c| c.contains(": auth")).collect();
    assert_eq!(
        auths,
        [
            "staging: auth --client-credentials",
            "production: auth --client-credentials"
        ],
        "{calls:#?}"
    );
    assert!(
        !app.state_text().contains(secret),
        "no secret in the state folder"
    );
}

/// A client's token expires in a long run and cf cannot refresh it (it keeps no client
/// secret): cdflow logs in again and gives the refused command one more try, and the release
/// goes through. A user's token cf refreshes itself: nothing to do there.
#[test]
fn an_expired_client_token_gets_a_new_login_and_the_run_goes_on() {
    let app = CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    let output = app
        .command(&["release", "--repo", &origin], None)
        .env_remove("CF_USERNAME")
        .env_remove("CF_PASSWORD")
        .env("CF_CLIENT_ID", "ci-client")
        .env("CF_CLIENT_SECRET", "client-secret")
        // Each login lasts three commands of its space.
        .env("CF_STANDIN_TOKEN_CALLS", "3")
        .output()
        .unwrap();
    let run = run_of(output);
    run.success()
        .stdout_has("cf's token for `staging` expired: logging in again")
        .stdout_has("cf's token for `production` expired: logging in again");
    let calls = app.calls();
    let staging_auths = calls
        .iter()
        .filter(|c| *c == "staging: auth --client-credentials")
        .count();
    assert!(staging_auths >= 2, "{calls:#?}");
    // Each login is followed by its target again, then by the refused command.
    let again = calls
        .iter()
        .position(|c| c == "staging: auth --client-credentials")
        .and_then(|first| {
            calls[first + 1..]
                .iter()
                .position(|c| c == "staging: auth --client-credentials")
                .map(|second| first + 1 + second)
        })
        .unwrap();
    assert_eq!(calls[again - 1], "staging: api https://api.cf.example.com");
    assert_eq!(calls[again + 1], "staging: target -o acme -s staging");
    assert_eq!(app.origin_git(&["tag", "-l"]), "v0.1.1");
}

/// A cf CLI older than v7, and e2e tests that would have no URL (a `no-route` app with no `url`
/// in cdflow.toml), are refused before anything runs.
#[test]
fn an_old_cf_cli_and_an_e2e_without_a_url_are_refused_before_anything_runs() {
    let app = CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    let old_cli = app
        .command(&["release", "--repo", &origin], None)
        .env("CF_STANDIN_VERSION", "6.53.0+8e2b70a.2020-10-01")
        .output()
        .unwrap();
    run_of(old_cli)
        .failure(2)
        .stderr_has("the cf CLI is 6.53.0+8e2b70a.2020-10-01: cdflow needs v7 or later");

    let config = app.project.read("cdflow.toml");
    let config: String = config
        .lines()
        .filter(|line| !line.starts_with("url = "))
        .map(|line| format!("{line}\n"))
        .collect();
    app.project.write("cdflow.toml", &config);
    let manifest = app
        .project
        .read("manifest.yml")
        .replace("  memory: 64M\n", "  memory: 64M\n  no-route: true\n");
    app.project.write("manifest.yml", &manifest);
    app.project.git_cmd(&["commit", "-qam", "no route"]);
    app.project.git_cmd(&["push", "-q", "origin", "main"]);
    app.cdflow(&["release", "--repo", &origin], None)
        .failure(2)
        .stderr_has("the e2e tests against `staging` have no URL");
    app.assert_nothing_released();
}

/// `cdflow status` shows the cf environments too: the version cdflow deployed there, the
/// droplet, and how many instances run, from the Cloud Controller's stats.
#[test]
fn status_shows_the_cf_environments() {
    let app = CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    app.cdflow(&["release", "--repo", &origin], None).success();
    let status = app.cdflow(&["status"], None);
    status
        .success()
        .stdout_has("staging: filter 0.1.1 (droplet-staging-1)")
        .stdout_has("on cf, 1 of 1 instance(s) running")
        // Production has no `url` in cdflow.toml: its route comes from cf.
        .stdout_has(
            "production: filter 0.1.1 (droplet-copy-1) at https://filter-production.apps.example.com \
             on cf, 2 of 2 instance(s) running",
        );
    assert!(
        app.calls()
            .iter()
            .any(|c| c == "production: curl /v3/apps/guid-filter-production/processes/web/stats"),
        "{:#?}",
        app.calls()
    );
    // The same, typed, for scripts.
    let json = app.cdflow(&["status", "--json"], None);
    json.success();
    let production = environment_of(&json, "filter", "production").unwrap();
    assert_eq!(production["platform"], "cf");
    assert_eq!(production["state"], "serving");
    assert_eq!(production["version"], "0.1.1");
    assert_eq!(production["artifact"], "droplet-copy-1");
    assert_eq!(production["running"], 2);
    assert_eq!(production["desired"], 2);
    assert_eq!(
        production["url"],
        "https://filter-production.apps.example.com"
    );
}

/// What cdflow deploys on cf carries its version as droplet metadata, which the foundation keeps
/// whatever happens to cdflow's state folder (a fresh CI runner): `status` and `rollback --to`
/// read it there, and a rollback revision, which copies no metadata, runs a marked droplet.
#[test]
fn the_droplets_annotation_names_the_version_when_cdflow_remembers_nothing() {
    let app = CfApp::new();
    // Production: revision 4 runs droplet-copy-1 (0.1.1), revision 5 droplet-copy-2 (0.1.2).
    release_times(&app, 2);
    let foundation = PathBuf::from(format!("{}.foundation", app.log.display()));
    let metadata = |droplet: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(foundation.join("metadata").join(droplet));
        serde_json::from_str(&text.unwrap_or_else(|_| "null".into())).unwrap()
    };
    for (droplet, version) in [
        ("droplet-staging-1", "0.1.1"),
        ("droplet-copy-1", "0.1.1"),
        ("droplet-staging-2", "0.1.2"),
        ("droplet-copy-2", "0.1.2"),
    ] {
        assert_eq!(
            metadata(droplet),
            serde_json::json!({
                "labels": {"cdflow/version": version},
                "annotations": {"cdflow/version": version},
            }),
            "{droplet}"
        );
    }
    // cdflow's memory of what it deployed is gone.
    std::fs::remove_dir_all(app.state.join("releases")).unwrap();
    app.cdflow(&["status"], None)
        .success()
        .stdout_has("production: filter 0.1.2 (droplet-copy-2)");
    let before = app.calls().len();
    app.cdflow(&["rollback", "--env", "production", "--to", "0.1.1"], None)
        .success()
        .stdout_has("rolling `production` back to 0.1.1 (found by its droplet's annotation): revision 4, droplet droplet-copy-1")
        .stdout_has("production now serves 0.1.1 (droplet-copy-1)");
    assert_eq!(calls_since(&app, before), rollback_to_revision(4, true));
    // The rollback's revision 6 reuses the droplet, and with it the version it says.
    app.cdflow(&["status"], None)
        .success()
        .stdout_has("production: filter 0.1.1 (droplet-copy-1)");
    app.cdflow(&["rollback", "--env", "production", "--to", "0.1.1"], None)
        .failure(2)
        .stderr_has(
            "`production` already serves 0.1.1 (droplet-copy-1): there is nothing to roll back",
        );
    let log = std::fs::read_to_string(&app.log).unwrap();
    assert_eq!(log.matches("\trollback filter").count(), 1);
}

/// With no `url` for a cf environment, only cf knows the route: a dry run prints the plan with
/// a placeholder that names it, and passes; a real run gives the e2e tests the route cf
/// answers, as does a later `cdflow e2e` alone.
#[test]
fn without_a_url_a_dry_run_shows_a_placeholder_route_and_a_real_run_uses_cfs() {
    let app = CfApp::new();
    let origin = app.origin.to_str().unwrap().to_string();
    let config: String = app
        .project
        .read("cdflow.toml")
        .lines()
        .filter(|line| !line.starts_with("url = "))
        .map(|line| format!("{line}\n"))
        .collect::<String>()
        // No request leaves loopback: the e2e command only writes down its APP_URL.
        .replace(
            "command = \"sh -c 'curl -fsS \\\"$APP_URL/health\\\" && touch \\\"$E2E_MARKER\\\"'\"",
            "command = \"sh -c 'echo \\\"$APP_URL\\\" >> \\\"$E2E_MARKER\\\"'\"",
        );
    assert!(config.contains(">> "), "{config}");
    app.project.write("cdflow.toml", &config);
    app.project.git_cmd(&["commit", "-qam", "no url"]);
    app.project.git_cmd(&["push", "-q", "origin", "main"]);

    let dry = app.cdflow(&["release", "--repo", &origin, "--dry-run"], None);
    dry.success()
        .stdout_has("APP_URL='https://<route of filter in staging>' sh -c")
        .stdout_has("dry run: nothing was changed");
    app.assert_nothing_released();
    assert!(!app.marker.exists(), "a dry run runs no e2e");

    app.cdflow(&["release", "--repo", &origin], None)
        .success()
        .stdout_has("staging serves 0.1.1 at https://filter-staging.apps.example.com");
    assert_eq!(
        std::fs::read_to_string(&app.marker).unwrap(),
        "https://filter-staging.apps.example.com\n"
    );
    let before = app.calls().len();
    app.cdflow(&["e2e", "--against", "staging"], None).success();
    assert_eq!(
        std::fs::read_to_string(&app.marker).unwrap(),
        "https://filter-staging.apps.example.com\n".repeat(2)
    );
    assert!(calls_since(&app, before)
        .contains(&"staging: curl /v3/apps/guid-filter-staging/routes".to_string()));
}

/// A Rust app for `binary_buildpack` goes to cf as the binary cdflow builds, not as its
/// sources: `cargo build --release`, then `cf push -p` of a folder holding the executable, a
/// Procfile with the start command, and the file that command names; a dry run shows both.
#[test]
fn a_rust_app_for_the_binary_buildpack_is_pushed_as_its_built_binary() {
    let config = "[app]\nname = \"hello-cf\"\n\n[version]\ncurrent = \"0.1.0\"\n\n[test]\nunit = \"true\"\n\n[env.staging]\nplatform = \"cf\"\napi = \"https://api.cf.example.com\"\norg = \"acme\"\nspace = \"staging\"\nurl = \"https://hello.example.com\"\n";
    let manifest = "applications:\n- name: hello-cf\n  command: ./hello_cf --config conf/app.toml\n  memory: 32M\n  buildpacks:\n  - binary_buildpack\n";
    let main = "fn main() {\n    let config = std::env::args().nth(2).unwrap_or_default();\n    println!(\"hello from cf with {config}\");\n}\n";
    let project = Project::git(&[
        ("cdflow.toml", config),
        ("manifest.yml", manifest),
        (
            "Cargo.toml",
            "[package]\nname = \"hello_cf\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        ),
        ("src/main.rs", main),
        ("conf/app.toml", "greeting = \"hi\"\n"),
    ]);
    let app = CfApp::with_origin(project);
    let manifest_path = app.project.path("manifest.yml");
    let push = format!(
        "push hello-cf -f {} -p STATE/cf-push/staging --strategy rolling",
        manifest_path.display()
    );

    let dry = app.cdflow(&["push", "--env", "staging", "--dry-run"], None);
    dry.success()
        .stdout_has("build --release --bin hello_cf")
        .stdout_has(&format!(
            " cf {}",
            push.replace("STATE/", &format!("{}/", app.state.display()))
        ));
    assert!(app.calls().is_empty(), "a dry run calls no cf");
    assert!(
        !app.state.join("cf-push").exists(),
        "a dry run lays out nothing"
    );
    // Before the run: a warning when the build would be linked against a glibc newer than
    // cflinuxfs4's 2.35 (as on Debian 12, with 2.36), with the fix.
    let query = |program: &str, args: &[&str]| {
        let output = std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let musl = query("rustup", &["target", "list", "--installed"])
        .lines()
        .any(|line| line == "x86_64-unknown-linux-musl");
    let glibc = query("getconf", &["GNU_LIBC_VERSION"]);
    let minor: u32 = glibc.trim().rsplit('.').next().unwrap().parse().unwrap();
    let warning = "`rustup target add x86_64-unknown-linux-musl` builds it static";
    assert_eq!(
        dry.stderr.contains(warning),
        !musl && minor > 35,
        "{glibc}, musl installed: {musl}\n{dry}"
    );

    app.cdflow(&["push", "--env", "staging"], None)
        .success()
        .stdout_has("staging serves 0.1.0 at https://hello.example.com");
    let mut expected: Vec<String> = LOGIN_STAGING.iter().map(|s| s.to_string()).collect();
    expected.extend([
        format!("staging: {push}"),
        "staging: app hello-cf --guid".into(),
        "staging: curl /v3/apps/guid-hello-cf-staging/processes/web/stats".into(),
        "staging: curl /v3/apps/guid-hello-cf-staging/routes".into(),
        "staging: curl /v3/apps/guid-hello-cf-staging/droplets/current".into(),
        mark("staging", "droplet-staging-1", "0.1.0"),
    ]);
    assert_eq!(app.calls(), expected);

    // What cf was given to upload, when it ran: the binary (executable), the Procfile and the
    // file the command names; no sources.
    let foundation = format!("{}.foundation", app.log.display());
    let uploaded =
        std::fs::read_to_string(Path::new(&foundation).join("staging/uploaded")).unwrap();
    let paths: Vec<&str> = uploaded
        .lines()
        .map(|line| line.split_once(' ').unwrap().1)
        .collect();
    assert_eq!(
        paths,
        ["Procfile", "conf", "conf/app.toml", "hello_cf"],
        "{uploaded}"
    );
    assert!(uploaded.contains("755 hello_cf"), "{uploaded}");
    let folder = app.state.join("cf-push/staging");
    assert_eq!(
        std::fs::read_to_string(folder.join("Procfile")).unwrap(),
        "web: ./hello_cf --config conf/app.toml\n"
    );
    // The start command runs, from the folder, as the binary buildpack runs it.
    let ran = std::process::Command::new("./hello_cf")
        .args(["--config", "conf/app.toml"])
        .current_dir(&folder)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "hello from cf with conf/app.toml\n"
    );
}

/// The stand-in cf itself, called directly, in the CF_HOME `home`, logging to `log`, with none
/// of the instructions a test may have left in the environment.
fn stand_in(home: &Path, log: &Path) -> std::process::Command {
    let mut command =
        std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cf"));
    command.env("CF_HOME", home).env("CF_STANDIN_LOG", log);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CF_STANDIN_") && name != "CF_STANDIN_LOG" {
            command.env_remove(name);
        }
    }
    command
}

/// The stand-in holds to what cdflow depends on in cf v8, so that a cdflow that broke it would
/// fail these tests as it would fail against a foundation.
#[test]
fn the_cf_stand_in_holds_to_cf_v8_semantics() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("staging");
    std::fs::create_dir_all(&home).unwrap();
    let log = root.path().join("cf.log");
    let cf = |args: &[&str], credentials: bool| {
        let mut command = stand_in(&home, &log);
        command
            .args(args)
            .env_remove("CF_USERNAME")
            .env_remove("CF_PASSWORD");
        if credentials {
            command
                .env("CF_USERNAME", "ci-client")
                .env("CF_PASSWORD", PASSWORD);
        }
        run_of(command.output().unwrap())
    };
    // A login needs an API endpoint first, and credentials only from the environment.
    cf(&["target", "-o", "acme", "-s", "staging"], true)
        .failure(1)
        .stderr_has("No API endpoint set");
    cf(&["api", "https://api.cf.example.com"], false).success();
    cf(&["auth", "--client-credentials"], false)
        .failure(1)
        .stderr_has("CF_USERNAME and CF_PASSWORD must be set");
    cf(&["auth", "ci-client", PASSWORD], false)
        .failure(1)
        .stderr_has("not on the command line");
    cf(&["app", "filter", "--guid"], true)
        .failure(1)
        .stderr_has("Not logged in");
    cf(&["auth", "--client-credentials"], true).success();
    cf(&["app", "filter", "--guid"], true)
        .failure(1)
        .stderr_has("No org and space targeted");
    cf(&["target", "-o", "acme", "-s", "staging"], false).success();
    cf(&["app", "filter", "--guid"], false)
        .success()
        .stdout_has("guid-filter-staging");
    // The v3 API answers JSON; a guid cf never gave, or a body that is not the JSON the
    // endpoint takes, gets the Cloud Controller's error document.
    let json = |run: &Run| -> serde_json::Value { serde_json::from_str(&run.stdout).unwrap() };
    let stats = cf(
        &["curl", "/v3/apps/guid-filter-staging/processes/web/stats"],
        false,
    );
    assert_eq!(json(&stats)["resources"][0]["state"], "RUNNING");
    let unknown = cf(&["curl", "/v3/apps/guid-other/processes/web/stats"], false);
    assert_eq!(json(&unknown)["errors"][0]["title"], "CF-ResourceNotFound");
    let bad_body = cf(
        &[
            "curl",
            "-X",
            "POST",
            "/v3/deployments",
            "-d",
            "{droplet: droplet-staging}",
        ],
        false,
    );
    assert_eq!(
        json(&bad_body)["errors"][0]["title"],
        "CF-UnprocessableEntity"
    );
    let body = serde_json::json!({
        "droplet": {"guid": "droplet-staging"},
        "relationships": {"app": {"data": {"guid": "guid-filter-staging"}}},
    })
    .to_string();
    let deployment = cf(
        &["curl", "-X", "POST", "/v3/deployments", "-d", &body],
        false,
    );
    assert_eq!(json(&deployment)["revision"]["version"], 4, "{deployment}");
    // Revisions are integers; a rollback asks for confirmation unless -f, and makes a revision.
    cf(&["rollback", "filter", "--version", "0.1.1", "-f"], false)
        .failure(1)
        .stderr_has("expected int > 0");
    cf(&["rollback", "filter", "--version", "3"], false)
        .failure(1)
        .stderr_has("Are you sure");
    cf(&["rollback", "filter", "--version", "3", "-f"], false).success();
    let revisions = cf(&["curl", "/v3/apps/guid-filter-staging/revisions"], false);
    let versions: Vec<u64> = json(&revisions)["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [3, 4, 5]);
    assert_eq!(
        json(&revisions)["resources"][2]["droplet"]["guid"],
        "droplet-staging"
    );
    // Nothing of a secret is kept in CF_HOME.
    let mut kept = String::new();
    for entry in std::fs::read_dir(home.join(".cf")).unwrap() {
        kept.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    assert!(!kept.contains(PASSWORD), "{kept}");
}

/// A loopback server standing for a cf route: 200 to every request, except while the stand-in
/// says a canary that fails is paused (`CF_STANDIN_LOG.route` holds the percentage of errors
/// it makes the route answer). Counts the requests it answered.
fn serve_route(log: &Path) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let route = PathBuf::from(format!("{}.route", log.display()));
    let answered = std::sync::Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let n = count.fetch_add(1, Ordering::SeqCst);
            let errors: usize = std::fs::read_to_string(&route)
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(0);
            let fail = errors > 0 && n % (100 / errors).max(1) == 0;
            let answer: &[u8] = match fail {
                true => b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                false => b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{\"status\":\"up\"}",
            };
            let _ = stream.write_all(answer);
        }
    });
    (url, answered)
}

/// The canary settings the tests give an environment: three steps, a one-second window.
pub(crate) const CANARY: &str = "strategy = \"canary\"\ncanary_steps = [10, 50, 100]\ncanary_window = 1\ncanary_max_error_rate = 5.0\ncanary_min_requests = 10\n";

/// The cf app with both environments' routes served on loopback, `canary` settings for
/// staging and production, and an e2e command that writes `verify: e2e` into the cf log, so
/// that the verification shows in order among the cf calls.
pub(crate) fn canary_app(
    staging: &str,
    production: &str,
) -> (CfApp, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let app = CfApp::new();
    let (url, answered) = serve_route(&app.log);
    let config: String = app
        .project
        .read("cdflow.toml")
        .lines()
        .filter(|line| !line.starts_with("url = "))
        .map(|line| match line {
            "space = \"staging\"" => format!("{line}\nurl = \"{url}\"\n{staging}"),
            "space = \"production\"" => format!("{line}\nurl = \"{url}\"\n{production}"),
            line if line.starts_with("command = ") => "command = \"sh -c 'curl -fsS \\\"$APP_URL/health\\\" && printf \\\"verify\\\\te2e\\\\t\\\\n\\\" >>\\\"$CF_STANDIN_LOG\\\"'\"\n".to_string(),
            line => format!("{line}\n"),
        })
        .collect();
    app.project.write("cdflow.toml", &config);
    app.project.git_cmd(&["commit", "-qam", "canary releases"]);
    app.project.git_cmd(&["push", "-q", "origin", "main"]);
    (app, answered)
}

/// The cf calls of a verified canary's pauses: at each, the e2e tier, then
/// `cf continue-deployment`, until cf says the deployment is done.
fn canary_pauses(env: &str) -> Vec<String> {
    let mut calls = Vec::new();
    for _ in 0..3 {
        calls.push(format!("{env}: curl /v3/deployments/deployment-1"));
        calls.push("verify: e2e".to_string());
        calls.push(format!("{env}: continue-deployment filter"));
    }
    calls.push(format!("{env}: curl /v3/deployments/deployment-1"));
    calls
}

pub(crate) fn canary_run(app: &CfApp, args: &[&str], errors: Option<&str>) -> Run {
    let mut command = app.command(args, None);
    command.env("CF_STANDIN_VERSION", "8.10.0+7cd5bb3.2024-12-16");
    match errors {
        Some(errors) => command.env("CF_STANDIN_CANARY_ERRORS", errors),
        None => command.env_remove("CF_STANDIN_CANARY_ERRORS"),
    };
    run_of(command.output().unwrap())
}

#[test]
fn a_healthy_canary_is_verified_at_each_pause_and_continued_on_push_and_promote() {
    let (app, answered) = canary_app(CANARY, CANARY);
    let origin = app.origin.to_str().unwrap().to_string();
    let run = canary_run(&app, &["release", "--repo", &origin], None);
    run.success()
        .stdout_has("canary pause 3 in `production`")
        .stdout_has("10 probes, 0.0% errors");
    let mut expected: Vec<String> = LOGIN_STAGING.iter().map(|s| s.to_string()).collect();
    expected.extend([
        // Whether the Cloud Controller takes canary steps (API 3.189.0 or later).
        "staging: curl /".to_string(),
        "staging: push filter -f WORKSPACE/manifest.yml --var instances=1 --strategy canary --instance-steps 10,50,100".to_string(),
        "staging: app filter --guid".to_string(),
        "staging: curl /v3/deployments?app_guids=guid-filter-staging&status_values=ACTIVE&order_by=-created_at".to_string(),
    ]);
    expected.extend(canary_pauses("staging"));
    expected.extend(push_to_staging().into_iter().skip(4));
    // The e2e stage itself.
    expected.push("verify: e2e".to_string());
    let promote = promote_to_production();
    let post = promote
        .iter()
        .position(|c| c.starts_with("production: curl -X POST /v3/deployments"))
        .unwrap();
    let copy = promote
        .iter()
        .position(|c| c.starts_with("production: curl -X POST /v3/droplets"))
        .unwrap();
    expected.extend(promote[..copy].iter().cloned());
    // Whether the Cloud Controller takes canaries and steps, before anything changes.
    expected.push("production: curl /".to_string());
    expected.extend(promote[copy..post].iter().cloned());
    expected.extend([
        "production: curl -X POST /v3/deployments -d {\"droplet\":{\"guid\":\"droplet-copy-1\"},\"options\":{\"canary\":{\"steps\":[{\"instance_weight\":10},{\"instance_weight\":50},{\"instance_weight\":100}]}},\"relationships\":{\"app\":{\"data\":{\"guid\":\"guid-filter-production\"}}},\"strategy\":\"canary\"}".to_string(),
    ]);
    expected.extend(canary_pauses("production"));
    expected.extend(promote[post + 1..].iter().cloned());
    assert_eq!(app.calls(), expected);
    // Both the stable versions and each pause's canary got their probes: 10 a window.
    let probes = answered.load(std::sync::atomic::Ordering::SeqCst);
    assert!(probes >= 2 * (1 + 3) * 10, "{probes} requests");
    let foundation = PathBuf::from(format!("{}.foundation", app.log.display()));
    let current = |space: &str| std::fs::read_to_string(foundation.join(space).join("current"));
    assert_eq!(current("staging").unwrap().trim(), "droplet-staging-1");
    assert_eq!(current("production").unwrap().trim(), "droplet-copy-1");
}

#[test]
fn a_canary_that_breaks_its_thresholds_is_cancelled_and_the_run_fails_with_the_numbers() {
    let (app, _) = canary_app(CANARY, "");
    let origin = app.origin.to_str().unwrap().to_string();
    let run = canary_run(&app, &["release", "--repo", &origin], Some("50"));
    run.failure(1)
        .stderr_has("the canary broke its thresholds: error rate 50.0% (5 of 10 probes) against the stable version's 0.0%")
        .stderr_has("more than the 5.0 allowed (canary_max_error_rate)")
        .stderr_has("the canary deployment in `staging` was cancelled: the stable version serves again");
    let calls = app.calls();
    let tail: Vec<&str> = calls
        .iter()
        .rev()
        .take(6)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "staging: curl /v3/deployments/deployment-1",
            "staging: cancel-deployment filter",
            "staging: curl /v3/deployments/deployment-1",
            "staging: app filter --guid",
            "staging: curl /v3/apps/guid-filter-staging/processes/web/stats",
            "staging: curl /v3/apps/guid-filter-staging/routes",
        ]
    );
    assert!(
        !calls.iter().any(|c| c.contains("continue-deployment")),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("verify")),
        "no e2e: {calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("production")),
        "{calls:?}"
    );
    // The stable droplet still serves staging.
    let foundation = PathBuf::from(format!("{}.foundation", app.log.display()));
    let current = std::fs::read_to_string(foundation.join("staging/current")).unwrap();
    assert_eq!(current.trim(), "droplet-staging");
}

#[test]
fn a_promote_whose_canary_fails_is_cancelled_without_a_rollback() {
    let (app, _) = canary_app("", CANARY);
    let origin = app.origin.to_str().unwrap().to_string();
    let run = canary_run(&app, &["--json", "release", "--repo", &origin], Some("50"));
    run.failure(1);
    // The typed event of the pause (checked against the schema by the harness), then the error.
    let events = run.events();
    let canary = events
        .iter()
        .find(|e| e["event"] == "canary")
        .unwrap_or_else(|| panic!("no canary event: {run}"));
    assert_eq!(canary["env"], "production");
    assert_eq!(canary["pause"], 1);
    assert_eq!(canary["passed"], false);
    assert_eq!(canary["canary"]["errors"], 5);
    assert_eq!(canary["canary"]["requests"], 10);
    assert_eq!(canary["stable"]["error_rate"], 0.0);
    let reason = canary["reason"].as_str().unwrap();
    assert!(
        reason.contains("error rate 50.0% (5 of 10 probes)"),
        "{reason}"
    );
    assert!(
        run.stdout
            .contains("the canary deployment in `production` was cancelled")
            || run
                .stderr
                .contains("the canary deployment in `production` was cancelled"),
        "{run}"
    );
    let calls = app.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("production: cancel-deployment filter"))
            .count(),
        1,
        "{calls:?}"
    );
    // The cancel gave production back to its stable droplet: no `cf rollback` on top of it.
    assert!(!calls.iter().any(|c| c.contains("rollback")), "{calls:?}");
    let foundation = PathBuf::from(format!("{}.foundation", app.log.display()));
    let current = std::fs::read_to_string(foundation.join("production/current")).unwrap();
    assert_eq!(current.trim(), "droplet-production");
}

#[test]
fn a_canary_on_a_cf_cli_before_8_8_is_refused_and_older_apis_get_one_step() {
    let (app, _) = canary_app(CANARY, "");
    let origin = app.origin.to_str().unwrap().to_string();
    // The stand-in's own default CLI is 8.7.
    app.cdflow(&["release", "--repo", &origin], None)
        .failure(2)
        .stderr_has("strategy = \"canary\" needs the cf CLI 8.8 or later, and this one is 8.7.10");
    app.assert_nothing_released();
    // A Cloud Controller older than API 3.189.0 takes no steps: one canary instance, said so.
    let mut command = app.command(&["push", "--to", "staging"], None);
    command
        .env("CF_STANDIN_VERSION", "8.10.0+7cd5bb3.2024-12-16")
        .env("CF_STANDIN_API_VERSION", "3.180.0");
    let run = run_of(command.output().unwrap());
    run.success()
        .stderr_has("has API 3.180.0, older than 3.189.0, which takes canary steps");
    let calls = app.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("staging: push filter -f ")
                && c.ends_with("manifest.yml --var instances=1 --strategy canary")),
        "no --instance-steps: {calls:?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.contains("continue-deployment"))
            .count(),
        1,
        "one pause: {calls:?}"
    );
}

#[test]
fn a_dry_run_of_a_canary_release_shows_its_probes_pauses_and_continue() {
    let (app, answered) = canary_app(CANARY, CANARY);
    let origin = app.origin.to_str().unwrap().to_string();
    let run = canary_run(&app, &["release", "--repo", &origin, "--dry-run"], None);
    run.success()
        .stdout_has("--strategy canary --instance-steps 10,50,100")
        .stdout_has("curl --silent --max-time 10 --rate 10/s --write-out '%{http_code} %{time_total}\\n' --config -")
        .stdout_has("cf continue-deployment filter")
        .stdout_has("\"strategy\":\"canary\"");
    // Only the preflight's look at the CLI ran: no cf call, no probe.
    assert_eq!(app.calls(), Vec::<String>::new());
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// Stopped (SIGTERM) while a paused canary is being verified, cdflow still cancels the canary,
/// so that it does not keep its share of the route, and ends as interrupted.
#[test]
fn a_run_stopped_during_the_verification_cancels_the_canary() {
    let (app, _) = canary_app(CANARY, "");
    let mark = app.project.dir.parent().unwrap().join("e2e.sleeping");
    let config = app.project.read("cdflow.toml");
    let e2e = config
        .lines()
        .find(|line| line.starts_with("command = "))
        .unwrap()
        .to_string();
    let config = config.replace(
        &e2e,
        &format!(
            "command = \"sh -c 'sleep 60 & echo $! > {}; wait'\"",
            mark.display()
        ),
    );
    app.project.write("cdflow.toml", &config);
    let mut command = app.command(&["push", "--to", "staging"], None);
    command
        .env("CF_STANDIN_VERSION", "8.10.0+7cd5bb3.2024-12-16")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let cdflow = command.spawn().unwrap();
    crate::harness::wait_for("the canary's e2e tier to sleep", || {
        std::fs::read_to_string(&mark).is_ok_and(|pid| pid.ends_with('\n'))
    });
    unsafe { libc::kill(cdflow.id() as i32, libc::SIGTERM) };
    let output = cdflow.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("was cancelled"), "{stderr}");
    let calls = app.calls();
    assert_eq!(
        calls.last().map(String::as_str),
        Some("staging: cancel-deployment filter"),
        "{calls:?}"
    );
    let foundation = PathBuf::from(format!("{}.foundation", app.log.display()));
    let current = std::fs::read_to_string(foundation.join("staging/current")).unwrap();
    assert_eq!(current.trim(), "droplet-staging");
    let sleeper = std::fs::read_to_string(&mark).unwrap();
    assert!(
        !crate::harness::pid_alive(sleeper.trim()),
        "the e2e tier was stopped"
    );
}

/// The stand-in's canary deployments hold to cf's: which CLI takes which flag, a pause per
/// step, continue and cancel only of an active deployment, the stable droplet serving until
/// the last step.
#[test]
fn the_cf_stand_in_plays_canary_deployments_as_cf_does() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("staging");
    std::fs::create_dir_all(&home).unwrap();
    let log = root.path().join("cf.log");
    let cf = |args: &[&str], cli: &str| {
        let mut command = stand_in(&home, &log);
        command
            .args(args)
            .env("CF_STANDIN_VERSION", cli)
            .env("CF_USERNAME", "ci-bot")
            .env("CF_PASSWORD", PASSWORD);
        run_of(command.output().unwrap())
    };
    let v8_10 = "8.10.0+7cd5bb3.2024-12-16";
    cf(&["api", "https://api.cf.example.com"], v8_10).success();
    cf(&["auth"], v8_10).success();
    cf(&["target", "-o", "acme", "-s", "staging"], v8_10).success();
    cf(&["app", "filter", "--guid"], v8_10).success();
    let push = |extra: &[&str], cli: &str| {
        let mut args = vec!["push", "filter", "-f", "manifest.yml"];
        args.extend_from_slice(extra);
        cf(&args, cli)
    };
    push(&["--strategy", "canary"], "8.7.10+5b7ce3c.2024-04-04")
        .failure(1)
        .stderr_has("Invalid value `canary'");
    push(
        &["--strategy", "canary", "--instance-steps", "10,50"],
        "8.9.1",
    )
    .failure(1)
    .stderr_has("unknown flag `instance-steps'");
    push(
        &["--strategy", "rolling", "--instance-steps", "10,50"],
        v8_10,
    )
    .failure(1)
    .stderr_has("cannot be used together");
    cf(&["continue-deployment", "filter"], v8_10)
        .failure(1)
        .stderr_has("No active deployment found");
    push(
        &["--strategy", "canary", "--instance-steps", "10,50"],
        v8_10,
    )
    .success();
    let json = |run: &Run| -> serde_json::Value { serde_json::from_str(&run.stdout).unwrap() };
    let deployment = || json(&cf(&["curl", "/v3/deployments/deployment-1"], v8_10));
    let current = || {
        json(&cf(
            &["curl", "/v3/apps/guid-filter-staging/droplets/current"],
            v8_10,
        ))["guid"]
            .clone()
    };
    assert_eq!(deployment()["status"]["reason"], "PAUSED");
    assert_eq!(deployment()["status"]["canary"]["steps"]["current"], 1);
    assert_eq!(current(), "droplet-staging");
    cf(&["continue-deployment", "filter"], v8_10).success();
    assert_eq!(deployment()["status"]["reason"], "PAUSED");
    assert_eq!(deployment()["status"]["canary"]["steps"]["current"], 2);
    cf(&["continue-deployment", "filter"], v8_10).success();
    assert_eq!(deployment()["status"]["value"], "FINALIZED");
    assert_eq!(deployment()["status"]["reason"], "DEPLOYED");
    assert_eq!(current(), "droplet-staging-1");
    // A cancelled canary leaves the stable droplet serving.
    push(&["--strategy", "canary"], v8_10).success();
    let active = json(&cf(
        &[
            "curl",
            "/v3/deployments?app_guids=guid-filter-staging&status_values=ACTIVE",
        ],
        v8_10,
    ));
    assert_eq!(active["resources"][0]["guid"], "deployment-2");
    cf(&["cancel-deployment", "filter"], v8_10).success();
    let cancelled = json(&cf(&["curl", "/v3/deployments/deployment-2"], v8_10));
    assert_eq!(cancelled["status"]["reason"], "CANCELED");
    assert_eq!(current(), "droplet-staging-1");
    cf(&["cancel-deployment", "filter"], v8_10)
        .failure(1)
        .stderr_has("No active deployment found");
}

#[test]
fn a_cloud_controller_without_canary_deployments_is_refused_before_the_push() {
    let (app, _) = canary_app(CANARY, "");
    let mut command = app.command(&["push", "--to", "staging"], None);
    command
        .env("CF_STANDIN_VERSION", "8.10.0+7cd5bb3.2024-12-16")
        .env("CF_STANDIN_API_VERSION", "3.160.0");
    run_of(command.output().unwrap())
        .failure(2)
        .stderr_has("has API 3.160.0, older than 3.173.0, which brought canary deployments")
        .stderr_has("set `strategy = \"rolling\"` in [env.staging]");
    let calls = app.calls();
    assert_eq!(
        calls.last().map(String::as_str),
        Some("staging: curl /"),
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.contains(" push ")), "{calls:?}");
}

/// A pause whose window held fewer probes than canary_min_requests is not passed on them: the
/// canary is cancelled with the count and the fix.
#[test]
fn a_canary_with_too_few_probes_in_its_window_is_cancelled_with_the_fix() {
    let few = CANARY.replace("canary_min_requests = 10", "canary_min_requests = 20");
    let (app, _) = canary_app(&few, "");
    let origin = app.origin.to_str().unwrap().to_string();
    let run = canary_run(&app, &["release", "--repo", &origin], None);
    run.failure(1)
        .stderr_has("the canary cannot be judged: the 1 s window counted 10 probes of it, fewer than the 20 needed (canary_min_requests); give it canary_window = 2 or more")
        .stderr_has("the canary deployment in `staging` was cancelled");
    let calls = app.calls();
    assert!(
        !calls.iter().any(|c| c.contains("continue-deployment")),
        "{calls:?}"
    );
}
