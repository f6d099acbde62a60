//! What Cloud Foundry's python buildpack reads from a Python app, read the same way here:
//! which file the dependencies come from, and which Python runs them.
//!
//! The buildpack (github.com/cloudfoundry/python-buildpack, `src/python/supply/supply.go`)
//! installs from the first of:
//!
//! 1. `requirements.txt`, with pip;
//! 2. `Pipfile` with `Pipfile.lock`: the lock's `default` section, as requirements, with pip;
//! 3. `Pipfile` alone: locked with pipenv first;
//! 4. `setup.py`: `-e .`, with pip.
//!
//! With a `vendor/` folder, pip installs from it alone (`--no-index --find-links`). The Python
//! version comes from `runtime.txt` (`python-3.11.x`, `python-3.11.7`), else from
//! `Pipfile.lock`'s `_meta.requires.python_version`. It reads neither `pyproject.toml` nor
//! `.python-version`: an app that has only those would get no dependencies on Cloud Foundry, so
//! it is refused here, before anything is bumped or pushed. An `environment.yml` (which the
//! buildpack installs with conda, instead of everything else) is refused too.
//!
//! Where the buildpack installs the Python a version names, the local platform finds it on
//! PATH: `python3.X`, else `python3` when its version matches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Result;
use semver::{Version, VersionReq};
use serde::Deserialize;
use xshell::cmd;

use crate::error::user_error;
use crate::exec::Exec;

/// Where an app's dependencies come from, in the buildpack's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Requirements,
    PipfileLock,
    /// A Pipfile with no lock, which pipenv locks first.
    Pipfile,
    SetupPy,
    /// Nothing to install: an app of the standard library alone.
    Nothing,
}

impl Source {
    pub fn detect(dir: &Path) -> Source {
        let has = |name: &str| dir.join(name).is_file();
        if has("requirements.txt") {
            Source::Requirements
        } else if has("Pipfile") && has("Pipfile.lock") {
            Source::PipfileLock
        } else if has("Pipfile") {
            Source::Pipfile
        } else if has("setup.py") {
            Source::SetupPy
        } else {
            Source::Nothing
        }
    }

    /// What staging says it installs from.
    pub fn describe(self) -> &'static str {
        match self {
            Source::Requirements => "installing from requirements.txt",
            Source::PipfileLock => "installing from Pipfile.lock",
            Source::Pipfile => "installing from Pipfile, locked with pipenv (no Pipfile.lock)",
            Source::SetupPy => "installing from setup.py (-e .)",
            Source::Nothing => {
                "no requirements.txt, Pipfile or setup.py: nothing to install, like the buildpack"
            }
        }
    }
}

/// A Python version the app asks for, and the file that asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// As written, for messages: `python-3.8.x`.
    pub spec: String,
    /// `runtime.txt`, or `Pipfile.lock`'s python_version.
    pub from: String,
    req: VersionReq,
    /// `(3, 8)` when the spec names a minor version: the `python3.8` to look for.
    minor: Option<(u64, u64)>,
}

impl Wanted {
    pub fn matches(&self, version: &Version) -> bool {
        self.req.matches(version)
    }
}

/// Reads a Python version as the buildpack does: `python-` in front is dropped, and the rest is
/// a version whose missing or `x` parts match anything (`3.8.x`, `3.8`, `3.11.7`), or a range
/// (`>=3.9, <3.12`).
pub fn parse_version_spec(text: &str) -> Result<(VersionReq, Option<(u64, u64)>), String> {
    let spec = text.trim().trim_start_matches("python-").trim();
    let wildcard = |part: &str| matches!(part, "x" | "X" | "*");
    let parts: Vec<&str> = spec.split('.').collect();
    let numbers: Option<Vec<Option<u64>>> = parts
        .iter()
        .map(|part| match part.parse::<u64>() {
            Ok(n) => Some(Some(n)),
            Err(_) if wildcard(part) => Some(None),
            Err(_) => None,
        })
        .collect();
    if let Some(numbers) = numbers.filter(|n| (1..=3).contains(&n.len())) {
        // Numbers up to the first wildcard; `3.x.1` is not a version.
        let known: Vec<u64> = numbers.iter().map_while(|n| *n).collect();
        if numbers[known.len()..].iter().any(Option::is_some) || known.is_empty() {
            return Err(format!("`{}` is not a Python version", text.trim()));
        }
        let exact = known
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".");
        // semver's `=3.8` is every 3.8.z, and `=3.8.1` that one alone.
        let req = VersionReq::parse(&format!("={exact}")).map_err(|e| e.to_string())?;
        let minor = (known.len() >= 2).then(|| (known[0], known[1]));
        return Ok((req, minor));
    }
    // A range, with spaces or commas between its parts: `>=3.9 <3.12`.
    let joined = spec
        .split([' ', ','])
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    VersionReq::parse(&joined)
        .map(|req| (req, None))
        .map_err(|_| format!("`{}` is not a Python version", text.trim()))
}

/// `Pipfile.lock`, as far as staging reads it.
#[derive(Debug, Default, Deserialize)]
struct Lock {
    #[serde(default, rename = "_meta")]
    meta: LockMeta,
    #[serde(default)]
    default: BTreeMap<String, LockedPackage>,
}

#[derive(Debug, Default, Deserialize)]
struct LockMeta {
    #[serde(default)]
    requires: LockRequires,
    #[serde(default)]
    sources: Vec<LockSource>,
}

#[derive(Debug, Default, Deserialize)]
struct LockRequires {
    python_version: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LockSource {
    url: String,
}

#[derive(Debug, Default, Deserialize)]
struct LockedPackage {
    #[serde(default)]
    version: String,
}

fn read_lock(path: &Path) -> Result<Lock> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| user_error(format!("could not read {}: {err}", path.display())))?;
    serde_json::from_str(&text).map_err(|err| {
        user_error(format!(
            "{}:{}: {err}: Pipfile.lock is JSON as pipenv writes it; run `pipenv lock` to write \
             it afresh",
            path.display(),
            err.line()
        ))
    })
}

/// The lock's Python version as the buildpack turns it into a runtime.txt line:
/// `3.10` is `python-3.10.x`, `3.10.4` is `python-3.10.4`.
fn lock_python_spec(lock: &Lock) -> Option<String> {
    let version = lock.meta.requires.python_version.as_deref()?.trim();
    if version.is_empty() {
        return None;
    }
    Some(match version.split('.').count() {
        0..=2 => format!("python-{version}.x"),
        _ => format!("python-{version}"),
    })
}

/// The lock's `default` section as requirements, as the buildpack writes them: its sources as
/// index URLs (left out when installing from `vendor/` alone, which an index would override),
/// then each package with its version.
fn lock_requirements(lock: &Lock, vendored: bool) -> String {
    let mut out = String::new();
    if !vendored {
        for (i, source) in lock.meta.sources.iter().enumerate() {
            let option = if i == 0 { "-i" } else { "--extra-index-url" };
            out.push_str(&format!("{option} {}\n", source.url));
        }
    }
    for (name, package) in &lock.default {
        out.push_str(&format!("{name}{}\n", package.version));
    }
    out
}

/// The Python version the app asks for, if it asks: runtime.txt, else Pipfile.lock's.
pub fn wanted(dir: &Path) -> Result<Option<Wanted>> {
    let runtime = dir.join("runtime.txt");
    let (spec, from) = if runtime.is_file() {
        let text = std::fs::read_to_string(&runtime)
            .map_err(|err| user_error(format!("could not read {}: {err}", runtime.display())))?;
        (text.trim().to_string(), runtime.display().to_string())
    } else if dir.join("Pipfile.lock").is_file() {
        let path = dir.join("Pipfile.lock");
        let lock = read_lock(&path)?;
        let Some(spec) = lock_python_spec(&lock) else {
            return Ok(None);
        };
        (spec, format!("{}'s python_version", path.display()))
    } else {
        return Ok(None);
    };
    let (req, minor) = parse_version_spec(&spec).map_err(|why| {
        user_error(format!(
            "{from}: {why}: write it as the python buildpack reads it, `python-3.11.x` (any \
             3.11) or `python-3.11.7` (that one)"
        ))
    })?;
    Ok(Some(Wanted {
        spec,
        from,
        req,
        minor,
    }))
}

/// The Python that staging runs, found on PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Python {
    /// What to run: `python3.8`, `python3`.
    pub program: String,
    pub version: Version,
}

/// The names `python3` and `python3.X` on PATH.
fn pythons_on_path() -> Vec<String> {
    let mut names = Vec::new();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let minor = name.strip_prefix("python3.");
            let is_python = name == "python3"
                || minor.is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()));
            if is_python && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// The version a Python on PATH reports, or why it reports none (a pyenv shim of a version that
/// is not selected fails, for one). Asked once per run and folder (a shim answers for the
/// folder's `.python-version`): a shim takes a good part of a second, and both the preflight
/// and staging ask.
fn version_of(exec: &Exec, program: &str) -> Result<Version, String> {
    type Answers = BTreeMap<(PathBuf, String), Result<Version, String>>;
    static ANSWERS: Mutex<Answers> = Mutex::new(BTreeMap::new());
    let key = (exec.dir(), program.to_string());
    if let Some(known) = ANSWERS.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return known.clone();
    }
    let answer = ask_version(exec, program);
    ANSWERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, answer.clone());
    answer
}

fn ask_version(exec: &Exec, program: &str) -> Result<Version, String> {
    let sh = exec.sh();
    let code = "import sys; print('%d.%d.%d' % sys.version_info[:3])";
    let answer = exec.query(cmd!(sh, "{program} -c {code}")).map_err(|err| {
        // What it said, not the command line, which is no news to the reader.
        let text = format!("{err:#}");
        let said = text
            .split_once("): ")
            .map_or(text.as_str(), |(_, said)| said);
        said.lines().next().unwrap_or_default().to_string()
    })?;
    Version::parse(answer.trim()).map_err(|_| format!("`{program}` answered `{answer}`"))
}

/// Picks the Python to stage with: what `wanted` asks for, else `python3`.
pub fn select(exec: &Exec, wanted: Option<&Wanted>) -> Result<Python> {
    let on_path = pythons_on_path();
    let Some(wanted) = wanted else {
        return match version_of(exec, "python3") {
            Ok(version) => Ok(Python {
                program: "python3".into(),
                version,
            }),
            Err(why) => Err(user_error(format!(
                "staging a Python app needs `python3` on PATH, which does not run ({why}): \
                 install Python 3"
            ))),
        };
    };
    // The one named for the version first, then python3, then the others, newest first.
    let mut candidates: Vec<String> = Vec::new();
    if let Some((major, minor)) = wanted.minor {
        candidates.push(format!("python{major}.{minor}"));
    }
    candidates.push("python3".into());
    let mut others: Vec<(u64, String)> = on_path
        .iter()
        .filter_map(|name| Some((name.strip_prefix("python3.")?.parse().ok()?, name.clone())))
        .collect();
    others.sort_by(|a, b| b.cmp(a));
    // Any python3.X may do when the spec names no minor version.
    if wanted.minor.is_none() {
        candidates.extend(others.into_iter().map(|(_, name)| name));
    }
    let mut tried = Vec::new();
    for program in &candidates {
        if !on_path.contains(program) {
            tried.push(format!("{program} is not on PATH"));
            continue;
        }
        match version_of(exec, program) {
            Ok(version) if wanted.matches(&version) => {
                return Ok(Python {
                    program: program.clone(),
                    version,
                })
            }
            Ok(version) => tried.push(format!("{program} is {version}")),
            Err(why) => tried.push(format!("{program} does not run ({why})")),
        }
    }
    let install = match wanted.minor {
        Some((major, minor)) => {
            format!("install Python {major}.{minor} as `python{major}.{minor}`")
        }
        None => format!("install a Python that matches `{}`", wanted.spec),
    };
    Err(user_error(format!(
        "{} asks for Python `{}`, which this machine does not have on PATH ({}): {install} \
         (pyenv, your package manager), or change {} to a Python you have (e.g. `python-{}.x`)",
        wanted.from,
        wanted.spec,
        tried.join("; "),
        if wanted.from.ends_with("runtime.txt") {
            "runtime.txt"
        } else {
            "the Pipfile's [requires] python_version (or add a runtime.txt)"
        },
        host_minor(exec).unwrap_or_else(|| "3.11".into()),
    )))
}

/// `3.11` when `python3` runs and is 3.11: the example a refusal suggests.
fn host_minor(exec: &Exec) -> Option<String> {
    version_of(exec, "python3")
        .ok()
        .map(|v| format!("{}.{}", v.major, v.minor))
}

/// What staging a Python app from `dir` does: where its dependencies come from, with which
/// Python. Refused, naming the file and the fix, when Cloud Foundry's buildpack would not
/// install what the app needs or this machine lacks what it asks for.
#[derive(Debug, Clone)]
pub struct Plan {
    pub source: Source,
    pub python: Python,
    pub wanted: Option<Wanted>,
    /// Installs from `vendor/` alone.
    pub vendored: bool,
}

impl Plan {
    pub fn new(exec: &Exec, dir: &Path) -> Result<Plan> {
        let source = checked_source(dir)?;
        let (wanted, python) = checked_python(exec, dir)?;
        Ok(Plan {
            source,
            python,
            wanted,
            vendored: dir.join("vendor").is_dir(),
        })
    }

    /// What staging says about the Python it picked.
    pub fn describe_python(&self) -> String {
        let Python { program, version } = &self.python;
        match &self.wanted {
            Some(wanted) => format!(
                "python {version} ({program}), as {} asks (`{}`)",
                wanted.from, wanted.spec
            ),
            None => format!(
                "python {version} ({program}): no runtime.txt; Cloud Foundry would use its \
                 buildpack's default version, so name the one you test with in runtime.txt"
            ),
        }
    }
}

/// Where the dependencies come from, or why the buildpack would not install them.
fn checked_source(dir: &Path) -> Result<Source> {
    let source = Source::detect(dir);
    let has = |name: &str| dir.join(name).is_file();
    if has("environment.yml") {
        return Err(user_error(format!(
            "{}: Cloud Foundry's python buildpack installs an environment.yml with conda, and \
             then reads no requirements.txt, Pipfile or setup.py; the local platform does not \
             run conda: list the dependencies in requirements.txt and remove environment.yml",
            dir.join("environment.yml").display()
        )));
    }
    if source == Source::Nothing && has("pyproject.toml") {
        return Err(user_error(format!(
            "{} is the only list of the app's dependencies, and Cloud Foundry's python \
             buildpack does not read pyproject.toml: the app would start without them. Add a \
             requirements.txt (`pip freeze > requirements.txt` in the app's environment, or \
             list the dependencies one a line)",
            dir.join("pyproject.toml").display()
        )));
    }
    if source == Source::Nothing && has("Pipfile.lock") {
        return Err(user_error(format!(
            "{} has no Pipfile beside it, and Cloud Foundry's python buildpack reads the lock \
             only with its Pipfile: commit the Pipfile too",
            dir.join("Pipfile.lock").display()
        )));
    }
    if source == Source::Pipfile && which::which("pipenv").is_err() {
        return Err(user_error(format!(
            "{} has no Pipfile.lock, and locking it needs pipenv, which is not on PATH: run \
             `pipenv lock` and commit Pipfile.lock, or install pipenv (`pip install pipenv`)",
            dir.join("Pipfile").display()
        )));
    }
    Ok(source)
}

/// The Python version asked for, and the Python on PATH that has it.
fn checked_python(exec: &Exec, dir: &Path) -> Result<(Option<Wanted>, Python)> {
    let wanted = wanted(dir)?;
    let python = select(exec, wanted.as_ref())?;
    Ok((wanted, python))
}

/// Problems the preflight reports for a Python app in `dir`: what [`Plan::new`] refuses, all
/// of it at once.
pub fn problems(exec: &Exec, dir: &Path) -> Vec<String> {
    [checked_source(dir).err(), checked_python(exec, dir).err()]
        .into_iter()
        .flatten()
        .map(|err| format!("{err:#}"))
        .collect()
}

/// Files the buildpack does not read, which a reader may think it does.
pub fn warnings(dir: &Path) -> Vec<String> {
    let mut warnings = Vec::new();
    if dir.join(".python-version").is_file() {
        warnings.push(format!(
            "{} is ignored: Cloud Foundry's python buildpack reads the Python version \
             from runtime.txt (e.g. `python-3.11.x`); write it there",
            dir.join(".python-version").display()
        ));
    }
    warnings
}

/// The requirements pip installs: the app's requirements.txt (in `app`, the staged copy), or
/// what staging writes into `scratch` from Pipfile.lock or setup.py. Pipenv locks a Pipfile in
/// the staged copy first. Index URLs are taken out of a vendored app's requirements.txt, as the
/// buildpack does, since pip would otherwise go to the index rather than `vendor/` alone.
pub fn requirements(exec: &Exec, plan: &Plan, app: &Path, scratch: &Path) -> Result<PathBuf> {
    let generated = scratch.join("requirements.txt");
    match plan.source {
        Source::Requirements => {
            let path = app.join("requirements.txt");
            if plan.vendored {
                exec.for_real(|| {
                    let text = std::fs::read_to_string(&path)?;
                    let kept = without_index_urls(&text);
                    if kept != text {
                        exec.save(&path, kept.as_bytes())?;
                    }
                    Ok(())
                })?;
            }
            Ok(path)
        }
        Source::PipfileLock | Source::Pipfile => {
            if plan.source == Source::Pipfile {
                let sh = exec.sh();
                let _in_app = sh.push_dir(app);
                let python = &plan.python.program;
                // In the staged copy, so that the app's own folder is not changed; its virtual
                // environment there is removed below, not left in the droplet.
                exec.run_with_env(
                    cmd!(sh, "pipenv lock --python {python}"),
                    &[("PIPENV_VENV_IN_PROJECT", "1")],
                )?;
                exec.for_real(|| {
                    let _ = std::fs::remove_dir_all(app.join(".venv"));
                    Ok(())
                })?;
            }
            exec.for_real(|| {
                let lock = read_lock(&app.join("Pipfile.lock"))?;
                exec.save(
                    &generated,
                    lock_requirements(&lock, plan.vendored).as_bytes(),
                )
            })?;
            Ok(generated)
        }
        Source::SetupPy => {
            exec.save(&generated, b"-e .\n")?;
            Ok(generated)
        }
        Source::Nothing => Ok(generated),
    }
}

/// A requirements file without its `-i`, `--index-url` and `--extra-index-url` lines.
fn without_index_urls(text: &str) -> String {
    text.lines()
        .filter(|line| {
            let word = line.split_whitespace().next().unwrap_or_default();
            let option = word.split('=').next().unwrap_or_default();
            !matches!(option, "-i" | "--index-url" | "--extra-index-url")
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Installs can name the staged copy of the app, which is not where it runs: the artifact's
/// folder is named after its digest, and a path to the staging folder would change the digest
/// of every staging. An editable install (`-e .`) links to the app: the app and the venv stay
/// side by side in the droplet, so the links become relative to site-packages (which `.pth`
/// files allow), and the finder of a PEP 660 install computes its paths from its own place.
/// `direct_url.json`, a record of the folder or file an install came from (`-e .`,
/// `./vendor/x.whl`), goes. The `RECORD`s keep those files' names without the old hashes.
pub fn relocate_app_paths(exec: &Exec, site: &Path, app: &Path) -> Result<()> {
    let app_text = app.display().to_string();
    // site-packages is venv/lib/python3.X/site-packages, beside droplet/app.
    let relative = "../../../../app";
    let mut changed: Vec<String> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    let mut records: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(site)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if path.is_dir() && name.ends_with(".dist-info") {
            records.push(path.join("RECORD"));
            let direct_url = path.join("direct_url.json");
            let names_app = std::fs::read_to_string(&direct_url)
                .is_ok_and(|text| text.contains(&format!("file://{app_text}")));
            if names_app {
                std::fs::remove_file(&direct_url)?;
                removed.push(format!("{name}/direct_url.json"));
            }
            continue;
        }
        let is_pth = name.ends_with(".pth") || name.ends_with(".egg-link");
        let is_finder = name.starts_with("__editable__") && name.ends_with("_finder.py");
        if !(is_pth || is_finder) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if !text.contains(&app_text) {
            continue;
        }
        let fixed = if is_pth {
            text.lines()
                .map(|line| match line.strip_prefix(&app_text) {
                    Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                        format!("{relative}{rest}\n")
                    }
                    _ => format!("{line}\n"),
                })
                .collect::<String>()
        } else {
            relocate_finder(&text, &app_text, relative)
        };
        exec.save(&path, fixed.as_bytes())?;
        changed.push(name);
    }
    if changed.is_empty() && removed.is_empty() {
        return Ok(());
    }
    for record in records {
        let Ok(text) = std::fs::read_to_string(&record) else {
            continue;
        };
        let fixed: String = text
            .lines()
            .filter_map(|line| {
                let path = line.split(',').next().unwrap_or_default();
                if removed.iter().any(|r| r == path) {
                    None
                } else if changed.iter().any(|c| c == path) {
                    Some(format!("{path},,\n"))
                } else {
                    Some(format!("{line}\n"))
                }
            })
            .collect();
        if fixed != text {
            exec.save(&record, fixed.as_bytes())?;
        }
    }
    Ok(())
}

/// setuptools' editable finder maps module names to absolute paths in `MAPPING` (and
/// `NAMESPACES`); they are written relative, and made absolute again from the finder's own
/// folder at the end of its import, before the `.pth` that imports it installs it.
fn relocate_finder(text: &str, app: &str, relative: &str) -> String {
    let mut out = text.replace(&format!("'{app}"), &format!("'{relative}"));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!(
        "\n# cdflow: the app is beside the venv, wherever the droplet is.\n\
         def _cdflow_here(path, _os=__import__('os')):\n    \
         if not isinstance(path, str) or not path.startswith('{relative}'):\n        \
         return path\n    \
         return _os.path.normpath(_os.path.join(_os.path.dirname(__file__), path))\n\
         MAPPING = {{k: _cdflow_here(v) for k, v in MAPPING.items()}}\n\
         if isinstance(globals().get('NAMESPACES'), dict):\n    \
         NAMESPACES = {{k: [_cdflow_here(p) for p in v] for k, v in NAMESPACES.items()}}\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn runtime_txt_versions_as_the_buildpack_reads_them() {
        let (req, minor) = parse_version_spec("python-3.8.x\n").unwrap();
        assert_eq!(minor, Some((3, 8)));
        assert!(req.matches(&version("3.8.0")) && req.matches(&version("3.8.18")));
        assert!(!req.matches(&version("3.9.0")) && !req.matches(&version("3.11.7")));

        let (req, minor) = parse_version_spec("python-3.11.7").unwrap();
        assert_eq!(minor, Some((3, 11)));
        assert!(req.matches(&version("3.11.7")) && !req.matches(&version("3.11.8")));

        let (req, _) = parse_version_spec("3.10").unwrap();
        assert!(req.matches(&version("3.10.13")) && !req.matches(&version("3.1.0")));

        let (req, minor) = parse_version_spec("python-3.x").unwrap();
        assert_eq!(minor, None);
        assert!(req.matches(&version("3.12.1")) && !req.matches(&version("2.7.18")));

        let (req, _) = parse_version_spec("python->=3.9 <3.12").unwrap();
        assert!(req.matches(&version("3.11.7")) && !req.matches(&version("3.12.0")));

        for bad in ["python-", "python-three", "python-3.x.1", "3.8.1.2", ""] {
            assert!(parse_version_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_lock_gives_the_version_and_the_requirements() {
        let lock: Lock = serde_json::from_str(
            r#"{"_meta": {"requires": {"python_version": "3.10"},
                 "sources": [{"name": "pypi", "url": "https://pypi.org/simple", "verify_ssl": true},
                             {"name": "own", "url": "https://pkgs.example/simple"}]},
                "default": {"flask": {"version": "==2.2.2", "hashes": []},
                            "click": {"version": "==8.1.3", "markers": "python_version >= '3.7'"}},
                "develop": {"pytest": {"version": "==7.0"}}}"#,
        )
        .unwrap();
        assert_eq!(lock_python_spec(&lock).as_deref(), Some("python-3.10.x"));
        assert_eq!(
            lock_requirements(&lock, false),
            "-i https://pypi.org/simple\n--extra-index-url https://pkgs.example/simple\n\
             click==8.1.3\nflask==2.2.2\n"
        );
        assert_eq!(
            lock_requirements(&lock, true),
            "click==8.1.3\nflask==2.2.2\n"
        );
        let full: Lock =
            serde_json::from_str(r#"{"_meta": {"requires": {"python_version": "3.10.4"}}}"#)
                .unwrap();
        assert_eq!(lock_python_spec(&full).as_deref(), Some("python-3.10.4"));
        let none: Lock = serde_json::from_str(r#"{"_meta": {"requires": {}}}"#).unwrap();
        assert_eq!(lock_python_spec(&none), None);
    }

    #[test]
    fn runtime_txt_comes_before_the_lock_and_bad_files_name_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(wanted(d).unwrap(), None);
        std::fs::write(
            d.join("Pipfile.lock"),
            r#"{"_meta": {"requires": {"python_version": "3.9"}}}"#,
        )
        .unwrap();
        let from_lock = wanted(d).unwrap().unwrap();
        assert_eq!(from_lock.spec, "python-3.9.x");
        assert!(from_lock.from.ends_with("Pipfile.lock's python_version"));
        std::fs::write(d.join("runtime.txt"), "python-3.11.x\n").unwrap();
        let from_runtime = wanted(d).unwrap().unwrap();
        assert_eq!(from_runtime.spec, "python-3.11.x");
        assert_eq!(from_runtime.minor, Some((3, 11)));

        std::fs::write(d.join("runtime.txt"), "ruby-3.2\n").unwrap();
        let err = wanted(d).unwrap_err().to_string();
        assert!(
            err.contains("runtime.txt") && err.contains("python-3.11.x"),
            "{err}"
        );
        std::fs::remove_file(d.join("runtime.txt")).unwrap();
        std::fs::write(d.join("Pipfile.lock"), "{\n  \"_meta\": {,\n}").unwrap();
        let err = wanted(d).unwrap_err().to_string();
        assert!(
            err.contains("Pipfile.lock:2:") && err.contains("pipenv lock"),
            "{err}"
        );
    }

    #[test]
    fn sources_in_the_buildpacks_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let touch = |name: &str| std::fs::write(d.join(name), "{}").unwrap();
        assert_eq!(Source::detect(d), Source::Nothing);
        touch("setup.py");
        assert_eq!(Source::detect(d), Source::SetupPy);
        touch("Pipfile");
        assert_eq!(Source::detect(d), Source::Pipfile);
        touch("Pipfile.lock");
        assert_eq!(Source::detect(d), Source::PipfileLock);
        touch("requirements.txt");
        assert_eq!(Source::detect(d), Source::Requirements);
    }

    #[test]
    fn a_pyproject_alone_and_an_unknown_python_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let exec = Exec::for_tests(d);
        std::fs::write(d.join("pyproject.toml"), "[project]\nname = \"a\"\n").unwrap();
        let problems = problems(&exec, d);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("pyproject.toml"), "{problems:?}");
        assert!(problems[0].contains("requirements.txt"), "{problems:?}");

        std::fs::remove_file(d.join("pyproject.toml")).unwrap();
        std::fs::write(d.join("Pipfile.lock"), "{}").unwrap();
        let problems = super::problems(&exec, d);
        assert!(
            problems[0].contains("commit the Pipfile too"),
            "{problems:?}"
        );
        std::fs::remove_file(d.join("Pipfile.lock")).unwrap();
        if which::which("pipenv").is_err() {
            std::fs::write(d.join("Pipfile"), "[packages]\n").unwrap();
            let problems = super::problems(&exec, d);
            assert!(problems[0].contains("pipenv lock"), "{problems:?}");
            assert!(problems[0].contains("install pipenv"), "{problems:?}");
            std::fs::remove_file(d.join("Pipfile")).unwrap();
        }

        std::fs::write(d.join("environment.yml"), "dependencies: [flask]\n").unwrap();
        let problems = super::problems(&exec, d);
        assert!(problems[0].contains("environment.yml") && problems[0].contains("conda"));
        std::fs::remove_file(d.join("environment.yml")).unwrap();

        std::fs::write(d.join("requirements.txt"), "").unwrap();
        std::fs::write(d.join("runtime.txt"), "python-3.4.x").unwrap();
        let problems = super::problems(&exec, d);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("python-3.4.x"), "{problems:?}");
        assert!(problems[0].contains("install Python 3.4"), "{problems:?}");
        assert!(problems[0].contains("change runtime.txt"), "{problems:?}");

        // Both at once, as the preflight reports everything it finds.
        std::fs::remove_file(d.join("requirements.txt")).unwrap();
        std::fs::write(d.join("pyproject.toml"), "[project]\nname = \"a\"\n").unwrap();
        let problems = super::problems(&exec, d);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(Plan::new(&exec, d).is_err());
    }

    #[test]
    fn index_urls_go_from_a_vendored_apps_requirements() {
        assert_eq!(
            without_index_urls("-i https://a\nflask==2\n--index-url=https://b\n--extra-index-url https://c\n./vendor/x.whl\n"),
            "flask==2\n./vendor/x.whl\n"
        );
    }

    #[test]
    fn editable_installs_point_at_the_app_beside_the_venv() {
        let root = tempfile::tempdir().unwrap();
        let app = root.path().join("droplet/app");
        let site = root
            .path()
            .join("droplet/venv/lib/python3.11/site-packages");
        std::fs::create_dir_all(site.join("a-0.1.dist-info")).unwrap();
        std::fs::create_dir_all(&app).unwrap();
        let a = app.display();
        std::fs::write(
            site.join("easy-install.pth"),
            format!("{a}\n{a}/src\n/elsewhere\n"),
        )
        .unwrap();
        std::fs::write(site.join("a.egg-link"), format!("{a}\n.")).unwrap();
        std::fs::write(
            site.join("a-0.1.dist-info/direct_url.json"),
            format!("{{\"dir_info\": {{\"editable\": true}}, \"url\": \"file://{a}\"}}"),
        )
        .unwrap();
        std::fs::write(
            site.join("a-0.1.dist-info/RECORD"),
            "__editable___a_0_1_finder.py,sha256=x,9\na-0.1.dist-info/direct_url.json,sha256=y,7\n\
             a-0.1.dist-info/METADATA,sha256=z,5\n",
        )
        .unwrap();
        std::fs::write(
            site.join("__editable___a_0_1_finder.py"),
            format!(
                "import sys\nMAPPING = {{'greet': '{a}/greet'}}\n\
                 NAMESPACES = {{'ns': ['{a}/ns'], 'empty': []}}\n"
            ),
        )
        .unwrap();
        relocate_app_paths(&Exec::for_tests(root.path()), &site, &app).unwrap();
        assert_eq!(
            std::fs::read_to_string(site.join("easy-install.pth")).unwrap(),
            "../../../../app\n../../../../app/src\n/elsewhere\n"
        );
        assert!(!site.join("a-0.1.dist-info/direct_url.json").exists());
        assert_eq!(
            std::fs::read_to_string(site.join("a-0.1.dist-info/RECORD")).unwrap(),
            "__editable___a_0_1_finder.py,,\na-0.1.dist-info/METADATA,sha256=z,5\n"
        );
        let finder = std::fs::read_to_string(site.join("__editable___a_0_1_finder.py")).unwrap();
        assert!(!finder.contains(&a.to_string()), "{finder}");
        // The finder, run from where it is, finds the app's module where the app is.
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import runpy; m = runpy.run_path('{}'); \
                 print(m['MAPPING']['greet'], m['NAMESPACES']['ns'][0], m['NAMESPACES']['empty'])",
                site.join("__editable___a_0_1_finder.py").display()
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{a}/greet {a}/ns []"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
