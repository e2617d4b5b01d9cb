//! The executor: asks [`plan`] for the next step, applies exactly that step, journals it,
//! and asks again, until the plan says the cutover is finished.
//!
//! This file is the loop and its bookkeeping: the lock, the journal (load, record),
//! progress events, the dry run and the final report. The steps' effects (manager calls, `/proc`, signals, HTTP probes) are in
//! `steps.rs`; each reports one summary line on success or a [`StepFailure`] (a
//! [`FailureKind`] for the plan plus the lines that explain it), and the plan alone turns
//! failures into outcomes.

use std::collections::BTreeSet;

use parachute_manager::{ServiceManager, UnitId, UnitStatus};

use super::journal::{Journal, Loaded};
use super::legacy::{self, Attribution, Target};
use super::lock::{CutoverLock, Holder as LockHolder, LockError};
use super::plan::{
    Detection, FailureKind, JournalAction, Observed, Outcome, Step, StepKind, plan, remaining,
};
use super::report::{Event, FinalState, ModuleLine, Report, Sink, StepLine, UnitState};
use super::{Config, explain, stale_units};
use crate::model::services::ServicesFile;
use crate::rfc3339;

/// A failed step: the kind the plan acts on and the lines that explain it.
#[derive(Debug, Clone)]
pub struct StepFailure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// Complete sentences naming what failed.
    pub lines: Vec<String>,
}

pub(super) type StepResult = Result<String, StepFailure>;

pub(super) fn fail(kind: FailureKind, line: impl Into<String>) -> StepFailure {
    StepFailure { kind, lines: vec![line.into()] }
}

/// Runs `migrate --to-supervised` (or its dry run) to the end and reports.
pub async fn migrate<M: ServiceManager>(cfg: &Config, manager: &M, sink: &mut dyn Sink) -> Report {
    let (targets, warnings) = {
        let loaded = ServicesFile::read_lenient(&cfg.home.services_json());
        let (t, mut w) = legacy::targets(&cfg.home, cfg.port, &loaded.file);
        w.extend(loaded.warnings.iter().map(|i| format!("services.json: {i}")));
        (t, w)
    };
    for w in &warnings {
        sink.event(Event::Note(w));
    }
    let mut ex = Executor {
        cfg,
        manager,
        sink,
        targets,
        journal: Journal::begin(cfg.port, cfg.exec.clone(), rfc3339::now(), std::process::id()),
        observed: Observed::default(),
        lines: Vec::new(),
        failure: Vec::new(),
        manager_error: None,
        modules: Vec::new(),
        wrote: false,
    };
    ex.run().await
}

/// The running cutover: configuration, the manager, what it has seen and done so far.
pub(super) struct Executor<'a, M> {
    pub(super) cfg: &'a Config,
    pub(super) manager: &'a M,
    pub(super) sink: &'a mut dyn Sink,
    pub(super) targets: Vec<Target>,
    pub(super) journal: Journal,
    pub(super) observed: Observed,
    pub(super) lines: Vec<StepLine>,
    pub(super) failure: Vec<String>,
    pub(super) manager_error: Option<String>,
    pub(super) modules: Vec<ModuleLine>,
    /// Whether this run has written a state file (the journal, or moved a bad one aside).
    pub(super) wrote: bool,
}

/// What one look at the box found.
pub(super) struct Snapshot {
    pub(super) detection: Detection,
    pub(super) unit: Result<UnitStatus, String>,
}

impl<M: ServiceManager> Executor<'_, M> {
    async fn run(&mut self) -> Report {
        let mut lock = if self.cfg.dry_run {
            None
        } else {
            let holder = LockHolder::current("migrate --to-supervised");
            match CutoverLock::acquire_within(&self.cfg.home.cutover_lock(), &holder, self.cfg.lock_wait) {
                Ok(l) => Some(l),
                Err(e @ LockError::Held { .. }) => {
                    self.failure.push(e.to_string());
                    return self.finish(Outcome::Locked, JournalAction::Keep).await;
                }
                Err(e @ LockError::Io { .. }) => {
                    self.failure.push(e.to_string());
                    return self.finish(Outcome::WriteFailed, JournalAction::Keep).await;
                }
            }
        };
        let report = self.run_locked().await;
        if !self.wrote
            && let Some(l) = lock.as_mut()
        {
            // Nothing else was written (a failed preflight, already migrated, no manager):
            // leave no lock file either.
            l.remove_on_release();
        }
        report
    }

    async fn run_locked(&mut self) -> Report {
        if let Err(line) = self.load_journal() {
            self.failure.push(line);
            return self.finish(Outcome::WriteFailed, JournalAction::Keep).await;
        }
        loop {
            let progress = self.journal.progress(self.cfg.port, &self.cfg.exec);
            match plan(&progress, &self.observed) {
                Step::Finish { outcome, journal } => {
                    if outcome == Outcome::Migrated {
                        self.report_skipped(StepKind::Verify, true);
                    }
                    return self.finish(outcome, journal).await;
                }
                Step::Run(k) => {
                    if self.cfg.dry_run && k > StepKind::Preflight {
                        return self.dry_run_report().await;
                    }
                    self.report_skipped(k, false);
                    self.sink.event(Event::Begin(k));
                    match self.apply(k).await {
                        Ok(summary) => {
                            self.sink.event(Event::Done(k, &summary));
                            self.lines.push(StepLine {
                                step: k,
                                number: k.number(),
                                status: "done",
                                summary: summary.clone(),
                            });
                            self.observed.ran.insert(k);
                            if !self.cfg.dry_run {
                                self.record(k, summary);
                            }
                        }
                        Err(f) => {
                            // The step line carries the first sentence; the messages carry all.
                            let detail = f
                                .lines
                                .first()
                                .map(|l| l.lines().next().unwrap_or(""))
                                .unwrap_or("")
                                .to_owned();
                            self.sink.event(Event::Failed(k, &detail));
                            self.lines.push(StepLine {
                                step: k,
                                number: k.number(),
                                status: "failed",
                                summary: detail,
                            });
                            self.failure.extend(f.lines);
                            self.observed.failed = Some((k, f.kind));
                        }
                    }
                }
            }
        }
    }

    /// Reports journaled steps the plan skipped, up to `k` (inclusive when `through`).
    fn report_skipped(&mut self, k: StepKind, through: bool) {
        let reported: BTreeSet<StepKind> = self.lines.iter().map(|l| l.step).collect();
        let skipped: Vec<_> = StepKind::ALL
            .into_iter()
            .filter(|s| *s != StepKind::Detect && (*s < k || (through && *s == k)) && !reported.contains(s))
            .filter_map(|s| self.journal.steps.iter().find(|r| r.step == s).cloned())
            .collect();
        for r in skipped {
            let why = format!("done earlier ({}): {}", r.at, r.summary);
            self.sink.event(Event::Skipped(r.step, &why));
            self.lines.push(StepLine {
                step: r.step,
                number: r.step.number(),
                status: "done-earlier",
                summary: why,
            });
        }
    }

    fn load_journal(&mut self) -> Result<(), String> {
        let path = self.cfg.home.cutover_journal();
        // A dry run changes nothing, not even by moving a malformed journal aside.
        match Journal::load(&path, !self.cfg.dry_run) {
            Ok(Loaded::Absent) => {}
            Ok(Loaded::Found(j)) => {
                let same = j.attempt.port == self.cfg.port && j.attempt.exec == self.cfg.exec;
                if j.finished.is_none()
                    && let Some(last) = j.last_step()
                {
                    let line = if same {
                        format!(
                            "Resuming an interrupted cutover (begun {} by pid {}): step {} ({}) completed at {}. Each earlier step is checked again before it is trusted.",
                            j.attempt.started_at,
                            j.attempt.pid,
                            last.step.number(),
                            last.step.name(),
                            last.at
                        )
                    } else {
                        format!(
                            "An interrupted cutover used port {} and binary {}; this one uses port {} and {}, so it starts over (every step is safe to repeat).",
                            j.attempt.port,
                            j.attempt.exec.display(),
                            self.cfg.port,
                            self.cfg.exec.display()
                        )
                    };
                    self.sink.event(Event::Note(&line));
                }
                self.journal = j;
            }
            Ok(Loaded::Corrupt { moved_to, reason }) => {
                self.wrote |= !self.cfg.dry_run;
                let line = if self.cfg.dry_run {
                    format!(
                        "The cutover journal {} is malformed ({reason}); a real run moves it aside and starts over.",
                        moved_to.display()
                    )
                } else {
                    format!(
                        "The cutover journal was malformed ({reason}); it was moved to {} and the cutover starts over (every step is safe to repeat).",
                        moved_to.display()
                    )
                };
                self.sink.event(Event::Note(&line));
            }
            Err(e) => return Err(e.to_string()),
        }
        Ok(())
    }

    /// Journals a completed step.
    fn record(&mut self, k: StepKind, summary: String) {
        let progress = self.journal.progress(self.cfg.port, &self.cfg.exec);
        if k == StepKind::Detect && progress.is_fresh() {
            // A new attempt. When it ends right here (already migrated, no manager) nothing
            // is written: detection changes nothing and leaves no trace.
            if !matches!(plan(&progress, &self.observed), Step::Run(_)) {
                return;
            }
            let stopped = std::mem::take(&mut self.journal.stopped);
            self.journal =
                Journal::begin(self.cfg.port, self.cfg.exec.clone(), rfc3339::now(), std::process::id());
            self.journal.stopped = stopped;
        }
        self.journal.complete(k, summary, rfc3339::now());
        if matches!(k, StepKind::Detect | StepKind::Preflight) {
            // Read-only steps leave no trace on their own: they are saved with the first
            // step that changes something, so a failed preflight writes nothing.
            return;
        }
        self.wrote = true;
        if let Err(e) = self.journal.save(&self.cfg.home.cutover_journal()) {
            self.observed.failed = Some((k, FailureKind::WriteFailed));
            self.failure.push(e.to_string());
        }
    }

    async fn apply(&mut self, k: StepKind) -> StepResult {
        match k {
            StepKind::Detect => self.detect().await,
            StepKind::Preflight => self.preflight().await,
            StepKind::WriteUnit => self.write_unit().await,
            StepKind::StopLegacy => self.stop_legacy().await,
            StepKind::DisableStale => Ok(self.disable_stale().await),
            StepKind::Sweep => Ok(self.sweep().await),
            StepKind::VerifyFree => self.verify_free().await,
            StepKind::Start => self.start().await,
            StepKind::Verify => self.verify().await,
        }
    }

    async fn dry_run_report(&mut self) -> Report {
        let progress = self.journal.progress(self.cfg.port, &self.cfg.exec);
        let (rest, outcome) = remaining(&progress, &self.observed);
        let known = self.known().await;
        for k in rest {
            let what = match k {
                StepKind::WriteUnit => match self.manager.render(&self.cfg.spec) {
                    Ok(bytes) => format!(
                        "would write {} ({} bytes):\n{}",
                        self.manager.unit_path(&UnitId::hub()).display(),
                        bytes.len(),
                        String::from_utf8_lossy(&bytes)
                    ),
                    Err(e) => format!("would fail to render the unit: {}", e.message),
                },
                StepKind::StopLegacy => {
                    let v: Vec<_> = known
                        .legacy
                        .iter()
                        .map(|p| {
                            format!("{} (pid {}, {})", p.name, p.identity.pid, legacy::sanitize(&p.cmdline))
                        })
                        .collect();
                    if v.is_empty() {
                        "no legacy daemon to stop".to_owned()
                    } else {
                        format!("would stop {}", v.join(", "))
                    }
                }
                StepKind::DisableStale => format!(
                    "would disable, where present: {}",
                    stale_units::candidates(&self.targets)
                        .iter()
                        .map(|u| stale_units::display(self.manager, u))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                StepKind::Sweep => {
                    let v: Vec<_> = self
                        .holders(&known)
                        .iter()
                        .filter(|h| {
                            matches!(
                                h.attribution,
                                Attribution::Orphan { .. } | Attribution::LegacyGroup { .. }
                            )
                        })
                        .map(|h| format!("pid {} on port {}", h.pid, h.port))
                        .collect();
                    if v.is_empty() {
                        "would sweep declared ports (no orphan now)".to_owned()
                    } else {
                        format!("would stop orphans {}", v.join(", "))
                    }
                }
                StepKind::VerifyFree => "would check every declared port is free".to_owned(),
                StepKind::Start => format!("would enable and start the hub unit on port {}", self.cfg.port),
                StepKind::Verify => {
                    "would wait for /health from the unit's main pid and every module running".to_owned()
                }
                StepKind::Detect | StepKind::Preflight => continue,
            };
            self.sink.event(Event::Skipped(k, &what));
            self.lines.push(StepLine { step: k, number: k.number(), status: "would-run", summary: what });
        }
        self.finish(outcome, JournalAction::Keep).await
    }

    async fn finish(&mut self, outcome: Outcome, action: JournalAction) -> Report {
        if !self.cfg.dry_run && !matches!(outcome, Outcome::Locked) {
            let path = self.cfg.home.cutover_journal();
            let changed = match action {
                JournalAction::Keep => false,
                JournalAction::MarkFinished => {
                    self.journal.finish(outcome, rfc3339::now());
                    true
                }
                JournalAction::ForgetFrom(s) => {
                    self.journal.forget_from(s);
                    true
                }
            };
            if changed {
                self.wrote = true;
                if let Err(e) = self.journal.save(&path) {
                    self.failure.push(e.to_string());
                }
            }
        }
        if outcome == Outcome::NoManager && self.failure.is_empty() {
            self.failure.push(self.manager_error.clone().unwrap_or_else(|| {
                "No service manager is reachable; the supervised model needs systemd or launchd.".to_owned()
            }));
        }
        let final_state = self.final_state().await;
        let (messages, next) = explain::explain(outcome, self.cfg, &self.failure, &final_state);
        Report {
            outcome,
            dry_run: self.cfg.dry_run,
            steps: std::mem::take(&mut self.lines),
            final_state,
            messages,
            next,
            starts_at_boot: None,
        }
    }

    async fn final_state(&self) -> FinalState {
        let snap = self.snapshot().await;
        let mut stopped: Vec<String> = self.journal.stopped.iter().map(|s| s.name.clone()).collect();
        stopped.sort();
        stopped.dedup();
        let running: Vec<String> = snap.detection.legacy_alive.clone();
        stopped.retain(|s| !running.contains(s));
        let unit = match &snap.unit {
            Ok(u) => {
                let mut st = UnitState::observed(self.manager.kind(), u);
                if st.scope.is_none() && (u.file.is_some() || u.active || u.loaded) {
                    // The unit is there, in the scope this run manages.
                    st.scope = Some(self.manager.scope().to_string());
                }
                st
            }
            Err(e) => UnitState {
                manager: self.manager.kind().to_owned(),
                file: Some(self.manager.unit_path(&UnitId::hub())).filter(|p| p.exists()),
                unknown: Some(if self.manager_error.as_ref() == Some(e) {
                    "the service manager is not reachable".to_owned()
                } else {
                    e.clone()
                }),
                ..Default::default()
            },
        };
        FinalState {
            legacy_stopped: stopped,
            legacy_running: running,
            unit,
            hub_healthy: snap.detection.supervised_healthy(),
            modules: self.modules.clone(),
        }
    }
}
