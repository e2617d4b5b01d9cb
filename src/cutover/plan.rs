//! The cutover's decision function: `plan(progress, observed) -> Step`, with no I/O.
//!
//! Everything the cutover decides is decided here, from two inputs:
//!
//! - [`Progress`]: what the journal says earlier runs (and this one) completed, and whether
//!   that journal belongs to the attempt being made now (same port and binary, not finished);
//! - [`Observed`]: what *this* run has seen and done so far: the [`Detection`] snapshot taken
//!   by step 1, the set of steps it ran, and the failure of the last step, if any.
//!
//! A journaled step is trusted only while its effect still holds in the detection snapshot
//! (a written unit file is still there, stopped legacy processes are still gone, a started
//! unit is still active). The first step that is not both journaled and still holding runs,
//! and every later step runs again in this run after it: all steps are safe to repeat, and
//! the snapshot says nothing reliable about the world once this run has changed it. Steps 1
//! (detect) and 2 (preflight) are read-only; preflight is repeated on every run until the
//! legacy processes are stopped, so nothing is ever stopped on the strength of an old check.
//!
//! The executor ([`super::run`]) asks for the next step, applies exactly that step, journals
//! it and asks again; the tests below walk every (journal, observation) pair that matters,
//! including a crash right after each step.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The nine steps, in order. The journal names them in kebab case (`write-unit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// Observe the box: manager, hub unit, `hub-instance.json`, `/health`, legacy processes.
    Detect,
    /// Read-only checks before anything is stopped: the binary runs, every declared port's
    /// holder is a legacy process of this box or attributable to one.
    Preflight,
    /// Write the hub unit without starting it (stopping a unit an earlier attempt left active).
    WriteUnit,
    /// Stop the legacy hub and modules named by their pidfiles, identity-checked.
    StopLegacy,
    /// Durably disable stale per-module units (`parachute-<short>.service`, …).
    DisableStale,
    /// Stop attributable orphans still bound to declared ports.
    Sweep,
    /// Check that every declared port is free (repeated right before the start).
    VerifyFree,
    /// Enable and start the hub unit.
    Start,
    /// Wait until `/health` answers from the manager's main pid and every module runs.
    Verify,
}

impl StepKind {
    /// Every step, in execution order.
    pub const ALL: [StepKind; 9] = [
        StepKind::Detect,
        StepKind::Preflight,
        StepKind::WriteUnit,
        StepKind::StopLegacy,
        StepKind::DisableStale,
        StepKind::Sweep,
        StepKind::VerifyFree,
        StepKind::Start,
        StepKind::Verify,
    ];

    /// The step's 1-based number (as printed: `[4/9]`).
    pub fn number(self) -> u8 {
        self as u8 + 1
    }

    /// The step with 1-based number `n`.
    pub fn from_number(n: u8) -> Option<StepKind> {
        StepKind::ALL.get(usize::from(n).checked_sub(1)?).copied()
    }

    /// The journal's name for the step.
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Detect => "detect",
            StepKind::Preflight => "preflight",
            StepKind::WriteUnit => "write-unit",
            StepKind::StopLegacy => "stop-legacy",
            StepKind::DisableStale => "disable-stale",
            StepKind::Sweep => "sweep",
            StepKind::VerifyFree => "verify-free",
            StepKind::Start => "start",
            StepKind::Verify => "verify",
        }
    }

    /// A short human title.
    pub fn title(self) -> &'static str {
        match self {
            StepKind::Detect => "Detect the current state",
            StepKind::Preflight => "Preflight (read-only): manager, binary, port holders",
            StepKind::WriteUnit => "Write the hub unit (not started)",
            StepKind::StopLegacy => "Stop the legacy hub and modules",
            StepKind::DisableStale => "Disable stale per-module units",
            StepKind::Sweep => "Sweep attributable orphans off declared ports",
            StepKind::VerifyFree => "Verify every declared port is free",
            StepKind::Start => "Start the hub unit",
            StepKind::Verify => "Verify the supervised hub and its modules",
        }
    }
}

/// How a cutover (or teardown) ended. Each failure has its own exit code (see the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The hub already runs under the manager and is healthy; nothing was done.
    AlreadyMigrated,
    /// The cutover completed.
    Migrated,
    /// No service manager is reachable.
    NoManager,
    /// The unit could not be written (or the binary to bake into it does not run).
    WriteFailed,
    /// A declared port is held by a process the cutover may not stop.
    PortStuck,
    /// The manager could not start the unit.
    StartFailed,
    /// The unit started, but the hub or a module did not come up in time.
    VerifyTimeout,
    /// The hub came up, but a module crashed or could not be started under it.
    ModuleFailed,
    /// Another cutover or teardown holds the lock.
    Locked,
    /// A fact about a legacy process or a declared port could not be established; nothing
    /// was changed.
    Unverifiable,
}

impl Outcome {
    /// The kebab-case name used in output and `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::AlreadyMigrated => "already-migrated",
            Outcome::Migrated => "migrated",
            Outcome::NoManager => "no-manager",
            Outcome::WriteFailed => "write-failed",
            Outcome::PortStuck => "port-stuck",
            Outcome::StartFailed => "start-failed",
            Outcome::VerifyTimeout => "verify-timeout",
            Outcome::ModuleFailed => "module-failed",
            Outcome::Locked => "locked",
            Outcome::Unverifiable => "unverifiable",
        }
    }

    /// Whether the box ended where the operator asked it to be.
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::AlreadyMigrated | Outcome::Migrated)
    }
}

/// Why a step failed, in the terms the plan maps to an [`Outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The service manager is not reachable.
    ManagerUnavailable,
    /// The binary to bake into the unit does not run (`<exec> --version` failed).
    ExecBroken,
    /// A declared port is held by something that may not be stopped.
    PortBlocked,
    /// Writing or registering the unit failed.
    WriteFailed,
    /// The manager refused or failed to start the unit.
    StartFailed,
    /// A wait ran out of time.
    Timeout,
    /// A process or port fact could not be established (see `parachute_process::facts`).
    FactsUnavailable,
    /// A module under the supervised hub crashed or is not supervised.
    ModuleFailed,
}

/// The hub unit as step 1 saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnitObservation {
    /// A unit file exists (in either scope).
    pub file: bool,
    /// The unit starts at boot/login.
    pub enabled: bool,
    /// The manager reports it running.
    pub active: bool,
    /// The manager's main pid for it.
    pub main_pid: Option<u32>,
}

/// What `/health` on the hub port answered (if it answered as a Parachute hub).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthObservation {
    /// The responder's per-boot instance nonce.
    pub instance: String,
    /// The responder's pid, as it reports it.
    pub pid: u32,
}

/// What `hub-instance.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceObservation {
    /// The pid of the `serve` that wrote it.
    pub pid: u32,
    /// Its per-boot nonce.
    pub instance: String,
}

/// The snapshot step 1 takes. Valid until this run changes something.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Detection {
    /// A service manager answered.
    pub manager_available: bool,
    /// The hub unit.
    pub unit: UnitObservation,
    /// `hub-instance.json`, when present and readable.
    pub instance_file: Option<InstanceObservation>,
    /// `/health` on the hub port, when a Parachute hub answered.
    pub health: Option<HealthObservation>,
    /// Legacy processes whose pidfile names a live process with a verified identity.
    pub legacy_alive: Vec<String>,
}

impl Detection {
    /// The supervised hub is up and provably the unit's own process: the unit is active,
    /// its main pid is the pid in `hub-instance.json`, and `/health` answers with that
    /// record's instance and pid. A unit file plus "something answers on the port" is not
    /// enough (upstream W20: a detached hub or a hijacked loopback port would pass that).
    pub fn supervised_healthy(&self) -> bool {
        let (Some(main), Some(rec), Some(h)) = (self.unit.main_pid, &self.instance_file, &self.health) else {
            return false;
        };
        self.unit.active && rec.pid == main && h.pid == main && h.instance == rec.instance
    }
}

/// What the journal says, interpreted for the attempt being made now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Steps the journal records as completed.
    pub done: BTreeSet<StepKind>,
    /// The journal records a finished cutover (its outcome was `migrated`).
    pub finished: bool,
    /// The journal was written for the same port and binary as this attempt.
    pub same_params: bool,
}

impl Progress {
    /// Whether this run starts a new attempt rather than resuming one: no journal, a
    /// finished one, or one made with another port or binary (its steps prove nothing about
    /// this attempt; every step is safe to repeat).
    pub fn is_fresh(&self) -> bool {
        self.finished || !self.same_params || self.done.iter().all(|s| *s == StepKind::Detect)
    }
}

/// What this run has seen and done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Step 1's snapshot.
    pub detection: Option<Detection>,
    /// Steps completed in this run.
    pub ran: BTreeSet<StepKind>,
    /// The step that just failed, and how.
    pub failed: Option<(StepKind, FailureKind)>,
}

/// What to do with the journal when the cutover ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalAction {
    /// Leave it: a re-run resumes from it.
    Keep,
    /// Record the cutover as finished.
    MarkFinished,
    /// Forget this step and every later one, so a re-run repeats them.
    ForgetFrom(StepKind),
}

/// The plan's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Apply this step, journal it, ask again.
    Run(StepKind),
    /// Stop here.
    Finish {
        /// The result.
        outcome: Outcome,
        /// What to do with the journal.
        journal: JournalAction,
    },
}

/// Maps a failed step to the outcome and journal action.
fn failure(step: StepKind, kind: FailureKind) -> Step {
    let outcome = match (step, kind) {
        (StepKind::Start, FailureKind::ManagerUnavailable) => Outcome::StartFailed,
        (_, FailureKind::ManagerUnavailable) => Outcome::NoManager,
        (_, FailureKind::ExecBroken | FailureKind::WriteFailed) => Outcome::WriteFailed,
        (_, FailureKind::PortBlocked) => Outcome::PortStuck,
        (_, FailureKind::StartFailed) => Outcome::StartFailed,
        (_, FailureKind::Timeout) => Outcome::VerifyTimeout,
        (_, FailureKind::FactsUnavailable) => Outcome::Unverifiable,
        (_, FailureKind::ModuleFailed) => Outcome::ModuleFailed,
    };
    let journal = match step {
        // The unit was (maybe) started but is not healthy: a re-run must stop it and start
        // it again rather than trust the journaled start (upstream W21).
        StepKind::Start | StepKind::Verify => JournalAction::ForgetFrom(StepKind::Start),
        // Something held a port after the sweep: sweep again on the re-run.
        StepKind::VerifyFree => JournalAction::ForgetFrom(StepKind::Sweep),
        _ => JournalAction::Keep,
    };
    Step::Finish { outcome, journal }
}

/// Whether a journaled step's effect still holds in the snapshot `d` (only asked while
/// this run has changed nothing since the snapshot).
fn still_holds(step: StepKind, progress: &Progress, d: &Detection) -> bool {
    let healthy = d.supervised_healthy();
    match step {
        StepKind::Detect => false,
        // Preflight guards the stop; once the stop is done (and holds) it has done its job.
        StepKind::Preflight => progress.done.contains(&StepKind::StopLegacy) && d.legacy_alive.is_empty(),
        // A unit an earlier attempt left active but unhealthy (or enabled and restarting
        // after a failed start) must be stopped by step 3 before the ports are swept,
        // unless a journaled start is running and waiting for verification.
        StepKind::WriteUnit => {
            d.unit.file
                && ((!d.unit.active && !d.unit.enabled)
                    || healthy
                    || (d.unit.active && progress.done.contains(&StepKind::Start)))
        }
        StepKind::StopLegacy => d.legacy_alive.is_empty(),
        StepKind::DisableStale | StepKind::Sweep => true,
        // "Ports are free" is only worth something immediately before the start.
        StepKind::VerifyFree | StepKind::Start => d.unit.active,
        StepKind::Verify => healthy,
    }
}

/// The steps this run makes, in order, decided from the journal and step 1's snapshot
/// alone (the module doc of [`super`] tabulates the cases); `Err` when nothing is to be
/// done.
///
/// Two rules, applied in this order:
///
/// 1. **The goal already holds.** The unit's hub is supervised-healthy (manager main pid,
///    `hub-instance.json` and `/health` agree) and no legacy daemon is alive. A fresh run
///    (no journal, a finished one, or one for other parameters) has nothing to do:
///    `already-migrated`. An interrupted attempt (killed during or after its start, say)
///    only has to finish its bookkeeping: disable stale units if that was not journaled,
///    then verify — never stop, sweep or re-check ports the healthy hub itself holds.
/// 2. **Otherwise** the first step that is not both journaled and still holding, and every
///    later one. A step whose effect no longer holds (a unit stopped by hand, a daemon
///    restarted) is thereby redone, and so is everything after it: every step is safe to
///    repeat, and once this run changes something the snapshot says nothing about what
///    the later steps would find.
fn route(progress: &Progress, d: &Detection) -> Result<Vec<StepKind>, Outcome> {
    let fresh = progress.is_fresh();
    if d.supervised_healthy() && d.legacy_alive.is_empty() {
        if fresh {
            return Err(Outcome::AlreadyMigrated);
        }
        let mut steps = Vec::new();
        if !progress.done.contains(&StepKind::DisableStale) {
            steps.push(StepKind::DisableStale);
        }
        steps.push(StepKind::Verify);
        return Ok(steps);
    }
    let first = StepKind::ALL
        .into_iter()
        .skip(1)
        .find(|s| fresh || !progress.done.contains(s) || !still_holds(*s, progress, d));
    Ok(match first {
        Some(f) => StepKind::ALL.into_iter().filter(|s| *s >= f).collect(),
        None => Vec::new(),
    })
}

/// The next step.
pub fn plan(progress: &Progress, observed: &Observed) -> Step {
    if let Some((step, kind)) = observed.failed {
        return failure(step, kind);
    }
    let Some(d) = &observed.detection else { return Step::Run(StepKind::Detect) };
    if !d.manager_available {
        return Step::Finish { outcome: Outcome::NoManager, journal: JournalAction::Keep };
    }
    let steps = match route(progress, d) {
        Ok(steps) => steps,
        Err(outcome) => return Step::Finish { outcome, journal: JournalAction::Keep },
    };
    // The steps this run already made are a prefix of the route: the journal records of
    // earlier steps do not change, and later ones are dropped when a step is recorded.
    let last_ran = observed.ran.iter().copied().filter(|s| *s != StepKind::Detect).max();
    match steps.into_iter().find(|s| !observed.ran.contains(s) && last_ran.is_none_or(|l| *s > l)) {
        Some(next) => Step::Run(next),
        None => Step::Finish { outcome: Outcome::Migrated, journal: JournalAction::MarkFinished },
    }
}

/// The steps a run would apply from here if each succeeded, and how it would end: what
/// `--dry-run` prints after running the read-only steps for real.
pub fn remaining(progress: &Progress, observed: &Observed) -> (Vec<StepKind>, Outcome) {
    let mut o = observed.clone();
    let mut steps = Vec::new();
    loop {
        match plan(progress, &o) {
            Step::Run(k) => {
                steps.push(k);
                o.ran.insert(k);
            }
            Step::Finish { outcome, .. } => return (steps, outcome),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StepKind::*;
    use super::*;

    fn steps(ks: &[StepKind]) -> BTreeSet<StepKind> {
        ks.iter().copied().collect()
    }

    fn upto(k: StepKind) -> BTreeSet<StepKind> {
        StepKind::ALL.into_iter().take_while(|s| *s <= k).collect()
    }

    fn journal(done: BTreeSet<StepKind>) -> Progress {
        Progress { done, finished: false, same_params: true }
    }

    /// A legacy box: two modules and a hub running detached, no unit.
    fn legacy() -> Detection {
        Detection {
            manager_available: true,
            legacy_alive: vec!["hub".into(), "vault".into()],
            ..Default::default()
        }
    }

    fn unit(file: bool, active: bool) -> UnitObservation {
        UnitObservation { file, enabled: active, active, main_pid: active.then_some(500) }
    }

    /// The supervised hub, healthy and provably the unit's process.
    fn healthy() -> Detection {
        Detection {
            manager_available: true,
            unit: unit(true, true),
            instance_file: Some(InstanceObservation { pid: 500, instance: "i-1".into() }),
            health: Some(HealthObservation { instance: "i-1".into(), pid: 500 }),
            legacy_alive: vec![],
        }
    }

    fn after_detect(d: Detection) -> Observed {
        Observed { detection: Some(d), ran: steps(&[Detect]), failed: None }
    }

    fn run(k: StepKind) -> Step {
        Step::Run(k)
    }

    fn finish(outcome: Outcome, journal: JournalAction) -> Step {
        Step::Finish { outcome, journal }
    }

    #[test]
    fn step_numbers_round_trip() {
        for (i, s) in StepKind::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(s.number()), i + 1);
            assert_eq!(StepKind::from_number(s.number()), Some(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
        }
        assert_eq!(StepKind::from_number(0), None);
        assert_eq!(StepKind::from_number(10), None);
    }

    #[test]
    fn healthy_requires_unit_main_pid_instance_file_and_health_to_agree_w20() {
        assert!(healthy().supervised_healthy());
        let mut cases: Vec<(&str, Detection)> = Vec::new();
        let mut d = healthy();
        d.unit.active = false;
        cases.push(("unit inactive", d));
        let mut d = healthy();
        d.unit.main_pid = Some(501);
        cases.push(("main pid differs from hub-instance.json (a detached hub answers)", d));
        let mut d = healthy();
        d.health = Some(HealthObservation { instance: "other".into(), pid: 500 });
        cases.push(("/health from another instance (hijacked port)", d));
        let mut d = healthy();
        d.health = Some(HealthObservation { instance: "i-1".into(), pid: 77 });
        cases.push(("/health from another pid", d));
        let mut d = healthy();
        d.health = None;
        cases.push(("no /health", d));
        let mut d = healthy();
        d.instance_file = None;
        cases.push(("no hub-instance.json", d));
        for (what, d) in cases {
            assert!(!d.supervised_healthy(), "{what}");
        }
    }

    /// The table: (journal, observation) → next step.
    #[test]
    fn transitions() {
        let none = Progress::default();
        let mut stale_active = Detection { unit: unit(true, true), ..legacy() };
        stale_active.legacy_alive.clear();
        let cases: Vec<(&str, Progress, Observed, Step)> = vec![
            ("nothing observed yet: detect", none.clone(), Observed::default(), run(Detect)),
            (
                "no manager: stop before anything",
                none.clone(),
                after_detect(Detection { manager_available: false, ..legacy() }),
                finish(Outcome::NoManager, JournalAction::Keep),
            ),
            (
                "no manager on a resumed attempt: still nothing more is done",
                journal(upto(Sweep)),
                after_detect(Detection { manager_available: false, ..legacy() }),
                finish(Outcome::NoManager, JournalAction::Keep),
            ),
            ("legacy box, no journal: preflight", none.clone(), after_detect(legacy()), run(Preflight)),
            (
                "healthy and no journal: already migrated",
                none.clone(),
                after_detect(healthy()),
                finish(Outcome::AlreadyMigrated, JournalAction::Keep),
            ),
            (
                "healthy but a legacy process still runs: not migrated",
                none.clone(),
                after_detect(Detection { legacy_alive: vec!["vault".into()], ..healthy() }),
                run(Preflight),
            ),
            (
                "healthy after a finished cutover: already migrated",
                Progress { done: upto(Verify), finished: true, same_params: true },
                after_detect(healthy()),
                finish(Outcome::AlreadyMigrated, JournalAction::Keep),
            ),
            (
                "finished journal but hub down: a fresh attempt",
                Progress { done: upto(Verify), finished: true, same_params: true },
                after_detect(Detection { unit: unit(true, false), legacy_alive: vec![], ..legacy() }),
                run(Preflight),
            ),
            (
                "journal for another port: a fresh attempt ignores its steps",
                Progress { done: upto(Sweep), finished: false, same_params: false },
                after_detect(Detection { unit: unit(true, false), legacy_alive: vec![], ..legacy() }),
                run(Preflight),
            ),
            (
                "preflight ran: write the unit",
                none.clone(),
                Observed { detection: Some(legacy()), ran: steps(&[Detect, Preflight]), failed: None },
                run(WriteUnit),
            ),
            (
                "after a re-run step, every later step runs again even if journaled",
                journal(upto(Sweep)),
                Observed {
                    detection: Some(Detection { unit: unit(true, false), ..legacy() }),
                    ran: steps(&[Detect, Preflight]),
                    failed: None,
                },
                run(WriteUnit),
            ),
            (
                "unit left active but unhealthy, start not journaled: step 3 stops it",
                journal(upto(WriteUnit)),
                Observed {
                    detection: Some(stale_active.clone()),
                    ran: steps(&[Detect, Preflight]),
                    failed: None,
                },
                run(WriteUnit),
            ),
            (
                "journaled write but the unit file is gone: write again",
                journal(upto(StopLegacy)),
                after_detect(Detection { unit: unit(false, false), legacy_alive: vec![], ..legacy() }),
                run(WriteUnit),
            ),
            (
                "legacy restarted after a journaled stop: preflight again before stopping",
                journal(upto(Sweep)),
                after_detect(Detection { unit: unit(true, false), ..legacy() }),
                run(Preflight),
            ),
            (
                "everything journaled and healthy: verify once more, then migrated",
                journal(upto(Verify)),
                after_detect(healthy()),
                run(Verify),
            ),
            (
                "killed during the start, the unit came up healthy: verify, never re-check its ports",
                journal(upto(VerifyFree)),
                after_detect(healthy()),
                run(Verify),
            ),
            (
                "healthy after an attempt killed before step 5: disable stale units, then verify",
                journal(upto(StopLegacy)),
                after_detect(healthy()),
                run(DisableStale),
            ),
            (
                "healthy path: after step 5 comes verify",
                journal(upto(StopLegacy)),
                Observed { detection: Some(healthy()), ran: steps(&[Detect, DisableStale]), failed: None },
                run(Verify),
            ),
            (
                "healthy path: verified, so migrated",
                journal(upto(StopLegacy)),
                Observed {
                    detection: Some(healthy()),
                    ran: steps(&[Detect, DisableStale, Verify]),
                    failed: None,
                },
                finish(Outcome::Migrated, JournalAction::MarkFinished),
            ),
            (
                "all steps ran in this run: migrated",
                none.clone(),
                Observed {
                    detection: Some(legacy()),
                    ran: StepKind::ALL.into_iter().collect(),
                    failed: None,
                },
                finish(Outcome::Migrated, JournalAction::MarkFinished),
            ),
        ];
        for (what, progress, observed, want) in cases {
            assert_eq!(plan(&progress, &observed), want, "{what}");
        }
    }

    /// A crash right after step k was journaled, then a plain re-run: what runs first after
    /// detect, given what the box looks like at that point.
    #[test]
    fn resume_after_a_crash_at_every_step() {
        let down_after_stop = Detection { unit: unit(true, false), legacy_alive: vec![], ..legacy() };
        let starting = Detection {
            unit: unit(true, true),
            // The hub has not written hub-instance.json / answered /health yet.
            instance_file: None,
            health: None,
            ..down_after_stop.clone()
        };
        let cases: Vec<(StepKind, Detection, Step)> = vec![
            // Detect alone changes nothing: indistinguishable from a first run.
            (Detect, legacy(), run(Preflight)),
            (Preflight, legacy(), run(Preflight)),
            (WriteUnit, Detection { unit: unit(true, false), ..legacy() }, run(Preflight)),
            (StopLegacy, down_after_stop.clone(), run(DisableStale)),
            (DisableStale, down_after_stop.clone(), run(Sweep)),
            (Sweep, down_after_stop.clone(), run(VerifyFree)),
            // Free ports only count immediately before the start: check again.
            (VerifyFree, down_after_stop.clone(), run(VerifyFree)),
            (Start, starting, run(Verify)),
            (Verify, healthy(), run(Verify)),
        ];
        for (k, d, want) in cases {
            let got = plan(&journal(upto(k)), &after_detect(d));
            assert_eq!(got, want, "crash after step {} ({})", k.number(), k.name());
        }
    }

    /// From every crash point, assuming each later step succeeds, the run ends `migrated`
    /// and repeats nothing it did not have to.
    #[test]
    fn every_crash_point_converges() {
        for k in StepKind::ALL {
            let d = if k >= StopLegacy {
                Detection { unit: unit(true, false), legacy_alive: vec![], ..legacy() }
            } else {
                Detection { unit: unit(k >= WriteUnit, false), ..legacy() }
            };
            let (rest, outcome) = remaining(&journal(upto(k)), &after_detect(d));
            assert_eq!(outcome, Outcome::Migrated, "crash after {k:?}");
            assert_eq!(rest.last(), Some(&Verify), "crash after {k:?}: {rest:?}");
            assert!(rest.contains(&VerifyFree) && rest.contains(&Start), "crash after {k:?}: {rest:?}");
            if k >= StopLegacy {
                assert!(
                    !rest.contains(&StopLegacy) && !rest.contains(&Preflight),
                    "crash after {k:?}: {rest:?}"
                );
            } else {
                assert!(rest.starts_with(&[Preflight, WriteUnit, StopLegacy]), "crash after {k:?}: {rest:?}");
            }
        }
    }

    #[test]
    fn failures_map_to_outcomes_and_journal_actions() {
        let cases: Vec<(StepKind, FailureKind, Outcome, JournalAction)> = vec![
            (Detect, FailureKind::ManagerUnavailable, Outcome::NoManager, JournalAction::Keep),
            (Detect, FailureKind::FactsUnavailable, Outcome::Unverifiable, JournalAction::Keep),
            (StopLegacy, FailureKind::FactsUnavailable, Outcome::Unverifiable, JournalAction::Keep),
            (Preflight, FailureKind::ManagerUnavailable, Outcome::NoManager, JournalAction::Keep),
            (Preflight, FailureKind::ExecBroken, Outcome::WriteFailed, JournalAction::Keep),
            (Preflight, FailureKind::PortBlocked, Outcome::PortStuck, JournalAction::Keep),
            (WriteUnit, FailureKind::WriteFailed, Outcome::WriteFailed, JournalAction::Keep),
            (WriteUnit, FailureKind::ManagerUnavailable, Outcome::NoManager, JournalAction::Keep),
            (VerifyFree, FailureKind::PortBlocked, Outcome::PortStuck, JournalAction::ForgetFrom(Sweep)),
            (Start, FailureKind::StartFailed, Outcome::StartFailed, JournalAction::ForgetFrom(Start)),
            (Start, FailureKind::ManagerUnavailable, Outcome::StartFailed, JournalAction::ForgetFrom(Start)),
            (Start, FailureKind::Timeout, Outcome::VerifyTimeout, JournalAction::ForgetFrom(Start)),
            (Verify, FailureKind::Timeout, Outcome::VerifyTimeout, JournalAction::ForgetFrom(Start)),
            (Verify, FailureKind::ModuleFailed, Outcome::ModuleFailed, JournalAction::ForgetFrom(Start)),
        ];
        for (step, kind, outcome, action) in cases {
            let o = Observed { detection: Some(legacy()), ran: steps(&[Detect]), failed: Some((step, kind)) };
            assert_eq!(plan(&Progress::default(), &o), finish(outcome, action), "{step:?} {kind:?}");
        }
    }

    /// After a failed verify the start is forgotten; the re-run then finds the unit active
    /// but unhealthy with no journaled start, and stops it in step 3 before going again.
    #[test]
    fn verify_timeout_then_rerun_restarts_the_unit_w21() {
        let mut done = upto(Start);
        done.remove(&Start);
        let d = Detection { unit: unit(true, true), legacy_alive: vec![], ..legacy() };
        assert_eq!(plan(&journal(done), &after_detect(d)), run(WriteUnit));
    }

    /// A failed start left the unit enabled and flapping (systemd: activating/auto-restart,
    /// not active): the re-run stops it in step 3 before sweeping ports.
    #[test]
    fn enabled_but_not_running_unit_after_a_failed_start_is_stopped_again() {
        let mut done = upto(Start);
        done.remove(&Start);
        let flapping = UnitObservation { file: true, enabled: true, active: false, main_pid: None };
        let d = Detection { unit: flapping, legacy_alive: vec![], ..legacy() };
        assert_eq!(plan(&journal(done), &after_detect(d)), run(WriteUnit));
    }

    /// Every journal position (none, each step, finished, other parameters) × every kind of
    /// box a kill can leave behind: the run that follows has a next step, ends where the
    /// operator asked (assuming each step it makes succeeds), and never makes a step that
    /// would undo or fight what is observed.
    #[test]
    fn state_space_every_state_has_a_next_step_that_makes_progress() {
        let mut journals: Vec<(String, Progress)> = vec![("no journal".into(), Progress::default())];
        for k in StepKind::ALL {
            journals.push((format!("journal up to {}", k.name()), journal(upto(k))));
        }
        journals.push((
            "finished journal".into(),
            Progress { done: upto(Verify), finished: true, same_params: true },
        ));
        journals.push((
            "journal for other parameters".into(),
            Progress { done: upto(Start), finished: false, same_params: false },
        ));
        let stopped = Detection { legacy_alive: vec![], ..legacy() };
        let flapping = UnitObservation { file: true, enabled: true, active: false, main_pid: None };
        let boxes: Vec<(&str, Detection)> = vec![
            ("legacy daemons, no unit", legacy()),
            ("legacy daemons, unit written", Detection { unit: unit(true, false), ..legacy() }),
            ("legacy stopped, no unit", stopped.clone()),
            (
                "legacy stopped, unit written and stopped",
                Detection { unit: unit(true, false), ..stopped.clone() },
            ),
            (
                "legacy stopped, unit active but not healthy yet",
                Detection { unit: unit(true, true), ..stopped.clone() },
            ),
            ("legacy stopped, unit enabled and flapping", Detection { unit: flapping, ..stopped.clone() }),
            ("supervised-healthy", healthy()),
            (
                "healthy unit and a legacy daemon",
                Detection { legacy_alive: vec!["vault".into()], ..healthy() },
            ),
        ];
        for (jw, p) in &journals {
            for (bw, d) in &boxes {
                let (rest, outcome) = remaining(p, &after_detect(d.clone()));
                let what = format!("{jw} × {bw}: {rest:?} → {outcome:?}");
                let goal = d.supervised_healthy() && d.legacy_alive.is_empty();
                if goal {
                    assert!(
                        rest.iter().all(|s| matches!(s, DisableStale | Verify)),
                        "a healthy box is only verified: {what}"
                    );
                    if p.is_fresh() {
                        assert_eq!(outcome, Outcome::AlreadyMigrated, "{what}");
                    } else {
                        assert_eq!((rest.last(), outcome), (Some(&Verify), Outcome::Migrated), "{what}");
                    }
                    continue;
                }
                assert_eq!(outcome, Outcome::Migrated, "{what}");
                assert_eq!(rest.last(), Some(&Verify), "{what}");
                let pos = |k: StepKind| rest.iter().position(|s| *s == k);
                if !d.legacy_alive.is_empty() {
                    // Nothing is stopped on the strength of an old check.
                    assert!(pos(Preflight) < pos(StopLegacy) && pos(Preflight).is_some(), "{what}");
                }
                if (d.unit.active || d.unit.enabled) && !rest.is_empty() && rest[0] != Verify {
                    // A unit left running (not healthy) is stopped by step 3 before the sweep.
                    assert!(pos(WriteUnit).is_some() && pos(WriteUnit) < pos(Sweep), "{what}");
                }
                if pos(Start).is_some() {
                    assert!(pos(VerifyFree).is_some(), "ports are checked before every start: {what}");
                }
            }
        }
    }

    #[test]
    fn dry_run_lists_the_remaining_steps() {
        let o = Observed { detection: Some(legacy()), ran: steps(&[Detect, Preflight]), failed: None };
        let (rest, outcome) = remaining(&Progress::default(), &o);
        assert_eq!(rest, vec![WriteUnit, StopLegacy, DisableStale, Sweep, VerifyFree, Start, Verify]);
        assert_eq!(outcome, Outcome::Migrated);
        let (rest, outcome) = remaining(&Progress::default(), &after_detect(healthy()));
        assert!(rest.is_empty());
        assert_eq!(outcome, Outcome::AlreadyMigrated);
    }
}
