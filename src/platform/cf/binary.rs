//! Rust apps on Cloud Foundry: `binary_buildpack` runs an executable it is given and builds
//! nothing, so cdflow builds it. An app whose manifest names `binary_buildpack` and that has a
//! Cargo.toml is built with `cargo build --release` for the foundation's stack, and pushed as a
//! folder holding the binary and a `Procfile` with its start command (`cf push -p FOLDER`),
//! not as its sources.
//!
//! The binary must run on the stack: cflinuxfs4 is Ubuntu 22.04, whose glibc is 2.35, and a
//! binary linked on a newer system may need newer glibc symbols and fail to start there. So
//! the build is static (the musl target) when that target is installed; otherwise the glibc
//! versions the binary needs are read from its ELF `.gnu.version_r` section and a binary that
//! needs more than the stack has is refused before anything is pushed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use object::elf;
use object::read::elf::FileHeader;
use object::Endianness;
use xshell::cmd;

use crate::app_manifest::{Application, Resolved};
use crate::error::user_error;
use crate::exec::Exec;
use crate::platform::rust_binary;
use crate::platform::Release;
use crate::state::State;

/// The target of a static build that runs on every cf Linux stack.
pub const MUSL: &str = "x86_64-unknown-linux-musl";

/// The stack a manifest that names none gets (Cloud Foundry's default since cflinuxfs3's end).
const DEFAULT_STACK: &str = "cflinuxfs4";

/// The glibc of each cf Linux stack: the newest symbol version a binary may need there.
const STACK_GLIBC: [(&str, Glibc); 2] = [
    ("cflinuxfs4", Glibc(2, 35)), // Ubuntu 22.04
    ("cflinuxfs3", Glibc(2, 27)), // Ubuntu 18.04
];

/// A glibc version, as its symbol versions name it (`GLIBC_2.35` is `Glibc(2, 35)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Glibc(pub u32, pub u32);

impl std::fmt::Display for Glibc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl Glibc {
    /// `GLIBC_2.35` (or `GLIBC_2.2.5`, read as 2.2); `None` for any other version name.
    fn parse(name: &str) -> Option<Glibc> {
        let mut parts = name.strip_prefix("GLIBC_")?.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Glibc(major, minor))
    }
}

/// Whether `application`, staged from `dir`, is a Rust app for `binary_buildpack`.
pub fn is_rust_binary(application: &Application, dir: &Path) -> bool {
    let named = application.buildpacks();
    dir.join("Cargo.toml").is_file()
        && matches!(named.as_slice(), [one] if is_binary_buildpack(one))
}

/// `binary_buildpack`, by name or as the last part of its git URL.
fn is_binary_buildpack(name: &str) -> bool {
    let last = name
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(name);
    let last = last.trim_end_matches(".git").to_ascii_lowercase();
    matches!(last.as_str(), "binary_buildpack" | "binary-buildpack")
}

/// Builds `application`'s binary for its stack and lays out the folder that `cf push -p` takes:
/// the binary (executable), a `Procfile` with the start command, and the files the command
/// names. Returns the folder; in a dry run only the build is shown.
pub fn stage(
    exec: &Exec,
    state: &State,
    release: &Release,
    application: &Application,
    env: &str,
) -> Result<PathBuf> {
    // Absolute, so that what is echoed does not depend on the current folder.
    let dir = match release.dir.as_os_str().is_empty() {
        true => Path::new("."),
        false => release.dir,
    };
    let dir = std::path::absolute(dir)?;
    let binary = rust_binary::name(application.command.as_deref(), &dir)?;
    let stack = stack_of(release.manifest, &application.name);
    let command = application
        .command
        .clone()
        .unwrap_or_else(|| format!("./{binary}"));
    let target = state.cargo_target(release.app);
    let built = build(exec, &dir, &target, &binary, application)?;
    let folder = state.root().join("cf-push").join(env);
    exec.for_real(|| {
        check_runs_on(&built, &stack)?;
        lay_out(&dir, &folder, &built, &binary, &command)
    })?;
    Ok(folder)
}

/// `cargo build --release`, static with the musl target when it is installed; returns the
/// binary it makes.
fn build(
    exec: &Exec,
    dir: &Path,
    target: &Path,
    binary: &str,
    application: &Application,
) -> Result<PathBuf> {
    let musl = musl_installed(exec, dir);
    let sh = exec.sh();
    let _in_app = sh.push_dir(dir);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let locked: &[&str] = match dir.join("Cargo.lock").is_file() {
        true => &["--locked"],
        false => &[],
    };
    let target_args: &[&str] = match musl {
        true => &["--target", MUSL],
        false => &[],
    };
    let target_text = target.display().to_string();
    exec.run_with_env(
        cmd!(
            sh,
            "{cargo} build --release {locked...} --bin {binary} {target_args...}"
        ),
        &[("CARGO_TARGET_DIR", &target_text)],
    )
    .with_context(|| format!("building `{}` for cf failed", application.name))?;
    let out = match musl {
        true => target.join(MUSL).join("release"),
        false => target.join("release"),
    };
    Ok(out.join(binary))
}

/// Whether the musl target is installed for the toolchain that builds the app in `dir` (its
/// own rust-toolchain.toml decides); without rustup, it is not.
fn musl_installed(exec: &Exec, dir: &Path) -> bool {
    let sh = exec.sh();
    let _in_app = sh.push_dir(dir);
    exec.query(cmd!(sh, "rustup target list --installed"))
        .is_ok_and(|installed| installed.lines().any(|line| line.trim() == MUSL))
}

/// A warning for before the run, once: without the musl target, the binary will be linked
/// against this machine's glibc, and when that is newer than the stack's the binary may need
/// symbols the stack lacks, which only the build can tell (the push then refuses it).
pub fn preflight_warning(
    exec: &Exec,
    application: &Application,
    manifest: &Resolved,
    dir: &Path,
) -> Option<String> {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !is_rust_binary(application, dir) || WARNED.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let stack = stack_of(manifest, &application.name);
    let has = STACK_GLIBC
        .iter()
        .find(|(name, _)| *name == stack)
        .map(|(_, g)| *g);
    let here = this_glibc()?;
    if has.is_some_and(|has| here <= has) || musl_installed(exec, dir) {
        return None;
    }
    WARNED.store(true, std::sync::atomic::Ordering::Relaxed);
    let has = has.map_or("an unknown glibc".to_string(), |has| format!("glibc {has}"));
    Some(format!(
        "`{}` is built for cf with this machine's glibc {here}, and the stack {stack} has \
         {has}: if the binary needs newer symbols, its push will be refused. `rustup target \
         add {MUSL}` builds it static, to run on any stack",
        application.name
    ))
}

/// The glibc cdflow runs with, which cargo links a build on this machine against.
#[cfg(target_env = "gnu")]
fn this_glibc() -> Option<Glibc> {
    // SAFETY: gnu_get_libc_version returns a static, NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    Glibc::parse(&format!("GLIBC_{}", version.to_str().ok()?))
}

#[cfg(not(target_env = "gnu"))]
fn this_glibc() -> Option<Glibc> {
    None
}

/// The stack the manifest gives the application, else cf's default.
fn stack_of(manifest: &Resolved, app: &str) -> String {
    let parsed: serde_yaml::Value = serde_yaml::from_str(&manifest.text).unwrap_or_default();
    parsed
        .get("applications")
        .and_then(|all| all.as_sequence())
        .into_iter()
        .flatten()
        .find(|a| a.get("name").and_then(|n| n.as_str()) == Some(app))
        .and_then(|a| a.get("stack"))
        .and_then(|stack| stack.as_str())
        .unwrap_or(DEFAULT_STACK)
        .to_string()
}

/// The folder `cf push -p` uploads, made afresh: the binary, executable; a `Procfile` whose
/// `web` process is the start command (the binary buildpack's own way to be told it, for a
/// manifest with no `command`); and the files of the app that the command names.
fn lay_out(dir: &Path, folder: &Path, built: &Path, binary: &str, command: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if folder.exists() {
        std::fs::remove_dir_all(folder)
            .with_context(|| format!("could not remove {}", folder.display()))?;
    }
    std::fs::create_dir_all(folder)
        .with_context(|| format!("could not create {}", folder.display()))?;
    let copied = folder.join(binary);
    std::fs::copy(built, &copied).with_context(|| {
        format!(
            "cargo built no {}: the manifest's `command` must run the binary `./{binary}`",
            built.display()
        )
    })?;
    std::fs::set_permissions(&copied, std::fs::Permissions::from_mode(0o755))?;
    let procfile = folder.join("Procfile");
    std::fs::write(&procfile, format!("web: {command}\n"))?;
    std::fs::set_permissions(&procfile, std::fs::Permissions::from_mode(0o644))?;
    for word in shlex::split(command).unwrap_or_default().iter().skip(1) {
        // `--config=conf/app.toml` names a file as much as `conf/app.toml` does.
        let value = word.rsplit('=').next().unwrap_or(word);
        let relative = Path::new(value.strip_prefix("./").unwrap_or(value));
        let inside = relative.is_relative()
            && relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        let source = dir.join(relative);
        if !inside || value.is_empty() || !source.exists() {
            continue;
        }
        copy_tree(&source, &folder.join(relative))?;
    }
    Ok(())
}

/// Copies a file, or a folder and everything in it, keeping permissions.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("could not copy {} to {}", from.display(), to.display()))
}

/// Refuses a binary that would not start on `stack`: one not for x86-64 Linux, or one that
/// needs a newer glibc than the stack's.
pub fn check_runs_on(binary: &Path, stack: &str) -> Result<()> {
    let data =
        std::fs::read(binary).with_context(|| format!("could not read {}", binary.display()))?;
    let fix = format!(
        "build it static instead: `rustup target add {MUSL}` (cdflow then builds with \
         `--target {MUSL}`)"
    );
    let needs = glibc_needed(&data).map_err(|why| {
        user_error(format!(
            "{} cannot run on the cf stack {stack}: {why}; {fix}",
            binary.display()
        ))
    })?;
    let Some(needs) = needs else {
        return Ok(()); // Static: it needs no glibc at all.
    };
    let Some((_, has)) = STACK_GLIBC.iter().find(|(name, _)| *name == stack) else {
        return Err(user_error(format!(
            "{} needs glibc {needs}, and cdflow does not know the glibc of the stack `{stack}` \
             (it knows {}); {fix}",
            binary.display(),
            STACK_GLIBC.map(|(name, _)| name).join(", ")
        )));
    };
    if needs > *has {
        return Err(user_error(format!(
            "{} needs glibc {needs} (it was linked against this machine's), but the cf stack \
             {stack} has glibc {has}: it would not start there; {fix}",
            binary.display()
        )));
    }
    Ok(())
}

/// The newest glibc symbol version an x86-64 ELF executable needs (from its `.gnu.version_r`
/// section), or `None` when it needs none (a static binary). An error says why the file can
/// run on no cf stack: not ELF, or not for x86-64.
pub fn glibc_needed(data: &[u8]) -> std::result::Result<Option<Glibc>, String> {
    let header = elf::FileHeader64::<Endianness>::parse(data)
        .map_err(|_| "it is not a 64-bit ELF executable".to_string())?;
    let endian = header
        .endian()
        .map_err(|err| format!("its ELF header is unreadable ({err})"))?;
    if header.e_machine(endian) != elf::EM_X86_64 {
        return Err(format!(
            "it is built for another processor (ELF machine {}), and cf stacks are x86-64",
            header.e_machine(endian)
        ));
    }
    let unreadable = |err: object::read::Error| format!("its ELF sections are unreadable ({err})");
    let sections = header.sections(endian, data).map_err(unreadable)?;
    let Some((mut needs, link)) = sections.gnu_verneed(endian, data).map_err(unreadable)? else {
        return Ok(None);
    };
    let strings = sections.strings(endian, data, link).map_err(unreadable)?;
    let mut newest = None;
    while let Some((_file, mut versions)) = needs.next().map_err(unreadable)? {
        while let Some(version) = versions.next().map_err(unreadable)? {
            let name = version.name(endian, strings).map_err(unreadable)?;
            let found = Glibc::parse(&String::from_utf8_lossy(name));
            newest = newest.max(found);
        }
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real executable: this test binary, linked against this machine's glibc.
    fn this_binary() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    /// Replaces every occurrence of `from` in `data` by `to`, of the same length.
    fn patched(data: &[u8], from: &str, to: &str) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let mut out = data.to_vec();
        let mut found = 0;
        let mut at = 0;
        while let Some(i) = out[at..]
            .windows(from.len())
            .position(|w| w == from.as_bytes())
        {
            out[at + i..at + i + to.len()].copy_from_slice(to.as_bytes());
            at += i + to.len();
            found += 1;
        }
        assert!(found > 0, "{from} is not in the binary");
        out
    }

    /// A minimal static x86-64 ELF executable: a header and no sections, so no version needs.
    fn static_elf() -> Vec<u8> {
        let mut data = vec![0u8; 64];
        data[..4].copy_from_slice(b"\x7fELF");
        data[4] = 2; // 64-bit
        data[5] = 1; // little-endian
        data[6] = 1; // version
        data[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        data[18..20].copy_from_slice(&elf::EM_X86_64.0.to_le_bytes());
        data[20..24].copy_from_slice(&1u32.to_le_bytes());
        data[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        data
    }

    #[test]
    fn glibc_versions_are_ordered_as_numbers() {
        assert_eq!(Glibc::parse("GLIBC_2.35"), Some(Glibc(2, 35)));
        assert_eq!(Glibc::parse("GLIBC_2.2.5"), Some(Glibc(2, 2)));
        assert_eq!(Glibc::parse("GCC_3.0"), None);
        assert_eq!(Glibc::parse("GLIBC_PRIVATE"), None);
        assert!(Glibc(2, 9) < Glibc(2, 35));
    }

    #[test]
    fn a_real_binary_needs_the_glibc_its_version_section_names() {
        let data = this_binary();
        let needs = glibc_needed(&data).unwrap().expect("linked against glibc");
        // Every glibc-linked Rust binary needs at least GLIBC_2.2.5 (x86-64's first).
        assert!(needs >= Glibc(2, 2), "{needs}");
        let name = format!("GLIBC_{needs}");
        assert!(
            data.windows(name.len()).any(|w| w == name.as_bytes()),
            "{name} is named in the binary"
        );
        // Rewritten to need a glibc from the future, the same file is refused.
        let future = format!("GLIBC_9.{}", "9".repeat(name.len() - 8));
        let newer = patched(&data, &name, &future);
        assert_eq!(glibc_needed(&newer).unwrap().map(|g| g.0), Some(9));
    }

    #[test]
    fn a_binary_that_needs_a_newer_glibc_than_the_stack_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let data = this_binary();
        let needs = glibc_needed(&data).unwrap().unwrap();
        let name = format!("GLIBC_{needs}");
        // The same length as the name it replaces: 2.36 (Debian 12's glibc) or 2.99.
        let newer = match name.len() {
            10 => "GLIBC_2.36".to_string(),
            len => format!("GLIBC_2.{}", "9".repeat(len - 8)),
        };
        let path = dir.path().join("app");
        std::fs::write(&path, patched(&data, &name, &newer)).unwrap();
        let err = check_runs_on(&path, "cflinuxfs4").unwrap_err().to_string();
        assert!(
            err.contains(&format!("needs glibc {}", &newer[6..])),
            "{err}"
        );
        assert!(err.contains("cflinuxfs4 has glibc 2.35"), "{err}");
        assert!(
            err.contains("rustup target add x86_64-unknown-linux-musl"),
            "{err}"
        );
    }

    #[test]
    fn a_binary_within_the_stacks_glibc_passes() {
        let dir = tempfile::tempdir().unwrap();
        let data = this_binary();
        let needs = glibc_needed(&data).unwrap().unwrap();
        let path = dir.path().join("app");
        // What this machine linked, unless it needs more than 2.35 (then rewritten to 2.35).
        let data = match needs > Glibc(2, 35) {
            true => patched(&data, &format!("GLIBC_{needs}"), "GLIBC_2.35"),
            false => data,
        };
        std::fs::write(&path, data).unwrap();
        check_runs_on(&path, "cflinuxfs4").unwrap();
        // The older stack refuses what needs more than its 2.27 (every Rust binary since 2.28).
        let err = check_runs_on(&path, "cflinuxfs3").unwrap_err().to_string();
        assert!(err.contains("cflinuxfs3 has glibc 2.27"), "{err}");
    }

    #[test]
    fn a_static_binary_passes_and_other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app");
        std::fs::write(&path, static_elf()).unwrap();
        assert_eq!(glibc_needed(&static_elf()).unwrap(), None);
        check_runs_on(&path, "cflinuxfs4").unwrap();
        check_runs_on(&path, "some-custom-stack").unwrap();

        let mut arm = static_elf();
        arm[18..20].copy_from_slice(&elf::EM_AARCH64.0.to_le_bytes());
        std::fs::write(&path, arm).unwrap();
        let err = check_runs_on(&path, "cflinuxfs4").unwrap_err().to_string();
        assert!(err.contains("another processor"), "{err}");

        std::fs::write(&path, "#!/bin/sh\necho hi\n").unwrap();
        let err = check_runs_on(&path, "cflinuxfs4").unwrap_err().to_string();
        assert!(err.contains("not a 64-bit ELF executable"), "{err}");
        assert!(err.contains("rustup target add"), "{err}");
    }
}
