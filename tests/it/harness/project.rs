//! Projects in temporary folders with real git and an isolated HOME, and the cdflow binary run
//! in them as a user would run it; every `--json` event it prints checked against the schema.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Project {
    // Held so that the folder lives as long as the project.
    _root: tempfile::TempDir,
    pub dir: PathBuf,
    pub home: PathBuf,
}

/// What a cdflow run printed and how it ended.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn success(&self) -> &Run {
        assert_eq!(self.code, Some(0), "cdflow failed:\n{self}");
        self
    }

    #[track_caller]
    pub fn failure(&self, code: i32) -> &Run {
        assert_eq!(self.code, Some(code), "expected exit code {code}:\n{self}");
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Run {
        assert!(self.stderr.contains(text), "stderr lacks {text:?}:\n{self}");
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Run {
        assert!(self.stdout.contains(text), "stdout lacks {text:?}:\n{self}");
        self
    }

    /// The JSON lines of stdout, parsed (the events of a `--json` run); other lines left out.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Project {
    /// An empty folder, not yet a git repository.
    pub fn empty() -> Project {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("app");
        let home = root.path().join("home");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        Project {
            _root: root,
            dir,
            home,
        }
    }

    /// A git repository holding `files`, committed.
    pub fn git(files: &[(&str, &str)]) -> Project {
        let project = Project::empty();
        project.git_cmd(&["init", "-q", "-b", "main"]);
        for (path, content) in files {
            project.write(path, content);
        }
        project.git_cmd(&["add", "-A"]);
        project.git_cmd(&["commit", "-q", "-m", "first"]);
        project
    }

    /// The example app as a repository of its own, made by scripts/seed-example (as the quick
    /// start makes it).
    pub fn example_app() -> Project {
        let project = Project::empty();
        let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/seed-example");
        std::fs::remove_dir(&project.dir).unwrap();
        let output = project
            .command(&seed)
            .arg(&project.dir)
            .current_dir("/")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        project
    }

    /// A bare repository `origin.git` beside the project, made its `origin`, with `main`
    /// pushed: what a release clones from and pushes the version to. Returns its path.
    pub fn add_origin(&self) -> PathBuf {
        let origin = self.dir.parent().unwrap().join("origin.git");
        let origin_text = origin.to_str().unwrap();
        self.git_cmd(&["init", "-q", "--bare", "-b", "main", origin_text]);
        self.git_cmd(&["remote", "add", "origin", origin_text]);
        self.git_cmd(&["push", "-q", "origin", "main"]);
        origin
    }

    pub fn write(&self, path: &str, content: &str) {
        let path = self.dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.dir.join(path)).unwrap()
    }

    pub fn path(&self, path: &str) -> PathBuf {
        self.dir.join(path)
    }

    /// Runs git in the project and returns its trimmed stdout; panics if it fails.
    pub fn git_cmd(&self, args: &[&str]) -> String {
        let output = self.command("git").args(args).output().unwrap();
        assert!(
            output.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string()
    }

    pub fn cdflow(&self, args: &[&str]) -> Run {
        let output = self
            .command(env!("CARGO_BIN_EXE_cdflow"))
            .args(args)
            .output()
            .unwrap();
        run_of(output)
    }

    /// A command in the project with an isolated HOME and a fixed git identity.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(&self.dir)
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
            .env_remove("CDFLOW_STATE_DIR")
            .stdin(std::process::Stdio::null());
        command
    }

    /// Everything git and the files hold, to compare before and after a failed command.
    pub fn snapshot(&self) -> Snapshot {
        let files = files_under(&self.dir)
            .into_iter()
            .filter(|path| !in_git_dir(&self.dir, path))
            .map(|path| {
                let bytes = std::fs::read(&path).unwrap();
                (path.strip_prefix(&self.dir).unwrap().to_path_buf(), bytes)
            })
            .collect();
        Snapshot {
            files,
            head: self.git_cmd(&["rev-parse", "HEAD"]),
            tags: self.git_cmd(&["tag", "-l"]),
            status: self.git_cmd(&["status", "--porcelain"]),
            index: self.git_cmd(&["ls-files", "-s"]),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    files: Vec<(PathBuf, Vec<u8>)>,
    head: String,
    tags: String,
    status: String,
    index: String,
}

/// Every file under `dir` (a symlink too, as a file: the walk does not follow links), sorted;
/// none if there is no such folder.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                dirs.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    files
}

/// Whether `path` is in a `.git` folder below `root`.
pub fn in_git_dir(root: &Path, path: &Path) -> bool {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .any(|part| part.as_os_str() == ".git")
}

pub fn run_of(output: Output) -> Run {
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    check_events(&run.stdout);
    run
}

/// Every `--json` event any test sees must be valid against the published schema
/// (`docs/json.schema.json`): the first one that is not fails the test that printed it.
pub fn check_events(stdout: &str) {
    for line in stdout.lines().filter(|line| line.starts_with('{')) {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event.get("event").is_none() {
            continue;
        }
        if let Some(error) = schema_error(&event) {
            panic!("{error}\n{line}");
        }
    }
}

/// Why one `--json` event does not match the published schema, if it does not: for tests
/// that read cdflow's output as it comes, where [`check_events`] reads it at the end. Formats
/// (`time` is a `date-time`) are checked too.
pub fn schema_error(event: &serde_json::Value) -> Option<String> {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let validator = VALIDATOR.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json.schema.json");
        let schema = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("docs/json.schema.json is a valid schema")
    });
    validator
        .validate(event)
        .err()
        .map(|error| format!("an event does not match docs/json.schema.json: {error}"))
}

/// One cargo target folder for every test that builds an app in a temporary folder (the
/// example app, the services `cdflow init` makes), so that their dependencies compile once.
pub fn shared_target() -> PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("apps")
}

/// The tags of a repository, one per line.
pub fn tags_of(origin: &Path) -> String {
    git_at(origin, &["tag", "-l"])
}

/// Runs git in the repository `repo` (an origin, most often) and returns its trimmed stdout:
/// empty when git fails, as when what is asked for is not there.
pub fn git_at(repo: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}
