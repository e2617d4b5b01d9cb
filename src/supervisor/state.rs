//! Module state as it goes over the wire (upstream-compatible camelCase shape).
//!
//! These types are the contract between the supervisor, the control API, the CLI and
//! `parachute status --json`. Field names and status strings match the upstream hub's, so
//! existing consumers keep working.

use serde::{Deserialize, Serialize};

use super::dependencies::InstallRecipes;

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
/// On the wire it is one flat object, `error_type` naming the kind and only that kind's
/// fields present (upstream's shape; see [`StartErrorWire`]). In code the kind and its
/// fields are one value, [`StartErrorKind`], so nothing matches on strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "StartErrorWire", from = "StartErrorWire")]
pub struct StartError {
    /// What went wrong, with the facts that belong to it.
    pub kind: StartErrorKind,
    /// A complete, human-readable description (no ANSI).
    pub description: String,
    /// When it was recorded (RFC 3339, UTC).
    pub at: String,
}

/// The kinds of [`StartError`] and their facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartErrorKind {
    /// `argv[0]` was not found on the child's PATH.
    MissingDependency {
        /// The binary that is missing.
        binary: String,
    },
    /// `argv[0]` exists but lacks the execute bit.
    NonExecutable {
        /// The binary as the module names it.
        binary: String,
        /// Where the non-executable file was found.
        path: String,
    },
    /// The OS refused the spawn for another reason (cwd gone, permission, limits).
    SpawnFailed {
        /// The spawner's complete message.
        os_error: String,
    },
    /// The declared port is held by a process outside the supervisor.
    PortSquatter {
        /// The declared port.
        port: u16,
        /// The pid holding it.
        holder_pid: u32,
        /// The holder's command line, when readable.
        holder_cmdline: Option<String>,
    },
    /// The child lives but nothing of its own listens on the port after the readiness window.
    StartedButUnbound {
        /// The declared port.
        port: u16,
    },
    /// A kind this build does not know (a newer hub sent it); its description says it all.
    Other {
        /// The wire's `error_type`.
        error_type: String,
    },
}

impl StartErrorKind {
    /// The wire's `error_type`.
    pub fn wire_name(&self) -> &str {
        match self {
            StartErrorKind::MissingDependency { .. } => "missing_dependency",
            StartErrorKind::NonExecutable { .. } => "non_executable",
            StartErrorKind::SpawnFailed { .. } => "spawn_failed",
            StartErrorKind::PortSquatter { .. } => "port_squatter",
            StartErrorKind::StartedButUnbound { .. } => "started_but_unbound",
            StartErrorKind::Other { error_type } => error_type,
        }
    }
}

/// `error_type: description`, the one-line form the CLI and the boot report print.
impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.wire_name(), self.description)
    }
}

/// The flat wire shape of [`StartError`], field for field as upstream sends it (the order
/// too: consumers diff it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StartErrorWire {
    error_type: String,
    error_description: String,
    at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    binary: Option<String>,
    // The install card of `missing_dependency` (upstream's fields; `why` and `docs_url`
    // are `null`, not absent, for a binary the registry does not know). Derived from the
    // binary on the way out, so a reader ignores them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    why: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    docs_url: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    install: Option<InstallRecipes<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sysadmin_hint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    holder_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    holder_cmdline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    os_error: Option<String>,
}

impl From<StartError> for StartErrorWire {
    fn from(e: StartError) -> Self {
        let mut w = StartErrorWire {
            error_type: e.kind.wire_name().to_owned(),
            error_description: e.description,
            at: e.at,
            binary: None,
            why: None,
            docs_url: None,
            install: None,
            sysadmin_hint: None,
            path: None,
            port: None,
            holder_pid: None,
            holder_cmdline: None,
            os_error: None,
        };
        match e.kind {
            StartErrorKind::MissingDependency { binary } => {
                let known = super::dependencies::lookup(&binary);
                w.why = Some(known.map(|k| k.why.to_owned()));
                w.docs_url = Some(known.and_then(|k| k.docs_url).map(str::to_owned));
                w.install = Some(known.map_or_else(InstallRecipes::default, |k| InstallRecipes {
                    darwin: k.install.darwin.map(str::to_owned),
                    linux: k.install.linux.map(str::to_owned),
                    generic: k.install.generic.map(str::to_owned),
                }));
                w.sysadmin_hint = Some(super::dependencies::SYSADMIN_HINT.to_owned());
                w.binary = Some(binary);
            }
            StartErrorKind::NonExecutable { binary, path } => {
                w.binary = Some(binary);
                w.path = Some(path);
            }
            StartErrorKind::SpawnFailed { os_error } => w.os_error = Some(os_error),
            StartErrorKind::PortSquatter { port, holder_pid, holder_cmdline } => {
                w.port = Some(port);
                w.holder_pid = Some(holder_pid);
                w.holder_cmdline = holder_cmdline;
            }
            StartErrorKind::StartedButUnbound { port } => w.port = Some(port),
            StartErrorKind::Other { .. } => {}
        }
        w
    }
}

/// A known `error_type` that lacks its required fields is kept as [`StartErrorKind::Other`]
/// rather than refused: a hub's status must stay readable.
impl From<StartErrorWire> for StartError {
    fn from(w: StartErrorWire) -> Self {
        let kind = match (w.error_type.as_str(), w.binary, w.path, w.port, w.holder_pid, w.os_error) {
            ("missing_dependency", Some(binary), ..) => StartErrorKind::MissingDependency { binary },
            ("non_executable", Some(binary), Some(path), ..) => {
                StartErrorKind::NonExecutable { binary, path }
            }
            ("spawn_failed", .., Some(os_error)) => StartErrorKind::SpawnFailed { os_error },
            ("port_squatter", _, _, Some(port), Some(holder_pid), _) => {
                StartErrorKind::PortSquatter { port, holder_pid, holder_cmdline: w.holder_cmdline }
            }
            ("started_but_unbound", _, _, Some(port), ..) => StartErrorKind::StartedButUnbound { port },
            _ => StartErrorKind::Other { error_type: w.error_type },
        };
        StartError { kind, description: w.error_description, at: w.at }
    }
}

/// The public snapshot of one module. Replaced, never mutated, on every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Children started after the first since the hub began supervising the module (crash
    /// respawns and operator restarts).
    #[serde(default)]
    pub restarts_total: u32,
    /// When the last counted crash happened (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_crash_at: Option<String>,
    /// Exit code of the most recent exit; `null` when it died from a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<Option<i32>>,
    /// The signal that ended the most recent exit (`9` for SIGKILL); absent when it exited
    /// with a code or has not exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_signal: Option<i32>,
    /// When the most recent child ended (RFC 3339), crash or stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_at: Option<String>,
    /// The last line the module wrote to stderr (raw: show it through `crate::text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_line: Option<ErrorLine>,
    /// What its process tree costs now (memory, CPU, listening ports); present in the
    /// control API's answers while a child runs, absent in the hub's own snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<super::resources::Resources>,
    /// When the current child passed its readiness gate (its port answered; at once for a
    /// module without a port). Absent while the gate is pending and when no child runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<String>,
    /// When a crashed module's respawn is due (RFC 3339), while it is `restarting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_restart_at: Option<String>,
    /// Structured start diagnostic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_error: Option<StartError>,
}

impl ModuleState {
    /// Records how the last child ended.
    pub fn record_exit(&mut self, code: Option<i32>, signal: Option<i32>) {
        self.last_exit_code = Some(code);
        self.last_exit_signal = signal;
        self.last_exit_at = Some(crate::rfc3339::now());
    }

    /// How the last child ended, in words (`exited (code=1)`, `killed by SIGKILL (signal 9)`);
    /// `None` before the first exit.
    pub fn last_exit(&self) -> Option<String> {
        // `lastExitCode: null` reads back as absent, so a signal alone is an exit too.
        match (self.last_exit_code, self.last_exit_signal) {
            (None, None) => None,
            (code, signal) => Some(super::diagnostics::exit_reason(code.flatten(), signal)),
        }
    }

    /// A fresh state with no child, no history and no diagnostic.
    pub fn new(short: impl Into<String>, status: ModuleStatus) -> ModuleState {
        ModuleState {
            short: short.into(),
            status,
            pid: None,
            started_at: None,
            restarts_in_window: 0,
            restarts_total: 0,
            last_crash_at: None,
            last_exit_at: None,
            last_error_line: None,
            resources: None,
            last_exit_code: None,
            last_exit_signal: None,
            next_restart_at: None,
            ready_at: None,
            start_error: None,
        }
    }
}

/// A line a module wrote to stderr, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorLine {
    /// The line without its newline, at most [`ErrorLine::MAX_BYTES`] (invalid UTF-8
    /// replaced).
    pub text: String,
    /// When it was read (RFC 3339).
    pub at: String,
}

impl ErrorLine {
    /// The most of a line kept.
    pub const MAX_BYTES: usize = 512;

    /// The line `raw` (a newline at its end dropped), clipped on a character boundary.
    pub fn new(raw: &[u8]) -> ErrorLine {
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = String::from_utf8_lossy(&raw[..raw.len().min(Self::MAX_BYTES + 4)]);
        let mut end = text.len().min(Self::MAX_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        ErrorLine { text: text[..end].to_owned(), at: crate::rfc3339::now() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: StartErrorKind) -> StartError {
        StartError { kind, description: "d".into(), at: "2025-01-01T00:00:00Z".into() }
    }

    /// The wire shape, byte for byte (a missing dependency carries upstream's install card).
    #[test]
    fn every_kind_serializes_to_the_flat_upstream_shape() {
        let head = r#""error_description":"d","at":"2025-01-01T00:00:00Z""#;
        let cases = [
            (
                StartErrorKind::MissingDependency { binary: "ffmpeg".into() },
                format!(
                    r#"{{"error_type":"missing_dependency",{head},"binary":"ffmpeg","why":null,"docs_url":null,"install":{{}},"sysadmin_hint":"Or ask your system administrator to install it for you."}}"#
                ),
            ),
            (
                StartErrorKind::MissingDependency { binary: "parachute-vault".into() },
                format!(
                    r#"{{"error_type":"missing_dependency",{head},"binary":"parachute-vault","why":"run the vault module","docs_url":null,"install":{{"generic":"bun add -g @openparachute/vault"}},"sysadmin_hint":"Or ask your system administrator to install it for you."}}"#
                ),
            ),
            (
                StartErrorKind::NonExecutable { binary: "x".into(), path: "/opt/x".into() },
                format!(r#"{{"error_type":"non_executable",{head},"binary":"x","path":"/opt/x"}}"#),
            ),
            (
                StartErrorKind::SpawnFailed { os_error: "No such file (os error 2)".into() },
                format!(r#"{{"error_type":"spawn_failed",{head},"os_error":"No such file (os error 2)"}}"#),
            ),
            (
                StartErrorKind::PortSquatter {
                    port: 1940,
                    holder_pid: 77,
                    holder_cmdline: Some("bun server.ts".into()),
                },
                format!(
                    r#"{{"error_type":"port_squatter",{head},"port":1940,"holder_pid":77,"holder_cmdline":"bun server.ts"}}"#
                ),
            ),
            (
                StartErrorKind::PortSquatter { port: 1940, holder_pid: 77, holder_cmdline: None },
                format!(r#"{{"error_type":"port_squatter",{head},"port":1940,"holder_pid":77}}"#),
            ),
            (
                StartErrorKind::StartedButUnbound { port: 1940 },
                format!(r#"{{"error_type":"started_but_unbound",{head},"port":1940}}"#),
            ),
        ];
        for (kind, json) in cases {
            let e = err(kind);
            assert_eq!(serde_json::to_string(&e).unwrap(), json);
            assert_eq!(serde_json::from_str::<StartError>(&json).unwrap(), e, "round trip of {json}");
        }
    }

    #[test]
    fn unknown_or_incomplete_kinds_stay_readable() {
        let newer = r#"{"error_type":"cgroup_full","error_description":"d","at":"t","port":5}"#;
        let e: StartError = serde_json::from_str(newer).unwrap();
        assert_eq!(e.kind, StartErrorKind::Other { error_type: "cgroup_full".into() });
        assert_eq!(e.to_string(), "cgroup_full: d");
        let incomplete = r#"{"error_type":"port_squatter","error_description":"d","at":"t"}"#;
        let e: StartError = serde_json::from_str(incomplete).unwrap();
        assert_eq!(e.kind.wire_name(), "port_squatter");
        assert!(matches!(e.kind, StartErrorKind::Other { .. }));
    }
}
