//! The programs a run needs, looked for before it starts: a test tier whose tool is missing is a
//! refusal that names the fix, found before the bump, never a failure halfway through the road.

use std::path::Path;

/// The first word of a command written in cdflow.toml or a pipeline, as `run_words` splits it;
/// `None` when the command cannot be split (its own error comes when it runs).
pub fn program_of(command: &str) -> Option<String> {
    shlex::split(command)?.into_iter().find(|w| !w.is_empty())
}

/// Why `program` cannot be started, with the fix; `None` when it can. Only a bare name is
/// looked for (on PATH, as a shell does): a program named with a path (`./run-tests`,
/// `target/debug/e2e`) may be made by an earlier stage, so it is left to the command itself.
pub fn missing(program: &str, dir: &Path) -> Option<String> {
    if program.contains('/') {
        return None;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if which::which_in(program, Some(&path), dir).is_ok() {
        return None;
    }
    Some(format!(
        "`{program}` is not on PATH: {}",
        install_hint(program)
    ))
}

/// How a user gets a program that commands of services commonly start.
fn install_hint(program: &str) -> String {
    match program {
        "tox" | "pytest" | "nox" | "gunicorn" | "flake8" | "ruff" | "black" | "mypy" => {
            format!("install it with `python3 -m pip install {program}`")
        }
        "python3" | "python" => {
            "install Python 3 with its venv module (Debian: `apt-get install python3 \
             python3-venv`)"
                .to_string()
        }
        "cargo" | "rustc" => "install Rust with rustup".to_string(),
        "cf" => "install the Cloud Foundry CLI v8 and put `cf` on PATH".to_string(),
        _ => format!("install `{program}`, or change the command"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_word_is_the_program() {
        assert_eq!(program_of("tox -e unit").as_deref(), Some("tox"));
        assert_eq!(
            program_of("'./run tests' --fast").as_deref(),
            Some("./run tests")
        );
        assert_eq!(program_of("unterminated 'quote"), None);
    }

    #[test]
    fn a_missing_program_is_named_with_its_fix() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(missing("sh", dir.path()), None);
        let tox = missing("no-such-tool-cdflow-test", dir.path()).unwrap();
        assert!(
            tox.contains("`no-such-tool-cdflow-test` is not on PATH"),
            "{tox}"
        );
        assert_eq!(missing("./made-by-an-earlier-stage", dir.path()), None);
    }

    #[test]
    fn tox_comes_with_pip() {
        assert_eq!(
            install_hint("tox"),
            "install it with `python3 -m pip install tox`"
        );
    }
}
