//! The CLI's side of the control API: find this home's hub, prove it is the hub, then talk.
//!
//! [`Hub::connect`] reads `<home>/hub-instance.json` for the port (1939 when absent), asks
//! the open `GET /health`, and compares the answer's `instance` nonce with the file's
//! before the operator token is read or sent: a different responder on the port (another
//! hub, a VM port forward; upstream hub#737, R12) never receives it.
//!
//! The nonce is no secret (`/health` tells anyone), so it cannot tell the hub from another
//! local user who bound the port after the hub died uncleanly. The server is therefore
//! authenticated by the kernel (Linux): the recorded hub pid must hold the listening
//! socket, and on every connection that will carry the token, the server side must belong
//! to the uid owning `operator.token`, checked after `connect` and before the request is
//! written ([`parachute_process::tcp_peer_owner`]). That uid can read the token already,
//! so the token never reaches anyone who could not read it. See `docs/security.md`.
//!
//! Every exchange has a deadline (R13); a log follow has one for its head, then streams
//! until the hub ends it.
//!
//! The transport is a minimal hyper HTTP/1 client over a tokio `TcpStream` to 127.0.0.1:
//! one connection per call, no pool, no TLS, nothing the loopback API does not need.

use std::path::PathBuf;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use crate::api::wire::{ErrorBody, ErrorCode, FollowEvent, Health, LogsReply, ModuleList, ModuleReply};
use crate::model::home::Home;
use crate::model::hub_instance::{HubInstance, HubInstanceError};
use crate::model::names::{HUB_PORT, HUB_SERVICE};
use crate::token::{OperatorToken, TokenError};

/// Deadline of a read (`/health`, status, logs snapshot) and of `stop`.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Deadline of `start`: preflight + spawn + the readiness window (4 s) + margin.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Deadline of `restart`: a stop (SIGTERM grace 5 s) followed by a start.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(25);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the hub's port.
    #[error(
        "no hub is running for {home} (nothing answers on 127.0.0.1:{port}{why}). Start one with `parachute serve --home {home}` (foreground) or `parachute unit start` (under the service manager).",
        home = home.display(),
        why = if detail.is_empty() { String::new() } else { format!("; {detail}") }
    )]
    NoHub {
        /// The home asked about.
        home: PathBuf,
        /// The port tried.
        port: u16,
        /// Extra context (stale instance file, …).
        detail: String,
    },
    /// Something answers on the port, but it is not this home's hub.
    #[error(
        "something else answers on 127.0.0.1:{port}: {detail}. The operator token was not sent. Stop whatever holds the port, or pass the right --home."
    )]
    Foreign {
        /// The port.
        port: u16,
        /// What was found.
        detail: String,
    },
    /// A deadline passed.
    #[error(
        "the hub on 127.0.0.1:{port} did not answer {what} within {after:?}; it may be wedged (see its log)."
    )]
    Timeout {
        /// The port.
        port: u16,
        /// The request.
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// The hub answered with an error.
    #[error("{description} (HTTP {status}, {code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The `error` code.
        code: ErrorCode,
        /// The `error_description`.
        description: String,
    },
    /// The hub answered with an error status but no error body.
    #[error("the hub returned HTTP {status} with no error detail: {body}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The connection broke or the answer was not what the API sends.
    #[error("the exchange with the hub on 127.0.0.1:{port} failed during {what}: {detail}")]
    Protocol {
        /// The port.
        port: u16,
        /// The request.
        what: String,
        /// The cause.
        detail: String,
    },
    /// The operator token could not be read.
    #[error("{0}")]
    Token(#[from] TokenError),
    /// `hub-instance.json` is unreadable.
    #[error("{0}")]
    Instance(#[from] HubInstanceError),
}

impl ClientError {
    /// The API error code, if the hub answered with one.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The `error` of `--json` output: the API's code, else `http_error` or `client_error`.
    pub fn json_code(&self) -> &str {
        match self {
            ClientError::Api { code, .. } => code.as_str(),
            ClientError::Http { .. } => "http_error",
            _ => "client_error",
        }
    }
}

/// A verified connection target: this home's hub, with its token.
#[derive(Debug, Clone)]
pub struct Hub {
    /// The control API port.
    pub port: u16,
    /// What `/health` said.
    pub health: Health,
    token: OperatorToken,
}

/// The token and who may receive it: the server side of the connection must be owned by
/// `uid` (the token file's owner), or the request is not written.
struct Bearer<'a> {
    token: &'a str,
    uid: Option<u32>,
}

impl Hub {
    fn bearer(&self) -> Bearer<'_> {
        Bearer { token: self.token.expose(), uid: self.token.owner() }
    }
}

impl Hub {
    /// Finds and verifies this home's hub (see the module doc).
    pub async fn connect(home: &Home) -> Result<Hub, ClientError> {
        let instance_path = home.hub_instance();
        let recorded = HubInstance::read(&instance_path)?;
        let port = recorded.as_ref().map(|r| r.port).unwrap_or(HUB_PORT);
        let health = match call(port, Method::GET, "/health", None, TIMEOUT).await {
            Ok(resp) => resp,
            Err(Failure::Refused(e)) => {
                let detail = match &recorded {
                    Some(r) => format!(
                        "{} names pid {} from {}, which is gone ({e})",
                        instance_path.display(),
                        r.pid,
                        crate::rfc3339::format(r.started_at)
                    ),
                    None => format!("and there is no {}", instance_path.display()),
                };
                return Err(ClientError::NoHub { home: home.root().to_path_buf(), port, detail });
            }
            Err(f) => return Err(f.into_error(port, "GET /health")),
        };
        let (status, body) = health;
        let health: Health = match (status, serde_json::from_slice::<Health>(&body)) {
            (StatusCode::OK, Ok(h)) if h.service == HUB_SERVICE => h,
            _ => {
                return Err(ClientError::Foreign {
                    port,
                    detail: format!("GET /health answered HTTP {status} with {}", snippet(&body)),
                });
            }
        };
        let Some(recorded) = recorded else {
            return Err(ClientError::Foreign {
                port,
                detail: format!(
                    "a Parachute hub (pid {}, instance {}) answers, but {} does not exist, so it is not this home's hub",
                    health.pid,
                    health.instance,
                    instance_path.display()
                ),
            });
        };
        if health.instance != recorded.instance {
            return Err(ClientError::Foreign {
                port,
                detail: format!(
                    "a Parachute hub answers with instance {} (pid {}), but {} names instance {} (pid {})",
                    health.instance,
                    health.pid,
                    instance_path.display(),
                    recorded.instance,
                    recorded.pid
                ),
            });
        }
        let home_owner = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(home.root())
                .map(|m| m.uid())
                .map_err(|source| HubInstanceError::Read { path: home.root().to_path_buf(), source })?
        };
        let token = OperatorToken::read(&home.operator_token(), home_owner)?;
        check_holder(port, &recorded, &instance_path, &token).await?;
        Ok(Hub { port, health, token })
    }

    /// `GET /api/modules`.
    pub async fn modules(&self) -> Result<ModuleList, ClientError> {
        self.json(Method::GET, "/api/modules", TIMEOUT).await
    }

    /// `POST /api/modules/<short>/<op>` where `op` is `start`, `stop` or `restart`.
    pub async fn op(&self, short: &str, op: Op) -> Result<ModuleReply, ClientError> {
        let path = format!("/api/modules/{}/{}", encode_segment(short), op.as_str());
        self.json(Method::POST, &path, op.timeout()).await
    }

    /// `GET /api/modules/<short>/logs[?since=N]`.
    pub async fn logs(&self, short: &str, since: Option<u64>) -> Result<LogsReply, ClientError> {
        self.json(Method::GET, &logs_path(short, since, false), TIMEOUT).await
    }

    /// `GET /api/modules/<short>/logs?follow=1[&since=N]`: waits (with the deadline) for
    /// the head, then returns the event stream.
    pub async fn follow(&self, short: &str, since: Option<u64>) -> Result<LogStream, ClientError> {
        let path = logs_path(short, since, true);
        let what = format!("GET {path}");
        let fut = send(self.port, Method::GET, &path, Some(self.bearer()));
        let resp = match tokio::time::timeout(TIMEOUT, fut).await {
            Err(_) => return Err(ClientError::Timeout { port: self.port, what, after: TIMEOUT }),
            Ok(Err(f)) => return Err(f.into_error(self.port, &what)),
            Ok(Ok(r)) => r,
        };
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let body = match tokio::time::timeout(TIMEOUT, resp.into_body().collect()).await {
                Ok(Ok(b)) => b.to_bytes(),
                _ => Bytes::new(),
            };
            return Err(api_error(status, &body));
        }
        Ok(LogStream { port: self.port, body: resp.into_body(), buf: BytesMut::new() })
    }

    /// `POST /api/hub/upgrade`, then `GET /health` until the same pid answers as the next
    /// generation (the in-place upgrade of issue 17; the contract is in
    /// docs/architecture.md, "In-place upgrade"). `deadline` bounds the whole exchange: the
    /// hub answers the POST only after the new binary passed its dry run.
    ///
    /// The modules are listed before and after, so the caller can say which kept running
    /// (the same pid) and which the new image had to start afresh (it adopts only what it
    /// can prove; the hub's log says why for the others).
    pub async fn upgrade_in_place(&self, deadline: Duration) -> Result<InPlaceUpgrade, UpgradeError> {
        let until = tokio::time::Instant::now() + deadline;
        let before = self.modules().await?;
        let what = "POST /api/hub/upgrade";
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let (status, body) = call(self.port, Method::POST, "/api/hub/upgrade", Some(self.bearer()), left)
            .await
            .map_err(|f| match f {
                // The dry run of the new binary may take most of the deadline.
                Failure::Timeout(_) => UpgradeError::NoAnswer { after: deadline },
                f => UpgradeError::Client(f.into_error(self.port, what)),
            })?;
        if status != StatusCode::OK {
            return Err(UpgradeError::from_answer(api_error(status, &body), &self.health));
        }
        let answer: HandingOver = serde_json::from_slice(&body).map_err(|e| {
            UpgradeError::Client(ClientError::Protocol {
                port: self.port,
                what: what.to_owned(),
                detail: format!("the answer is not the expected JSON ({e}): {}", snippet(&body)),
            })
        })?;
        let came_back = self.wait_generation(&answer, until, deadline).await?;
        // The module list of the new image (a fresh connection: the old one's is gone).
        let after = self.modules().await?;
        let (kept, restarted) = compare_modules(&before, &after);
        Ok(InPlaceUpgrade {
            pid: came_back.pid,
            binary: answer.binary,
            from_build: answer.from_build,
            to_build: came_back.build_id,
            generation: came_back.generation.unwrap_or_default(),
            kept,
            restarted,
        })
    }

    /// Polls `GET /health` (a fresh connection each time: the listener is handed over, an
    /// open connection is not) until the answer comes from `answer.pid` at a generation above
    /// `answer.generation`.
    async fn wait_generation(
        &self,
        answer: &HandingOver,
        until: tokio::time::Instant,
        deadline: Duration,
    ) -> Result<HealthGeneration, UpgradeError> {
        let mut last = "no answer yet".to_owned();
        loop {
            let now = tokio::time::Instant::now();
            if now >= until {
                return Err(UpgradeError::NotBack { after: deadline, last });
            }
            let probe = TIMEOUT.min(until - now);
            match call(self.port, Method::GET, "/health", None, probe).await {
                Ok((StatusCode::OK, body)) => match serde_json::from_slice::<HealthGeneration>(&body) {
                    Ok(h) if h.service != HUB_SERVICE || h.instance != self.health.instance => {
                        return Err(UpgradeError::Client(ClientError::Foreign {
                            port: self.port,
                            detail: format!(
                                "after the upgrade began, GET /health answered as {} instance {} (pid {}), not this home's hub (instance {})",
                                crate::text::field(&h.service),
                                crate::text::field(&h.instance),
                                h.pid,
                                self.health.instance
                            ),
                        }));
                    }
                    Ok(h) if h.pid != answer.pid => {
                        return Err(UpgradeError::PidChanged { before: answer.pid, after: h.pid });
                    }
                    Ok(h) if h.generation.unwrap_or_default() > answer.generation => return Ok(h),
                    Ok(h) => {
                        last = format!(
                            "pid {} still answers as generation {} (build {})",
                            h.pid,
                            h.generation.unwrap_or_default(),
                            h.build_id.as_deref().unwrap_or("unknown")
                        );
                    }
                    Err(e) => last = format!("GET /health answered something else ({e}): {}", snippet(&body)),
                },
                Ok((status, body)) => {
                    last = format!("GET /health answered HTTP {status}: {}", snippet(&body))
                }
                Err(Failure::Refused(e)) => last = format!("nothing accepts connections on the port ({e})"),
                Err(Failure::Timeout(t)) => last = format!("GET /health did not answer within {t:?}"),
                Err(Failure::Untrusted(d) | Failure::Other(d)) => last = d,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let what = format!("{method} {path}");
        let (status, body) = call(self.port, method, path, Some(self.bearer()), timeout)
            .await
            .map_err(|f| f.into_error(self.port, &what))?;
        if status != StatusCode::OK {
            return Err(api_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol {
            port: self.port,
            what,
            detail: format!("the answer is not the expected JSON ({e}): {}", snippet(&body)),
        })
    }
}

/// `POST /api/hub/upgrade`'s answer: the hub checked the new binary and is handing over.
#[derive(Debug, Clone, serde::Deserialize)]
struct HandingOver {
    /// The binary the hub execs (the path it was started from).
    binary: PathBuf,
    /// The running image's build id.
    #[serde(rename = "fromBuild", default)]
    from_build: Option<String>,
    /// The hub's pid (which the new image keeps).
    pid: u32,
    /// The hub's generation before the exec; the new image reports one more.
    generation: u32,
}

/// The part of `GET /health` an upgrade waits on (read on its own, so an older hub without
/// `generation` still parses: it counts as generation 0).
#[derive(Debug, Clone, serde::Deserialize)]
struct HealthGeneration {
    service: String,
    instance: String,
    pid: u32,
    #[serde(default)]
    generation: Option<u32>,
    #[serde(rename = "buildId", default)]
    build_id: Option<String>,
}

/// A finished in-place upgrade.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InPlaceUpgrade {
    /// The hub's pid, the same before and after.
    pub pid: u32,
    /// The binary the hub now runs.
    pub binary: PathBuf,
    /// The build id before (`null`: the old image had none).
    #[serde(rename = "fromBuild")]
    pub from_build: Option<String>,
    /// The build id the new image reports on `/health`.
    #[serde(rename = "toBuild")]
    pub to_build: Option<String>,
    /// The generation the new image reports.
    pub generation: u32,
    /// Modules whose process kept running across the exec.
    pub kept: Vec<KeptModule>,
    /// Modules that run a different process afterwards (the new image could not prove the
    /// old one was its child and started it afresh; the hub's log says why), or none.
    pub restarted: Vec<RestartedModule>,
}

/// A module that kept its process across an in-place upgrade.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeptModule {
    /// The module.
    pub short: String,
    /// Its pid, before and after.
    pub pid: u32,
}

/// A module whose process differs after an in-place upgrade.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestartedModule {
    /// The module.
    pub short: String,
    /// Its pid before (`null`: none ran).
    pub pid_before: Option<u32>,
    /// Its pid after (`null`: none runs).
    pub pid_after: Option<u32>,
}

/// Modules running before, split into those with the same pid after and the others.
fn compare_modules(before: &ModuleList, after: &ModuleList) -> (Vec<KeptModule>, Vec<RestartedModule>) {
    let (mut kept, mut restarted) = (Vec::new(), Vec::new());
    for b in before.modules.iter().filter(|m| m.pid.is_some()) {
        let now = after.modules.iter().find(|a| a.short == b.short).and_then(|a| a.pid);
        match (b.pid, now) {
            (Some(p), Some(q)) if p == q => kept.push(KeptModule { short: b.short.clone(), pid: p }),
            (p, q) => restarted.push(RestartedModule { short: b.short.clone(), pid_before: p, pid_after: q }),
        }
    }
    (kept, restarted)
}

/// Why an in-place upgrade did not happen (or did not finish as asked).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The hub refused before anything changed (the new binary is not trusted, or its dry
    /// run failed): the old hub keeps running.
    #[error("the hub refused the in-place upgrade and keeps running as it was: {0}")]
    Refused(String),
    /// The new binary cannot serve at all (its dry run did not start, crashed or hung):
    /// the old hub keeps running, and a restart onto that binary would fail too.
    #[error("the new binary cannot serve, so the hub keeps running as it was: {0}")]
    BinaryUnusable(String),
    /// Another upgrade is under way.
    #[error("another in-place upgrade of this hub is under way: {0}")]
    InProgress(String),
    /// The hub is stopping.
    #[error("the hub is shutting down: {0}")]
    ShuttingDown(String),
    /// The running hub predates in-place upgrades (no such route).
    #[error(
        "the running hub (version {version}) cannot upgrade in place (it has no POST /api/hub/upgrade); restart it onto the new binary instead (`parachute unit restart`, or restart `parachute serve`)"
    )]
    Unsupported {
        /// The running hub's version.
        version: String,
    },
    /// The hub did not answer the upgrade request in time.
    #[error(
        "the hub did not answer the upgrade request within {after:?} (it checks the new binary first); see its log"
    )]
    NoAnswer {
        /// The deadline.
        after: Duration,
    },
    /// The hub accepted, but the new generation did not answer in time.
    #[error(
        "the hub did not come back as the new build within {after:?} (last: {last}); see its log: a failed exec leaves the old image running"
    )]
    NotBack {
        /// The deadline.
        after: Duration,
        /// The last thing `/health` said.
        last: String,
    },
    /// Another process answers as this home's hub: it was restarted, not upgraded in place.
    #[error(
        "the hub answers from pid {after}, not {before}: it was restarted (its modules with it), not upgraded in place"
    )]
    PidChanged {
        /// The pid that accepted the upgrade.
        before: u32,
        /// The pid answering now.
        after: u32,
    },
    /// Finding or talking to the hub failed.
    #[error("{0}")]
    Client(#[from] ClientError),
}

impl UpgradeError {
    fn from_answer(e: ClientError, health: &Health) -> UpgradeError {
        let ClientError::Api { code, description, status } = &e else { return UpgradeError::Client(e) };
        // Matched by wire name: the hub's codes for this route are newer than some clients.
        match code.as_str() {
            "upgrade_refused" => UpgradeError::Refused(description.clone()),
            "upgrade_binary_unusable" => UpgradeError::BinaryUnusable(description.clone()),
            "upgrade_in_progress" => UpgradeError::InProgress(description.clone()),
            "shutting_down" => UpgradeError::ShuttingDown(description.clone()),
            "not_found" | "method_not_allowed" if *status == 404 || *status == 405 => {
                UpgradeError::Unsupported { version: health.version.clone() }
            }
            _ => UpgradeError::Client(e),
        }
    }

    /// The error code for `--json` output.
    pub fn json_code(&self) -> &str {
        match self {
            UpgradeError::Refused(_) => "upgrade_refused",
            UpgradeError::BinaryUnusable(_) => "upgrade_binary_unusable",
            UpgradeError::InProgress(_) => "upgrade_in_progress",
            UpgradeError::ShuttingDown(_) => "shutting_down",
            UpgradeError::Unsupported { .. } => "upgrade_unsupported",
            UpgradeError::NoAnswer { .. } | UpgradeError::NotBack { .. } => "upgrade_timeout",
            UpgradeError::PidChanged { .. } => "hub_restarted",
            UpgradeError::Client(e) => e.json_code(),
        }
    }
}

/// A module operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `POST …/start`.
    Start,
    /// `POST …/stop`.
    Stop,
    /// `POST …/restart`.
    Restart,
}

impl Op {
    /// The route segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Restart => "restart",
        }
    }

    fn timeout(self) -> Duration {
        match self {
            Op::Start => START_TIMEOUT,
            Op::Stop => TIMEOUT + Duration::from_secs(5),
            Op::Restart => RESTART_TIMEOUT,
        }
    }
}

/// The NDJSON event stream of a log follow.
pub struct LogStream {
    port: u16,
    body: Incoming,
    buf: BytesMut,
}

impl LogStream {
    /// The next event; `None` when the hub ended the stream (shutdown).
    pub async fn next(&mut self) -> Option<Result<FollowEvent, ClientError>> {
        loop {
            if let Some(nl) = memchr::memchr(b'\n', &self.buf) {
                let line = self.buf.split_to(nl + 1);
                let line = &line[..nl];
                if line.is_empty() {
                    continue;
                }
                return Some(serde_json::from_slice(line).map_err(|e| ClientError::Protocol {
                    port: self.port,
                    what: "a log follow".to_owned(),
                    detail: format!("an event is not the expected JSON ({e}): {}", snippet(line)),
                }));
            }
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
                Err(e) => {
                    return Some(Err(ClientError::Protocol {
                        port: self.port,
                        what: "a log follow".to_owned(),
                        detail: e.to_string(),
                    }));
                }
            }
        }
    }
}

fn logs_path(short: &str, since: Option<u64>, follow: bool) -> String {
    let mut q = Vec::new();
    if let Some(s) = since {
        q.push(format!("since={s}"));
    }
    if follow {
        q.push("follow=1".to_owned());
    }
    let base = format!("/api/modules/{}/logs", encode_segment(short));
    if q.is_empty() { base } else { format!("{base}?{}", q.join("&")) }
}

/// Percent-encodes a path segment (everything but RFC 3986 unreserved characters), so a
/// module name with `/`, `%`, `?` or spaces reaches the hub intact.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => {
            ClientError::Api { status: status.as_u16(), code: e.error, description: e.error_description }
        }
        Err(_) => ClientError::Http { status: status.as_u16(), body: snippet(body) },
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "an empty body".to_owned();
    }
    let cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() { format!("{cut:?}…") } else { format!("{cut:?}") }
}

/// Whether the recorded hub pid holds the listening socket on `port` (Linux; elsewhere
/// nothing can be checked and the per-connection check below is skipped too). Names whoever
/// holds it otherwise.
async fn check_holder(
    port: u16,
    recorded: &HubInstance,
    instance_path: &std::path::Path,
    token: &OperatorToken,
) -> Result<(), ClientError> {
    if !cfg!(target_os = "linux") {
        return Ok(());
    }
    let pid = recorded.pid;
    let holds = tokio::task::spawn_blocking(move || {
        !parachute_process::procfs::listeners_among(port, &[pid]).is_empty()
    })
    .await
    .unwrap_or(false);
    // The uid answering, from a connection of our own (no request is written on it).
    let uid = match tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port)).await {
        Ok(stream) => server_uid(&stream).ok().flatten(),
        Err(_) => None,
    };
    if holds && uid.is_some() && uid == token.owner() {
        return Ok(());
    }
    let holders = crate::port_holder::on_port_async(port).await;
    let who = crate::port_holder::describe_all(&holders)
        .unwrap_or_else(|| "a process this user cannot see".to_owned());
    let uid_text = uid.map_or_else(|| "an unknown uid".to_owned(), |u| format!("uid {u}"));
    let expected = token.owner().map_or_else(|| "?".to_owned(), |u| u.to_string());
    Err(ClientError::Foreign {
        port,
        detail: format!(
            "the port is held by {who}, running as {uid_text}, but this home's hub is pid {pid} (named in {}) running as uid {expected} (the owner of the operator token); it may have exited uncleanly and another user taken its port",
            instance_path.display()
        ),
    })
}

/// The uid owning the server side of `stream` (see [`parachute_process::tcp_peer_owner`]).
fn server_uid(stream: &tokio::net::TcpStream) -> std::io::Result<Option<u32>> {
    let (local, remote) = (stream.local_addr()?, stream.peer_addr()?);
    Ok(parachute_process::tcp_peer_owner(local, remote)?.map(|o| o.uid))
}

/// How a transport exchange failed, before it is given its user-facing wording.
enum Failure {
    Refused(std::io::Error),
    Timeout(Duration),
    /// The server side of the connection belongs to a user who may not have the token.
    Untrusted(String),
    Other(String),
}

impl Failure {
    fn into_error(self, port: u16, what: &str) -> ClientError {
        match self {
            Failure::Refused(e) => {
                ClientError::Protocol { port, what: what.to_owned(), detail: e.to_string() }
            }
            Failure::Timeout(after) => ClientError::Timeout { port, what: what.to_owned(), after },
            Failure::Untrusted(detail) => ClientError::Foreign { port, detail },
            Failure::Other(detail) => ClientError::Protocol { port, what: what.to_owned(), detail },
        }
    }
}

/// hyper's words for a peer that is not an HTTP server ("operation was canceled",
/// "connection closed before message completed") say little to a user; name the cause.
fn http_failure(e: &hyper::Error) -> String {
    if e.is_canceled() || e.is_incomplete_message() || e.is_parse() {
        format!(
            "whatever listens there is not a Parachute hub: it closed the connection or answered something that is not HTTP ({e})"
        )
    } else {
        e.to_string()
    }
}

/// One request with a deadline over connect, head and body.
async fn call(
    port: u16,
    method: Method,
    path: &str,
    bearer: Option<Bearer<'_>>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), Failure> {
    let exchange = async {
        let resp = send(port, method, path, bearer).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| Failure::Other(e.to_string()))?.to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| Failure::Timeout(timeout))?
}

/// Connects and sends one request; returns the response head (body still streaming).
async fn send(
    port: u16,
    method: Method,
    path: &str,
    bearer: Option<Bearer<'_>>,
) -> Result<Response<Incoming>, Failure> {
    let stream =
        tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port)).await.map_err(|e| {
            if matches!(e.kind(), std::io::ErrorKind::ConnectionRefused) {
                Failure::Refused(e)
            } else {
                Failure::Other(e.to_string())
            }
        })?;
    // Before a byte of the token is written: who accepted this very connection?
    if let Some(Bearer { uid: Some(expected), .. }) = &bearer
        && cfg!(target_os = "linux")
    {
        match server_uid(&stream) {
            Ok(Some(uid)) if uid == *expected => {}
            Ok(Some(uid)) => {
                return Err(Failure::Untrusted(format!(
                    "the listener on the port runs as uid {uid}, not as uid {expected} who owns the operator token"
                )));
            }
            Ok(None) => {
                return Err(Failure::Untrusted("the connection vanished before it could be checked".into()));
            }
            Err(e) => {
                return Err(Failure::Untrusted(format!(
                    "the owner of the listening socket cannot be read ({e})"
                )));
            }
        }
    }
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Other(e.to_string()))?;
    // The connection task ends with the response body (or when the caller drops it).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, format!("127.0.0.1:{port}"))
        .header(header::USER_AGENT, concat!("parachute/", env!("CARGO_PKG_VERSION")));
    if let Some(Bearer { token, .. }) = bearer {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| Failure::Other(e.to_string()))?;
    sender.send_request(req).await.map_err(|e| Failure::Other(http_failure(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("vault"), "vault");
        assert_eq!(encode_segment("parachute-vault_x.1~"), "parachute-vault_x.1~");
        assert_eq!(encode_segment("a/b c%?#"), "a%2Fb%20c%25%3F%23");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn logs_path_has_the_query() {
        assert_eq!(logs_path("v", None, false), "/api/modules/v/logs");
        assert_eq!(logs_path("v", Some(3), true), "/api/modules/v/logs?since=3&follow=1");
    }

    #[test]
    fn non_json_errors_say_so() {
        let e = api_error(StatusCode::BAD_GATEWAY, b"<html>");
        assert!(e.to_string().contains("HTTP 502"), "{e}");
        let e =
            api_error(StatusCode::NOT_FOUND, br#"{"error":"not_supervised","error_description":"x is not"}"#);
        assert_eq!(e.code(), Some(&ErrorCode::NotSupervised));
    }

    #[tokio::test]
    async fn a_silent_listener_times_out_instead_of_hanging() {
        // Accepts connections but never answers: the wedged-hub case (upstream R13).
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let r = call(port, Method::GET, "/health", None, Duration::from_millis(200)).await;
        assert!(matches!(r, Err(Failure::Timeout(_))));
        hold.abort();
    }

    /// A fake hub answering `GET /health` from `pid`, generation `gen(n)` for the n-th
    /// request; every connection gets one answer and is closed.
    async fn fake_health(pid: u32, generation: fn(u32) -> u32) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = serde_json::json!({
                    "status": "ok", "service": HUB_SERVICE, "instance": "i", "pid": pid, "port": port,
                    "version": "0", "buildId": format!("b{}", generation(n)), "generation": generation(n),
                    "startedAt": "2026-01-01T00:00:00Z", "modules": {"running": 0, "total": 0},
                })
                .to_string();
                let head =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
                n += 1;
            }
        });
        port
    }

    fn fake_hub(port: u16) -> Hub {
        let health: Health = serde_json::from_value(serde_json::json!({
            "status": "ok", "service": HUB_SERVICE, "instance": "i", "pid": 7, "port": port, "version": "0",
            "buildId": "b0", "generation": 0, "startedAt": "2026-01-01T00:00:00Z",
            "modules": {"running": 0, "total": 0},
        }))
        .unwrap();
        Hub { port, health, token: OperatorToken::mint().unwrap() }
    }

    fn handing_over(pid: u32) -> HandingOver {
        HandingOver { binary: "/b".into(), from_build: Some("b0".into()), pid, generation: 0 }
    }

    #[tokio::test]
    async fn the_upgrade_waits_for_the_next_generation_of_the_same_pid() {
        // The old image answers twice more before the new one does.
        let port = fake_health(7, |n| u32::from(n >= 2)).await;
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        let h =
            fake_hub(port).wait_generation(&handing_over(7), until, Duration::from_secs(10)).await.unwrap();
        assert_eq!((h.pid, h.generation, h.build_id.as_deref()), (7, Some(1), Some("b1")));
    }

    #[tokio::test]
    async fn another_pid_is_a_restart_and_an_old_generation_runs_out_of_time() {
        let port = fake_health(8, |_| 1).await;
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        let e = fake_hub(port).wait_generation(&handing_over(7), until, Duration::from_secs(10)).await;
        assert!(matches!(e, Err(UpgradeError::PidChanged { before: 7, after: 8 })), "{e:?}");

        let port = fake_health(7, |_| 0).await;
        let until = tokio::time::Instant::now() + Duration::from_millis(100);
        let e = fake_hub(port).wait_generation(&handing_over(7), until, Duration::from_millis(100)).await;
        let Err(e @ UpgradeError::NotBack { .. }) = e else { panic!("{e:?}") };
        assert!(e.to_string().contains("still answers as generation 0 (build b0)"), "{e}");
    }

    #[test]
    fn upgrade_answers_map_to_their_errors() {
        let hub = fake_hub(1);
        let err = |status: u16, code: &str| {
            let body = serde_json::json!({"error": code, "error_description": "why"}).to_string();
            UpgradeError::from_answer(
                api_error(StatusCode::from_u16(status).unwrap(), body.as_bytes()),
                &hub.health,
            )
        };
        assert!(matches!(err(422, "upgrade_refused"), UpgradeError::Refused(d) if d == "why"));
        assert!(matches!(err(409, "upgrade_in_progress"), UpgradeError::InProgress(_)));
        assert!(matches!(err(503, "shutting_down"), UpgradeError::ShuttingDown(_)));
        let old = err(404, "not_found");
        assert!(matches!(old, UpgradeError::Unsupported { .. }), "{old:?}");
        assert!(old.to_string().contains("parachute unit restart"), "{old}");
        assert!(matches!(err(401, "unauthenticated"), UpgradeError::Client(_)));
    }

    #[tokio::test]
    async fn nothing_listening_is_no_hub() {
        let dir = tempfile::tempdir().unwrap();
        // Bind then drop to get a port with nothing on it, and record it as the hub's.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let me = HubInstance::new(4_000_000, port, "n".repeat(32), time::OffsetDateTime::now_utc());
        let home = Home::new(dir.path()).unwrap();
        me.write(&home.hub_instance()).unwrap();
        let err = Hub::connect(&home).await.unwrap_err();
        assert!(matches!(err, ClientError::NoHub { .. }), "{err}");
        assert!(err.to_string().contains("parachute serve --home"), "{err}");
        assert!(err.to_string().contains(&format!("pid {}", me.pid)), "{err}");
    }
}
