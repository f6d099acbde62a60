//! Bad input is refused early and clearly: the file, the line and the fix, with exit code 2.

use crate::harness::Project;

#[test]
fn a_pipeline_file_that_is_not_utf8_is_named_and_the_others_still_listed() {
    let project = Project::empty();
    project.write(
        "pipelines/good.yml",
        "description: our own check\nstages:\n  - kind: test\n",
    );
    let mut bad = b"description: caf".to_vec();
    bad.push(0xe9); // Latin-1 "é"
    bad.extend_from_slice(b"\nstages:\n  - kind: test\n");
    std::fs::write(project.path("pipelines/bad.yml"), bad).unwrap();

    let run = project.cdflow(&["pipelines"]);
    run.failure(2)
        .stdout_has("good       our own check  (pipelines/good.yml)")
        .stdout_has("release    clone, test, bump")
        .stderr_has("pipelines/bad.yml:1:17")
        .stderr_has("not UTF-8");

    project
        .cdflow(&["release", "--pipeline", "bad", "--dry-run"])
        .failure(2)
        .stderr_has("pipelines/bad.yml:1:17")
        .stderr_has("byte 16");
    project
        .cdflow(&["release", "--pipeline", "pipelines/bad.yml", "--dry-run"])
        .failure(2)
        .stderr_has("pipelines/bad.yml:1:17");
}

/// 100,000 levels of nesting in 200 KB: YAML parsers take time quadratic in the depth (minutes
/// for cdflow's before it refused them), so cdflow refuses them before parsing.
#[test]
fn deeply_nested_yaml_is_refused_with_its_line_before_parsing() {
    let levels = 100_000;
    let project = Project::empty();
    project.write(
        "pipelines/deep.yml",
        &format!(
            "description: deep\nstages:\n  - kind: test\n    tiers: {}{}\n",
            "[".repeat(levels),
            "]".repeat(levels)
        ),
    );
    project
        .cdflow(&["release", "--pipeline", "deep", "--dry-run"])
        .failure(2)
        .stderr_has("pipelines/deep.yml:4: nested more than 64 levels deep");

    project.write("cdflow.toml", "[app]\nname = \"web\"\n");
    project.write(
        "manifest.yml",
        &format!(
            "applications:\n- name: web\n  env: {}1{}\n",
            "{a: ".repeat(levels),
            "}".repeat(levels)
        ),
    );
    project
        .cdflow(&["manifest", "--env", "staging"])
        .failure(2)
        .stderr_has("manifest.yml:3: nested more than 64 levels deep");

    project.write("manifest.yml", "applications:\n- name: web\n");
    project.write(
        "cdflow.toml",
        "[app]\nname = \"web\"\n\n[env.staging]\nvars_files = [\"vars.yml\"]\n",
    );
    project.write("vars.yml", &format!("a:\n{}b: 1\n", "- ".repeat(levels)));
    project
        .cdflow(&["manifest", "--env", "staging"])
        .failure(2)
        .stderr_has("vars.yml:2: nested more than 64 levels deep");
}

#[test]
fn port_0_is_refused_with_the_file_line_and_fix() {
    let project = Project::git(&[
        (
            "cdflow.toml",
            "[app]\nname = \"web\"\n\n[version]\ncurrent = \"0.1.0\"\n\n[env.staging]\nport = 0\n",
        ),
        (
            "manifest.yml",
            "applications:\n- name: web\n  command: ./web\n",
        ),
    ]);
    let run = project.cdflow(&["push", "--to", "staging", "--dry-run"]);
    run.failure(2)
        .stderr_has("cdflow.toml")
        .stderr_has("line 8")
        .stderr_has("port 0 is not a port a route can stay on")
        .stderr_has("from 1 to 65535");
    assert!(!run.stdout.contains("127.0.0.1:0"), "{run}");
}

#[test]
fn a_var_value_with_a_newline_stays_one_value_in_the_manifest() {
    let project = Project::git(&[
        (
            "cdflow.toml",
            "[app]\nname = \"web\"\n\n[env.staging]\nvars_files = [\"vars.yml\"]\n",
        ),
        ("vars.yml", "greeting: \"x\\n  evil: 1\"\n"),
        (
            "manifest.yml",
            "applications:\n- name: web\n  command: ((greeting))\n",
        ),
    ]);
    let run = project.cdflow(&["manifest", "--env", "staging"]);
    run.success();
    let manifest: serde_yaml::Value = serde_yaml::from_str(&run.stdout).unwrap();
    let app = &manifest["applications"][0];
    assert_eq!(app["command"], "x\n  evil: 1", "{run}");
    assert_eq!(app.get("evil"), None, "{run}");
}

/// A bare repository served over git's dumb HTTP protocol on loopback, answering only requests
/// whose Basic credentials are `basic` (base64 of `user:password`), as a private repository's
/// host would. Returns the port and the number of requests it let through.
fn serve_with_basic_auth(
    root: std::path::PathBuf,
    basic: &'static str,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let allowed = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&allowed);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push(line.trim_end().to_string());
            }
            let path = head
                .first()
                .and_then(|line| line.split(' ').nth(1))
                .unwrap_or("/")
                .split('?')
                .next()
                .unwrap()
                .to_string();
            let authorized = head.iter().any(|line| {
                line.to_ascii_lowercase().starts_with("authorization:")
                    && line.ends_with(&format!("Basic {basic}"))
            });
            let file = root.join(path.trim_start_matches('/'));
            let response = if !authorized {
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec()
            } else if let (false, Ok(body)) = (path.contains(".."), std::fs::read(&file)) {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                response.extend(body);
                response
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            };
            let _ = stream.write_all(&response);
        }
    });
    (port, allowed)
}

#[test]
fn credentials_in_the_repository_url_are_masked_and_never_written() {
    let project = Project::git(&[
        (
            "cdflow.toml",
            "[app]\nname = \"web\"\n\n[version]\ncurrent = \"0.1.0\"\n\n[test]\nunit = \"true\"\n",
        ),
        ("manifest.yml", "applications:\n- name: web\n"),
        (
            "pipelines/fetch.yml",
            "description: clone and test\nstages:\n  - kind: clone\n  - kind: test\n",
        ),
    ]);
    let origin = project.dir.parent().unwrap().join("origin.git");
    project.git_cmd(&["clone", "-q", "--bare", ".", origin.to_str().unwrap()]);
    project.git_cmd(&["-C", origin.to_str().unwrap(), "update-server-info"]);
    // A user whose git stores every credential it is given: it must not be given this one.
    std::fs::write(
        project.home.join(".gitconfig"),
        "[credential]\n\thelper = store\n",
    )
    .unwrap();
    let (port, allowed) = serve_with_basic_auth(
        origin.parent().unwrap().to_path_buf(),
        "YWxpY2U6czNjcmV0QHB3", // alice:s3cret@pw
    );
    let plain = format!("http://127.0.0.1:{port}/origin.git");
    let with_credentials = format!("http://alice:s3cret%40pw@127.0.0.1:{port}/origin.git");
    let never_shown = |text: &str, what: &str| {
        for secret in ["s3cret", "alice:"] {
            assert!(!text.contains(secret), "{what} shows {secret:?}:\n{text}");
        }
    };

    let run = project.cdflow(&[
        "release",
        "--repo",
        &with_credentials,
        "--pipeline",
        "fetch",
    ]);
    run.success()
        .stdout_has(&format!(" clone --quiet --recursive -- {plain} "));
    never_shown(&run.to_string(), "the output");
    assert!(
        allowed.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "git authenticated with the URL's credentials"
    );
    let state = project.path(".cdflow");
    let (records, logs): (Vec<_>, Vec<_>) = std::fs::read_dir(state.join("runs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .partition(|path| path.extension().is_some_and(|e| e == "json"));
    assert_eq!(records.len(), 1);
    let record = std::fs::read_to_string(&records[0]).unwrap();
    never_shown(&record, "the run record");
    for folder in logs {
        for log in std::fs::read_dir(folder).unwrap() {
            let text = std::fs::read_to_string(log.unwrap().path()).unwrap();
            never_shown(&text, "a command's log");
        }
    }
    assert!(
        record.contains(&format!("\"repo\": \"{plain}\"")),
        "{record}"
    );
    let workspace = std::fs::read_dir(state.join("workspaces"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let git_config = std::fs::read_to_string(workspace.join(".git/config")).unwrap();
    never_shown(&git_config, "the workspace's .git/config");
    assert!(
        git_config.contains(&format!("url = {plain}\n")),
        "{git_config}"
    );
    assert!(
        !project.home.join(".git-credentials").exists(),
        "the user's credential store was given the password"
    );

    let dry = project.cdflow(&[
        "release",
        "--repo",
        &with_credentials,
        "--pipeline",
        "fetch",
        "--dry-run",
    ]);
    dry.success();
    never_shown(&dry.to_string(), "a dry run");

    let wrong = format!("http://alice:s3cret-but-wrong@127.0.0.1:{port}/origin.git");
    let refused = project.cdflow(&["release", "--repo", &wrong, "--pipeline", "fetch"]);
    refused.failure(1);
    never_shown(&refused.to_string(), "a refused clone");
}

// A `--repo` that starts with `-` never reaches git as an option: it is refused before
// anything runs, and the refusal masks the credentials it carries.

#[test]
fn a_repo_that_reads_as_an_option_is_refused_with_its_credentials_masked() {
    let project = Project::git(&[("README.md", "x\n")]);
    for repo in [
        "-https://ci-bot:s3cr3t-t0ken@git.example.com/acme/app.git",
        "--upload-pack=https://s3cr3t-t0ken@git.example.com/x",
        "ext::https://ci-bot:s3cr3t%2Dt0ken@git.example.com/x",
    ] {
        for dry_run in [true, false] {
            let mut args = vec!["release".to_string(), format!("--repo={repo}")];
            if dry_run {
                args.push("--dry-run".into());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = project.cdflow(&args);
            run.failure(2)
                .stderr_has("is refused: it would be read as an option");
            for shown in [&run.stdout, &run.stderr] {
                assert!(!shown.contains("s3cr3t"), "{repo}: {run}");
            }
            assert!(!run.stdout.contains("$ git"), "nothing ran: {run}");
        }
    }
    // Given as a separate word, clap takes it for an option of cdflow's, and says how to pass it.
    project
        .cdflow(&["release", "--repo", "-x"])
        .failure(2)
        .stderr_has("unexpected argument '-x'");
}
