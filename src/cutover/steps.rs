//! The nine steps' effects: each method applies one step and returns its summary line or
//! a [`StepFailure`]. The loop that picks the step, journals it and reports is in
//! [`super::run`].
//!
//! Waits share budgets instead of compounding (upstream W34): all legacy processes are
//! signalled first and then waited for together under one grace period; all ports are
//! polled together under one deadline. Every signal goes through
//! [`signal_identity`] (pid + start time, pinned by a pidfd), never to a bare number.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use parachute_manager::{AfterInstall, Change, ErrorKind, ServiceManager, UnitId};
use parachute_process::{ProcessIdentity, Signal, procfs, signal_identity};

use super::journal::StoppedProcess;
use super::legacy::{self, Attribution, Holder, Known, PidfileState, Target};
use super::plan::{Detection, FailureKind, HealthObservation, InstanceObservation, UnitObservation};
use super::probe;
use super::report::ModuleLine;
use super::run::{Executor, Snapshot, StepFailure, StepResult, fail};
use super::stale_units;
use crate::model::hub_instance::HubInstance;
use crate::supervisor::ModuleStatus;

impl<M: ServiceManager> Executor<'_, M> {
    pub(super) async fn snapshot(&self) -> Snapshot {
        let unit = self.manager.status(&UnitId::hub()).await.map_err(|e| e.message.clone());
        let instance_file = match HubInstance::read(&self.cfg.home.hub_instance()) {
            Ok(Some(r)) if r.port == self.cfg.port => {
                Some(InstanceObservation { pid: r.pid, instance: r.instance })
            }
            _ => None,
        };
        let health = probe::health(self.cfg.port, self.cfg.timeouts.http)
            .await
            .map(|h| HealthObservation { instance: h.instance, pid: h.pid });
        let u = unit.as_ref().ok();
        let detection = Detection {
            manager_available: unit.is_ok(),
            unit: UnitObservation {
                file: u.is_some_and(|u| u.file.is_some()),
                enabled: u.is_some_and(|u| u.enabled),
                active: u.is_some_and(|u| u.active),
                main_pid: u.and_then(|u| u.main_pid),
            },
            instance_file,
            health,
            legacy_alive: self
                .targets
                .iter()
                .filter(|t| matches!(legacy::inspect(t), PidfileState::Running(_)))
                .map(|t| t.name.clone())
                .collect(),
        };
        Snapshot { detection, unit }
    }

    pub(super) async fn detect(&mut self) -> StepResult {
        // Every later step acts on these facts: without them, stop here, before anything.
        let mut unknown = legacy::unverifiable(self.cfg.facts.as_ref(), &self.targets);
        if !unknown.is_empty() {
            unknown.push("Nothing was stopped, signalled, deleted or written.".to_owned());
            return Err(StepFailure { kind: FailureKind::FactsUnavailable, lines: unknown });
        }
        let snap = self.snapshot().await;
        let d = &snap.detection;
        if let Err(e) = &snap.unit {
            self.manager_error = Some(e.clone());
        }
        let unit = match &snap.unit {
            Err(_) => "no service manager is reachable".to_owned(),
            Ok(u) => match (&u.file, u.active) {
                (None, _) => format!("{}: no hub unit", self.manager.kind()),
                (Some(_), true) => format!("{}: hub unit running", self.manager.kind()),
                (Some(_), false) => format!("{}: hub unit written, not running", self.manager.kind()),
            },
        };
        let legacy = if d.legacy_alive.is_empty() { "none".to_owned() } else { d.legacy_alive.join(", ") };
        let health =
            if d.supervised_healthy() { "healthy under the manager" } else { "not supervised-healthy" };
        let summary =
            format!("{unit}; hub on port {} {health}; legacy daemons running: {legacy}", self.cfg.port);
        self.observed.detection = Some(snap.detection);
        Ok(summary)
    }

    /// What the cutover may stop right now: verified legacy processes, members of groups
    /// stopped earlier (journal), and the hub unit's process tree.
    pub(super) async fn known(&self) -> Known {
        let legacy = self
            .targets
            .iter()
            .filter_map(|t| match legacy::inspect(t) {
                PidfileState::Running(p) => Some(p),
                _ => None,
            })
            .collect();
        let legacy_members = self
            .journal
            .stopped
            .iter()
            .flat_map(|s| s.members.iter().map(|m| (s.name.clone(), *m)))
            .collect();
        let supervised_root =
            self.manager.status(&UnitId::hub()).await.ok().filter(|s| s.active).and_then(|s| s.main_pid);
        Known { legacy, legacy_members, supervised_root }
    }

    /// Every holder of every declared port (each port once), attributed.
    pub(super) fn holders(&self, known: &Known) -> Vec<Holder> {
        let mut seen = BTreeSet::new();
        self.targets.iter().filter(|t| seen.insert(t.port)).flat_map(|t| legacy::holders(t, known)).collect()
    }

    pub(super) async fn preflight(&mut self) -> StepResult {
        let version = probe::exec_version(&self.cfg.exec, self.cfg.timeouts.exec)
            .await
            .map_err(|why| {
                fail(
                    FailureKind::ExecBroken,
                    format!(
                        "`{} --version` failed: {why}. That binary would be baked into the unit; pass --exec with the path of a working parachute binary. Nothing was changed.",
                        self.cfg.exec.display()
                    ),
                )
            })?;
        let known = self.known().await;
        let holders = self.holders(&known);
        let foreign: Vec<_> = holders.iter().filter(|h| !h.attribution.is_ours()).collect();
        if !foreign.is_empty() {
            let mut lines: Vec<String> = foreign
                .iter()
                .map(|h| {
                    format!(
                        "Port {} ({}) is held by pid {} ({}), which is not a Parachute process of this box; the cutover will not stop it.",
                        h.port,
                        h.owner,
                        h.pid,
                        h.cmdline.as_deref().unwrap_or("command line unreadable")
                    )
                })
                .collect();
            lines.push("Preflight is read-only: nothing was stopped or written.".to_owned());
            return Err(StepFailure { kind: FailureKind::PortBlocked, lines });
        }
        let mut parts = vec![format!("{} runs", version)];
        for h in &holders {
            parts.push(format!(
                "port {} ({}) held by {} pid {}",
                h.port,
                h.owner,
                describe(&h.attribution),
                h.pid
            ));
        }
        for t in &self.targets {
            if let PidfileState::Reused { pid, cmdline, .. } = legacy::inspect(t) {
                parts.push(format!(
                    "{}'s pidfile names pid {pid}, now {:?}: not ours, will be removed, never signalled",
                    t.name,
                    cmdline.as_deref().map(legacy::sanitize).unwrap_or_default()
                ));
            }
        }
        Ok(parts.join("; "))
    }

    pub(super) async fn write_unit(&mut self) -> StepResult {
        let id = UnitId::hub();
        let mut notes = Vec::new();
        let status = self.manager.status(&id).await.map_err(write_failure)?;
        if status.active || status.enabled {
            // Also an enabled unit that is between restarts: it would rebind the hub port.
            self.manager.stop(&id).await.map_err(write_failure)?;
            notes.push(format!("stopped the hub unit an earlier attempt left {}", status.state_text));
        }
        let change =
            self.manager.install(&self.cfg.spec, AfterInstall::DontStart).await.map_err(write_failure)?;
        let path = self.manager.unit_path(&id);
        notes.insert(
            0,
            match change {
                Change::Changed => format!("wrote {} (not started)", path.display()),
                Change::AlreadyInPlace => format!("{} already up to date (not started)", path.display()),
            },
        );
        Ok(notes.join("; "))
    }

    pub(super) async fn stop_legacy(&mut self) -> StepResult {
        // A pidfile is removed below only when its pid is known gone or known reused.
        let unknown = legacy::unverifiable(self.cfg.facts.as_ref(), &self.targets);
        if !unknown.is_empty() {
            return Err(StepFailure { kind: FailureKind::FactsUnavailable, lines: unknown });
        }
        let mut notes = Vec::new();
        let mut to_stop = Vec::new();
        for t in &self.targets {
            match legacy::inspect(t) {
                PidfileState::Absent => {}
                PidfileState::Malformed(e) => notes.push(format!("{e} (left in place)")),
                PidfileState::Stale { pid } => {
                    remove_pidfiles(t);
                    notes.push(format!("{}: pidfile named pid {pid}, which is gone; removed it", t.name));
                }
                PidfileState::Reused { pid, cmdline, reason } => {
                    remove_pidfiles(t);
                    notes.push(format!(
                        "{}: pidfile named pid {pid} ({}), which is not ours ({reason}); removed the pidfile, did not signal",
                        t.name,
                        cmdline.as_deref().map(legacy::sanitize).unwrap_or_default()
                    ));
                }
                PidfileState::Running(p) => to_stop.push((t.clone(), p)),
            }
        }
        // Record every group member before any signal, so a crash mid-stop still lets the
        // sweep attribute survivors to their (then dead) leaders.
        let stopped: Vec<StoppedProcess> = to_stop
            .iter()
            .map(|(_, p)| {
                let mut members: Vec<ProcessIdentity> = if p.pgid == p.identity.pid {
                    procfs::group_members(p.pgid).into_iter().filter_map(procfs::identity).collect()
                } else {
                    Vec::new()
                };
                if !members.contains(&p.identity) {
                    members.push(p.identity);
                }
                StoppedProcess { name: p.name.clone(), pid: p.identity.pid, pgid: p.pgid, members }
            })
            .collect();
        if !stopped.is_empty() && !self.cfg.dry_run {
            self.journal.add_stopped(stopped.clone());
            self.journal
                .save(&self.cfg.home.cutover_journal())
                .map_err(|e| fail(FailureKind::WriteFailed, e.to_string()))?;
        }
        for (_, p) in &to_stop {
            let _ = signal_identity(&p.identity, Signal::Term, true);
        }
        let all: Vec<ProcessIdentity> = stopped.iter().flat_map(|s| s.members.iter().copied()).collect();
        let survivors = terminate(&all, self.cfg.timeouts.stop_grace, self.cfg.timeouts.kill_wait).await;
        for (t, p) in &to_stop {
            if procfs::is_same_process(&p.identity) {
                notes.push(format!(
                    "{} (pid {}) is still running; its pidfile is kept",
                    t.name, p.identity.pid
                ));
            } else {
                remove_pidfiles(t);
                notes.insert(0, format!("stopped {} (pid {})", t.name, p.identity.pid));
            }
        }
        for s in &survivors.killed {
            notes.push(format!("pid {} did not exit on SIGTERM and was SIGKILLed", s.pid));
        }
        for s in &survivors.alive {
            notes.push(format!(
                "pid {} survived SIGKILL (uninterruptible?); the port check will report it",
                s.pid
            ));
        }
        if notes.is_empty() {
            notes.push("no legacy daemon was running".to_owned());
        }
        Ok(notes.join("; "))
    }

    pub(super) async fn disable_stale(&mut self) -> String {
        let (disabled, warnings) = stale_units::disable(self.manager, &self.targets).await;
        let mut parts = Vec::new();
        if !disabled.is_empty() {
            parts.push(format!("disabled {}", disabled.join(", ")));
        }
        parts.extend(warnings);
        if parts.is_empty() { "no stale per-module unit found".to_owned() } else { parts.join("; ") }
    }

    pub(super) async fn sweep(&mut self) -> String {
        let known = self.known().await;
        let holders = self.holders(&known);
        let mut notes = Vec::new();
        let mut ours = Vec::new();
        for h in &holders {
            if h.attribution == Attribution::Supervised {
                // The running hub unit's own tree (a resumed run whose unit is up): the
                // manager owns it; step 3 stops it through the manager when it must go.
                notes.push(format!("left pid {} on port {} to the hub unit that runs it", h.pid, h.port));
            } else if h.attribution.is_sweepable() {
                let _ = signal_identity(&h.identity, Signal::Term, false);
                ours.push(h.identity);
                notes.push(format!(
                    "stopped {} on port {} (pid {})",
                    describe(&h.attribution),
                    h.port,
                    h.pid
                ));
            } else {
                notes.push(format!(
                    "left pid {} ({}) on port {} alone: not attributable to this box",
                    h.pid,
                    h.cmdline.as_deref().unwrap_or("command line unreadable"),
                    h.port
                ));
            }
        }
        let out = terminate(&ours, self.cfg.timeouts.stop_grace, self.cfg.timeouts.kill_wait).await;
        for s in &out.killed {
            notes.push(format!("pid {} needed SIGKILL", s.pid));
        }
        if notes.is_empty() { "no orphan on any declared port".to_owned() } else { notes.join("; ") }
    }

    /// Ports still held after the deadline, described. With `allow_supervised`, a port held
    /// only by the running hub unit's own process tree counts as free: the manager starts
    /// (or keeps) that tree, and it must never block its own start.
    pub(super) async fn wait_ports_free(&self, within: Duration, allow_supervised: bool) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = BTreeSet::new();
        let ports: Vec<&Target> = self.targets.iter().filter(|t| seen.insert(t.port)).collect();
        loop {
            let mut busy: Vec<&Target> = ports
                .iter()
                .copied()
                .filter(|t| legacy::port_in_use(self.cfg.facts.as_ref(), t.port))
                .collect();
            if allow_supervised && !busy.is_empty() {
                let known = self.known().await;
                busy.retain(|t| {
                    let hs = legacy::holders(t, &known);
                    hs.is_empty() || hs.iter().any(|h| h.attribution != Attribution::Supervised)
                });
            }
            if busy.is_empty() {
                return Vec::new();
            }
            if Instant::now() >= deadline {
                let known = self.known().await;
                return busy
                    .iter()
                    .flat_map(|t| {
                        let hs = legacy::holders(t, &known);
                        if hs.is_empty() {
                            vec![format!(
                                "Port {} ({}) is still held (holder not visible to this user).",
                                t.port, t.name
                            )]
                        } else {
                            hs.iter()
                                .map(|h| {
                                    format!(
                                        "Port {} ({}) is still held by pid {} ({}; {}).",
                                        h.port,
                                        h.owner,
                                        h.pid,
                                        h.cmdline.as_deref().unwrap_or("command line unreadable"),
                                        describe(&h.attribution)
                                    )
                                })
                                .collect()
                        }
                    })
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub(super) async fn verify_free(&mut self) -> StepResult {
        let busy = self.wait_ports_free(self.cfg.timeouts.port_free, false).await;
        if busy.is_empty() {
            let ports: BTreeSet<u16> = self.targets.iter().map(|t| t.port).collect();
            Ok(format!(
                "declared ports free: {}",
                ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
            ))
        } else {
            Err(StepFailure { kind: FailureKind::PortBlocked, lines: busy })
        }
    }

    pub(super) async fn start(&mut self) -> StepResult {
        // A unit already up and healthy (an earlier run was killed during its start) is
        // the goal itself: nothing to start, and its ports are its own.
        let snap = self.snapshot().await;
        if snap.detection.supervised_healthy() {
            return Ok(format!(
                "the hub unit was already running and healthy (main pid {})",
                snap.detection.unit.main_pid.unwrap_or(0)
            ));
        }
        // The last look, immediately before the start (W21: a port freed earlier may have
        // been taken again since).
        let busy = self.wait_ports_free(Duration::ZERO, true).await;
        if !busy.is_empty() {
            return Err(StepFailure { kind: FailureKind::PortBlocked, lines: busy });
        }
        let change = self.manager.install(&self.cfg.spec, AfterInstall::Start).await.map_err(|e| {
            let kind = match e.kind {
                ErrorKind::ManagerUnavailable => FailureKind::ManagerUnavailable,
                ErrorKind::Timeout => FailureKind::Timeout,
                _ => FailureKind::StartFailed,
            };
            let mut lines = vec![format!("The service manager did not start the hub unit: {}", e.message)];
            // Backends often quote the log tail in the message already; print it once.
            if !e.log_tail.iter().all(|l| e.message.contains(l.as_str())) {
                lines.extend(e.log_tail.iter().map(|l| format!("  | {}", legacy::sanitize(l))));
            }
            StepFailure { kind, lines }
        })?;
        Ok(match change {
            Change::Changed => "enabled and started the hub unit".to_owned(),
            Change::AlreadyInPlace => "the hub unit was already enabled and running".to_owned(),
        })
    }

    pub(super) async fn verify(&mut self) -> StepResult {
        let deadline = Instant::now() + self.cfg.timeouts.verify;
        loop {
            let last;
            let snap = self.snapshot().await;
            if snap.detection.supervised_healthy() {
                match crate::client::Hub::connect(&self.cfg.home).await {
                    Ok(hub) => match hub.modules().await {
                        Ok(list) => {
                            let check = check_modules(&list, &self.targets);
                            self.modules = check.lines;
                            if !check.failed.is_empty() {
                                // Crashed or never supervised: that does not change without
                                // an operator, so waiting would only delay the news.
                                let mut lines = vec![format!(
                                    "The supervised hub answers, but {} of its modules did not come up:",
                                    check.failed.len()
                                )];
                                lines.extend(check.failed.iter().map(|l| format!("  {l}")));
                                return Err(StepFailure { kind: FailureKind::ModuleFailed, lines });
                            }
                            if check.pending.is_empty() {
                                return Ok(self.modules_summary(snap.detection.unit.main_pid));
                            }
                            last = check.pending.join("; ");
                        }
                        Err(e) => last = e.to_string(),
                    },
                    Err(e) => last = e.to_string(),
                }
            } else {
                last = match (&snap.detection.unit, &snap.detection.health) {
                    (u, _) if !u.active => format!(
                        "the manager reports the hub unit not running ({})",
                        snap.unit.as_ref().map(|u| u.state_text.clone()).unwrap_or_default()
                    ),
                    (_, None) => format!(
                        "nothing answers GET /health on 127.0.0.1:{} as a Parachute hub",
                        self.cfg.port
                    ),
                    (u, Some(h)) => format!(
                        "/health answers from pid {} (instance {}), but the manager's main pid is {:?} and hub-instance.json says {:?}",
                        h.pid,
                        h.instance,
                        u.main_pid,
                        snap.detection.instance_file.as_ref().map(|r| (r.pid, r.instance.clone()))
                    ),
                };
            }
            if Instant::now() >= deadline {
                return Err(fail(
                    FailureKind::Timeout,
                    format!(
                        "The supervised hub was not verified within {:?}: {last}.",
                        self.cfg.timeouts.verify
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(super) fn modules_summary(&self, main_pid: Option<u32>) -> String {
        let mut parts = vec![format!("/health answers from the unit's main pid {}", main_pid.unwrap_or(0))];
        if self.modules.is_empty() {
            parts.push("no module is supervised".to_owned());
        }
        for m in &self.modules {
            let mut s = format!("{} {}", m.short, m.status);
            if let Some(p) = m.pid {
                s.push_str(&format!(" (pid {p})"));
            }
            if let Some(e) = &m.start_error {
                s.push_str(&format!(" — {e}"));
            }
            parts.push(s);
        }
        parts.join("; ")
    }
}

/// What step 9 made of the hub's module list.
struct ModuleCheck {
    /// One line per module, for the report.
    lines: Vec<ModuleLine>,
    /// Modules that will not come up without an operator (crashed, stopped, unsupervised).
    failed: Vec<String>,
    /// Modules still on their way (starting, restarting, running but not listening yet).
    pending: Vec<String>,
}

/// Checks every module the hub lists: it must be `running`, and its declared port must be
/// bound by its own process tree (the pid the hub reports, or a descendant).
fn check_modules(list: &crate::api::wire::ModuleList, targets: &[Target]) -> ModuleCheck {
    let mut out = ModuleCheck { lines: Vec::new(), failed: Vec::new(), pending: Vec::new() };
    let err_text =
        |m: &crate::supervisor::ModuleState| m.start_error.as_ref().map(|e| legacy::sanitize(&e.to_string()));
    let port_of = |short: &str| {
        list.installed
            .iter()
            .find(|i| i.short == short)
            .and_then(|i| i.port)
            .or_else(|| targets.iter().find(|t| t.name == short).map(|t| t.port))
    };
    for m in &list.modules {
        let port = port_of(&m.short);
        let listening = match (port, m.pid) {
            (Some(p), Some(pid)) => {
                procfs::listeners(p).iter().any(|l| l.pid == pid || procfs::is_descendant(l.pid, pid))
            }
            (None, Some(_)) => true,
            _ => false,
        };
        let start_error = err_text(m);
        let why = start_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default();
        let name = legacy::sanitize(&m.short);
        match m.status {
            ModuleStatus::Crashed | ModuleStatus::Stopped => {
                out.failed.push(format!("{name} is {}{why}", m.status.as_str()));
            }
            ModuleStatus::Starting | ModuleStatus::Restarting => {
                out.pending.push(format!("{name} is {}{why}", m.status.as_str()));
            }
            ModuleStatus::Running if !listening => out.pending.push(format!(
                "{name} is running (pid {}) but its port {} is not bound by its process tree yet{why}",
                m.pid.unwrap_or(0),
                port.map(|p| p.to_string()).unwrap_or_default()
            )),
            ModuleStatus::Running => {}
        }
        out.lines.push(ModuleLine {
            short: m.short.clone(),
            status: m.status.as_str().to_owned(),
            pid: m.pid,
            port,
            listening,
            start_error,
        });
    }
    // Declared but not supervised: the hub found nothing to run.
    for i in list.installed.iter().filter(|i| !list.modules.iter().any(|m| m.short == i.short)) {
        let why = i
            .skip_reason
            .as_deref()
            .map(legacy::sanitize)
            .unwrap_or_else(|| "the hub has no start command for it (see its log)".to_owned());
        out.failed.push(format!("{} is not supervised ({why})", legacy::sanitize(&i.short)));
        out.lines.push(ModuleLine {
            short: i.short.clone(),
            status: "not-supervised".to_owned(),
            pid: None,
            port: i.port,
            listening: false,
            start_error: Some(why),
        });
    }
    out
}

fn write_failure(e: parachute_manager::Error) -> StepFailure {
    let kind = if e.kind == ErrorKind::ManagerUnavailable {
        FailureKind::ManagerUnavailable
    } else {
        FailureKind::WriteFailed
    };
    fail(kind, format!("Could not write the hub unit: {}", e.message))
}

fn describe(a: &Attribution) -> String {
    match a {
        Attribution::Legacy { name } => format!("the legacy {name}"),
        Attribution::LegacyGroup { name } => format!("a process of the legacy {name}"),
        Attribution::Supervised => "the hub unit's own process tree".to_owned(),
        Attribution::Orphan { name } => format!("an orphaned {name} process"),
        Attribution::Foreign => "an unrelated process".to_owned(),
    }
}

fn remove_pidfiles(t: &Target) {
    let _ = parachute_fsx::remove_file(&t.pidfile);
    if t.is_hub()
        && let Some(run) = t.pidfile.parent()
    {
        let _ = parachute_fsx::remove_file(&run.join("hub.port"));
    }
}

/// What [`terminate`] could not stop gracefully.
struct Leftovers {
    killed: Vec<ProcessIdentity>,
    alive: Vec<ProcessIdentity>,
}

/// Waits (already signalled) processes out together under one grace period, SIGKILLs the
/// survivors by identity, and waits `kill_wait` for those.
async fn terminate(ids: &[ProcessIdentity], grace: Duration, kill_wait: Duration) -> Leftovers {
    let alive =
        |ids: &[ProcessIdentity]| ids.iter().copied().filter(procfs::is_same_process).collect::<Vec<_>>();
    let deadline = Instant::now() + grace;
    let mut left = alive(ids);
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = alive(&left);
    }
    let killed = left.clone();
    for id in &left {
        let _ = signal_identity(id, Signal::Kill, false);
    }
    let deadline = Instant::now() + kill_wait;
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = alive(&left);
    }
    Leftovers { killed, alive: left }
}
