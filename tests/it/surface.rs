//! The command-line surface as users see it: every command's `--help` and the usage errors,
//! compared with the files in tests/cmd/ (`TRYCMD=overwrite cargo test --test it surface`
//! writes them anew after a deliberate change, for review in the diff).

#[test]
fn help_and_usage_errors_read_as_recorded() {
    trycmd::TestCases::new()
        .env("NO_COLOR", "1")
        .case("tests/cmd/*.toml");
}

/// The shell lines of the README's Install section, as a new user would paste them: all but
/// `cargo install` (which needs the network; the test runs the binary cargo built instead).
fn install_lines() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("\n## Install\n").expect("an Install section")..];
    let section = &section[..section[1..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 1)];
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a sh block in the Install section");
    block
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with("cargo install"))
        .map(str::to_string)
        .collect()
}

/// A fresh HOME and a PATH that has cdflow (as `cargo install` would) and the system's tools.
fn fresh_user(home: &std::path::Path) -> std::process::Command {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_cdflow"))
        .parent()
        .unwrap();
    let mut bash = std::process::Command::new("bash");
    bash.args(["--norc", "--noprofile", "-e", "-c"])
        .current_dir(home)
        .env_clear()
        .env("HOME", home)
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
        )
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null());
    bash
}

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// What bash's completion of `line` (up to its end) offers, from the completion script `script`.
fn completed(home: &std::path::Path, script: &std::path::Path, line: &str) -> Vec<String> {
    let words: Vec<&str> = if line.ends_with(' ') {
        line.split_whitespace().chain([""]).collect()
    } else {
        line.split_whitespace().collect()
    };
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let previous = if cword > 0 { words[cword - 1] } else { "" };
    // As bash calls a completion function: COMP_WORDS/COMP_CWORD/COMP_LINE/COMP_POINT set, and
    // the command, the word being completed and the one before it as arguments.
    let program = format!(
        r#"source '{script}'
spec=$(complete -p cdflow)
function=$(printf '%s\n' "$spec" | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
[ -n "$function" ] || {{ echo "no completion function in: $spec" >&2; exit 3; }}
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE='{line}'
COMP_POINT=${{#COMP_LINE}}
COMP_TYPE=9
"$function" cdflow '{current}' '{previous}'
printf '%s\n' "${{COMPREPLY[@]}}""#,
        script = script.display(),
        words = quoted.join(" "),
        current = words[cword],
    );
    let output = fresh_user(home).arg(program).output().unwrap();
    assert!(
        output.status.success(),
        "completing {line:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_install_section_works_as_written_for_a_new_user() {
    let home = tempfile::tempdir().unwrap();
    let lines = install_lines();
    assert!(lines.len() >= 3, "{lines:?}");
    // In one shell, as pasted: what one line exports the next ones see.
    let man = have("man");
    let mut script = lines.join("\n");
    if man {
        script.push_str("\nman -w cdflow-release");
    } else {
        eprintln!("not checking that man finds the pages: `man` is not installed (.ci/run installs man-db)");
    }
    let output = fresh_user(home.path()).arg(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script}\n{stdout}\n{stderr}");
    let completion = home
        .path()
        .join(".local/share/bash-completion/completions/cdflow");
    assert!(completion.is_file(), "{stdout}\n{stderr}");
    let page = home.path().join(".local/share/man/man1/cdflow-release.1");
    assert!(page.is_file(), "{stdout}\n{stderr}");
    if man {
        // `man cdflow-release` finds the page where the README put it.
        assert_eq!(
            stdout.lines().last(),
            Some(page.display().to_string().as_str()),
            "{stderr}"
        );
    }
    let offered = completed(home.path(), &completion, "cdflow ro");
    assert_eq!(offered, ["rollback"]);
}

#[test]
fn bash_completes_commands_and_their_options() {
    if !have("bash") {
        eprintln!("skipped: bash is not installed, and this test drives bash's completion");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let script = home.path().join("cdflow.bash");
    let output = fresh_user(home.path())
        .arg(format!("cdflow completions bash > '{}'", script.display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(completed(home.path(), &script, "cdflow ro"), ["rollback"]);
    let options = completed(home.path(), &script, "cdflow rollback --");
    for option in ["--env", "--version", "--app"] {
        assert!(
            options.iter().any(|o| o == option),
            "{option} in {options:?}"
        );
    }
    assert!(
        !options.iter().any(|o| o == "--tier"),
        "release's options offered for rollback: {options:?}"
    );
}

#[test]
fn every_command_has_a_manual_page_that_man_renders() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("man1");
    let output = fresh_user(home.path())
        .arg(format!("cdflow man --dir '{}'", dir.display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let help = fresh_user(home.path())
        .arg("cdflow --help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    // The commands `cdflow --help` lists, with the line that describes each.
    let commands: Vec<(String, String)> = help
        .split("Commands:\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| {
            let (name, about) = line.trim().split_once(' ')?;
            (name != "help").then(|| (name.to_string(), about.trim().to_string()))
        })
        .collect();
    assert!(commands.len() > 10, "{help}");
    if !have("man") {
        eprintln!("not rendering the pages: `man` is not installed (.ci/run installs man-db)");
    }
    for (command, about) in &commands {
        let page = dir.join(format!("cdflow-{command}.1"));
        assert!(page.is_file(), "no page for {command}");
        if !have("man") {
            continue;
        }
        let output = fresh_user(home.path())
            .arg(format!("MANWIDTH=80 man -l '{}'", page.display()))
            .output()
            .unwrap();
        assert!(output.status.success(), "{command}: {output:?}");
        // Joined, as man fills and hyphenates paragraphs.
        let text: String = String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let first_words: String = about
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            text.contains(&first_words),
            "{command}: no {first_words:?} in {text}"
        );
        assert!(
            text.contains(&format!("SYNOPSIS cdflow {command}")),
            "{command}: {text}"
        );
        // The global options are the command's too.
        for global in ["-C <DIR>", "--json", "-q, --quiet", "-v, --verbose"] {
            assert!(text.contains(global), "{command}: no {global} in {text}");
        }
    }
}

/// A message split over source lines needs a `\` at each line end; when one is lost and the
/// lines are joined, the indent of the next line ends up inside the text, as a run of spaces
/// in the middle of a sentence (seen in real dry-run output). No string literal that opens on
/// a line has such a run on that line; the help's example tables, whose columns are runs of
/// spaces, are on lines of their own inside their literals.
#[test]
fn no_message_has_a_run_of_spaces_from_a_lost_line_continuation() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for file in crate::harness::files_under(&src) {
        if file.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            let Some((_, after)) = line.split_once('"') else {
                continue;
            };
            // The literal's text on this line, to its end or the line's.
            let literal = after.split('"').next().unwrap_or("");
            let inside = literal.trim();
            if inside.contains("        ") {
                found.push(format!("{}:{}: {line}", file.display(), number + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "runs of spaces inside a message (a `\\` missing at a line end?):\n{}",
        found.join("\n")
    );
}
