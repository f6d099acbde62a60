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
