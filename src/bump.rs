//! `cdflow bump`: the new version in every file that carries it, a commit and a tag, all or
//! nothing. The `bump` stage of every pipeline calls the same code.
//!
//! Three phases: gather facts (where the version lives and what each file says), plan (every
//! file's new content, in memory, validated), then apply (atomic writes, commit, tag), undoing
//! everything if any step fails.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use semver::Version;

use crate::config::{self, VersionFile};
use crate::error::user_error;
use crate::events::{BumpPart, Event};
use crate::exec::Exec;
use crate::git;
use crate::version::{Bump, PARTS};
use crate::version_commit;
use crate::version_files::{
    cargo, line_of, manifest, pattern, read, toml_text, workspace, Change, Edits, Occurrence,
};

pub const DEFAULT_TAG: &str = "v{version}";
pub const DEFAULT_MESSAGE: &str = "Bump version: {old} → {new}";

#[derive(Debug, Clone)]
pub struct Options {
    pub bump: Bump,
    pub commit: bool,
    pub tag: bool,
    pub allow_dirty: bool,
    /// Overrides the configured commit message.
    pub message: Option<String>,
}

/// What a bump did (or, in a dry run, would do).
#[derive(Debug, Clone)]
pub struct Bumped {
    pub old: Version,
    pub new: Version,
    pub files: Vec<String>,
    pub tag: Option<String>,
}

/// A place the version lives in, and so a way of changing it.
#[derive(Debug)]
enum Carrier {
    Cargo(cargo::CargoVersion),
    /// `[version] current` in cdflow.toml itself.
    ConfigCurrent(PathBuf),
    Manifest(PathBuf),
    Pattern {
        path: PathBuf,
        search: String,
        replace: String,
    },
}

/// Where an app's version lives and what each file says of it.
#[derive(Debug)]
pub struct VersionFacts {
    pub current: Version,
    /// Where `current` was read from.
    pub source: Occurrence,
    /// Every place the version is stated, the source first.
    pub occurrences: Vec<Occurrence>,
    carriers: Vec<Carrier>,
    tag_template: String,
    message_template: String,
}

/// Reads where the version lives, from cdflow.toml's `[version]` or, with none, Cargo.toml.
pub fn read_version(dir: &Path, loaded: &config::Loaded) -> Result<VersionFacts> {
    let section = &loaded.config.version;
    let mut carriers = Vec::new();
    let mut occurrences = Vec::new();

    match (&section.current, &section.source) {
        (Some(_), Some(source)) => {
            return Err(user_error(format!(
                "{}: [version] has both `current` and `source`: keep `current` for an app \
                 with no Cargo.toml, or `source` to read the version from a Cargo.toml",
                loaded.location(source.span().start)
            )))
        }
        (Some(current), None) => {
            let path = loaded.path.clone().expect("`current` comes from a file");
            occurrences.push(Occurrence {
                line: line_of(&loaded.text, current.span().start),
                path: path.clone(),
                what: "version.current".into(),
                version: current.get_ref().clone(),
            });
            carriers.push(Carrier::ConfigCurrent(path));
        }
        (None, source) => {
            let manifest = dir.join(source.as_ref().map_or("Cargo.toml", |s| s.get_ref()));
            if !manifest.is_file() {
                return Err(user_error(match source {
                    Some(source) => format!(
                        "{}: [version] source `{}` does not exist: fix the path",
                        loaded.location(source.span().start),
                        source.get_ref()
                    ),
                    // `dir` is relative, and empty for the current folder: named in full.
                    None => format!(
                        "no version found in {}: there is no Cargo.toml; for an app without \
                         one, add to cdflow.toml:\n\n[version]\ncurrent = \"0.1.0\"",
                        std::env::current_dir()
                            .map(|here| match dir.as_os_str().is_empty() {
                                true => here,
                                false => here.join(dir),
                            })
                            .unwrap_or_else(|_| dir.to_path_buf())
                            .display()
                    ),
                }));
            }
            let found = cargo::inspect(&manifest)?;
            occurrences.extend(found.occurrences.iter().cloned());
            carriers.push(Carrier::Cargo(found));
        }
    }

    for entry in &section.files {
        let file = entry.get_ref();
        let path = dir.join(file.path());
        if !path.is_file() {
            return Err(user_error(format!(
                "{}: `{}` in [version] files does not exist: create it, or remove it from the \
                 list",
                loaded.location(entry.span().start),
                file.path()
            )));
        }
        let text = read(&path)?;
        let carrier = match file {
            VersionFile::Pattern(p) => {
                let search = p.search.clone().unwrap_or(pattern::DEFAULT_SEARCH.into());
                let replace = p.replace.clone().unwrap_or(search.clone());
                Carrier::Pattern {
                    path,
                    search,
                    replace,
                }
            }
            VersionFile::Path(_) if path.file_name() == Some("Cargo.toml".as_ref()) => {
                Carrier::Cargo(cargo::inspect(&path)?)
            }
            VersionFile::Path(name)
                if (name.ends_with(".yml") || name.ends_with(".yaml"))
                    && manifest::is_manifest(&manifest::parse(&path, &text)?) =>
            {
                Carrier::Manifest(path)
            }
            VersionFile::Path(_) => Carrier::Pattern {
                path,
                search: pattern::DEFAULT_SEARCH.into(),
                replace: pattern::DEFAULT_SEARCH.into(),
            },
        };
        occurrences.extend(carrier_occurrences(&carrier, &text)?);
        carriers.push(carrier);
    }

    let source = occurrences[0].clone();
    let current = Version::parse(&source.version).map_err(|err| {
        user_error(format!(
            "{}:{}: `{}` ({}) is not a SemVer version ({err}): write it as MAJOR.MINOR.PATCH, \
             such as 0.1.0",
            source.path.display(),
            source.line,
            source.version,
            source.what
        ))
    })?;
    Ok(VersionFacts {
        current,
        source,
        occurrences,
        carriers,
        tag_template: section.tag.clone().unwrap_or(DEFAULT_TAG.into()),
        message_template: section.message.clone().unwrap_or(DEFAULT_MESSAGE.into()),
    })
}

fn carrier_occurrences(carrier: &Carrier, text: &str) -> Result<Vec<Occurrence>> {
    Ok(match carrier {
        Carrier::Cargo(found) => found.occurrences.clone(),
        Carrier::Manifest(path) => manifest::occurrences(path, text)?,
        Carrier::Pattern { path, search, .. }
            if search.contains("{version}") && search != pattern::DEFAULT_SEARCH =>
        {
            let found = pattern::occurrences(path, text, search);
            if found.is_empty() {
                return Err(user_error(format!(
                    "{} has no version where the search pattern `{search}` expects one: fix \
                     the file, or the pattern in cdflow.toml",
                    path.display()
                )));
            }
            found
        }
        Carrier::Pattern { .. } | Carrier::ConfigCurrent(_) => Vec::new(),
    })
}

impl VersionFacts {
    /// Every file that disagrees with the source, listed with all the others, as one error.
    pub fn check_agreement(&self, dir: &Path) -> Result<()> {
        let current = self.current.to_string();
        if self.occurrences.iter().all(|o| o.version == current) {
            return Ok(());
        }
        let list: Vec<String> = self
            .occurrences
            .iter()
            .map(|o| {
                let path = o.path.strip_prefix(dir).unwrap_or(&o.path).display();
                let mark = if o.version == current {
                    ""
                } else {
                    "   <- differs"
                };
                format!("  {path}:{}  {}  {}{mark}", o.line, o.what, o.version)
            })
            .collect();
        Err(user_error(format!(
            "the files disagree on the current version (the first is where it is read from):\n{}\n\
             make them agree, commit, then bump again",
            list.join("\n")
        )))
    }

    pub fn tag_name(&self, new: &Version) -> String {
        pattern::render(&self.tag_template, &new.to_string(), "", "")
    }

    /// The version commit's message (and the tag's) for a bump to `new`.
    pub fn commit_message(&self, options: &Options, new: &Version) -> String {
        self.message(options, &self.current, new)
    }

    fn message(&self, options: &Options, old: &Version, new: &Version) -> String {
        let template = options.message.as_deref().unwrap_or(&self.message_template);
        let (old, new) = (old.to_string(), new.to_string());
        pattern::render(template, &new, &old, &new)
            .replace("{old}", &old)
            .replace("{new}", &new)
    }

    /// The version's edits, ready to be made. A Cargo version reaches every member of its
    /// workspace, which cargo is asked for (a query).
    fn plan(&self, exec: &Exec, new: &Version) -> Result<Plan<'_>> {
        let reach = self
            .carriers
            .iter()
            .map(|carrier| match carrier {
                Carrier::Cargo(found) => Ok(Some(
                    found.affected(&workspace::of(exec, &found.manifest)?)?,
                )),
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(Plan {
            facts: self,
            reach,
            new: new.clone(),
        })
    }
}

/// The version's edits, worked out once and made on any version of the files: the working
/// tree's, and for the version commit, the last commit's and the index's.
struct Plan<'f> {
    facts: &'f VersionFacts,
    /// For each carrier, in order, what a Cargo version changes in its workspace.
    reach: Vec<Option<cargo::Affected>>,
    new: Version,
}

impl Plan<'_> {
    /// Every file's new content, computed from `edits`' texts and validated, in memory.
    fn changes(&self, mut edits: Edits) -> Result<Vec<Change>> {
        let (facts, new) = (self.facts, &self.new);
        let (current, new_text) = (facts.current.to_string(), new.to_string());
        for (carrier, reach) in facts.carriers.iter().zip(&self.reach) {
            match carrier {
                Carrier::Cargo(_) => reach
                    .as_ref()
                    .expect("a Cargo carrier has its reach")
                    .edit(&mut edits, &facts.current, new)?,
                Carrier::ConfigCurrent(path) => {
                    let text = edits.text(path)?;
                    let doc = toml_text::parse(path, &text)?;
                    let (_, span) = toml_text::string_at(doc.as_table(), &["version", "current"])
                        .context("[version] current vanished from cdflow.toml")?;
                    let edited = toml_text::replace_in_span(&text, span, &current, &new_text)
                        .context("[version] current changed while cdflow read it")?;
                    edits.set(path, edited);
                }
                Carrier::Manifest(path) => manifest::edit(path, &mut edits, &current, &new_text)?,
                Carrier::Pattern {
                    path,
                    search,
                    replace,
                } => pattern::edit(path, &mut edits, search, replace, &current, &new_text)?,
            }
        }
        let changes = edits.changes();
        for (path, _, new_content) in &changes {
            validate(path, new_content)?;
        }
        Ok(changes)
    }
}

/// A changed TOML or YAML file must still parse.
fn validate(path: &Path, content: &str) -> Result<()> {
    let name = path.to_string_lossy();
    if name.ends_with(".toml") || name.ends_with("Cargo.lock") {
        toml_text::parse(path, content)?;
    } else if name.ends_with(".yml") || name.ends_with(".yaml") {
        manifest::parse(path, content)?;
    }
    Ok(())
}

/// `cdflow bump --show`: the current version and what each part would make of it.
pub fn show(exec: &Exec, facts: &VersionFacts) {
    let ui = exec.ui();
    let source = &facts.source;
    if ui.is_json() {
        ui.emit(Event::BumpPlan {
            current: facts.current.to_string(),
            source: exec.display_path(&source.path),
            line: source.line as u32,
            next: PARTS
                .iter()
                .map(|part| BumpPart {
                    part: part.to_string(),
                    version: part.apply(&facts.current).ok().map(|v| v.to_string()),
                })
                .collect(),
        });
        return;
    }
    ui.note(&format!(
        "current version: {} ({}:{} {})",
        facts.current,
        exec.display_path(&source.path),
        source.line,
        source.what
    ));
    for part in PARTS {
        let next = match part.apply(&facts.current) {
            Ok(version) => version.to_string(),
            Err(_) => "-".to_string(),
        };
        ui.note(&format!("  {:<8} -> {next}", part.to_string()));
    }
}

/// Every reason not to bump, all at once: files that disagree, a version that does not go up,
/// no repository to commit to, uncommitted changes, a branch behind its upstream, a tag taken.
/// Returns the new version when there is none.
pub fn check(exec: &Exec, facts: &VersionFacts, options: &Options) -> Result<Version> {
    let mut problems = Vec::new();
    if let Err(err) = facts.check_agreement(&exec.dir()) {
        problems.push(err.to_string());
    }
    let new = match options.bump.apply(&facts.current) {
        Ok(new) => Some(new),
        Err(err) => {
            problems.push(err.to_string());
            None
        }
    };
    let in_git = git::is_repository(exec)?;
    if options.commit && !in_git {
        problems.push(format!(
            "{} is not in a git repository, so there is nothing to commit to: use --no-commit \
             to change the files only",
            exec.dir().display()
        ));
    }
    if options.commit && in_git && git::head(exec)?.is_none() {
        problems.push(
            "the repository has no commit yet, and a version commit is the last commit with the \
             version's edits: commit the files first, or use --no-commit"
                .to_string(),
        );
    }
    if in_git && !options.allow_dirty {
        let dirty = git::dirty_files(exec)?;
        if !dirty.is_empty() {
            problems.push(format!(
                "the working tree has uncommitted changes in: {}\ncommit or stash them, or pass \
                 --allow-dirty",
                dirty.join(", ")
            ));
        }
    }
    if in_git {
        if let Some(behind) = git::behind_upstream(exec)?.filter(|&n| n > 0) {
            problems.push(format!(
                "the branch is {behind} commit(s) behind its upstream: pull first, so that the \
                 new version is not made on an old tree"
            ));
        }
    }
    if let Some(new) = &new {
        let tag = facts.tag_name(new);
        if options.commit && options.tag && in_git && git::tag_exists(exec, &tag)? {
            problems.push(format!(
                "the tag `{tag}` already exists: version {new} was released before; bump to a \
                 higher version"
            ));
        }
    }
    match new {
        Some(new) if problems.is_empty() => Ok(new),
        _ => Err(user_error(format!(
            "cannot bump {}:\n- {}",
            facts.current,
            problems.join("\n- ")
        ))),
    }
}

/// Bumps the version: every precondition first, then all the files, the commit and the tag,
/// or nothing at all.
pub fn bump(exec: &Exec, facts: &VersionFacts, options: &Options) -> Result<Bumped> {
    let new = check(exec, facts, options)?;
    let commit = options.commit;
    let tag = (commit && options.tag).then(|| facts.tag_name(&new));
    let plan = facts.plan(exec, &new)?;
    let changes = plan.changes(Edits::default())?;
    // Worked out before anything is written, like the files: a refusal changes nothing.
    let version_commit = if commit {
        Some(version_commit::prepare(exec, &changes, |edits| {
            plan.changes(edits)
        })?)
    } else {
        None
    };

    let files: Vec<String> = changes
        .iter()
        .map(|(path, _, _)| exec.display_path(path))
        .collect();
    let message = facts.message(options, &facts.current, &new);
    exec.critical(|| {
        let saved = match commit {
            true => exec.for_real(|| GitState::save(exec))?,
            false => None,
        };
        write_all_or_nothing(exec, &changes, |path, old, new| {
            exec.write_file(path, old, new)
        })?;
        let recorded = (|| -> Result<()> {
            if let Some(version_commit) = &version_commit {
                version_commit.record(exec, &message)?;
                if let Some(name) = &tag {
                    git::tag_annotated(exec, name, &message)?;
                }
            }
            Ok(())
        })();
        if let Err(err) = recorded {
            // Both are attempted whatever the other does; the files first, as they matter most.
            let files = restore(exec, &changes);
            let git = saved.map_or(Ok(()), |saved| saved.restore(exec, tag.as_deref()));
            if let Err(restoring) = files.and(git) {
                return Err(err.context(format!(
                    "the bump to {new} failed, and putting things back failed too \
                     ({restoring:#}): check `git status` and the files"
                )));
            }
            return Err(err.context(format!(
                "the bump to {new} failed, so every file and git were put back as they were"
            )));
        }
        Ok(())
    })?;
    Ok(Bumped {
        old: facts.current.clone(),
        new,
        files,
        tag,
    })
}

/// Writes every change, or, if one write fails, puts back the ones already written.
fn write_all_or_nothing(
    exec: &Exec,
    changes: &[Change],
    mut write: impl FnMut(&Path, &str, &str) -> Result<()>,
) -> Result<()> {
    for (done, (path, old, new)) in changes.iter().enumerate() {
        if let Err(err) = write(path, old, new) {
            restore(exec, &changes[..done])?;
            return Err(err.context(format!(
                "could not write {}; the files already written were put back",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Puts the files of `changes` back as they were.
fn restore(exec: &Exec, changes: &[Change]) -> Result<()> {
    for (path, old, new) in changes {
        exec.write_file(path, new, old)?;
    }
    Ok(())
}

/// What a failed bump must give back to git: HEAD and the index, byte for byte.
struct GitState {
    head: Option<String>,
    index_path: PathBuf,
    index: Option<Vec<u8>>,
}

impl GitState {
    fn save(exec: &Exec) -> Result<GitState> {
        let index_path = git::index_path(exec)?;
        Ok(GitState {
            head: git::head(exec)?,
            index: std::fs::read(&index_path).ok(),
            index_path,
        })
    }

    fn restore(&self, exec: &Exec, tag: Option<&str>) -> Result<()> {
        if let Some(tag) = tag {
            if git::tag_exists(exec, tag)? {
                git::delete_tag(exec, tag)?;
            }
        }
        if let Some(head) = &self.head {
            if git::head(exec)?.as_ref() != Some(head) {
                git::reset_soft(exec, head)?;
            }
        }
        match &self.index {
            Some(index) => exec.save(&self.index_path, index)?,
            None => {
                let _ = std::fs::remove_file(&self.index_path);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_puts_back_the_files_already_written() {
        let dir = tempfile::tempdir().unwrap();
        let changes: Vec<Change> = (1..=4)
            .map(|n| {
                let path = dir.path().join(format!("file{n}.txt"));
                std::fs::write(&path, format!("version 0.1.0 in {n}\n")).unwrap();
                (
                    path,
                    format!("version 0.1.0 in {n}\n"),
                    format!("version 0.2.0 in {n}\n"),
                )
            })
            .collect();
        let exec = Exec::for_tests(dir.path());
        let mut calls = 0;
        let err = write_all_or_nothing(&exec, &changes, |path, old, new| {
            calls += 1;
            if calls == 3 {
                anyhow::bail!("disk full (injected)");
            }
            exec.write_file(path, old, new)
        })
        .unwrap_err();
        assert_eq!(calls, 3, "the fourth file is never written");
        assert!(format!("{err:#}").contains("disk full"));
        for (path, old, _) in &changes {
            assert_eq!(&std::fs::read_to_string(path).unwrap(), old);
        }
    }
}
