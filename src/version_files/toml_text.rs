//! Byte-exact edits of TOML files: toml_edit finds where a value is, and only the version's own
//! characters are replaced, so comments, key order, quoting and line endings stay as they were.

use std::ops::Range;
use std::path::Path;

use anyhow::Result;
use toml_edit::{Document, Item, Table, Value};

use crate::error::user_error;

/// Parses a TOML file; the error names the file, the line and the column.
pub fn parse<'t>(path: &Path, text: &'t str) -> Result<Document<&'t str>> {
    Document::parse(text).map_err(|err| {
        user_error(format!(
            "{} is not valid TOML: {}",
            path.display(),
            err.to_string().trim_end()
        ))
    })
}

/// The value found by following `keys` through tables and inline tables.
pub fn value_at<'d>(table: &'d Table, keys: &[&str]) -> Option<&'d Value> {
    let (first, rest) = keys.split_first()?;
    match table.get(first)? {
        Item::Table(inner) => value_at(inner, rest),
        Item::Value(value) => value_in(value, rest),
        _ => None,
    }
}

fn value_in<'d>(value: &'d Value, keys: &[&str]) -> Option<&'d Value> {
    match keys.split_first() {
        None => Some(value),
        Some((first, rest)) => value_in(value.as_inline_table()?.get(first)?, rest),
    }
}

/// The string at `keys` and the byte range of its literal (quotes included).
pub fn string_at(table: &Table, keys: &[&str]) -> Option<(String, Range<usize>)> {
    let value = value_at(table, keys)?;
    Some((value.as_str()?.to_string(), value.span()?))
}

/// `text` with the first `old` inside `span` replaced by `new`.
pub fn replace_in_span(text: &str, span: Range<usize>, old: &str, new: &str) -> Option<String> {
    let at = text[span.clone()].find(old)? + span.start;
    let mut out = String::with_capacity(text.len() + new.len());
    out.push_str(&text[..at]);
    out.push_str(new);
    out.push_str(&text[at + old.len()..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_only_the_version() {
        let text = "[package]\r\nname = 'app' # the name\r\nversion = '0.1.0' # kept\r\n";
        let doc = parse(Path::new("Cargo.toml"), text).unwrap();
        let (version, span) = string_at(doc.as_table(), &["package", "version"]).unwrap();
        assert_eq!(version, "0.1.0");
        let new = replace_in_span(text, span, "0.1.0", "0.2.0").unwrap();
        assert_eq!(new, text.replace("0.1.0", "0.2.0"));
    }

    #[test]
    fn follows_inline_tables() {
        let text = "[dependencies]\nlib = { path = \"lib\", version = \"=1.0.0\" }\n";
        let doc = parse(Path::new("Cargo.toml"), text).unwrap();
        let (req, _) = string_at(doc.as_table(), &["dependencies", "lib", "version"]).unwrap();
        assert_eq!(req, "=1.0.0");
    }

    #[test]
    fn parse_errors_name_file_and_line() {
        let err = parse(Path::new("x/Cargo.toml"), "[package]\nname = \n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x/Cargo.toml") && err.contains("line 2"),
            "{err}"
        );
    }
}
