//! The `parachute` binary: parse, run, print the error once, exit with a documented code.

use std::process::ExitCode;

fn main() -> ExitCode {
    let env = host_env();
    parachute::cli::main(env)
}

/// The one place the process environment is read.
#[expect(clippy::disallowed_methods, reason = "the binary's single environment snapshot")]
fn host_env() -> parachute::cli::HostEnv {
    parachute::cli::HostEnv::from_vars(std::env::vars_os().collect())
}
