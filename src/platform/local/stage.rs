//! Staging, as a buildpack would: from a checkout to an immutable artifact.
//!
//! - Rust (`rust_buildpack`, `binary_buildpack` with a Cargo.toml, or a Cargo.toml and no
//!   buildpack): `cargo build --release` with a target folder shared between releases of the
//!   app (`$CARGO_TARGET_DIR` when set, else `<state>/cache/<app>/target`), and the binary that
//!   the manifest's `command` names is the droplet.
//! - Python (`python_buildpack`, or a requirements.txt, pyproject.toml, setup.py or Pipfile and no
//!   buildpack): the app's files (minus what `.cfignore` lists) and a virtual environment, made
//!   with the Python the app asks for, with its dependencies installed from the file the python
//!   buildpack would read ([`super::python`]).
//! - A `command` alone (or `binary_buildpack` without a Cargo.toml): the app's files as they are,
//!   like Cloud Foundry's binary buildpack.
//!
//! Every build step goes through [`Exec`], so a dry run shows it and runs nothing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;
use xshell::cmd;

use super::artifacts::{self, Artifact, Meta};
use super::python::{self, Plan, Source};
use super::spec::Runtime;
use crate::app_manifest::Application;
use crate::error::user_error;
use crate::exec::Exec;
use crate::platform::{rust_binary, Release};
use crate::state::State;

/// The buildpacks the local platform can stage with.
pub const SUPPORTED: [&str; 3] = ["binary_buildpack", "rust_buildpack", "python_buildpack"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buildpack {
    Rust,
    Python,
    /// Files as they are, run by the manifest's command.
    Binary,
}

impl Buildpack {
    fn name(self) -> &'static str {
        match self {
            Buildpack::Rust => "rust_buildpack",
            Buildpack::Python => "python_buildpack",
            Buildpack::Binary => "binary_buildpack",
        }
    }
}

/// Which buildpack stages `application` from `dir`: the manifest's, else what the files show.
pub fn buildpack(application: &Application, dir: &Path) -> Result<Buildpack> {
    let named = application.buildpacks();
    let has_cargo = dir.join("Cargo.toml").is_file();
    match named.as_slice() {
        [] => {
            // What the python buildpack detects, and pyproject.toml, which it does not read,
            // so that staging can say so.
            let python_files = [
                "requirements.txt",
                "pyproject.toml",
                "setup.py",
                "Pipfile",
                "environment.yml",
            ];
            if has_cargo {
                Ok(Buildpack::Rust)
            } else if python_files.iter().any(|f| dir.join(f).is_file()) {
                Ok(Buildpack::Python)
            } else if application.command.is_some() {
                Ok(Buildpack::Binary)
            } else {
                Err(user_error(format!(
                    "cannot tell how to stage `{}` from {}: name a buildpack in the manifest \
                     (one of {}) or give it a `command`",
                    application.name,
                    dir.display(),
                    SUPPORTED.join(", ")
                )))
            }
        }
        [one] => match normalize(one).as_str() {
            "rust_buildpack" | "rust-buildpack" | "heroku-buildpack-rust" => Ok(Buildpack::Rust),
            "python_buildpack" | "python-buildpack" => Ok(Buildpack::Python),
            "binary_buildpack" | "binary-buildpack" if has_cargo => Ok(Buildpack::Rust),
            "binary_buildpack" | "binary-buildpack" => Ok(Buildpack::Binary),
            _ => Err(user_error(format!(
                "the local platform has no buildpack `{one}`: it stages with {}",
                SUPPORTED.join(", ")
            ))),
        },
        several => Err(user_error(format!(
            "the manifest names {} buildpacks ({}); the local platform stages with one of {}",
            several.len(),
            several.join(", "),
            SUPPORTED.join(", ")
        ))),
    }
}

/// A buildpack's name, or the last part of its git URL.
fn normalize(buildpack: &str) -> String {
    let last = buildpack
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(buildpack);
    last.trim_end_matches(".git").to_ascii_lowercase()
}

/// Stages `release` and stores the result; `None` in a dry run, which only shows the commands.
pub fn stage(
    exec: &Exec,
    state: &State,
    release: &Release,
    application: &Application,
) -> Result<Option<Artifact>> {
    // Absolute, so that what is echoed and copied does not depend on the current folder.
    let dir = match release.dir.as_os_str().is_empty() {
        true => Path::new("."),
        false => release.dir,
    };
    // The manifest's `path`, as the cf CLI reads it: the app's folder, relative to the
    // manifest's (`keys::review` refused one that is no folder).
    let dir = match &application.path {
        Some(path) => super::keys::app_folder(&release.manifest.path, path),
        None => dir.to_path_buf(),
    };
    let dir = &std::path::absolute(dir)?;
    let release = &Release { dir, ..*release };
    let buildpack = buildpack(application, dir)?;
    let local = state.local();
    let staging = exec
        .for_real(|| artifacts::staging_dir(&local))?
        .unwrap_or_else(|| staging_dir_placeholder(&local));
    let droplet = staging.join("droplet");
    let result = (|| -> Result<(Runtime, String)> {
        match buildpack {
            Buildpack::Rust => stage_rust(exec, state, release, application, &droplet),
            Buildpack::Python => stage_python(exec, state, release, application, &droplet),
            Buildpack::Binary => {
                let command = application.command.clone().ok_or_else(|| {
                    user_error(format!(
                        "`{}` is staged as files with no build (binary_buildpack): give it a \
                         `command` in the manifest",
                        application.name
                    ))
                })?;
                exec.for_real(|| {
                    copy_app(
                        dir,
                        &droplet.join("app"),
                        &[state.root(), &release.manifest.path],
                    )
                })?;
                Ok((Runtime::Binary, command))
            }
        }
    })();
    let (runtime, default_command) = match result {
        Ok(done) => done,
        Err(err) => {
            exec.for_real(|| {
                // Best effort: the error that matters is the staging's own.
                let _ = std::fs::remove_dir_all(&staging);
                Ok(())
            })?;
            return Err(err);
        }
    };
    let store = || -> Result<Artifact> {
        let meta = Meta {
            digest: String::new(),
            app: application.name.clone(),
            runtime,
            default_command,
            buildpack: buildpack.name().into(),
            version: release.version.into(),
            staged_at: super::time::now(),
        };
        let stored = artifacts::store(exec, &local, &staging, meta);
        if stored.is_err() {
            // It may have been made read-only already.
            let _ = artifacts::remove_tree(&staging);
        }
        stored
    };
    // Nothing is stored in a dry run, which only shows the commands.
    exec.for_real(store)
}

fn stage_rust(
    exec: &Exec,
    state: &State,
    release: &Release,
    application: &Application,
    droplet: &Path,
) -> Result<(Runtime, String)> {
    let dir = release.dir;
    let binary = rust_binary::name(application.command.as_deref(), dir)?;
    // The folder the test tiers built in too (keyed by the app's name), so that staging
    // reuses their dependencies.
    let target = state.cargo_target(release.app);
    let target_text = target.to_string_lossy().into_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let locked: &[&str] = if dir.join("Cargo.lock").is_file() {
        &["--locked"]
    } else {
        &[]
    };
    {
        let sh = exec.sh();
        let _in_app = sh.push_dir(dir);
        exec.run_with_env(
            cmd!(sh, "{cargo} build --release {locked...} --bin {binary}"),
            &[("CARGO_TARGET_DIR", &target_text)],
        )
        .with_context(|| {
            format!(
                "staging `{}` with the Rust buildpack failed",
                application.name
            )
        })?;
    }
    exec.for_real(|| {
        let built = target.join("release").join(&binary);
        let app = droplet.join("app");
        std::fs::create_dir_all(&app)?;
        std::fs::copy(&built, app.join(&binary)).with_context(|| {
            format!(
                "cargo built no {}: the manifest's `command` must run the binary `./{binary}`",
                built.display()
            )
        })
    })?;
    Ok((Runtime::Binary, format!("./{binary}")))
}

fn stage_python(
    exec: &Exec,
    state: &State,
    release: &Release,
    application: &Application,
    droplet: &Path,
) -> Result<(Runtime, String)> {
    let dir = release.dir;
    let default_command = match &application.command {
        Some(command) => command.clone(),
        None => procfile_web(dir)?.ok_or_else(|| {
            user_error(format!(
                "`{}` is a Python app with no start command: give it a `command` in the \
                 manifest, or a Procfile with a `web:` line",
                application.name
            ))
        })?,
    };
    let plan = Plan::new(exec, dir)?;
    let ui = exec.ui();
    for warning in python::warnings(dir) {
        ui.warn(&warning);
    }
    ui.note(&plan.describe_python());
    ui.note(plan.source.describe());
    let app = droplet.join("app");
    let venv = droplet.join("venv");
    exec.for_real(|| copy_app(dir, &app, &[state.root(), &release.manifest.path]))?;
    let installs = plan.source != Source::Nothing;
    let sh = exec.sh();
    let fail = || {
        format!(
            "staging `{}` with the Python buildpack failed",
            application.name
        )
    };
    // Without anything to install, pip is not needed, and leaving it out saves seconds per
    // staging.
    let without_pip: &[&str] = if installs { &[] } else { &["--without-pip"] };
    let python = &plan.python.program;
    exec.run(cmd!(sh, "{python} -m venv {without_pip...} {venv}"))
        .with_context(fail)?;
    if installs {
        let scratch = droplet.parent().unwrap_or(droplet);
        let requirements = python::requirements(exec, &plan, &app, scratch).with_context(fail)?;
        let venv_python = venv.join("bin/python");
        let cache = state.cache().join(&application.name).join("pip");
        let cache = cache.to_string_lossy().into_owned();
        // From vendor/ alone, with the build tools of the venv, as the buildpack does.
        let find_links = format!("--find-links=file://{}", app.join("vendor").display());
        let vendored: &[&str] = if plan.vendored {
            &["--no-index", &find_links, "--no-build-isolation"]
        } else {
            &[]
        };
        // In the staged copy, which relative paths in the requirements (`-e .`) name.
        let _in_app = sh.push_dir(&app);
        exec.run_with_env(
            cmd!(
                sh,
                "{venv_python} -m pip install --disable-pip-version-check --no-input --no-compile {vendored...} -r {requirements}"
            ),
            &[("PIP_CACHE_DIR", &cache)],
        )
        .with_context(fail)?;
        // Requirements written from Pipfile.lock or setup.py are no part of the artifact.
        if requirements.starts_with(scratch) && !requirements.starts_with(droplet) {
            exec.for_real(|| Ok(std::fs::remove_file(&requirements)?))?;
        }
    }
    exec.for_real(|| make_venv_relocatable(exec, &venv, &app))?;
    Ok((Runtime::Python, default_command))
}

/// The command of the Procfile's `web:` line, if there is one.
fn procfile_web(dir: &Path) -> Result<Option<String>> {
    let Ok(text) = std::fs::read_to_string(dir.join("Procfile")) else {
        return Ok(None);
    };
    Ok(text
        .lines()
        .find_map(|line| line.trim().strip_prefix("web:"))
        .map(|command| command.trim().to_string()))
}

/// A venv names the folder it was built in, which is not where it runs: the staging folder
/// becomes the artifact's, under its digest. Scripts that pip writes start with
/// `#!/.../venv/bin/python`; they are made to find Python on PATH instead, where instances have
/// the venv's `bin` first. `pyvenv.cfg` records the command that made it and the `activate`
/// scripts hard-code the folder: that line and those scripts go (instances do not use them), so
/// that the same app stages to the same bytes, and so to the same artifact.
fn make_venv_relocatable(exec: &Exec, venv: &Path, app: &Path) -> Result<()> {
    let bin = venv.join("bin");
    let absolute = format!("{}/", bin.display());
    for entry in std::fs::read_dir(&bin)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if ["activate", "activate.csh", "activate.fish"].contains(&name.as_ref()) {
            std::fs::remove_file(&path)?;
            continue;
        }
        let metadata = std::fs::symlink_metadata(&path)?;
        if !metadata.is_file() || metadata.len() > 1024 * 1024 {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if !text.starts_with("#!") || !text.contains(&absolute) {
            continue;
        }
        let fixed = text
            .replacen(&format!("#!{absolute}"), "#!/usr/bin/env ", 1)
            .replace(&format!("'''exec' \"{absolute}"), "'''exec' \"");
        exec.save(&path, fixed.as_bytes())?;
    }
    // ensurepip compiles pip's modules, and bytecode names the file it came from; instances
    // never write bytecode (PYTHONDONTWRITEBYTECODE), so the caches go.
    remove_named(venv, "__pycache__")?;
    // Installed packages list the scripts they wrote with their hashes, which are the hashes
    // of the scripts before the rewrite above; the paths alone are kept (the format allows it).
    for site in glob_dirs(&venv.join("lib"), "site-packages")? {
        python::relocate_app_paths(exec, &site, app)?;
        for entry in std::fs::read_dir(&site)? {
            let record = entry?.path().join("RECORD");
            let Ok(text) = std::fs::read_to_string(&record) else {
                continue;
            };
            let fixed: String = text
                .lines()
                .map(|line| match line.split_once(',') {
                    Some((path, _)) if path.starts_with("../../../bin/") => format!("{path},,\n"),
                    _ => format!("{line}\n"),
                })
                .collect();
            if fixed != text {
                exec.save(&record, fixed.as_bytes())?;
            }
        }
    }
    let config = venv.join("pyvenv.cfg");
    if let Ok(text) = std::fs::read_to_string(&config) {
        let kept: String = text
            .lines()
            .filter(|line| !line.starts_with("command ="))
            .map(|line| format!("{line}\n"))
            .collect();
        exec.save(&config, kept.as_bytes())?;
    }
    Ok(())
}

/// Removes every folder called `name` under `dir`.
fn remove_named(dir: &Path, name: &str) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if entry.file_name() == name {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            remove_named(&entry.path(), name)?;
        }
    }
    Ok(())
}

/// The folders called `name` one or two levels under `dir` (`lib/python3.X/site-packages`).
fn glob_dirs(dir: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n == name) {
            found.push(path.clone());
        }
        let inner = path.join(name);
        if inner.is_dir() {
            found.push(inner);
        }
    }
    Ok(found)
}

/// What the cf CLI leaves out of every upload (its `DefaultIgnoreLines`). As with the cf CLI,
/// they are read after the app's `.cfignore`, so that no `!` line brings them back.
const CF_DEFAULT_IGNORES: [&str; 9] = [
    ".cfignore",
    ".DS_Store",
    ".git",
    ".gitignore",
    ".hg",
    ".svn",
    "_darcs",
    "manifest.yaml",
    "manifest.yml",
];

/// What cdflow leaves out besides: its own state folder, and caches of tools, which staging
/// makes anew (a venv, bytecode).
const CDFLOW_IGNORES: [&str; 4] = [".cdflow", "__pycache__", ".venv", ".tox"];

/// Copies the app's files into `to`, leaving out what `.cfignore` lists (and what the cf CLI
/// and cdflow always leave out), and the paths in `skip` (the state folder, when it lies inside
/// the app, and the manifest).
pub fn copy_app(from: &Path, to: &Path, skip: &[&Path]) -> Result<()> {
    let ignore = CfIgnore::read(from)?;
    std::fs::create_dir_all(to)?;
    copy_tree(from, to, Path::new(""), &ignore, skip)
        .with_context(|| format!("could not copy {} into the droplet", from.display()))
}

fn copy_tree(
    root: &Path,
    to: &Path,
    relative: &Path,
    ignore: &CfIgnore,
    skip: &[&Path],
) -> Result<()> {
    for entry in std::fs::read_dir(root.join(relative))? {
        let entry = entry?;
        let rel = relative.join(entry.file_name());
        let source = root.join(&rel);
        let file_type = entry.file_type()?;
        if skip.iter().any(|s| same_path(s, &source)) {
            continue;
        }
        let is_dir = file_type.is_dir();
        let target = to.join(&rel);
        if ignore.ignores(&rel, is_dir) {
            // As with the cf CLI, which asks about every path, a `!` line can bring back a
            // file inside a folder that an earlier line left out.
            if is_dir && !ignore.prunes(&rel) {
                copy_tree(root, to, &rel, ignore, skip)?;
            }
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if file_type.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else if is_dir {
            std::fs::create_dir_all(&target)?;
            copy_tree(root, to, &rel, ignore, skip)?;
        } else {
            std::fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The app's `.cfignore` as the cf CLI reads it: gitignore patterns (the `ignore` crate's, as
/// git reads them), `!` lines included, followed by the defaults that are always left out.
///
/// The cf CLI (go-gitignore) asks about every path, and the last pattern that matches the path
/// or any folder above it decides; git instead never looks inside a folder it left out. Each
/// path is therefore matched on its own and on each of its folders here, and the pattern that
/// comes last in the file decides.
#[derive(Debug)]
struct CfIgnore {
    matcher: Gitignore,
    /// The position of each pattern, by its text (a repeated line is the same pattern, and its
    /// last position is the one that counts).
    order: std::collections::HashMap<String, usize>,
    /// Patterns from this position on are the defaults.
    defaults_from: usize,
}

impl CfIgnore {
    fn read(dir: &Path) -> Result<CfIgnore> {
        let path = dir.join(".cfignore");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(err) => {
                return Err(err).with_context(|| format!("could not read {}", path.display()))
            }
        };
        CfIgnore::parse(dir, &text)
    }

    fn parse(dir: &Path, text: &str) -> Result<CfIgnore> {
        let file = dir.join(".cfignore");
        let mut builder = GitignoreBuilder::new(dir);
        let mut order = std::collections::HashMap::new();
        let written = text
            .lines()
            .enumerate()
            .map(|(i, line)| (line, Some(i + 1)));
        let defaults = CF_DEFAULT_IGNORES
            .iter()
            .chain(&CDFLOW_IGNORES)
            .map(|line| (*line, None));
        let mut defaults_from = None;
        let mut count = 0;
        for (line, number) in written.chain(defaults) {
            if number.is_none() && defaults_from.is_none() {
                defaults_from = Some(count);
            }
            // go-gitignore trims spaces on both sides of a line.
            let line = line.trim_end_matches('\r').trim_matches(' ');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            builder.add_line(Some(file.clone()), line).map_err(|err| {
                user_error(format!(
                    "{}:{}: `{line}` is not a pattern cdflow can read ({err}): fix or remove \
                     the line",
                    file.display(),
                    number.unwrap_or_default()
                ))
            })?;
            order.insert(line.to_string(), count);
            count += 1;
        }
        let matcher = builder
            .build()
            .map_err(|err| user_error(format!("{}: {err}", file.display())))?;
        Ok(CfIgnore {
            matcher,
            order,
            defaults_from: defaults_from.unwrap_or_default(),
        })
    }

    /// The pattern that decides about `relative` (its position, and whether it leaves it out):
    /// the last one in the file that matches the path or a folder above it.
    fn decision(&self, relative: &Path, is_dir: bool) -> Option<(usize, bool)> {
        let mut best: Option<(usize, bool)> = None;
        let mut path = Some(relative);
        let mut dir = is_dir;
        while let Some(current) = path.filter(|p| !p.as_os_str().is_empty()) {
            let found = match self.matcher.matched(current, dir) {
                Match::None => None,
                Match::Ignore(glob) => Some((glob.original(), true)),
                Match::Whitelist(glob) => Some((glob.original(), false)),
            };
            if let Some((original, ignored)) = found {
                let at = self.order.get(original).copied().unwrap_or_default();
                if best.is_none_or(|(best_at, _)| at > best_at) {
                    best = Some((at, ignored));
                }
            }
            path = current.parent();
            dir = true;
        }
        best
    }

    fn ignores(&self, relative: &Path, is_dir: bool) -> bool {
        self.decision(relative, is_dir)
            .is_some_and(|(_, ignored)| ignored)
    }

    /// Whether nothing inside the folder `relative` can be brought back: a default left it out
    /// (nothing comes after the defaults), or no line of the file starts with `!`.
    fn prunes(&self, relative: &Path) -> bool {
        self.matcher.num_whitelists() == 0
            || self
                .decision(relative, true)
                .is_some_and(|(at, ignored)| ignored && at >= self.defaults_from)
    }
}

/// Nothing to stage into in a dry run; the commands show where it would be.
pub fn staging_dir_placeholder(local: &Path) -> PathBuf {
    super::layout::artifacts_dir(local).join(".staging-dry-run")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn application(yaml: &str) -> Application {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn buildpacks_from_the_manifest_or_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let with = |bp: &str| buildpack(&application(&format!("name: a\nbuildpacks: [{bp}]\n")), d);
        assert_eq!(with("python_buildpack").unwrap(), Buildpack::Python);
        assert_eq!(
            with("https://github.com/cloudfoundry/python-buildpack.git").unwrap(),
            Buildpack::Python
        );
        assert_eq!(with("binary_buildpack").unwrap(), Buildpack::Binary);
        let err = with("ruby_buildpack").unwrap_err().to_string();
        assert!(err.contains("no buildpack `ruby_buildpack`"), "{err}");
        assert!(err.contains("python_buildpack"), "{err}");
        assert!(buildpack(&application("name: a\n"), d).is_err());
        assert_eq!(
            buildpack(&application("name: a\ncommand: ./run\n"), d).unwrap(),
            Buildpack::Binary
        );
        std::fs::write(d.join("Cargo.toml"), "[package]\nname = \"a\"\n").unwrap();
        assert_eq!(with("binary_buildpack").unwrap(), Buildpack::Rust);
        assert_eq!(
            buildpack(&application("name: a\n"), d).unwrap(),
            Buildpack::Rust
        );
        assert_eq!(rust_binary::name(None, d).unwrap(), "a");
        assert_eq!(rust_binary::name(Some("./srv --port 1"), d).unwrap(), "srv");
        assert!(rust_binary::name(Some("bin/srv"), d).is_err());
    }

    #[test]
    fn cfignore_and_the_usual_folders_stay_out() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        let f = from.path();
        for path in [
            "app.py",
            "docs/a.md",
            "tests/t.py",
            "src/x.log",
            ".git/HEAD",
            "pkg/__pycache__/m.pyc",
            "keep/tests.txt",
        ] {
            std::fs::create_dir_all(f.join(path).parent().unwrap()).unwrap();
            std::fs::write(f.join(path), "x").unwrap();
        }
        std::fs::write(f.join(".cfignore"), "# comment\n/docs\ntests/\n*.log\n").unwrap();
        copy_app(f, to.path(), &[]).unwrap();
        let mut copied = Vec::new();
        collect(to.path(), to.path(), &mut copied);
        copied.sort();
        assert_eq!(copied, ["app.py", "keep/tests.txt"]);
    }

    fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                collect(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }

    /// What `copy_app` copies of `files` with this `.cfignore`, sorted.
    fn copied(files: &[&str], cfignore: &str) -> Vec<String> {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        for path in files {
            let path = from.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        std::fs::write(from.path().join(".cfignore"), cfignore).unwrap();
        copy_app(from.path(), to.path(), &[]).unwrap();
        let mut copied = Vec::new();
        collect(to.path(), to.path(), &mut copied);
        copied.sort();
        copied
    }

    #[test]
    fn cfignore_negation_brings_files_back() {
        let files = ["a.log", "keep.log", "logs/x.log", "logs/keep.log", "app.py"];
        assert_eq!(
            copied(&files, "*.log\n!keep.log\n"),
            ["app.py", "keep.log", "logs/keep.log"]
        );
        // A later line wins over an earlier `!`, as in git.
        assert_eq!(copied(&files, "!keep.log\n*.log\n"), ["app.py"]);
        // A file inside a folder left out comes back when a later line names it, as with the
        // cf CLI, which asks about every path.
        assert_eq!(
            copied(
                &["build/out.bin", "build/tmp/t", "src/main.py"],
                "build/\n!build/out.bin\n"
            ),
            ["build/out.bin", "src/main.py"]
        );
        // No `!` line brings back what the cf CLI always leaves out.
        assert_eq!(
            copied(
                &[".git/HEAD", "sub/manifest.yml", "app.py"],
                "!HEAD\n!manifest.yml\n"
            ),
            ["app.py"]
        );
    }

    #[test]
    fn cfignore_folders_anchors_and_double_stars() {
        let files = [
            "docs/a.md",
            "src/docs/b.md",
            "tests/t.py",
            "src/tests",
            "a/b/c/deep.tmp",
            "top.tmp",
            "x/cache/1",
            "x/y/cache/2",
            "keep.txt",
        ];
        // `/docs` only at the root; `tests/` only folders (src/tests is a file); `**` any depth.
        assert_eq!(
            copied(&files, "/docs\ntests/\na/**/*.tmp\n**/cache\n"),
            ["keep.txt", "src/docs/b.md", "src/tests", "top.tmp"]
        );
        // A pattern with a slash in the middle is anchored at the app's root.
        assert_eq!(
            copied(&["docs/a.md", "src/docs/a.md"], "docs/a.md\n"),
            ["src/docs/a.md"]
        );
    }

    #[test]
    fn a_cfignore_line_that_is_no_pattern_is_an_error_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let err = CfIgnore::parse(dir.path(), "ok\n[z-a]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(".cfignore:2: `[z-a]`"), "{err}");
    }

    #[test]
    fn pip_scripts_find_python_on_path() {
        let venv = tempfile::tempdir().unwrap();
        let bin = venv.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let abs = bin.display();
        std::fs::write(bin.join("tool"), format!("#!{abs}/python\nimport x\n")).unwrap();
        std::fs::write(
            bin.join("long"),
            format!("#!/bin/sh\n'''exec' \"{abs}/python\" \"$0\" \"$@\"\n' '''\n"),
        )
        .unwrap();
        std::fs::write(bin.join("activate"), format!("VIRTUAL_ENV={abs}\n")).unwrap();
        std::fs::write(
            venv.path().join("pyvenv.cfg"),
            format!("home = /usr/bin\ncommand = /usr/bin/python3 -m venv {abs}\n"),
        )
        .unwrap();
        make_venv_relocatable(
            &Exec::for_tests(venv.path()),
            venv.path(),
            &venv.path().join("app"),
        )
        .unwrap();
        assert!(!bin.join("activate").exists());
        assert_eq!(
            std::fs::read_to_string(venv.path().join("pyvenv.cfg")).unwrap(),
            "home = /usr/bin\n"
        );
        assert_eq!(
            std::fs::read_to_string(bin.join("tool")).unwrap(),
            "#!/usr/bin/env python\nimport x\n"
        );
        assert!(std::fs::read_to_string(bin.join("long"))
            .unwrap()
            .contains("'''exec' \"python\" \"$0\""));
    }
}
