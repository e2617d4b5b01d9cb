//! The control API's JSON shapes, shared by the server (`api`) and the CLI (`client`), so
//! the two cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::supervisor::{ModuleState, ModuleStatus, StartError};

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
    /// The hub's own version (`parachute --version`), as upstream's is its package's: a
    /// client comparing it with its own version learns whether this hub is the build it
    /// ships with (an upstream client never finds it equal; see docs/api.md).
    pub version: String,
    /// The answering image's GNU build id (hex; `null` when it has none, as on macOS): an
    /// in-place upgrade keeps the pid and the nonce, and this tells the builds apart.
    #[serde(rename = "buildId")]
    pub build_id: Option<String>,
    /// Upstream's database health: this hub has no database, so always `"unconfigured"`
    /// (upstream's own value for that case, which its clients do not count as a fault).
    #[serde(default)]
    pub db: String,
    /// When the hub started (RFC 3339); kept across in-place upgrades.
    #[serde(rename = "startedAt")]
    pub started_at: String,
    /// In-place upgrades this hub instance went through (0 after a fresh start).
    #[serde(default)]
    pub generation: u32,
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
///
/// Read as our client reads it; serialized (see the `Serialize` impl) with upstream's
/// fields beside ours, so an upstream client reads the same answer: each module also
/// carries `supervisor_status`, `supervisor_start_error`, `installed`,
/// `installed_version` and `pid` (`null` when no child runs), and the list also has
/// `supervised[]` and `supervisor_available`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModuleList {
    /// Every supervised module, in services.json order (then any module the hub still
    /// supervises whose row has since been removed).
    pub modules: Vec<ModuleState>,
    /// Every module services.json lists right now (supervised or not), with its port, so
    /// a client can show ports and start what the hub has not started yet.
    #[serde(default)]
    pub installed: Vec<Installed>,
}

impl ModuleList {
    /// `modules` in the order services.json lists them (`installed`); modules it no
    /// longer lists keep their relative order at the end.
    pub fn in_services_order(mut modules: Vec<ModuleState>, installed: &[Installed]) -> Vec<ModuleState> {
        let rank = |m: &ModuleState| installed.iter().position(|i| i.short == m.short).unwrap_or(usize::MAX);
        modules.sort_by_key(rank);
        modules
    }
}

/// The subset of a module upstream's clients read (`supervised[]`, and beside our own
/// fields in `modules[]`).
#[derive(Serialize)]
struct UpstreamView<'a> {
    short: &'a str,
    supervisor_status: ModuleStatus,
    pid: Option<u32>,
    supervisor_start_error: Option<&'a StartError>,
}

impl<'a> UpstreamView<'a> {
    fn of(m: &'a ModuleState) -> UpstreamView<'a> {
        UpstreamView {
            short: &m.short,
            supervisor_status: m.status,
            pid: m.pid,
            supervisor_start_error: m.start_error.as_ref(),
        }
    }
}

/// One `modules[]` entry: our state, then upstream's names for the same facts (its `pid`
/// is ours, `null` rather than absent when no child runs).
struct ModuleRow<'a> {
    state: &'a ModuleState,
    installed: Option<&'a Installed>,
}

impl Serialize for ModuleRow<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let serde_json::Value::Object(ours) = serde_json::to_value(self.state).map_err(S::Error::custom)?
        else {
            return Err(S::Error::custom("a module state is a JSON object"));
        };
        let up = UpstreamView::of(self.state);
        let mut map = s.serialize_map(None)?;
        for (k, v) in ours.iter().filter(|(k, _)| k.as_str() != "pid") {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry("pid", &up.pid)?;
        map.serialize_entry("supervisor_status", &up.supervisor_status)?;
        map.serialize_entry("supervisor_start_error", &up.supervisor_start_error)?;
        map.serialize_entry("installed", &self.installed.is_some())?;
        map.serialize_entry("installed_version", &self.installed.and_then(|i| i.version.as_deref()))?;
        map.end()
    }
}

impl Serialize for ModuleList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            modules: Vec<ModuleRow<'a>>,
            supervised: Vec<UpstreamView<'a>>,
            supervisor_available: bool,
            installed: &'a [Installed],
        }
        // Destructured so a field added to the struct is a compile error here until it
        // is serialized too.
        let ModuleList { modules, installed } = self;
        Body {
            modules: modules
                .iter()
                .map(|state| ModuleRow {
                    state,
                    installed: installed.iter().find(|i| i.short == state.short),
                })
                .collect(),
            supervised: modules.iter().map(UpstreamView::of).collect(),
            // This hub always supervises its modules (upstream's is `false` when it runs
            // without a supervisor).
            supervisor_available: true,
            installed,
        }
        .serialize(s)
    }
}

/// A services.json module as the hub reads it now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// The module's key.
    pub short: String,
    /// Its declared port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The row's `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
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
    /// The hub is handing over to a new image of itself (503; retry in a moment).
    Upgrading,
    /// An in-place upgrade was not attempted: the binary is untrusted or failed its dry
    /// run (422).
    UpgradeRefused,
    /// Another in-place upgrade is under way (409).
    UpgradeInProgress,
    /// An in-place upgrade was not attempted: the new binary cannot serve at all (it did
    /// not start, crashed or hung in its dry run) (422).
    UpgradeBinaryUnusable,
    /// A code this build does not know (a newer hub).
    Other(String),
}

impl ErrorCode {
    const KNOWN: [ErrorCode; 14] = [
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
        ErrorCode::Upgrading,
        ErrorCode::UpgradeRefused,
        ErrorCode::UpgradeInProgress,
        ErrorCode::UpgradeBinaryUnusable,
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
            ErrorCode::Upgrading => "upgrading",
            ErrorCode::UpgradeRefused => "upgrade_refused",
            ErrorCode::UpgradeInProgress => "upgrade_in_progress",
            ErrorCode::UpgradeBinaryUnusable => "upgrade_binary_unusable",
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
    use crate::supervisor::StartErrorKind;

    #[test]
    fn module_list_carries_upstreams_fields_beside_ours_and_reads_back() {
        let crashed = ModuleState {
            start_error: Some(StartError {
                kind: StartErrorKind::MissingDependency { binary: "nope".into() },
                description: "d".into(),
                at: "t".into(),
            }),
            ..ModuleState::new("b", ModuleStatus::Crashed)
        };
        let running = ModuleState { pid: Some(7), ..ModuleState::new("a", ModuleStatus::Running) };
        let installed = vec![
            Installed { short: "a".into(), port: Some(1), version: Some("1.2.3".into()), skip_reason: None },
            Installed { short: "b".into(), port: Some(2), version: None, skip_reason: None },
        ];
        let list = ModuleList {
            modules: ModuleList::in_services_order(vec![crashed, running.clone()], &installed),
            installed,
        };
        let v = serde_json::to_value(&list).unwrap();
        assert_eq!(v["supervisor_available"], true);
        let (a, b) = (&v["modules"][0], &v["modules"][1]);
        assert_eq!((a["short"].as_str(), b["short"].as_str()), (Some("a"), Some("b")), "services.json order");
        assert_eq!(a["status"], "running");
        assert_eq!(a["supervisor_status"], "running");
        assert_eq!(a["pid"], 7);
        assert_eq!(a["installed"], true);
        assert_eq!(a["installed_version"], "1.2.3");
        assert!(a["supervisor_start_error"].is_null() && a.get("startError").is_none(), "{a}");
        assert!(b["pid"].is_null() && b.as_object().unwrap().contains_key("pid"), "{b}");
        assert_eq!(b["supervisor_status"], "crashed");
        assert_eq!(b["supervisor_start_error"]["error_type"], "missing_dependency");
        assert_eq!(b["supervisor_start_error"], b["startError"]);
        assert_eq!(
            v["supervised"],
            serde_json::json!([
                {"short": "a", "supervisor_status": "running", "pid": 7, "supervisor_start_error": null},
                {"short": "b", "supervisor_status": "crashed", "pid": null, "supervisor_start_error": b["startError"]},
            ])
        );
        // Our client reads the same body back unchanged.
        assert_eq!(serde_json::from_value::<ModuleList>(v).unwrap(), list);
    }

    #[test]
    fn modules_no_longer_listed_keep_their_order_at_the_end() {
        let m = |s: &str| ModuleState::new(s, ModuleStatus::Running);
        let inst = |s: &str| Installed { short: s.into(), ..Installed::default() };
        let sorted =
            ModuleList::in_services_order(vec![m("x"), m("c"), m("y"), m("a")], &[inst("a"), inst("c")]);
        let names: Vec<&str> = sorted.iter().map(|m| m.short.as_str()).collect();
        assert_eq!(names, ["a", "c", "x", "y"]);
    }

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
