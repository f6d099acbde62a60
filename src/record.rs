//! Run records: what each run of a pipeline did (stages, commands, outcomes, durations, version,
//! deployments), one JSON file per run under the state folder, written after every stage so that
//! even a killed run leaves one. `cdflow history` lists them; `--resume` continues one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::events::{BenchResult, RunStatus};
use crate::exec::Exec;
use crate::platform::Deployment;
use crate::process::Process;
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
    /// What this run's e2e stages verified (in a dry run too, which stores nothing).
    #[serde(default)]
    pub verified: Vec<Deployment>,
    /// The stage that was running when the run was interrupted or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_in: Option<String>,
    /// The version step as planned, written before the first file is edited, so that a run
    /// killed at any instant of it finishes this very version when resumed, never a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<VersionIntent>,
    /// Each step that changes something outside cdflow (commit, tag, push-back, deploys), written
    /// before it starts and again once it is done: what a killed run may have left half done.
    #[serde(default)]
    pub journal: Vec<JournalEntry>,
    /// The process running it, to tell a live run from one whose process died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Process>,
    /// The command that continues this run (`--resume`), as the user would type it, masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_with: Option<String>,
    /// Why this run cannot be resumed, when it cannot (its version was refused by origin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_end: Option<String>,
    /// What its `bench` stages measured, passed or not: the numbers later runs compare with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bench: Vec<BenchResult>,
}

/// The version a run makes: planned in full before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionIntent {
    pub old: String,
    pub new: String,
    pub tag: String,
    /// The version commit's message, which is also the tag's.
    pub message: String,
    /// The commit the version commit is made on.
    pub base: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalEntry {
    pub step: String,
    pub state: StepState,
    pub at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// About to start: it may have happened in part, or in full, if the run died.
    Intended,
    Done,
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
            verified: Vec::new(),
            stopped_in: None,
            intent: None,
            journal: Vec::new(),
            holder: Process::current(),
            resume_with: None,
            dead_end: None,
            bench: Vec::new(),
        }
    }

    /// How `history` shows the run: a run still marked running whose process is gone is
    /// `abandoned`.
    pub fn shown_status(&self) -> String {
        serde_json::to_value(self.run_status())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// How the run ended, or that its process died without ending it.
    pub fn run_status(&self) -> RunStatus {
        match self.status {
            Status::Running if !self.holder.is_some_and(|h| h.alive()) => RunStatus::Abandoned,
            Status::Running => RunStatus::Running,
            Status::Succeeded => RunStatus::Succeeded,
            Status::Failed => RunStatus::Failed,
            Status::Interrupted => RunStatus::Interrupted,
        }
    }

    /// Notes that `step` is about to start (`Intended`) or has finished (`Done`).
    pub fn journal(&mut self, step: &str, state: StepState) {
        self.journal.push(JournalEntry {
            step: step.to_string(),
            state,
            at: crate::ui::timestamp(),
        });
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

    /// The folder of the run's command logs.
    pub fn logs(&self, state: &State) -> PathBuf {
        state.runs().join(&self.id)
    }

    pub fn path(&self, state: &State) -> PathBuf {
        state.runs().join(format!("{}.json", self.id))
    }

    /// Writes the record atomically, so a reader never sees half of one; a dry run records
    /// nothing.
    pub fn save(&self, exec: &Exec, state: &State) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        exec.save(&self.path(state), text.as_bytes())
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

/// Removes the workspaces and command logs of all but the latest `keep` runs (their records
/// stay, for `history`), so that the state folder does not grow for ever.
/// Only finished runs are pruned: a failed, interrupted or abandoned run may be resumed, and
/// needs its workspace.
pub fn prune(exec: &Exec, state: &State, keep: usize, current: &str) -> Result<()> {
    let records = all(state)?;
    let old = records.len().saturating_sub(keep);
    let done =
        |r: &&RunRecord| r.id != current && (r.status == Status::Succeeded || r.dead_end.is_some());
    for record in records[..old].iter().filter(done) {
        for folder in [state.workspaces().join(&record.id), record.logs(state)] {
            if folder.exists() {
                exec.for_real(|| {
                    std::fs::remove_dir_all(&folder)
                        .with_context(|| format!("could not remove {}", folder.display()))
                })?;
            }
        }
    }
    Ok(())
}

/// The latest run of `pipeline` from `repo`, if it did not finish: the one to resume.
pub fn unfinished(state: &State, pipeline: &str, repo: &str) -> Result<Option<RunRecord>> {
    let latest = all(state)?
        .into_iter()
        .rev()
        .find(|r| r.pipeline == pipeline && r.repo == repo);
    Ok(latest.filter(|r| r.status != Status::Succeeded))
}
