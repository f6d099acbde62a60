//! cdflow's integration tests: one binary, sharing a small harness.

mod anywhere;
mod bench;
mod bench_sigint;
mod bump;
mod bump_message;
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
mod release;
mod repo_arg;
mod services;
mod surface;
mod tools;
mod watch;
mod watch_dry_run;
mod watch_timeout;
