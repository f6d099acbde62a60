//! Any text file, through a search pattern and a replacement, as bump-my-version allows:
//! `{version}` stands for the current version in the search and for the new one in the
//! replacement; `{current_version}` and `{new_version}` may be used in either.

use std::path::Path;

use anyhow::Result;

use super::{line_of, Edits, Occurrence};
use crate::error::user_error;

pub const DEFAULT_SEARCH: &str = "{version}";

/// A pattern with its placeholders filled in.
pub fn render(template: &str, version: &str, current: &str, new: &str) -> String {
    template
        .replace("{current_version}", current)
        .replace("{new_version}", new)
        .replace("{version}", version)
}

/// The versions the file holds where the search pattern expects one, found by reading what
/// stands in the place of `{version}`. A bare `{version}` has no context to tell a version of
/// the app from any other version in the file, so it reports none.
pub fn occurrences(path: &Path, text: &str, search: &str) -> Vec<Occurrence> {
    let Some((prefix, suffix)) = search.split_once("{version}") else {
        return Vec::new();
    };
    if prefix.is_empty() && suffix.is_empty() {
        return Vec::new();
    }
    let starts: Vec<usize> = if prefix.is_empty() {
        text.char_indices()
            .filter(|&(at, c)| c.is_ascii_digit() && is_left_boundary(text, at))
            .map(|(at, _)| at)
            .collect()
    } else {
        text.match_indices(prefix)
            .map(|(at, _)| at + prefix.len())
            .collect()
    };
    let mut found = Vec::new();
    for start in starts {
        let len = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+')))
            .unwrap_or(text.len() - start);
        // The longest version that the pattern's suffix follows: in `version-1.2.3-blue`
        // the version is 1.2.3, not the valid pre-release 1.2.3-blue. The candidate is ASCII,
        // so every end is a character boundary.
        let end = (1..=len).rev().find(|&end| {
            text[start + end..].starts_with(suffix)
                && semver::Version::parse(&text[start..start + end]).is_ok()
        });
        if let Some(end) = end {
            found.push(Occurrence {
                path: path.to_path_buf(),
                line: line_of(text, start),
                what: format!("`{search}`"),
                version: text[start..start + end].to_string(),
            });
        }
    }
    found
}

/// Whether a version may start at `at`: not in the middle of a word or another version
/// (`10.1.0` does not hold `0.1.0`).
fn is_left_boundary(text: &str, at: usize) -> bool {
    !text[..at]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.')
}

fn is_right_boundary(text: &str, at: usize) -> bool {
    !text[at..]
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.')
}

/// Replaces every match of the search pattern (current version filled in) with the
/// replacement (new version filled in).
pub fn edit(
    path: &Path,
    edits: &mut Edits,
    search: &str,
    replace: &str,
    current: &str,
    new: &str,
) -> Result<()> {
    let text = edits.text(path)?;
    let needle = render(search, current, current, new);
    // Where the pattern begins or ends with the version, the match must not be part of a
    // longer version or word.
    let (check_left, check_right) = (
        search.starts_with("{version}"),
        search.ends_with("{version}"),
    );
    let matches: Vec<usize> = text
        .match_indices(&needle)
        .map(|(at, _)| at)
        .filter(|&at| !check_left || is_left_boundary(&text, at))
        .filter(|&at| !check_right || is_right_boundary(&text, at + needle.len()))
        .collect();
    if matches.is_empty() {
        return Err(user_error(format!(
            "{} does not contain `{needle}` (the search pattern `{search}` with the current \
             version {current}): fix the file, or the pattern in cdflow.toml",
            path.display()
        )));
    }
    let replacement = render(replace, new, current, new);
    let mut edited = String::with_capacity(text.len());
    let mut done = 0;
    for at in matches {
        edited.push_str(&text[done..at]);
        edited.push_str(&replacement);
        done = at + needle.len();
    }
    edited.push_str(&text[done..]);
    edits.set(path, edited);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_versions_in_place_of_the_placeholder() {
        let text = "# App\n![v](https://img.example/badge/version-0.1.0-blue)\nrequires 9.9.9\n";
        let found = occurrences(Path::new("README.md"), text, "version-{version}-blue");
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].line, found[0].version.as_str()), (2, "0.1.0"));
    }

    #[test]
    fn a_bare_version_matches_whole_versions_only_and_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("VERSION.md");
        let text = "café → 0.1.0\nnot 10.1.0 nor 0.1.0.1, but (0.1.0)\nPython 3.11.2\n";
        std::fs::write(&path, text).unwrap();
        assert!(occurrences(&path, text, "{version}").is_empty());
        let found = occurrences(&path, text, "{version}\n");
        assert_eq!(found.len(), 2, "{found:?}");
        let mut edits = Edits::default();
        edit(
            &path,
            &mut edits,
            "{version}",
            "{version}",
            "0.1.0",
            "0.2.0",
        )
        .unwrap();
        assert_eq!(
            edits.changes()[0].2,
            "café → 0.2.0\nnot 10.1.0 nor 0.1.0.1, but (0.2.0)\nPython 3.11.2\n"
        );
    }

    #[test]
    fn replaces_every_match_and_refuses_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("README.md");
        std::fs::write(&path, "version-0.1.0-blue and version-0.1.0-blue\n").unwrap();
        let mut edits = Edits::default();
        edit(
            &path,
            &mut edits,
            "version-{version}-blue",
            "version-{version}-blue",
            "0.1.0",
            "0.2.0",
        )
        .unwrap();
        assert_eq!(
            edits.changes()[0].2,
            "version-0.2.0-blue and version-0.2.0-blue\n"
        );

        let mut edits = Edits::default();
        let err = edit(
            &path,
            &mut edits,
            "v{version}",
            "v{version}",
            "0.3.0",
            "0.4.0",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("does not contain `v0.3.0`"), "{err}");
    }
}
