//! The upgrade hook's drift repair for one manager scope.
//!
//! ```text
//!  read the installed unit ─ none ─────────────────────────────► not-installed
//!    │ unreadable (no home, specifier, …) ──────────────────────► unreadable (left as is)
//!  re-render it for the new binary (same home, port, user, extra PATH)
//!  `<exec> --version` fails ────────────────────────────────────► exec-broken (left as is)
//!  definition current, running binary not replaced, same version ► in-sync (no restart)
//!  unit not running ── rewrite only ───────────────────────────► rewritten
//!  definition current, only the binary changed, hub healthy:
//!    in-place upgrade (same pid, modules kept) ── same MainPID ─► upgraded-in-place
//!        │ refused, unsupported, not back in time (the reason is reported)
//!        ▼
//!  rewrite + restart ── /health from the manager's MainPID ─────► restarted
//!        │ not healthy by the deadline, or the manager failed
//!        ▼
//!  write the previous bytes back, stop + start, check again ─ healthy ► rolled-back
//!                                                     └ not ────► rollback-failed
//! ```
//!
//! "Healthy" is the cutover's test: the unit is active, `hub-instance.json` names the
//! manager's main pid, and `GET /health` on the unit's port answers with that instance and
//! pid. A restart is needed not only when the unit's text changed: a package upgrade
//! replaces the binary behind an unchanged `ExecStart=`, so a hub whose `/proc/<pid>/exe` is
//! deleted, or whose `/health` version differs from the new binary's, is restarted too
//! (upstream §5.6 restarted on a version mismatch, but never re-rendered the unit).
//!
//! When only the binary changed (the unit's text is what this parachute renders) and the
//! hub is healthy, the restart is a last resort: the hub is first asked to replace its own
//! image ([`crate::client::Hub::upgrade_in_place`], issue 17), which keeps its pid (the
//! manager sees no restart) and every module process. A changed definition still needs the
//! restart (the manager applies a unit's text only when it starts the service).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use parachute_manager::{
    AfterInstall, Drift, ErrorKind, InstalledUnit, Scope, ServiceManager, UnitId, UnitSpec, UnitState,
};
use serde::Serialize;

use super::installed::InstalledHub;
use crate::api::wire::Health;
use crate::client::{Hub, InPlaceUpgrade, UpgradeError};
use crate::cutover::probe;
use crate::model::home::Home;
use crate::model::hub_instance::HubInstance;

/// What the caller decides for a refresh.
#[derive(Debug, Clone)]
pub struct RefreshOptions {
    /// The binary the unit should run (the stable installed path, e.g. `/usr/bin/parachute`).
    pub exec: PathBuf,
    /// The user home for `PATH` when the installed unit's `PATH` does not show it.
    pub fallback_user_home: Option<PathBuf>,
    /// How long a restarted hub gets to answer healthy (and again after a rollback).
    pub wait: Duration,
    /// One `/health` probe, and `<exec> --version`.
    pub probe_timeout: Duration,
}

/// What the upgrade hook did in one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefreshOutcome {
    /// No hub unit in this scope.
    NotInstalled,
    /// The definition and the running binary are current; nothing was done.
    InSync,
    /// The definition was rewritten; the unit was not running, so it was not started.
    Rewritten,
    /// Rewritten and/or restarted, and the hub answered healthy.
    Restarted,
    /// Only the binary changed: the hub replaced its own image (same pid, every module kept
    /// running) and answers healthy as the new build.
    UpgradedInPlace,
    /// The installed unit could not be read back; it was left as it is.
    Unreadable,
    /// The new binary does not run (`--version` failed, or the running hub's dry run of it
    /// showed it cannot serve); the unit, and a running hub, were left as they are.
    ExecBroken,
    /// The manager failed before anything was changed.
    ManagerError,
    /// The new definition did not come up healthy; the previous one is back and healthy.
    RolledBack,
    /// The new definition did not come up healthy, and neither did the restored one.
    RollbackFailed,
}

/// How a running hub was moved onto the new binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradePath {
    /// The hub replaced its own image (same pid, modules kept running).
    InPlace,
    /// The unit was restarted (the hub and every module with it).
    Restart,
}

/// The report of one scope's refresh.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshReport {
    /// The manager scope.
    pub scope: Scope,
    /// The backend (`systemd-user`, `launchd`, …).
    pub backend: &'static str,
    /// What happened.
    pub outcome: RefreshOutcome,
    /// The unit file.
    pub unit_path: PathBuf,
    /// The home the unit serves, when it could be read.
    pub home: Option<PathBuf>,
    /// The port the unit serves, when it could be read.
    pub port: Option<u16>,
    /// Why the unit was rewritten or restarted (empty when it was not).
    pub reasons: Vec<String>,
    /// The definition change, on-disk (`-`) against new (`+`).
    pub diff: Option<String>,
    /// The hub's main pid before.
    pub pid_before: Option<u32>,
    /// The hub's main pid after.
    pub pid_after: Option<u32>,
    /// Whether the hub answered healthy before anything was done.
    pub healthy_before: bool,
    /// How a running hub was moved onto the new binary: `in_place` or `restart` (`null`
    /// when it was not: nothing to do, not running, or nothing changed).
    pub upgrade: Option<UpgradePath>,
    /// The in-place upgrade, when it happened: builds, generation, modules kept.
    pub in_place: Option<InPlaceUpgrade>,
    /// Why the in-place upgrade was tried and not done (the restart happened instead).
    pub in_place_error: Option<String>,
    /// What happened, in sentences.
    pub message: String,
    /// The last lines of the hub's log, when the new definition failed.
    pub log_tail: Vec<String>,
}

impl RefreshReport {
    /// Whether this refresh left down a hub that was healthy before it: the one failure a
    /// package operation must not hide.
    pub fn broke_the_hub(&self) -> bool {
        self.healthy_before && self.outcome == RefreshOutcome::RollbackFailed
    }

    fn end(mut self, outcome: RefreshOutcome, message: String) -> RefreshReport {
        self.outcome = outcome;
        self.message = message;
        self
    }
}

/// The refresh's states. Each step does one thing and names the next; [`Step::Done`] ends it.
enum Step {
    /// Read the installed unit back through the backend.
    Read,
    /// Work out what the installed unit serves and re-render it for the new binary.
    Respec(InstalledUnit),
    /// Check the new binary, the running hub and the drift; decide what to do.
    Inspect(Plan),
    /// Rewrite the definition of a hub that is not running (it stays down).
    Rewrite(Plan),
    /// Ask the running hub to replace its own image (only the binary changed).
    InPlace(Plan),
    /// Rewrite and/or restart a running hub, then wait for it to answer healthy.
    Apply(Plan),
    /// Put the previous definition back and bring the hub up on it.
    RollBack(Plan, String),
    /// Finished, with this outcome and sentence.
    Done(RefreshOutcome, String),
}

/// What a refresh acts on once the installed unit is understood.
struct Plan {
    previous: InstalledUnit,
    spec: UnitSpec,
    home: Home,
    port: u16,
    drift: Drift,
}

/// The fixed inputs of one refresh.
struct Ctx<'a, M> {
    m: &'a M,
    opts: &'a RefreshOptions,
    id: UnitId,
    name: String,
}

/// Re-renders the hub unit in `m`'s scope for `opts.exec` and repairs drift (see the module doc).
pub async fn refresh<M: ServiceManager>(m: &M, opts: &RefreshOptions) -> RefreshReport {
    let id = UnitId::hub();
    let cx = Ctx { m, opts, name: format!("{} ({} scope)", m.display_name(&id), m.scope()), id };
    let mut r = RefreshReport {
        scope: m.scope(),
        backend: m.kind(),
        outcome: RefreshOutcome::NotInstalled,
        unit_path: m.unit_path(&cx.id),
        home: None,
        port: None,
        reasons: Vec::new(),
        diff: None,
        pid_before: None,
        pid_after: None,
        healthy_before: false,
        upgrade: None,
        in_place: None,
        in_place_error: None,
        message: String::new(),
        log_tail: Vec::new(),
    };
    let mut step = Step::Read;
    loop {
        step = match step {
            Step::Read => read(&cx),
            Step::Respec(installed) => respec(&cx, &mut r, installed),
            Step::Inspect(plan) => inspect(&cx, &mut r, plan).await,
            Step::Rewrite(plan) => rewrite(&cx, &r, &plan).await,
            Step::InPlace(plan) => in_place(&cx, &mut r, plan).await,
            Step::Apply(plan) => apply(&cx, &mut r, plan).await,
            Step::RollBack(plan, failure) => roll_back(&cx, &mut r, &plan, &failure).await,
            Step::Done(outcome, message) => return r.end(outcome, message),
        }
    }
}

fn read<M: ServiceManager>(cx: &Ctx<'_, M>) -> Step {
    match cx.m.read_installed(&cx.id) {
        Ok(Some(u)) => Step::Respec(u),
        Ok(None) => {
            Step::Done(RefreshOutcome::NotInstalled, format!("no hub unit in the {} scope.", cx.m.scope()))
        }
        Err(e) if e.kind == ErrorKind::Unreadable => unreadable(cx, &e.message),
        Err(e) => Step::Done(RefreshOutcome::ManagerError, format!("{}: {e}; left as it is.", cx.name)),
    }
}

fn unreadable<M>(cx: &Ctx<'_, M>, why: &str) -> Step {
    Step::Done(
        RefreshOutcome::Unreadable,
        format!("{}: {why}; left as it is. Re-install it with `parachute unit install`.", cx.name),
    )
}

fn respec<M: ServiceManager>(cx: &Ctx<'_, M>, r: &mut RefreshReport, installed: InstalledUnit) -> Step {
    let hub = InstalledHub::new(installed);
    let (home, port) = match (hub.home(), hub.port()) {
        (Ok(h), Ok(p)) => (h, p),
        (Err(why), _) | (_, Err(why)) => return unreadable(cx, &why),
    };
    r.home = Some(home.root().to_path_buf());
    r.port = Some(port);
    // A system unit's PATH belongs to the account it runs as, not to whoever runs the hook.
    let fallback = hub
        .run_as_user()
        .filter(|_| cx.m.scope() == Scope::System)
        .and_then(|u| nix::unistd::User::from_name(u).ok().flatten())
        .map(|u| u.dir)
        .or_else(|| cx.opts.fallback_user_home.clone());
    match hub.respec(&cx.opts.exec, cx.m.scope(), fallback.as_deref()) {
        Ok(spec) => Step::Inspect(Plan { previous: hub.unit, spec, home, port, drift: Drift::InSync }),
        Err(why) => unreadable(cx, &why),
    }
}

async fn inspect<M: ServiceManager>(cx: &Ctx<'_, M>, r: &mut RefreshReport, mut plan: Plan) -> Step {
    let (m, opts, name) = (cx.m, cx.opts, &cx.name);
    let new_version = match probe::exec_version(&opts.exec, opts.probe_timeout).await {
        Ok(v) => v,
        Err(why) => {
            let msg = format!(
                "{name}: the new binary {} does not run ({why}); the unit was left as it is.",
                opts.exec.display()
            );
            return Step::Done(RefreshOutcome::ExecBroken, msg);
        }
    };
    let status = match m.status(&cx.id).await {
        Ok(s) => s,
        Err(e) => {
            return Step::Done(RefreshOutcome::ManagerError, format!("{name}: {e} Nothing was changed."));
        }
    };
    let running = status.main_pid.filter(|_| status.active && status.scope == Some(m.scope()));
    r.pid_before = running;
    let health_before = match running {
        Some(pid) => {
            check_health(m, &plan.home, plan.port, opts.probe_timeout).await.ok().filter(|(p, _)| *p == pid)
        }
        None => None,
    };
    r.healthy_before = health_before.is_some();
    plan.drift = match m.drift(&plan.spec).await {
        Ok(d) => d,
        Err(e) => {
            return Step::Done(RefreshOutcome::ManagerError, format!("{name}: {e} Nothing was changed."));
        }
    };
    match &plan.drift {
        Drift::InSync => {}
        Drift::NotInstalled => {
            return Step::Done(RefreshOutcome::NotInstalled, format!("{name} went away meanwhile."));
        }
        Drift::FileDiffers { diff } => {
            r.reasons.push("its definition differs from what this parachute renders".into());
            r.diff = Some(diff.clone());
        }
        Drift::LoadedStale => r.reasons.push("the manager still runs an older loaded definition".into()),
    }
    if let Some(pid) = running
        && binary_replaced(pid)
    {
        r.reasons.push(format!("the running hub (pid {pid}) runs a binary that has since been replaced"));
    }
    let new_v = new_version.rsplit(' ').next().unwrap_or_default();
    if let Some((_, h)) = &health_before
        && h.version != new_v
    {
        r.reasons.push(format!(
            "the running hub is version {} and {} is {new_v}",
            h.version,
            opts.exec.display()
        ));
    }
    match running {
        _ if r.reasons.is_empty() => {
            let pid = running.map(|p| format!(" (pid {p})")).unwrap_or_default();
            Step::Done(RefreshOutcome::InSync, format!("{name} is current{pid}; nothing to do."))
        }
        None => Step::Rewrite(plan),
        // Only the binary changed and the hub answered healthy from the manager's main pid.
        Some(_) if plan.drift == Drift::InSync && r.healthy_before => Step::InPlace(plan),
        Some(_) => Step::Apply(plan),
    }
}

/// Asks the running hub to exec the new binary in place; on success the manager's main pid
/// must be the same and answer healthy. Anything else falls back to the restart, with the
/// reason kept for the report.
async fn in_place<M: ServiceManager>(cx: &Ctx<'_, M>, r: &mut RefreshReport, plan: Plan) -> Step {
    let Some(pid) = r.pid_before else { return Step::Apply(plan) };
    let attempt = async {
        let hub = Hub::connect(&plan.home).await?;
        hub.upgrade_in_place(cx.opts.wait).await
    };
    let why = match attempt.await {
        Err(UpgradeError::BinaryUnusable(why)) => {
            // A restart onto this binary would take the hub down with every module (and the
            // rollback has no good binary to go back to: the package replaced it). The
            // running hub, on the previous build, is left exactly as it is.
            r.pid_after = Some(pid);
            let msg = format!(
                "{}: {why}; the hub keeps running the previous build (pid {pid}, every module as it was) \
                 and was not restarted onto it. Fix the package and run `parachute postinstall --upgrade` again.",
                cx.name
            );
            return Step::Done(RefreshOutcome::ExecBroken, msg);
        }
        Err(e @ UpgradeError::Client(_)) => format!("the hub could not be asked: {e}"),
        Err(e) => e.to_string(),
        Ok(done) => match check_health(cx.m, &plan.home, plan.port, cx.opts.probe_timeout).await {
            Ok((now, _)) if now == pid => {
                let msg = format!(
                    "{}: upgraded in place (pid {pid} kept, {} module{} kept running) onto {} ({}).",
                    cx.name,
                    done.kept.len(),
                    if done.kept.len() == 1 { "" } else { "s" },
                    done.binary.display(),
                    r.reasons.join("; ")
                );
                r.pid_after = Some(pid);
                r.upgrade = Some(UpgradePath::InPlace);
                r.in_place = Some(done);
                return Step::Done(RefreshOutcome::UpgradedInPlace, msg);
            }
            Ok((now, _)) => {
                format!("the hub upgraded in place, but the manager's main pid is now {now}, not {pid}")
            }
            Err(why) => format!("the hub upgraded in place, but is not healthy: {why}"),
        },
    };
    r.in_place_error = Some(why);
    Step::Apply(plan)
}

async fn rewrite<M: ServiceManager>(cx: &Ctx<'_, M>, r: &RefreshReport, plan: &Plan) -> Step {
    match cx.m.install(&plan.spec, AfterInstall::DontStart).await {
        Ok(_) => Step::Done(
            RefreshOutcome::Rewritten,
            format!(
                "{}: rewritten for {} ({}); it was not running, so it was not started.",
                cx.name,
                cx.opts.exec.display(),
                r.reasons.join("; ")
            ),
        ),
        Err(e) => Step::Done(
            RefreshOutcome::ManagerError,
            format!("{}: could not be rewritten ({}); the file may be unchanged.", cx.name, e.message),
        ),
    }
}

async fn apply<M: ServiceManager>(cx: &Ctx<'_, M>, r: &mut RefreshReport, plan: Plan) -> Step {
    let m = cx.m;
    r.upgrade = Some(UpgradePath::Restart);
    let applied = if plan.drift == Drift::InSync {
        m.restart(&cx.id).await.map(drop)
    } else {
        m.install(&plan.spec, AfterInstall::Start).await.map(drop)
    };
    let failure = match applied {
        Err(e) => {
            r.log_tail = e.log_tail;
            e.message
        }
        Ok(()) => match wait_healthy(m, &plan.home, plan.port, cx.opts).await {
            Ok(pid) => {
                r.pid_after = Some(pid);
                let instead = match &r.in_place_error {
                    Some(why) => {
                        format!(" The in-place upgrade was not possible ({why}), so it was restarted.")
                    }
                    None => String::new(),
                };
                let msg = format!(
                    "{}: refreshed for {} ({}); the hub is healthy again (pid {} → {pid}).{instead}",
                    cx.name,
                    cx.opts.exec.display(),
                    r.reasons.join("; "),
                    r.pid_before.unwrap_or(0)
                );
                return Step::Done(RefreshOutcome::Restarted, msg);
            }
            Err(why) => why,
        },
    };
    let tail = super::log_tail(&plan.home.hub_log(), 20);
    if !tail.is_empty() {
        r.log_tail = tail;
    }
    Step::RollBack(plan, failure)
}

async fn roll_back<M: ServiceManager>(
    cx: &Ctx<'_, M>,
    r: &mut RefreshReport,
    plan: &Plan,
    failure: &str,
) -> Step {
    let m = cx.m;
    let instead = match &r.in_place_error {
        Some(why) => format!(" after a restart (the in-place upgrade was not possible: {why})"),
        None => String::new(),
    };
    let head = format!(
        "{}: the hub did not come back healthy running {}{instead} ({failure})",
        cx.name,
        plan.spec.argv.first().map(String::as_str).unwrap_or("?")
    );
    if let Err(e) = m.restore(&cx.id, &plan.previous.bytes).await {
        let msg = format!(
            "{head}; restoring the previous definition failed too ({e}). The unit file holds the new \
             definition; fix it and run `parachute unit restart`."
        );
        return Step::Done(RefreshOutcome::RollbackFailed, msg);
    }
    // Stop, then start: a restart would keep launchd on the loaded (new) definition, which
    // it re-reads only at bootstrap.
    let restarted = match m.stop(&cx.id).await {
        Ok(_) => m.start(&cx.id).await,
        Err(e) => Err(e),
    };
    let healthy = match restarted {
        Err(e) => Err(e.message),
        Ok(_) => wait_healthy(m, &plan.home, plan.port, cx.opts).await,
    };
    match healthy {
        Ok(pid) => {
            r.pid_after = Some(pid);
            let msg = format!(
                "{head}. The previous definition was restored and the hub is healthy on it (pid {pid})."
            );
            Step::Done(RefreshOutcome::RolledBack, msg)
        }
        Err(why) => {
            let msg = format!(
                "{head}. The previous definition was restored ({}), but the hub did not come back on it either \
                 ({why}). Look at {} and run `parachute unit status`.",
                plan.previous.path.display(),
                plan.home.hub_log().display()
            );
            Step::Done(RefreshOutcome::RollbackFailed, msg)
        }
    }
}

/// One health check: the unit runs, `hub-instance.json` names its main pid, and `/health`
/// on `port` answers with that instance and pid. `Err` says which part failed.
async fn check_health<M: ServiceManager>(
    m: &M,
    home: &Home,
    port: u16,
    http: Duration,
) -> Result<(u32, Health), String> {
    let st = m.status(&UnitId::hub()).await.map_err(|e| e.message)?;
    let pid = match st.main_pid.filter(|_| st.active) {
        Some(p) => p,
        None => return Err(format!("the unit is not running (state {})", st.state_text)),
    };
    let inst = match HubInstance::read(&home.hub_instance()) {
        Ok(Some(i)) => i,
        Ok(None) => return Err(format!("{} does not exist yet", home.hub_instance().display())),
        Err(e) => return Err(e.to_string()),
    };
    if inst.pid != pid {
        return Err(format!(
            "{} names pid {}, not the manager's main pid {pid}",
            home.hub_instance().display(),
            inst.pid
        ));
    }
    let Some(h) = probe::health(port, http).await else {
        return Err(format!("nothing answers GET /health on 127.0.0.1:{port} as a Parachute hub"));
    };
    if h.pid != pid || h.instance != inst.instance {
        return Err(format!(
            "/health on port {port} answers from pid {} (instance {}), not from the unit's main pid {pid} (instance {})",
            h.pid, h.instance, inst.instance
        ));
    }
    Ok((pid, h))
}

/// Polls [`check_health`] until it passes or `opts.wait` runs out; gives up early when the
/// manager reports the unit failed for good.
async fn wait_healthy<M: ServiceManager>(
    m: &M,
    home: &Home,
    port: u16,
    opts: &RefreshOptions,
) -> Result<u32, String> {
    let deadline = Instant::now() + opts.wait;
    loop {
        let why = match check_health(m, home, port, opts.probe_timeout).await {
            Ok((pid, _)) => return Ok(pid),
            Err(why) => why,
        };
        if m.status(&UnitId::hub()).await.is_ok_and(|s| s.state == UnitState::Failed) {
            return Err(format!("the manager gave up on it: {why}"));
        }
        if Instant::now() >= deadline {
            return Err(format!("not healthy within {} s: {why}", opts.wait.as_secs_f32()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `/proc/<pid>/exe` points at a file that has since been replaced or removed (a
/// package upgrade renames the new binary over the old one).
fn binary_replaced(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|p| p.as_os_str().to_string_lossy().ends_with(" (deleted)"))
}
