//! The push-back through a remote that needs credentials, as a CI's git host does: the bare
//! origin served over HTTP on loopback by `git http-backend` behind a small server that demands
//! Basic auth, with the token given to cdflow only in its environment (`CDFLOW_GIT_TOKEN`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cf::CfApp;
use crate::harness::{files_under, wait_for, Guard};

const TOKEN: &str = "ghs_s3cret-push-token-never-shown";
const USER: &str = "x-access-token";

/// A smart-HTTP git server: every request needs `Authorization: Basic USER:TOKEN`, else 401
/// (a private repository); the rest is `git http-backend`, run as CGI. The expected header
/// comes in the environment, so that no argv holds the token in this test either.
const SERVER: &str = include_str!("../fixtures/servers/git_http.py");

/// The server, stopped when dropped.
struct GitServer {
    _server: Guard,
    /// `http://127.0.0.1:PORT/origin.git`: the app's bare origin.
    url: String,
    log: PathBuf,
}

impl GitServer {
    fn serve(app: &CfApp) -> GitServer {
        let root = app.origin.parent().unwrap();
        let script = root.join("serve-git.py");
        std::fs::write(&script, SERVER).unwrap();
        let port_file = root.join("git-server.port");
        let log = root.join("git-server.log");
        // Guarded at once: stopped even if it never listens.
        let server = Guard::child(
            Command::new("python3")
                .arg(&script)
                .env("GIT_ROOT", root)
                .env("EXPECTED_AUTH", format!("{USER}:{TOKEN}"))
                .env("PORT_FILE", &port_file)
                .env("SERVER_LOG", &log)
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for("the git server to listen", || port_file.exists());
        let port = std::fs::read_to_string(&port_file).unwrap();
        GitServer {
            _server: server,
            url: format!("http://127.0.0.1:{port}/origin.git"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Every file under `dir`, with its bytes.
fn files_with_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .filter(|path| !path.is_symlink())
        .filter_map(|path| Some((path.clone(), std::fs::read(&path).ok()?)))
        .collect()
}

fn holds(bytes: &[u8], text: &str) -> bool {
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

/// The unit tier writes the environment it was given into `dump`.
fn tier_dumps_env(app: &CfApp) {
    let config = app.project.read("cdflow.toml");
    app.project.write(
        "cdflow.toml",
        &config.replace(
            "unit = \"sh -c 'echo unit tier ran'\"",
            "unit = \"sh -c 'env > \\\"$ENV_DUMP\\\"'\"",
        ),
    );
    app.project.git_cmd(&["commit", "-qam", "dump the env"]);
    app.project.git_cmd(&["push", "-q", "origin", "main"]);
}

#[test]
fn the_push_back_takes_its_token_from_the_environment_and_shows_it_nowhere() {
    let app = CfApp::new();
    tier_dumps_env(&app);
    let server = GitServer::serve(&app);
    let root = app.origin.parent().unwrap().to_path_buf();
    let trace = root.join("git-trace.log");
    let env_dump = root.join("tier-env.txt");
    let output = app
        .command(&["release", "--repo", &server.url], None)
        .env("CDFLOW_GIT_TOKEN", TOKEN)
        .env_remove("CDFLOW_GIT_USERNAME")
        .env_remove("GITLAB_CI")
        // git's own record of every git process and of each child it runs (the credential
        // helper, git-remote-http), with its argv.
        .env("GIT_TRACE", &trace)
        .env("ENV_DUMP", &env_dump)
        .output()
        .unwrap();
    let run = crate::harness::run_of(output);
    run.success();

    // The version commit and its tag arrived, through the server, which let nothing in
    // without the token.
    let tag = app.origin_git(&["rev-parse", "v0.1.1^{commit}"]);
    assert_eq!(tag.len(), 40, "origin has the tag v0.1.1");
    assert_eq!(app.origin_git(&["rev-parse", "main"]), tag);
    assert_eq!(
        app.origin_git(&["log", "-1", "--format=%s", "main"]),
        "Bump version: 0.1.0 → 0.1.1"
    );
    let log = server.log();
    assert!(log.contains("401 GET /origin.git/info/refs"), "{log}");
    assert!(
        log.contains("200 POST /origin.git/git-receive-pack"),
        "{log}"
    );

    assert!(
        !run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN),
        "{run}"
    );
    // Masked where it shows: the push's command line names the variable, not the value.
    assert!(run.stdout.contains("CDFLOW_GIT_PASSWORD=****"), "{run}");

    // No file of the state folder (records, logs, the workspace and its .git/config) or of the
    // checkout holds it.
    let mut files = files_with_bytes(&app.state);
    files.extend(files_with_bytes(&app.project.dir));
    let configs: Vec<_> = files
        .iter()
        .filter(|(path, _)| path.ends_with(".git/config") && path.starts_with(&app.state))
        .collect();
    assert_eq!(configs.len(), 1, "the workspace's clone is there");
    assert!(
        holds(&configs[0].1, &server.url),
        "it cloned the served URL"
    );
    assert!(files.len() > 20, "{} files", files.len());
    for (path, bytes) in &files {
        assert!(!holds(bytes, TOKEN), "{} holds the token", path.display());
    }

    // No git process had it in its argv, nor any child git ran (the helper, the transport).
    let traced = std::fs::read_to_string(&trace).unwrap();
    assert!(traced.contains("push --quiet --atomic origin"), "{traced}");
    assert!(
        traced.contains("f() { test"),
        "the helper's run is traced: {traced}"
    );
    assert!(traced.contains("git-remote-http"), "{traced}");
    assert!(!traced.contains(TOKEN), "an argv holds the token");

    // The app's tests ran without it: only the git commands that talk to origin get it.
    let env = std::fs::read_to_string(&env_dump).unwrap();
    assert!(env.contains("ENV_DUMP="), "{env}");
    assert!(!env.contains(TOKEN) && !env.contains("CDFLOW_GIT"), "{env}");
}

#[test]
fn a_refused_or_missing_token_fails_naming_the_variable() {
    let app = CfApp::new();
    let server = GitServer::serve(&app);
    let wrong = "ghs_wrong-token-also-never-shown";
    let output = app
        .command(&["release", "--repo", &server.url], None)
        .env("CDFLOW_GIT_TOKEN", wrong)
        .env("CDFLOW_GIT_USERNAME", USER)
        .output()
        .unwrap();
    let run = crate::harness::run_of(output);
    assert_ne!(run.code, Some(0), "{run}");
    run.stderr_has(&format!(
        "{} refused the credentials from CDFLOW_GIT_TOKEN (user `{USER}`, from \
         CDFLOW_GIT_USERNAME)",
        server.url
    ));
    assert!(
        !run.stdout.contains(wrong) && !run.stderr.contains(wrong),
        "{run}"
    );
    app.assert_nothing_released();

    let output = app
        .command(&["release", "--repo", &server.url], None)
        .env_remove("CDFLOW_GIT_TOKEN")
        .output()
        .unwrap();
    let run = crate::harness::run_of(output);
    assert_ne!(run.code, Some(0), "{run}");
    run.stderr_has("asks for credentials and none were given: set CDFLOW_GIT_TOKEN");
    app.assert_nothing_released();
}

#[test]
fn a_token_in_the_url_still_works_with_a_warning_pointing_at_the_variable() {
    let app = CfApp::new();
    let server = GitServer::serve(&app);
    let with_token = server
        .url
        .replace("http://", &format!("http://{USER}:{TOKEN}@"));
    let output = app
        .command(&["release", "--repo", &with_token], None)
        .env_remove("CDFLOW_GIT_TOKEN")
        .output()
        .unwrap();
    let run = crate::harness::run_of(output);
    run.success()
        .stderr_has("--repo carries credentials, and so they are on cdflow's command line")
        .stderr_has("put the token in CDFLOW_GIT_TOKEN");
    assert!(
        !run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN),
        "{run}"
    );
    assert_eq!(
        app.origin_git(&["rev-parse", "v0.1.1^{commit}"]),
        app.origin_git(&["rev-parse", "main"])
    );
}
