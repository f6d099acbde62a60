//! The `VERSION` in the `env` of each application of a Cloud Foundry `manifest.yml`.
//!
//! YAML has no editor that keeps a file byte for byte, so the edit is a text edit of the
//! `VERSION:` lines, checked by parsing the file before and after: the only difference allowed is
//! the version itself.

use std::path::Path;

use anyhow::Result;
use serde_yaml::Value;

use super::{Edits, Occurrence};
use crate::error::user_error;
use crate::yaml_file;

/// Whether a YAML document is a Cloud Foundry manifest (a mapping with `applications`).
pub fn is_manifest(doc: &Value) -> bool {
    doc.get("applications").is_some()
}

/// Parses YAML; the error names the file, the line and the column.
pub fn parse(path: &Path, text: &str) -> Result<Value> {
    yaml_file::check(&path.display().to_string(), text)?;
    serde_yaml::from_str(text).map_err(|err| {
        let at = err
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        user_error(format!("{}{at} is not valid YAML: {err}", path.display()))
    })
}

/// The `VERSION` of every application that has one.
pub fn occurrences(path: &Path, text: &str) -> Result<Vec<Occurrence>> {
    let doc = parse(path, text)?;
    let lines = version_lines(text);
    let found: Vec<(usize, String)> = applications(&doc)
        .enumerate()
        .filter_map(|(index, app)| Some((index, scalar(app.get("env")?.get("VERSION")?)?)))
        .collect();
    if found.is_empty() {
        return Err(user_error(format!(
            "{} has no `VERSION` in the env of any application: add `VERSION: \"x.y.z\"` under \
             `env:`, or give a search pattern for this file in cdflow.toml",
            path.display()
        )));
    }
    Ok(found
        .into_iter()
        .enumerate()
        .map(|(nth, (index, version))| Occurrence {
            path: path.to_path_buf(),
            line: lines.get(nth).map(|(line, _)| *line).unwrap_or(0),
            what: format!("applications[{index}].env.VERSION"),
            version,
        })
        .collect())
}

/// Sets every application's `VERSION` from `current` to `new`.
pub fn edit(path: &Path, edits: &mut Edits, current: &str, new: &str) -> Result<()> {
    let text = edits.text(path)?;
    let before = parse(path, &text)?;
    let mut edited = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match version_value(line) {
            Some(range) if line[range.clone()] == *current => {
                edited.push_str(&line[..range.start]);
                edited.push_str(new);
                edited.push_str(&line[range.end..]);
            }
            _ => edited.push_str(line),
        }
    }
    let after = parse(path, &edited)?;
    if after != with_version(before, current, new) {
        return Err(user_error(format!(
            "could not change the VERSION of {} safely (it is not written one per line as \
             `VERSION: {current}`): write it so, or give a search pattern for this file in \
             cdflow.toml",
            path.display()
        )));
    }
    edits.set(path, edited);
    Ok(())
}

fn applications(doc: &Value) -> impl Iterator<Item = &Value> {
    doc.get("applications")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
}

/// A scalar as its text: `VERSION: 1.0` is a number to YAML but a version to us.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The document as it should parse after the edit: every app's `VERSION` equal to `current`
/// set to `new`, nothing else changed.
fn with_version(mut doc: Value, current: &str, new: &str) -> Value {
    if let Some(apps) = doc.get_mut("applications").and_then(Value::as_sequence_mut) {
        for app in apps {
            if let Some(version) = app.get_mut("env").and_then(|env| env.get_mut("VERSION")) {
                if scalar(version).as_deref() == Some(current) {
                    *version = Value::String(new.to_string());
                }
            }
        }
    }
    doc
}

/// The `VERSION:` lines, as (1-based line, value).
fn version_lines(text: &str) -> Vec<(usize, String)> {
    text.split_inclusive('\n')
        .enumerate()
        .filter_map(|(n, line)| Some((n + 1, line[version_value(line)?].to_string())))
        .collect()
}

/// The byte range of the value in a `  VERSION: value` line, inside quotes if any.
fn version_value(line: &str) -> Option<std::ops::Range<usize>> {
    let indent = line.len() - line.trim_start().len();
    let rest = line[indent..].strip_prefix("VERSION:")?;
    let value_start = indent + "VERSION:".len() + (rest.len() - rest.trim_start().len());
    let value = &line[value_start..];
    let (start, len) = match value.chars().next()? {
        quote @ ('"' | '\'') => (value_start + 1, value[1..].find(quote)?),
        _ => (
            value_start,
            value
                .find(|c: char| c.is_whitespace() || c == '#')
                .unwrap_or(value.len()),
        ),
    };
    (len > 0).then_some(start..start + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "---\r\napplications:\r\n- name: a # first\r\n  env:\r\n    LOG_LEVEL: INFO\r\n    VERSION: \"0.1.0\" # kept\r\n- name: b\r\n  env:\r\n    VERSION: 0.1.0\r\n";

    #[test]
    fn every_application_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.yml");
        std::fs::write(&path, MANIFEST).unwrap();
        let found = occurrences(&path, MANIFEST).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].line, found[1].line), (6, 9));
        let mut edits = Edits::default();
        edit(&path, &mut edits, "0.1.0", "0.2.0").unwrap();
        let (_, old, new) = edits.changes().remove(0);
        assert_eq!(old, MANIFEST);
        assert_eq!(new, MANIFEST.replace("0.1.0", "0.2.0"));
    }

    #[test]
    fn flow_style_is_refused_not_mangled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.yml");
        let text = "applications:\n- name: a\n  env: {VERSION: 0.1.0}\n";
        std::fs::write(&path, text).unwrap();
        let mut edits = Edits::default();
        let err = edit(&path, &mut edits, "0.1.0", "0.2.0").unwrap_err();
        assert!(err.to_string().contains("safely"), "{err}");
        assert!(edits.changes().is_empty());
    }

    #[test]
    fn bad_yaml_names_line_and_column() {
        let err = parse(Path::new("manifest.yml"), "applications:\n- name: [a\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("manifest.yml:"), "{err}");
    }
}
