//! Module state as it goes over the wire (upstream-compatible camelCase shape).
//!
//! These types are the contract between the supervisor, the control API, the CLI and
//! `parachute status --json`. Field names and status strings match the upstream hub's, so
//! existing consumers keep working.

use serde::{Deserialize, Serialize};

/// A module's lifecycle status. Closed set: consumers rely on exactly these strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModuleStatus {
    /// Accepted, preflight/spawn in flight.
    Starting,
    /// A child was spawned and has not been seen to exit (the port may not be bound yet;
    /// readiness problems are reported in `startError`, never here).
    Running,
    /// Stopped on request (operator or shutdown).
    Stopped,
    /// Terminal until an operator acts: budget exhausted, preflight failure, squatter.
    Crashed,
    /// Waiting out the restart delay after a crash, or stopping the old child of a restart.
    Restarting,
}

impl ModuleStatus {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleStatus::Starting => "starting",
            ModuleStatus::Running => "running",
            ModuleStatus::Stopped => "stopped",
            ModuleStatus::Crashed => "crashed",
            ModuleStatus::Restarting => "restarting",
        }
    }
}

/// The structured reason a module did not start (or is not reachable).
///
/// `error_type` is open-ended on the wire; these are the values this supervisor produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartError {
    /// `missing_dependency`, `non_executable`, `spawn_failed`, `port_squatter`,
    /// `started_but_unbound`.
    pub error_type: String,
    /// A complete, human-readable description (no ANSI).
    pub error_description: String,
    /// When it was recorded (RFC 3339, UTC).
    pub at: String,
    /// The binary that is missing or not executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// Where the non-executable file was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The port involved (squatter, unbound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The pid holding the port (squatter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_pid: Option<u32>,
    /// The holder's command line, when readable (squatter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_cmdline: Option<String>,
    /// The OS error text (spawn_failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_error: Option<String>,
}

/// The public snapshot of one module. Replaced, never mutated, on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleState {
    /// Map key and log prefix (`vault`, or the row name for third-party modules).
    pub short: String,
    /// Lifecycle status.
    pub status: ModuleStatus,
    /// The current child's pid (also its process group id). Absent when no child runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When the current/last child was spawned (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Crashes counted in the sliding window.
    pub restarts_in_window: u32,
    /// When the last counted crash happened (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_crash_at: Option<String>,
    /// Exit code of the most recent exit; `null` when it died from a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<Option<i32>>,
    /// Structured start diagnostic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_error: Option<StartError>,
}

impl ModuleState {
    /// A fresh state with no child, no history and no diagnostic.
    pub fn new(short: impl Into<String>, status: ModuleStatus) -> ModuleState {
        ModuleState {
            short: short.into(),
            status,
            pid: None,
            started_at: None,
            restarts_in_window: 0,
            last_crash_at: None,
            last_exit_code: None,
            start_error: None,
        }
    }
}
