//! Exit codes, as a type. Every verb documents the subset it uses in its `--help`.

use std::process::ExitCode;

/// The process exit codes of `parachute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// The verb did what was asked (or it was already so).
    Success = 0,
    /// The verb ran but the result is a failure (a module crashed, a unit failed to start).
    Failure = 1,
    /// Bad usage or bad input (malformed services.json, hostile value, unknown module).
    Usage = 2,
    /// No hub is running to talk to.
    NoHub = 3,
    /// No service manager is available on this machine.
    NoManager = 4,
    /// Permission denied by the manager or the file system.
    Permission = 5,
    /// A wait ran out of time.
    Timeout = 6,
    /// The port is held by a process that is not ours.
    PortHeld = 7,
    /// A clean shutdown was not possible (something had to be killed).
    UncleanShutdown = 8,
    /// A unit or state file could not be written (`migrate`: write-failed).
    WriteFailed = 9,
    /// Another run holds the lock (`migrate`: a cutover or teardown is in progress).
    Locked = 10,
}

/// The table printed at the end of `parachute --help`.
pub const HELP_TABLE: &str = "\
Exit codes:
  0  success (or already in the requested state)
  1  the operation ran and failed (a module crashed, a unit did not start)
  2  bad usage or bad input (malformed services.json, hostile value)
  3  no running hub to talk to
  4  no service manager on this machine
  5  permission denied
  6  timed out
  7  a port is held by a process that is not ours
  8  shutdown was not clean (something had to be SIGKILLed)
  9  a unit or state file could not be written
  10 another cutover or teardown holds the lock";

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(c as u8)
    }
}
