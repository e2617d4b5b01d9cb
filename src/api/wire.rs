//! The control API's JSON shapes, shared by the server (`api`) and the CLI (`client`), so
//! the two cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::supervisor::ModuleState;

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"ok"` when the hub answers.
    pub status: String,
    /// Always [`HUB_SERVICE`](crate::model::names::HUB_SERVICE): tells a hub from anything else on the port.
    pub service: String,
    /// The per-boot nonce, equal to `hub-instance.json`'s.
    pub instance: String,
    /// The hub's pid.
    pub pid: u32,
    /// The control API's port.
    pub port: u16,
    /// The hub's version (`parachute --version`).
    pub version: String,
    /// When the hub started (RFC 3339).
    #[serde(rename = "startedAt")]
    pub started_at: String,
    /// Module counts.
    pub modules: ModuleCounts,
}

/// Module counts in [`Health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleCounts {
    /// Modules whose status is `running`.
    pub running: usize,
    /// Modules the hub supervises (in any status).
    pub total: usize,
}

/// `GET /api/modules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleList {
    /// Every supervised module, in boot order.
    pub modules: Vec<ModuleState>,
    /// Every module services.json lists right now (supervised or not), with its port, so
    /// a client can show ports and start what the hub has not started yet.
    #[serde(default)]
    pub installed: Vec<Installed>,
}

/// A services.json module as the hub reads it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// The module's key.
    pub short: String,
    /// Its declared port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Why the hub would not start it (no startCmd, a bad module.json, …); absent when it
    /// can be started.
    #[serde(default, rename = "skipReason", skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
}

/// `GET /api/modules/<short>` and the answer of `POST …/start|stop|restart`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleReply {
    /// The module.
    pub short: String,
    /// Its state after the operation.
    pub state: ModuleState,
}

/// One buffered output line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Monotonic per-module sequence number (resume with `?since=<seq + 1>`).
    pub seq: u64,
    /// The line, without its newline (invalid UTF-8 replaced).
    pub text: String,
}

/// `GET /api/modules/<short>/logs` without `follow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsReply {
    /// The module.
    pub short: String,
    /// Buffered lines at or after `since`, oldest first.
    pub lines: Vec<Line>,
    /// Lines at or after `since` that were already evicted from the ring buffer.
    pub missed: u64,
    /// The sequence number the next line will get (the `since` of a later poll).
    pub next_seq: u64,
}

/// One NDJSON event of `GET /api/modules/<short>/logs?follow=1`: either a line
/// (`{"seq":N,"text":"…"}`) or a gap (`{"missed":N}`: that many lines were evicted
/// before this follower read them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FollowEvent {
    /// An output line.
    Line(Line),
    /// Lines lost to eviction.
    Gap {
        /// How many.
        missed: u64,
    },
}

/// Every error body: `{error, error_description}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable code.
    pub error: ErrorCode,
    /// A complete sentence for humans.
    pub error_description: String,
}

/// The control API's error codes, one list for the server that sends them and the client
/// that branches on them. On the wire each is its snake_case name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No or a wrong operator token (401).
    Unauthenticated,
    /// No route at that path (404).
    NotFound,
    /// The route exists, the method does not (405).
    MethodNotAllowed,
    /// A malformed path segment or query (400).
    BadRequest,
    /// The module has no services.json entry (400).
    NotInstalled,
    /// The module's entry has no command to start (422).
    NoStartCmd,
    /// The module's entry or module.json is unusable (422).
    InvalidModule,
    /// The hub does not supervise that module (404).
    NotSupervised,
    /// The hub is shutting down (503).
    ShuttingDown,
    /// The supervisor refused the operation (500).
    ModuleOpFailed,
    /// A code this build does not know (a newer hub).
    Other(String),
}

impl ErrorCode {
    const KNOWN: [ErrorCode; 10] = [
        ErrorCode::Unauthenticated,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::BadRequest,
        ErrorCode::NotInstalled,
        ErrorCode::NoStartCmd,
        ErrorCode::InvalidModule,
        ErrorCode::NotSupervised,
        ErrorCode::ShuttingDown,
        ErrorCode::ModuleOpFailed,
    ];

    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotInstalled => "not_installed",
            ErrorCode::NoStartCmd => "no_start_cmd",
            ErrorCode::InvalidModule => "invalid_module",
            ErrorCode::NotSupervised => "not_supervised",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::ModuleOpFailed => "module_op_failed",
            ErrorCode::Other(s) => s,
        }
    }

    fn parse(s: String) -> ErrorCode {
        ErrorCode::KNOWN.into_iter().find(|c| c.as_str() == s).unwrap_or(ErrorCode::Other(s))
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ErrorCode, D::Error> {
        String::deserialize(d).map(ErrorCode::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_and_unknown_ones_are_kept() {
        for code in ErrorCode::KNOWN {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        let body: ErrorBody = serde_json::from_str(r#"{"error":"quota","error_description":"d"}"#).unwrap();
        assert_eq!(body.error, ErrorCode::Other("quota".into()));
        assert_eq!(
            serde_json::to_string(&ErrorBody {
                error: ErrorCode::NotSupervised,
                error_description: "d".into()
            })
            .unwrap(),
            r#"{"error":"not_supervised","error_description":"d"}"#
        );
    }
}
