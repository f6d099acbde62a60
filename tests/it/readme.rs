//! The console examples of README.md and docs/*.md, run for real. Each ```console block's
//! commands run in order in a project prepared for that block (the example app as
//! scripts/seed-example makes it, an empty folder for `cdflow init`, or the cf apps of
//! tests/it/cf.rs with the cf stand-in first on PATH; no network), and what each prints, stdout
//! and stderr together as a terminal shows them, must be what the doc shows below it.
//! `SNAPSHOTS=overwrite cargo test --test it readme` writes the real output into the docs'
//! blocks instead, for review in the diff.
//!
//! How a block reads:
//! - `$ cdflow ...`, `$ cd DIR && ...` and `$ export NAME=VALUE ...` lines are commands; every
//!   other line, a dry run's `$ git ...` included, is output of the command above it;
//! - both sides are made stable before the comparison: the folder the block starts in is left
//!   out of paths (they show relative to it), HOME is `~`, and times, durations, run ids and
//!   commit ids or digests match any of their kind (written as an example value or as `[TIME]`,
//!   `[SECS]`, `[RUN]`, `[HEX]`);
//! - `...` on a line of its own stands for any lines, a line ending in `...` for any end of
//!   that line, and `[..]` for any text within a line (snapbox's wildcards);
//! - a command with a `# comment` and no output below it is run for its exit status alone (the
//!   comment says what it does); one with neither must print nothing; every command exits 0;
//! - `<!-- not run: REASON -->` on the line right above a block: its cdflow lines are only
//!   checked to be ones that cdflow's command line accepts.
//!
//! trycmd can run a Markdown file's console blocks itself, but it takes every `$ ` line for a
//! command (a dry run prints its commands that way), runs a block in a fixed folder with no way
//! to make a git repository, an origin or a state folder there first, and knows no `cd` or
//! `export`: hence this small reader, with snapbox's matching.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::Command;

use snapbox::filter::NormalizeToExpected;
use snapbox::Data;

use crate::cf::CfApp;
use crate::harness::{free_port, Project};
use crate::plans::{normalised_line, without_run_ids};

const NOT_RUN: &str = "<!-- not run:";

/// A ```console block of a doc.
struct Block {
    /// The doc, relative to the crate's folder.
    doc: PathBuf,
    /// The index of the block's first line in the doc (the one after the fence).
    first: usize,
    lines: Vec<String>,
    not_run: Option<String>,
}

/// A command of a block, with the output the doc shows for it.
struct Step {
    /// The command line, after `$ `.
    command: String,
    /// The index of its line in the doc.
    at: usize,
    commented: bool,
    output: Vec<String>,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and docs/*.md.
fn docs() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| path.strip_prefix(root()).unwrap().to_path_buf())
        .collect();
    docs.sort();
    docs.insert(0, PathBuf::from("README.md"));
    docs
}

fn blocks(doc: &Path, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() != "```console" {
            i += 1;
            continue;
        }
        let end = (i + 1..lines.len())
            .find(|&j| lines[j].starts_with("```"))
            .unwrap_or_else(|| panic!("{}:{}: a block with no end", doc.display(), i + 1));
        let not_run = i
            .checked_sub(1)
            .and_then(|above| lines[above].strip_prefix(NOT_RUN))
            .map(|reason| reason.trim().trim_end_matches("-->").trim().to_string());
        blocks.push(Block {
            doc: doc.to_path_buf(),
            first: i + 1,
            lines: lines[i + 1..end].iter().map(|l| l.to_string()).collect(),
            not_run,
        });
        i = end + 1;
    }
    blocks
}

/// The command of a line that is one, after its `$ `.
fn command_of(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("$ ")?;
    let first = rest.split_whitespace().next()?;
    matches!(first, "cdflow" | "cd" | "export").then_some(rest)
}

fn steps(block: &Block) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for (n, line) in block.lines.iter().enumerate() {
        let at = block.first + n;
        match command_of(line) {
            Some(command) => steps.push(Step {
                command: command.to_string(),
                at,
                commented: command
                    .split_once(" #")
                    .is_some_and(|(before, _)| words(before) == words(command)),
                output: Vec::new(),
            }),
            None => steps
                .last_mut()
                .unwrap_or_else(|| {
                    panic!("{}:{}: output of no command", block.doc.display(), at + 1)
                })
                .output
                .push(line.clone()),
        }
    }
    steps
}

/// A command line's words, as a shell splits them (a `# comment` dropped).
fn words(command: &str) -> Vec<String> {
    shlex::split(command).unwrap_or_else(|| panic!("cannot split `{command}`"))
}

/// What a block's commands run in.
enum Prepared {
    Project(Project),
    Cf(CfApp),
}

impl Prepared {
    fn project(&self) -> &Project {
        match self {
            Prepared::Project(project) => project,
            Prepared::Cf(app) => &app.project,
        }
    }

    /// cdflow, with the project's HOME and git identity, and for a cf app the stand-in on PATH
    /// and its credentials; the state folder is `.cdflow/` where it runs, as for a user.
    fn cdflow(&self) -> Command {
        let mut command = match self {
            Prepared::Project(project) => project.command(env!("CARGO_BIN_EXE_cdflow")),
            Prepared::Cf(app) => app.command(&[], None),
        };
        // Under `cargo test`, CARGO names cargo's path, which cdflow would use and print.
        command
            .env_remove("CDFLOW_STATE_DIR")
            .env_remove("CARGO")
            .env("NO_COLOR", "1");
        command
    }
}

/// What a command needs first in the folder it runs in.
type Preparation = fn(&Path);

/// One block's run: where it is, what it set, and how its output is shown.
struct Session {
    prepared: Prepared,
    cwd: PathBuf,
    env: Vec<(String, String)>,
    /// Arguments in the doc that cannot work here, and what stands for them.
    args: Vec<(String, String)>,
    /// Text of the real output, and how the doc shows it; the first that matches wins.
    shown: Vec<(String, String)>,
    /// Commands that run as dry runs (a real run would build, test and deploy a service: too
    /// slow for this test; the dry run still checks the configuration, the tools and the plan),
    /// each with what it needs first in the folder it runs in.
    dry_runs: Vec<(&'static str, Preparation)>,
    /// Text of the doc that this machine prints otherwise, and the pattern that stands for it.
    machine: Vec<(&'static str, &'static str)>,
}

impl Session {
    fn of(prepared: Prepared) -> Session {
        let project = prepared.project();
        let mut shown = Vec::new();
        for (path, as_shown) in [(&project.dir, "."), (&project.home, "~")] {
            for path in [path.clone(), path.canonicalize().unwrap()] {
                let path = path.to_str().unwrap().to_string();
                shown.push((format!("{path}/"), format!("{as_shown}/").replace("./", "")));
                shown.push((path, as_shown.to_string()));
            }
        }
        Session {
            cwd: project.dir.clone(),
            prepared,
            env: Vec::new(),
            args: Vec::new(),
            shown,
            dry_runs: Vec::new(),
            machine: Vec::new(),
        }
    }

    fn home(&self) -> &Path {
        &self.prepared.project().home
    }

    /// Runs a step's command line; returns the exit code and the output of its cdflow
    /// command, None when it has none (`export`).
    fn run(&mut self, step: &Step) -> Option<(Option<i32>, String)> {
        let mut result = None;
        for segment in words(&step.command).split(|word| word == "&&") {
            match segment.first().map(String::as_str) {
                Some("cd") => {
                    assert_eq!(segment.len(), 2, "`{}`: cd DIR", step.command);
                    self.cwd = self.cwd.join(self.expanded(&segment[1]));
                }
                Some("export") => {
                    for assignment in &segment[1..] {
                        let (name, value) = assignment.split_once('=').unwrap();
                        self.env.push((name.to_string(), self.expanded(value)));
                    }
                }
                Some("cdflow") => {
                    let mut args: Vec<String> =
                        segment[1..].iter().map(|a| self.expanded(a)).collect();
                    let line = segment.join(" ");
                    if let Some((_, first)) = self.dry_runs.iter().find(|(l, _)| *l == line) {
                        first(&self.cwd);
                        args.push("--dry-run".to_string());
                    }
                    result = Some(self.cdflow(&args));
                }
                _ => panic!("`{}`: not a command this test knows", step.command),
            }
        }
        result
    }

    /// `~/` as HOME, and the arguments that stand for unreachable ones.
    fn expanded(&self, word: &str) -> String {
        let word = match word.strip_prefix("~/") {
            Some(rest) => format!("{}/{rest}", self.home().display()),
            None => word.to_string(),
        };
        match self.args.iter().find(|(from, _)| *from == word) {
            Some((_, to)) => to.clone(),
            None => word,
        }
    }

    /// cdflow with `args`, its stdout and stderr in one file as a terminal interleaves them.
    fn cdflow(&self, args: &[String]) -> (Option<i32>, String) {
        let mut output = tempfile::tempfile().unwrap();
        let status = self
            .prepared
            .cdflow()
            .args(args)
            .current_dir(&self.cwd)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(output.try_clone().unwrap())
            .stderr(output.try_clone().unwrap())
            .status()
            .unwrap();
        let mut text = String::new();
        output.rewind().unwrap();
        output.read_to_string(&mut text).unwrap();
        (status.code(), text)
    }

    /// The real output as the doc would show it.
    fn shown(&self, output: &str) -> Vec<String> {
        let mut text = output.to_string();
        for (from, to) in &self.shown {
            text = text.replace(from.as_str(), to);
        }
        text.lines().map(stable).collect()
    }
}

/// A line with its varying values made placeholders (see plans.rs).
fn stable(line: &str) -> String {
    normalised_line(&without_run_ids(line))
}

/// The doc's output lines as a pattern: `stable`, and a line's trailing `...` as `[..]`.
fn pattern(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|line| match line.strip_suffix("...") {
            Some(start) if !start.is_empty() => stable(&format!("{start}[..]")),
            _ => stable(line),
        })
        .collect()
}

fn text_of(lines: &[String]) -> String {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// The project a block's commands run in, known by its doc and its first command (its words,
/// a comment left out): every block that runs needs an entry here.
fn prepare(block: &Block, first: &str) -> Session {
    match (block.doc.to_str().unwrap(), first) {
        ("README.md", "cdflow bump --show") | ("README.md", "cdflow pipelines") => {
            Session::of(Prepared::Project(Project::example_app()))
        }
        ("README.md", "export CF_USERNAME=ci-bot CF_PASSWORD=...") => {
            // The doc releases from GitHub over ssh, which a test cannot reach: the same kind
            // of app (tests/it/cf.rs's `filter`) is cloned from a bare repository on disk, and
            // its path is shown as the doc's URL.
            let app = CfApp::new();
            let origin = app.origin.to_str().unwrap().to_string();
            let mut session = Session::of(Prepared::Cf(app));
            let url = "git@github.com:acme/filter.git".to_string();
            session.args.push((url.clone(), origin.clone()));
            // `CF_PASSWORD=...` is the doc's way to say "the password": any will do for the
            // stand-in, but cdflow refuses one too short to mask.
            session
                .args
                .push(("...".into(), "a-password-for-the-stand-in".into()));
            session.shown.insert(0, (origin, url));
            session
        }
        ("README.md", "cdflow init --list") => {
            let mut session = Session::of(Prepared::Project(Project::empty()));
            session.dry_runs.push(("cdflow release", free_ports));
            session
        }
        ("docs/ci.md", "cdflow push --env staging --dry-run") => {
            // A dry run asks cf nothing and calls no route: the URL is never reached.
            let app = CfApp::example_app("https://example-app.staging.example.com");
            let musl = musl_installed(&app.project.dir);
            let mut session = Session::of(Prepared::Cf(app));
            // The doc shows the static build of a machine with the musl target, as CI
            // installs it; elsewhere the build has no `--target` (and a warning comes first).
            if !musl {
                session
                    .machine
                    .push((" --target x86_64-unknown-linux-musl", "[..]"));
            }
            session
        }
        (doc, first) => panic!(
            "{doc}:{}: a console block that tests/it/readme.rs does not know how to run \
             (`{first}`): add it to `prepare`, or mark it `{NOT_RUN} REASON -->`",
            block.first + 1
        ),
    }
}

/// A new service's environments on free ports, committed: a run's preflight refuses a port in
/// use, and 8081 and 8082 may be (the demo, at a developer's desk). As tests/it/init.rs does.
fn free_ports(dir: &Path) {
    let config = std::fs::read_to_string(dir.join("cdflow.toml")).unwrap();
    assert!(config.contains("port = 8081\n") && config.contains("port = 8082\n"));
    let config = config
        .replace("port = 8081\n", &format!("port = {}\n", free_port()))
        .replace("port = 8082\n", &format!("port = {}\n", free_port()));
    std::fs::write(dir.join("cdflow.toml"), config).unwrap();
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(["commit", "-qam", "free ports"])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Whether rustup has the musl target for the toolchain of `dir`, as cdflow asks it.
fn musl_installed(dir: &Path) -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(dir)
        .output()
        .is_ok_and(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .any(|line| line.trim() == "x86_64-unknown-linux-musl")
        })
}

/// A difference between a doc and what its command printed.
struct Mismatch {
    doc: PathBuf,
    /// The doc's lines to replace, and the lines that would show the real output.
    lines: std::ops::Range<usize>,
    shown: Vec<String>,
    report: String,
}

/// Runs a block's commands; returns the ones whose output differs from the doc.
fn check(block: &Block) -> Vec<Mismatch> {
    let steps = steps(block);
    let mut session = prepare(block, &words(&steps[0].command).join(" "));
    let mut mismatches = Vec::new();
    for step in &steps {
        let place = format!("{}:{}", block.doc.display(), step.at + 1);
        let Some((code, output)) = session.run(step) else {
            assert!(
                step.output.is_empty(),
                "{place}: `{}` prints nothing",
                step.command
            );
            continue;
        };
        assert_eq!(
            code,
            Some(0),
            "{place}: `{}` fails:\n{output}",
            step.command
        );
        if step.commented && step.output.is_empty() {
            continue;
        }
        let expected: Vec<String> = pattern(&step.output)
            .into_iter()
            .map(|line| {
                let mut line = line;
                for (text, pattern) in &session.machine {
                    line = line.replace(text, pattern);
                }
                line
            })
            .collect();
        let actual = session.shown(&output);
        let matched = NormalizeToExpected::new()
            .redact()
            .normalize(
                Data::text(text_of(&actual)),
                &Data::text(text_of(&expected)),
            )
            .render()
            .unwrap();
        if matched == text_of(&expected) {
            continue;
        }
        // What the doc would show: its own lines where they match, the real ones elsewhere.
        let shown = matched
            .lines()
            .map(|line| match expected.iter().position(|e| e == line) {
                Some(k) => step.output[k].clone(),
                None => line.to_string(),
            })
            .collect();
        let diff = similar::TextDiff::from_lines(&text_of(&expected), &matched)
            .unified_diff()
            .header("doc", "real")
            .to_string();
        mismatches.push(Mismatch {
            doc: block.doc.clone(),
            lines: step.at + 1..step.at + 1 + step.output.len(),
            shown,
            report: format!(
                "{place}: `{}` prints other than the doc shows:\n{diff}",
                step.command
            ),
        });
    }
    mismatches
}

/// A block that is not run: each cdflow line must be one that cdflow accepts, which clap
/// checks when asked for the help of that very line.
fn check_accepted(block: &Block) {
    assert!(
        block
            .not_run
            .as_ref()
            .is_some_and(|reason| !reason.is_empty()),
        "{}:{}: a block not run says why",
        block.doc.display(),
        block.first
    );
    let folder = tempfile::tempdir().unwrap();
    for step in steps(block) {
        let words = words(&step.command);
        assert_eq!(words[0], "cdflow", "{}: only cdflow lines", step.command);
        let output = Command::new(env!("CARGO_BIN_EXE_cdflow"))
            .args(&words[1..])
            .arg("--help")
            .current_dir(folder.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}:{}: cdflow refuses `{}`: {}",
            block.doc.display(),
            step.at + 1,
            step.command,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_docs_console_examples_print_what_they_show() {
    let overwrite = std::env::var("SNAPSHOTS").is_ok_and(|action| action == "overwrite");
    let mut mismatches = Vec::new();
    let mut ran = 0;
    for doc in docs() {
        let text = std::fs::read_to_string(root().join(&doc)).unwrap();
        for block in blocks(&doc, &text) {
            match block.not_run {
                Some(_) => check_accepted(&block),
                None => {
                    mismatches.extend(check(&block));
                    ran += 1;
                }
            }
        }
    }
    assert!(
        ran >= 5,
        "the docs' console blocks were not found: {ran} ran"
    );
    if overwrite {
        for doc in docs() {
            let path = root().join(&doc);
            let text = std::fs::read_to_string(&path).unwrap();
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            let mut edits: Vec<&Mismatch> = mismatches.iter().filter(|m| m.doc == doc).collect();
            edits.sort_by_key(|m| std::cmp::Reverse(m.lines.start));
            for edit in &edits {
                lines.splice(edit.lines.clone(), edit.shown.iter().cloned());
            }
            if !edits.is_empty() {
                std::fs::write(&path, text_of(&lines)).unwrap();
            }
        }
        return;
    }
    let reports: Vec<&str> = mismatches.iter().map(|m| m.report.as_str()).collect();
    assert!(
        reports.is_empty(),
        "{}\n(`SNAPSHOTS=overwrite cargo test --test it readme` writes the real output into the \
         docs)",
        reports.join("\n")
    );
}

/// The reader itself: a dry run's `$ git` lines are output, a `# comment` is not an argument,
/// and an example whose output differs is caught, line for line.
#[test]
fn a_block_whose_output_differs_is_caught() {
    let doc = "intro\n\n```console\n\
        $ cdflow pipelines     # what there is\n\
        release    clone, test, bump, ...\n\
        promote    promote the version verified on staging to staging  (built in)\n\
        ...\n\
        $ git tag v1\n\
        ```\n";
    let blocks = blocks(Path::new("README.md"), doc);
    assert_eq!(blocks.len(), 1);
    let steps = steps(&blocks[0]);
    assert_eq!(steps.len(), 1, "`$ git` is output, not a command");
    assert!(steps[0].commented);
    assert_eq!(words(&steps[0].command), ["cdflow", "pipelines"]);
    assert_eq!(steps[0].output.len(), 4);
    let mismatches = check(&blocks[0]);
    assert_eq!(mismatches.len(), 1);
    let report = &mismatches[0].report;
    assert!(
        report.contains("README.md:4: `cdflow pipelines"),
        "{report}"
    );
    assert!(
        report.contains("-promote    promote the version verified on staging to staging"),
        "{report}"
    );
    assert!(
        !report.contains("-release"),
        "a line ending in `...` matches: {report}"
    );
    assert_eq!(mismatches[0].lines, 4..8);
}
