//! Git's vocabulary: queries (nouns and predicates) apart from actions (verbs), all run through
//! the exec seam.

use std::path::PathBuf;

use anyhow::Result;
use xshell::cmd;

use crate::exec::Exec;

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
    let path = PathBuf::from(exec.query(cmd!(exec.sh(), "git rev-parse --git-path index"))?);
    Ok(exec.dir().join(path))
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

/// What `origin` has at a full ref name (for an annotated tag, the tag object), if anything.
pub fn remote_ref(exec: &Exec, reference: &str) -> Result<Option<String>> {
    let listed = exec.query(cmd!(exec.sh(), "git ls-remote origin {reference}"))?;
    Ok(listed
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .find(|(_, name)| *name == reference)
        .map(|(object, _)| object.to_string()))
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

pub fn is_ignored(exec: &Exec, path: &str) -> Result<bool> {
    exec.check(cmd!(exec.sh(), "git check-ignore -q -- {path}"))
}

// Actions: echoed, and run only for real.

pub fn add(exec: &Exec, paths: &[String]) -> Result<()> {
    exec.run(cmd!(exec.sh(), "git add -- {paths...}"))?;
    Ok(())
}

pub fn commit(exec: &Exec, message: &str) -> Result<()> {
    exec.run(cmd!(exec.sh(), "git commit -q -m {message}"))?;
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
