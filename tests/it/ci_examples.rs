//! The CI examples in docs/ci/ call cdflow as it is: every `cdflow` command line in them is
//! one that cdflow's command line accepts (checked by asking for its help with those
//! arguments, which clap refuses when an argument is unknown), and none puts a token in
//! `--repo`.

use std::path::Path;

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
        checked >= 2,
        "each example calls cdflow: {checked} calls found"
    );
}
