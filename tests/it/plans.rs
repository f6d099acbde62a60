//! The plan of each built-in pipeline, as `--dry-run` prints it, against the local platform and
//! against the cf stand-in, compared with the files in tests/it/plans/: a change to what a real
//! run would execute shows in review. `SNAPSHOTS=overwrite cargo test --test it plans` writes
//! them anew after a deliberate change.
//!
//! What differs from one run to the next is replaced before the comparison: temporary folders,
//! times, ports, commit ids and digests.

use snapbox::assert_data_eq;

use crate::cf::CfApp;
use crate::harness::Local;
use crate::harness::Run;

/// `text` with what varies between runs replaced by stable placeholders.
fn normalised(text: &str, replacements: &[(&str, &str)]) -> String {
    let mut text = without_run_ids(text);
    for (from, to) in replacements {
        if !from.is_empty() {
            text = text.replace(from, to);
        }
    }
    text.lines()
        .map(|line| match line.strip_prefix("python ") {
            // The machine's Python, as staging reports the one it chose.
            Some(rest) => match rest.split_once(' ') {
                Some((_, after)) => format!("python [VERSION] {after}"),
                None => line.to_string(),
            },
            None => line.to_string(),
        })
        .map(|line| normalised_line(&line))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Run ids (`20261127T153341-3104`, a time and a process id) as `[RUN]`.
pub(crate) fn without_run_ids(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let is_id = bytes.len() >= i + 17
            && bytes[i..i + 8].iter().all(u8::is_ascii_digit)
            && bytes[i + 8] == b'T'
            && bytes[i + 9..i + 15].iter().all(u8::is_ascii_digit)
            && bytes[i + 15] == b'-'
            && bytes[i + 16].is_ascii_digit();
        if is_id {
            let mut end = i + 16;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            out.push_str("[RUN]");
            i = end;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// One line: timestamps, durations, hex ids and ports made stable.
pub(crate) fn normalised_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    // A plain-style line starts with `[2026-11-27T15:00:00Z]`.
    if rest.starts_with('[') && rest.get(21..22) == Some("]") {
        out.push_str("[TIME]");
        rest = &rest[22..];
    }
    let words: Vec<String> = rest.split(' ').map(normalised_word).collect();
    out.push_str(&words.join(" "));
    out
}

fn normalised_word(word: &str) -> String {
    // `in 0.1s`, `(0.0s)`
    let trimmed = word.trim_matches(|c: char| "()".contains(c));
    if let Some(number) = trimmed.strip_suffix('s') {
        if !number.is_empty() && number.parse::<f64>().is_ok() {
            return word.replace(trimmed, "[SECS]s");
        }
    }
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        // Commit ids (7 or more hex digits with a digit and a letter) and digests.
        let hex = run.len() >= 7
            && run.chars().all(|c| c.is_ascii_hexdigit())
            && run.chars().any(|c| c.is_ascii_digit())
            && run.chars().any(|c| c.is_ascii_alphabetic());
        out.push_str(if hex { "[HEX]" } else { run });
        run.clear();
    };
    for c in word.chars() {
        if c.is_ascii_alphanumeric() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

fn plan(run: &Run, replacements: &[(&str, &str)]) -> String {
    run.success();
    normalised(&run.stdout, replacements)
}

#[test]
fn dry_run_plans_against_the_cf_stand_in() {
    let app = CfApp::new();
    let project = app.project.dir.to_str().unwrap().to_string();
    let origin = app.origin.to_str().unwrap().to_string();
    let state = app.state.to_str().unwrap().to_string();
    let replacements = [
        (state.as_str(), "[STATE]"),
        (origin.as_str(), "[ORIGIN]"),
        (project.as_str(), "[PROJECT]"),
    ];
    for pipeline in ["check", "staging", "release", "promote"] {
        let run = app.cdflow(&["release", "--pipeline", pipeline, "--dry-run"], None);
        let text = plan(&run, &replacements);
        let url_free = hide_urls(&text);
        match pipeline {
            "check" => assert_data_eq!(url_free, snapbox::file!["plans/check-cf.txt"]),
            "staging" => assert_data_eq!(url_free, snapbox::file!["plans/staging-cf.txt"]),
            "release" => assert_data_eq!(url_free, snapbox::file!["plans/release-cf.txt"]),
            _ => assert_data_eq!(url_free, snapbox::file!["plans/promote-cf.txt"]),
        }
    }
}

#[test]
fn dry_run_plans_against_the_local_platform() {
    let local = Local::python(2);
    let config = local.project.read("cdflow.toml");
    with_tiers(&local, &config, "tiers");
    let replacements = local_replacements(&local);
    let replacements: Vec<(&str, &str)> = replacements
        .iter()
        .map(|(from, to)| (from.as_str(), *to))
        .collect();
    for pipeline in ["check", "staging", "release", "promote"] {
        let run = local.cdflow(&["release", "--pipeline", pipeline, "--dry-run"]);
        let text = plan(&run, &replacements);
        match pipeline {
            "check" => assert_data_eq!(text, snapbox::file!["plans/check-local.txt"]),
            "staging" => assert_data_eq!(text, snapbox::file!["plans/staging-local.txt"]),
            "release" => assert_data_eq!(text, snapbox::file!["plans/release-local.txt"]),
            _ => assert_data_eq!(text, snapbox::file!["plans/promote-local.txt"]),
        }
    }
}

/// Commits `config` with test and e2e tiers that always pass, so that every stage has a plan.
fn with_tiers(local: &Local, config: &str, message: &str) {
    local.project.write(
        "cdflow.toml",
        &format!("{config}\n[test]\nunit = \"true\"\n\n[e2e]\ncommand = \"true\"\n"),
    );
    local.project.git_cmd(&["commit", "-qam", message]);
}

/// What a local plan names that changes from run to run, and what it shows instead.
fn local_replacements(local: &Local) -> [(String, &'static str); 4] {
    [
        (local.state.path().to_str().unwrap().to_string(), "[STATE]"),
        (local.project.dir.to_str().unwrap().to_string(), "[PROJECT]"),
        (local.staging.to_string(), "[STAGING-PORT]"),
        (local.production.to_string(), "[PRODUCTION-PORT]"),
    ]
}

/// The cf stand-in's staging app answers on a port of its own: its URL is hidden.
fn hide_urls(text: &str) -> String {
    text.split("http://127.0.0.1:")
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                return part.to_string();
            }
            let digits = part.chars().take_while(char::is_ascii_digit).count();
            format!("http://127.0.0.1:[PORT]{}", &part[digits..])
        })
        .collect()
}

/// The release pipeline's plan with both environments canaries, against the cf stand-in (a cf
/// CLI that has canaries): the stable version's probes, the push with its steps, a pause's
/// probes and e2e tier, the continue.
#[test]
fn dry_run_plan_of_a_canary_release_against_the_cf_stand_in() {
    let (app, _) = crate::cf::canary_app(crate::cf::CANARY, crate::cf::CANARY);
    let project = app.project.dir.to_str().unwrap().to_string();
    let origin = app.origin.to_str().unwrap().to_string();
    let state = app.state.to_str().unwrap().to_string();
    let replacements = [
        (state.as_str(), "[STATE]"),
        (origin.as_str(), "[ORIGIN]"),
        (project.as_str(), "[PROJECT]"),
    ];
    let run = crate::cf::canary_run(
        &app,
        &["release", "--pipeline", "release", "--dry-run"],
        None,
    );
    let text = hide_urls(&plan(&run, &replacements));
    assert_data_eq!(text, snapbox::file!["plans/release-canary-cf.txt"]);
}

/// The release pipeline's plan with staging a canary of the local platform that serves the
/// current version: the canary against it, its steps and probes.
#[test]
fn dry_run_plan_of_a_canary_release_against_the_local_platform() {
    let local = Local::python(2);
    let config = local.project.read("cdflow.toml").replace(
        &format!("[env.staging]\nport = {}\n", local.staging),
        &format!(
            "[env.staging]\nport = {}\nstrategy = \"canary\"\ncanary_steps = [10, 50]\n\
             canary_window = 5\n",
            local.staging
        ),
    );
    assert!(config.contains("canary_window = 5"), "{config}");
    with_tiers(&local, &config, "a canary staging");
    local.cdflow(&["push", "--to", "staging"]).success();
    let replacements = local_replacements(&local);
    let replacements: Vec<(&str, &str)> = replacements
        .iter()
        .map(|(from, to)| (from.as_str(), *to))
        .collect();
    let run = local.cdflow(&["release", "--pipeline", "release", "--dry-run"]);
    let text = plan(&run, &replacements);
    assert_data_eq!(text, snapbox::file!["plans/release-canary-local.txt"]);
}
