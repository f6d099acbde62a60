//! cdflow's integration tests: one binary, sharing a small harness.

mod bump;
mod cf;
mod ci_examples;
mod harness;
mod init;
mod input;
mod kill;
mod local;
mod quickstart;
mod release;
mod surface;
mod tools;
mod watch;
