//! The command-line edge: argument parsing, the environment snapshot, output and exit codes.
//!
//! Each verb lives in its own file with an `Args` struct (clap) and a `run` function that
//! returns an [`ExitCode`](exit::Code). Errors are printed once, at this edge, through
//! [`exit::print_error`] (exit codes from the one table in [`exit`]); verbs
//! that take `--json` print their result object instead. Library crates below never read
//! the environment: [`HostEnv`] is the snapshot `main` takes and everything is derived from
//! it explicitly.

pub mod docs;
pub mod exit;
pub mod hooks;
pub mod host;
pub mod migrate;
pub mod modules;
pub mod offer;
pub mod serve;
pub mod status;
pub mod unit;
pub mod upgrade;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A snapshot of the process environment, taken once by `main`.
///
/// Nothing else in the program reads environment variables; tests build a `HostEnv` by
/// hand, so a test cannot see the developer's `HOME`, bus or manager.
#[derive(Debug, Clone, Default)]
pub struct HostEnv {
    vars: BTreeMap<OsString, OsString>,
}

impl HostEnv {
    /// Builds a snapshot from `(name, value)` pairs.
    pub fn from_vars(vars: Vec<(OsString, OsString)>) -> HostEnv {
        HostEnv { vars: vars.into_iter().collect() }
    }

    /// A variable's value, if set and valid UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(&OsString::from(name)).and_then(|v| v.to_str())
    }

    /// A variable's value, if set and non-empty, as a path.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.vars.get(&OsString::from(name)).filter(|v| !v.is_empty()).map(PathBuf::from)
    }

    /// Every variable, for building a child's environment.
    pub fn vars(&self) -> impl Iterator<Item = (&OsString, &OsString)> {
        self.vars.iter()
    }
}

/// What `parachute --help` and the manual page say about the program as a whole.
const LONG_ABOUT: &str = "\
Parachute keeps a hub's modules (the processes listed in <home>/services.json, each on its own \
TCP port) alive: `parachute serve` is the hub, a supervisor that starts every module in its own \
process group, restarts crashed ones within a crash budget, reports why a module did not start, \
and answers a control API on 127.0.0.1. The hub itself runs under the platform's service manager \
(`parachute unit install`: a systemd unit or a launchd job), or in the foreground in a container. \
`parachute migrate --to-supervised` moves a box from the legacy detached daemons to that model.

The home is --home DIR, else $PARACHUTE_HOME, else ~/.parachute. See docs/ in the source tree, \
and `parachute man --out DIR` for one manual page per subcommand.";

/// Parachute: run the hub's modules under a supervisor, and the supervisor under the
/// platform's service manager.
#[derive(Debug, Parser)]
#[command(name = "parachute", version, about, long_about = LONG_ABOUT, propagate_version = true)]
#[command(after_help = exit::HELP_TABLE)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub in the foreground: supervise every module in services.json and answer
    /// the loopback control API.
    Serve(serve::Args),
    /// Start a module (or, without <SVC>, every module) through the running hub.
    Start(modules::OpArgs),
    /// Stop a module (or, without <SVC>, every module) through the running hub.
    Stop(modules::OpArgs),
    /// Restart a module (or, without <SVC>, every module) through the running hub.
    Restart(modules::OpArgs),
    /// Show the hub and every module's state.
    Status(status::StatusArgs),
    /// Print (or follow) a module's buffered output.
    Logs(modules::LogsArgs),
    /// Replace the running hub's image with the binary at its path (--in-place: same pid,
    /// every module keeps running).
    Upgrade(upgrade::Args),
    /// Manage the hub's unit in the platform service manager (systemd, launchd).
    #[command(subcommand)]
    Unit(unit::Verb),
    /// Move a box from the legacy detached daemons to a hub supervised by the service
    /// manager (`--to-supervised`), or remove the hub unit (`--teardown`).
    Migrate(migrate::Args),
    /// Print a shell completion script (bash, zsh, fish) generated from this binary's
    /// command-line definition.
    Completions(docs::CompletionsArgs),
    /// Print the manual page, or write one page per subcommand with --out DIR.
    Man(docs::ManArgs),
    /// Packaging hook after install or upgrade: on --upgrade, refresh an installed hub unit
    /// for this binary (in place when only the binary changed, else restart on drift; roll
    /// back if the hub does not come back).
    Postinstall(hooks::PostinstallArgs),
    /// Packaging hook before removal: stop and remove the hub unit (not on --upgrade);
    /// --purge also deletes the cutover journal and lock, never the home's data.
    Preremove(hooks::PreremoveArgs),
}

/// Parses arguments, runs the verb, prints any error once and returns the exit code.
pub fn main(env: HostEnv) -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve(args) => serve::run(args, &env),
        Command::Start(args) => modules::run_op(crate::client::Op::Start, args, &env),
        Command::Stop(args) => modules::run_op(crate::client::Op::Stop, args, &env),
        Command::Restart(args) => modules::run_op(crate::client::Op::Restart, args, &env),
        Command::Status(args) => status::run_status(args, &env),
        Command::Logs(args) => modules::run_logs(args, &env),
        Command::Upgrade(args) => upgrade::run(args, &env),
        Command::Unit(verb) => unit::run(verb, &env),
        Command::Migrate(args) => migrate::run(args, &env),
        Command::Completions(args) => docs::run_completions(args),
        Command::Man(args) => docs::run_man(args),
        Command::Postinstall(args) => hooks::postinstall(args, &env),
        Command::Preremove(args) => hooks::preremove(args, &env),
    };
    code.into()
}
