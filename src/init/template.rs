//! The templates of `templates/`, built into the binary so that an installed cdflow needs no
//! source tree, and their rendering: placeholders filled in paths and contents.
//!
//! A template is a folder holding the files of a new service and a `template.toml` (read, not
//! copied). `{{name}}`, `{{crate_name}}` and `{{module}}` are filled in file contents and
//! paths; a `.tmpl` suffix is dropped, so that files that tools would otherwise pick up in
//! cdflow's own tree (a template's `Cargo.toml`) are stored under another name. A `Cargo.lock`
//! is also put in cargo's order for the new package's name.
//!
//! A template may offer options (`[options]` in its `template.toml`, chosen with `cdflow init
//! --with NAME`). Lines between a line `{{#NAME}}` and a line `{{/NAME}}` are kept only when
//! the option is chosen; the two marker lines are never written.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use include_dir::{include_dir, Dir};
use indexmap::IndexMap;
use serde::Deserialize;

use super::cargo_lock;
use super::name::{Language, Names};

static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// The template `cdflow init` uses when none is named (the CLI's default).
pub const DEFAULT: &str = "rust-service";

const META_FILE: &str = "template.toml";
const STORED_SUFFIX: &str = ".tmpl";
/// Rendered by cargo's rules rather than by filling alone (see [`cargo_lock`]).
const CARGO_LOCK: &str = "Cargo.lock";

/// A template's `template.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// One line for `cdflow init --list`.
    pub description: String,
    /// Whose naming rules the crate or module name must follow.
    pub language: Language,
    /// The command `cdflow init` suggests running first in the new folder.
    #[serde(rename = "try")]
    pub try_command: String,
    /// What each option adds, by name, for `cdflow init --list`.
    #[serde(default)]
    pub options: IndexMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub name: &'static str,
    pub meta: Meta,
    dir: &'static Dir<'static>,
}

/// A file of the new service: its path inside the new folder and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: PathBuf,
    pub contents: String,
}

/// Every template, by name.
pub fn all() -> Result<Vec<Template>> {
    let mut templates = TEMPLATES
        .dirs()
        .map(|dir| {
            let name = dir
                .path()
                .to_str()
                .context("a template's folder name is not UTF-8")?;
            let meta_path = dir.path().join(META_FILE);
            let text = TEMPLATES
                .get_file(&meta_path)
                .and_then(|file| file.contents_utf8())
                .with_context(|| format!("the template `{name}` has no {META_FILE}"))?;
            let meta = toml_edit::de::from_str(text)
                .with_context(|| format!("templates/{name}/{META_FILE} is not valid"))?;
            Ok(Template { name, meta, dir })
        })
        .collect::<Result<Vec<_>>>()?;
    templates.sort_by_key(|template| template.name);
    Ok(templates)
}

/// The template called `name`, or `None`.
pub fn find(name: &str) -> Result<Option<Template>> {
    Ok(all()?.into_iter().find(|template| template.name == name))
}

impl Template {
    /// The options in `chosen` that this template does not offer, each with why.
    pub fn unknown_options(&self, chosen: &[String]) -> Vec<String> {
        let offered = if self.meta.options.is_empty() {
            "it offers none".to_string()
        } else {
            let names: Vec<String> = self.meta.options.keys().map(|k| format!("`{k}`")).collect();
            format!("it offers {}", names.join(", "))
        };
        chosen
            .iter()
            .filter(|option| !self.meta.options.contains_key(*option))
            .map(|option| {
                format!(
                    "the {} template has no option `{option}`: {offered} (see `cdflow init \
                     --list`)",
                    self.name
                )
            })
            .collect()
    }

    /// Every file of the new service, with the sections of the `chosen` options, placeholders
    /// filled. A placeholder that is left (a misspelt one in the template) is an error, so that
    /// nothing half-made is written.
    pub fn render(&self, names: &Names, chosen: &[String]) -> Result<Vec<File>> {
        let mut files = Vec::new();
        collect(self.dir, &mut |file| {
            let relative = file
                .path()
                .strip_prefix(self.dir.path())
                .expect("a template's files are in its folder");
            if relative == Path::new(META_FILE) {
                return Ok(());
            }
            let shown = relative.display();
            let stored = relative.to_str().with_context(|| {
                format!("templates/{}/{shown}: the path is not UTF-8", self.name)
            })?;
            let contents = file
                .contents_utf8()
                .with_context(|| format!("templates/{}/{shown} is not UTF-8 text", self.name))?;
            let contents = &sections(contents, &self.meta.options, chosen)
                .map_err(|why| anyhow::anyhow!("templates/{}/{shown}: {why}", self.name))?;
            let mut path = fill(stored, names);
            if let Some(stripped) = path.strip_suffix(STORED_SUFFIX) {
                path = stripped.to_string();
            }
            let contents = if Path::new(&path).file_name() == Some(CARGO_LOCK.as_ref()) {
                cargo_lock::render(contents, |text| fill(text, names)).with_context(|| {
                    format!(
                        "templates/{}/{shown} is not a Cargo.lock as cargo writes it: make it \
                         again with `cargo generate-lockfile` in a service made from the \
                         template, then put the placeholders back",
                        self.name
                    )
                })?
            } else {
                fill(contents, names)
            };
            for (what, text) in [("path", path.as_str()), ("contents", contents.as_str())] {
                if let Some(at) = text.find("{{") {
                    let end = text[at..].find("}}").map_or(text.len(), |end| at + end + 2);
                    bail!(
                        "templates/{}/{shown}: its {what} holds the unknown placeholder `{}`",
                        self.name,
                        &text[at..end.min(at + 40)]
                    );
                }
            }
            let path = PathBuf::from(path);
            if !path.components().all(|c| matches!(c, Component::Normal(_))) {
                bail!(
                    "templates/{}/{shown} would be written outside the new folder",
                    self.name
                );
            }
            files.push(File { path, contents });
            Ok(())
        })?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }
}

impl Template {
    /// Why a name that is good in itself cannot name a service of this template: its crate
    /// would have the name of a crate that the template's Cargo.toml depends on (`serde`), and
    /// the code's `serde::` paths would then name either, which rustc refuses.
    pub fn crate_name_clash(&self, names: &Names) -> Result<Option<String>> {
        let Some(file) = self.dir.files().find(|file| {
            file.path()
                .file_name()
                .is_some_and(|n| n == "Cargo.toml" || n == "Cargo.toml.tmpl")
        }) else {
            return Ok(None);
        };
        let shown = format!("templates/{}", file.path().display());
        let manifest: toml_edit::DocumentMut = file
            .contents_utf8()
            .with_context(|| format!("{shown} is not UTF-8 text"))?
            .parse()
            .with_context(|| format!("{shown} is not valid TOML"))?;
        let clash = ["dependencies", "dev-dependencies"]
            .iter()
            .filter_map(|table| manifest.get(table)?.as_table_like())
            .flat_map(|table| table.iter().map(|(key, _)| key.replace('-', "_")))
            .find(|dependency| *dependency == names.crate_name);
        Ok(clash.map(|dependency| {
            format!(
                "`{}` makes the crate `{dependency}`, which the {} template depends on: its \
                 code could not tell the two apart; choose another name, such as `{}-service`",
                names.name, self.name, names.name
            )
        }))
    }
}

fn collect(
    dir: &'static Dir<'static>,
    visit: &mut dyn FnMut(&'static include_dir::File<'static>) -> Result<()>,
) -> Result<()> {
    for file in dir.files() {
        visit(file)?;
    }
    for sub in dir.dirs() {
        collect(sub, visit)?;
    }
    Ok(())
}

/// `text` with the lines of the sections of `chosen` options, without the other sections and
/// without the marker lines.
fn sections(
    text: &str,
    options: &IndexMap<String, String>,
    chosen: &[String],
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(text.len());
    // The option whose section the line is in, and the line number that opened it.
    let mut open: Option<(&str, usize)> = None;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let number = index + 1;
        let marker = line.trim();
        let start = marker
            .strip_prefix("{{#")
            .and_then(|rest| rest.strip_suffix("}}"));
        let end = marker
            .strip_prefix("{{/")
            .and_then(|rest| rest.strip_suffix("}}"));
        match (start, end, open) {
            (Some(option), _, None) => {
                if !options.contains_key(option) {
                    return Err(format!(
                        "line {number} opens a section for `{option}`, which template.toml's \
                         [options] does not name"
                    ));
                }
                open = Some((option, number));
            }
            (Some(_), _, Some((outer, at))) => {
                return Err(format!(
                    "line {number} opens a section inside the section `{outer}` of line {at}: \
                     sections do not nest"
                ))
            }
            (_, Some(option), Some((outer, _))) if option == outer => open = None,
            (_, Some(option), _) => {
                return Err(format!(
                    "line {number} closes the section `{option}`, which is not open"
                ))
            }
            (None, None, Some((option, _))) => {
                if chosen.iter().any(|c| c == option) {
                    out.push_str(line);
                }
            }
            (None, None, None) => out.push_str(line),
        }
    }
    match open {
        Some((option, at)) => Err(format!(
            "the section `{option}` of line {at} is never closed with `{{{{/{option}}}}}`"
        )),
        None => Ok(out),
    }
}

fn fill(text: &str, names: &Names) -> String {
    names
        .placeholders()
        .iter()
        .fold(text.to_string(), |text, (placeholder, value)| {
            text.replace(placeholder, value)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_with_no_placeholder_left() {
        let templates = all().unwrap();
        let names: Vec<&str> = templates.iter().map(|t| t.name).collect();
        assert_eq!(names, ["python-falcon", "rust-service"]);
        assert!(names.contains(&DEFAULT));
        let names = Names::of("orders-api");
        for template in &templates {
            assert!(!template.meta.description.contains('\n'));
            let files = template.render(&names, &[]).unwrap();
            let paths: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
            for expected in ["manifest.yml", "cdflow.toml", ".cfignore", ".gitignore"] {
                assert!(
                    paths.iter().any(|p| p == expected),
                    "{}: {paths:?}",
                    template.name
                );
            }
            assert!(!paths
                .iter()
                .any(|p| p.contains(META_FILE) || p.ends_with(STORED_SUFFIX)));
            for file in &files {
                assert!(!file.contents.contains("{{"), "{}", file.path.display());
            }
        }
        let rust = find("rust-service")
            .unwrap()
            .unwrap()
            .render(&names, &[])
            .unwrap();
        let cargo = rust
            .iter()
            .find(|f| f.path == Path::new("Cargo.toml"))
            .unwrap();
        assert!(cargo.contents.contains("name = \"orders-api\""));
        // `orders-api` sorts where the template keeps the package: the rendered lock file is
        // the stored one, filled, byte for byte.
        let lock = rust
            .iter()
            .find(|f| f.path == Path::new("Cargo.lock"))
            .unwrap();
        let stored = TEMPLATES
            .get_file("rust-service/Cargo.lock.tmpl")
            .and_then(|file| file.contents_utf8())
            .unwrap();
        assert_eq!(lock.contents, fill(stored, &names));
        let python = find("python-falcon")
            .unwrap()
            .unwrap()
            .render(&names, &[])
            .unwrap();
        assert!(python
            .iter()
            .any(|f| f.path == Path::new("orders_api/app.py")));
    }

    #[test]
    fn sections_are_kept_only_for_chosen_options() {
        let options: IndexMap<String, String> = [("redis".to_string(), "a cache".to_string())]
            .into_iter()
            .collect();
        let text = "a\n{{#redis}}\nb\n  {{/redis}}\nc\n";
        assert_eq!(sections(text, &options, &[]).unwrap(), "a\nc\n");
        assert_eq!(
            sections(text, &options, &["redis".into()]).unwrap(),
            "a\nb\nc\n"
        );
        let err = sections("{{#redis}}\nb\n", &options, &[]).unwrap_err();
        assert!(
            err.contains("line 1") && err.contains("{{/redis}}"),
            "{err}"
        );
        let err = sections("{{#cache}}\n{{/cache}}\n", &options, &[]).unwrap_err();
        assert!(
            err.contains("`cache`") && err.contains("[options]"),
            "{err}"
        );
        let err = sections("{{/redis}}\n", &options, &[]).unwrap_err();
        assert!(err.contains("line 1") && err.contains("not open"), "{err}");
        let err = sections("{{#redis}}\n{{#redis}}\n", &options, &[]).unwrap_err();
        assert!(err.contains("line 2") && err.contains("nest"), "{err}");
    }

    #[test]
    fn every_option_of_every_template_renders() {
        let names = Names::of("orders-api");
        for template in all().unwrap() {
            let chosen: Vec<String> = template.meta.options.keys().cloned().collect();
            let plain = template.render(&names, &[]).unwrap();
            let with = template.render(&names, &chosen).unwrap();
            for file in plain.iter().chain(&with) {
                assert!(!file.contents.contains("{{"), "{}", file.path.display());
            }
            if !chosen.is_empty() {
                assert_ne!(plain, with, "{}: the options change nothing", template.name);
            }
            let unknown = template.unknown_options(&["nope".into()]);
            assert_eq!(unknown.len(), 1);
            assert!(unknown[0].contains("`nope`"), "{unknown:?}");
        }
    }

    #[test]
    fn an_unknown_placeholder_is_an_error() {
        let names = Names::of("x");
        assert_eq!(fill("{{name}}/{{crate_name}}", &names), "x/x");
        assert_eq!(fill("{{nmae}}", &names), "{{nmae}}");
    }

    /// include_dir embeds the files it saw when cdflow was last compiled: cargo rebuilds on a
    /// change to a file, but not on a file added or removed, which this test catches.
    #[test]
    fn the_embedded_templates_are_those_on_disk() {
        fn on_disk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    on_disk(root, &path, out);
                } else {
                    let relative = path.strip_prefix(root).unwrap().to_path_buf();
                    out.push((relative, std::fs::read(&path).unwrap()));
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let mut disk = Vec::new();
        on_disk(&root, &root, &mut disk);
        disk.sort();
        let mut embedded = Vec::new();
        for template in TEMPLATES.dirs() {
            collect(template, &mut |file| {
                embedded.push((file.path().to_path_buf(), file.contents().to_vec()));
                Ok(())
            })
            .unwrap();
        }
        embedded.sort();
        assert!(
            disk == embedded,
            "templates/ changed since cdflow was compiled: `touch src/init/template.rs` and \
             build again"
        );
    }
}
