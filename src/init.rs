//! `cdflow init`: a new service from a template in `templates/`, built into the binary.
//!
//! (Being built: see issue 7.)

use anyhow::{bail, Result};

use crate::cli::InitArgs;
use crate::exec::Exec;

pub fn run(_exec: &Exec, args: &InitArgs) -> Result<()> {
    bail!(
        "cdflow init is not built yet (template `{}`)",
        args.template
    )
}
