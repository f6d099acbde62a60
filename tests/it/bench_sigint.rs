//! A SIGINT (Ctrl-C) in the middle of a `bench` stage's load: the load library listens for
//! Ctrl-C too, and must not print its own line into cdflow's `--json` output.

/// As a SIGTERM does: the load stops at once, the run ends as interrupted, and every line on
/// stdout is an event.
#[test]
fn a_sigint_stops_the_load_and_prints_only_events() {
    crate::bench::the_load_stops_at_once_on(libc::SIGINT);
}
