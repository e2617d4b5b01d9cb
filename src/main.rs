//! The `parachute` binary: parse, run, print the error once, exit with a documented code.

use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    let env = host_env();
    init_tracing(env.get("RUST_LOG"));
    parachute::cli::main(env)
}

/// The one place the process environment is read.
#[expect(clippy::disallowed_methods, reason = "the binary's single environment snapshot")]
fn host_env() -> parachute::cli::HostEnv {
    parachute::cli::HostEnv::from_vars(std::env::vars_os().collect())
}

/// Warnings and errors from library code (a corrupt state file, a failed state-file write,
/// a broken output) go to stderr — under a service manager, its log. Installed before
/// anything else runs, so nothing logged is ever discarded. `RUST_LOG` may widen or narrow
/// it; the default is `warn`. No timestamps: the service manager's log adds them.
fn init_tracing(directives: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .parse_lossy(directives.unwrap_or_default());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .with_env_filter(filter)
        .try_init();
}
