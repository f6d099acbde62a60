//! Git's vocabulary: queries (nouns and predicates) apart from actions (verbs), all run through
//! the exec seam.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use xshell::cmd;

use crate::error::user_error;
use crate::exec::Exec;

/// A file as a tree or the index holds it: what `git update-index --cacheinfo` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `100644`, or `100755` for an executable.
    pub mode: String,
    /// The blob's object id.
    pub id: String,
    /// The path from the top of the work tree, as git names it.
    pub name: String,
}

// Queries: they run in every mode, dry runs included.

pub fn is_repository(exec: &Exec) -> Result<bool> {
    exec.check(cmd!(exec.sh(), "git rev-parse --is-inside-work-tree"))
}

/// Tracked files with changes, as `git status --porcelain` names them.
pub fn dirty_files(exec: &Exec) -> Result<Vec<String>> {
    let status = exec.query(cmd!(
        exec.sh(),
        "git status --porcelain --untracked-files=no"
    ))?;
    Ok(status
        .lines()
        .map(|line| line.get(3..).unwrap_or(line).to_string())
        .collect())
}

pub fn tag_exists(exec: &Exec, name: &str) -> Result<bool> {
    let reference = format!("refs/tags/{name}");
    exec.check(cmd!(exec.sh(), "git rev-parse -q --verify {reference}"))
}

/// The commit HEAD points at, or `None` in a repository with no commit yet.
pub fn head(exec: &Exec) -> Result<Option<String>> {
    if !exec.check(cmd!(exec.sh(), "git rev-parse -q --verify HEAD"))? {
        return Ok(None);
    }
    Ok(Some(exec.query(cmd!(exec.sh(), "git rev-parse HEAD"))?))
}

/// The index file, so that a failed change can put it back byte for byte.
pub fn index_path(exec: &Exec) -> Result<PathBuf> {
    git_path(exec, "index")
}

/// Where `name` lives in the repository's git folder (`.git/NAME`, or a worktree's), absolute.
pub fn git_path(exec: &Exec, name: &str) -> Result<PathBuf> {
    let path = PathBuf::from(exec.query(cmd!(exec.sh(), "git rev-parse --git-path {name}"))?);
    let path = exec.dir().join(path);
    // From a subfolder git answers `../../.git/NAME`: spelled plainly, as commands print it.
    let folder = path
        .parent()
        .and_then(|folder| std::fs::canonicalize(folder).ok());
    Ok(match (folder, path.file_name()) {
        (Some(folder), Some(name)) => folder.join(name),
        _ => path,
    })
}

/// The file at `path` (relative to the working folder) in HEAD's tree; `None` when HEAD has no
/// such file.
pub fn committed(exec: &Exec, path: &str) -> Result<Option<Entry>> {
    // `<mode> <type> <id>\t<name>\0` per entry.
    let listed = exec.query(cmd!(
        exec.sh(),
        "git --literal-pathspecs ls-tree -z --full-name HEAD -- {path}"
    ))?;
    Ok(listed.split('\0').find_map(|record| {
        let (meta, name) = record.split_once('\t')?;
        match meta.split(' ').collect::<Vec<_>>()[..] {
            [mode, "blob", id] => Some(Entry {
                mode: mode.into(),
                id: id.into(),
                name: name.into(),
            }),
            _ => None,
        }
    }))
}

/// The file at `path` (relative to the working folder) as the index stages it; `None` when the
/// index has no such file. A file in conflict has no one staged version: that is an error.
pub fn staged(exec: &Exec, path: &str) -> Result<Option<Entry>> {
    // `<mode> <id> <stage>\t<name>\0` per entry; stages 1 to 3 only while in conflict.
    let listed = exec.query(cmd!(
        exec.sh(),
        "git --literal-pathspecs ls-files -s -z --full-name -- {path}"
    ))?;
    let mut found = None;
    for record in listed.split('\0').filter(|record| !record.is_empty()) {
        let parsed = record.split_once('\t').and_then(|(meta, name)| {
            match meta.split(' ').collect::<Vec<_>>()[..] {
                [mode, id, stage] => Some((mode, id, stage, name)),
                _ => None,
            }
        });
        match parsed {
            Some((mode, id, "0", name)) => {
                found = Some(Entry {
                    mode: mode.into(),
                    id: id.into(),
                    name: name.into(),
                })
            }
            Some(_) => {
                return Err(user_error(format!(
                    "{path} has unresolved merge conflicts: resolve them first"
                )))
            }
            None => anyhow::bail!("`git ls-files -s` listed `{record}`, which cdflow cannot read"),
        }
    }
    Ok(found)
}

/// The text of a blob, as it came.
pub fn blob(exec: &Exec, id: &str) -> Result<String> {
    let bytes = exec.query_bytes(cmd!(exec.sh(), "git cat-file blob {id}"), None)?;
    String::from_utf8(bytes).with_context(|| format!("the blob {id} is not UTF-8 text"))
}

/// The object id that `content` has as a blob, computed without writing anything.
pub fn blob_id(exec: &Exec, content: &str) -> Result<String> {
    let id = exec.query_bytes(
        cmd!(exec.sh(), "git hash-object --stdin"),
        Some(content.as_bytes()),
    )?;
    Ok(String::from_utf8_lossy(&id).trim_end().to_string())
}

/// How many commits the branch's upstream has that HEAD lacks, as of the last fetch; `None`
/// when the branch has no upstream.
pub fn behind_upstream(exec: &Exec) -> Result<Option<u32>> {
    let upstream = "@{upstream}";
    if !exec.check(cmd!(exec.sh(), "git rev-parse -q --verify {upstream}"))? {
        return Ok(None);
    }
    let range = format!("HEAD..{upstream}");
    let count = exec.query(cmd!(exec.sh(), "git rev-list --count {range}"))?;
    Ok(count.parse().ok())
}

/// The commit a tag or any other revision names.
pub fn commit_of(exec: &Exec, revision: &str) -> Result<String> {
    let revision = format!("{revision}^{{commit}}");
    exec.query(cmd!(exec.sh(), "git rev-parse --verify -q {revision}"))
}

/// A commit's first parent, `None` for a root commit.
pub fn parent(exec: &Exec, commit: &str) -> Result<Option<String>> {
    let revision = format!("{commit}^");
    if !exec.check(cmd!(exec.sh(), "git rev-parse -q --verify {revision}"))? {
        return Ok(None);
    }
    Ok(Some(
        exec.query(cmd!(exec.sh(), "git rev-parse {revision}"))?,
    ))
}

/// A commit's whole message.
pub fn message(exec: &Exec, commit: &str) -> Result<String> {
    exec.query(cmd!(exec.sh(), "git log -1 --format=%B {commit}"))
}

/// The object a full ref name points at in the output of `git ls-remote` (for an annotated
/// tag, the tag object), if it is listed.
pub fn ref_in_listing(listing: &str, reference: &str) -> Option<String> {
    listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .find(|(_, name)| *name == reference)
        .map(|(object, _)| object.to_string())
}

/// Removes the lock files a git process killed with SIGKILL leaves behind (`index.lock`, ref
/// locks), which would make every later git command fail. Only for a repository no other
/// process uses: a release's own clone, after the stopped run's children were reaped.
pub fn remove_stale_locks(exec: &Exec) -> Result<()> {
    let git_dir = exec
        .dir()
        .join(exec.query(cmd!(exec.sh(), "git rev-parse --git-dir"))?);
    fn walk(dir: &std::path::Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && path.file_name() != Some("objects".as_ref()) {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "lock") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&git_dir, &mut found);
    for lock in found {
        exec.ui().note(&format!(
            "removing {}, left by a stopped git",
            lock.display()
        ));
        std::fs::remove_file(&lock)?;
    }
    Ok(())
}

/// How many commits HEAD has that its upstream (else origin's branch of the same name) lacks,
/// as of the last fetch; `None` when there is neither.
pub fn ahead_of_upstream(exec: &Exec) -> Result<Option<u32>> {
    let mut upstream = "@{upstream}".to_string();
    if !exec.check(cmd!(exec.sh(), "git rev-parse -q --verify {upstream}"))? {
        let Ok(branch) = exec.query(cmd!(exec.sh(), "git symbolic-ref -q --short HEAD")) else {
            return Ok(None);
        };
        upstream = format!("refs/remotes/origin/{branch}");
        if !exec.check(cmd!(exec.sh(), "git rev-parse -q --verify {upstream}"))? {
            return Ok(None);
        }
    }
    let range = format!("{upstream}..HEAD");
    let count = exec.query(cmd!(exec.sh(), "git rev-list --count {range}"))?;
    Ok(count.parse().ok())
}

pub fn is_ignored(exec: &Exec, path: &str) -> Result<bool> {
    exec.check(cmd!(exec.sh(), "git check-ignore -q -- {path}"))
}

// Actions: echoed, and run only for real.

/// Writes `content` as a blob and returns its id. The id is computed by a query first, so that
/// a dry run, which writes nothing, still prints the commands that name it as a real run runs
/// them. From stdin, `hash-object` applies no filter (no line-ending conversion): the blob is
/// `content` byte for byte.
pub fn write_blob(exec: &Exec, content: &str) -> Result<String> {
    let id = blob_id(exec, content)?;
    exec.run_with_input(
        cmd!(exec.sh(), "git hash-object -w --stdin"),
        content.as_bytes(),
    )?;
    Ok(id)
}

/// Makes the index file `index` (not the repository's own) hold HEAD's tree.
pub fn read_tree(exec: &Exec, index: &Path) -> Result<()> {
    exec.run_with_env(cmd!(exec.sh(), "git read-tree HEAD"), &[index_file(index)?])?;
    Ok(())
}

/// Puts `entries` into the index file `index`, or into the repository's own with `None`.
pub fn update_index(exec: &Exec, index: Option<&Path>, entries: &[Entry]) -> Result<()> {
    let args: Vec<String> = entries
        .iter()
        .flat_map(|entry| {
            [
                "--cacheinfo".to_string(),
                format!("{},{},{}", entry.mode, entry.id, entry.name),
            ]
        })
        .collect();
    let env = match index {
        Some(index) => vec![index_file(index)?],
        None => Vec::new(),
    };
    exec.run_with_env(cmd!(exec.sh(), "git update-index {args...}"), &env)?;
    Ok(())
}

/// Commits what the index file `index` holds (not the repository's own index), hooks and all.
pub fn commit(exec: &Exec, index: &Path, message: &str) -> Result<()> {
    exec.run_with_env(
        cmd!(exec.sh(), "git commit -q -m {message}"),
        &[index_file(index)?],
    )?;
    Ok(())
}

pub fn tag_annotated(exec: &Exec, name: &str, message: &str) -> Result<()> {
    exec.run(cmd!(exec.sh(), "git tag -a {name} -m {message}"))?;
    Ok(())
}

pub fn delete_tag(exec: &Exec, name: &str) -> Result<()> {
    exec.run(cmd!(exec.sh(), "git tag -d {name}"))?;
    Ok(())
}

pub fn reset_hard(exec: &Exec, commit: &str) -> Result<()> {
    exec.run(cmd!(exec.sh(), "git reset -q --hard {commit}"))?;
    Ok(())
}

pub fn reset_soft(exec: &Exec, commit: &str) -> Result<()> {
    exec.run(cmd!(exec.sh(), "git reset -q --soft {commit}"))?;
    Ok(())
}

/// `GIT_INDEX_FILE`, which points git at another index file than the repository's own.
fn index_file(index: &Path) -> Result<(&'static str, &str)> {
    let path = index
        .to_str()
        .with_context(|| format!("{} is not a UTF-8 path", index.display()))?;
    Ok(("GIT_INDEX_FILE", path))
}
