//! The one seam through which cdflow runs external commands and writes project files.
//!
//! Commands are built with xshell's `cmd!`, so arguments are split at compile time and no shell
//! ever sees user input. A *query* is read-only and runs in every mode; an *action* is echoed as
//! `$ command` and runs only for real, so a dry run prints exactly what a real run would execute.
//! A file write shows a unified diff in a dry run and is atomic for real.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use xshell::{Cmd, Shell};

use crate::error::Interrupted;
use crate::ui::Ui;

/// How many lines of a failed command's output an error shows.
pub const TAIL_LINES: usize = 40;

/// How long a child gets between SIGTERM and SIGKILL when cdflow is interrupted.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// How long cdflow goes on reading a finished command's pipes, which a process that left its
/// group may hold open.
const PIPE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Real,
    DryRun,
}

/// What a finished action printed, masked: stdout and stderr interleaved as they arrived (to
/// show), and stdout alone (to read answers from).
#[derive(Debug, Default, Clone)]
pub struct Output {
    pub lines: Vec<String>,
    pub stdout: Vec<String>,
    /// Whether the command ran: a dry run runs none, so nothing answered.
    pub ran: bool,
}

impl Output {
    pub fn tail(&self, n: usize) -> String {
        let start = self.lines.len().saturating_sub(n);
        self.lines[start..].join("\n")
    }
}

/// A command as recorded in a run's record: the masked line and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub command: String,
    pub status: Option<i32>,
}

pub struct Exec {
    sh: Shell,
    mode: Mode,
    ui: Ui,
    /// When set, an interruption does not stop the running command: used while a change that
    /// must be all or nothing is being made, so that it can finish or roll back.
    critical: std::cell::Cell<bool>,
    records: RefCell<Vec<Record>>,
    /// Where each command's whole output is kept, during a run: the run's own folder.
    logs: RefCell<Option<PathBuf>>,
    /// How long an action may run before it is stopped with its process group (a watch's
    /// check); `None`: as long as it takes.
    timeout: std::cell::Cell<Option<Duration>>,
}

impl Exec {
    pub fn new(dir: &Path, mode: Mode, ui: Ui) -> Result<Exec> {
        let sh = Shell::new()?;
        sh.change_dir(dir);
        Ok(Exec {
            sh,
            mode,
            ui,
            critical: std::cell::Cell::new(false),
            records: RefCell::new(Vec::new()),
            logs: RefCell::new(None),
            timeout: std::cell::Cell::new(None),
        })
    }

    /// A real-mode seam that prints plainly, for unit tests.
    #[cfg(test)]
    pub fn for_tests(dir: &Path) -> Exec {
        let ui = Ui::new(crate::ui::Style::Plain, Default::default());
        Exec::new(dir, Mode::Real, ui).unwrap()
    }

    /// Keeps the whole output of every command from now on in `dir`, one file each, so that a
    /// failure can show its last lines and point at the rest.
    pub fn keep_logs_in(&self, dir: &Path) {
        *self.logs.borrow_mut() = Some(dir.to_path_buf());
    }

    /// Stops every action run from now on that takes longer than `timeout`, with its process
    /// group, as a [`TimedOut`] error: for commands that must not block cdflow for ever.
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout.set(Some(timeout));
    }

    /// The shell that commands are built from (`cmd!(exec.sh(), "git status")`).
    pub fn sh(&self) -> &Shell {
        &self.sh
    }

    /// Moves the seam to another folder (a release's fresh clone, say).
    pub fn set_dir(&self, dir: &Path) {
        self.sh.change_dir(dir);
    }

    pub fn dir(&self) -> PathBuf {
        self.sh.current_dir()
    }

    pub fn is_dry_run(&self) -> bool {
        self.mode == Mode::DryRun
    }

    /// Runs an effect on cdflow's own files and folders (a workspace, a state file, a copy of an
    /// app) for real; in a dry run nothing happens and `None` comes back. Commands have
    /// [`Exec::run`], project files [`Exec::write_file`].
    pub fn for_real<T>(&self, effect: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
        match self.mode {
            Mode::Real => effect().map(Some),
            Mode::DryRun => Ok(None),
        }
    }

    /// A folder and its parents, made for real; nothing in a dry run.
    pub fn create_dir_all(&self, path: &Path) -> Result<()> {
        self.for_real(|| {
            std::fs::create_dir_all(path)
                .with_context(|| format!("could not create {}", path.display()))
        })?;
        Ok(())
    }

    /// A folder only its owner may enter (0700), with any parents it needs made so too, for
    /// real; an existing one that others could enter is made 0700. Nothing in a dry run.
    pub fn create_private_dir_all(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        self.for_real(|| {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .with_context(|| format!("could not create {}", path.display()))?;
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("could not make {} private", path.display()))?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// One of cdflow's own state files (a run record, a release), replaced atomically for
    /// real; nothing in a dry run, which records nothing.
    pub fn save(&self, path: &Path, contents: &[u8]) -> Result<()> {
        self.for_real(|| {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            atomic_write(path, contents)
        })?;
        Ok(())
    }

    /// What a command answered, or in a dry run (where nothing answers) a placeholder that
    /// names it, so that the commands printed after it read as a real run's would.
    pub fn answer(&self, real: &str, placeholder: &str) -> String {
        match self.mode {
            Mode::Real => real.to_string(),
            Mode::DryRun => placeholder.to_string(),
        }
    }

    pub fn ui(&self) -> &Ui {
        &self.ui
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.borrow().clone()
    }

    /// Runs a read-only command in every mode and returns its trimmed stdout.
    /// A non-zero exit is an error that carries the command's stderr.
    pub fn query(&self, cmd: Cmd<'_>) -> Result<String> {
        let stdout = self.query_bytes(cmd, None)?;
        Ok(String::from_utf8_lossy(&stdout).trim_end().to_string())
    }

    /// Like [`Exec::query`], with `input` (if any) on the command's stdin and its stdout as it
    /// came, not trimmed: for file contents (`git cat-file blob`, `git hash-object --stdin`).
    pub fn query_bytes(&self, cmd: Cmd<'_>, input: Option<&[u8]>) -> Result<Vec<u8>> {
        let mut command = Command::from(cmd);
        crate::reaper::dies_with_cdflow(&mut command);
        let line = command_line(&command, &[]);
        let started = || format!("could not start `{}`", self.ui.mask(&line));
        let output = match input {
            None => command
                .stdin(Stdio::null())
                .output()
                .with_context(started)?,
            Some(input) => {
                let mut child = command
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .with_context(started)?;
                feed(&mut child, input.to_vec());
                child.wait_with_output()?
            }
        };
        if !output.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                self.ui.mask(&line),
                output.status,
                self.ui
                    .mask(String::from_utf8_lossy(&output.stderr).trim_end())
            );
        }
        Ok(output.stdout)
    }

    /// Runs a read-only command in every mode and tells whether it exited 0.
    pub fn check(&self, cmd: Cmd<'_>) -> Result<bool> {
        let mut command = Command::from(cmd);
        crate::reaper::dies_with_cdflow(&mut command);
        let line = command_line(&command, &[]);
        let status = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("could not start `{}`", self.ui.mask(&line)))?;
        Ok(status.success())
    }

    /// Runs an action: echoed as `$ command`, executed only for real, its output captured.
    /// A non-zero exit is an error showing the command, its exit code and its last lines.
    pub fn run(&self, cmd: Cmd<'_>) -> Result<Output> {
        self.run_with_env(cmd, &[])
    }

    /// Like [`Exec::run`], with environment variables that are shown in the echoed line
    /// (`APP_URL=http://... cargo test`) because they are part of what runs.
    pub fn run_with_env(&self, cmd: Cmd<'_>, env: &[(&str, &str)]) -> Result<Output> {
        self.run_recorded(cmd, env, None)
    }

    /// Like [`Exec::run`], with `input` on the command's stdin (`git hash-object -w --stdin`).
    pub fn run_with_input(&self, cmd: Cmd<'_>, input: &[u8]) -> Result<Output> {
        self.run_recorded(cmd, &[], Some(input))
    }

    fn run_recorded(
        &self,
        cmd: Cmd<'_>,
        env: &[(&str, &str)],
        input: Option<&[u8]>,
    ) -> Result<Output> {
        let Some((command, line)) = self.announce(cmd, env) else {
            return Ok(Output::default());
        };
        // `-v`: the command's own output is shown as it comes, as `run_live` always does.
        let result = self.spawn_and_wait(command, &line, self.ui.is_verbose(), input);
        self.records.borrow_mut().push(Record {
            command: line.clone(),
            status: match &result {
                Ok(_) => Some(0),
                Err(failure) => failure
                    .downcast_ref::<CommandFailed>()
                    .and_then(|failed| failed.code),
            },
        });
        result
    }

    /// Runs `body` as one all-or-nothing change: an interruption, even a second signal, is
    /// noticed only after it.
    pub fn critical<T>(&self, body: impl FnOnce() -> Result<T>) -> Result<T> {
        let outer = self.critical.replace(true);
        let outer_signals = crate::signals::set_critical(true);
        let result = body();
        crate::signals::set_critical(outer_signals);
        self.critical.set(outer);
        result
    }

    /// Writes a project file: a diff in a dry run, an atomic replacement for real.
    pub fn write_file(&self, path: &Path, old: &str, new: &str) -> Result<()> {
        if self.is_dry_run() {
            let shown = self.display_path(path);
            self.ui.diff(&shown, &unified_diff(&shown, old, new));
            return Ok(());
        }
        atomic_write(path, new.as_bytes())
    }

    /// A path as the user would write it: relative to the working folder where possible.
    pub fn display_path(&self, path: &Path) -> String {
        let dir = self.dir();
        path.strip_prefix(&dir)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Like [`Exec::run`], for a command whose output is what the user asked to see
    /// (`cdflow logs -f`): each line is printed, masked, as it arrives.
    pub fn run_live(&self, cmd: Cmd<'_>, env: &[(&str, &str)]) -> Result<Output> {
        let Some((command, line)) = self.announce(cmd, env) else {
            return Ok(Output::default());
        };
        self.spawn_and_wait(command, &line, true, None)
    }

    /// Prints the command line (masked) that is about to run, and returns the command with it;
    /// `None` in a dry run, where printing it is all there is to do.
    fn announce(&self, cmd: Cmd<'_>, env: &[(&str, &str)]) -> Option<(Command, String)> {
        let mut command = Command::from(cmd);
        command.envs(env.iter().copied());
        let line = self.ui.mask(&command_line(&command, env));
        self.ui.command(&line, self.is_dry_run());
        (!self.is_dry_run()).then_some((command, line))
    }

    fn spawn_and_wait(
        &self,
        mut command: Command,
        line: &str,
        live: bool,
        input: Option<&[u8]>,
    ) -> Result<Output> {
        // A process group of its own: a terminal's Ctrl-C reaches cdflow alone, and cdflow can
        // stop the command with all of its children. The group dies with cdflow (`reaper`).
        crate::reaper::dies_with_cdflow(&mut command);
        crate::reaper::registers_itself(&mut command);
        command
            .process_group(0)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("could not start `{line}`"))?;
        if let Some(input) = input {
            feed(&mut child, input.to_vec());
        }
        let started = std::time::Instant::now();
        let result = self.wait_for(&mut child, line, live, started);
        crate::reaper::forget(child.id());
        result
    }

    fn wait_for(
        &self,
        child: &mut Child,
        line: &str,
        live: bool,
        started: std::time::Instant,
    ) -> Result<Output> {
        let lines = collect_lines(child);
        let mut output = Output {
            ran: true,
            ..Output::default()
        };
        let status = loop {
            if live {
                while let Ok(received) = lines.try_recv() {
                    self.take_line(&mut output, received, live);
                }
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if let Some(after) = self.timeout.get().filter(|t| started.elapsed() >= *t) {
                stop_group(child);
                // What ignored the SIGTERM and outlived the leader goes too.
                stop_leftovers(child.id() as libc::pid_t);
                self.ui
                    .command_finished(line, None, started.elapsed(), None);
                let output = self.masked_output(lines, output, live);
                return Err(anyhow::Error::new(TimedOut {
                    command: line.to_string(),
                    after,
                    tail: output.tail(TAIL_LINES),
                }));
            }
            if crate::signals::stop_requested() && !self.critical.get() {
                stop_group(child);
                self.ui
                    .command_finished(line, None, started.elapsed(), None);
                let output = self.masked_output(lines, output, live);
                return Err(anyhow::Error::new(Interrupted).context(format!(
                    "`{line}` was stopped; its last output:\n{}",
                    output.tail(TAIL_LINES)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // What the command left running in its group (a server started with `&`, say) is
        // stopped with it: it would hold the pipes open, and nothing would ever stop it.
        stop_leftovers(child.id() as libc::pid_t);
        let output = self.masked_output(lines, output, live);
        let log = self.keep_log(line, &status, &output);
        self.ui
            .command_finished(line, status.code(), started.elapsed(), log.as_deref());
        if status.success() {
            Ok(output)
        } else {
            Err(anyhow::Error::new(CommandFailed {
                command: line.to_string(),
                code: status.code(),
                tail: output.tail(TAIL_LINES),
                log,
            }))
        }
    }

    /// Writes a finished command's whole output (masked, as everything is) into the run's
    /// folder, and returns the file; `None` outside a run, or if it cannot be written (a full
    /// disk must not turn a passing command into a failure).
    fn keep_log(
        &self,
        line: &str,
        status: &std::process::ExitStatus,
        output: &Output,
    ) -> Option<PathBuf> {
        let dir = self.logs.borrow().clone()?;
        // Numbered after the files already there: a resumed run adds to its first attempt's.
        let number = std::fs::read_dir(&dir).map_or(0, |d| d.count()) + 1;
        let program: String = line
            .split_whitespace()
            .find(|word| !word.contains('='))
            .and_then(|word| word.rsplit('/').next())
            .unwrap_or("command")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
            .collect();
        let path = dir.join(format!("{number:03}-{program}.log"));
        let text = format!("$ {line}\n{}\n({status})\n", output.lines.join("\n"));
        self.save(&path, text.as_bytes()).ok()?;
        Some(path)
    }

    /// The lines read until both pipes close, or for a few seconds more when a process that
    /// left the group still holds them.
    fn masked_output(
        &self,
        lines: mpsc::Receiver<(Stream, String)>,
        mut output: Output,
        live: bool,
    ) -> Output {
        let deadline = std::time::Instant::now() + PIPE_GRACE;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(received) => self.take_line(&mut output, received, live),
                Err(_) => break,
            }
        }
        output
    }

    fn take_line(&self, output: &mut Output, (stream, line): (Stream, String), live: bool) {
        let line = self.ui.mask(&line);
        if live {
            self.ui.note(&line);
        }
        if stream == Stream::Stdout {
            output.stdout.push(line.clone());
        }
        output.lines.push(line);
    }
}

/// A command as a POSIX shell would read it: `KEY=value program arg 'an arg'`, so that what is
/// printed can be pasted into a shell and runs exactly what cdflow runs.
pub fn command_line(command: &Command, env: &[(&str, &str)]) -> String {
    let env = env
        .iter()
        .map(|(key, value)| format!("{key}={}", quote(value)));
    let words = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| quote(&word.to_string_lossy()));
    env.chain(words).collect::<Vec<_>>().join(" ")
}

/// A word quoted for a POSIX shell only when it needs it.
pub fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A command that ran and exited non-zero.
#[derive(Debug)]
pub struct CommandFailed {
    pub command: String,
    pub code: Option<i32>,
    pub tail: String,
    /// The file that holds the whole output, when the command ran in a run.
    pub log: Option<PathBuf>,
}

impl std::fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self.code {
            Some(code) => format!("exited with code {code}"),
            None => "was killed by a signal".to_string(),
        };
        write!(f, "`{}` {how}", self.command)?;
        if !self.tail.is_empty() {
            write!(f, "; the end of its output:\n{}", self.tail)?;
        }
        if let Some(log) = &self.log {
            write!(f, "\n(all of its output: {})", log.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for CommandFailed {}

/// A command that ran longer than its seam's timeout, and was stopped with its process group.
#[derive(Debug)]
pub struct TimedOut {
    pub command: String,
    pub after: Duration,
    pub tail: String,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` was stopped after {}s, its time limit",
            self.command,
            self.after.as_secs()
        )?;
        if !self.tail.is_empty() {
            write!(f, "; the end of its output:\n{}", self.tail)?;
        }
        Ok(())
    }
}

impl std::error::Error for TimedOut {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// Reads stdout and stderr on two threads into one channel, in the order lines arrive.
/// The channel closes when both pipes do.
fn collect_lines(child: &mut Child) -> mpsc::Receiver<(Stream, String)> {
    let (sender, receiver) = mpsc::channel();
    fn pump(
        pipe: impl Read + Send + 'static,
        stream: Stream,
        sender: mpsc::Sender<(Stream, String)>,
    ) {
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                match line {
                    Ok(line) => {
                        if sender.send((stream, line)).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
    }
    if let Some(stdout) = child.stdout.take() {
        pump(stdout, Stream::Stdout, sender.clone());
    }
    if let Some(stderr) = child.stderr.take() {
        pump(stderr, Stream::Stderr, sender);
    }
    receiver
}

/// Writes `input` to the child's stdin on a thread of its own, then closes it: the child may
/// fill its stdout before it has read all of its input, and is read meanwhile. A child that
/// exits without reading it all is told by its exit status, not by the failed write.
fn feed(child: &mut Child, input: Vec<u8>) {
    use std::io::Write;
    if let Some(mut stdin) = child.stdin.take() {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
}

/// How long what a finished command left in its group gets after SIGTERM, before SIGKILL.
const LEFTOVER_GRACE: Duration = Duration::from_millis(200);

/// SIGTERM to what is left in a finished command's group, then SIGKILL to what ignores it.
fn stop_leftovers(group: libc::pid_t) {
    // SAFETY: kill(2) on the command's own process group; signal 0 only asks whether it has a
    // member left. It touches no memory.
    let any_left = || unsafe { libc::kill(-group, 0) } == 0;
    if !any_left() {
        return;
    }
    unsafe { libc::kill(-group, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + LEFTOVER_GRACE;
    while any_left() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if any_left() {
        // SAFETY: as above.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
}

/// SIGTERM to the child's process group, then SIGKILL if it has not exited in time.
fn stop_group(child: &mut Child) {
    let group = child.id() as libc::pid_t;
    // SAFETY: kill(2) with a negative pid signals a process group; it touches no memory.
    unsafe { libc::kill(-group, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + KILL_GRACE;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = child.wait();
}

/// Replaces `path` with `contents` atomically: a temporary file in the same folder, flushed,
/// given the old file's permissions, then renamed over it.
fn atomic_write(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".cdflow-")
        .tempfile_in(dir)
        .with_context(|| format!("could not create a temporary file in {}", dir.display()))?;
    temp.write_all(contents)?;
    temp.as_file().sync_all()?;
    // The old file's permissions; a new file gets the usual 0644 rather than the 0600 that a
    // temporary file is made with.
    let permissions = match std::fs::metadata(path) {
        Ok(metadata) => metadata.permissions(),
        Err(_) => std::os::unix::fs::PermissionsExt::from_mode(0o644),
    };
    temp.as_file().set_permissions(permissions)?;
    temp.persist(path)
        .with_context(|| format!("could not replace {}", path.display()))?;
    Ok(())
}

/// A unified diff with `a/` and `b/` headers, as git shows it.
pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Secrets;
    use crate::ui::Style;
    use xshell::cmd;

    fn exec(mode: Mode, secret: &str) -> Exec {
        let mut secrets = Secrets::default();
        secrets.add(secret);
        Exec::new(&std::env::temp_dir(), mode, Ui::new(Style::Plain, secrets)).unwrap()
    }

    #[test]
    fn dry_run_runs_no_action_but_answers_queries() {
        let exec = exec(Mode::DryRun, "s3cret");
        let marker = tempfile::NamedTempFile::new().unwrap();
        let path = marker.path().to_path_buf();
        drop(marker);
        exec.run(cmd!(exec.sh(), "touch {path}")).unwrap();
        assert!(!path.exists(), "a dry run must not run actions");
        assert_eq!(exec.query(cmd!(exec.sh(), "echo hi")).unwrap(), "hi");
        assert!(exec.records().is_empty());
    }

    #[test]
    fn failure_carries_code_and_masked_tail() {
        let exec = exec(Mode::Real, "s3cret");
        // One pipe, so that the order is certain: stderr's lines may arrive among stdout's.
        let script = "for i in $(seq 1 50); do echo line$i; done; echo s3cret; exit 3";
        let err = exec.run(cmd!(exec.sh(), "sh -c {script}")).unwrap_err();
        let failed = err.downcast_ref::<CommandFailed>().unwrap();
        assert_eq!(failed.code, Some(3));
        assert!(failed.tail.contains("****"));
        assert!(!failed.tail.contains("s3cret"));
        assert!(!failed.tail.contains("line10\n"), "only the last lines");
        assert_eq!(failed.tail.lines().count(), TAIL_LINES);
        assert_eq!(exec.records()[0].status, Some(3));
    }

    #[test]
    fn input_reaches_stdin_and_query_bytes_keep_stdout_as_it_came() {
        let input = "line\n".repeat(100_000);
        let real = exec(Mode::Real, "unused");
        let echoed = real
            .query_bytes(cmd!(real.sh(), "cat"), Some(input.as_bytes()))
            .unwrap();
        assert_eq!(echoed, input.as_bytes(), "all of it, the last newline too");
        let output = real
            .run_with_input(cmd!(real.sh(), "wc -l"), input.as_bytes())
            .unwrap();
        assert_eq!(output.stdout, ["100000"]);
        let dry = exec(Mode::DryRun, "unused");
        let marker = tempfile::NamedTempFile::new().unwrap();
        let path = marker.path().to_path_buf();
        dry.run_with_input(cmd!(dry.sh(), "tee {path}"), b"written")
            .unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"",
            "a dry run runs no action"
        );
    }

    #[test]
    fn command_lines_are_quoted_only_where_a_shell_needs_it() {
        let mut command = Command::new("git");
        command.args(["commit", "-m", "it's done", "--var", "a=1"]);
        assert_eq!(
            command_line(&command, &[("APP_URL", "http://x:1/")]),
            r"APP_URL=http://x:1/ git commit -m 'it'\''s done' --var a=1"
        );
    }

    #[test]
    fn what_a_command_leaves_running_is_stopped_with_it() {
        let exec = exec(Mode::Real, "unused");
        let started = std::time::Instant::now();
        let output = exec
            .run(cmd!(
                exec.sh(),
                "sh -c 'sleep 300 & echo started; echo oops >&2'"
            ))
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(output.stdout, ["started"]);
        assert_eq!(output.lines.len(), 2);
    }

    #[test]
    fn private_folders_are_0700_for_real_and_absent_in_a_dry_run() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cf/staging");
        exec(Mode::DryRun, "unused")
            .create_private_dir_all(&path)
            .unwrap();
        assert!(!dir.path().join("cf").exists(), "a dry run makes nothing");
        let real = exec(Mode::Real, "unused");
        real.create_private_dir_all(&path).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o700);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        real.create_private_dir_all(&path).unwrap();
        assert_eq!(mode(&path), 0o700, "an open one is made private");
    }

    #[test]
    fn atomic_write_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.sh");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        atomic_write(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }
}
