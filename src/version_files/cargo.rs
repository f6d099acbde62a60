//! The version of a Cargo package or workspace: `package.version`, `workspace.package.version`,
//! the members that inherit it, path dependencies that require it, and `Cargo.lock`.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Result;
use semver::{Version, VersionReq};
use toml_edit::{Document, Item};

use super::toml_text::{parse, string_at};
use super::{line_of, read, Edits, Occurrence};
use crate::error::user_error;

/// Where a Cargo package or workspace keeps its version, found by reading its manifests.
#[derive(Debug)]
pub struct CargoVersion {
    /// The Cargo.toml the version is read from.
    pub manifest: PathBuf,
    /// The version fields of that manifest (`package.version`, `workspace.package.version`).
    pub occurrences: Vec<Occurrence>,
    /// The packages whose version changes: the manifest's own, and members that inherit it.
    pub packages: Vec<String>,
    /// Every manifest of the workspace, the root first, for path dependencies that name a
    /// bumped package.
    manifests: Vec<PathBuf>,
}

const DEPENDENCY_TABLES: [&[&str]; 4] = [
    &["dependencies"],
    &["dev-dependencies"],
    &["build-dependencies"],
    &["workspace", "dependencies"],
];

pub fn inspect(manifest: &Path) -> Result<CargoVersion> {
    let text = read(manifest)?;
    let doc = parse(manifest, &text)?;
    let root = doc.as_table();
    let mut occurrences = Vec::new();
    let mut packages = Vec::new();
    let name = string_at(root, &["package", "name"]).map(|(name, _)| name);

    if let Some((version, span)) = string_at(root, &["package", "version"]) {
        occurrences.push(occurrence(
            manifest,
            &text,
            span,
            "package.version",
            version,
        ));
        packages.extend(name.clone());
    }
    let workspace_version = string_at(root, &["workspace", "package", "version"]);
    if let Some((version, span)) = workspace_version.clone() {
        occurrences.push(occurrence(
            manifest,
            &text,
            span,
            "workspace.package.version",
            version,
        ));
        if inherits_version(root) {
            packages.extend(name);
        }
    } else if inherits_version(root) {
        return Err(user_error(format!(
            "{} inherits its version from a workspace: point [version] source in cdflow.toml \
             at the workspace's root Cargo.toml",
            manifest.display()
        )));
    }
    if occurrences.is_empty() {
        return Err(user_error(format!(
            "{} states no version: set package.version (or workspace.package.version), or set \
             [version] current in cdflow.toml",
            manifest.display()
        )));
    }

    let mut manifests = vec![manifest.to_path_buf()];
    for member in members(manifest, &doc)? {
        let member_text = read(&member)?;
        let member_doc = parse(&member, &member_text)?;
        let member_table = member_doc.as_table();
        if workspace_version.is_some() && inherits_version(member_table) {
            packages.extend(string_at(member_table, &["package", "name"]).map(|(n, _)| n));
        }
        manifests.push(member);
    }
    Ok(CargoVersion {
        manifest: manifest.to_path_buf(),
        occurrences,
        packages,
        manifests,
    })
}

impl CargoVersion {
    /// Computes the new content of every manifest and of `Cargo.lock`.
    pub fn edit(&self, edits: &mut Edits, current: &Version, new: &Version) -> Result<()> {
        let (current, new) = (current.to_string(), new.to_string());
        for manifest in &self.manifests {
            let text = edits.text(manifest)?;
            let doc = parse(manifest, &text)?;
            let mut spans = Vec::new();
            if manifest == &self.manifest {
                for keys in [
                    &["package", "version"][..],
                    &["workspace", "package", "version"][..],
                ] {
                    if let Some((_, span)) = string_at(doc.as_table(), keys) {
                        spans.push(span);
                    }
                }
            }
            spans.extend(self.dependency_spans(manifest, &doc, &current, new.as_str())?);
            edits.set(manifest, splice_all(&text, spans, &current, &new));
        }
        let lock = self.manifest.with_file_name("Cargo.lock");
        if lock.exists() {
            let text = edits.text(&lock)?;
            let doc = parse(&lock, &text)?;
            let spans = self.lock_spans(&doc, &current);
            edits.set(&lock, splice_all(&text, spans, &current, &new));
        }
        Ok(())
    }

    /// Path dependencies on a bumped package whose requirement names the current version.
    fn dependency_spans(
        &self,
        manifest: &Path,
        doc: &Document<&str>,
        current: &str,
        new: &str,
    ) -> Result<Vec<Range<usize>>> {
        let mut spans = Vec::new();
        let new_version = Version::parse(new)?;
        for keys in DEPENDENCY_TABLES {
            let Some(table) = table_at(doc.as_table(), keys) else {
                continue;
            };
            for (key, item) in table.iter() {
                let Some(dependency) = item.as_table_like() else {
                    continue;
                };
                let package = dependency
                    .get("package")
                    .and_then(Item::as_str)
                    .unwrap_or(key);
                let version = dependency.get("version").and_then(Item::as_value);
                if dependency.get("path").is_none() || !self.packages.iter().any(|p| p == package) {
                    continue;
                }
                let Some(version) = version else { continue };
                let (Some(req), Some(span)) = (version.as_str(), version.span()) else {
                    continue;
                };
                if req.trim_start_matches(['=', '^', '~', ' ']) == current {
                    spans.push(span);
                } else if !VersionReq::parse(req).is_ok_and(|r| r.matches(&new_version)) {
                    return Err(user_error(format!(
                        "{}:{}: the dependency `{key}` requires `{req}`, which the new version \
                         {new} does not meet: widen the requirement, then bump again",
                        manifest.display(),
                        line_of(doc.raw(), span.start)
                    )));
                }
            }
        }
        Ok(spans)
    }

    /// Cargo.lock entries of the bumped packages (local ones: they have no `source`).
    fn lock_spans(&self, doc: &Document<&str>, current: &str) -> Vec<Range<usize>> {
        let Some(entries) = doc.get("package").and_then(Item::as_array_of_tables) else {
            return Vec::new();
        };
        entries
            .iter()
            .filter(|entry| entry.get("source").is_none())
            .filter(|entry| {
                let name = entry.get("name").and_then(Item::as_str).unwrap_or("");
                self.packages.iter().any(|p| p == name)
            })
            .filter_map(|entry| {
                let version = entry.get("version")?.as_value()?;
                (version.as_str()? == current).then_some(version.span()?)
            })
            .collect()
    }
}

fn occurrence(
    path: &Path,
    text: &str,
    span: Range<usize>,
    what: &str,
    version: String,
) -> Occurrence {
    Occurrence {
        path: path.to_path_buf(),
        line: line_of(text, span.start),
        what: what.to_string(),
        version,
    }
}

/// `version.workspace = true`
fn inherits_version(table: &toml_edit::Table) -> bool {
    table
        .get("package")
        .and_then(|p| p.get("version"))
        .and_then(|v| v.get("workspace"))
        .and_then(Item::as_bool)
        .unwrap_or(false)
}

fn table_at<'d>(table: &'d toml_edit::Table, keys: &[&str]) -> Option<&'d toml_edit::Table> {
    keys.iter()
        .try_fold(table, |table, key| table.get(key)?.as_table())
}

/// The manifests of the workspace's members (not the root's own), from `workspace.members`,
/// with `dir/*` globs expanded and `workspace.exclude` left out.
fn members(manifest: &Path, doc: &Document<&str>) -> Result<Vec<PathBuf>> {
    let root = manifest
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
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
                "{}: the workspace member pattern `{pattern}` is not supported by cdflow bump: \
                 list the members, or use `dir/*`",
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

/// Replaces `current` with `new` inside each span, from the last span to the first so that
/// earlier offsets stay valid.
fn splice_all(text: &str, mut spans: Vec<Range<usize>>, current: &str, new: &str) -> String {
    spans.sort_by_key(|span| std::cmp::Reverse(span.start));
    spans.dedup();
    spans.into_iter().fold(text.to_string(), |text, span| {
        super::toml_text::replace_in_span(&text, span, current, new).unwrap_or(text)
    })
}
