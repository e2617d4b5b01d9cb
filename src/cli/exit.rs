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
    /// The home runs the legacy detached daemons (the 0.6 layout), not a supervised hub
    /// (`status`): `parachute migrate --to-supervised` moves it.
    Legacy = 11,
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
  10 another cutover or teardown holds the lock
  11 the home runs the legacy detached daemons, not a supervised hub (migrate it)";

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(c as u8)
    }
}

/// The exit code for a service-manager error kind (one table for every verb).
pub fn for_manager(kind: parachute_manager::ErrorKind) -> Code {
    use parachute_manager::ErrorKind;
    match kind {
        ErrorKind::ManagerUnavailable => Code::NoManager,
        ErrorKind::PermissionDenied => Code::Permission,
        ErrorKind::Timeout => Code::Timeout,
        ErrorKind::InvalidSpec => Code::Usage,
        _ => Code::Failure,
    }
}

/// Prints a verb's error once, at the edge: `parachute <verb>: <message>` on stderr, then
/// the log lines that explain it (made safe for a terminal).
pub fn print_error(verb: &str, message: &str, log_tail: &[String]) {
    use std::io::Write as _;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "parachute {verb}: {message}");
    if !log_tail.is_empty() {
        let _ = writeln!(err, "  last log lines:");
        for l in log_tail {
            let _ = writeln!(err, "    {}", crate::text::line(l));
        }
    }
}

/// Prints a warning once: `parachute <verb>: warning: <message>` on stderr.
pub fn print_warning(verb: &str, message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "parachute {verb}: warning: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use parachute_manager::ErrorKind;

    #[test]
    fn manager_error_kinds_map_to_documented_exit_codes() {
        assert_eq!(for_manager(ErrorKind::ManagerUnavailable), Code::NoManager);
        assert_eq!(for_manager(ErrorKind::PermissionDenied), Code::Permission);
        assert_eq!(for_manager(ErrorKind::Timeout), Code::Timeout);
        assert_eq!(for_manager(ErrorKind::InvalidSpec), Code::Usage);
        assert_eq!(for_manager(ErrorKind::JobFailed), Code::Failure);
        assert_eq!(for_manager(ErrorKind::Unreadable), Code::Failure);
        for c in [Code::NoManager, Code::Permission, Code::Timeout, Code::Usage, Code::Failure] {
            assert!(HELP_TABLE.contains(&format!("  {}  ", c as u8)), "{c:?} is in the table");
        }
    }
}
