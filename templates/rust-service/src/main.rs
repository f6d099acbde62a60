//! {{name}}'s entry point: reads the configuration from the environment, listens, serves,
//! and shuts down gracefully on SIGTERM (how a platform stops an instance) or SIGINT.

use std::process::ExitCode;

use {{crate_name}}::config::Config;
use {{crate_name}}::log::{Level, Logger};
use {{crate_name}}::{AppState, serve};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => return fail(2, &err),
    };
    // Installed first: until then a SIGTERM would kill the process instead of draining it.
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(err), _) | (_, Err(err)) => {
            return fail(1, &format!("cannot install signal handlers: {err}"));
        }
    };
    let addr = config.socket_addr();
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => return fail(1, &format!("cannot listen on {addr}: {err}")),
    };
    let logger = Logger::stdout(config.log_level);
    let state = AppState::new(&config, logger.clone());
    let shutdown = async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        logger.log(Level::Info, "signal received", json!({"signal": name}));
    };
    match serve(listener, state, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(1, &format!("the server failed: {err}")),
    }
}

/// Reports a fatal error on stderr and picks the exit code.
fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("{{name}}: error: {message}");
    ExitCode::from(code)
}
