//! Children die with cdflow, however cdflow dies.
//!
//! Every command cdflow runs gets a process group of its own (see `exec`), so that a Ctrl-C
//! reaches cdflow alone and cdflow can stop a command with everything it started. The price is
//! that a SIGKILL of cdflow (what a CI runner's cancel sends) leaves those groups running: an
//! orphaned `git push` racing `--resume`, a test tier holding a port. Two mechanisms close that:
//!
//! - Linux's parent-death signal: each child asks the kernel for SIGKILL when cdflow's thread that
//!   started it exits. It needs nobody alive, but it reaches the direct child only (a hook under
//!   `git commit`, a test binary under `cargo test` would live on).
//! - A reaper: a small process (cdflow itself, `cdflow __reap`) that cdflow starts on its first
//!   command, told over a pipe which process groups are live. When cdflow dies the pipe closes,
//!   and the reaper stops every group still listed (SIGTERM, then SIGKILL a moment later), so no
//!   grandchild outlives cdflow by more than a second. It sits in a group of its own and ignores
//!   the terminal's signals, so it outlives cdflow by the moment it needs.
//!
//! A process that leaves its group on purpose (a daemon calling setsid) escapes both, as it
//! escapes a shell's job control; cdflow's own commands do not do that.

use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The hidden subcommand the reaper runs as.
pub const SUBCOMMAND: &str = "__reap";

/// How long a group gets between SIGTERM and SIGKILL once cdflow is gone.
const GRACE: Duration = Duration::from_millis(300);

/// The pipe to the reaper; `None` until the first command, or if it could not be started.
static PIPE: Mutex<Option<ChildStdin>> = Mutex::new(None);
static STARTED: std::sync::Once = std::sync::Once::new();

/// Asks the kernel to SIGKILL the command when cdflow exits: set on every child cdflow starts.
pub fn dies_with_cdflow(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and calls only prctl(2), getppid(2) and
    // _exit(2), which are async-signal-safe; it allocates nothing.
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        command.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            // cdflow may have died before the request was made: then no signal would come.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Tells the reaper that `group` is live: it is stopped if cdflow dies before [`forget`].
pub fn watch(group: u32) {
    STARTED.call_once(start);
    send(&format!("+{group}\n"));
}

/// Tells the reaper that `group` is finished with.
pub fn forget(group: u32) {
    send(&format!("-{group}\n"));
}

fn send(line: &str) {
    let mut pipe = PIPE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(stdin) = pipe.as_mut() {
        // A reaper that is gone cannot be helped: the parent-death signal still holds.
        if stdin.write_all(line.as_bytes()).is_err() {
            *pipe = None;
        }
    }
}

fn start() {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut command = Command::new(exe);
    command
        .arg(SUBCOMMAND)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Ok(mut child) = command.spawn() {
        *PIPE.lock().unwrap_or_else(|e| e.into_inner()) = child.stdin.take();
        // Not waited for: it outlives cdflow by design, and init reaps it.
        std::mem::forget(child);
    }
}

/// The reaper's own life: read `+GROUP` and `-GROUP` lines until cdflow's end of the pipe
/// closes, then stop every group still live.
pub fn serve() -> anyhow::Result<()> {
    // SAFETY: setting signal dispositions to SIG_IGN touches no memory of this program.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let mut live: Vec<libc::pid_t> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (sign, group) = line.split_at(line.len().min(1));
        let Ok(group) = group.parse::<libc::pid_t>() else {
            continue;
        };
        if group <= 1 {
            continue;
        }
        match sign {
            "+" => live.push(group),
            "-" => live.retain(|g| *g != group),
            _ => {}
        }
    }
    stop(&live);
    Ok(())
}

/// SIGTERM to each group, then SIGKILL to those still there after [`GRACE`].
fn stop(groups: &[libc::pid_t]) {
    // SAFETY: kill(2) on process groups cdflow started; it touches no memory.
    let signal_all = |signal| {
        for group in groups {
            unsafe { libc::kill(-group, signal) };
        }
    };
    signal_all(libc::SIGTERM);
    signal_all(libc::SIGCONT);
    let deadline = Instant::now() + GRACE;
    // SAFETY: signal 0 only asks whether the group still has a member.
    let any_left = || groups.iter().any(|g| unsafe { libc::kill(-g, 0) } == 0);
    while any_left() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_all(libc::SIGKILL);
}
