//! An app's `manifest.yml`, as `cf push` reads it: `((var))` placeholders filled per environment
//! from `--var` values and `--vars-file` files, and a typed view of each application.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_yaml::Value;

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
    /// An app with no route: nothing to run e2e tests against.
    pub no_route: Option<bool>,
    /// The app's folder (or archive), relative to the manifest's folder.
    pub path: Option<String>,
    /// The processes of a v3 manifest; the `web` one is folded into the fields above by
    /// [`resolve`], as the settings of the app's web process.
    #[serde(default)]
    pub processes: Vec<Process>,
}

/// A process of a v3 manifest's `processes`: the settings cdflow acts on.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Process {
    #[serde(rename = "type")]
    pub kind: String,
    pub command: Option<String>,
    pub memory: Option<String>,
    pub instances: Option<u32>,
    pub health_check_type: Option<String>,
    pub health_check_http_endpoint: Option<String>,
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

    /// The application with its `web` process's settings in the app-level fields, where the
    /// platforms read them: on Cloud Foundry both describe the one web process. (A setting
    /// given in both places is refused by the local platform; see `platform::local::keys`.)
    pub fn with_web_process(mut self) -> Application {
        let Some(web) = self.processes.iter().find(|p| p.kind == "web").cloned() else {
            return self;
        };
        self.command = web.command.or(self.command);
        self.memory = web.memory.or(self.memory);
        self.instances = web.instances.or(self.instances);
        self.health_check_type = web.health_check_type.or(self.health_check_type);
        self.health_check_http_endpoint = web
            .health_check_http_endpoint
            .or(self.health_check_http_endpoint);
        self.timeout = web.timeout.or(self.timeout);
        self
    }

    /// What Cloud Foundry would refuse in this application's settings, each with its fix, so
    /// that a release is refused before its version is pushed rather than at the deploy.
    pub fn problems(&self) -> Vec<String> {
        // The web process's settings are the app's (folded in, when `resolve` has not yet).
        let app = self.clone().with_web_process();
        let mut problems = settings_problems(
            &format!("`{}`", app.name),
            app.memory.as_deref(),
            app.health_check_type.as_deref(),
            app.health_check_http_endpoint.as_deref(),
        );
        for process in self.processes.iter().filter(|p| p.kind != "web") {
            problems.extend(settings_problems(
                &format!("the `{}` process of `{}`", process.kind, self.name),
                process.memory.as_deref(),
                process.health_check_type.as_deref(),
                process.health_check_http_endpoint.as_deref(),
            ));
        }
        problems
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

/// What Cloud Foundry would refuse in the settings of an app or process called `name`.
fn settings_problems(
    name: &str,
    memory: Option<&str>,
    health_check_type: Option<&str>,
    health_check_http_endpoint: Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(memory) = memory {
        if parse_bytes(memory).is_none_or(|bytes| bytes < MEGABYTE) {
            problems.push(format!(
                "the manifest's memory `{memory}` of {name} is not a size cf reads: write a \
                 whole number of megabytes or more with a unit (B, K, KB, M, MB, G, GB, T or \
                 TB), such as 256M or 1G"
            ));
        }
    }
    match health_check_type {
        None | Some("port" | "http" | "process" | "none") => {}
        Some(other) => problems.push(format!(
            "the manifest's health-check-type `{other}` of {name} is unknown: use `http`, \
             `port` or `process`"
        )),
    }
    if let Some(endpoint) = health_check_http_endpoint {
        if !endpoint.starts_with('/') {
            problems.push(format!(
                "the manifest's health-check-http-endpoint `{endpoint}` of {name} must start \
                 with `/`"
            ));
        }
    }
    problems
}

const MEGABYTE: u64 = 1024 * 1024;

/// A byte quantity as the Cloud Controller reads `memory` and `disk_quota`: a whole number and
/// a unit (B, K, KB, M, MB, G, GB, T or TB, in any case). A number alone is refused, as cf
/// refuses it ("must use a supported unit").
pub fn parse_bytes(text: &str) -> Option<u64> {
    let upper = text.trim().to_ascii_uppercase();
    let digits = upper.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &upper[digits.len()..];
    let scale: u64 = match unit {
        "B" => 1,
        "K" | "KB" => 1024,
        "M" | "MB" => MEGABYTE,
        "G" | "GB" => 1024 * MEGABYTE,
        "T" | "TB" => 1024 * 1024 * MEGABYTE,
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: u64 = digits.parse().ok()?;
    (number > 0).then_some(number)?.checked_mul(scale)
}

/// Values for the placeholders: vars files first, then single vars, which win, as with `cf`.
#[derive(Debug, Default, Clone)]
pub struct Vars {
    values: BTreeMap<String, Value>,
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
            let map: BTreeMap<String, Value> = serde_yaml::from_str(&text).map_err(|err| {
                user_error(format!(
                    "{} is not a YAML map of vars: {err}",
                    path.display()
                ))
            })?;
            values.extend(map);
        }
        for (name, text) in vars {
            values.insert(name.clone(), single_var(name, text)?);
        }
        Ok(Vars { values })
    }
}

/// A value of `vars` in cdflow.toml, read as `cf push --var NAME=VALUE` reads it (bosh-cli's
/// VarKV): as YAML, so that `4` is a number and `{a: 1}` a map, except that a string stays as
/// written (YAML would fold its spaces and newlines). What cf refuses is refused here, before
/// anything runs, rather than by `cf push` after the version went out.
fn single_var(name: &str, text: &str) -> Result<Value> {
    let shown = format!("cdflow.toml: the var `{name}`");
    if text.is_empty() {
        return Err(user_error(format!(
            "{shown} is empty, which `cf push --var` refuses: give it a value, or remove it"
        )));
    }
    yaml_file::check(&shown, text)?;
    match serde_yaml::from_str::<Value>(text) {
        Ok(Value::String(_)) => Ok(Value::String(text.to_string())),
        Ok(value) => Ok(value),
        Err(err) => Err(user_error(format!(
            "{shown} = {text:?} is not a YAML value, which `cf push --var` refuses ({err}): \
             write it in a vars file (`vars_files`) as a quoted YAML string instead"
        ))),
    }
}

/// Reads the manifest and fills every `((var))`; every placeholder with no value is listed in
/// one error, before anything is pushed.
///
/// As cf does, the placeholders are filled in the parsed manifest, so that a value is a value
/// wherever it goes: a placeholder that is a whole scalar takes the var's value (a number, a
/// map...), one inside a longer string takes its text, and no value can add a key or change the
/// structure around it, whatever newlines or `: ` it holds.
pub fn resolve(path: &Path, vars: &Vars) -> Result<Resolved> {
    let shown = path.display().to_string();
    let text = yaml_file::read(path, &shown).map_err(|err| {
        err.or_io(|err| {
            user_error(format!(
                "could not read the manifest {shown}: {err}; set [app] manifest in cdflow.toml"
            ))
        })
    })?;
    let mut missing: Vec<(&str, usize)> = Vec::new();
    for (name, line) in placeholders(&text) {
        if !vars.values.contains_key(name) && !missing.iter().any(|(n, _)| *n == name) {
            missing.push((name, line));
        }
    }
    if !missing.is_empty() {
        return Err(user_error(format!(
            "{shown} has placeholders with no value: {}\ngive each a value in the environment's \
             `vars` or `vars_files` in cdflow.toml",
            missing
                .iter()
                .map(|(name, line)| format!("(({name})) on line {line}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let parsed: Value = serde_yaml::from_str(&text)
        .map_err(|err| user_error(format!("{shown}{} is not valid YAML: {err}", at(&err))))?;
    let filled = fill(parsed, vars).map_err(|(name, problem)| {
        let line = placeholders(&text)
            .find(|(n, _)| *n == name)
            .map(|(_, line)| format!(":{line}"))
            .unwrap_or_default();
        user_error(format!("{shown}{line}: {problem}"))
    })?;
    // The text to show and read: the file with the values written in, which keeps its lines
    // (for errors) and comments, when it reads as the very manifest that was filled; else (a
    // value with a newline, a `: `, a ` #`...) the filled manifest written out anew.
    let written = write_in(&text, vars);
    let (text, lines_of_the_file) = match serde_yaml::from_str::<Value>(&written) {
        Ok(value) if value == filled => (written, true),
        _ => (serde_yaml::to_string(&filled)?, false),
    };
    let manifest: Manifest = serde_yaml::from_str(&text).map_err(|err| {
        if lines_of_the_file {
            user_error(format!(
                "{shown}{} is not a valid manifest: {err}",
                at(&err)
            ))
        } else {
            user_error(format!(
                "{shown}, its placeholders filled, is not a valid manifest: {err}"
            ))
        }
    })?;
    if manifest.applications.is_empty() {
        return Err(user_error(format!(
            "{shown} lists no applications: add one under `applications:`"
        )));
    }
    Ok(Resolved {
        path: path.to_path_buf(),
        text,
        applications: manifest
            .applications
            .into_iter()
            .map(Application::with_web_process)
            .collect(),
    })
}

/// `:LINE:COLUMN` of a YAML error, when it has one.
fn at(err: &serde_yaml::Error) -> String {
    err.location()
        .map(|l| format!(":{}:{}", l.line(), l.column()))
        .unwrap_or_default()
}

/// A placeholder's name and what is wrong with its value there.
type Misfit = (String, String);

/// The manifest with its placeholders filled, keys and values alike, as cf's interpolation
/// does; an error names the placeholder and says what is wrong.
fn fill(node: Value, vars: &Vars) -> std::result::Result<Value, Misfit> {
    Ok(match node {
        Value::Mapping(mapping) => Value::Mapping(
            mapping
                .into_iter()
                .map(|(key, value)| Ok::<_, Misfit>((fill(key, vars)?, fill(value, vars)?)))
                .collect::<std::result::Result<_, _>>()?,
        ),
        Value::Sequence(items) => Value::Sequence(
            items
                .into_iter()
                .map(|item| fill(item, vars))
                .collect::<std::result::Result<_, _>>()?,
        ),
        Value::Tagged(tagged) => {
            let tagged = *tagged;
            Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
                tag: tagged.tag,
                value: fill(tagged.value, vars)?,
            }))
        }
        Value::String(text) => {
            let spans = spans(&text);
            if let [(range, name)] = spans.as_slice() {
                if *range == (0..text.len()) {
                    if let Some(value) = vars.values.get(*name) {
                        return Ok(value.clone());
                    }
                }
            }
            let mut out = String::with_capacity(text.len());
            let mut done = 0;
            for (range, name) in spans {
                let Some(value) = vars.values.get(name) else {
                    continue;
                };
                let value = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                    other => {
                        return Err((
                            name.to_string(),
                            format!(
                                "the value of (({name})) is {}, which cannot be written inside \
                                 the longer string {text:?}: only strings and integers can \
                                 (as with cf)",
                                describe(other)
                            ),
                        ))
                    }
                };
                out.push_str(&text[done..range.start]);
                out.push_str(&value);
                done = range.end;
            }
            out.push_str(&text[done..]);
            Value::String(out)
        }
        other => other,
    })
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number that is not an integer",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The placeholders of a text, `((name))`, as (the range of the whole placeholder, the name).
fn spans(text: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(start) = text[from..].find("((").map(|at| from + at) {
        let Some(len) = text[start + 2..].find("))") else {
            break;
        };
        let end = start + 2 + len + 2;
        found.push((start..end, text[start + 2..start + 2 + len].trim()));
        from = end;
    }
    found
}

/// Every placeholder of the manifest's text with its line, in order. As with cf, placeholders
/// in comments are not placeholders.
fn placeholders(text: &str) -> impl Iterator<Item = (&str, usize)> {
    text.split_inclusive('\n')
        .enumerate()
        .flat_map(|(index, line)| {
            let code = &line[..comment_start(line)];
            spans(code)
                .into_iter()
                .map(move |(_, name)| (name, index + 1))
        })
}

/// The text with each known placeholder's value written in its place: strings as they are,
/// other values as YAML writes them. Comments are left as they are.
fn write_in(text: &str, vars: &Vars) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (code, comment) = line.split_at(comment_start(line));
        let mut done = 0;
        for (range, name) in spans(code) {
            if let Some(value) = vars.values.get(name) {
                out.push_str(&code[done..range.start]);
                match value {
                    Value::String(s) => out.push_str(s),
                    other => {
                        out.push_str(serde_yaml::to_string(other).unwrap_or_default().trim_end())
                    }
                }
                done = range.end;
            }
        }
        out.push_str(&code[done..]);
        out.push_str(comment);
    }
    out
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

    #[test]
    fn sizes_read_as_the_cloud_controller_reads_them() {
        const M: u64 = 1024 * 1024;
        assert_eq!(parse_bytes("256M"), Some(256 * M));
        assert_eq!(parse_bytes("256mb"), Some(256 * M));
        assert_eq!(parse_bytes("1G"), Some(1024 * M));
        assert_eq!(parse_bytes(" 2gb "), Some(2048 * M));
        assert_eq!(parse_bytes("512K"), Some(M / 2));
        for bad in ["", "M", "64", "lots", "1.5G", "-1M", "0M", "12 M", "1MiB"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn settings_cf_would_refuse_are_problems() {
        let app: Application = serde_yaml::from_str(
            "name: web\nmemory: 512\nhealth-check-type: tcp\nhealth-check-http-endpoint: health\n",
        )
        .unwrap();
        let problems = app.problems().join("\n");
        assert!(problems.contains("memory `512` of `web`"), "{problems}");
        assert!(problems.contains("health-check-type `tcp`"), "{problems}");
        assert!(problems.contains("must start with `/`"), "{problems}");
        let fine: Application = serde_yaml::from_str("name: web\nmemory: 64M\n").unwrap();
        assert!(fine.problems().is_empty());
    }

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
        assert_eq!(
            placeholders(text).collect::<Vec<_>>(),
            [("memory", 4)],
            "only the placeholder outside comments"
        );
        assert_eq!(write_in(text, &vars), text.replace("((memory))", "64M"));
    }

    /// The manifest's tree, as YAML reads the text that `resolve` returns.
    fn tree(resolved: &Resolved) -> serde_yaml::Value {
        serde_yaml::from_str(&resolved.text).unwrap()
    }

    #[test]
    fn a_value_with_newlines_is_a_value_and_adds_no_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("vars.yml"),
            "top: \"x\\nevil: 1\"\nnested: \"x\\n  evil: 1\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("manifest.yml"),
            "applications:\n- name: web\n  command: ((nested))\n  memory: ((top))\n  env:\n    \
             GREETING: hello ((nested))\n",
        )
        .unwrap();
        let vars = Vars::load(dir.path(), &["vars.yml".into()], &IndexMap::new()).unwrap();
        let resolved = resolve(&dir.path().join("manifest.yml"), &vars).unwrap();
        let app = &resolved.applications[0];
        assert_eq!(app.command.as_deref(), Some("x\n  evil: 1"));
        assert_eq!(app.memory.as_deref(), Some("x\nevil: 1"));
        assert_eq!(
            app.env_strings(),
            [("GREETING".to_string(), "hello x\n  evil: 1".to_string())]
        );
        let tree = tree(&resolved);
        assert_eq!(tree.get("evil"), None, "{}", resolved.text);
        assert_eq!(
            tree["applications"][0].get("evil"),
            None,
            "{}",
            resolved.text
        );
    }

    #[test]
    fn single_vars_are_read_as_cf_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("manifest.yml"),
            "applications:\n- name: web\n  instances: ((instances))\n  routes:\n  - route: \
             web-((n)).example.com\n  env:\n    LIMITS: ((limits))\n    NOTE: ((note))\n",
        )
        .unwrap();
        let mut single = IndexMap::new();
        single.insert("instances".to_string(), "4".to_string());
        single.insert("n".to_string(), "3".to_string());
        single.insert("limits".to_string(), "{cpu: 2}".to_string());
        // A string keeps what was written: YAML would fold its spaces.
        single.insert("note".to_string(), "two  spaces".to_string());
        let vars = Vars::load(dir.path(), &[], &single).unwrap();
        let resolved = resolve(&dir.path().join("manifest.yml"), &vars).unwrap();
        let app = &resolved.applications[0];
        assert_eq!(app.instances(), 4);
        let tree = tree(&resolved);
        assert_eq!(
            tree["applications"][0]["routes"][0]["route"],
            "web-3.example.com"
        );
        assert_eq!(tree["applications"][0]["env"]["LIMITS"]["cpu"], 2);
        assert_eq!(tree["applications"][0]["env"]["NOTE"], "two  spaces");

        // What cf refuses as a --var value is refused here, before anything runs.
        single.insert("n".to_string(), "x\nevil: 1".to_string());
        let err = Vars::load(dir.path(), &[], &single).unwrap_err();
        assert_eq!(
            crate::error::exit_code(&err),
            std::process::ExitCode::from(crate::error::code::CONFIG)
        );
        let err = err.to_string();
        assert!(err.contains("the var `n`"), "{err}");
        assert!(err.contains("vars_files"), "{err}");

        // A map cannot be written inside a longer string.
        single.insert("n".to_string(), "{a: 1}".to_string());
        let vars = Vars::load(dir.path(), &[], &single).unwrap();
        let err = resolve(&dir.path().join("manifest.yml"), &vars)
            .unwrap_err()
            .to_string();
        assert!(err.contains("manifest.yml:5"), "{err}");
        assert!(err.contains("((n))"), "{err}");
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
