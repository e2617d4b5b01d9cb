//! Container probes, open like `/health`: `/livez`, `/readyz` and upstream's `/api/ready`.
//!
//! * `/livez` answers 200 while the serve loop ticks (it records a beat on every tick) and
//!   500 once it has not for [`STALE_AFTER`]: the control API runs on the same runtime,
//!   so answering at all proves little; the beat proves the supervision loop. Liveness
//!   never depends on module health, so an orchestrator does not restart the whole hub
//!   because one module is crash-looping.
//! * `/readyz` answers 200 once boot has returned and every module is up (running, past
//!   its readiness gate), else 503 with the reasons, one per module that is not.
//! * `/api/ready` has upstream's shape, `{ready, ready_modules, transient_modules,
//!   persistent_modules}` (always 200; GET and HEAD; modules in services.json order):
//!   `starting`, `restarting`, a running module still inside its readiness gate and a
//!   running one that has not bound its port (`started_but_unbound`) are transient, `crashed` and `stopped`
//!   persistent. Upstream guessed readiness from a 30 s window after `startedAt`; here it
//!   is the gate's own result.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::Shared;
use crate::serve::notify::{is_up, not_up};
use crate::supervisor::{ModuleState, ModuleStatus};

/// A serve loop that has not ticked for this long is not alive.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// What the serve loop tells the probes.
#[derive(Debug)]
pub struct LoopBeat {
    origin: Instant,
    last_ms: AtomicU64,
    booted: AtomicBool,
}

impl Default for LoopBeat {
    fn default() -> Self {
        LoopBeat { origin: Instant::now(), last_ms: AtomicU64::new(0), booted: AtomicBool::new(false) }
    }
}

impl LoopBeat {
    /// The serve loop ran one more tick.
    pub fn beat(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Boot has returned (every module of services.json was started or reported).
    pub fn booted(&self) {
        self.booted.store(true, Ordering::Relaxed);
    }

    /// How long since the last tick.
    pub fn since_last(&self) -> Duration {
        self.origin.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    fn is_booted(&self) -> bool {
        self.booted.load(Ordering::Relaxed)
    }
}

#[derive(Serialize)]
struct Livez {
    alive: bool,
    #[serde(rename = "lastTickMs")]
    last_tick_ms: u64,
}

#[derive(Serialize)]
struct Readyz {
    ready: bool,
    reasons: Vec<String>,
}

/// Upstream's `/api/ready` body.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ApiReady {
    /// Nothing transient and nothing persistent.
    pub ready: bool,
    /// Modules that are up.
    pub ready_modules: Vec<String>,
    /// Modules on their way up (or back up).
    pub transient_modules: Vec<String>,
    /// Modules that will not come up without an operator.
    pub persistent_modules: Vec<String>,
}

fn no_store(status: StatusCode, body: impl Serialize) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

pub(super) async fn livez(State(s): State<Shared>) -> Response {
    let since = s.beat.since_last();
    let alive = since < STALE_AFTER;
    let status = if alive { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    no_store(status, Livez { alive, last_tick_ms: u64::try_from(since.as_millis()).unwrap_or(u64::MAX) })
}

pub(super) async fn readyz(State(s): State<Shared>) -> Response {
    let modules = s.supervisor.list();
    let now = time::OffsetDateTime::now_utc();
    let mut reasons: Vec<String> = modules.iter().filter(|m| !is_up(m)).map(|m| not_up(m, now)).collect();
    if !s.beat.is_booted() {
        reasons.insert(0, "boot has not finished".to_owned());
    }
    let ready = reasons.is_empty();
    no_store(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Readyz { ready, reasons })
}

/// Classifies modules the way upstream's `/api/ready` does (see the module doc).
pub fn api_ready(modules: &[ModuleState]) -> ApiReady {
    let mut out = ApiReady {
        ready: false,
        ready_modules: Vec::new(),
        transient_modules: Vec::new(),
        persistent_modules: Vec::new(),
    };
    for m in modules {
        let bucket = match m.status {
            _ if is_up(m) => &mut out.ready_modules,
            ModuleStatus::Crashed | ModuleStatus::Stopped => &mut out.persistent_modules,
            ModuleStatus::Starting | ModuleStatus::Restarting | ModuleStatus::Running => {
                &mut out.transient_modules
            }
        };
        bucket.push(m.short.clone());
    }
    out.ready = out.transient_modules.is_empty() && out.persistent_modules.is_empty();
    out
}

pub(super) async fn ready(State(s): State<Shared>) -> Response {
    // Listed in services.json order, as `/api/modules` is (a stat while the file is unchanged).
    let resolver = std::sync::Arc::clone(&s.resolver);
    let installed = tokio::task::spawn_blocking(move || resolver.installed()).await.unwrap_or_default();
    let modules = super::wire::ModuleList::in_services_order(s.supervisor.list(), &installed);
    let mut body = api_ready(&modules);
    body.ready &= s.beat.is_booted();
    no_store(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_ready_classifies_like_upstream_with_the_gate_for_the_window() {
        let m = |short: &str, status| ModuleState::new(short, status);
        let up = ModuleState { ready_at: Some(crate::rfc3339::now()), ..m("vault", ModuleStatus::Running) };
        let gated = m("scribe", ModuleStatus::Running);
        let all = [
            up.clone(),
            gated,
            m("a", ModuleStatus::Restarting),
            m("b", ModuleStatus::Crashed),
            m("c", ModuleStatus::Stopped),
        ];
        let r = api_ready(&all);
        assert_eq!(r.ready_modules, ["vault"]);
        assert_eq!(r.transient_modules, ["scribe", "a"]);
        assert_eq!(r.persistent_modules, ["b", "c"]);
        assert!(!r.ready);
        assert!(api_ready(&[up]).ready);
        assert!(api_ready(&[]).ready, "no modules: nothing to wait for");
    }

    #[test]
    fn a_loop_that_stops_beating_goes_stale() {
        let b = LoopBeat::default();
        b.beat();
        assert!(b.since_last() < STALE_AFTER);
    }
}
