//! `cdflow init`: a new service from each template, refused names and folders, the generated
//! projects' own tests, and a whole `cdflow release` of each on the local platform.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{self, free_port, get, run_of, shared_target, Guard, Project, Request, Run};
use crate::tools;

const TEMPLATES: [&str; 2] = ["rust-service", "python-falcon"];

/// The talk's POST case: only the keys that start with `a` are kept.
const TALK_BODY: &str = r#"{"abra": 123, "kadabra": 4}"#;

/// A pip cache shared the same way: each test has a HOME of its own.
fn shared_pip_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("init-pip-cache")
}

/// `program` run in the service folder `name` of `project`, with the shared caches.
fn in_service(project: &Project, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = project.command(program);
    command
        .current_dir(project.path(name))
        .env("CARGO_TARGET_DIR", shared_target())
        .env("PIP_CACHE_DIR", shared_pip_cache())
        .env("CDFLOW_STATE_DIR", state_dir(project));
    command
}

fn state_dir(project: &Project) -> PathBuf {
    project.dir.parent().unwrap().join("state")
}

fn cdflow_in(project: &Project, name: &str, args: &[&str]) -> Run {
    let output = in_service(project, name, env!("CARGO_BIN_EXE_cdflow"))
        .args(args)
        .output()
        .unwrap();
    run_of(output)
}

fn git_in(project: &Project, name: &str, args: &[&str]) -> String {
    let output = in_service(project, name, "git")
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_string()
}

/// Every file under the folder `dir` but `.git`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    assert!(dir.is_dir(), "no folder {}", dir.display());
    let mut files: Vec<String> = harness::files_under(dir)
        .iter()
        .filter(|path| !harness::in_git_dir(dir, path))
        .map(|path| path.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    files.sort();
    files
}

fn init(project: &Project, name: &str, template: &str) -> Run {
    project.cdflow(&["init", name, "--template", template])
}

/// `init` with the template's options `with`.
fn init_with(project: &Project, name: &str, template: &str, with: &[&str]) -> Run {
    let mut args = vec!["init", name, "--template", template];
    for option in with {
        args.extend(["--with", option]);
    }
    project.cdflow(&args)
}

#[test]
fn list_shows_every_template_with_a_line_and_its_options() {
    let project = Project::empty();
    let run = project.cdflow(&["init", "--list"]);
    run.success()
        .stdout_has("rust-service   a small axum service")
        .stdout_has("(default)")
        .stdout_has("python-falcon  the talk's Falcon app")
        .stdout_has("--with redis: bind a Redis service");
    let templates = run.stdout.lines().filter(|l| !l.starts_with(' ')).count();
    assert_eq!(templates, TEMPLATES.len(), "{run}");
    assert!(files_under(&project.dir).is_empty());
}

#[test]
fn each_template_makes_a_committed_repository_with_the_name_everywhere() {
    let expected: [(&str, &[&str]); 2] = [
        (
            "rust-service",
            &[
                ".cfignore",
                ".gitignore",
                "Cargo.lock",
                "Cargo.toml",
                "README.md",
                "cdflow.toml",
                "manifest.yml",
                "src/lib.rs",
                "src/main.rs",
                "tests/e2e.rs",
                "tests/service.rs",
            ],
        ),
        (
            "python-falcon",
            &[
                ".cfignore",
                ".gitignore",
                "README.md",
                "cdflow.toml",
                "e2e/test_e2e.py",
                "manifest.yml",
                "orders_api/__init__.py",
                "orders_api/app.py",
                "requirements.txt",
                "runtime.txt",
                "service_tests/requirements.txt",
                "service_tests/test_service.py",
                "tests/requirements.txt",
                "tests/test_app.py",
                "tox.ini",
            ],
        ),
    ];
    for (template, must_have) in expected {
        let project = Project::empty();
        let run = init(&project, "orders-api", template);
        run.success()
            .stdout_has(&format!(
                "created orders-api from the {template} template in orders-api"
            ))
            .stdout_has("cdflow release");
        let dir = project.path("orders-api");
        let files = files_under(&dir);
        for file in must_have {
            assert!(
                files.iter().any(|f| f == file),
                "{template}: no {file} in {files:?}"
            );
        }
        assert!(!files
            .iter()
            .any(|f| f.contains("template.toml") || f.ends_with(".tmpl")));
        for file in &files {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            assert!(
                !text.contains("{{"),
                "{template}: {file} keeps a placeholder"
            );
            assert!(!file.contains("{{"), "{template}: {file}");
        }
        let manifest = std::fs::read_to_string(dir.join("manifest.yml")).unwrap();
        assert!(manifest.contains("- name: orders-api\n"), "{manifest}");
        let config = std::fs::read_to_string(dir.join("cdflow.toml")).unwrap();
        assert!(config.contains("name = \"orders-api\""), "{config}");

        assert_eq!(
            git_in(&project, "orders-api", &["rev-list", "--count", "HEAD"]),
            "1"
        );
        assert_eq!(
            git_in(
                &project,
                "orders-api",
                &["status", "--porcelain", "--ignored"]
            ),
            ""
        );
        let tracked = git_in(&project, "orders-api", &["ls-files"]);
        assert_eq!(
            tracked.lines().collect::<Vec<_>>(),
            files,
            "{template}: every file committed"
        );

        let staging = cdflow_in(&project, "orders-api", &["manifest", "--env", "staging"]);
        staging
            .success()
            .stdout_has("- name: orders-api\n")
            .stdout_has("  instances: 1\n")
            .stdout_has("  - route: orders-api-staging.apps.example.com\n")
            .stdout_has("    VERSION: \"0.1.0\"");
        assert!(!staging.stdout.contains("(("), "{staging}");
        cdflow_in(&project, "orders-api", &["manifest", "--env", "production"])
            .success()
            .stdout_has("  instances: 2\n")
            .stdout_has("    LOG_LEVEL: info\n");
        cdflow_in(&project, "orders-api", &["bump", "--show"])
            .success()
            .stdout_has("current version: 0.1.0");
    }
}

#[test]
fn the_python_package_and_the_rust_binary_follow_the_name() {
    let project = Project::empty();
    init(&project, "billing-v2", "python-falcon").success();
    let manifest = std::fs::read_to_string(project.path("billing-v2/manifest.yml")).unwrap();
    assert!(manifest.contains("command: gunicorn --bind 0.0.0.0:$PORT billing_v2.app:app\n"));
    assert!(project.path("billing-v2/billing_v2/app.py").is_file());
    init(&project, "ledger", "rust-service").success();
    let manifest = std::fs::read_to_string(project.path("ledger/manifest.yml")).unwrap();
    assert!(manifest.contains("command: ./ledger\n"), "{manifest}");
    let main = std::fs::read_to_string(project.path("ledger/src/main.rs")).unwrap();
    assert!(main.contains("use ledger::config::Config;"), "{main}");
}

#[test]
fn an_option_the_template_lacks_is_refused_and_nothing_is_written() {
    let project = Project::empty();
    init_with(&project, "orders-api", "rust-service", &["redis"])
        .failure(2)
        .stderr_has("the rust-service template has no option `redis`")
        .stderr_has("cdflow init --list");
    init_with(&project, "orders-api", "python-falcon", &["redsi"])
        .failure(2)
        .stderr_has("has no option `redsi`: it offers `redis`");
    assert!(files_under(&project.dir).is_empty());
}

#[test]
fn an_empty_folder_is_used() {
    let project = Project::empty();
    std::fs::create_dir(project.path("orders-api")).unwrap();
    init(&project, "orders-api", "rust-service").success();
    assert!(project.path("orders-api/cdflow.toml").is_file());
}

#[test]
fn bad_names_are_refused_and_nothing_is_written() {
    let project = Project::empty();
    let cases: [(&str, &str, &str); 12] = [
        ("Bad Name", "rust-service", "has capital letters"),
        // Its code's `serde::` paths would name its own crate and the dependency alike.
        (
            "serde",
            "rust-service",
            "the crate `serde`, which the rust-service template depends on",
        ),
        (
            "serde-json",
            "rust-service",
            "the crate `serde_json`, which the rust-service template depends on",
        ),
        ("-x", "rust-service", "does not start with a letter"),
        ("1abc", "rust-service", "does not start with a letter"),
        ("a/b", "rust-service", "holds `/`"),
        ("", "rust-service", "the name is empty"),
        ("fn", "rust-service", "a Rust keyword"),
        ("test", "rust-service", "cargo refuses"),
        ("import", "python-falcon", "a Python keyword"),
        ("orders_api", "python-falcon", "use `-` between words"),
        (
            "orders-api",
            "no-such-template",
            "there is no template `no-such-template`",
        ),
    ];
    for (name, template, why) in cases {
        // `--` so that a name such as `-x` reaches cdflow's own check, not the option parser.
        let run = project.cdflow(&["init", "--template", template, "--", name]);
        run.failure(2).stderr_has("cannot create").stderr_has(why);
        assert!(
            files_under(&project.dir).is_empty() && !project.path(".git").exists(),
            "{name:?} wrote something"
        );
    }
    // Without `--`, a name that looks like an option is refused by the option parser.
    project.cdflow(&["init", "-x"]).failure(2);
    assert!(files_under(&project.dir).is_empty());
}

#[test]
fn every_problem_is_told_at_once() {
    let project = Project::empty();
    project
        .cdflow(&["init", "Bad_Name", "--template", "nope"])
        .failure(2)
        .stderr_has("there is no template `nope`")
        .stderr_has("has capital letters")
        .stderr_has("use `-` between words");
}

#[test]
fn an_existing_folder_that_is_not_empty_is_refused_and_left_alone() {
    let project = Project::empty();
    project.write("orders-api/notes.txt", "mine");
    init(&project, "orders-api", "rust-service")
        .failure(2)
        .stderr_has("the folder `orders-api` exists and is not empty");
    assert_eq!(files_under(&project.path("orders-api")), ["notes.txt"]);
    assert!(!project.path("orders-api/.git").exists());
    assert_eq!(project.read("orders-api/notes.txt"), "mine");
    project.write("a-file", "x");
    init(&project, "a-file", "rust-service")
        .failure(2)
        .stderr_has("`a-file` exists and is not a folder");
}

#[test]
fn without_a_git_identity_nothing_is_written() {
    let project = Project::empty();
    let output = project
        .command(env!("CARGO_BIN_EXE_cdflow"))
        .args(["init", "orders-api"])
        .env_remove("GIT_AUTHOR_NAME")
        .env_remove("GIT_AUTHOR_EMAIL")
        .env_remove("GIT_COMMITTER_NAME")
        .env_remove("GIT_COMMITTER_EMAIL")
        // No guessing an identity from the host's name, whatever the machine.
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "user.useConfigOnly")
        .env("GIT_CONFIG_VALUE_0", "true")
        .output()
        .unwrap();
    run_of(output)
        .failure(2)
        .stderr_has("git does not know who you are");
    assert!(files_under(&project.dir).is_empty());
}

#[test]
fn a_failure_after_the_first_write_removes_everything_made() {
    let project = Project::empty();
    let hooks = project.dir.parent().unwrap().join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook = hooks.join("pre-commit");
    std::fs::write(&hook, "#!/bin/sh\necho refused by a hook >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for existed in [false, true] {
        if existed {
            std::fs::create_dir(project.path("orders-api")).unwrap();
        }
        let output = project
            .command(env!("CARGO_BIN_EXE_cdflow"))
            .args(["init", "orders-api"])
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "core.hooksPath")
            .env("GIT_CONFIG_VALUE_0", &hooks)
            .output()
            .unwrap();
        run_of(output)
            .failure(1)
            .stderr_has("git commit")
            .stderr_has("refused by a hook");
        if existed {
            assert!(files_under(&project.path("orders-api")).is_empty());
            assert!(!project.path("orders-api/.git").exists());
        } else {
            assert!(!project.path("orders-api").exists());
        }
    }
}

#[test]
fn dir_places_the_service_anywhere_and_refuses_a_used_folder() {
    let project = Project::empty();
    init(&project, "orders-api", "rust-service").success();
    project
        .cdflow(&[
            "init",
            "billing",
            "--template",
            "python-falcon",
            "--dir",
            "svc/billing",
        ])
        .success()
        .stdout_has("in svc/billing");
    assert!(project.path("svc/billing/billing/app.py").is_file());
    project
        .cdflow(&["init", "other", "--dir", "orders-api"])
        .failure(2)
        .stderr_has("the folder `orders-api` exists and is not empty");
}

/// The template's Cargo.lock is the one cargo writes, whatever the name: a plain cargo command
/// (as the test tiers run) leaves it as it is. Not `--locked`, which accepts a lock file that
/// differs from cargo's only in its order, and so would not see one that the next plain
/// `cargo test` rewrites (and the bump then refuses as a dirty tree). The names sort before,
/// among and after the template's dependencies, and `mime` is also the name of one of them.
/// `cargo metadata` resolves without compiling: six names cost about a second.
#[test]
fn the_rust_service_lock_file_is_cargo_s_own_whatever_the_name() {
    let project = Project::empty();
    for name in ["aaa-first", "demo", "search", "billing", "zeta", "mime"] {
        init(&project, name, "rust-service").success();
        let output = in_service(&project, name, "cargo")
            .args(["metadata", "--offline", "--format-version", "1"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            git_in(&project, name, &["status", "--porcelain"]),
            "",
            "{name}: cargo rewrote the Cargo.lock that `cdflow init` wrote:\n{}",
            git_in(&project, name, &["diff", "--stat"])
        );
    }
}

/// A whole `cargo test` of a service whose name sorts elsewhere than the template's own
/// tests' (`orders-api`) and is also a dependency's (see above), offline, as the tiers run it.
#[test]
fn the_rust_service_passes_its_own_tests() {
    let project = Project::empty();
    init(&project, "mime", "rust-service").success();
    let output = in_service(&project, "mime", "cargo")
        .args(["test", "--offline"])
        .output()
        .unwrap();
    let run = run_of(output);
    run.success();
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("serves_the_api_over_http ... ok"), "{run}");
    assert!(
        all.contains("4 ignored"),
        "the e2e tier waits for APP_URL: {run}"
    );
    assert_eq!(git_in(&project, "mime", &["status", "--porcelain"]), "");
}

/// Both ways: plain, and with its Redis binding, whose service tier starts a real redis-server.
#[test]
fn the_python_service_passes_its_own_tests() {
    let project = Project::empty();
    init(&project, "orders-api", "python-falcon").success();
    init_with(&project, "visits-api", "python-falcon", &["redis"]).success();
    let path = tools::path_with_tox();
    let tox = which::which_in("tox", Some(&path), "/").unwrap();
    for name in ["orders-api", "visits-api"] {
        let output = in_service(&project, name, &tox)
            .env("PATH", &path)
            .args(["-e", "unit,service"])
            .output()
            .unwrap();
        let run = run_of(output);
        run.success()
            .stdout_has("unit: OK")
            .stdout_has("service: OK");
        let counted = run
            .stdout
            .contains("test_visits_are_counted_in_the_bound_redis PASSED")
            || run.stdout.contains("service_tests/test_service.py ......");
        assert_eq!(counted, name == "visits-api", "{run}");
        assert_eq!(git_in(&project, name, &["status", "--porcelain"]), "");
    }
}

/// The talk's POST case sent as `content_type`: its status and body.
fn post_body(port: u16, content_type: &str) -> (u16, String) {
    let answer = Request::post("/")
        .body(content_type, TALK_BODY)
        .send(port)
        .unwrap();
    (answer.status, answer.body)
}

/// `cdflow init`, then `cdflow release` on the local platform: both environments answer the
/// talk's POST case and report the bumped version.
fn release_on_local(template: &str, name: &str, with: &[&str]) -> ReleasedOnLocal {
    release_edited_on_local(template, name, with, |_| {})
}

/// `release_on_local`, with `edit` applied to the new service's folder before the release.
fn release_edited_on_local(
    template: &str,
    name: &str,
    with: &[&str],
    edit: impl Fn(&Path),
) -> ReleasedOnLocal {
    let project = Project::empty();
    init_with(&project, name, template, with).success();
    edit(&project.path(name));
    // Free ports instead of 8081 and 8082, so that tests run side by side.
    let (staging, production) = (free_port(), free_port());
    let config_path = project.path(&format!("{name}/cdflow.toml"));
    let config = std::fs::read_to_string(&config_path).unwrap();
    assert!(config.contains("port = 8081\n") && config.contains("port = 8082\n"));
    let config = config
        .replace("port = 8081\n", &format!("port = {staging}\n"))
        .replace("port = 8082\n", &format!("port = {production}\n"));
    std::fs::write(&config_path, config).unwrap();
    git_in(
        &project,
        name,
        &["commit", "-qam", "Free ports for the test"],
    );

    // Stops the environments when the test ends, whatever happens.
    let mut down = in_service(&project, name, env!("CARGO_BIN_EXE_cdflow"));
    down.arg("down");
    let released = ReleasedOnLocal {
        _environments: Guard::environments(down, state_dir(&project)),
        project,
        staging,
        production,
    };
    let project = &released.project;
    let mut release = in_service(project, name, env!("CARGO_BIN_EXE_cdflow"));
    release.arg("release");
    if template == "python-falcon" {
        // The template's tiers run tox, which the tests provision when the machine lacks it.
        release.env("PATH", tools::path_with_tox());
    }
    run_of(release.output().unwrap()).success();
    for port in [staging, production] {
        let (status, body) = post_body(port, "application/json");
        assert_eq!(status, 200, "{template} on {port}: {body}");
        let kept: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            kept,
            serde_json::json!({"abra": 123}),
            "{template} on {port}"
        );
        let (status, _) = post_body(port, "text/plain");
        assert_eq!(status, 415, "{template} on {port}");
        let (status, body) = get(port, "/health").unwrap();
        assert_eq!(status, 200, "{template} on {port}: {body}");
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(health["version"], "0.1.1", "{template} on {port}: {body}");
    }
    // The version commit and tag came back to the new repository, work tree included.
    assert_eq!(git_in(project, name, &["tag", "-l"]), "v0.1.1");
    assert_eq!(git_in(project, name, &["status", "--porcelain"]), "");
    let manifest = std::fs::read_to_string(project.path(&format!("{name}/manifest.yml"))).unwrap();
    assert!(manifest.contains("VERSION: \"0.1.1\""), "{manifest}");
    released
}

/// A service that `release_on_local` released; its environments stop when it is dropped.
struct ReleasedOnLocal {
    // Dropped first, while the project is still there.
    _environments: Guard,
    project: Project,
    staging: u16,
    production: u16,
}

/// `demo` sorts elsewhere in the lock file than the template's own name: the release's test
/// tiers must leave the tree clean for the bump.
#[test]
fn a_new_rust_service_releases_on_the_local_platform() {
    release_on_local("rust-service", "demo", &[]);
}

#[test]
fn a_new_python_service_releases_on_the_local_platform() {
    release_on_local("python-falcon", "orders-api", &[]);
}

/// The talk's layout with the talk's own bindings (`services: [redis30-example,
/// other-example-app-service]`): each environment counts in a real redis-server of its own,
/// which the local platform started, beside a user-provided service.
#[test]
fn a_new_python_service_with_the_talks_services_releases_on_the_local_platform() {
    let talks = |dir: &Path| {
        let edit = |file: &str, from: &str, to: &str| {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains(from), "{file}: {text}");
            std::fs::write(&path, text.replace(from, to)).unwrap();
        };
        edit(
            "manifest.yml",
            "  - counter-api-redis\n",
            "  - redis30-example\n  - other-example-app-service\n",
        );
        edit(
            "cdflow.toml",
            "[services.counter-api-redis]\nkind = \"redis\"\n",
            "[services.redis30-example]\nkind = \"redis\"\n\n\
             [services.other-example-app-service]\nkind = \"user-provided\"\n\
             credentials = { url = \"https://other.example.com\" }\n",
        );
    };
    let released = release_edited_on_local("python-falcon", "counter-api", &["redis"], talks);
    let visits = |port| {
        let (status, body) = get(port, "/visits").unwrap();
        assert_eq!(status, 200, "{port}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        body["visits"].as_u64().unwrap()
    };
    let staging = visits(released.staging);
    // The e2e tier counted in staging's Redis.
    assert!(staging >= 3, "{staging}");
    let production = visits(released.production);
    assert_eq!(visits(released.production), production + 1);
    assert_eq!(
        visits(released.staging),
        staging + 1,
        "production's visits were counted apart"
    );
}

/// Without tox, `cdflow test` on a new python-falcon service refuses before any tier runs and
/// names the command that installs it (the choice the README documents).
#[test]
fn a_python_service_without_tox_is_refused_with_the_fix() {
    let project = Project::empty();
    init(&project, "orders-api", "python-falcon").success();
    // A PATH with git alone: tox is hidden even on a machine that has it.
    let bin = project.dir.parent().unwrap().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(which::which("git").unwrap(), bin.join("git")).unwrap();
    let output = in_service(&project, "orders-api", env!("CARGO_BIN_EXE_cdflow"))
        .env("PATH", &bin)
        .arg("test")
        .output()
        .unwrap();
    run_of(output)
        .failure(2)
        .stderr_has("nothing was changed")
        .stderr_has("cdflow.toml [test] unit: `tox` is not on PATH")
        .stderr_has("python3 -m pip install tox");
    assert!(
        !project.path("orders-api/.tox").exists(),
        "no tier may have run"
    );
}
