//! The service's entry point: reads the configuration from the environment, binds, serves, and shuts down gracefully on SIGTERM or SIGINT.

use std::io::Write;
use std::process::ExitCode;

use example_app::config::Config;
use example_app::log::{self, Level, Logger, Value};
use example_app::{serve, AppState};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => return fail(2, &err.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Workers batch their request lines and write them out when idle;
        // see the log module.
        .on_thread_park(log::on_worker_park)
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(1, &format!("cannot start the async runtime: {err}")),
    };
    let code = runtime.block_on(run(config));
    drop(runtime);
    log::flush();
    code
}

async fn run(config: Config) -> ExitCode {
    // Installed before anything else: until then SIGTERM would kill the
    // process outright instead of draining it.
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(err), _) | (_, Err(err)) => {
            return fail(1, &format!("cannot install signal handlers: {err}"))
        }
    };

    let addr = config.socket_addr();
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => return fail(1, &format!("cannot listen on {addr}: {err}")),
    };

    let logger = Logger::stdout(config.log_level);
    logger.event(
        Level::Debug,
        "configuration",
        &[
            ("max_body_bytes", Value::Num(config.max_body_bytes as u64)),
            ("log_level", Value::Str(config.log_level.as_str())),
            (
                "shutdown_grace_seconds",
                Value::Num(config.shutdown_grace.as_secs()),
            ),
        ],
    );
    let state = AppState::new(&config, logger.clone());
    let shutdown = async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        logger.event(
            Level::Info,
            "signal received",
            &[("signal", Value::Str(name))],
        );
    };

    // A platform stopping the app is not a failure, so a grace period that
    // ran out still exits 0; the log line says requests were cut off.
    match serve(listener, state, config.shutdown_grace, shutdown).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => fail(1, &format!("server failed: {err}")),
    }
}

/// Reports a fatal error on stderr (not a panic) and picks the exit code.
fn fail(code: u8, message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "example_app: error: {message}");
    ExitCode::from(code)
}
