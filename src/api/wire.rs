//! The control API's JSON shapes, shared by the server (`api`) and the CLI (`client`), so
//! the two cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::supervisor::ModuleState;

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"ok"` when the hub answers.
    pub status: String,
    /// Always `"parachute-hub"`: tells a hub from anything else on the port.
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// A stable code (`unauthenticated`, `not_supervised`, `not_installed`, …).
    pub error: String,
    /// A complete sentence for humans.
    pub error_description: String,
}
