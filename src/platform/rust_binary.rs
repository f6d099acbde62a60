//! Which binary a Rust app runs, for both platforms: the local one stages it, the cf driver
//! builds it for the stack.

use std::path::Path;

use anyhow::{Context, Result};

use crate::error::user_error;

/// The program of the manifest's command (`./name`), else the package's name in Cargo.toml.
pub fn name(command: Option<&str>, dir: &Path) -> Result<String> {
    if let Some(command) = command {
        let words = shlex::split(command).unwrap_or_default();
        if let Some(program) = words.first() {
            let name = program.strip_prefix("./").unwrap_or(program);
            if !name.is_empty() && !name.contains('/') {
                return Ok(name.to_string());
            }
        }
        return Err(user_error(format!(
            "the manifest's command `{command}` does not start with the app's binary \
             (`./name`), so cdflow cannot tell which binary to build"
        )));
    }
    let path = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|err| user_error(format!("{} is not valid TOML: {err}", path.display())))?;
    doc.get("package")
        .and_then(|package| package.get("name"))
        .and_then(|name| name.as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            user_error(format!(
                "{} has no [package] name: give the manifest a `command` that runs the binary \
                 (`./name`)",
                path.display()
            ))
        })
}
