//! SIGINT and SIGTERM: the first asks the run to stop, a second one exits at once.
//!
//! Children run in process groups of their own (see `exec`), so a Ctrl-C on the terminal reaches
//! cdflow alone; cdflow then decides what to stop, which is how a bump in progress always ends
//! with the old version everywhere or the new one everywhere.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};

static REQUESTED: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

fn flag() -> &'static Arc<AtomicBool> {
    REQUESTED.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Installs the handlers. A second signal while the first is pending exits with code 130.
pub fn install() -> anyhow::Result<()> {
    let flag = flag();
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(
            signal,
            crate::error::code::INTERRUPTED as i32,
            Arc::clone(flag),
        )?;
        signal_hook::flag::register(signal, Arc::clone(flag))?;
    }
    Ok(())
}

/// Whether a stop was asked for.
pub fn stop_requested() -> bool {
    flag().load(Ordering::SeqCst)
}
