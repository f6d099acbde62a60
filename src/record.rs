//! Run records: what each run of a pipeline did (stages, commands, outcomes, durations, version,
//! deployments), one JSON file per run under the state folder, written after every stage so that
//! even a killed run leaves one. `cdflow history` lists them; `--resume` continues one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::platform::Deployment;
use crate::state::State;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    pub status: Status,
    pub seconds: f64,
    /// The commands it ran, masked, with their exit codes.
    pub commands: Vec<CommandRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandRecord {
    pub command: String,
    pub status: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub pipeline: String,
    /// The app's name, once known (after the clone).
    pub app: Option<String>,
    pub repo: String,
    pub git_ref: Option<String>,
    pub started: String,
    pub finished: Option<String>,
    pub status: Status,
    /// The folder the run works in (a fresh clone for a release).
    pub workspace: Option<PathBuf>,
    /// The version this run released: set once the bump is committed and tagged.
    pub version: Option<String>,
    /// Whether the version commit and tag reached the repository.
    pub pushed_back: bool,
    pub stages: Vec<StageRecord>,
    /// What each environment serves after this run's pushes and promotes.
    pub deployments: Vec<Deployment>,
    /// The stage that was running when the run was interrupted or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_in: Option<String>,
}

impl RunRecord {
    pub fn new(pipeline: &str, repo: &str, git_ref: Option<&str>) -> RunRecord {
        let started = crate::ui::timestamp();
        let id = format!(
            "{}-{}",
            started.replace([':', '-'], "").trim_end_matches('Z'),
            std::process::id()
        );
        RunRecord {
            id,
            pipeline: pipeline.to_string(),
            app: None,
            repo: repo.to_string(),
            git_ref: git_ref.map(str::to_string),
            started,
            finished: None,
            status: Status::Running,
            workspace: None,
            version: None,
            pushed_back: false,
            stages: Vec::new(),
            deployments: Vec::new(),
            stopped_in: None,
        }
    }

    /// Whether a stage of that name passed in this run.
    pub fn passed(&self, stage: &str) -> bool {
        self.stages
            .iter()
            .any(|s| s.name == stage && s.status == Status::Succeeded)
    }

    pub fn deployment(&self, env: &str) -> Option<&Deployment> {
        self.deployments.iter().rev().find(|d| d.env == env)
    }

    pub fn set_deployment(&mut self, deployment: Deployment) {
        self.deployments.retain(|d| d.env != deployment.env);
        self.deployments.push(deployment);
    }

    fn path(&self, state: &State) -> PathBuf {
        state.runs().join(format!("{}.json", self.id))
    }

    /// Writes the record atomically, so a reader never sees half of one.
    pub fn save(&self, state: &State) -> Result<()> {
        std::fs::create_dir_all(state.runs())?;
        let text = serde_json::to_string_pretty(self)?;
        crate::exec::atomic_write(&self.path(state), text.as_bytes())
            .context("could not write the run record")
    }
}

/// Every record, oldest first.
pub fn all(state: &State) -> Result<Vec<RunRecord>> {
    let mut records = Vec::new();
    let Ok(entries) = std::fs::read_dir(state.runs()) else {
        return Ok(records);
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            records.push(read(&path)?);
        }
    }
    records.sort_by(|a, b| a.started.cmp(&b.started).then(a.id.cmp(&b.id)));
    Ok(records)
}

fn read(path: &Path) -> Result<RunRecord> {
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a run record", path.display()))
}

/// The latest run of `pipeline` from `repo`, if it did not finish: the one to resume.
pub fn unfinished(state: &State, pipeline: &str, repo: &str) -> Result<Option<RunRecord>> {
    let latest = all(state)?
        .into_iter()
        .rev()
        .find(|r| r.pipeline == pipeline && r.repo == repo);
    Ok(latest.filter(|r| r.status != Status::Succeeded))
}
