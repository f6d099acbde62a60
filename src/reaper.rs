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
//!   command, told over a pipe which process groups are live (each command writes its own group
//!   there itself, before it runs; cdflow says when one is finished). When cdflow dies the pipe closes,
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
static PIPE: Mutex<Option<Pipe>> = Mutex::new(None);

struct Pipe {
    stdin: ChildStdin,
    /// A write failed: the reaper is gone.
    broken: bool,
}
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

/// Makes the command's process group known to the reaper before the command runs: the child
/// itself writes `+PID` into the reaper's pipe between fork and exec. Told by the parent after
/// `spawn` instead, a SIGKILL of cdflow in the moment between (a loaded machine can hold cdflow
/// off the CPU for milliseconds while the command starts its own children) left those
/// children running. For commands spawned with `process_group(0)`, whose group is their pid.
pub fn registers_itself(command: &mut Command) {
    STARTED.call_once(start);
    let Some(fd) = pipe_fd() else {
        return;
    };
    // SAFETY: the closure runs between fork and exec and calls only getpid(2), signal(2) and
    // write(2), which are async-signal-safe; it formats into a buffer on the stack. The pipe's
    // descriptor stays open for cdflow's whole life (the pipe is never closed, see `send`).
    unsafe {
        command.pre_exec(move || {
            let mut line = [0u8; 24];
            let len = group_line(libc::getpid(), &mut line);
            // A reaper gone would make the write raise SIGPIPE, which std has already set back
            // to its default (death) for the child: ignored for the write.
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            libc::write(fd, line.as_ptr().cast(), len);
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            Ok(())
        });
    }
}

/// `+PID\n` into `buf`, without allocating; its length.
fn group_line(pid: libc::pid_t, buf: &mut [u8; 24]) -> usize {
    let mut digits = [0u8; 20];
    let mut n = pid.unsigned_abs();
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf[0] = b'+';
    for i in 0..count {
        buf[1 + i] = digits[count - 1 - i];
    }
    buf[1 + count] = b'\n';
    count + 2
}

/// The reaper pipe's descriptor, while the reaper listens.
fn pipe_fd() -> Option<std::os::fd::RawFd> {
    use std::os::fd::AsRawFd;
    let pipe = PIPE.lock().unwrap_or_else(|e| e.into_inner());
    match &*pipe {
        Some(Pipe {
            stdin,
            broken: false,
        }) => Some(stdin.as_raw_fd()),
        _ => None,
    }
}

/// Tells the reaper that `group` is finished with.
pub fn forget(group: u32) {
    send(&format!("-{group}\n"));
}

fn send(line: &str) {
    let mut pipe = PIPE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pipe) = pipe.as_mut().filter(|pipe| !pipe.broken) {
        // A reaper that is gone cannot be helped: the parent-death signal still holds. The pipe
        // stays open, so that its descriptor is never reused while a child may write to it.
        if pipe.stdin.write_all(line.as_bytes()).is_err() {
            pipe.broken = true;
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
        *PIPE.lock().unwrap_or_else(|e| e.into_inner()) = child.stdin.take().map(|stdin| Pipe {
            stdin,
            broken: false,
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_line_is_written_without_allocating() {
        let mut buf = [0u8; 24];
        for (pid, line) in [(1, "+1\n"), (40_000, "+40000\n"), (4_194_304, "+4194304\n")] {
            let len = group_line(pid, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), line);
        }
    }
}
