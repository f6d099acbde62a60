//! Pipelines: YAML files of stages. The ones in the repository's `pipelines/` folder are built
//! into the binary; an app's own `pipelines/*.yml` add to them or replace them by name, and
//! `--pipeline FILE` names any file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use indexmap::IndexMap;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::error::user_error;
use crate::yaml_file;

/// The pipelines built into cdflow, as (name, text).
pub const BUILT_IN: &[(&str, &str)] = &[
    ("release", include_str!("../pipelines/release.yml")),
    ("promote", include_str!("../pipelines/promote.yml")),
    ("staging", include_str!("../pipelines/staging.yml")),
    ("check", include_str!("../pipelines/check.yml")),
];

/// Where an app keeps pipelines of its own.
pub const APP_FOLDER: &str = "pipelines";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    description: String,
    stages: Stages,
}

/// The stages of a pipeline, where a second stage of a name already taken is an error:
/// progress, run records and `--resume` know a stage by its name, so a run would take the second
/// for the first and skip it.
#[derive(Debug, Clone)]
struct Stages(Vec<Stage>);

/// What the error about a second stage of one name says, so that [`Pipeline::parse`] does not
/// add the list of stage kinds to it.
const SECOND_OF_A_NAME: &str = "a second stage named";

impl<'de> Deserialize<'de> for Stages {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Stages, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Stages;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of stages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Stages, A::Error> {
                let mut stages = Vec::new();
                while let Some(stage) = seq.next_element_seed(NewName(&stages))? {
                    stages.push(stage);
                }
                Ok(Stages(stages))
            }
        }
        deserializer.deserialize_seq(List)
    }
}

/// Reads one stage and refuses it if an earlier one has its name. The refusal is raised while
/// serde_yaml is still reading the stage's map, so that the error carries the stage's line.
struct NewName<'a>(&'a [Stage]);

impl<'de> DeserializeSeed<'de> for NewName<'_> {
    type Value = Stage;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Stage, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for NewName<'_> {
    type Value = Stage;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a stage: a map with a `kind`")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Stage, A::Error> {
        let stage = Stage::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let name = stage.name();
        if self.0.iter().any(|earlier| earlier.name() == name) {
            return Err(de::Error::custom(format!(
                "{SECOND_OF_A_NAME} `{name}`: runs record and resume stages by \
                 name, so one of the two would be skipped; give one of them a `name:` of its \
                 own (such as `name: {name} again`)"
            )));
        }
        Ok(stage)
    }
}

/// One stage of a pipeline; the kind is the `kind` field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Stage {
    /// `git clone --recursive` of the repository at the ref, into a fresh workspace.
    Clone { name: Option<String> },
    /// The test tiers of cdflow.toml, in order (or only those listed).
    Test {
        name: Option<String>,
        tiers: Option<Vec<String>>,
    },
    /// The next version, committed and tagged, pushed back to the repository.
    Bump {
        name: Option<String>,
        part: Option<String>,
    },
    /// Stage the app and make it serve an environment.
    ///
    /// The environment a stage acts on is `env` in every kind, as `--env` is on the command
    /// line; the older keys (`to`, `against`) stay as aliases, since they read naturally.
    Push {
        name: Option<String>,
        #[serde(rename = "env", alias = "to")]
        to: String,
    },
    /// The e2e command with APP_URL set to the environment's route.
    E2e {
        name: Option<String>,
        #[serde(rename = "env", alias = "against")]
        against: String,
    },
    /// The artifact that passed e2e on `from`, deployed to `env` (or `to`).
    Promote {
        name: Option<String>,
        from: String,
        #[serde(rename = "env", alias = "to")]
        to: String,
    },
    /// Any command, with environment variables.
    Run {
        name: Option<String>,
        command: String,
        #[serde(default)]
        env: IndexMap<String, String>,
    },
    /// A load against the environment's route, compared with the previous release's numbers
    /// (see `bench.rs`).
    Bench {
        name: Option<String>,
        #[serde(rename = "env", alias = "against")]
        against: String,
        /// How long the load runs, such as `10s`.
        #[serde(default, deserialize_with = "duration")]
        duration: Option<Duration>,
        /// Requests in flight at once, each on a keep-alive connection.
        #[serde(default, deserialize_with = "connections")]
        connections: Option<u32>,
        /// What is requested, from `/`.
        #[serde(default, deserialize_with = "url_path")]
        path: Option<String>,
        #[serde(default)]
        thresholds: Thresholds,
    },
}

/// When a `bench` stage fails.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Percent: requests/s may fall, and p99 rise, by at most this much from the previous
    /// release's numbers.
    #[serde(default = "Thresholds::default_regression")]
    pub max_regression: u32,
    /// Requests answered with other than 2xx, or not at all, allowed in the run.
    #[serde(default)]
    pub max_errors: u64,
}

impl Thresholds {
    fn default_regression() -> u32 {
        20
    }
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            max_regression: Thresholds::default_regression(),
            max_errors: 0,
        }
    }
}

/// A `bench` duration: text humantime reads (`10s`, `1m 30s`), from a second to an hour.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let value = serde_yaml::Value::deserialize(deserializer)?;
    let problem = |what: String| {
        de::Error::custom(format!(
            "`duration: {what}` is not a duration of a bench: write one from 1s to 1h with its \
             unit, such as `duration: 10s`"
        ))
    };
    let text = match value {
        serde_yaml::Value::String(text) => text,
        other => {
            let shown = serde_yaml::to_string(&other).unwrap_or_default();
            return Err(problem(shown.trim().to_string()));
        }
    };
    match humantime::parse_duration(&text) {
        Ok(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(3600) => Ok(Some(d)),
        _ => Err(problem(text)),
    }
}

/// A `bench` stage's connections: 1 to 1024.
fn connections<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let value = serde_yaml::Value::deserialize(deserializer)?;
    match value.as_u64() {
        Some(n @ 1..=1024) => Ok(Some(n as u32)),
        _ => Err(de::Error::custom(format!(
            "`connections: {}` is not a number of connections: give one from 1 to 1024, such as \
             `connections: 16`",
            serde_yaml::to_string(&value).unwrap_or_default().trim()
        ))),
    }
}

/// A `bench` stage's path: what follows the route's host, from its `/`.
fn url_path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let path = String::deserialize(deserializer)?;
    if !path.starts_with('/') || path.chars().any(char::is_whitespace) {
        return Err(de::Error::custom(format!(
            "`path: {path}` is not a path of the route: give one that starts with `/` and has \
             no spaces, such as `path: /health`"
        )));
    }
    Ok(Some(path))
}

impl Stage {
    /// The name shown in progress and records: the one given, else the kind and its target.
    pub fn name(&self) -> String {
        let given = match self {
            Stage::Clone { name }
            | Stage::Test { name, .. }
            | Stage::Bump { name, .. }
            | Stage::Push { name, .. }
            | Stage::E2e { name, .. }
            | Stage::Promote { name, .. }
            | Stage::Run { name, .. }
            | Stage::Bench { name, .. } => name.clone(),
        };
        given.unwrap_or_else(|| match self {
            Stage::Clone { .. } => "clone".into(),
            Stage::Test { .. } => "test".into(),
            Stage::Bump { .. } => "bump".into(),
            Stage::Push { to, .. } => format!("push {to}"),
            Stage::E2e { against, .. } => format!("e2e {against}"),
            Stage::Promote { from, to, .. } => format!("promote {from} -> {to}"),
            Stage::Run { command, .. } => format!("run {command}"),
            Stage::Bench { against, .. } => format!("bench {against}"),
        })
    }

    /// The environments the stage names, with the keys that can name each.
    pub fn environments(&self) -> Vec<(&'static [&'static str], &str)> {
        match self {
            Stage::Push { to, .. } => vec![(&["env", "to"], to)],
            Stage::E2e { against, .. } | Stage::Bench { against, .. } => {
                vec![(&["env", "against"], against)]
            }
            Stage::Promote { from, to, .. } => vec![(&["from"], from), (&["env", "to"], to)],
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    BuiltIn,
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::BuiltIn => f.write_str("built in"),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub description: String,
    pub source: Source,
    pub stages: Vec<Stage>,
    text: String,
    /// Whether `cdflow release --resume` can continue it: a pipeline run by `release`, not the
    /// one stage of `cdflow push` and its kin, which are simply run again.
    resumable: bool,
}

impl Pipeline {
    pub fn parse(name: &str, source: Source, text: &str) -> Result<Pipeline> {
        let file: File = serde_yaml::from_str(text).map_err(|err| {
            let at = err
                .location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default();
            let message = err.to_string();
            let hint = if message.contains(SECOND_OF_A_NAME) {
                ""
            } else if message.contains("duplicate field `env`") {
                "\n`env` and its other names (`to` for push and promote, `against` for e2e and \
                 bench) name one thing, the stage's environment: keep one of them"
            } else {
                "\nthe stage kinds are clone, test, bump, push (env), e2e (env), promote (from, \
                 env), run (command, env: its variables) and bench (env, duration, connections, \
                 path, thresholds: max_regression, max_errors); `to` (push, promote) and \
                 `against` (e2e, bench) are other names of `env`"
            };
            user_error(format!("pipeline `{name}` ({source}{at}): {message}{hint}"))
        })?;
        let Stages(stages) = file.stages;
        if stages.is_empty() {
            return Err(user_error(format!(
                "pipeline `{name}` ({source}) has no stages: list at least one under `stages:`"
            )));
        }
        Ok(Pipeline {
            name: name.to_string(),
            description: file.description,
            source,
            stages,
            text: text.to_string(),
            resumable: true,
        })
    }

    /// A pipeline made in code: the one-stage pipelines of `cdflow test`, `push`, `e2e`, ...
    pub fn from_stages(name: &str, source: Source, stages: Vec<Stage>) -> Pipeline {
        Pipeline {
            name: name.to_string(),
            description: String::new(),
            source,
            stages,
            text: String::new(),
            resumable: false,
        }
    }

    pub fn resumable(&self) -> bool {
        self.resumable
    }

    /// `FILE:LINE` of the first line holding `key: value` (with any of `keys`), for errors
    /// about a stage.
    pub fn location_of(&self, keys: &[&str], value: &str) -> String {
        let line = self
            .text
            .lines()
            .position(|line| {
                let line = line.trim_start().trim_start_matches("- ").trim();
                keys.iter().any(|key| {
                    line.strip_prefix(key)
                        .and_then(|rest| rest.trim_start().strip_prefix(':'))
                        .is_some_and(|rest| rest.trim().trim_matches(['"', '\'']) == value)
                })
            })
            .map(|n| n + 1);
        let file = match &self.source {
            Source::BuiltIn => format!("pipelines/{}.yml (built in)", self.name),
            Source::File(path) => path.display().to_string(),
        };
        match line {
            Some(line) => format!("{file}:{line}"),
            None => file,
        }
    }

    /// Every stage's environments must exist; all unknown ones are reported at once.
    pub fn check_environments(&self, known: &[&str]) -> Result<()> {
        let mut problems = Vec::new();
        for stage in &self.stages {
            for (key, env) in stage.environments() {
                if !known.contains(&env) {
                    problems.push(format!(
                        "{}: stage `{}` names the environment `{env}`, which cdflow.toml does \
                         not define",
                        self.location_of(key, env),
                        stage.name()
                    ));
                }
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(user_error(format!(
            "{}\nthe environments are: {}; add [env.NAME] to cdflow.toml, or fix the pipeline",
            problems.join("\n"),
            known.join(", ")
        )))
    }
}

/// Finds a pipeline: a file when `name_or_file` is a path, else the app's own of that name,
/// else the built-in one.
pub fn find(app_dir: &Path, name_or_file: &str) -> Result<Pipeline> {
    let as_path = Path::new(name_or_file);
    if name_or_file.ends_with(".yml")
        || name_or_file.ends_with(".yaml")
        || name_or_file.contains('/')
    {
        let name = as_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| name_or_file.to_string());
        return read(&name, as_path, as_path);
    }
    let own = Path::new(APP_FOLDER).join(format!("{name_or_file}.yml"));
    if app_dir.join(&own).is_file() {
        return read(name_or_file, &app_dir.join(&own), &own);
    }
    match BUILT_IN.iter().find(|(name, _)| *name == name_or_file) {
        Some((name, text)) => Pipeline::parse(name, Source::BuiltIn, text),
        None => Err(user_error(format!(
            "there is no pipeline `{name_or_file}`: `cdflow pipelines` lists them; an app can \
             add its own as {APP_FOLDER}/{name_or_file}.yml"
        ))),
    }
}

/// Reads and parses a pipeline file; `shown` is the path that errors and listings give.
fn read(name: &str, path: &Path, shown: &Path) -> Result<Pipeline> {
    let text = yaml_file::read(path, &shown.display().to_string()).map_err(|err| {
        err.or_io(|err| {
            user_error(format!(
                "could not read the pipeline file {}: {err}",
                shown.display()
            ))
        })
    })?;
    Pipeline::parse(name, Source::File(shown.to_path_buf()), &text)
}

/// Every pipeline available to the app by name, the app's own replacing built-in ones of that
/// name, each with the error that makes it unusable if it is broken: one broken file must not
/// hide the others.
pub fn all(app_dir: &Path) -> Vec<(String, Result<Pipeline>)> {
    let mut found: IndexMap<String, Result<Pipeline>> = IndexMap::new();
    for (name, text) in BUILT_IN {
        found.insert(
            name.to_string(),
            Pipeline::parse(name, Source::BuiltIn, text),
        );
    }
    if let Ok(entries) = std::fs::read_dir(app_dir.join(APP_FOLDER)) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        paths.sort();
        for path in paths {
            if path.extension().is_some_and(|e| e == "yml") {
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                // Shown as the app's own, relative to it.
                let shown = Path::new(APP_FOLDER).join(path.file_name().unwrap());
                let pipeline = read(&name, &path, &shown);
                found.insert(name, pipeline);
            }
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_pipelines_parse_and_release_is_the_talks_road() {
        for (name, text) in BUILT_IN {
            Pipeline::parse(name, Source::BuiltIn, text).unwrap();
        }
        let release = Pipeline::parse("release", Source::BuiltIn, BUILT_IN[0].1).unwrap();
        let names: Vec<String> = release.stages.iter().map(Stage::name).collect();
        assert_eq!(
            names,
            [
                "clone",
                "test",
                "bump",
                "push staging",
                "e2e staging",
                "promote staging -> production"
            ]
        );
    }

    #[test]
    fn unknown_kinds_and_fields_name_the_line() {
        let err = Pipeline::parse(
            "mine",
            Source::File("p.yml".into()),
            "description: x\nstages:\n  - kind: test\n  - kind: deploy\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("p.yml:4"), "{err}");
        assert!(err.contains("unknown variant `deploy`"), "{err}");
        let err = Pipeline::parse(
            "mine",
            Source::File("p.yml".into()),
            "description: x\nstages:\n  - kind: push\n    to: staging\n    force: true\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `force`"), "{err}");
        assert!(err.contains("p.yml:3"), "{err}");
    }

    #[test]
    fn env_names_the_environment_of_every_stage_kind_and_the_older_keys_still_do() {
        let parse = |text: &str| Pipeline::parse("mine", Source::File("p.yml".into()), text);
        let new = parse(
            "description: x\nstages:\n  - kind: push\n    env: staging\n  - kind: e2e\n    \
             env: staging\n  - kind: bench\n    env: staging\n  - kind: promote\n    \
             from: staging\n    env: production\n",
        )
        .unwrap();
        let old = parse(
            "description: x\nstages:\n  - kind: push\n    to: staging\n  - kind: e2e\n    \
             against: staging\n  - kind: bench\n    against: staging\n  - kind: promote\n    \
             from: staging\n    to: production\n",
        )
        .unwrap();
        assert_eq!(new.stages, old.stages);
        let names: Vec<String> = new.stages.iter().map(Stage::name).collect();
        assert_eq!(
            names,
            [
                "push staging",
                "e2e staging",
                "bench staging",
                "promote staging -> production"
            ]
        );
        // An unknown environment is found on its line whichever key names it.
        let err = new
            .check_environments(&["staging"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("p.yml:11:"), "{err}");
        let err = old
            .check_environments(&["production"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("p.yml:4:"), "{err}");
        assert!(err.contains("p.yml:6:"), "{err}");
    }

    #[test]
    fn two_keys_for_one_environment_are_refused_with_the_line() {
        for (kind, old) in [
            ("push", "to"),
            ("e2e", "against"),
            ("bench", "against"),
            ("promote", "to"),
        ] {
            let from = if kind == "promote" {
                "    from: staging\n"
            } else {
                ""
            };
            let err = Pipeline::parse(
                "mine",
                Source::File("p.yml".into()),
                &format!(
                    "description: x\nstages:\n  - kind: test\n  - kind: {kind}\n{from}    \
                     env: staging\n    {old}: production\n"
                ),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("p.yml:4"), "{kind}: {err}");
            assert!(err.contains("duplicate field `env`"), "{kind}: {err}");
            assert!(err.contains(&format!("`{old}` for")), "{kind}: {err}");
            assert!(err.contains("keep one of them"), "{kind}: {err}");
        }
    }

    #[test]
    fn two_stages_of_one_name_are_refused_at_the_second() {
        let err = Pipeline::parse(
            "mine",
            Source::File("p.yml".into()),
            "description: x\nstages:\n  - kind: push\n    to: staging\n  - kind: test\n  - kind: push\n    to: staging\n",
        )
        .unwrap_err();
        assert_eq!(
            crate::error::exit_code(&err),
            std::process::ExitCode::from(crate::error::code::CONFIG)
        );
        let err = err.to_string();
        assert!(err.contains("p.yml:6"), "{err}");
        assert!(err.contains("`push staging`"), "{err}");
        assert!(err.contains("`name:`"), "{err}");
        // Given names count too, and a given name can clash with a default one.
        let err = Pipeline::parse(
            "mine",
            Source::File("p.yml".into()),
            "description: x\nstages: [{kind: test}, {kind: run, command: make, name: test}]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("p.yml:2"), "{err}");
        assert!(err.contains("`test`"), "{err}");
    }

    #[test]
    fn bench_stages_take_defaults_and_refuse_bad_values_at_their_line() {
        let pipeline = Pipeline::parse(
            "perf",
            Source::File("p.yml".into()),
            "description: x\nstages:\n  - kind: bench\n    against: staging\n  - kind: bench\n    \
             name: slow path\n    against: staging\n    duration: 1m 30s\n    connections: 4\n    \
             path: /slow?ms=5\n    thresholds: {max_regression: 40, max_errors: 2}\n",
        )
        .unwrap();
        let plain = crate::bench::Plan::of(&pipeline.stages[0]).unwrap();
        assert_eq!(plain.stage, "bench staging");
        assert_eq!(plain.duration, crate::bench::DEFAULT_DURATION);
        assert_eq!(plain.connections, crate::bench::DEFAULT_CONNECTIONS);
        assert_eq!(plain.path, "/");
        assert_eq!(plain.thresholds, Thresholds::default());
        let given = crate::bench::Plan::of(&pipeline.stages[1]).unwrap();
        assert_eq!(given.stage, "slow path");
        assert_eq!(given.duration, Duration::from_secs(90));
        assert_eq!(given.connections, 4);
        assert_eq!(given.path, "/slow?ms=5");
        assert_eq!(given.thresholds.max_regression, 40);
        assert_eq!(given.thresholds.max_errors, 2);
        assert_eq!(
            pipeline.stages[1].environments(),
            [(&["env", "against"][..], "staging")]
        );

        let refused = |stage: &str, expected: &str| {
            let text = format!("description: x\nstages:\n  - kind: test\n  - kind: bench\n{stage}");
            let err = Pipeline::parse("perf", Source::File("p.yml".into()), &text)
                .unwrap_err()
                .to_string();
            assert!(err.contains("p.yml:4"), "{err}");
            assert!(err.contains(expected), "{err}");
        };
        refused(
            "    against: staging\n    duration: 10\n",
            "`duration: 10` is not a duration of a bench",
        );
        refused(
            "    against: staging\n    duration: soon\n",
            "such as `duration: 10s`",
        );
        refused(
            "    against: staging\n    connections: 0\n",
            "from 1 to 1024",
        );
        refused("    against: staging\n    path: slow\n", "starts with `/`");
        refused(
            "    against: staging\n    thresholds: {max_regresion: 5}\n",
            "unknown field `max_regresion`",
        );
        refused("    duration: 5s\n", "missing field `env`");
    }

    #[test]
    fn unknown_environments_are_listed_with_their_lines() {
        let pipeline = Pipeline::parse(
            "mine",
            Source::File("p.yml".into()),
            "description: x\nstages:\n  - kind: push\n    to: stage\n  - kind: e2e\n    against: qa\n",
        )
        .unwrap();
        let err = pipeline
            .check_environments(&["staging", "production"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("p.yml:4: stage `push stage`"), "{err}");
        assert!(err.contains("p.yml:6: stage `e2e qa`"), "{err}");
    }
}
