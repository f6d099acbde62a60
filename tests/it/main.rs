//! cdflow's integration tests: one binary, sharing a small harness.

mod anywhere;
mod bench;
mod bump;
mod canary;
mod cf;
mod ci_examples;
mod git_http;
mod harness;
mod init;
mod input;
mod json;
mod kill;
mod local;
mod plans;
mod quickstart;
mod quiet;
mod readme;
mod release;
mod services;
mod surface;
mod tools;
mod watch;
