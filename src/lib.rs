//! Parachute: a supervisor for the hub's modules and the glue to the platform's service
//! manager.
//!
//! The map, top down:
//!
//! ```text
//!   parachute (CLI, src/cli)            one file per verb; human or --json output; ExitCode
//!     ├─ serve ──► supervisor ──► parachute-process   (spawn in own group, pidfd, reap, /proc)
//!     │              └─ model                          (Home, services.json, .env, pidfiles)
//!     ├─ start|stop|restart|status|logs ──► control API of a running `serve`
//!     └─ unit … ──► detect ──► parachute-manager trait
//!                                ├─ parachute-systemd    (zbus, user/system bus)
//!                                ├─ parachute-launchd    (plist + launchctl)
//!                                └─ parachute-container  (no manager: say so, write nothing)
//! ```
//!
//! Library code never reads the process environment or the real home directory: `main`
//! snapshots the environment once into [`cli::HostEnv`] and passes explicit values down,
//! so tests can never reach the host's manager or home by accident (enforced by
//! `clippy.toml`).
#![warn(missing_docs)]

pub(crate) mod api;
pub mod boot_budget;
pub mod cli;
pub(crate) mod client;
pub mod cutover;
pub mod detect;
pub mod hooks;
pub mod hub_unit;
pub mod logfile;
pub mod model;
pub(crate) mod port_holder;
pub mod privsep;
pub(crate) mod rfc3339;
pub(crate) mod serve;
/// A binary's GNU build id (what `/health`'s `buildId` reports), for clients and packagers
/// that must know which build an in-place upgrade will run.
pub use serve::build_id;
pub mod supervisor;
pub mod text;
pub(crate) mod token;
