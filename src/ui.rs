//! Everything cdflow prints goes through here, masked, in the style the reader wants:
//! a terminal, plain lines for CI logs, or one JSON event per line for machines.

use std::io::{IsTerminal, Write};

use crate::secrets::Secrets;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Terminal,
    Plain,
    Json,
}

impl Style {
    /// Terminal when stdout is one, plain lines otherwise (CI), JSON when asked for.
    pub fn detect(json: bool) -> Style {
        if json {
            Style::Json
        } else if std::io::stdout().is_terminal() {
            Style::Terminal
        } else {
            Style::Plain
        }
    }
}

#[derive(Debug, Clone)]
pub struct Ui {
    style: Style,
    secrets: Secrets,
}

impl Ui {
    pub fn new(style: Style, secrets: Secrets) -> Ui {
        Ui { style, secrets }
    }

    pub fn mask(&self, text: &str) -> String {
        self.secrets.mask(text)
    }

    /// A command that runs (or, in a dry run, would run), as `$ command`.
    pub fn command(&self, line: &str) {
        let line = self.mask(line);
        match self.style {
            Style::Json => self.event("command", &[("command", &line)]),
            _ => self.out(&format!("$ {line}")),
        }
    }

    /// A line of information for the reader.
    pub fn note(&self, text: &str) {
        let text = self.mask(text);
        match self.style {
            Style::Json => self.event("note", &[("message", &text)]),
            _ => self.out(&text),
        }
    }

    /// A unified diff of a file that a dry run would change.
    pub fn diff(&self, path: &str, diff: &str) {
        let diff = self.mask(diff);
        match self.style {
            Style::Json => self.event("diff", &[("path", path), ("diff", &diff)]),
            _ => self.out(diff.trim_end_matches('\n')),
        }
    }

    /// One JSON object per line; the field values are already masked by the callers above.
    pub fn event(&self, kind: &str, fields: &[(&str, &str)]) {
        let mut object = serde_json::Map::new();
        object.insert("event".into(), kind.into());
        for (key, value) in fields {
            object.insert((*key).into(), (*value).into());
        }
        self.out(&serde_json::Value::Object(object).to_string());
    }

    fn out(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`cdflow ... | head`) is not worth a panic.
        let _ = writeln!(stdout, "{text}");
    }
}
