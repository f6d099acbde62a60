//! The kinds of failure cdflow tells apart, and the exit code of each.
//!
//! Errors travel as `anyhow::Error` with context added at every layer; one of these marker types
//! somewhere in the chain decides the exit code, so a caller never has to thread codes by hand.

use std::fmt;
use std::process::ExitCode;

/// Exit codes, documented in `--help` and the README.
pub mod code {
    /// A stage or a command failed.
    pub const FAILED: u8 = 1;
    /// Bad configuration, bad input or a refused precondition: nothing was changed.
    pub const CONFIG: u8 = 2;
    /// Interrupted by SIGINT or SIGTERM.
    pub const INTERRUPTED: u8 = 130;
}

/// Bad input from the user: configuration, arguments, or a precondition that does not hold.
/// Nothing has been changed when this is returned.
#[derive(Debug)]
pub struct UserError(pub String);

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

/// Builds an `anyhow::Error` that exits with [`code::CONFIG`].
pub fn user_error(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UserError(message.into()))
}

/// The run was stopped by a signal.
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Whether the run was stopped by a signal somewhere under `err`.
pub fn is_interrupted(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<Interrupted>())
}

/// The exit code for an error: the most specific marker found in its chain wins.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    if is_interrupted(err) {
        ExitCode::from(code::INTERRUPTED)
    } else if err.chain().any(|e| e.is::<UserError>()) {
        ExitCode::from(code::CONFIG)
    } else {
        ExitCode::from(code::FAILED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn markers_are_found_under_context() {
        let err = Err::<(), _>(user_error("bad key"))
            .context("reading cdflow.toml")
            .unwrap_err();
        assert_eq!(exit_code(&err), ExitCode::from(code::CONFIG));
        let err = Err::<(), _>(anyhow::Error::new(Interrupted))
            .context("stage `test`")
            .unwrap_err();
        assert_eq!(exit_code(&err), ExitCode::from(code::INTERRUPTED));
        assert_eq!(
            exit_code(&anyhow::anyhow!("cf push failed")),
            ExitCode::from(code::FAILED)
        );
    }
}
