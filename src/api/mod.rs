//! The hub's control API: a small HTTP/1 server on 127.0.0.1 that the CLI verbs drive.
//!
//! Routes (every error is `{error, error_description}` JSON; a wrong method is a 405 with
//! `Allow`, checked before auth; unknown paths are 404 `not_found`):
//!
//! ```text
//! GET  /health                          open: {status, service, instance, pid, port, version, buildId, db, startedAt, modules:{running,total}}
//! GET  /livez                           open: 200 while the serve loop ticks, else 500 (see `probes`)
//! GET  /readyz                          open: 200 when every module is up, else 503 {ready, reasons}
//! GET  /api/ready                       open: upstream's {ready, ready_modules, transient_modules, persistent_modules}
//! GET  /api/modules                     bearer: {modules: [ModuleState + upstream's fields…], supervised, supervisor_available, installed: [{short, port, version}…]}
//! GET  /api/modules/<short>             bearer: {short, state} | 404 not_supervised
//! POST /api/modules/<short>/start       bearer: {short, state} | 400 not_installed | 422 no_start_cmd / invalid_module
//! POST /api/modules/<short>/stop        bearer: {short, state} | 404 not_supervised
//! POST /api/modules/<short>/restart     bearer: {short, state} | 400 not_installed | 404 not_supervised
//! GET  /api/modules/<short>/logs        bearer: ?since=<seq> → {short, lines:[{seq,text}], missed, nextSeq}
//!                                       &follow=1 → application/x-ndjson stream (see `logs`)
//! POST /api/hub/upgrade                 bearer: {status:"handing_over", binary, fromBuild, toBuild, pid, generation}
//!                                       | 422 upgrade_refused / upgrade_binary_unusable | 409 upgrade_in_progress (see `serve::upgrade`)
//! ```
//!
//! Every field, ours and upstream's, is described in docs/api.md (and docs/api.schema.json).
//!
//! Any module in services.json can be driven, third-party ones included (upstream R20).
//! Start and restart re-read services.json through [`ResolveSpawn`], which `serve` backs
//! with the model's single request builder and the hub origin resolved at boot (R16, R17):
//! a request's own Host never influences what a child is given. Bearer auth uses the
//! operator token (`<home>/operator.token`), compared in constant time; `/health` is open
//! because it is how a client proves it talks to the right hub before sending the token.
//!
//! The routing is axum's; each route's method router has a fallback that answers 405 in
//! our error shape, so the method check precedes authentication, as upstream does.

mod auth;
pub mod error;
pub mod listen;
mod logs;
pub mod probes;
pub mod wire;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::model::hub_instance::HubInstance;
use crate::supervisor::{ModuleStatus, SpawnRequest, Supervisor};
use crate::token::OperatorToken;
pub use error::ApiError;
use wire::{ErrorCode, Health, Installed, ModuleCounts, ModuleList, ModuleReply};

/// Builds the spawn request of a module from the current services.json (and its
/// `module.json` / `.env`), exactly as boot does.
pub trait ResolveSpawn: Send + Sync + 'static {
    /// The request for `short`, or why there is none.
    fn resolve(&self, short: &str) -> Result<SpawnRequest, ResolveError>;

    /// Every module services.json lists now (lenient read: bad rows are left out).
    fn installed(&self) -> Vec<Installed>;
}

/// Why no spawn request could be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    /// services.json has no row for the module.
    #[error("{short} is not installed (services.json has no entry for it); install it first.")]
    NotInstalled {
        /// The module.
        short: String,
    },
    /// The row resolves to no start command (a CLI-only module).
    #[error("{short} has no startCmd ({detail}); it is not a module the hub can run.")]
    NoStartCmd {
        /// The module.
        short: String,
        /// Where the command was looked for.
        detail: String,
    },
    /// The row or its manifest is unusable.
    #[error("{detail}")]
    Invalid {
        /// The module.
        short: String,
        /// A complete sentence naming the file and field.
        detail: String,
    },
}

impl From<ResolveError> for ApiError {
    fn from(e: ResolveError) -> ApiError {
        let code = match &e {
            ResolveError::NotInstalled { .. } => ErrorCode::NotInstalled,
            ResolveError::NoStartCmd { .. } => ErrorCode::NoStartCmd,
            ResolveError::Invalid { .. } => ErrorCode::InvalidModule,
        };
        ApiError::new(code, e.to_string())
    }
}

/// Everything the handlers need.
pub struct ApiState {
    /// The supervisor handle.
    pub supervisor: Supervisor,
    /// The bearer secret.
    pub token: OperatorToken,
    /// This hub's identity (nonce, pid, port).
    pub instance: HubInstance,
    /// Builds spawn requests from the current services.json.
    pub resolver: Arc<dyn ResolveSpawn>,
    /// The hub's lifecycle phase: starts are refused from `Stopping` on, log follows end
    /// at `Closing` (after the modules stopped, so followers see their last lines).
    pub phase: watch::Receiver<Phase>,
    /// The serve loop's beat and boot flag, for the container probes.
    pub beat: Arc<probes::LoopBeat>,
    /// In-place upgrades this instance went through (`/health`'s `generation`).
    pub generation: u32,
    /// Where an in-place upgrade is asked for (`None`: this hub cannot re-exec itself).
    pub upgrade: Option<tokio::sync::mpsc::Sender<crate::serve::upgrade::Ask>>,
}

/// Where the hub is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Serving normally.
    Running,
    /// Stopping modules: no new starts.
    Stopping,
    /// Modules are down; the API is closing.
    Closing,
    /// Handing over to a new image of the hub (an in-place upgrade): no starts or stops,
    /// log follows end, the API stops accepting (clients wait in the listener's backlog).
    /// Back to `Running` if the upgrade is abandoned.
    Upgrading,
}

impl Phase {
    /// Whether open log follows end and the API stops serving.
    pub fn ends_streams(&self) -> bool {
        matches!(self, Phase::Closing | Phase::Upgrading)
    }

    /// The refusal of a module operation in this phase (`None`: allowed).
    fn refusal(self) -> Option<ApiError> {
        match self {
            Phase::Running => None,
            Phase::Upgrading => Some(ApiError::upgrading()),
            Phase::Stopping | Phase::Closing => Some(ApiError::shutting_down()),
        }
    }
}

type Shared = Arc<ApiState>;

/// The router (exposed for tests that drive it without a socket).
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/health", get(health).fallback(|| async { ApiError::method_not_allowed("GET") }))
        .route("/livez", get(probes::livez).fallback(|| async { ApiError::method_not_allowed("GET") }))
        .route("/readyz", get(probes::readyz).fallback(|| async { ApiError::method_not_allowed("GET") }))
        .route(
            "/api/ready",
            get(probes::ready).fallback(|| async { ApiError::method_not_allowed("GET, HEAD") }),
        )
        .route("/api/modules", get(list).fallback(|| async { ApiError::method_not_allowed("GET") }))
        .route("/api/modules/{short}", get(one).fallback(|| async { ApiError::method_not_allowed("GET") }))
        .route(
            "/api/modules/{short}/start",
            post(start).fallback(|| async { ApiError::method_not_allowed("POST") }),
        )
        .route(
            "/api/modules/{short}/stop",
            post(stop).fallback(|| async { ApiError::method_not_allowed("POST") }),
        )
        .route(
            "/api/modules/{short}/restart",
            post(restart).fallback(|| async { ApiError::method_not_allowed("POST") }),
        )
        .route(
            "/api/modules/{short}/logs",
            get(logs::logs).fallback(|| async { ApiError::method_not_allowed("GET") }),
        )
        .route("/api/hub/upgrade", post(upgrade).fallback(|| async { ApiError::method_not_allowed("POST") }))
        .fallback(|uri: axum::http::Uri| async move { ApiError::not_found(uri.path()) })
        .with_state(state)
}

/// Serves the API on an already bound listener until `shutdown` resolves and every
/// connection has finished (log follows end when the phase reaches `Closing`), with
/// timeouts and connection caps ([`listen`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listen::serve(listener, router(state), shutdown).await
}

/// A JSON answer that is never cached.
fn json<T: serde::Serialize>(value: T) -> Response {
    let mut resp = axum::Json(value).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn short_of(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(short) =
        path.map_err(|e| ApiError::bad_request(format!("the module name in the path is unusable: {e}.")))?;
    if short.is_empty() || short.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "the module name in the path is empty or holds control characters.",
        ));
    }
    Ok(short)
}

/// [`ResolveSpawn::resolve`] on a blocking thread (it reads services.json, module.json, .env).
async fn resolve_off_runtime(s: &Shared, short: &str) -> Result<SpawnRequest, ResolveError> {
    let (resolver, owned) = (Arc::clone(&s.resolver), short.to_owned());
    tokio::task::spawn_blocking(move || resolver.resolve(&owned)).await.unwrap_or_else(|e| {
        Err(ResolveError::Invalid {
            short: short.to_owned(),
            detail: format!("resolving {short} failed: {e}"),
        })
    })
}

async fn health(State(s): State<Shared>) -> Response {
    let modules = s.supervisor.list();
    let running = modules.iter().filter(|m| m.status == ModuleStatus::Running).count();
    json(Health {
        status: "ok".to_owned(),
        service: crate::model::names::HUB_SERVICE.to_owned(),
        instance: s.instance.instance.clone(),
        pid: s.instance.pid,
        port: s.instance.port,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        build_id: crate::serve::build_id::current().map(str::to_owned),
        db: "unconfigured".to_owned(),
        started_at: crate::rfc3339::format(s.instance.started_at),
        generation: s.generation,
        modules: ModuleCounts { running, total: modules.len() },
    })
}

async fn list(State(s): State<Shared>, _op: auth::Operator) -> Response {
    // File work (services.json, module.json) off the runtime's two workers.
    let resolver = Arc::clone(&s.resolver);
    let installed = tokio::task::spawn_blocking(move || resolver.installed()).await.unwrap_or_default();
    json(ModuleList {
        modules: ModuleList::in_services_order(s.supervisor.list_measured().await, &installed),
        installed,
    })
}

async fn one(
    State(s): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    _op: auth::Operator,
) -> Result<Response, ApiError> {
    let short = short_of(path)?;
    let state = s.supervisor.get_measured(&short).await.ok_or_else(|| ApiError::not_supervised(&short))?;
    Ok(json(ModuleReply { short, state }))
}

async fn start(
    State(s): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    _op: auth::Operator,
) -> Result<Response, ApiError> {
    let short = short_of(path)?;
    if let Some(refused) = s.phase.borrow().refusal() {
        return Err(refused);
    }
    let req = resolve_off_runtime(&s, &short).await?;
    // 200 even when the module crashed: the state (status + startError) is the answer,
    // and the CLI turns a crashed state into a failure (upstream R11).
    let state = s.supervisor.start(req).await;
    Ok(json(ModuleReply { short, state }))
}

async fn stop(
    State(s): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    _op: auth::Operator,
) -> Result<Response, ApiError> {
    let short = short_of(path)?;
    // A stop while the hub hands over would wait on a frozen module.
    if *s.phase.borrow() == Phase::Upgrading {
        return Err(ApiError::upgrading());
    }
    let state = s.supervisor.stop(&short).await.ok_or_else(|| ApiError::not_supervised(&short))?;
    Ok(json(ModuleReply { short, state }))
}

/// `POST /api/hub/upgrade`: the serve loop checks the binary and runs its dry run; the
/// answer comes before the exec (see `serve::upgrade`).
async fn upgrade(State(s): State<Shared>, _op: auth::Operator) -> Result<Response, ApiError> {
    use crate::serve::upgrade::{Ask, Refusal};
    if let Some(refused) = s.phase.borrow().refusal() {
        return Err(refused);
    }
    let Some(tx) = &s.upgrade else {
        return Err(ApiError::new(
            ErrorCode::UpgradeRefused,
            "this hub cannot replace its own image (it does not know the path it was started from).",
        ));
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    if tx.try_send(Ask { reply }).is_err() {
        return Err(ApiError::new(ErrorCode::UpgradeInProgress, "another in-place upgrade is under way."));
    }
    match rx.await {
        Ok(Ok(accepted)) => Ok(json(accepted)),
        Ok(Err(Refusal { unusable: false, why })) => Err(ApiError::new(ErrorCode::UpgradeRefused, why)),
        Ok(Err(Refusal { unusable: true, why })) => Err(ApiError::new(ErrorCode::UpgradeBinaryUnusable, why)),
        Err(_) => Err(ApiError::shutting_down()),
    }
}

async fn restart(
    State(s): State<Shared>,
    path: Result<Path<String>, PathRejection>,
    _op: auth::Operator,
) -> Result<Response, ApiError> {
    let short = short_of(path)?;
    if let Some(refused) = s.phase.borrow().refusal() {
        return Err(refused);
    }
    // Re-read services.json so a corrected command, port or .env takes effect (hub#532).
    let req = resolve_off_runtime(&s, &short).await?;
    match s.supervisor.restart(&short, Some(req)).await {
        Ok(Some(state)) => Ok(json(ModuleReply { short, state })),
        Ok(None) => Err(ApiError::not_supervised(&short)),
        Err(e) => Err(ApiError::new(ErrorCode::ModuleOpFailed, format!("{short} restart failed: {e}"))),
    }
}
