//! cdflow: continuous delivery for services on a PaaS.

use clap::Parser;

/// Continuous delivery for services on a PaaS: test, bump, push to staging, e2e, promote.
#[derive(Parser, Debug)]
#[command(name = "cdflow", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
