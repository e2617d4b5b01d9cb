//! `parachute serve`: the hub runtime (filled in by the serve issue).

use super::HostEnv;
use super::exit::Code;

/// Arguments of `parachute serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Parachute home (default: $PARACHUTE_HOME, else ~/.parachute).
    #[arg(long, value_name = "DIR")]
    pub home: Option<std::path::PathBuf>,
}

/// Runs `serve`.
pub fn run(_args: Args, _env: &HostEnv) -> Code {
    eprintln!("parachute serve: not built yet");
    Code::Failure
}
