//! A process known by its pid and its start time, so that a pid the kernel has since given to
//! another program is never taken for it (nor signalled as it).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    /// Clock ticks after boot at which it started.
    pub start: u64,
}

impl Process {
    pub fn of(pid: u32) -> Option<Process> {
        start_time(pid).map(|start| Process { pid, start })
    }

    /// This process.
    pub fn current() -> Option<Process> {
        Process::of(std::process::id())
    }

    /// Whether this very process still runs (not just its pid).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// Field 22 of `/proc/<pid>/stat`, or `None` when the process does not exist (or is a zombie
/// already reaped).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last
    // closing parenthesis, at field 3 (the state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_known_by_its_start_time() {
        let me = Process::current().unwrap();
        assert!(me.alive());
        let impostor = Process {
            pid: me.pid,
            start: me.start + 1,
        };
        assert!(!impostor.alive());
    }
}
