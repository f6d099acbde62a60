//! Locks that the operating system frees when their holder dies, even by `kill -9`: an
//! exclusive `flock(2)` on a file that also names the holder for whoever is refused.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::error::{user_error, Interrupted};
use crate::ui::Ui;

/// Held until dropped; the kernel releases it if the process dies first.
#[derive(Debug)]
pub struct Lock {
    file: File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Refuse at once, naming the holder.
    No,
    /// Queue until the holder is done (or cdflow is interrupted).
    Yes,
}

/// Takes the lock at `path` for `holder` (a line saying who holds it and why).
pub fn acquire(ui: &Ui, path: &Path, holder: &str, wait: Wait) -> Result<Lock> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("could not create {}", parent.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("could not open the lock {}", path.display()))?;
    let mut announced = false;
    loop {
        // SAFETY: flock(2) on a descriptor we own; it touches no memory.
        let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if taken {
            break;
        }
        let mut current = String::new();
        let _ = file
            .rewind()
            .and_then(|_| file.read_to_string(&mut current));
        let current = current.trim();
        let current = if current.is_empty() {
            "another cdflow"
        } else {
            current
        };
        match wait {
            Wait::No => {
                return Err(user_error(format!(
                    "busy: {current} holds {}; wait for it to finish, or pass --lock-wait to \
                     queue behind it",
                    path.display()
                )))
            }
            Wait::Yes => {
                if !announced {
                    ui.warn(&format!(
                        "waiting for {current} to finish ({})",
                        path.display()
                    ));
                    announced = true;
                }
                if crate::signals::stop_requested() {
                    return Err(anyhow::Error::new(Interrupted).context("waiting for a lock"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{holder} (pid {})", std::process::id())?;
    file.flush()?;
    Ok(Lock { file })
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Leave the file, so that the next holder does not race on creating it; empty it so
        // that it names nobody.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app-staging.lock");
        let ui = Ui::new(crate::ui::Style::Plain, Default::default());
        let first = acquire(&ui, &path, "release of app to staging", Wait::No).unwrap();
        let err = acquire(&ui, &path, "another", Wait::No)
            .unwrap_err()
            .to_string();
        assert!(err.contains("release of app to staging (pid"), "{err}");
        drop(first);
        acquire(&ui, &path, "another", Wait::No).unwrap();
    }
}
