//! Shell integration: completion scripts and manual pages, both generated from the command line
//! definition itself (clap_complete, clap_mangen), so they cannot drift from it.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;
use crate::exec::Exec;

/// The completion script for `shell`, as a shell sources it.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "cdflow", &mut script);
    script
}

/// `cdflow`'s manual page, in roff.
pub fn man_page() -> Result<Vec<u8>> {
    render(Cli::command())
}

/// One manual page per visible command (`cdflow.1`, `cdflow-release.1`, ...), written into
/// `dir`; returns the files written.
pub fn write_man_pages(exec: &Exec, dir: &Path) -> Result<Vec<String>> {
    let mut cli = Cli::command();
    // Built, each command carries what it is run with: the global options (-C, --json, -q,
    // -v) propagated to it, `cdflow rollback` as the name its synopsis shows, and
    // `cdflow-rollback` as its page's name.
    cli.build();
    let mut pages = vec![("cdflow.1".to_string(), render(cli.clone())?)];
    for command in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("cdflow-{}", command.get_name());
        let page = render(command.clone().display_name(name.clone()))?;
        pages.push((format!("{name}.1"), page));
    }
    let mut written = Vec::new();
    for (file, page) in pages {
        let path = dir.join(&file);
        let text = String::from_utf8(page).context("a manual page is not UTF-8")?;
        exec.write_file(&path, "", &text)?;
        written.push(exec.display_path(&path));
    }
    Ok(written)
}

fn render(command: clap::Command) -> Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .context("could not render the manual page")?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn completions_know_every_visible_command() {
        let bash = String::from_utf8(completions(clap_complete::Shell::Bash)).unwrap();
        for command in [
            "release",
            "bump",
            "promote",
            "rollback",
            "completions",
            "man",
        ] {
            assert!(
                bash.contains(command),
                "no {command} in the bash completions"
            );
        }
    }

    #[test]
    fn manual_pages_are_written_per_command() {
        let dir = tempfile::tempdir().unwrap();
        let exec = Exec::for_tests(dir.path());
        let written = write_man_pages(&exec, dir.path()).unwrap();
        assert!(
            written.iter().any(|f| f.ends_with("cdflow.1")),
            "{written:?}"
        );
        let release = std::fs::read_to_string(dir.path().join("cdflow-release.1")).unwrap();
        assert!(
            release.starts_with(".ie") || release.contains(".TH"),
            "{release}"
        );
        assert!(release.contains("resume"), "{release}");
        assert!(!dir.path().join("cdflow-serve-env.1").exists());
    }
}
