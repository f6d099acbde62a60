//! `pids.json`: the processes an environment's server started, so that `cdflow down` can stop
//! them even when the server itself was killed. Each process is recorded with its start time
//! (from `/proc/<pid>/stat`), so that a pid the kernel has since given to another program is
//! never signalled.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::layout::EnvPaths;
use crate::process::Process;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PidFile {
    pub server: Option<Process>,
    /// Leaders of the instances' process groups.
    #[serde(default)]
    pub groups: Vec<Process>,
}

/// The server's record of its live processes, written to `pids.json` at every change.
pub struct Registry {
    path: PathBuf,
    server: Option<Process>,
    groups: Mutex<BTreeMap<u32, Process>>,
}

impl Registry {
    pub fn new(paths: &EnvPaths) -> Registry {
        let registry = Registry {
            path: paths.pids(),
            server: Process::of(std::process::id()),
            groups: Mutex::new(BTreeMap::new()),
        };
        registry.save(&BTreeMap::new());
        registry
    }

    pub fn add(&self, pid: u32) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(process) = Process::of(pid) {
            groups.insert(pid, process);
        }
        self.save(&groups);
    }

    pub fn remove(&self, pid: u32) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.remove(&pid);
        self.save(&groups);
    }

    fn save(&self, groups: &BTreeMap<u32, Process>) {
        let file = PidFile {
            server: self.server,
            groups: groups.values().copied().collect(),
        };
        // Replaced whole (a reader never sees half a file) but not synced: the server writes it
        // on its only thread, which also proxies, and after a crash of the machine the
        // processes it lists are gone anyway.
        if let Ok(text) = serde_json::to_string(&file) {
            let temp = self.path.with_extension("json.tmp");
            if std::fs::write(&temp, text).is_ok() {
                let _ = std::fs::rename(&temp, &self.path);
            }
        }
    }

    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn load(paths: &EnvPaths) -> PidFile {
    std::fs::read_to_string(paths.pids())
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// Stops whatever `pids.json` lists that still runs: the instances' groups with SIGTERM, then
/// SIGKILL after `grace`, and the server. Returns how many processes it stopped.
pub fn stop_leftovers(paths: &EnvPaths, grace: Duration) -> usize {
    let file = load(paths);
    let groups: Vec<Process> = file.groups.into_iter().filter(Process::alive).collect();
    let server = file.server.filter(Process::alive);
    if let Some(server) = server {
        signal(server.pid as i32, libc::SIGKILL);
    }
    for group in &groups {
        signal(-(group.pid as i32), libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && groups.iter().any(Process::alive) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for group in &groups {
        // The whole group, even if its leader is gone: children of the app hold ports too.
        signal(-(group.pid as i32), libc::SIGKILL);
    }
    let _ = std::fs::remove_file(paths.pids());
    groups.len() + usize::from(server.is_some())
}

/// kill(2); a negative pid is a process group.
pub fn signal(pid: i32, signal: i32) {
    if pid == 0 || pid == -1 {
        return;
    }
    // SAFETY: kill(2) touches no memory; pid 0 and -1 (everything) are refused above.
    unsafe {
        libc::kill(pid, signal);
    }
}
