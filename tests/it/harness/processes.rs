//! Processes a test starts: free ports for them, waiting on them, and stopping them, even when
//! the test panics, with one guard type.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::files_under;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Mutex;
    // Drawn below the kernel's ephemeral range, as the local platform draws its instances'
    // ports (src/platform/local/ports.rs): a port from that range, free now but bound by cdflow
    // only later, can meanwhile become the local port of some outgoing connection (CI saw a
    // promote refused for it). Never the same port twice in one test process.
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    const LOWEST: u16 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let random = RandomState::new();
    for attempt in 0..256u64 {
        let span = u64::from(ephemeral_low.saturating_sub(LOWEST).max(1));
        let port = LOWEST + (random.hash_one(attempt) % span) as u16;
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    given.push(port);
    port
}

/// Waits up to a minute for `done`, polling; panics naming `what` if it never comes.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a process runs (a zombie does not).
pub fn pid_alive(pid: impl std::fmt::Display) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Kills what `cdflow down` may have left in a state folder: the servers and process groups
/// of every `pids.json` (of every app, and of the layout before apps had folders), and every
/// backing service's process.
pub fn kill_leftovers(state: &Path) {
    let named = |dir: &Path, name: &str| {
        files_under(dir)
            .into_iter()
            .filter(|path| path.file_name() == Some(name.as_ref()))
            .collect::<Vec<_>>()
    };
    let mut files = named(state, "pids.json");
    files.extend(named(&state.join("local/services"), "pid"));
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let mut targets = Vec::new();
        for pid in [&json["server"]["pid"], &json["pid"]] {
            targets.extend(pid.as_i64().map(|pid| pid as i32));
        }
        for group in json["groups"].as_array().into_iter().flatten() {
            targets.extend(group["pid"].as_i64().map(|pid| -(pid as i32)));
        }
        for target in targets {
            if target != 0 && target != -1 {
                // SAFETY: kill(2) touches no memory; 0 and -1 are refused above.
                unsafe { libc::kill(target, libc::SIGKILL) };
            }
        }
    }
}

/// What a test started, stopped when the guard is dropped, even by a panic: a child process
/// (killed and reaped), or the environments of a state folder (`cdflow down`, then a kill of
/// whatever its records still list, see [`kill_leftovers`]).
pub struct Guard(Started);

enum Started {
    Child(Child),
    Environments { down: Command, state: PathBuf },
}

impl Guard {
    /// Kills `child` when dropped.
    pub fn child(child: Child) -> Guard {
        Guard(Started::Child(child))
    }

    /// Runs `down` (a `cdflow down` with the test's environment) and kills what is left in
    /// `state` when dropped. `down` runs in its folder then: drop the guard before that folder.
    pub fn environments(down: Command, state: impl Into<PathBuf>) -> Guard {
        Guard(Started::Environments {
            down,
            state: state.into(),
        })
    }

    /// The child process this guard stops.
    pub fn process(&mut self) -> &mut Child {
        match &mut self.0 {
            Started::Child(child) => child,
            Started::Environments { .. } => panic!("this guard stops environments, not a child"),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        match &mut self.0 {
            Started::Child(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Started::Environments { down, state } => {
                let _ = down.output();
                kill_leftovers(state);
            }
        }
    }
}

#[test]
fn a_guard_kills_its_child_when_dropped() {
    let mut guard = Guard::child(Command::new("sleep").arg("60").spawn().unwrap());
    let pid = guard.process().id();
    assert!(pid_alive(pid));
    drop(guard);
    assert!(!pid_alive(pid), "the guard's child outlived it");
}
