//! A template's `Cargo.lock`, rendered as cargo itself writes it for the new package.
//!
//! Filling the placeholders in place is not enough. Cargo writes the `[[package]]` entries
//! sorted by name, then version, then source, so the new package belongs where its name sorts;
//! left where the template has it, the first plain `cargo test` moves it, and the bump then
//! refuses the dirty tree. And cargo names a dependency by its name alone only while no other
//! package has that name: a service called `mime`, as one of axum's dependencies is, makes cargo
//! write `mime 0.3.18` in every list that holds that crate.
//!
//! The file is read as the lines cargo writes, not as TOML in general: the template's is made by
//! cargo, and each entry's lines go back out as they came, so that the result is cargo's byte
//! for byte. Anything else in it is an error, so that a hand-edited template fails in cdflow's
//! own tests rather than in a user's first `cargo test`.

use std::cmp::Ordering;
use std::fmt;

use anyhow::{anyhow, bail, Context, Result};

/// The template's `Cargo.lock` (`stored`), with `fill` applied to its text, in cargo's order
/// and with cargo's names for dependencies.
pub fn render(stored: &str, fill: impl Fn(&str) -> String) -> Result<String> {
    let (header, raw) = parse(stored)?;
    // References are resolved before the names are filled, while the new package's name is
    // still a placeholder that no dependency can have.
    let mut packages = Vec::with_capacity(raw.len());
    for package in &raw {
        let dependencies = match &package.dependencies {
            Some(list) => Some(
                list.iter()
                    .map(|(line, reference)| {
                        resolve(&raw, reference).with_context(|| format!("line {line}"))
                    })
                    .collect::<Result<Vec<usize>>>()?,
            ),
            None => None,
        };
        let version_text = fill(&package.version);
        let version = semver::Version::parse(&version_text).with_context(|| {
            format!(
                "line {}: `{version_text}` is not a version",
                package.version_line
            )
        })?;
        packages.push(Package {
            name: fill(&package.name),
            version,
            version_text,
            source: package.source.as_deref().map(&fill),
            before: package.before.iter().map(|line| fill(line)).collect(),
            dependencies,
            after: package.after.iter().map(|line| fill(line)).collect(),
        });
    }
    let mut order: Vec<usize> = (0..packages.len()).collect();
    order.sort_by(|a, b| packages[*a].cmp_as_cargo(&packages[*b]));

    let mut out = fill(&header);
    for (n, index) in order.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let package = &packages[*index];
        out.push_str("[[package]]\n");
        for line in &package.before {
            out.push_str(line);
            out.push('\n');
        }
        if let Some(dependencies) = &package.dependencies {
            let mut names: Vec<DependencyName> = dependencies
                .iter()
                .map(|dependency| DependencyName::of(&packages, *dependency))
                .collect();
            names.sort();
            out.push_str("dependencies = [\n");
            for name in names {
                out.push_str(&format!(" \"{name}\",\n"));
            }
            out.push_str("]\n");
        }
        for line in &package.after {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// A `[[package]]` entry as stored, placeholders unfilled.
struct RawPackage {
    name: String,
    version: String,
    version_line: usize,
    source: Option<String>,
    /// Its lines before and after the dependency list, as they are.
    before: Vec<String>,
    after: Vec<String>,
    /// Each entry of the dependency list, with its line number.
    dependencies: Option<Vec<(usize, String)>>,
}

/// An entry, filled.
struct Package {
    name: String,
    version: semver::Version,
    version_text: String,
    /// `None` for a package of the workspace (a path): the new service.
    source: Option<String>,
    before: Vec<String>,
    dependencies: Option<Vec<usize>>,
    after: Vec<String>,
}

impl Package {
    /// Cargo's order of package ids: name (bytewise), version, then source, where a path comes
    /// before a registry. Registries are told apart by their URLs here, which is cargo's order
    /// for the crates.io index that templates use.
    fn cmp_as_cargo(&self, other: &Package) -> Ordering {
        self.name
            .cmp(&other.name)
            .then_with(|| self.version.cmp(&other.version))
            .then_with(|| match (&self.source, &other.source) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (Some(a), Some(b)) => a.cmp(b),
            })
    }
}

/// How cargo names a dependency in a list: by its name while no other package has it, with
/// its version while no other package has both, else with its source too. The derived order
/// is cargo's order of those lists.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct DependencyName<'a> {
    name: &'a str,
    version: Option<&'a str>,
    source: Option<&'a str>,
}

impl<'a> DependencyName<'a> {
    fn of(packages: &'a [Package], index: usize) -> DependencyName<'a> {
        let package = &packages[index];
        let same_name = packages.iter().filter(|p| p.name == package.name);
        let same_version = same_name
            .clone()
            .filter(|p| p.version == package.version)
            .count();
        let (version, source) = if same_name.count() == 1 {
            (None, None)
        } else if same_version == 1 {
            (Some(package.version_text.as_str()), None)
        } else {
            (
                Some(package.version_text.as_str()),
                package.source.as_deref(),
            )
        };
        DependencyName {
            name: &package.name,
            version,
            source,
        }
    }
}

impl fmt::Display for DependencyName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)?;
        if let Some(version) = self.version {
            write!(f, " {version}")?;
        }
        if let Some(source) = self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

/// The entry that a dependency list's `name [version [(source)]]` names.
fn resolve(packages: &[RawPackage], reference: &str) -> Result<usize> {
    let (name, rest) = reference
        .split_once(' ')
        .map_or((reference, None), |(name, rest)| (name, Some(rest)));
    let (version, source) = match rest {
        None => (None, None),
        Some(rest) => match rest.split_once(' ') {
            None => (Some(rest), None),
            Some((version, source)) => {
                let source = source
                    .strip_prefix('(')
                    .and_then(|s| s.strip_suffix(')'))
                    .ok_or_else(|| anyhow!("`{reference}`: the source is not in parentheses"))?;
                (Some(version), Some(source))
            }
        },
    };
    let mut found = packages.iter().enumerate().filter(|(_, p)| {
        p.name == name
            && version.is_none_or(|v| p.version == v)
            && source.is_none_or(|s| p.source.as_deref() == Some(s))
    });
    match (found.next(), found.next()) {
        (Some((index, _)), None) => Ok(index),
        (None, _) => bail!("the dependency `{reference}` is not a package of the file"),
        (Some(_), Some(_)) => bail!("the dependency `{reference}` names more than one package"),
    }
}

/// The header (every line before the first entry) and the entries.
fn parse(stored: &str) -> Result<(String, Vec<RawPackage>)> {
    let mut header = String::new();
    let mut packages: Vec<RawPackage> = Vec::new();
    let mut current: Option<RawPackage> = None;
    let mut in_list = false;
    for (index, line) in stored.lines().enumerate() {
        let number = index + 1;
        if in_list {
            if line == "]" {
                in_list = false;
            } else {
                let reference = line
                    .strip_prefix(" \"")
                    .and_then(|l| l.strip_suffix("\","))
                    .ok_or_else(|| {
                        anyhow!("line {number}: `{line}` is not a dependency as cargo lists one")
                    })?;
                let package = current.as_mut().expect("a list is inside an entry");
                package
                    .dependencies
                    .get_or_insert_with(Vec::new)
                    .push((number, reference.to_string()));
            }
            continue;
        }
        if line == "[[package]]" {
            packages.extend(current.take().map(complete).transpose()?);
            current = Some(RawPackage {
                name: String::new(),
                version: String::new(),
                version_line: number,
                source: None,
                before: Vec::new(),
                after: Vec::new(),
                dependencies: None,
            });
            continue;
        }
        let Some(package) = current.as_mut() else {
            if packages.is_empty() {
                header.push_str(line);
                header.push('\n');
            } else if !line.is_empty() {
                bail!("line {number}: `{line}`: only [[package]] entries may follow the first");
            }
            continue;
        };
        if line.is_empty() {
            packages.extend(current.take().map(complete).transpose()?);
            continue;
        }
        if line == "dependencies = [" {
            package.dependencies = Some(Vec::new());
            in_list = true;
            continue;
        }
        let (key, value) = line
            .split_once(" = ")
            .filter(|(key, _)| ["name", "version", "source", "checksum", "replace"].contains(key))
            .ok_or_else(|| {
                anyhow!(
                    "line {number}: `{line}` is not a line of a [[package]] entry as cargo \
                     writes one"
                )
            })?;
        let text = || {
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_string)
                .ok_or_else(|| anyhow!("line {number}: the {key} is not a quoted string"))
        };
        match key {
            "name" => package.name = text()?,
            "version" => {
                package.version = text()?;
                package.version_line = number;
            }
            "source" => package.source = Some(text()?),
            _ => {}
        }
        if package.dependencies.is_some() {
            package.after.push(line.to_string());
        } else {
            package.before.push(line.to_string());
        }
    }
    if in_list {
        bail!("the file ends inside a dependency list");
    }
    packages.extend(current.take().map(complete).transpose()?);
    if packages.is_empty() {
        bail!("the file has no [[package]] entry");
    }
    Ok((header, packages))
}

/// An entry once its lines are read: it must have had a name and a version.
fn complete(package: RawPackage) -> Result<RawPackage> {
    if package.name.is_empty() || package.version.is_empty() {
        bail!(
            "the [[package]] entry near line {} lacks its name or its version",
            package.version_line
        );
    }
    Ok(package)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTRY: &str = "registry+https://github.com/rust-lang/crates.io-index";

    /// A lock file as cargo writes it, with the placeholder `{{name}}` in the template's place
    /// (after `b`) and a crate `m` that two packages depend on.
    fn stored() -> String {
        format!(
            "# This file is automatically @generated by Cargo.\n\
             # It is not intended for manual editing.\n\
             version = 4\n\
             \n\
             [[package]]\n\
             name = \"b\"\n\
             version = \"1.0.0\"\n\
             source = \"{REGISTRY}\"\n\
             checksum = \"00\"\n\
             dependencies = [\n \"m\",\n]\n\
             \n\
             [[package]]\n\
             name = \"{{{{name}}}}\"\n\
             version = \"0.1.0\"\n\
             dependencies = [\n \"b\",\n \"m\",\n]\n\
             \n\
             [[package]]\n\
             name = \"m\"\n\
             version = \"0.3.18\"\n\
             source = \"{REGISTRY}\"\n\
             checksum = \"11\"\n"
        )
    }

    fn render_as(name: &str) -> String {
        render(&stored(), |text| text.replace("{{name}}", name)).unwrap()
    }

    /// The package names in the order the file lists them.
    fn names(lock: &str) -> Vec<&str> {
        lock.lines()
            .filter_map(|line| line.strip_prefix("name = \"")?.strip_suffix('"'))
            .collect()
    }

    #[test]
    fn the_new_package_goes_where_its_name_sorts() {
        assert_eq!(names(&render_as("a")), ["a", "b", "m"]);
        assert_eq!(names(&render_as("c-api")), ["b", "c-api", "m"]);
        assert_eq!(names(&render_as("z")), ["b", "m", "z"]);
        // Bytewise, as cargo compares: `-` before `_` before letters.
        assert_eq!(names(&render_as("b-x")), ["b", "b-x", "m"]);
        assert_eq!(names(&render_as("lz")), ["b", "lz", "m"]);
        // Nothing but the order changes.
        let lock = render_as("a");
        assert!(lock.starts_with("# This file is automatically @generated by Cargo.\n"));
        assert!(lock.contains(
            "\n\n[[package]]\nname = \"a\"\nversion = \"0.1.0\"\ndependencies = [\n \"b\",\n \"m\",\n]\n\n[[package]]\nname = \"b\""
        ));
        assert!(lock.ends_with("checksum = \"11\"\n"));
        let mut sorted_lines: Vec<&str> = lock.lines().collect();
        let expected = stored().replace("{{name}}", "a");
        let mut expected_lines: Vec<&str> = expected.lines().collect();
        sorted_lines.sort();
        expected_lines.sort();
        assert_eq!(sorted_lines, expected_lines);
    }

    #[test]
    fn a_name_that_a_dependency_has_makes_cargo_name_that_dependency_by_its_version() {
        let lock = render_as("m");
        assert_eq!(names(&lock), ["b", "m", "m"]);
        assert!(
            lock.contains("name = \"b\"\nversion = \"1.0.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"00\"\ndependencies = [\n \"m 0.3.18\",\n]\n"),
            "{lock}"
        );
        // The new package is a path, sorted by its version before the crate's.
        assert!(
            lock.contains("name = \"m\"\nversion = \"0.1.0\"\ndependencies = [\n \"b\",\n \"m 0.3.18\",\n]\n\n[[package]]\nname = \"m\"\nversion = \"0.3.18\""),
            "{lock}"
        );
    }

    #[test]
    fn a_file_cargo_would_not_write_is_refused_with_its_line() {
        let bad = stored().replace("checksum = \"00\"", "checksum: 00");
        let err = render(&bad, |t| t.to_string()).unwrap_err().to_string();
        assert!(err.contains("line 9: `checksum: 00`"), "{err}");
        let bad = stored().replace(
            " \"m\",\n]\n\n[[package]]\nname = \"{{name}}\"",
            " \"q\",\n]\n\n[[package]]\nname = \"{{name}}\"",
        );
        let err = format!("{:#}", render(&bad, |t| t.to_string()).unwrap_err());
        assert!(
            err.contains("line 11: the dependency `q` is not a package"),
            "{err}"
        );
        let bad = stored() + "\n[metadata]\n";
        let err = render(&bad, |t| t.to_string()).unwrap_err().to_string();
        assert!(err.contains("line 28: `[metadata]`"), "{err}");
    }
}
