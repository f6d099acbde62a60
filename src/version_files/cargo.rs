//! The version of a Cargo package or workspace: `package.version`, `workspace.package.version`,
//! the members that inherit it, path dependencies that require it, and `Cargo.lock`.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Result;
use semver::{Version, VersionReq};
use toml_edit::{Document, Item};

use super::toml_text::{parse, string_at};
use super::workspace::Workspace;
use super::{line_of, read, Edits, Occurrence};
use crate::error::user_error;

/// Where a Cargo package or workspace states its version, found by reading its manifest.
#[derive(Debug)]
pub struct CargoVersion {
    /// The Cargo.toml the version is read from.
    pub manifest: PathBuf,
    /// The version fields of that manifest (`package.version`, `workspace.package.version`).
    pub occurrences: Vec<Occurrence>,
    /// The manifest's own package, when this version is its version.
    package: Option<String>,
    /// Whether the manifest states `workspace.package.version`, which members may inherit.
    shared: bool,
}

/// What a bump of a [`CargoVersion`] changes in its workspace: the packages whose version it is,
/// and every file that names them.
#[derive(Debug)]
pub struct Affected {
    /// The manifest that states the version.
    manifest: PathBuf,
    /// The packages whose version changes: the manifest's own, and members that inherit it.
    packages: Vec<String>,
    /// Every manifest of the workspace, the one that states the version first, for path
    /// dependencies that name a bumped package.
    manifests: Vec<PathBuf>,
    lock: PathBuf,
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
    let mut package = None;
    let name = string_at(root, &["package", "name"]).map(|(name, _)| name);

    if let Some((version, span)) = string_at(root, &["package", "version"]) {
        occurrences.push(occurrence(
            manifest,
            &text,
            span,
            "package.version",
            version,
        ));
        package = name.clone();
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
            package = name;
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
    Ok(CargoVersion {
        manifest: manifest.to_path_buf(),
        occurrences,
        package,
        shared: workspace_version.is_some(),
    })
}

impl CargoVersion {
    /// What a bump of this version changes in `workspace`, the one its manifest belongs to.
    pub fn affected(&self, workspace: &Workspace) -> Result<Affected> {
        let mut packages: Vec<String> = self.package.iter().cloned().collect();
        let mut manifests = Vec::new();
        // Canonical paths, so that one file is edited once however its path is spelled.
        let mut seen = Vec::new();
        let candidates = [self.manifest.clone(), workspace.root_manifest()];
        for manifest in candidates.iter().chain(&workspace.members) {
            let canonical = std::fs::canonicalize(manifest).unwrap_or_else(|_| manifest.clone());
            if seen.contains(&canonical) || !manifest.is_file() {
                continue;
            }
            seen.push(canonical);
            if manifest != &self.manifest && self.shared {
                let text = read(manifest)?;
                let doc = parse(manifest, &text)?;
                if inherits_version(doc.as_table()) {
                    packages
                        .extend(string_at(doc.as_table(), &["package", "name"]).map(|(n, _)| n));
                }
            }
            manifests.push(manifest.clone());
        }
        Ok(Affected {
            manifest: self.manifest.clone(),
            packages,
            manifests,
            lock: workspace.lock(),
        })
    }
}

impl Affected {
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
        if self.lock.exists() {
            let text = edits.text(&self.lock)?;
            let doc = parse(&self.lock, &text)?;
            let spans = self.lock_spans(&doc, &current);
            edits.set(&self.lock, splice_all(&text, spans, &current, &new));
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

/// Replaces `current` with `new` inside each span, from the last span to the first so that
/// earlier offsets stay valid.
fn splice_all(text: &str, mut spans: Vec<Range<usize>>, current: &str, new: &str) -> String {
    spans.sort_by_key(|span| std::cmp::Reverse(span.start));
    spans.dedup();
    spans.into_iter().fold(text.to_string(), |text, span| {
        super::toml_text::replace_in_span(&text, span, current, new).unwrap_or(text)
    })
}
