//! One actor task per module: the only place a module's child is spawned, signalled,
//! reaped or respawned.
//!
//! Upstream had no per-module lock and relied on JavaScript running synchronously between
//! `await`s; a `start()` during the crash delay built a second entry and spawned a second
//! child while the old exit handler respawned into the old one (R1/R2). Here every
//! command (start, stop, restart, shutdown) and every child event (exit, restart timer,
//! readiness result) is handled by this task, one at a time, in the order it arrives;
//! commands win ties (`biased`), and any stop or restart cancels a pending respawn.
//! Readers never wait on the actor: it publishes immutable [`ModuleState`] snapshots
//! through a `watch` channel, and the live child's [`ChildHandle`] through a mutex-guarded
//! slot that `kill_all_now`/`tracked_pids` read synchronously.
//!
//! Each spawn goes through the same pipeline — preflight with the child's own PATH and
//! cwd (R18), pre-spawn squatter check with group/descendant ownership (R6), spawn,
//! readiness gate (R24, R25) — whether it is an operator start, a restart or a crash
//! respawn. Only the operator's `start`/`restart` wait for the gate.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use parachute_process::{
    ExitInfo, GroupChild, KILL_WAIT, ProcessIdentity, Signal, Signalled, SpawnSpec, procfs, signal_identity,
};
use tokio::process::{ChildStderr, ChildStdout};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use super::attribution::{Attribution, attribute, module_marker};
use super::budget::{BudgetConfig, CrashBudget, Verdict};
use super::diagnostics::{self as diag, line};
use super::handover::{AdoptedModule, FrozenChild, FrozenModule};
use super::journal::EventKind;
use super::logbuf::LogRing;
use super::preflight::{preflight, spawn_error};
use super::pump::{LineSink, Paused, pump};
use super::registry::{Cmd, Ctx, Live, Module, Stopped};
use super::state::{ModuleState, ModuleStatus, StartError, StartErrorKind};
use super::statefile;
use super::transitions::allowed;
use super::{ReclaimPolicy, SpawnRequest, SupervisorConfig, probe};
use crate::port_holder::{PortHolder, on_port_async};

/// Spawn attempts a transient shortage (EMFILE, ENFILE, EAGAIN, ENOMEM) gets before the
/// module is left `crashed`; the delay starts at [`TRANSIENT_FIRST`] and doubles up to
/// [`TRANSIENT_MAX`] (about three minutes in all).
const TRANSIENT_ATTEMPTS: u32 = 10;
const TRANSIENT_FIRST: Duration = Duration::from_secs(1);
const TRANSIENT_MAX: Duration = Duration::from_secs(30);

/// How long to wait for a dead child's output pumps to reach EOF. A pipe still held by a
/// process that escaped the group would otherwise hold up stop and crash handling.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

enum Internal {
    Ready { spawn: u64, bound: bool },
    LateBound { spawn: u64 },
}

enum Event {
    Cmd(Option<Cmd>),
    Internal(Internal),
    Exited,
    RespawnDue,
}

/// How long a frozen module's output pumps get to hand their pipes back (they stop between
/// two reads, so this is only ever reached by a bug).
const FREEZE_PUMPS: Duration = Duration::from_secs(2);

/// The child the actor owns.
struct Current {
    child: GroupChild,
    spawn: u64,
    since: Instant,
    pumps: Pumps,
}

/// The output pumps of the current child (a stream whose pump ended is `None`).
struct Pumps {
    out: Option<JoinHandle<Option<Paused<ChildStdout>>>>,
    err: Option<JoinHandle<Option<Paused<ChildStderr>>>>,
    pause: watch::Sender<bool>,
}

impl Pumps {
    fn start(sink: &LineSink, out: Option<Paused<ChildStdout>>, err: Option<Paused<ChildStderr>>) -> Pumps {
        let (pause, paused) = watch::channel(false);
        Pumps {
            out: out.map(|p| tokio::spawn(pump(p.stream, sink.stdout(), p.partial, paused.clone()))),
            err: err.map(|p| tokio::spawn(pump(p.stream, sink.stderr(), p.partial, paused))),
            pause,
        }
    }

    /// Waits (until `deadline`) for both pumps to reach EOF; one that does not is kept, to
    /// be waited for again (or to run on detached, still writing into the ring).
    async fn drain(&mut self, deadline: Instant) {
        if let Some(p) = self.out.as_mut()
            && tokio::time::timeout_at(deadline, p).await.is_ok()
        {
            self.out = None;
        }
        if let Some(p) = self.err.as_mut()
            && tokio::time::timeout_at(deadline, p).await.is_ok()
        {
            self.err = None;
        }
    }

    /// Stops both pumps between two reads and takes their pipes back.
    async fn pause(self) -> (Option<Paused<ChildStdout>>, Option<Paused<ChildStderr>>) {
        self.pause.send_replace(true);
        let deadline = Instant::now() + FREEZE_PUMPS;
        let out = match self.out {
            Some(p) => tokio::time::timeout_at(deadline, p).await.ok().and_then(Result::ok).flatten(),
            None => None,
        };
        let err = match self.err {
            Some(p) => tokio::time::timeout_at(deadline, p).await.ok().and_then(Result::ok).flatten(),
            None => None,
        };
        (out, err)
    }
}

/// What `terminate` did.
struct Terminated {
    /// How the child ended; `None` if it could not be reaped yet.
    exit: Option<ExitInfo>,
    /// SIGKILL was needed.
    escalated: bool,
}

enum Reclaim {
    Continue,
    Halt(StartError),
}

struct Actor {
    ctx: Arc<Ctx>,
    module: Arc<Module>,
    sink: LineSink,
    state_tx: watch::Sender<ModuleState>,
    /// `None` until the first command (the published snapshot says `starting` meanwhile).
    status: Option<ModuleStatus>,
    req: Option<SpawnRequest>,
    cur: Option<Current>,
    budget: CrashBudget,
    /// Consecutive spawns that failed for lack of a resource (see `spawn_failed`).
    transient: u32,
    respawn_at: Option<Instant>,
    /// Operator starts/restarts waiting for the readiness gate of the current spawn.
    waiting: Vec<oneshot::Sender<ModuleState>>,
    spawn_seq: u64,
    /// Readiness gate and late-bind watch of the current spawn.
    watchers: Vec<AbortHandle>,
    closed: bool,
    /// The leader the supervisor already sent SIGTERM at shutdown (see `Cmd::Shutdown`).
    termed: Option<u32>,
    rx: mpsc::UnboundedReceiver<Cmd>,
    itx: mpsc::UnboundedSender<Internal>,
    irx: mpsc::UnboundedReceiver<Internal>,
}

/// Creates a module entry and starts its actor.
pub(crate) fn spawn(ctx: Arc<Ctx>, short: &str) -> Arc<Module> {
    Actor::start(ctx, short)
}

/// Creates the entry of a module handed over by the image this process replaced.
pub(crate) fn adopt(ctx: Arc<Ctx>, m: AdoptedModule) -> Arc<Module> {
    Actor::adopt(ctx, m)
}

impl Actor {
    fn start(ctx: Arc<Ctx>, short: &str) -> Arc<Module> {
        let ring = LogRing::new(ctx.config.log_buffer_bytes);
        let actor = Actor::new(ctx, short, ModuleState::new(short, ModuleStatus::Starting), ring);
        let module = Arc::clone(&actor.module);
        tokio::spawn(actor.run());
        module
    }

    fn new(ctx: Arc<Ctx>, short: &str, initial: ModuleState, ring: Arc<LogRing>) -> Actor {
        let (tx, rx) = mpsc::unbounded_channel();
        let (itx, irx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(initial);
        let module = Arc::new(Module {
            short: short.to_owned(),
            ring: Arc::clone(&ring),
            state: state_rx,
            tx,
            live: std::sync::Mutex::new(None),
            escaped: std::sync::Mutex::new(Vec::new()),
            last_error: Arc::new(std::sync::Mutex::new(None)),
        });
        let sink = LineSink {
            prefix: Bytes::from(format!("[{short}] ")),
            ring,
            output: ctx.output.clone(),
            max_line: ctx.config.max_line_bytes,
            journal: ctx.output.module_journal(short),
            stream: None,
            last_error: Some(Arc::clone(&module.last_error)),
        };
        let closed = ctx.closing.load(Ordering::SeqCst);
        Actor {
            ctx,
            module: Arc::clone(&module),
            sink,
            state_tx,
            status: None,
            req: None,
            cur: None,
            budget: CrashBudget::default(),
            transient: 0,
            respawn_at: None,
            waiting: Vec::new(),
            spawn_seq: 0,
            watchers: Vec::new(),
            closed,
            termed: None,
            rx,
            itx,
            irx,
        }
    }

    /// A module handed over by the image this process replaced (an in-place upgrade):
    /// its child (if it had one) keeps running, its pipes are pumped again from where the
    /// old image stopped, its log keeps its sequence numbers, its crash history counts.
    fn adopt(ctx: Arc<Ctx>, m: AdoptedModule) -> Arc<Module> {
        let ring = LogRing::restore(ctx.config.log_buffer_bytes, m.ring_first_seq, m.ring);
        let mut state = m.state;
        state.resources = None;
        let last_error = state.last_error_line.take();
        let mut actor = Actor::new(ctx, &m.short, state.clone(), ring);
        *super::registry::lock(&actor.module.last_error) = last_error;
        let now = Instant::now();
        actor.status = Some(state.status);
        actor.req = m.request;
        actor.budget = CrashBudget::from_ages(now.into_std(), &m.crash_ages);
        actor.spawn_seq = m.spawn_seq;
        actor.respawn_at = m.respawn_in.map(|d| now + d);
        if let Some(c) = m.child {
            let child = c.spawned.child;
            let pid = child.pid();
            let since = now.checked_sub(m.uptime).unwrap_or(now);
            actor.module.set_live(Some(Live {
                handle: child.handle(),
                start_ticks: c.start_ticks,
                cgroup: procfs::cgroup(pid),
                since: since.into_std(),
            }));
            let pumps = Pumps::start(
                &actor.sink,
                c.stdout_open.then(|| Paused { stream: c.spawned.stdout, partial: c.partial_stdout }),
                c.stderr_open.then(|| Paused { stream: c.spawned.stderr, partial: c.partial_stderr }),
            );
            actor.cur = Some(Current { child, spawn: actor.spawn_seq, since, pumps });
            if state.status == ModuleStatus::Running && state.ready_at.is_none() {
                actor.regate();
            }
        }
        let module = Arc::clone(&actor.module);
        tokio::spawn(actor.run());
        module
    }

    fn cfg(&self) -> &SupervisorConfig {
        &self.ctx.config
    }

    fn short(&self) -> &str {
        &self.module.short
    }

    async fn run(mut self) {
        loop {
            let cur = &self.cur;
            let exited = async move {
                match cur {
                    Some(c) => c.child.exited().await,
                    None => std::future::pending().await,
                }
            };
            let respawn_at = self.respawn_at;
            let due = async move {
                match respawn_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let ev = tokio::select! {
                biased;
                c = self.rx.recv() => Event::Cmd(c),
                Some(i) = self.irx.recv() => Event::Internal(i),
                () = exited => Event::Exited,
                () = due => Event::RespawnDue,
            };
            match ev {
                Event::Cmd(None) => break,
                Event::Cmd(Some(c)) => {
                    if !self.command(c).await {
                        break;
                    }
                }
                Event::Internal(i) => self.internal(i),
                Event::Exited => self.on_crash().await,
                Event::RespawnDue => {
                    self.respawn_at = None;
                    self.spawn_flow().await;
                }
            }
        }
        // Ending: nothing of ours may outlive the actor.
        if let Some(cur) = self.cur.take() {
            let _ = cur.child.signal_group(Signal::Kill);
            self.finish_child(cur, Duration::ZERO).await;
        }
        self.module.ring.close();
    }

    /// Handles one command; `false` ends the actor.
    async fn command(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Start { req, reply } => {
                let settled =
                    matches!(self.status, None | Some(ModuleStatus::Stopped | ModuleStatus::Crashed));
                if !settled || self.closed {
                    // Idempotent: running, starting, or waiting out the crash delay (R1: the
                    // pending respawn stays the only one).
                    let _ = reply.send(self.snapshot());
                    return true;
                }
                self.req = Some(req);
                self.budget.reset();
                self.transient = 0;
                self.publish(|s| {
                    s.restarts_in_window = 0;
                    s.start_error = None;
                });
                self.waiting.push(reply);
                self.spawn_flow().await;
            }
            Cmd::Stop { reply } => {
                let escalated = self.stop(self.cfg().kill_timeout).await;
                let _ = reply.send(Stopped { state: self.snapshot(), escalated });
            }
            Cmd::Restart { next, reply } => {
                if self.closed {
                    let _ = reply.send(self.snapshot());
                    return true;
                }
                self.respawn_at = None;
                self.transition(ModuleStatus::Restarting, |_| {});
                let exit = self.terminate(self.cfg().kill_timeout).await.and_then(|t| t.exit);
                if let Some(next) = next {
                    self.req = Some(next);
                }
                self.budget.reset();
                self.transient = 0;
                self.publish(|s| {
                    s.pid = None;
                    s.restarts_in_window = 0;
                    if let Some(exit) = exit {
                        s.record_exit(exit.code, exit.signal);
                    }
                });
                self.waiting.push(reply);
                self.spawn_flow().await;
            }
            Cmd::Shutdown { grace, termed, reply } => {
                self.closed = true;
                self.termed = termed;
                let escalated = self.stop(grace).await;
                let _ = reply.send(Stopped { state: self.snapshot(), escalated });
            }
            Cmd::Remove { reply } => {
                self.closed = true;
                let escalated = self.stop(self.cfg().kill_timeout).await;
                let _ = reply.send(Stopped { state: self.snapshot(), escalated });
                return false;
            }
            Cmd::Abort => {
                self.closed = true;
                return false;
            }
            Cmd::Freeze { reply, thaw } => self.freeze(reply, thaw).await,
        }
        true
    }

    /// An in-place upgrade: stop pumping (between two reads, so not a byte is lost), hand
    /// the module's state and pipes to the hub, and wait. If the hub's image is replaced,
    /// this never resumes; if the upgrade is abandoned (`thaw` resolves or is dropped),
    /// pumping resumes on the same pipes where it stopped.
    async fn freeze(&mut self, reply: oneshot::Sender<FrozenModule>, thaw: oneshot::Receiver<()>) {
        if self.closed {
            return;
        }
        self.cancel_watchers();
        self.answer_waiting();
        let now = Instant::now();
        let mut paused = None;
        let mut child = None;
        if let Some(cur) = self.cur.as_mut() {
            let (tx, _) = watch::channel(false);
            let pumps = std::mem::replace(&mut cur.pumps, Pumps { out: None, err: None, pause: tx });
            let (out, err) = pumps.pause().await;
            let start_ticks = self.module.live().map_or(0, |l| l.start_ticks);
            child = Some(FrozenChild {
                leader: ProcessIdentity { pid: cur.child.pid(), start_ticks },
                stdout: out.as_ref().map(|p| std::os::fd::AsRawFd::as_raw_fd(&p.stream)),
                stderr: err.as_ref().map(|p| std::os::fd::AsRawFd::as_raw_fd(&p.stream)),
                partial_stdout: out.as_ref().map(|p| p.partial.clone()).unwrap_or_default(),
                partial_stderr: err.as_ref().map(|p| p.partial.clone()).unwrap_or_default(),
                uptime: now.saturating_duration_since(cur.since),
            });
            paused = Some((out, err));
        }
        // Lines already taken from the pipes reach the module's journal streams before the
        // image that owns those streams is gone (the new one opens its own).
        if let Some(j) = &self.sink.journal {
            j.out.flush(FREEZE_PUMPS).await;
            j.err.flush(FREEZE_PUMPS).await;
        }
        let (ring_first_seq, ring) = self.module.ring.export();
        let frozen = FrozenModule {
            short: self.short().to_owned(),
            state: self.snapshot(),
            request: self.req.clone(),
            child,
            ring_first_seq,
            ring,
            crash_ages: self.budget.ages(now.into_std()),
            spawn_seq: self.spawn_seq,
            respawn_in: self.respawn_at.map(|t| t.saturating_duration_since(now)),
        };
        if reply.send(frozen).is_ok() {
            // Resolves (or errs, when dropped) only if the upgrade was abandoned.
            let _ = thaw.await;
        }
        if let (Some(cur), Some((out, err))) = (self.cur.as_mut(), paused) {
            cur.pumps = Pumps::start(&self.sink, out, err);
        }
        if self.status == Some(ModuleStatus::Running) && self.snapshot().ready_at.is_none() {
            self.regate();
        }
    }

    /// Runs the readiness gate again for the current child (after a freeze, or an
    /// adoption, cancelled or skipped it).
    fn regate(&mut self) {
        if let (Some(port), Some(pid), Some(spawn)) =
            (self.port(), self.pid(), self.cur.as_ref().map(|c| c.spawn))
        {
            if self.cfg().ready_timeout.is_zero() {
                self.mark_ready();
            } else {
                self.readiness_gate(spawn, port, pid);
            }
        }
    }

    fn internal(&mut self, ev: Internal) {
        let running = self.status == Some(ModuleStatus::Running);
        match ev {
            Internal::Ready { spawn, bound } if running && self.is_current(spawn) => {
                if bound {
                    self.clear_unbound();
                    self.mark_ready();
                } else if let (Some(port), Some(pid)) = (self.port(), self.pid()) {
                    let err = diag::started_but_unbound(self.short(), pid, port, self.cfg().ready_timeout);
                    self.sink.event(EventKind::StartedButUnbound, &line::unbound(&err.description));
                    self.publish(|s| s.start_error = Some(err));
                    self.late_bind_watch(spawn, port, pid);
                }
                self.answer_waiting();
            }
            Internal::LateBound { spawn } if running && self.is_current(spawn) => {
                self.mark_ready();
                if self.clear_unbound()
                    && let Some(port) = self.port()
                {
                    self.sink.event(
                        EventKind::Listening,
                        &format!("[supervisor] {} is now listening on port {port}.", self.short()),
                    );
                }
            }
            // A result for a child that is gone: its exit or stop already answered everyone.
            Internal::Ready { .. } | Internal::LateBound { .. } => {}
        }
    }

    /// Clears `started_but_unbound`, and only that (a later, different error stays).
    /// The current child passed its readiness gate (or has none to pass).
    fn mark_ready(&self) {
        self.publish(|s| s.ready_at = Some(crate::rfc3339::now()));
    }

    fn clear_unbound(&mut self) -> bool {
        let mut cleared = false;
        self.state_tx.send_if_modified(|s| {
            if s.start_error
                .as_ref()
                .is_some_and(|e| matches!(e.kind, StartErrorKind::StartedButUnbound { .. }))
            {
                s.start_error = None;
                cleared = true;
            }
            cleared
        });
        cleared
    }

    // ---- spawning -------------------------------------------------------------------

    /// Preflight, squatter check, spawn, readiness gate. Used for every spawn.
    async fn spawn_flow(&mut self) {
        let Some(req) = self.req.clone() else {
            self.answer_waiting();
            return;
        };
        if self.closed {
            self.answer_waiting();
            return;
        }
        self.transition(ModuleStatus::Starting, |_| {});
        if let Err(err) = preflight(&req) {
            return self.fail(*err);
        }
        if let Some(port) = req.port {
            let ours = self.ctx.live_leaders();
            let holders = on_port_async(port).await;
            if let Some(h) = holders.iter().find(|h| !h.in_any_group(&ours)) {
                return self.fail(diag::port_squatter(self.short(), port, h.pid, h.cmdline.as_deref()));
            }
        }
        let spec = SpawnSpec {
            program: req.argv.first().map(Into::into).unwrap_or_default(),
            args: req.argv.iter().skip(1).map(Into::into).collect(),
            env: req
                .env
                .iter()
                .filter(|(k, _)| !super::MANAGER_PROTOCOL_VARS.contains(&k.as_str()))
                .filter(|(k, _)| k != statefile::TAG_VAR)
                .map(|(k, v)| (k.into(), v.into()))
                .chain(
                    self.cfg()
                        .process_tag
                        .as_ref()
                        .map(|tag| (statefile::TAG_VAR.into(), format!("{tag}/{}", self.short()).into())),
                )
                .collect(),
            cwd: req.cwd.clone(),
            keep_fds: Vec::new(),
        };
        let spawned = match self.ctx.spawner.spawn(spec).await {
            Ok(s) => s,
            Err(e) => return self.spawn_failed(&req, e),
        };
        self.transient = 0;
        let child = spawned.child;
        let pid = child.pid();
        let start_ticks = procfs::stat(pid).map_or(0, |s| s.start_ticks);
        let pumps = Pumps::start(
            &self.sink,
            Some(Paused { stream: spawned.stdout, partial: Vec::new() }),
            Some(Paused { stream: spawned.stderr, partial: Vec::new() }),
        );
        self.module.set_live(Some(Live {
            handle: child.handle(),
            start_ticks,
            cgroup: procfs::cgroup(pid),
            since: std::time::Instant::now(),
        }));
        self.spawn_seq += 1;
        let spawn = self.spawn_seq;
        self.cur = Some(Current { child, spawn, since: Instant::now(), pumps });
        self.persist().await;
        self.transition(ModuleStatus::Running, |s| {
            s.pid = Some(pid);
            s.restarts_total = u32::try_from(spawn - 1).unwrap_or(u32::MAX);
            s.started_at = Some(crate::rfc3339::now());
            s.start_error = None;
        });
        match req.port {
            Some(port) if !self.cfg().ready_timeout.is_zero() => self.readiness_gate(spawn, port, pid),
            _ => {
                self.mark_ready();
                self.answer_waiting();
            }
        }
    }

    /// The spawn itself failed. A shortage of descriptors, processes or memory usually
    /// passes (a connection flood, a fork storm): the module waits in `restarting` and is
    /// tried again with backoff, up to [`TRANSIENT_ATTEMPTS`], instead of being left
    /// `crashed` for good. Anything else is final until an operator starts it again.
    fn spawn_failed(&mut self, req: &SpawnRequest, e: parachute_process::SpawnError) {
        let Some(errno) = e.transient() else {
            self.transient = 0;
            return self.fail(spawn_error(self.short(), req, e));
        };
        self.transient += 1;
        let (n, detail) = (self.transient, e.to_string());
        if n >= TRANSIENT_ATTEMPTS {
            self.transient = 0;
            return self.fail(diag::spawn_gave_up(self.short(), &detail, errno, n));
        }
        let delay = TRANSIENT_FIRST.saturating_mul(1 << (n - 1).min(16)).min(TRANSIENT_MAX);
        let err = diag::spawn_retrying(self.short(), &detail, errno, n, TRANSIENT_ATTEMPTS, delay);
        self.sink.event(EventKind::Restarting, &line::start_failed(self.short(), &err.description));
        self.respawn_at = Some(Instant::now() + delay);
        let next = crate::rfc3339::format(time::OffsetDateTime::now_utc() + delay);
        self.transition(ModuleStatus::Restarting, |s| {
            s.pid = None;
            s.start_error = Some(err);
            s.next_restart_at = Some(next);
        });
        self.answer_waiting();
    }

    fn fail(&mut self, err: StartError) {
        self.sink.event(EventKind::StartFailed, &line::start_failed(self.short(), &err.description));
        self.transition(ModuleStatus::Crashed, |s| {
            s.pid = None;
            s.start_error = Some(err);
        });
        self.answer_waiting();
    }

    fn readiness_gate(&mut self, spawn: u64, port: u16, pid: u32) {
        let (timeout, poll, itx) = (self.cfg().ready_timeout, self.cfg().ready_poll, self.itx.clone());
        let task = tokio::spawn(async move {
            let bound = probe::watch_port(port, pid, timeout, poll).await;
            let _ = itx.send(Internal::Ready { spawn, bound });
        });
        self.watchers.push(task.abort_handle());
    }

    fn late_bind_watch(&mut self, spawn: u64, port: u16, pid: u32) {
        let (window, poll, itx) = (self.cfg().late_bind_watch, self.cfg().late_bind_poll, self.itx.clone());
        if window.is_zero() {
            return;
        }
        let task = tokio::spawn(async move {
            if probe::watch_port(port, pid, window, poll).await {
                let _ = itx.send(Internal::LateBound { spawn });
            }
        });
        self.watchers.push(task.abort_handle());
    }

    // ---- stopping -------------------------------------------------------------------

    /// Stop command: no respawn, child (if any) terminated, status `stopped`.
    ///
    /// R28: `stop` clears `startError`. `stopped` is the operator's deliberate state; a
    /// diagnostic from before it (a missing binary, a squatter) would make `status` report
    /// "failed to start" for a module nobody asked to run. The diagnostic stays readable in
    /// the module's log, where it was written when it happened (R29).
    async fn stop(&mut self, grace: Duration) -> bool {
        self.respawn_at = None;
        let t = self.terminate(grace).await;
        let escalated = t.as_ref().is_some_and(|t| t.escalated);
        let exit = t.and_then(|t| t.exit);
        let f = |s: &mut ModuleState| {
            s.pid = None;
            s.start_error = None;
            if let Some(exit) = exit {
                s.record_exit(exit.code, exit.signal);
            }
        };
        if self.status.is_some() {
            self.transition(ModuleStatus::Stopped, f);
        } else {
            self.publish(f);
        }
        self.answer_waiting();
        escalated
    }

    /// SIGTERM the group, SIGKILL after `kt` (the kill timeout, or the hub's stop timeout
    /// at shutdown), reap the group, drain the output. Only a child whose exit has not been
    /// reaped is signalled (R3). `None` when there was no child.
    async fn terminate(&mut self, kt: Duration) -> Option<Terminated> {
        self.cancel_watchers();
        let cur = self.cur.take()?;
        // The tree is intact only while the leader lives: record who left the group now.
        // At shutdown the supervisor has already walked every module's tree once, before
        // asking any actor to stop: one walk instead of one per module (each walk covers
        // all modules, so per-actor walks made a 50-module stop quadratic).
        if !self.ctx.closing.load(Ordering::SeqCst) {
            let ctx = Arc::clone(&self.ctx);
            let _ = tokio::task::spawn_blocking(move || ctx.track_descendants()).await;
        }
        if self.termed != Some(cur.child.pid()) {
            let _ = cur.child.signal_group(Signal::Term);
        }
        let mut escalated = false;
        if tokio::time::timeout(kt, cur.child.exited()).await.is_err() {
            escalated = true;
            self.sink.event(EventKind::Escalated, &line::escalating(self.short(), kt));
            let _ = cur.child.signal_group(Signal::Kill);
            if tokio::time::timeout(KILL_WAIT, cur.child.exited()).await.is_err() {
                // Unkillable for now (uninterruptible sleep): reap it whenever it goes, so
                // this module's commands are not held up (upstream waited forever, R8).
                self.sink.event(
                    EventKind::Unkillable,
                    &format!(
                        "[supervisor] {} (pid {}) survived SIGKILL; it will be reaped when it exits.",
                        self.short(),
                        cur.child.pid()
                    ),
                );
                self.module.set_live(None);
                self.persist().await;
                tokio::spawn(cur.child.reap(Duration::ZERO));
                return Some(Terminated { exit: None, escalated });
            }
        }
        let (exit, _) = self.finish_child(cur, kt).await;
        Some(Terminated { exit: Some(exit), escalated })
    }

    /// The leader has exited (or will): drain and reap its group, clear the live slot,
    /// wait for the output. Returns how it ended and how long it had been up.
    async fn finish_child(&mut self, cur: Current, grace: Duration) -> (ExitInfo, Duration) {
        let Current { child, since, mut pumps, .. } = cur;
        let exit = child.reap(grace).await;
        let uptime = since.elapsed();
        pumps.drain(Instant::now() + DRAIN_TIMEOUT).await;
        // Descendants that left the group are the module's too (a daemonizing wrapper's
        // server): they go with it, by identity — after the drain, so a writer's last
        // words still arrive. They stay recorded in the state file until they are gone.
        let mut escaped = super::registry::lock(&self.module.escaped).clone();
        if self.cfg().adopt_orphans {
            for id in self.ctx.tagged_orphans(self.short()).await {
                if !escaped.contains(&id) {
                    escaped.push(id);
                }
            }
        }
        let (stopped, killed) = statefile::stop_all(&escaped, grace).await;
        if stopped > 0 {
            self.sink.event(
                EventKind::EscapeesStopped,
                &format!(
                    "[supervisor] {}: stopped {stopped} process(es) that had left its process group{}.",
                    self.short(),
                    if killed.is_empty() {
                        String::new()
                    } else {
                        format!(" ({} needed SIGKILL)", killed.len())
                    }
                ),
            );
            // They held the pipes (which is why the drain above could time out): now the
            // pumps reach EOF, and the escapees' last words are in the log before this
            // returns (R9), not shortly after.
            pumps.drain(Instant::now() + DRAIN_TIMEOUT).await;
        }
        super::registry::lock(&self.module.escaped).clear();
        self.module.set_live(None);
        self.persist().await;
        (exit, uptime)
    }

    fn cancel_watchers(&mut self) {
        for w in self.watchers.drain(..) {
            w.abort();
        }
    }

    // ---- crashes --------------------------------------------------------------------

    /// The child exited without being asked to.
    async fn on_crash(&mut self) {
        let Some(cur) = self.cur.take() else { return };
        self.cancel_watchers();
        // Who is in our group, by identity, while the unreaped leader still pins the pgid:
        // after the reap below, `pgid == pid` could name a stranger that recycled the pid.
        let own_group = match self.port() {
            Some(_) => {
                // The scan is shared with the drain in `finish_child` below (one scan on the
                // crash path, not two): both need the group as it is after the exit.
                let members = cur.child.handle().group_members_after_exit().await;
                let mut own: Vec<ProcessIdentity> =
                    members.into_iter().filter_map(procfs::identity).collect();
                // Descendants that left the group, and orphans that came back to the
                // supervisor, are provably ours as well, not "unrelated".
                own.extend(super::registry::lock(&self.module.escaped).iter().copied());
                own.extend(super::registry::lock(&self.ctx.orphans).iter().copied());
                own
            }
            None => Vec::new(),
        };
        // R4: the rest of the group (often the real port holder) goes before anything is
        // decided.
        let (exit, uptime) = self.finish_child(cur, self.cfg().kill_timeout).await;
        // The snapshot keeps saying `running` (with the old pid) until the verdict below,
        // so readers never see a running module without a pid.
        let (code, signal) = (exit.code, exit.signal);
        if let Some(port) = self.port()
            && let Reclaim::Halt(err) = self.reclaim(port, &own_group).await
        {
            self.transition(ModuleStatus::Crashed, |s| {
                s.pid = None;
                s.record_exit(code, signal);
                s.start_error = Some(err);
            });
            self.answer_waiting();
            return;
        }
        let verdict = self.budget.record(std::time::Instant::now(), uptime, &BudgetConfig::from(self.cfg()));
        let now = crate::rfc3339::now();
        let (to, n) = match verdict {
            Verdict::GiveUp { n } => {
                self.sink.event(
                    EventKind::GaveUp,
                    &line::giving_up(self.short(), code, signal, n, self.cfg().crash_window),
                );
                (ModuleStatus::Crashed, n)
            }
            Verdict::Restart { n, delay } => {
                let max = self.cfg().max_crashes_in_window;
                self.sink.event(
                    EventKind::Restarting,
                    &line::restarting(self.short(), code, signal, n, max, delay),
                );
                self.respawn_at = Some(Instant::now() + delay);
                (ModuleStatus::Restarting, n)
            }
        };
        let next = self.respawn_at.map(|t| {
            crate::rfc3339::format(
                time::OffsetDateTime::now_utc() + t.saturating_duration_since(Instant::now()),
            )
        });
        self.transition(to, |s| {
            s.pid = None;
            s.record_exit(code, signal);
            s.restarts_in_window = n;
            s.last_crash_at = Some(now);
            s.next_restart_at = next;
        });
        self.answer_waiting();
    }

    /// Crash-path port check: who holds the port now that our group is gone? `own_group`
    /// are the group's members as read before the leader was reaped.
    async fn reclaim(&mut self, port: u16, own_group: &[ProcessIdentity]) -> Reclaim {
        let holders = on_port_async(port).await;
        if holders.is_empty() {
            return Reclaim::Continue;
        }
        let siblings = self.ctx.live_leaders();
        let marker = self.req.as_ref().and_then(|r| module_marker(&r.argv, r.cwd.as_deref()));
        let judged: Vec<(PortHolder, Attribution)> = holders
            .into_iter()
            .map(|h| {
                let a = attribute(&h, own_group, &siblings, marker.as_deref());
                (h, a)
            })
            .collect();
        let short = self.short().to_owned();
        if self.cfg().reclaim == ReclaimPolicy::Prompt {
            let h = &judged[0].0;
            self.sink.event(EventKind::PortHeld, &line::prompt_surface(&short, port, h.pid));
            return Reclaim::Halt(diag::port_squatter(&short, port, h.pid, h.cmdline.as_deref()));
        }
        if let Some((h, _)) =
            judged.iter().find(|(_, a)| matches!(a, Attribution::Foreign | Attribution::Sibling))
        {
            self.sink.event(
                EventKind::PortHeld,
                &line::refuse_unrelated(&short, port, h.pid, h.cmdline.as_deref()),
            );
            return Reclaim::Halt(diag::port_squatter(&short, port, h.pid, h.cmdline.as_deref()));
        }
        for (h, _) in &judged {
            self.sink
                .event(EventKind::ReclaimingPort, &line::adopting(&short, port, h.pid, h.cmdline.as_deref()));
            self.adopt_kill(h, port).await;
        }
        Reclaim::Continue
    }

    /// SIGTERM an attributed orphan, give it `kill_timeout` to let go of the port, SIGKILL
    /// it if the very same process still holds it. Signals go by identity (pid + start
    /// time through a pidfd), so a pid recycled meanwhile is never hit. The identity is the
    /// one the attribution was made on, not re-read here: a re-read could name a newcomer.
    async fn adopt_kill(&self, h: &PortHolder, port: u16) {
        let Some(id) = h.identity() else { return };
        if !matches!(signal_identity(&id, Signal::Term, false), Ok(Signalled::Process | Signalled::Group)) {
            return;
        }
        let deadline = Instant::now() + self.cfg().kill_timeout;
        if probe::holds_until(&id, port, deadline, self.cfg().ready_poll).await {
            let _ = signal_identity(&id, Signal::Kill, false);
            probe::holds_until(&id, port, Instant::now() + KILL_WAIT, self.cfg().ready_poll).await;
        }
    }

    // ---- state ----------------------------------------------------------------------

    fn snapshot(&self) -> ModuleState {
        self.module.snapshot()
    }

    fn publish(&self, f: impl FnOnce(&mut ModuleState)) {
        self.state_tx.send_modify(f);
    }

    /// Moves to `to` (checked against the table) and applies `f`, as one snapshot.
    fn transition(&mut self, to: ModuleStatus, f: impl FnOnce(&mut ModuleState)) {
        if !allowed(self.status, to) {
            // A bug, not an input problem: loud in tests, logged in production, and the
            // module still moves on rather than sticking in a stale status.
            debug_assert!(
                false,
                "{}: transition {:?} → {to:?} is not in the table",
                self.short(),
                self.status
            );
            tracing::error!("{}: transition {:?} → {to:?} is not in the table", self.short(), self.status);
        }
        self.status = Some(to);
        self.publish(|s| {
            s.status = to;
            if to != ModuleStatus::Restarting {
                s.next_restart_at = None;
            }
            // Every transition is a new child or none: readiness is earned again.
            s.ready_at = None;
            f(s);
        });
    }

    fn answer_waiting(&mut self) {
        let state = self.snapshot();
        for w in self.waiting.drain(..) {
            let _ = w.send(state.clone());
        }
    }

    fn is_current(&self, spawn: u64) -> bool {
        self.cur.as_ref().is_some_and(|c| c.spawn == spawn)
    }

    fn port(&self) -> Option<u16> {
        self.req.as_ref().and_then(|r| r.port)
    }

    fn pid(&self) -> Option<u32> {
        self.cur.as_ref().map(|c| c.child.pid())
    }

    /// Hands the state file's writer the newest view. Never waits: the write (with its
    /// fsyncs) would otherwise sit between a crash and the respawn, and the one writer
    /// coalesces, so the crash rate cannot queue writes.
    ///
    /// Not while the supervisor is closing: every actor finishing its child would queue a
    /// write (each with its fsyncs) that the final one, which `shutdown` waits for, makes
    /// moot; a hub killed meanwhile leaves the previous file, whose children are checked
    /// by identity at the next boot.
    async fn persist(&self) {
        if !self.ctx.closing.load(Ordering::SeqCst) {
            self.ctx.persist();
        }
    }
}
