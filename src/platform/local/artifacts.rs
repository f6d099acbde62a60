//! The content-addressed store of staged builds.
//!
//! An artifact is a folder `artifacts/<hex>/` holding `droplet/` (what instances run) and
//! `artifact.json` (what it is). `<hex>` is the SHA-256 of the droplet tree: every path in byte
//! order with its kind, its executable bit and its content (or a symlink's target). Whoever runs
//! an artifact again (promote, rollback, up) recomputes the digest first, so a droplet changed
//! after staging is refused rather than run.
//!
//! A stored artifact is read-only on disk (files 0444, or 0555 when executable; folders 0555).
//! That stops a mistake by a user, not root, which ignores mode bits: what keeps instances from
//! changing an artifact is that none runs in it (each runs in a copy of its own, see
//! [`super::sandbox`]), and the digest check catches whatever changed it anyway.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::exec::Exec;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::layout::artifacts_dir;
use super::spec::Runtime;

pub const PREFIX: &str = "sha256:";

/// What `artifact.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub digest: String,
    pub app: String,
    pub runtime: Runtime,
    /// The start command when the manifest gives none.
    pub default_command: String,
    /// The buildpack that staged it.
    pub buildpack: String,
    /// The version it was first staged for, and when.
    pub version: String,
    pub staged_at: String,
}

#[derive(Debug, Clone)]
pub struct Artifact {
    pub dir: PathBuf,
    pub meta: Meta,
}

impl Artifact {
    pub fn droplet(&self) -> PathBuf {
        self.dir.join("droplet")
    }

    pub fn short(&self) -> &str {
        short(&self.meta.digest)
    }
}

/// `sha256:0123456789ab`: enough to tell artifacts apart in messages.
pub fn short(digest: &str) -> &str {
    let end = (PREFIX.len() + 12).min(digest.len());
    &digest[..end]
}

/// The SHA-256 of a tree, as `sha256:<hex>`.
pub fn digest_tree(root: &Path) -> Result<String> {
    let mut entries = Vec::new();
    walk(root, Path::new(""), &mut entries)
        .with_context(|| format!("could not read {}", root.display()))?;
    entries.sort();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    for relative in entries {
        let path = root.join(&relative);
        let metadata = std::fs::symlink_metadata(&path)?;
        let name = relative.as_os_str().as_encoded_bytes();
        if metadata.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            hasher.update(b"L\0");
            hasher.update(name);
            hasher.update(b"\0");
            hasher.update(target.as_os_str().as_encoded_bytes());
            hasher.update(b"\0");
        } else if metadata.is_dir() {
            hasher.update(b"D\0");
            hasher.update(name);
            hasher.update(b"\0");
        } else {
            let executable = metadata.permissions().mode() & 0o111 != 0;
            hasher.update(if executable { b"X\0" } else { b"F\0" });
            hasher.update(name);
            hasher.update(b"\0");
            hasher.update(metadata.len().to_le_bytes());
            let mut file = std::fs::File::open(&path)?;
            loop {
                let n = file.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
            }
        }
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok(format!("{PREFIX}{hex}"))
}

fn walk(root: &Path, relative: &Path, entries: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(relative))? {
        let entry = entry?;
        let path = relative.join(entry.file_name());
        let is_dir = entry.file_type()?.is_dir();
        entries.push(path.clone());
        if is_dir {
            walk(root, &path, entries)?;
        }
    }
    Ok(())
}

/// A folder to stage into, inside the store so that it can be renamed into place.
pub fn staging_dir(local: &Path) -> Result<PathBuf> {
    let store = artifacts_dir(local);
    std::fs::create_dir_all(&store)
        .with_context(|| format!("could not create {}", store.display()))?;
    let dir = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(&store)?
        .keep();
    Ok(dir)
}

/// Turns a staging folder (holding `droplet/`) into the artifact of its digest. When that
/// artifact exists already, intact, the staging folder is thrown away and the existing one kept.
pub fn store(exec: &Exec, local: &Path, staging: &Path, mut meta: Meta) -> Result<Artifact> {
    let digest = digest_tree(&staging.join("droplet"))?;
    meta.digest = digest.clone();
    let dir = artifacts_dir(local).join(&digest[PREFIX.len()..]);
    if dir.exists() {
        match open(local, &digest) {
            Ok(existing) => {
                let _ = std::fs::remove_dir_all(staging);
                return Ok(existing);
            }
            Err(_) => {
                // Damaged: replace it with the fresh build of the same content.
                let trash = staging.with_extension("damaged");
                std::fs::rename(&dir, &trash)?;
                let _ = remove_tree(&trash);
            }
        }
    }
    exec.save(
        &staging.join("artifact.json"),
        serde_json::to_string_pretty(&meta)?.as_bytes(),
    )?;
    make_read_only(staging)
        .with_context(|| format!("could not make {} read-only", staging.display()))?;
    std::fs::rename(staging, &dir)
        .with_context(|| format!("could not move the staged build to {}", dir.display()))?;
    Ok(Artifact { dir, meta })
}

/// Takes the write bits off a tree, its root included: files keep their executable bit (which
/// the digest counts), so they become 0444 or 0555, folders 0555.
pub fn make_read_only(root: &Path) -> std::io::Result<()> {
    let metadata = std::fs::symlink_metadata(root)?;
    if metadata.file_type().is_symlink() {
        return Ok(());
    }
    if metadata.is_dir() {
        for entry in std::fs::read_dir(root)? {
            make_read_only(&entry?.path())?;
        }
        // The folder last: its entries were changed through it.
        return std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o555));
    }
    let mode = if metadata.permissions().mode() & 0o111 != 0 {
        0o555
    } else {
        0o444
    };
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode))
}

/// Removes a tree that may be read-only: a user other than root cannot delete the entries of a
/// folder without its write bit.
pub fn remove_tree(root: &Path) -> std::io::Result<()> {
    fn writable(dir: &Path) -> std::io::Result<()> {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                writable(&entry.path())?;
            }
        }
        Ok(())
    }
    if std::fs::symlink_metadata(root)?.is_dir() {
        let _ = writable(root);
    }
    std::fs::remove_dir_all(root)
}

/// The artifact of `digest`, checked byte for byte against its digest.
pub fn open(local: &Path, digest: &str) -> Result<Artifact> {
    let Some(hex) = digest.strip_prefix(PREFIX) else {
        bail!("`{digest}` is not a local artifact (expected {PREFIX}...)");
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("`{digest}` is not a SHA-256 digest");
    }
    let dir = artifacts_dir(local).join(hex);
    let meta_path = dir.join("artifact.json");
    let text = std::fs::read_to_string(&meta_path).with_context(|| {
        format!(
            "the artifact {} is not in the store ({}): it was removed, or staged with another \
             state folder",
            short(digest),
            dir.display()
        )
    })?;
    let meta: Meta = serde_json::from_str(&text)
        .with_context(|| format!("{} is damaged", meta_path.display()))?;
    let actual = digest_tree(&dir.join("droplet"))?;
    if actual != digest {
        bail!(
            "the artifact {} is damaged: it was changed after staging (its files now digest to \
             {}), so it will not be run; a new push of the version stages it afresh",
            short(digest),
            short(&actual)
        );
    }
    Ok(Artifact { dir, meta })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            digest: String::new(),
            app: "app".into(),
            runtime: Runtime::Binary,
            default_command: "./app".into(),
            buildpack: "binary_buildpack".into(),
            version: "1.0.0".into(),
            staged_at: "t".into(),
        }
    }

    fn stage(local: &Path, content: &str) -> PathBuf {
        let staging = staging_dir(local).unwrap();
        std::fs::create_dir_all(staging.join("droplet/app")).unwrap();
        std::fs::write(staging.join("droplet/app/run"), content).unwrap();
        std::fs::write(staging.join("droplet/app/tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            staging.join("droplet/app/tool"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("run", staging.join("droplet/app/link")).unwrap();
        staging
    }

    #[test]
    fn same_content_same_artifact_and_changes_are_refused() {
        let local = tempfile::tempdir().unwrap();
        let first = store(
            &Exec::for_tests(local.path()),
            local.path(),
            &stage(local.path(), "v1"),
            meta(),
        )
        .unwrap();
        let again = store(
            &Exec::for_tests(local.path()),
            local.path(),
            &stage(local.path(), "v1"),
            meta(),
        )
        .unwrap();
        assert_eq!(first.meta.digest, again.meta.digest);
        assert_eq!(first.dir, again.dir);
        let other = store(
            &Exec::for_tests(local.path()),
            local.path(),
            &stage(local.path(), "v2"),
            meta(),
        )
        .unwrap();
        assert_ne!(first.meta.digest, other.meta.digest);
        // Only the artifacts remain: no staging folders left behind.
        let names: Vec<_> = std::fs::read_dir(artifacts_dir(local.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        open(local.path(), &first.meta.digest).unwrap();
        // Stored read-only, with the executable bits kept.
        let mode = |path: &Path| {
            std::fs::symlink_metadata(path)
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(&first.dir), 0o555);
        assert_eq!(mode(&first.droplet().join("app")), 0o555);
        assert_eq!(mode(&first.droplet().join("app/run")), 0o444);
        assert_eq!(mode(&first.droplet().join("app/tool")), 0o555);
        assert_eq!(mode(&first.dir.join("artifact.json")), 0o444);
        // As root, who ignores the mode, could.
        let run = first.droplet().join("app/run");
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&run, "tampered").unwrap();
        let err = open(local.path(), &first.meta.digest)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is damaged") && err.contains("was changed after staging"),
            "{err}"
        );
        // A new staging of the same content replaces the damaged artifact.
        let restaged = store(
            &Exec::for_tests(local.path()),
            local.path(),
            &stage(local.path(), "v1"),
            meta(),
        )
        .unwrap();
        assert_eq!(restaged.meta.digest, first.meta.digest);
        open(local.path(), &first.meta.digest).unwrap();
        remove_tree(&first.dir).unwrap();
        assert!(!first.dir.exists());
    }

    #[test]
    fn the_executable_bit_counts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("run"), "x").unwrap();
        let before = digest_tree(dir.path()).unwrap();
        std::fs::set_permissions(
            dir.path().join("run"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_ne!(before, digest_tree(dir.path()).unwrap());
    }
}
