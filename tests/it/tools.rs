//! Tools that some tests drive and that a fresh machine lacks, provisioned by the tests
//! themselves, once, in a cached place under `target/`, so that `cargo test --workspace` passes
//! after a clone with nothing installed by hand (the README's promise).
//!
//! Today that is tox, which runs the test tiers of services made from the python-falcon
//! template. A tox already on PATH is used as it is; otherwise a virtual environment with tox is
//! made under the target folder on first use and reused by every later run.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Where the provisioned tools live: beside the other test-only folders in the target folder.
fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("tools")
}

/// A PATH under which `tox` runs: the machine's own when it has tox, else the machine's with the
/// provisioned virtual environment in front. Panics with the fix when tox cannot be had, so that
/// a test fails (never skips) and says what to do.
pub fn path_with_tox() -> OsString {
    static PATH: OnceLock<Result<OsString, String>> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        let machine = std::env::var_os("PATH").unwrap_or_default();
        if which::which_in("tox", Some(&machine), "/").is_ok() {
            return Ok(machine);
        }
        let venv = provision_tox(&cache().join("tox-venv"), &machine)?;
        let mut dirs = vec![venv.join("bin")];
        dirs.extend(std::env::split_paths(&machine));
        std::env::join_paths(dirs).map_err(|err| err.to_string())
    });
    match path {
        Ok(path) => path.clone(),
        Err(message) => panic!("{message}"),
    }
}

/// A virtual environment at `venv` with tox installed, made with the `python3` found on `path`
/// unless one is there already. Every failure is a message that names the command to fix it.
pub fn provision_tox(venv: &Path, path: &OsString) -> Result<PathBuf, String> {
    let ready = venv.join(".cdflow-ready");
    let parent = venv.parent().expect("the venv has a parent folder");
    std::fs::create_dir_all(parent).map_err(|err| format!("{}: {err}", parent.display()))?;
    // Test binaries and cargo runs may provision side by side: one makes it, the others wait.
    let _lock = FileLock::take(&venv.with_extension("lock"))?;
    if ready.is_file() {
        return Ok(venv.to_path_buf());
    }
    let python = which::which_in("python3", Some(path), "/").map_err(|_| {
        "tox is not installed and python3, which the tests need to provision it, is not on \
         PATH: install Python 3 with its venv module (Debian: `apt-get install python3 \
         python3-venv`), or install tox yourself (`python3 -m pip install tox`)"
            .to_string()
    })?;
    // One line to say what happens and where, on the terminal even though libtest captures
    // what tests print: a first run takes a while longer, and the reason should be visible.
    let _ = writeln!(
        std::io::stderr(),
        "tests: tox is not on PATH; provisioning it once in {} (later runs reuse it)",
        venv.display()
    );
    let _ = std::fs::remove_dir_all(venv);
    run(
        Command::new(&python).args(["-m", "venv"]).arg(venv),
        "python3 cannot make a virtual environment: install its venv module (Debian: \
         `apt-get install python3-venv`)",
    )?;
    let pip = venv.join("bin/python");
    run(
        Command::new(&pip).args(["-m", "pip", "install", "--quiet", "tox"]),
        &format!(
            "could not install tox into {} (is the package index reachable?): run `{} -m pip \
             install tox`, or install tox on PATH (`python3 -m pip install tox`)",
            venv.display(),
            pip.display()
        ),
    )?;
    std::fs::write(&ready, "").map_err(|err| format!("{}: {err}", ready.display()))?;
    Ok(venv.to_path_buf())
}

/// Runs `command`; a failure is `fix` with the end of what the command printed.
fn run(command: &mut Command, fix: &str) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("{fix} ({err})"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!("{fix}\n{}", tail.join("\n")))
}

/// An exclusive flock(2) on a file, released when dropped (or when the process dies).
struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    fn take(path: &Path) -> Result<FileLock, String> {
        let file =
            std::fs::File::create(path).map_err(|err| format!("{}: {err}", path.display()))?;
        // SAFETY: flock(2) on a descriptor this function owns; it touches no memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "{}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(FileLock { _file: file })
    }
}

#[test]
fn a_machine_without_python3_gets_the_command_that_fixes_it() {
    let dir = tempfile::tempdir().unwrap();
    // A PATH with git but no python3: the one thing hidden is what the provisioning needs.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let git = which::which("git").unwrap();
    std::os::unix::fs::symlink(git, bin.join("git")).unwrap();
    let error = provision_tox(&dir.path().join("venv"), &bin.clone().into_os_string())
        .expect_err("no python3 on this PATH");
    assert!(
        error.contains("python3") && error.contains("apt-get install python3 python3-venv"),
        "{error}"
    );
    assert!(
        !dir.path().join("venv").exists(),
        "nothing made on a refusal"
    );
}
