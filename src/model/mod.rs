//! The on-disk model of a Parachute box: the home and every path in it, `services.json`,
//! per-module `.env` files, pidfiles, the hub port file, `hub-instance.json`, and the one
//! resolver that turns a services.json row into a spawn request.
//!
//! Everything here is plain data and file formats: no process is started, nothing is
//! printed, and no environment variable or real home directory is read — callers pass a
//! [`home::Home`] and a [`modules::HubContext`]. Readers never rewrite what they read;
//! every write is atomic (`parachute_fsx`). Each format has its own error type naming the
//! file, row or line and field at fault.

pub(crate) mod env_file;
pub mod home;
pub mod hub_instance;
pub mod modules;
pub mod names;
pub(crate) mod pidfile;
pub(crate) mod service_row;
pub mod services;
