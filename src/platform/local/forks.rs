//! Why an instance could fail with "Text file busy", and the lock that prevents it.
//!
//! The environment's server copies the artifact into each instance's folder
//! ([`super::sandbox`]) while, on other threads, it starts processes: instances, restarts,
//! services. A process is started by fork then exec, and between the two the child holds a
//! copy of every descriptor the server had open at the fork, close-on-exec ones included. If
//! one of them is a copy being written (an app's binary, say), and another instance execs that
//! very file in that moment, Linux refuses the exec with ETXTBSY: the file is open for writing.
//! It was seen in CI as `exec: ./demo: Text file busy`, an instance exiting with code 126.
//!
//! The cure is Go's (syscall.ForkLock): a file is written under the read side of one lock, and
//! a process is started under its write side, so that no fork happens while a copy is open for
//! writing. Copies still run side by side; a start waits at most for the file being copied.

use std::sync::{PoisonError, RwLock};

static FORK_LOCK: RwLock<()> = RwLock::new(());

/// Runs `write`, which opens, writes and closes files that may be executed, with no process
/// being started meanwhile.
pub fn writing<T>(write: impl FnOnce() -> T) -> T {
    let _guard = FORK_LOCK.read().unwrap_or_else(PoisonError::into_inner);
    write()
}

/// Runs `start`, which forks (a `Command`'s spawn, which returns once the child has exec'd),
/// while no file is open for writing by [`writing`].
pub fn spawning<T>(start: impl FnOnce() -> T) -> T {
    let _guard = FORK_LOCK.write().unwrap_or_else(PoisonError::into_inner);
    start()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Copies a program and runs each copy at once, while another thread keeps starting
    /// processes: without the lock, some exec of a fresh copy meets a descriptor of it that a
    /// fork of the other thread holds, and fails with ETXTBSY.
    fn fresh_copies_run(rounds: usize, locked: bool) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let program = std::path::Path::new("/bin/true");
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let mut command = Command::new(program);
                    command.stdout(Stdio::null());
                    let child = match locked {
                        true => spawning(|| command.spawn()),
                        false => command.spawn(),
                    };
                    child.unwrap().wait().unwrap();
                }
            });
            let mut failures = Vec::new();
            for round in 0..rounds {
                let copy = dir.path().join(format!("true-{round}"));
                let copied = match locked {
                    true => writing(|| std::fs::copy(program, &copy)),
                    false => std::fs::copy(program, &copy),
                };
                copied.unwrap();
                let mut command = Command::new(&copy);
                command.stdout(Stdio::null());
                let ran = match locked {
                    true => spawning(|| command.spawn()),
                    false => command.spawn(),
                };
                match ran {
                    Ok(mut child) => {
                        child.wait().unwrap();
                    }
                    Err(err) => failures.push(format!("round {round}: {err}")),
                }
            }
            stop.store(true, Ordering::Relaxed);
            failures
        })
    }

    /// Run alone in a process of its own by the test below: any other test of this binary
    /// starting processes outside the lock would leak descriptors too.
    #[test]
    #[ignore = "run by copies_written_under_the_lock_are_never_busy_when_they_run"]
    fn fresh_copies_under_the_lock() {
        // Without the lock, about 10 of 300 rounds failed here with ETXTBSY.
        let failures = fresh_copies_run(300, true);
        assert!(failures.is_empty(), "{failures:?}");
    }

    #[test]
    fn copies_written_under_the_lock_are_never_busy_when_they_run() {
        let name = "platform::local::forks::tests::fresh_copies_under_the_lock";
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--ignored", "--test-threads=1"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
