//! The version commit: the last commit with the version's own edits, and nothing else.
//!
//! `git add` of the version files and `git commit` would take along whatever else is staged and
//! every other uncommitted line of the version files: with `--allow-dirty`, work in progress
//! would ride in the version commit. So the commit is built apart from the index and the working
//! tree. The version's edits are made again on each file's text as HEAD holds it, the results are
//! written as blobs and put into a scratch index read from HEAD (`GIT_INDEX_FILE`), and
//! `git commit` commits that index, its hooks run as for any commit. The repository's own index
//! then gets the same edits on top of what it stages, so that staged work stays staged (and does
//! not show the version going back); the working tree gets them on top of its own content, which
//! the caller writes.
//!
//! Why not `git commit --only FILES`: it commits the working tree's content of those files,
//! unrelated lines included. Why not a diff applied with `git apply --cached`: its context lines
//! carry unrelated changes along, or fail to apply. Making the edits again finds the version by
//! parsing, as on disk. Either way the result is checked: the edits must change the very same
//! lines in HEAD's text (and the index's) as in the working tree's, or the commit would state
//! something else than the files; when uncommitted changes touch the version's own lines, the
//! bump is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use similar::{ChangeTag, TextDiff};

use crate::error::user_error;
use crate::exec::Exec;
use crate::git;
use crate::version_files::{Change, Edits};

/// Where the scratch index lives in the git folder. One fixed name, so that a dry run prints the
/// commands a real run runs; a file that a killed run left behind is removed before use.
const SCRATCH_INDEX: &str = "cdflow-version-index";

/// A version commit worked out in memory, before anything is written.
#[derive(Debug)]
pub struct VersionCommit {
    /// The files of the commit that change: HEAD's, with the version's edits.
    committed: Vec<Blob>,
    /// The entries of the repository's own index that change: what it stages, with the edits.
    staged: Vec<Blob>,
    scratch: PathBuf,
}

/// A file's content as it goes into an index.
#[derive(Debug)]
struct Blob {
    mode: String,
    name: String,
    content: String,
}

/// Works out the version commit of `changes` (the working tree's files before and after the
/// version's edits); `edit` makes the same edits on other texts of those files. Queries only:
/// nothing is written, and a refusal leaves everything as it was.
pub fn prepare(
    exec: &Exec,
    changes: &[Change],
    edit: impl Fn(Edits) -> Result<Vec<Change>>,
) -> Result<VersionCommit> {
    let mut in_head = BTreeMap::new();
    let mut in_index = BTreeMap::new();
    let mut entries = Vec::new();
    for (path, _, _) in changes {
        let shown = exec.display_path(path);
        let head = git::committed(exec, &shown)?;
        let index = git::staged(exec, &shown)?;
        if let Some(head) = &head {
            in_head.insert(path.clone(), git::blob(exec, &head.id)?);
        } else if !git::is_ignored(exec, &shown)? {
            exec.ui().warn(&format!(
                "{shown} carries the version but is not in the last commit, so the version \
                 commit leaves it out: its new version is in the working tree only"
            ));
        }
        if let Some(index) = &index {
            if head.as_ref().map(|head| &head.id) != Some(&index.id) {
                in_index.insert(path.clone(), git::blob(exec, &index.id)?);
            }
        }
        entries.push((path, head, index));
    }
    if in_head.is_empty() {
        return Err(user_error(
            "none of the files that carry the version is in the last commit, so a version \
             commit would hold nothing: commit them first, or bump with --no-commit",
        ));
    }
    let in_head = edit_again(exec, changes, &edit, in_head, "the last commit (HEAD)")?;
    let in_index = edit_again(exec, changes, &edit, in_index, "the index (staged)")?;

    let mut committed = Vec::new();
    let mut staged = Vec::new();
    for (path, head, index) in entries {
        if let Some(head) = &head {
            committed.push(Blob {
                mode: head.mode.clone(),
                name: head.name.clone(),
                content: in_head[path].clone(),
            });
        }
        if let Some(index) = index {
            let content = match in_index.get(path) {
                Some(content) => content,
                None => &in_head[path],
            };
            staged.push(Blob {
                mode: index.mode,
                name: index.name,
                content: content.clone(),
            });
        }
    }
    Ok(VersionCommit {
        committed,
        staged,
        scratch: git::git_path(exec, SCRATCH_INDEX)?,
    })
}

/// The version's edits made again on `texts` (another version of some of the changed files),
/// refused unless they change the same lines there as in the working tree.
fn edit_again(
    exec: &Exec,
    changes: &[Change],
    edit: &impl Fn(Edits) -> Result<Vec<Change>>,
    texts: BTreeMap<PathBuf, String>,
    whose: &str,
) -> Result<BTreeMap<PathBuf, String>> {
    if texts.is_empty() {
        return Ok(texts);
    }
    let made = edit(Edits::over(texts.clone())).with_context(|| {
        format!("the version's edits cannot be made on the files as {whose} holds them")
    })?;
    let mut edited = BTreeMap::new();
    let mut touched = Vec::new();
    for (path, text) in texts {
        let new = made
            .iter()
            .find(|(made, _, _)| made == &path)
            .map_or(text.clone(), |(_, _, new)| new.clone());
        let (_, old_here, new_here) = changes
            .iter()
            .find(|(changed, _, _)| changed == &path)
            .expect("the texts are of changed files");
        if changed_lines(&text, &new) != changed_lines(old_here, new_here) {
            touched.push(exec.display_path(&path));
        }
        edited.insert(path, new);
    }
    if !touched.is_empty() {
        return Err(user_error(format!(
            "uncommitted changes touch the version's own lines in {}, where {whose} states \
             another version; the version commit is that with the version's edits alone: commit \
             or undo those changes, then bump again",
            touched.join(", ")
        )));
    }
    Ok(edited)
}

/// The lines an edit removes and the lines it adds, each sorted, without line endings: the same
/// for two versions of a file when the edit changes the same lines in both, wherever they are
/// and whatever lies around them.
fn changed_lines(old: &str, new: &str) -> (Vec<String>, Vec<String>) {
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    for change in TextDiff::from_lines(old, new).iter_all_changes() {
        let line = change.value().trim_end_matches(['\n', '\r']).to_string();
        match change.tag() {
            ChangeTag::Delete => removed.push(line),
            ChangeTag::Insert => added.push(line),
            ChangeTag::Equal => {}
        }
    }
    removed.sort();
    added.sort();
    (removed, added)
}

impl VersionCommit {
    /// Makes the commit, then gives the repository's own index the edits: actions, echoed, run
    /// only for real.
    pub fn record(&self, exec: &Exec, message: &str) -> Result<()> {
        let mut ids = BTreeMap::new();
        let committed = write_blobs(exec, &self.committed, &mut ids)?;
        let staged = write_blobs(exec, &self.staged, &mut ids)?;
        let _scratch = Scratch::new(exec, &self.scratch);
        git::read_tree(exec, &self.scratch)?;
        git::update_index(exec, Some(&self.scratch), &committed)?;
        git::commit(exec, &self.scratch, message)?;
        if !staged.is_empty() {
            git::update_index(exec, None, &staged)?;
        }
        Ok(())
    }
}

/// Each blob written once, however many entries hold it.
fn write_blobs(
    exec: &Exec,
    blobs: &[Blob],
    ids: &mut BTreeMap<String, String>,
) -> Result<Vec<git::Entry>> {
    blobs
        .iter()
        .map(|blob| {
            let id = match ids.get(&blob.content) {
                Some(id) => id.clone(),
                None => {
                    let id = git::write_blob(exec, &blob.content)?;
                    ids.insert(blob.content.clone(), id.clone());
                    id
                }
            };
            Ok(git::Entry {
                mode: blob.mode.clone(),
                id,
                name: blob.name.clone(),
            })
        })
        .collect()
}

/// The scratch index file, removed before use and when dropped, failure or not; a dry run
/// creates none and removes none.
struct Scratch<'p> {
    path: Option<&'p Path>,
}

impl<'p> Scratch<'p> {
    fn new(exec: &Exec, path: &'p Path) -> Scratch<'p> {
        let scratch = Scratch {
            path: exec.for_real(|| Ok(path)).ok().flatten(),
        };
        scratch.remove();
        scratch
    }

    fn remove(&self) {
        if let Some(path) = self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_lines_ignore_where_the_lines_are_and_their_endings() {
        let here = changed_lines(
            "a\nversion = 1\nb\nversion = 1\n",
            "a\nversion = 2\nb\nversion = 2\n",
        );
        let there = changed_lines(
            "version = 1\r\nversion = 1\r\nc\r\n",
            "version = 2\r\nversion = 2\r\nc\r\n",
        );
        assert_eq!(here, there);
        let elsewhere = changed_lines("version = 0\n", "version = 2\n");
        assert_ne!(here, elsewhere);
    }
}
