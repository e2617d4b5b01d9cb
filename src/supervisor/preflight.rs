//! Can this request start at all? Resolving `argv[0]` before the spawn, and turning a
//! failed spawn into a structured `startError`.
//!
//! Both run for every spawn (operator start, restart, crash respawn). Resolution uses the
//! child's own PATH (from the request's env) and cwd, not the supervisor's (R18), so a
//! binary reachable only through a module's `.env` PATH, or a relative `./bin/x` in its
//! install dir, is found. No failure leaves a module in `starting` (R31).

use std::ffi::OsStr;
use std::path::Path;

use parachute_process::{Resolve, SpawnError, resolve_program};

use super::SpawnRequest;
use super::diagnostics as diag;
use super::state::StartError;

/// Resolves `argv[0]` the way the child will: its own PATH and cwd (R18).
pub fn preflight(req: &SpawnRequest) -> Result<(), Box<StartError>> {
    let Some(argv0) = req.argv.first() else { return Ok(()) };
    // A missing cwd is reported precisely by the spawn (`spawn_failed`), not as a
    // missing binary.
    if req.cwd.as_deref().is_some_and(|c| !c.is_dir()) {
        return Ok(());
    }
    let path_env = req.env.iter().rev().find(|(k, _)| k == "PATH").map_or("", |(_, v)| v.as_str());
    match resolve_program(Path::new(argv0), OsStr::new(path_env), req.cwd.as_deref()) {
        Ok(_) => Ok(()),
        Err(Resolve::Missing) => Err(Box::new(diag::missing_dependency(argv0))),
        Err(Resolve::NotExecutable { path }) => Err(Box::new(diag::non_executable(argv0, &path))),
    }
}

/// Every spawn failure becomes a structured error and `crashed` — never a stuck
/// `starting` (R31).
pub fn spawn_error(short: &str, req: &SpawnRequest, e: SpawnError) -> StartError {
    let argv0 = req.argv.first().map_or("", String::as_str);
    match e {
        SpawnError::NotFound { .. } => diag::missing_dependency(argv0),
        SpawnError::NotExecutable { path, .. } => diag::non_executable(argv0, &path),
        e @ SpawnError::TooLarge { .. } => diag::too_large(short, req, &e.to_string()),
        other => diag::spawn_failed(short, &other.to_string()),
    }
}
