//! SIGINT and SIGTERM: the first asks the run to stop, a second one exits at once, except
//! while an all-or-nothing change is being made (a bump's writes, commit and tag), which always
//! finishes or rolls back first.
//!
//! Children run in process groups of their own (see `exec`), so a Ctrl-C on the terminal reaches
//! cdflow alone; cdflow then decides what to stop.

use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static CRITICAL: AtomicBool = AtomicBool::new(false);

/// Installs the handlers.
pub fn install() -> anyhow::Result<()> {
    for signal in [SIGINT, SIGTERM] {
        // SAFETY: the handler only touches atomics and calls `_exit`, which are
        // async-signal-safe.
        unsafe {
            signal_hook::low_level::register(signal, || {
                let again = REQUESTED.swap(true, Ordering::SeqCst);
                if again && !CRITICAL.load(Ordering::SeqCst) {
                    signal_hook::low_level::exit(crate::error::code::INTERRUPTED as i32);
                }
            })?;
        }
    }
    Ok(())
}

/// Whether a stop was asked for.
pub fn stop_requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Marks the start or the end of a change that no signal may cut in half; returns the previous
/// state, to restore when changes nest.
pub fn set_critical(critical: bool) -> bool {
    CRITICAL.swap(critical, Ordering::SeqCst)
}
