//! The upgrade hook's drift repair for one manager scope.
//!
//! ```text
//!  read the installed unit ─ none ─────────────────────────────► not-installed
//!    │ unreadable (no home, specifier, …) ──────────────────────► unreadable (left as is)
//!  re-render it for the new binary (same home, port, user, extra PATH)
//!  `<exec> --version` fails ────────────────────────────────────► exec-broken (left as is)
//!  definition current, running binary not replaced, same version ► in-sync (no restart)
//!  unit not running ── rewrite only ───────────────────────────► rewritten
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

use std::path::PathBuf;
use std::time::{Duration, Instant};

use parachute_manager::{AfterInstall, Drift, Scope, ServiceManager, UnitId, UnitSpec};
use serde::Serialize;

use super::installed::InstalledHub;
use crate::api::wire::Health;
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
    /// The installed unit could not be read back; it was left as it is.
    Unreadable,
    /// The new binary does not run (`--version` failed); the unit was left as it is.
    ExecBroken,
    /// The manager failed before anything was changed.
    ManagerError,
    /// The new definition did not come up healthy; the previous one is back and healthy.
    RolledBack,
    /// The new definition did not come up healthy, and neither did the restored one.
    RollbackFailed,
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

/// Re-renders the hub unit in `m`'s scope for `opts.exec` and repairs drift (see the module doc).
pub async fn refresh<M: ServiceManager>(m: &M, opts: &RefreshOptions) -> RefreshReport {
    let id = UnitId::hub();
    let path = m.unit_path(&id);
    let name = format!("{} ({} scope)", unit_name(m, &id), m.scope());
    let r = RefreshReport {
        scope: m.scope(),
        backend: m.kind(),
        outcome: RefreshOutcome::NotInstalled,
        unit_path: path.clone(),
        home: None,
        port: None,
        reasons: Vec::new(),
        diff: None,
        pid_before: None,
        pid_after: None,
        healthy_before: false,
        message: String::new(),
        log_tail: Vec::new(),
    };
    let old = match parachute_fsx::read_optional(&path) {
        Ok(None) => {
            return r.end(RefreshOutcome::NotInstalled, format!("no hub unit in the {} scope.", m.scope()));
        }
        Ok(Some(b)) => b,
        Err(e) => return r.end(RefreshOutcome::ManagerError, format!("{name}: {e}; left as it is.")),
    };
    let unreadable = |r: RefreshReport, why: String| {
        r.end(
            RefreshOutcome::Unreadable,
            format!("{name}: {why}; left as it is. Re-install it with `parachute unit install`."),
        )
    };
    let installed = match InstalledHub::parse(m.kind(), &path, &old) {
        Ok(i) => i,
        Err(e) => return unreadable(r, e.why),
    };
    let (home, port) = match (installed.home(), installed.port()) {
        (Ok(h), Ok(p)) => (h, p),
        (Err(why), _) | (_, Err(why)) => return unreadable(r, why),
    };
    let mut r = RefreshReport { home: Some(home.root().to_path_buf()), port: Some(port), ..r };
    // A system unit's PATH belongs to the account it runs as, not to whoever runs the hook.
    let fallback = installed
        .run_as_user
        .as_deref()
        .filter(|_| m.scope() == Scope::System)
        .and_then(|u| nix::unistd::User::from_name(u).ok().flatten())
        .map(|u| u.dir)
        .or_else(|| opts.fallback_user_home.clone());
    let spec = match installed.respec(&opts.exec, m.scope(), fallback.as_deref()) {
        Ok(s) => s,
        Err(why) => return unreadable(r, why),
    };
    let new_version = match probe::exec_version(&opts.exec, opts.probe_timeout).await {
        Ok(v) => v,
        Err(why) => {
            let msg = format!(
                "{name}: the new binary {} does not run ({why}); the unit was left as it is.",
                opts.exec.display()
            );
            return r.end(RefreshOutcome::ExecBroken, msg);
        }
    };
    let status = match m.status(&id).await {
        Ok(s) => s,
        Err(e) => return r.end(RefreshOutcome::ManagerError, format!("{name}: {e} Nothing was changed.")),
    };
    let running = status.main_pid.filter(|_| status.active && status.scope == Some(m.scope()));
    r.pid_before = running;
    let health_before = match running {
        Some(pid) => check_health(m, &home, port, opts.probe_timeout).await.ok().filter(|(p, _)| *p == pid),
        None => None,
    };
    r.healthy_before = health_before.is_some();

    let drift = match m.drift(&spec).await {
        Ok(d) => d,
        Err(e) => return r.end(RefreshOutcome::ManagerError, format!("{name}: {e} Nothing was changed.")),
    };
    match &drift {
        Drift::InSync => {}
        Drift::NotInstalled => {
            return r.end(RefreshOutcome::NotInstalled, format!("{name} went away meanwhile."));
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
    if r.reasons.is_empty() {
        let pid = running.map(|p| format!(" (pid {p})")).unwrap_or_default();
        return r.end(RefreshOutcome::InSync, format!("{name} is current{pid}; nothing to do."));
    }
    let why = r.reasons.join("; ");
    if running.is_none() {
        return match m.install(&spec, AfterInstall::DontStart).await {
            Ok(_) => r.end(
                RefreshOutcome::Rewritten,
                format!(
                    "{name}: rewritten for {} ({why}); it was not running, so it was not started.",
                    opts.exec.display()
                ),
            ),
            Err(e) => {
                let msg =
                    format!("{name}: could not be rewritten ({}); the file may be unchanged.", e.message);
                r.end(RefreshOutcome::ManagerError, msg)
            }
        };
    }

    let applied = if drift == Drift::InSync {
        m.restart(&id).await.map(drop)
    } else {
        m.install(&spec, AfterInstall::Start).await.map(drop)
    };
    let failure = match applied {
        Err(e) => {
            r.log_tail = e.log_tail.clone();
            // The log lines are reported once, below, not inside the sentence too.
            e.message.split(" Last lines of ").next().unwrap_or_default().trim_end().to_owned()
        }
        Ok(()) => match wait_healthy(m, &home, port, opts).await {
            Ok(pid) => {
                r.pid_after = Some(pid);
                let msg = format!(
                    "{name}: refreshed for {} ({why}); the hub is healthy again (pid {} → {pid}).",
                    opts.exec.display(),
                    running.unwrap_or(0)
                );
                return r.end(RefreshOutcome::Restarted, msg);
            }
            Err(why) => why,
        },
    };
    let tail = super::log_tail(&home.hub_log(), 20);
    if !tail.is_empty() {
        r.log_tail = tail;
    }
    rollback(m, r, &old, &spec, &home, port, opts, &name, &failure).await
}

#[expect(clippy::too_many_arguments, reason = "one call site; the values are the refresh's state")]
async fn rollback<M: ServiceManager>(
    m: &M,
    mut r: RefreshReport,
    old: &[u8],
    spec: &UnitSpec,
    home: &Home,
    port: u16,
    opts: &RefreshOptions,
    name: &str,
    failure: &str,
) -> RefreshReport {
    let head = format!(
        "{name}: the hub did not come back healthy running {} ({failure})",
        spec.argv.first().map(String::as_str).unwrap_or("?")
    );
    if let Err(e) = parachute_fsx::write_atomic(&r.unit_path, old) {
        let msg = format!(
            "{head}; restoring the previous definition failed too ({e}). The unit file holds the new \
             definition; fix it and run `parachute unit restart`."
        );
        return r.end(RefreshOutcome::RollbackFailed, msg);
    }
    // Stop, then start: systemd reloads the changed file on start, and launchd re-reads a
    // plist only at bootstrap (a kickstart would keep running the new definition).
    let id = UnitId::hub();
    let restarted = match m.stop(&id).await {
        Ok(_) => m.start(&id).await,
        Err(e) => Err(e),
    };
    let healthy = match restarted {
        Err(e) => Err(e.message.split(" Last lines of ").next().unwrap_or_default().trim_end().to_owned()),
        Ok(_) => wait_healthy(m, home, port, opts).await,
    };
    match healthy {
        Ok(pid) => {
            r.pid_after = Some(pid);
            let msg = format!(
                "{head}. The previous definition was restored and the hub is healthy on it (pid {pid})."
            );
            r.end(RefreshOutcome::RolledBack, msg)
        }
        Err(why) => {
            let msg = format!(
                "{head}. The previous definition was restored ({}), but the hub did not come back on it either \
                 ({why}). Look at {} and run `parachute unit status`.",
                r.unit_path.display(),
                home.hub_log().display()
            );
            r.end(RefreshOutcome::RollbackFailed, msg)
        }
    }
}

fn unit_name<M: ServiceManager>(m: &M, id: &UnitId) -> String {
    if m.kind() == "launchd" { id.launchd_label() } else { id.systemd_unit() }
}

/// One health check: the unit runs, `hub-instance.json` names its main pid, and `/health`
/// on `port` answers with that instance and pid. `Err` says which part failed.
pub async fn check_health<M: ServiceManager>(
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
        if m.status(&UnitId::hub()).await.is_ok_and(|s| s.state_text.starts_with("failed")) {
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
