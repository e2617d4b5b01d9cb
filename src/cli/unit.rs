//! `parachute unit …`: the hub unit in the platform manager (filled in by the backend issue).

use super::HostEnv;
use super::exit::Code;

/// The `unit` verbs.
#[derive(Debug, clap::Subcommand)]
pub enum Verb {
    /// Print the unit this binary would install.
    Render,
}

/// Runs a `unit` verb.
pub fn run(_verb: Verb, _env: &HostEnv) -> Code {
    eprintln!("parachute unit: not built yet");
    Code::Failure
}
