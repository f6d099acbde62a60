//! The members of a Cargo workspace, as cargo itself sees them.
//!
//! `workspace.members` is not the whole story: a path dependency inside the workspace's folder is
//! a member without being listed (nushell's nu-path), `exclude` and nested workspaces take
//! folders out, globs go beyond `dir/*`. Only cargo knows all of its rules, so cargo is asked
//! (`cargo metadata --no-deps`, which reads the manifests and resolves nothing). Without cargo on
//! PATH, the `members` list is read instead, with a warning that it may miss members.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;
use toml_edit::{Document, Item};
use xshell::cmd;

use super::read;
use super::toml_text::parse;
use crate::error::user_error;
use crate::exec::Exec;

/// A Cargo workspace: where its root is and which packages are its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// The folder of the root Cargo.toml, where Cargo.lock lives.
    pub root: PathBuf,
    /// The manifest of every member package, the root's own when it is a package too; sorted.
    pub members: Vec<PathBuf>,
}

impl Workspace {
    pub fn root_manifest(&self) -> PathBuf {
        self.root.join("Cargo.toml")
    }

    pub fn lock(&self) -> PathBuf {
        self.root.join("Cargo.lock")
    }
}

/// The workspace that `manifest` belongs to (a package alone is a workspace of one).
pub fn of(exec: &Exec, manifest: &Path) -> Result<Workspace> {
    let asked = exec.query(cmd!(
        exec.sh(),
        "cargo metadata --no-deps --offline --format-version 1 --manifest-path {manifest}"
    ));
    match asked {
        Ok(json) => from_metadata(manifest, &json),
        Err(err) if is_not_installed(&err) => {
            exec.ui().warn(&format!(
                "cargo is not on PATH, so the members of the workspace of {} are read from its \
                 `members` list alone: a member that is only a path dependency is missed, and \
                 Cargo.lock may no longer fit; install cargo and bump again to be sure",
                manifest.display()
            ));
            listed(manifest)
        }
        // Cargo cannot read the workspace, so neither can a build: say so rather than guess.
        Err(err) => Err(user_error(format!(
            "cargo cannot read the workspace of {}, so cdflow cannot tell which packages share \
             its version: fix what cargo names, then bump again\n{err:#}",
            manifest.display()
        ))),
    }
}

/// What `cargo metadata --format-version 1` says, the parts of it read here.
#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_members: Vec<String>,
    workspace_root: PathBuf,
}

#[derive(Deserialize)]
struct Package {
    id: String,
    manifest_path: PathBuf,
}

fn from_metadata(manifest: &Path, json: &str) -> Result<Workspace> {
    let metadata: Metadata = serde_json::from_str(json).map_err(|err| {
        user_error(format!(
            "`cargo metadata` answered for {} in a form cdflow does not read ({err}): is this \
             cargo very old?",
            manifest.display()
        ))
    })?;
    // Cargo's paths are canonical; cdflow's are as the user or the configuration spelled them.
    // Both name the same files, but edits are keyed by path, and the paths are shown and given
    // to git: they are spelled as cdflow spells the manifest.
    let near = manifest.parent().unwrap_or(Path::new("."));
    let mut members: Vec<PathBuf> = metadata
        .packages
        .iter()
        .filter(|package| metadata.workspace_members.contains(&package.id))
        .map(|package| respell(&package.manifest_path, near))
        .collect();
    members.sort();
    Ok(Workspace {
        root: respell(&metadata.workspace_root, near),
        members,
    })
}

/// `path` (canonical) spelled from the nearest ancestor of `near` that leads to it.
fn respell(path: &Path, near: &Path) -> PathBuf {
    for ancestor in near.ancestors() {
        let spelled = if ancestor.as_os_str().is_empty() {
            Path::new(".")
        } else {
            ancestor
        };
        if let Ok(canonical) = std::fs::canonicalize(spelled) {
            match path.strip_prefix(&canonical) {
                Ok(rest) if rest.as_os_str().is_empty() => return ancestor.to_path_buf(),
                Ok(rest) => return ancestor.join(rest),
                Err(_) => {}
            }
        }
    }
    path.to_path_buf()
}

fn is_not_installed(err: &anyhow::Error) -> bool {
    err.root_cause()
        .downcast_ref::<std::io::Error>()
        .is_some_and(|err| err.kind() == std::io::ErrorKind::NotFound)
}

/// The fallback without cargo: the members that `workspace.members` lists, with `dir/*` globs
/// expanded and `workspace.exclude` left out, and the root itself when it is a package.
fn listed(manifest: &Path) -> Result<Workspace> {
    let text = read(manifest)?;
    let doc = parse(manifest, &text)?;
    let root = manifest
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut members = listed_members(manifest, root, &doc)?;
    if doc.get("package").is_some() {
        members.push(manifest.to_path_buf());
    }
    members.sort();
    Ok(Workspace {
        root: root.to_path_buf(),
        members,
    })
}

/// The manifests that `workspace.members` lists (not the root's own).
fn listed_members(manifest: &Path, root: &Path, doc: &Document<&str>) -> Result<Vec<PathBuf>> {
    let list = |key: &str| -> Vec<String> {
        doc.get("workspace")
            .and_then(|w| w.get(key))
            .and_then(Item::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let excluded: Vec<PathBuf> = list("exclude").iter().map(|e| root.join(e)).collect();
    let mut dirs = Vec::new();
    for pattern in list("members") {
        if let Some(parent) = pattern.strip_suffix("/*") {
            let mut found: Vec<PathBuf> = std::fs::read_dir(root.join(parent))
                .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
                .unwrap_or_default();
            found.sort();
            dirs.extend(found);
        } else if pattern.contains(['*', '?', '[']) {
            return Err(user_error(format!(
                "{}: the workspace member pattern `{pattern}` is not supported by cdflow bump \
                 without cargo: list the members, use `dir/*`, or install cargo",
                manifest.display()
            )));
        } else {
            dirs.push(root.join(pattern));
        }
    }
    let root_dir = std::fs::canonicalize(root)?;
    Ok(dirs
        .into_iter()
        .filter(|dir| !excluded.contains(dir))
        .filter(|dir| std::fs::canonicalize(dir).ok().as_ref() != Some(&root_dir))
        .map(|dir| dir.join("Cargo.toml"))
        .filter(|m| m.is_file())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_paths_are_spelled_as_the_manifest_is() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("crates/lib")).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let canonical = std::fs::canonicalize(&real).unwrap();
        let json = serde_json::json!({
            "packages": [
                { "id": "lib", "manifest_path": canonical.join("crates/lib/Cargo.toml") },
                { "id": "app", "manifest_path": canonical.join("Cargo.toml") },
                { "id": "other", "manifest_path": "/elsewhere/Cargo.toml" },
            ],
            "workspace_members": ["app", "lib"],
            "workspace_root": canonical,
        });
        let workspace = from_metadata(&link.join("Cargo.toml"), &json.to_string()).unwrap();
        assert_eq!(workspace.root, link);
        assert_eq!(
            workspace.members,
            [link.join("Cargo.toml"), link.join("crates/lib/Cargo.toml")]
        );
    }

    #[test]
    fn without_cargo_the_listed_members_and_the_root_package() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for member in ["crates/a", "crates/b", "crates/skip", "tools/x"] {
            std::fs::create_dir_all(root.join(member)).unwrap();
            std::fs::write(root.join(member).join("Cargo.toml"), "[package]\n").unwrap();
        }
        std::fs::write(
            root.join("Cargo.toml"),
            "[package]\nname = \"root\"\n\n[workspace]\nmembers = [\"crates/*\", \"tools/x\"]\n\
             exclude = [\"crates/skip\"]\n",
        )
        .unwrap();
        let workspace = listed(&root.join("Cargo.toml")).unwrap();
        assert_eq!(workspace.root, root);
        assert_eq!(
            workspace.members,
            [
                root.join("Cargo.toml"),
                root.join("crates/a/Cargo.toml"),
                root.join("crates/b/Cargo.toml"),
                root.join("tools/x/Cargo.toml"),
            ]
        );
    }
}
