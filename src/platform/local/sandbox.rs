//! The folder of one running instance, as a Diego cell gives each container its own filesystem:
//! a writable copy of the artifact's `app` folder to run in, and a HOME and a TMPDIR of its own.
//!
//! ```text
//! envs/<env>/instances/<index>-<random>/app    the working folder: a copy of droplet/app
//!                                      /home   $HOME
//!                                      /tmp    $TMPDIR
//! ```
//!
//! Instances never run in the stored artifact: an app that writes into its working folder (a
//! SQLite file, a log, an upload) would change the artifact, which would then be refused by
//! promote, rollback and up. And no two instances share a HOME: app servers keep state there
//! (gunicorn's control socket, caches), which would clash.
//!
//! The copy is a reflink where the filesystem can (btrfs, XFS: instant, no space used until
//! written), else a real copy. Never a hard link: a file opened for append through it would
//! change the artifact's inode, and root ignores the artifact's read-only mode. Each start of an
//! instance (a restart too) gets a fresh folder, as a container does; it is removed when that
//! process stops, and the server removes whatever a crash of its own left when it starts.
//! The Python venv is not copied: it stays shared in the artifact, read-only, and the instance
//! writes no bytecode into it (`PYTHONDONTWRITEBYTECODE`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub struct Sandbox {
    root: PathBuf,
    /// How long the copy of the app took.
    pub copied_in: Duration,
}

impl Sandbox {
    /// A fresh folder for instance `index` under `instances`, with a copy of `app`.
    pub fn create(instances: &Path, index: u32, app: &Path) -> Result<Sandbox> {
        std::fs::create_dir_all(instances)
            .with_context(|| format!("could not create {}", instances.display()))?;
        let root = tempfile::Builder::new()
            .prefix(&format!("{index}-"))
            .tempdir_in(instances)
            .with_context(|| format!("could not create a folder in {}", instances.display()))?
            .keep();
        let sandbox = Sandbox {
            root,
            copied_in: Duration::ZERO,
        };
        let started = Instant::now();
        let made = (|| -> Result<()> {
            copy_tree(app, &sandbox.app())
                .with_context(|| format!("could not copy {} to run it", app.display()))?;
            for dir in [sandbox.home(), sandbox.tmp()] {
                std::fs::create_dir(&dir)
                    .with_context(|| format!("could not create {}", dir.display()))?;
                // Private to the instance, as a home is.
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            }
            Ok(())
        })();
        match made {
            Ok(()) => Ok(Sandbox {
                copied_in: started.elapsed(),
                ..sandbox
            }),
            Err(err) => {
                sandbox.remove();
                Err(err)
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The working folder.
    pub fn app(&self) -> PathBuf {
        self.root.join("app")
    }

    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Removes the folder, whatever the app left in it (best effort: the server removes what
    /// remains at its next start).
    pub fn remove(&self) {
        let _ = super::artifacts::remove_tree(&self.root);
    }
}

/// Removes the folders of instances that no server runs any more; called by a server when it
/// starts, before it runs anything (it holds the environment's lock, so none of them is in use).
pub fn remove_stale(instances: &Path) {
    let Ok(entries) = std::fs::read_dir(instances) else {
        return;
    };
    for entry in entries.flatten() {
        let _ = super::artifacts::remove_tree(&entry.path());
    }
}

/// Copies a tree: folders made afresh, files reflinked or copied, symlinks recreated. The copy
/// is writable by its owner whatever the artifact's read-only modes; executable bits are kept.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else if kind.is_dir() {
            copy_tree(&source, &target)?;
        } else {
            // Under the fork lock: a copy open for writing must not leak into a process that
            // starts meanwhile, or an exec of the copy fails (super::forks).
            super::forks::writing(|| reflink_copy::reflink_or_copy(&source, &target))?;
            let executable = entry.metadata()?.permissions().mode() & 0o111 != 0;
            let mode = if executable { 0o755 } else { 0o644 };
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
        }
    }
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_copy_of_its_own_that_leaves_the_artifact_alone() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("droplet/app");
        std::fs::create_dir_all(app.join("static")).unwrap();
        std::fs::write(app.join("app.py"), "print('hi')\n").unwrap();
        std::fs::write(app.join("static/data.txt"), "data\n").unwrap();
        std::fs::write(app.join("run"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(app.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("app.py", app.join("main.py")).unwrap();
        super::super::artifacts::make_read_only(&dir.path().join("droplet")).unwrap();
        let before = super::super::artifacts::digest_tree(&app).unwrap();

        let instances = dir.path().join("instances");
        let one = Sandbox::create(&instances, 0, &app).unwrap();
        let two = Sandbox::create(&instances, 1, &app).unwrap();
        assert_ne!(one.root(), two.root());
        assert!(one
            .root()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("0-"));
        assert_eq!(
            super::super::artifacts::digest_tree(&one.app()).unwrap(),
            before,
            "the same files, modes aside"
        );
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&one.app().join("app.py")), 0o644);
        assert_eq!(mode(&one.app().join("run")), 0o755);
        assert_eq!(mode(&one.home()), 0o700);
        assert_eq!(
            std::fs::read_link(one.app().join("main.py")).unwrap(),
            Path::new("app.py")
        );

        // Appends and new files in the copy reach neither the artifact nor the other copy.
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(one.app().join("static/data.txt"))
            .unwrap()
            .write_all(b"more\n")
            .unwrap();
        std::fs::write(one.app().join("new.db"), "x").unwrap();
        assert_eq!(
            std::fs::read_to_string(app.join("static/data.txt")).unwrap(),
            "data\n"
        );
        assert_eq!(
            std::fs::read_to_string(two.app().join("static/data.txt")).unwrap(),
            "data\n"
        );
        assert_eq!(super::super::artifacts::digest_tree(&app).unwrap(), before);

        one.remove();
        assert!(!one.root().exists());
        remove_stale(&instances);
        assert!(!two.root().exists());
        assert!(instances.exists());
    }
}
