//! Everything cdflow prints goes through here, masked, in the style the reader wants:
//! a terminal (a spinner per stage), plain timestamped lines for CI logs, or one JSON event per
//! line for machines.

// The one module that prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::{Envelope, Event, SCHEMA_VERSION};
use crate::secrets::Secrets;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Terminal,
    Plain,
    Json,
}

impl Style {
    /// Terminal when stdout is one, plain lines otherwise (CI), JSON when asked for.
    pub fn detect(json: bool) -> Style {
        if json {
            Style::Json
        } else if std::io::stdout().is_terminal() {
            Style::Terminal
        } else {
            Style::Plain
        }
    }
}

/// How much a run prints besides errors and warnings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors and warnings only, from a command that acts (`-q`); what a read command prints
    /// as its answer stays.
    Quiet,
    /// Stages, the commands they run, and notes.
    #[default]
    Normal,
    /// Also each command's own output, live (`-v`).
    Verbose,
}

/// Cheap to clone: the exec seam and the pipeline runner print through the same one.
#[derive(Debug, Clone)]
pub struct Ui {
    style: Style,
    verbosity: Verbosity,
    /// Whether the command acts (runs stages, deploys, commits, starts or stops things), and so
    /// prints progress, which `-q` silences; a read command's answer is never silenced.
    acting: Rc<std::cell::Cell<bool>>,
    secrets: Rc<RefCell<Secrets>>,
    /// The spinner of the running stage, on a terminal; lines are printed above it.
    spinner: Rc<RefCell<Option<ProgressBar>>>,
    /// The id of the run whose events are printed, once there is one.
    run: Rc<RefCell<Option<String>>>,
}

pub use crate::events::Outcome;

impl Outcome {
    fn mark(self) -> &'static str {
        match self {
            Outcome::Passed => "✓",
            Outcome::Failed => "✗",
            Outcome::Skipped => "-",
            Outcome::Interrupted => "!",
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Interrupted => "interrupted",
        }
    }
}

impl Ui {
    pub fn new(style: Style, secrets: Secrets) -> Ui {
        Ui {
            style,
            verbosity: Verbosity::Normal,
            acting: Rc::new(std::cell::Cell::new(false)),
            secrets: Rc::new(RefCell::new(secrets)),
            spinner: Rc::new(RefCell::new(None)),
            run: Rc::new(RefCell::new(None)),
        }
    }

    pub fn with_verbosity(mut self, verbosity: Verbosity) -> Ui {
        self.verbosity = verbosity;
        self
    }

    /// Whether commands' own output is shown as it comes (`-v`).
    pub fn is_verbose(&self) -> bool {
        self.verbosity == Verbosity::Verbose
    }

    /// Says whether the command acts, and so whether what it prints is progress that `-q`
    /// silences (set once, by `main`, from the command).
    pub fn set_acting(&self, acting: bool) {
        self.acting.set(acting);
    }

    /// Whether progress is silenced: `-q` in a command that acts, in text styles (JSON events
    /// are for machines, which filter them themselves).
    pub fn silenced(&self) -> bool {
        self.verbosity == Verbosity::Quiet && self.acting.get() && self.style != Style::Json
    }

    /// Adds secrets learnt later (those an app's cdflow.toml names).
    pub fn add_secrets(&self, names: &[String]) {
        let mut secrets = self.secrets.borrow_mut();
        for name in names {
            if let Ok(value) = std::env::var(name) {
                secrets.add(value);
            }
        }
    }

    /// Adds secret values learnt from input (the credentials in a repository URL).
    pub fn add_secret_values(&self, values: &[String]) {
        let mut secrets = self.secrets.borrow_mut();
        for value in values {
            secrets.add(value.clone());
        }
    }

    pub fn mask(&self, text: &str) -> String {
        self.secrets.borrow().mask(text)
    }

    /// From now on, events belong to the run `id`.
    pub fn set_run(&self, id: &str) {
        *self.run.borrow_mut() = Some(id.to_string());
    }

    /// A command that runs (or, in a dry run, would run), as `$ command`.
    pub fn command(&self, line: &str, dry_run: bool) {
        if self.silenced() {
            return;
        }
        let line = self.mask(line);
        match self.style {
            Style::Json => self.emit(Event::CommandStarted {
                command: line,
                dry_run,
            }),
            _ => self.out(&format!("$ {line}")),
        }
    }

    /// A command has ended (JSON only: in text the stage's line or the error says it).
    pub fn command_finished(
        &self,
        line: &str,
        exit_code: Option<i32>,
        took: Duration,
        log: Option<&Path>,
    ) {
        if self.style != Style::Json || self.silenced() {
            return;
        }
        self.emit(Event::CommandFinished {
            command: self.mask(line),
            exit_code,
            seconds: took.as_secs_f64(),
            log: log.map(|path| path.display().to_string()),
        });
    }

    /// A line of information for the reader.
    pub fn note(&self, text: &str) {
        if self.silenced() {
            return;
        }
        let text = self.mask(text);
        match self.style {
            Style::Json => self.emit(Event::Note { message: text }),
            _ => self.out(&text),
        }
    }

    /// Output that is a file in its own right (a completion script, a manual page), written
    /// to stdout as it is, for a shell to redirect: no style, nothing to mask.
    pub fn raw(&self, bytes: &[u8]) {
        // A closed pipe (`cdflow man | head`) is not worth a panic.
        let _ = std::io::stdout().lock().write_all(bytes);
    }

    /// A warning for the reader, on stderr (stdout may be a plan or JSON), masked.
    pub fn warn(&self, text: &str) {
        let text = self.mask(text);
        match self.style {
            Style::Json => self.emit(Event::Warning { message: text }),
            _ => {
                if let Some(bar) = self.spinner.borrow().as_ref() {
                    bar.suspend(|| eprintln!("{text}"));
                } else {
                    eprintln!("{text}");
                }
            }
        }
    }

    /// An error, on stderr, masked.
    pub fn error(&self, text: &str) {
        let text = self.mask(text);
        if let Some(bar) = self.spinner.borrow_mut().take() {
            bar.finish_and_clear();
        }
        match self.style {
            Style::Json => self.emit(Event::Error { message: text }),
            _ => eprintln!("error: {text}"),
        }
    }

    /// A unified diff of a file that a dry run would change.
    pub fn diff(&self, path: &str, diff: &str) {
        if self.silenced() {
            return;
        }
        let diff = self.mask(diff);
        match self.style {
            Style::Json => self.emit(Event::Diff {
                path: self.mask(path),
                diff,
            }),
            _ => self.out(diff.trim_end_matches('\n')),
        }
    }

    /// A stage begins: a spinner with the elapsed time on a terminal, a line elsewhere.
    pub fn stage_started(&self, index: usize, total: usize, name: &str) {
        if self.silenced() {
            return;
        }
        match self.style {
            Style::Json => self.emit(Event::StageStarted {
                stage: name.to_string(),
                index: index as u32,
                total: total as u32,
            }),
            Style::Plain => self.out(&format!(
                "[{}] ▶ stage {index}/{total}: {name}",
                timestamp()
            )),
            Style::Terminal => {
                // On stdout, the terminal the style was chosen for: on stderr (indicatif's
                // default) a redirected stderr would hide the spinner and every line printed
                // above it.
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                        .expect("a valid template"),
                );
                bar.set_message(format!("[{index}/{total}] {name}"));
                bar.enable_steady_tick(Duration::from_millis(100));
                *self.spinner.borrow_mut() = Some(bar);
            }
        }
    }

    /// A stage ends with a mark and its duration.
    pub fn stage_finished(
        &self,
        index: usize,
        total: usize,
        name: &str,
        outcome: Outcome,
        took: Duration,
    ) {
        let took_text = format!("{:.1}s", took.as_secs_f64());
        if let Some(bar) = self.spinner.borrow_mut().take() {
            bar.finish_and_clear();
        }
        if self.silenced() {
            return;
        }
        match self.style {
            Style::Json => self.emit(Event::StageFinished {
                stage: name.to_string(),
                index: index as u32,
                total: total as u32,
                outcome,
                seconds: took.as_secs_f64(),
            }),
            Style::Plain => self.out(&format!(
                "[{}] {} stage {index}/{total}: {name} {} in {took_text}",
                timestamp(),
                outcome.mark(),
                outcome.word()
            )),
            Style::Terminal => self.out(&format!(
                "{} [{index}/{total}] {name} ({took_text})",
                outcome.mark()
            )),
        }
    }

    pub fn is_json(&self) -> bool {
        self.style == Style::Json
    }

    /// A typed event, as one masked JSON line, whatever the style: for what only `--json`
    /// prints (callers check [`Ui::is_json`]) and for results that have no text form.
    pub fn emit(&self, event: Event) {
        let envelope = Envelope {
            schema: SCHEMA_VERSION,
            time: timestamp(),
            run: self.run.borrow().clone(),
            event,
        };
        let line = serde_json::to_string(&envelope).expect("events serialize");
        self.out(&self.mask(&line));
    }

    fn out(&self, text: &str) {
        if let Some(bar) = self
            .spinner
            .borrow()
            .as_ref()
            .filter(|bar| !bar.is_hidden())
        {
            // Printed above the spinner, which is drawn again below.
            bar.println(text);
            return;
        }
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`cdflow ... | head`) is not worth a panic.
        let _ = writeln!(stdout, "{text}");
    }
}

/// Now, in UTC, to the second: the timestamps of plain lines and events.
pub fn timestamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
