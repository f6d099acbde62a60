//! cdflow: continuous delivery for services on a PaaS.
//!
//! `main` stays small: parse the command line, resolve what it asks for, run it, turn an error
//! into an exit code.

// What cdflow prints goes through `ui`, which masks secrets and picks the stream and style.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod app;
mod app_manifest;
mod bench;
mod bump;
mod canary;
mod cli;
mod config;
mod env_record;
mod error;
mod events;
mod exec;
mod facts;
mod git;
mod init;
mod lock;
mod pipeline;
mod platform;
mod process;
mod reaper;
mod record;
mod releases;
mod repo_url;
mod runner;
mod secrets;
mod settings;
mod shell;
mod signals;
mod stages;
mod state;
mod tools;
mod ui;
mod version;
mod version_commit;
mod version_files;
mod watch;
mod yaml_file;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::app::App;
use crate::cli::{BumpArgs, Cli, Command, RunFlags};
use crate::exec::{Exec, Mode};
use crate::pipeline::{Pipeline, Source, Stage};
use crate::secrets::Secrets;
use crate::settings::Settings;
use crate::state::State;
use crate::ui::{Style, Ui, Verbosity};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Reap = cli.command {
        // Before anything else: no signal handlers, no Ui, nothing that could outlive a pipe.
        return match reaper::serve() {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let verbosity = match (cli.quiet, cli.verbose) {
        (true, _) => Verbosity::Quiet,
        (_, true) => Verbosity::Verbose,
        _ => Verbosity::Normal,
    };
    // Before any thread starts: the git token leaves cdflow's environment, so that only the
    // git commands that need it are given it.
    let mut secrets = Secrets::from_env([]);
    if let Some(token) = repo_url::take_env_token() {
        secrets.add(token.token());
    }
    let ui = Ui::new(Style::detect(cli.json), secrets).with_verbosity(verbosity);
    match run(cli, &ui) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            ui.error(&format!("{err:#}"));
            error::exit_code(&err)
        }
    }
}

fn run(cli: Cli, ui: &Ui) -> Result<()> {
    signals::install()?;
    // Like `git -C` and `make -C`: change to the folder, so that every path cdflow prints is
    // relative to where the user pointed it.
    if let Some(dir) = &cli.dir {
        std::env::set_current_dir(dir)
            .map_err(|err| error::user_error(format!("-C {}: {err}", dir.display())))?;
    }
    // As cargo finds Cargo.toml: from a subfolder of an app, the app's own folder (and so its
    // state folder) is the one with the nearest cdflow.toml.
    if works_on_an_app(&cli.command) {
        let start = std::env::current_dir()?;
        if let Some(root) = start
            .ancestors()
            .find(|d| d.join(config::FILE_NAME).is_file())
        {
            if root != start {
                std::env::set_current_dir(root)?;
            }
        }
    }
    ui.set_acting(acts(&cli.command));
    if ui.is_json() {
        refuse_json(&cli.command)?;
    }
    let here = std::env::current_dir()?;
    let dir = Path::new("");
    let state = State::locate(&here);
    let exec_in = |mode: Mode| Exec::new(&here, mode, ui.clone());
    // Commands that write into the state folder create it private; those that only read it
    // tighten one that exists.
    match &cli.command {
        Command::Release(_)
        | Command::Test(_)
        | Command::Push(_)
        | Command::E2e(_)
        | Command::Promote(_)
        | Command::Watch(_) => state.secure(ui, true)?,
        // `--app` outside a checkout reads a state folder that exists, and makes none.
        Command::Rollback(args) => state.secure(
            ui,
            args.app.is_none() || here.join(config::FILE_NAME).is_file(),
        )?,
        Command::History
        | Command::Logs(_)
        | Command::Status
        | Command::Down(_)
        | Command::Up(_)
        | Command::Forget(_) => state.secure(ui, false)?,
        // The environment's server is given its state folder, secured by the command that
        // started it.
        Command::ServeEnv(_)
        | Command::Completions(_)
        | Command::Man(_)
        | Command::Bump(_)
        | Command::Manifest(_)
        | Command::Init(_)
        | Command::Pipelines
        | Command::Reap => {}
    }
    match cli.command {
        Command::Bump(args) => run_bump(dir, exec_in(mode_of(args.dry_run))?, args),
        Command::Release(args) => {
            let app_dir = &here;
            let pipeline = pipeline::find(app_dir, &args.pipeline)?;
            let settings = Settings {
                repo: args.repo,
                git_ref: args.git_ref,
                branch: args.branch,
                part: args.part.as_deref().map(str::parse).transpose()?,
                force: false,
                resume: args.resume,
                lock_wait: args.run.lock_wait,
            };
            let exec = exec_in(mode_of(args.run.dry_run))?;
            runner::run(&exec, &state, &pipeline, &settings)?;
            Ok(())
        }
        Command::Test(args) => {
            let tiers = (!args.tier.is_empty()).then_some(args.tier);
            one_stage(
                &here,
                &state,
                ui,
                args.run,
                Stage::Test { name: None, tiers },
                false,
            )
        }
        Command::Push(args) => {
            let stage = Stage::Push {
                name: None,
                to: args.to,
            };
            one_stage(&here, &state, ui, args.run, stage, false)
        }
        Command::E2e(args) => {
            let stage = Stage::E2e {
                name: None,
                against: args.against,
            };
            one_stage(&here, &state, ui, args.run, stage, false)
        }
        Command::Promote(args) => {
            let stage = Stage::Promote {
                name: None,
                from: args.from,
                to: args.to,
            };
            one_stage(&here, &state, ui, args.run, stage, args.force)
        }
        Command::History => runner::history(&exec_in(Mode::Real)?, &state),
        Command::Manifest(args) => {
            let app = App::load(&here)?;
            ui.add_secrets(&app.secret_names());
            let env = app.target(&args.env)?;
            let manifest = app.manifest_for(&env)?;
            if ui.is_json() {
                ui.emit(events::Event::Manifest {
                    env: args.env,
                    path: manifest.path.display().to_string(),
                    text: manifest.text,
                });
            } else {
                ui.note(manifest.text.trim_end());
            }
            Ok(())
        }
        Command::Init(args) => {
            let exec = exec_in(Mode::Real)?;
            init::run(&exec, &args)
        }
        Command::Pipelines => {
            // The usable ones are listed even when some file is broken; the broken ones are
            // the error, so that a check in CI fails on them.
            let mut broken = Vec::new();
            for (name, pipeline) in pipeline::all(&here) {
                match pipeline {
                    Ok(pipeline) if ui.is_json() => ui.emit(events::Event::Pipeline {
                        name: pipeline.name.clone(),
                        description: pipeline.description.clone(),
                        source: pipeline.source.to_string(),
                        stages: pipeline.stages.iter().map(pipeline::Stage::name).collect(),
                    }),
                    Ok(pipeline) => ui.note(&format!(
                        "{:<10} {}  ({})",
                        pipeline.name, pipeline.description, pipeline.source
                    )),
                    Err(err) => broken.push((name, err)),
                }
            }
            if broken.is_empty() {
                return Ok(());
            }
            Err(error::user_error(format!(
                "{} broken, so not listed:\n{}",
                match broken.len() {
                    1 => "one pipeline is".to_string(),
                    n => format!("{n} pipelines are"),
                },
                broken
                    .iter()
                    .map(|(name, err)| format!("- {name}: {err:#}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )))
        }
        Command::Rollback(args) => {
            let app = env_record::Subject::find(&here, &state, args.app.as_deref(), &args.env)?;
            ui.add_secrets(&app.secret_names());
            let env = app.target(&args.env)?;
            let exec = exec_in(Mode::Real)?;
            // The lock a release holds on the environment: a rollback must not switch it
            // between a release's push and its e2e tests.
            let _lock = lock::acquire(
                ui,
                &runner::lock_path(&state, app.name(), &args.env),
                &format!("rollback of {} on {}", app.name(), args.env),
                lock::Wait::No,
            )?;
            let platform = platform::for_env(&state, &env);
            let deployment = platform.rollback(&exec, app.name(), &env, args.to.as_deref())?;
            // The rollback happened: a record that cannot be written is told, not a failure.
            let secrets = app.secret_names();
            if let Err(err) =
                env_record::record(&exec, &state, app.name(), &env, &secrets, "rollback")
            {
                ui.warn(&format!("{err:#}"));
            }
            deployment.announce(ui, events::DeployedBy::Rollback);
            ui.note(&format!(
                "{} now serves {} ({}) at {}",
                deployment.env, deployment.version, deployment.artifact, deployment.url
            ));
            Ok(())
        }
        Command::Logs(args) => {
            let app = env_record::Subject::find(&here, &state, args.app.as_deref(), &args.env)?;
            ui.add_secrets(&app.secret_names());
            let env = app.target(&args.env)?;
            let exec = exec_in(Mode::Real)?;
            platform::for_env(&state, &env).logs(&exec, app.name(), &env, args.follow)
        }
        Command::Status => {
            platform::local::status(&state, ui)?;
            watch::status(&state, ui);
            // Environments on cf, when there is an app to read them from: cf knows what runs.
            let Ok(app) = App::load(&here) else {
                return Ok(());
            };
            ui.add_secrets(&app.secret_names());
            let exec = exec_in(Mode::Real)?;
            for name in app.envs.keys() {
                let env = app.target(name)?;
                if env.platform() == config::PlatformKind::Cf {
                    let report = platform::cf::Cf::new(&state).status(&exec, &app.name, &env)?;
                    if ui.is_json() {
                        ui.emit(events::Event::Environment(report));
                    } else {
                        ui.note(&platform::cf::Cf::status_line(&report));
                    }
                }
            }
            Ok(())
        }
        Command::Watch(args) => {
            let app = App::load(&here)?;
            ui.add_secrets(&app.secret_names());
            let options = watch::Options {
                env: args.env,
                interval: args.interval,
                count: if args.once { Some(1) } else { args.count },
                metrics_port: args.metrics_port,
                dry_run: args.dry_run,
            };
            watch::run(ui, &state, &app, &options)
        }
        Command::Down(args) => {
            platform::local::down(&state, ui, args.app.as_deref(), args.env.as_deref())
        }
        Command::Up(args) => platform::local::up(&state, ui, args.app.as_deref()),
        Command::Forget(args) => {
            platform::local::forget(&state, ui, &args.app, args.env.as_deref())
        }
        Command::ServeEnv(args) => platform::local::serve_env(&args.state, &args.app, &args.env),
        Command::Reap => reaper::serve(),
        Command::Completions(args) => {
            ui.raw(&shell::completions(args.shell));
            Ok(())
        }
        Command::Man(args) => match args.dir {
            None => {
                ui.raw(&shell::man_page()?);
                Ok(())
            }
            Some(dir) => {
                let exec = exec_in(Mode::Real)?;
                exec.create_dir_all(&dir)?;
                for file in shell::write_man_pages(&exec, &dir)? {
                    ui.note(&format!("wrote {file}"));
                }
                Ok(())
            }
        },
    }
}

/// Whether a command acts (runs stages, deploys, commits, starts or stops things) rather than
/// answers a question: what it prints is progress, which `-q` silences, where a read command's
/// answer stays. A dry run acts on nothing: its plan is the answer it was asked for.
fn acts(command: &Command) -> bool {
    match command {
        Command::Release(args) => !args.run.dry_run,
        Command::Test(args) => !args.run.dry_run,
        Command::Push(args) => !args.run.dry_run,
        Command::E2e(args) => !args.run.dry_run,
        Command::Promote(args) => !args.run.dry_run,
        Command::Init(args) => !args.list,
        Command::Watch(args) => !args.dry_run,
        Command::Bump(args) => !args.show && !args.dry_run,
        Command::Rollback(_)
        | Command::Down(_)
        | Command::Up(_)
        | Command::Forget(_)
        | Command::ServeEnv(_)
        | Command::Reap => true,
        // `man --dir` writes files, but the files are what was asked for: its lines name them.
        Command::History
        | Command::Manifest(_)
        | Command::Pipelines
        | Command::Status
        | Command::Logs(_)
        | Command::Completions(_)
        | Command::Man(_) => false,
    }
}

/// `--json` promises stdout holds only events; the commands whose answer is text in its own
/// right (a script for a shell, a manual page, the platform's log lines) refuse it rather than
/// break that promise.
fn refuse_json(command: &Command) -> Result<()> {
    let (name, why) = match command {
        Command::Completions(_) => ("completions", "prints a script for a shell to read"),
        Command::Man(_) => ("man", "writes manual pages"),
        Command::Logs(_) => (
            "logs",
            "prints the platform's own log lines, as `cf logs` does, which have no typed form",
        ),
        _ => return Ok(()),
    };
    Err(error::user_error(format!(
        "`cdflow {name}` {why}, not JSON events: run it without --json"
    )))
}

/// Whether a command reads an app's cdflow.toml (and state folder), and so looks for it in the
/// folders above the current one.
fn works_on_an_app(command: &Command) -> bool {
    match command {
        Command::Release(_)
        | Command::Test(_)
        | Command::Push(_)
        | Command::E2e(_)
        | Command::Promote(_)
        | Command::History
        | Command::Manifest(_)
        | Command::Pipelines
        | Command::Bump(_)
        | Command::Rollback(_)
        | Command::Status
        | Command::Logs(_)
        | Command::Watch(_)
        | Command::Down(_)
        | Command::Up(_)
        | Command::Forget(_) => true,
        Command::Init(_)
        | Command::Completions(_)
        | Command::Man(_)
        | Command::ServeEnv(_)
        | Command::Reap => false,
    }
}

fn mode_of(dry_run: bool) -> Mode {
    if dry_run {
        Mode::DryRun
    } else {
        Mode::Real
    }
}

/// `cdflow test`, `push`, `e2e` and `promote`: a pipeline of one stage, run in the checkout.
fn one_stage(
    here: &Path,
    state: &State,
    ui: &Ui,
    flags: RunFlags,
    stage: Stage,
    force: bool,
) -> Result<()> {
    let name = stage.name();
    let pipeline = Pipeline::from_stages(&name, Source::BuiltIn, vec![stage]);
    let exec = Exec::new(here, mode_of(flags.dry_run), ui.clone())?;
    let settings = Settings {
        force,
        lock_wait: flags.lock_wait,
        ..Settings::default()
    };
    runner::run(&exec, state, &pipeline, &settings)?;
    Ok(())
}

fn run_bump(dir: &Path, exec: Exec, args: BumpArgs) -> Result<()> {
    let loaded = config::load(dir)?;
    let facts = bump::read_version(dir, &loaded)?;
    if args.show {
        bump::show(&exec, &facts);
        return Ok(());
    }
    let options = bump::Options {
        bump: args.part.as_deref().unwrap_or_default().parse()?,
        commit: !args.no_commit,
        tag: !args.no_tag,
        allow_dirty: args.allow_dirty,
        message: args.message,
    };
    let bumped = bump::bump(&exec, &facts, &options)?;
    let tag = bumped
        .tag
        .map(|tag| format!(", tag {tag}"))
        .unwrap_or_default();
    let verb = exec.answer("bumped", "dry run: would bump");
    exec.ui().note(&format!(
        "{verb} {} -> {} in {}{tag}",
        bumped.old,
        bumped.new,
        bumped.files.join(", ")
    ));
    Ok(())
}
