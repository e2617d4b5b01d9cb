//! The launchd backend: a [`ServiceManager`](parachute_manager::ServiceManager) that
//! writes plists and drives `launchctl`.
//!
//! Three parts, each replaceable on its own:
//! - [`render`]: a pure function from a [`UnitSpec`](parachute_manager::UnitSpec) to
//!   plist bytes, built with the `plist` crate so escaping is never hand-written.
//! - [`launchctl`]: one runner for every `launchctl` call, with a per-call timeout and the
//!   documented exit codes mapped to a typed error. Its program path is a constructor
//!   argument, so tests run the stateful double in `src/bin/launchctl-double/` (launchctl
//!   cannot run on Linux) and production runs `/bin/launchctl`.
//! - [`manager`]: [`LaunchdManager`], the idempotent verb sequences (enable → bootstrap →
//!   wait, bootout → wait until unloaded, …) that launchd's asynchronous and
//!   stateful quirks require.
//!
//! Nothing here reads the environment or guesses a home: the caller passes the
//! directories, the gui uid (under `sudo`, the invoking user's) and the launchctl runner.
#![warn(missing_docs)]

pub mod launchctl;
pub mod manager;
pub mod render;

pub use launchctl::{ExitCode, Launchctl, LaunchctlError, Output, PRODUCTION_LAUNCHCTL, PrintInfo};
pub use manager::{LaunchdDirs, LaunchdManager, Timing};
pub use render::{BOOT_BUDGET_ENV, parse_plist, read_plist, render_plist};
