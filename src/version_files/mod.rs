//! The files that carry an app's version: finding the version in each, and computing every
//! file's new content in memory before anything is written.

pub mod cargo;
pub mod manifest;
pub mod pattern;
pub mod toml_text;
pub mod workspace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::user_error;

/// One place where a file states a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub path: PathBuf,
    pub line: usize,
    /// What holds it, such as `package.version` or `applications[0].env.VERSION`.
    pub what: String,
    pub version: String,
}

/// A file's path, its content before the version's edits, and after.
pub type Change = (PathBuf, String, String);

/// The new content of the files, computed in memory; nothing is written here.
#[derive(Debug, Default)]
pub struct Edits {
    /// path -> (content before the edits, new content)
    files: BTreeMap<PathBuf, (String, String)>,
    /// Texts edited instead of the files on disk, by path.
    base: BTreeMap<PathBuf, String>,
}

impl Edits {
    /// Edits of `base`'s texts instead of the files on disk (the files as the last commit or
    /// the index holds them, say); a file that `base` lacks is read from disk.
    pub fn over(base: BTreeMap<PathBuf, String>) -> Edits {
        Edits {
            files: BTreeMap::new(),
            base,
        }
    }

    /// The content of `path` with the edits made so far.
    pub fn text(&mut self, path: &Path) -> Result<String> {
        if let Some((_, new)) = self.files.get(path) {
            return Ok(new.clone());
        }
        let text = match self.base.get(path) {
            Some(text) => text.clone(),
            None => read(path)?,
        };
        self.files
            .insert(path.to_path_buf(), (text.clone(), text.clone()));
        Ok(text)
    }

    pub fn set(&mut self, path: &Path, text: String) {
        if let Some(entry) = self.files.get_mut(path) {
            entry.1 = text;
        }
    }

    /// The files whose content changes, as (path, old, new), in path order.
    pub fn changes(&self) -> Vec<Change> {
        self.files
            .iter()
            .filter(|(_, (old, new))| old != new)
            .map(|(path, (old, new))| (path.clone(), old.clone(), new.clone()))
            .collect()
    }
}

/// Reads a file that the configuration names, with an error that says which and what to do.
pub fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            user_error(format!(
                "{} does not exist: create it, or remove it from [version] files in cdflow.toml",
                path.display()
            ))
        } else {
            user_error(format!("could not read {}: {err}", path.display()))
        }
    })
}

/// The 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
