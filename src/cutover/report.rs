//! What a cutover tells its caller: progress events while it runs, and one [`Report`] at
//! the end, from which both the human output and `--json` are made (so they cannot
//! disagree).
//!
//! Every failure states the true state of the box after it, read again at the end rather
//! than assumed (upstream W18/W19 claimed "your box is unchanged" after stopping
//! everything): which legacy processes are stopped and which still run, whether the unit
//! file exists, is enabled, is running, and the one command that continues from there.

use std::path::PathBuf;

use serde::Serialize;

use super::plan::{Outcome, StepKind};

/// A progress event.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A free-standing line (resume notice, warning).
    Note(&'a str),
    /// A step begins.
    Begin(StepKind),
    /// A step completed.
    Done(StepKind, &'a str),
    /// A step was completed by an earlier run and still holds (from the journal).
    Skipped(StepKind, &'a str),
    /// A step failed.
    Failed(StepKind, &'a str),
}

/// Where progress goes (a terminal, plain lines, nothing for `--json`, a test's buffer).
pub trait Sink {
    /// Receives one event.
    fn event(&mut self, e: Event<'_>);
}

/// A sink that drops everything.
#[derive(Debug, Default)]
pub struct Quiet;

impl Sink for Quiet {
    fn event(&mut self, _e: Event<'_>) {}
}

/// What happened to one step in this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepLine {
    /// Which step.
    pub step: StepKind,
    /// Its 1-based number.
    pub number: u8,
    /// `done`, `done-earlier` (journal), `would-run` (dry run) or `failed`.
    pub status: &'static str,
    /// One line about it.
    pub summary: String,
}

/// The hub unit as the manager reports it at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnitState {
    /// The manager backend (`systemd-user`, `launchd`, …), or `none`.
    pub manager: String,
    /// The scope the unit was found in.
    pub scope: Option<String>,
    /// The unit file, when it exists.
    pub file: Option<PathBuf>,
    /// Enabled (starts at boot/login).
    pub enabled: bool,
    /// Running now.
    pub active: bool,
    /// Its main pid.
    pub main_pid: Option<u32>,
    /// The manager's own words for the state (`active/running`, `activating/auto-restart`).
    pub state_text: String,
    /// Set when the manager could not be asked.
    pub unknown: Option<String>,
}

impl UnitState {
    /// The unit as `manager` (its `kind()`) reported it.
    pub fn observed(manager: &str, u: &parachute_manager::UnitStatus) -> UnitState {
        UnitState {
            manager: manager.to_owned(),
            scope: u.scope.map(|s| s.to_string()),
            file: u.file.clone(),
            enabled: u.enabled,
            active: u.active,
            main_pid: u.main_pid,
            state_text: u.state_text.clone(),
            unknown: None,
        }
    }
}

/// One supervised module as the hub reported it during verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleLine {
    /// The module.
    pub short: String,
    /// Its status (`running`, `crashed`, …).
    pub status: String,
    /// Its pid.
    pub pid: Option<u32>,
    /// Its declared port.
    pub port: Option<u16>,
    /// Its port is bound by its own process tree.
    pub listening: bool,
    /// Its structured start error, as one line.
    pub start_error: Option<String>,
}

/// The box after the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FinalState {
    /// Legacy processes this attempt has stopped (this run or an earlier one).
    pub legacy_stopped: Vec<String>,
    /// Legacy processes still running (verified from their pidfiles).
    pub legacy_running: Vec<String>,
    /// The hub unit.
    pub unit: UnitState,
    /// `/health` answers from the unit's main pid with the recorded instance.
    pub hub_healthy: bool,
    /// Modules as last reported by the supervised hub.
    pub modules: Vec<ModuleLine>,
}

/// The result of `migrate --to-supervised`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// Whether this was a dry run (nothing was changed).
    pub dry_run: bool,
    /// Each step this run touched, in order.
    pub steps: Vec<StepLine>,
    /// The box afterwards.
    pub final_state: FinalState,
    /// Explanation lines (what failed and why; or the success text).
    pub messages: Vec<String>,
    /// The one command that continues from here, when there is one.
    pub next: Option<String>,
    /// Whether the hub unit starts at boot without a login (`None`: not asked, because
    /// the cutover did not succeed or was a dry run). Set by the caller, which can reach
    /// logind.
    pub starts_at_boot: Option<bool>,
}

impl FinalState {
    /// The human rendering, one fact per line.
    pub fn lines(&self) -> Vec<String> {
        let s = self;
        let list = |v: &[String]| if v.is_empty() { "none".to_owned() } else { v.join(", ") };
        let mut out = vec![format!(
            "Legacy processes: stopped: {}; still running: {}.",
            list(&s.legacy_stopped),
            list(&s.legacy_running)
        )];
        let u = &s.unit;
        out.push(match (&u.unknown, &u.file) {
            (Some(why), _) => format!("Hub unit: unknown ({why})."),
            (None, None) => "Hub unit: not installed (no unit file).".to_owned(),
            (None, Some(f)) => format!(
                "Hub unit: {} exists{}, {}, {}.",
                f.display(),
                u.scope.as_deref().map(|s| format!(" ({s} scope)")).unwrap_or_default(),
                if u.enabled { "enabled" } else { "not enabled" },
                match (u.active, u.main_pid) {
                    (true, Some(p)) => format!("running (main pid {p})"),
                    (true, None) => "running".to_owned(),
                    (false, _) if u.state_text.is_empty() => "not running".to_owned(),
                    (false, _) => format!("not running ({})", u.state_text),
                }
            ),
        });
        out.push(format!("Supervised hub healthy: {}.", if s.hub_healthy { "yes" } else { "no" }));
        out
    }
}

/// What teardown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeardownOutcome {
    /// The hub unit was stopped, disabled and removed.
    Removed,
    /// No hub unit was installed.
    NothingInstalled,
    /// Removal failed.
    Failed,
    /// A cutover or another teardown holds the lock.
    Locked,
}

/// The result of `migrate --teardown`.
#[derive(Debug, Clone, Serialize)]
pub struct TeardownReport {
    /// How it ended.
    pub outcome: TeardownOutcome,
    /// Stale per-module units that were disabled.
    pub disabled: Vec<String>,
    /// Explanation lines.
    pub messages: Vec<String>,
    /// The hub unit afterwards.
    pub unit: UnitState,
}
