//! The CI examples in docs/ci/ call cdflow as it is: every `cdflow` command line in them is
//! one that cdflow's command line accepts (checked by asking for its help with those
//! arguments, which clap refuses when an argument is unknown), none puts a token in `--repo`,
//! and each runs as a dry run against the cf stand-in, with the CI system's variables given
//! values and the repository on loopback in place of the forge.

use std::path::Path;

use crate::cf::CfApp;

/// The shell lines of a YAML file's `run:` and `script:` entries.
fn shell_lines(value: &serde_yaml::Value, out: &mut Vec<String>) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (key, value) in map {
                let key = key.as_str().unwrap_or_default();
                match (key, value) {
                    ("run", serde_yaml::Value::String(line)) => out.push(line.clone()),
                    ("script", serde_yaml::Value::Sequence(lines)) => {
                        out.extend(lines.iter().filter_map(|l| l.as_str().map(str::to_string)))
                    }
                    _ => shell_lines(value, out),
                }
            }
        }
        serde_yaml::Value::Sequence(items) => items.iter().for_each(|v| shell_lines(v, out)),
        _ => {}
    }
}

#[test]
fn every_cdflow_command_in_the_ci_examples_is_accepted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ci");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text)
            .unwrap_or_else(|err| panic!("{} is not YAML: {err}", path.display()));
        let mut lines = Vec::new();
        shell_lines(&yaml, &mut lines);
        for line in lines
            .iter()
            .filter(|l| l.trim_start().starts_with("cdflow "))
        {
            let words = shlex::split(line.trim())
                .unwrap_or_else(|| panic!("{}: cannot split {line:?}", path.display()));
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_cdflow"))
                .args(&words[1..])
                .arg("--help")
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}: cdflow refuses `{line}`: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            // The push-back's token comes from the environment, never in a URL on cdflow's
            // command line.
            if let Some(at) = words.iter().position(|w| w == "--repo") {
                let repo = &words[at + 1];
                assert!(
                    !repo.contains('@'),
                    "{}: `{line}` puts credentials in --repo; use CDFLOW_GIT_TOKEN",
                    path.display()
                );
                assert!(
                    text.contains("CDFLOW_GIT_TOKEN"),
                    "{}: says nowhere how the push-back gets its token",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "each example releases and promotes: {checked} calls found"
    );
}

/// `$NAME` and `${NAME}` in `line`, as a shell would expand them from `vars`.
fn expand(line: &str, vars: &[(&str, &str)]) -> String {
    let mut line = line.to_string();
    for (name, value) in vars {
        line = line
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(
        !line.contains('$'),
        "a variable the test gives no value: {line}"
    );
    line
}

#[test]
fn every_cdflow_command_in_the_ci_examples_runs_as_a_dry_run_against_the_stand_in() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ci");
    let mut ran = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut lines = Vec::new();
        shell_lines(&yaml, &mut lines);
        for line in lines
            .iter()
            .filter(|l| l.trim_start().starts_with("cdflow "))
        {
            // A project of its own per command: each dry run starts from what CI would have.
            let app = CfApp::new();
            let head = app.origin_git(&["rev-parse", "main"]);
            let vars = [
                ("GITHUB_REPOSITORY", "acme/filter"),
                ("GITHUB_SHA", head.as_str()),
                ("CI_SERVER_HOST", "gitlab.example.com"),
                ("CI_PROJECT_PATH", "acme/filter"),
                ("CI_COMMIT_SHA", head.as_str()),
                ("CI_DEFAULT_BRANCH", "main"),
            ];
            let mut words = shlex::split(&expand(line.trim(), &vars)).unwrap();
            // The forge is not reachable from a test: its clone URL becomes the loopback one.
            if let Some(at) = words.iter().position(|w| w == "--repo") {
                assert!(words[at + 1].starts_with("https://"), "{line}");
                words[at + 1] = app.origin.to_str().unwrap().to_string();
            }
            let mut args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
            args.push("--dry-run");
            let run = app.cdflow(&args, None);
            assert_eq!(
                run.code,
                Some(0),
                "{}: `{line}` fails as a dry run:\n{run}",
                path.display()
            );
            assert!(
                run.stdout.lines().any(|l| l.contains(" cf ")),
                "{}: `{line}` drives no cf command:\n{run}",
                path.display()
            );
            assert!(
                app.calls().is_empty(),
                "a dry run called cf: {:?}",
                app.calls()
            );
            ran.push(words[1].clone());
        }
    }
    ran.sort();
    assert_eq!(ran, ["promote", "promote", "release", "release"]);
}
