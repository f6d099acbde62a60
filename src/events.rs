//! What `--json` prints: one event per line, each a JSON object of a type named here.
//!
//! These types are a public contract, apart from the types the code works with: a field renamed
//! inside cdflow must not rename it for the scripts that read it. The JSON Schema generated from
//! them is published as `docs/json.schema.json` (a test keeps the file equal to what the types
//! generate) and described in `docs/json.md`. A change that breaks a reader (a field removed or
//! retyped, an event renamed) raises [`SCHEMA_VERSION`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The version of the event schema, in every event's `schema` field.
pub const SCHEMA_VERSION: u32 = 1;

/// One line of `--json` output.
#[derive(Debug, Clone, Serialize, JsonSchema)]
// `unevaluatedProperties`: a field that the schema does not name is an error, so that an event
// cannot grow a field that the published schema does not describe.
#[schemars(
    title = "cdflow event",
    extend("$id" = "https://cdflow.dev/schema/events-v1.json", "unevaluatedProperties" = false)
)]
pub struct Envelope {
    /// The version of this schema: 1.
    #[schemars(range(min = 1, max = 1))]
    pub schema: u32,
    /// When the event happened: RFC 3339, UTC, to the second.
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
    /// The id of the run the event belongs to (`cdflow history` lists them), for events of a
    /// command that records a run; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(flatten)]
    pub event: Event,
}

/// What happened; `event` names the kind.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A pipeline run begins.
    RunStarted {
        pipeline: String,
        /// The app's name, when cdflow.toml or the manifest gives it.
        #[serde(skip_serializing_if = "Option::is_none")]
        app: Option<String>,
        /// Whether nothing is changed (`--dry-run`): commands are printed, not run.
        dry_run: bool,
    },
    /// A stage of the pipeline begins.
    StageStarted {
        stage: String,
        /// 1-based position of the stage in the pipeline.
        index: u32,
        total: u32,
    },
    /// A stage ends.
    StageFinished {
        stage: String,
        index: u32,
        total: u32,
        outcome: Outcome,
        seconds: f64,
    },
    /// An external command starts (in a dry run: would start), as a shell would show it,
    /// secrets masked.
    CommandStarted {
        command: String,
        /// True in a dry run: the command is printed, not run, and no `command_finished` follows.
        dry_run: bool,
    },
    /// An external command ended.
    CommandFinished {
        command: String,
        /// The exit code; absent when a signal ended it.
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        seconds: f64,
        /// The file that keeps the command's whole output, inside the run's folder.
        #[serde(skip_serializing_if = "Option::is_none")]
        log: Option<String>,
    },
    /// A line of information for a person.
    Note { message: String },
    /// Something worth attention that did not stop the command.
    Warning { message: String },
    /// Why the command failed; it exits non-zero after this.
    Error { message: String },
    /// The change a dry run would make to a file, as a unified diff.
    Diff { path: String, diff: String },
    /// A run's result, last.
    Summary {
        pipeline: String,
        /// The version the run released or tested; absent when it did not get that far.
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        deployments: Vec<Deployment>,
        stages: Vec<StageTime>,
    },
    /// What serves an environment changed: a push, a promote, a rollback (by hand, or by
    /// `cdflow watch`) or `cdflow up` switched it. Not in a dry run, which changes nothing.
    Deployment(Deployed),
    /// `cdflow history`: one run.
    HistoryRow {
        id: String,
        /// When the run started: RFC 3339, UTC.
        started: String,
        pipeline: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        app: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        status: RunStatus,
        /// The time its stages took, in all.
        seconds: f64,
        /// The stage that was running when it stopped, for a run that did not succeed.
        #[serde(skip_serializing_if = "Option::is_none")]
        stopped_in: Option<String>,
        /// The command that finishes an abandoned run.
        #[serde(skip_serializing_if = "Option::is_none")]
        resume_with: Option<String>,
        /// The numbers of its `bench` stages, when it has any.
        #[serde(skip_serializing_if = "Option::is_none")]
        bench: Option<Vec<BenchResult>>,
    },
    /// `cdflow pipelines`: one usable pipeline.
    Pipeline {
        name: String,
        description: String,
        /// `built-in`, or the file it was read from.
        source: String,
        /// Its stages' names, in order.
        stages: Vec<String>,
    },
    /// `cdflow status`: one environment of one app.
    Environment(EnvironmentStatus),
    /// `cdflow watch` begins.
    WatchStarted {
        app: String,
        env: String,
        /// The check command, run with `APP_URL` set.
        command: String,
        /// Seconds between checks.
        interval: u64,
        /// Where its Prometheus metrics are served, when they are.
        metrics: Option<String>,
    },
    /// `cdflow watch`: one check of the environment.
    Check(WatchCheck),
    /// `cdflow watch` ran its `on_failure` command.
    OnFailure { env: String, message: String },
    /// `cdflow watch` rolled the environment back.
    Rollback { env: String, message: String },
    /// A `bench` stage measured an environment and compared it with the previous release.
    Bench(BenchResult),
    /// A canary's verification at one pause of its deployment (docs/canary.md): what the
    /// probes measured of the stable version before and of the route with the canary in it.
    Canary(CanaryCheck),
    /// `cdflow init --list`: one template.
    Template {
        name: String,
        description: String,
        /// Whether `cdflow init` uses it when `--template` is not given.
        default: bool,
        /// What `--with OPTION` can add, in order.
        options: Vec<TemplateOption>,
    },
    /// `cdflow manifest`: the manifest as an environment gets it, placeholders filled.
    Manifest {
        env: String,
        /// The manifest file it was read from.
        path: String,
        /// Its text (YAML), secrets masked.
        text: String,
    },
    /// `cdflow bump --show`: the current version and what each part would make of it.
    BumpPlan {
        current: String,
        /// The file and line the current version was read from.
        source: String,
        line: u32,
        /// Each part (`major`, `minor`, `patch`, ...) and the version it would make; absent
        /// where the part cannot apply.
        next: Vec<BumpPart>,
    },
}

/// One pause of a canary deployment, verified.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CanaryCheck {
    pub env: String,
    /// Which pause of the deployment, from 1.
    pub pause: u32,
    /// The stable version: on cf, its probes before the deployment; on the local platform,
    /// the requests it answered in the same window as the canary.
    pub stable: Probes,
    /// On cf, the probes of the route with the canary taking its share; on the local
    /// platform, the requests the canary itself answered.
    pub canary: Probes,
    /// Whether the window held enough of the canary's requests and their numbers stayed within
    /// the thresholds (the e2e tier runs after).
    pub passed: bool,
    /// Why not, when not: the numbers that broke the thresholds, or too few requests to judge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What one window measured: probes (cf) or the requests a version answered (local).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Probes {
    pub requests: u64,
    /// 5xx answers, and probes with no answer in time.
    pub errors: u64,
    /// In percent.
    pub error_rate: f64,
    pub p99_ms: f64,
}

/// What `cdflow status` knows of an environment.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EnvironmentStatus {
    pub app: String,
    /// The repository the app comes from, as the local platform knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    pub env: String,
    /// `local` or `cf`.
    pub platform: String,
    pub state: EnvState,
    /// What serves (or, stopped, last served) the environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `sha256:...` of a local artifact, or a cf droplet's guid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// Where it answers; absent for an app with `no-route`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Local: where its route's Prometheus metrics are served, while its server runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// The local platform's server process of the environment, while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_pid: Option<u32>,
    /// Local: each instance.
    pub instances: Vec<InstanceState>,
    /// cf: instances running, and instances in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired: Option<u32>,
    /// Local: the backing services bound there.
    pub services: Vec<ServiceState>,
    /// Stopped: why `cdflow up` cannot bring it back, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up_refused: Option<String>,
    /// Orphaned: the instance processes its dead server left running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orphans: Option<u32>,
    /// Local: a canary in progress next to the version that serves (docs/canary.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryShare>,
}

/// A canary in progress on the local platform.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CanaryShare {
    pub version: String,
    /// The percentage of the route's requests it gets.
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EnvState {
    /// Its route serves a version.
    Serving,
    /// Its server runs but serves nothing yet (deploying, or about to exit).
    Deploying,
    /// Nothing runs; it served a version before (`cdflow up` brings it back).
    Stopped,
    /// Its server died and left instance processes (`cdflow down` stops them).
    Orphaned,
    /// Nothing was ever deployed there.
    Empty,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InstanceState {
    pub index: u32,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `starting`, `healthy`, `unhealthy`, `crashed`, `stopping` or `stopped`.
    pub phase: String,
    pub restarts: u32,
    /// Bytes its processes hold now, when it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// The manifest's memory limit, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// The last health check's result.
    pub check: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ServiceState {
    pub name: String,
    /// `redis`, `postgres` or `user-provided`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Where its data lives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// One check of `cdflow watch`, as printed, recorded in the state folder and shown by
/// `cdflow status`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WatchCheck {
    pub app: String,
    pub env: String,
    /// When the check started, UTC (the event's own `time` is when it was printed).
    pub started: String,
    /// What served the environment when the check ran, when cdflow could tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub passed: bool,
    pub seconds: f64,
    /// Failed checks in a row, this one included (0 when it passed).
    pub failures_in_a_row: u64,
    /// The last lines of a failed check's output, masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Whether `on_failure` ran and succeeded, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<bool>,
    /// The version this check's failure rolled the environment back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<String>,
}

/// What a `bench` stage measured, as printed, kept in the run record and shown by
/// `cdflow history`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct BenchResult {
    /// The stage's name.
    pub stage: String,
    pub env: String,
    /// Where the load was sent (`GET`).
    pub url: String,
    /// What served the environment, when cdflow could tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub connections: u32,
    /// How long the load ran.
    pub seconds: f64,
    pub requests: u64,
    /// Requests answered with a status other than 2xx, or not answered at all.
    pub errors: u64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The numbers compared with: the last successful run's of the same app, pipeline, stage
    /// and environment. Absent for the first numbers, which pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BenchBaseline>,
    /// The threshold, in percent: how much requests/s may fall and p99 rise.
    pub max_regression: u32,
    /// How many errors the run may have.
    pub max_errors: u64,
    pub passed: bool,
    /// Why it failed, one line per threshold passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

/// The earlier numbers a `bench` stage compared with.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct BenchBaseline {
    /// The id of the run that measured them.
    pub run: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

#[derive(Debug, Clone, Copy, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
    Interrupted,
}

/// How a recorded run ended, as `cdflow history` shows it.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
    /// Its process died without finishing it: `--resume` finishes it.
    Abandoned,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Deployment {
    pub env: String,
    /// `local` or `cf`.
    pub platform: String,
    pub version: String,
    /// Where the environment answers.
    pub url: String,
    /// What was deployed: `sha256:...` of a local artifact, or a cf droplet.
    pub artifact: String,
}

/// An environment's new deployment, and what made it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Deployed {
    pub env: String,
    /// `local` or `cf`.
    pub platform: String,
    pub version: String,
    /// Where the environment answers.
    pub url: String,
    /// What now runs: `sha256:...` of a local artifact, or a cf droplet.
    pub artifact: String,
    /// What switched it.
    pub by: DeployedBy,
}

#[derive(Debug, Clone, Copy, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeployedBy {
    /// A new version, staged from a checkout (`cdflow push`, a pipeline's push stage).
    Push,
    /// Another environment's verified artifact (`cdflow promote`, a pipeline's promote stage).
    Promote,
    /// An earlier release (`cdflow rollback`, or `cdflow watch` after failed checks).
    Rollback,
    /// The last deployed version, brought back on the local platform (`cdflow up`).
    Up,
}

/// An option of a `cdflow init` template.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TemplateOption {
    pub name: String,
    /// What it adds.
    pub description: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StageTime {
    pub stage: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BumpPart {
    pub part: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The published schema, as JSON text.
#[cfg(test)]
fn schema_text() -> String {
    let schema = schemars::schema_for!(Envelope);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is JSON");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published file is what the types generate: `CDFLOW_WRITE_SCHEMA=1 cargo test
    /// events` writes it again after a change to the types.
    #[test]
    fn the_published_schema_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json.schema.json");
        let generated = schema_text();
        if std::env::var_os("CDFLOW_WRITE_SCHEMA").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        // Compared as JSON values: the order of an object's keys depends on serde_json's
        // features, which a workspace build may unify differently.
        let published: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_default())
                .unwrap_or_default();
        let generated: serde_json::Value = serde_json::from_str(&generated).unwrap();
        assert!(
            published == generated,
            "docs/json.schema.json is not what the event types generate: run \
             `CDFLOW_WRITE_SCHEMA=1 cargo test events` and commit the file (and raise \
             SCHEMA_VERSION if the change breaks readers)"
        );
    }

    /// docs/json.md describes every kind of event the schema has.
    #[test]
    fn the_docs_name_every_event() {
        let docs = include_str!("../docs/json.md");
        let schema: serde_json::Value = serde_json::from_str(&schema_text()).unwrap();
        let kinds: Vec<String> = schema["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|variant| {
                variant["properties"]["event"]["const"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert!(kinds.len() >= 13, "{kinds:?}");
        for kind in kinds {
            assert!(
                docs.contains(&format!("| `{kind}` |")),
                "docs/json.md lacks `{kind}`"
            );
        }
    }

    #[test]
    fn events_are_flat_objects_tagged_by_kind() {
        let envelope = Envelope {
            schema: SCHEMA_VERSION,
            time: "2026-11-27T15:00:00Z".into(),
            run: Some("20261127-150000-1".into()),
            event: Event::StageFinished {
                stage: "test".into(),
                index: 2,
                total: 7,
                outcome: Outcome::Passed,
                seconds: 1.5,
            },
        };
        let value = serde_json::to_value(&envelope).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "schema": 1, "time": "2026-11-27T15:00:00Z", "run": "20261127-150000-1",
                "event": "stage_finished", "stage": "test", "index": 2, "total": 7,
                "outcome": "passed", "seconds": 1.5
            })
        );
    }
}
