//! An app's `manifest.yml`, as `cf push` reads it: `((var))` placeholders filled per environment
//! from `--var` values and `--vars-file` files, and a typed view of each application.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use indexmap::IndexMap;
use serde::Deserialize;

use crate::error::user_error;
use crate::yaml_file;

/// The manifest with every placeholder filled, for one environment.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub path: PathBuf,
    /// The text as it would be pushed (placeholders filled).
    pub text: String,
    pub applications: Vec<Application>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Manifest {
    #[serde(default)]
    pub applications: Vec<Application>,
}

/// The fields of an application that cdflow acts on; `cf` reads the others itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Application {
    pub name: String,
    pub command: Option<String>,
    pub memory: Option<String>,
    pub instances: Option<u32>,
    pub buildpack: Option<String>,
    #[serde(default)]
    pub buildpacks: Vec<String>,
    #[serde(default)]
    pub env: IndexMap<String, serde_yaml::Value>,
    #[serde(default)]
    pub services: Vec<serde_yaml::Value>,
    pub health_check_type: Option<String>,
    pub health_check_http_endpoint: Option<String>,
    /// Seconds to wait for the app to start, as cf's `timeout`.
    pub timeout: Option<u64>,
}

impl Application {
    pub fn instances(&self) -> u32 {
        self.instances.unwrap_or(1).max(1)
    }

    /// The buildpacks, whichever of the two keys the manifest uses.
    pub fn buildpacks(&self) -> Vec<String> {
        let mut all = self.buildpacks.clone();
        all.extend(self.buildpack.clone());
        all
    }

    /// The env values as strings, as the platform passes them to the process.
    pub fn env_strings(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    serde_yaml::Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim_end()
                        .to_string(),
                };
                (key.clone(), value)
            })
            .collect()
    }
}

/// Values for the placeholders: vars files first, then single vars, which win, as with `cf`.
#[derive(Debug, Default, Clone)]
pub struct Vars {
    values: BTreeMap<String, String>,
}

impl Vars {
    pub fn load(
        dir: &Path,
        vars_files: &[String],
        vars: &IndexMap<String, String>,
    ) -> Result<Vars> {
        let mut values = BTreeMap::new();
        for file in vars_files {
            let path = dir.join(file);
            let text = yaml_file::read(&path, &path.display().to_string()).map_err(|err| {
                err.or_io(|err| {
                    user_error(format!(
                        "could not read the vars file {}: {err}; fix `vars_files` in cdflow.toml",
                        path.display()
                    ))
                })
            })?;
            let map: BTreeMap<String, serde_yaml::Value> =
                serde_yaml::from_str(&text).map_err(|err| {
                    user_error(format!(
                        "{} is not a YAML map of vars: {err}",
                        path.display()
                    ))
                })?;
            for (key, value) in map {
                values.insert(key, scalar_text(&value));
            }
        }
        for (key, value) in vars {
            values.insert(key.clone(), value.clone());
        }
        Ok(Vars { values })
    }
}

fn scalar_text(value: &serde_yaml::Value) -> String {
    match value {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim_end()
            .to_string(),
    }
}

/// Reads the manifest and fills every `((var))`; every placeholder with no value is listed in
/// one error, before anything is pushed.
pub fn resolve(path: &Path, vars: &Vars) -> Result<Resolved> {
    let text = yaml_file::read(path, &path.display().to_string()).map_err(|err| {
        err.or_io(|err| {
            user_error(format!(
                "could not read the manifest {}: {err}; set [app] manifest in cdflow.toml",
                path.display()
            ))
        })
    })?;
    let (filled, missing) = fill(&text, vars);
    if !missing.is_empty() {
        return Err(user_error(format!(
            "{} has placeholders with no value: {}\ngive each a value in the environment's \
             `vars` or `vars_files` in cdflow.toml",
            path.display(),
            missing
                .iter()
                .map(|(name, line)| format!("(({name})) on line {line}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let manifest: Manifest = serde_yaml::from_str(&filled).map_err(|err| {
        let at = err
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        user_error(format!(
            "{}{at} is not a valid manifest: {err}",
            path.display()
        ))
    })?;
    if manifest.applications.is_empty() {
        return Err(user_error(format!(
            "{} lists no applications: add one under `applications:`",
            path.display()
        )));
    }
    Ok(Resolved {
        path: path.to_path_buf(),
        text: filled,
        applications: manifest.applications,
    })
}

/// The text with known placeholders filled, and the unknown ones with their line. As with cf,
/// placeholders in comments are not placeholders: comments are left as they are.
fn fill(text: &str, vars: &Vars) -> (String, Vec<(String, usize)>) {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let (code, comment) = line.split_at(comment_start(line));
        let mut rest = code;
        while let Some(start) = rest.find("((") {
            let Some(len) = rest[start + 2..].find("))") else {
                break;
            };
            let name = rest[start + 2..start + 2 + len].trim();
            out.push_str(&rest[..start]);
            match vars.values.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    if !missing.iter().any(|(n, _)| n == name) {
                        missing.push((name.to_string(), index + 1));
                    }
                    out.push_str(&rest[start..start + len + 4]);
                }
            }
            rest = &rest[start + len + 4..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    (out, missing)
}

/// Where a YAML comment starts in a line: a `#` at its start or after a space, outside quotes.
fn comment_start(line: &str) -> usize {
    let mut quote = None;
    let mut previous = ' ';
    for (at, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') if previous.is_whitespace() => return at,
            (None, '"' | '\'') => quote = Some(c),
            (Some(open), c) if c == open => quote = None,
            _ => {}
        }
        previous = c;
    }
    line.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "applications:\n- name: web\n  instances: ((instances))\n  memory: ((memory))\n  routes:\n  - route: ((host)).example.com\n  env:\n    VERSION: \"1.0.0\"\n";

    #[test]
    fn fills_placeholders_vars_overriding_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vars.yml"), "instances: 3\nmemory: 64M\n").unwrap();
        std::fs::write(dir.path().join("manifest.yml"), MANIFEST).unwrap();
        let mut single = IndexMap::new();
        single.insert("memory".to_string(), "128M".to_string());
        single.insert("host".to_string(), "app-staging".to_string());
        let vars = Vars::load(dir.path(), &["vars.yml".into()], &single).unwrap();
        let resolved = resolve(&dir.path().join("manifest.yml"), &vars).unwrap();
        let app = &resolved.applications[0];
        assert_eq!(app.instances(), 3);
        assert_eq!(app.memory.as_deref(), Some("128M"));
        assert!(resolved.text.contains("- route: app-staging.example.com\n"));
    }

    #[test]
    fn placeholders_in_comments_are_left_alone() {
        let text = "# set ((instances)) per environment\napplications:\n- name: web # ((not_a_var))\n  memory: \"((memory))#1\"\n";
        let mut vars = Vars::default();
        vars.values.insert("memory".into(), "64M".into());
        let (filled, missing) = fill(text, &vars);
        assert!(missing.is_empty(), "{missing:?}");
        assert_eq!(filled, text.replace("((memory))", "64M"));
    }

    #[test]
    fn every_missing_placeholder_is_listed_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("manifest.yml"), MANIFEST).unwrap();
        let err = resolve(&dir.path().join("manifest.yml"), &Vars::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("((instances)) on line 3, ((memory)) on line 4, ((host)) on line 6"),
            "{err}"
        );
    }
}
