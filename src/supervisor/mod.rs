//! The supervisor: keeps every module alive as a child in its own process group.
//!
//! CONTRACT (fixed so the serve/control-API work can proceed in parallel; the
//! implementation fills the bodies and may add, but not rename, public items):
//!
//! - [`Supervisor`] is a cheap, cloneable handle. Each module has one actor task that
//!   serializes every command (start, stop, restart) and its child's exit handling, so a
//!   start during a restart delay can never spawn a second child (upstream races R1/R2).
//! - Readers ([`Supervisor::get`], [`Supervisor::list`]) never wait on an actor: each actor
//!   publishes immutable [`ModuleState`] snapshots.
//! - Logs: every module has a ring buffer bounded by bytes; each line carries a sequence
//!   number so a follower resumes from a cursor and learns how many lines it missed.
//!
//! Decisions beyond the contract: `start` during a crash delay joins the pending respawn
//! (returns `restarting`); `stop` clears `startError` (R28, the log keeps it); the log
//! buffer and the `list()` position survive `start` after a crash and `restart` (upstream
//! replaced the buffer, losing the crash's output); every spawn, respawns included, runs
//! preflight, the squatter check and the readiness gate.
//!
//! The pieces, one concern per file:
//!
//! ```text
//!  Supervisor (this file) ── handle: registry of modules, shutdown, kill_all_now
//!    ├─ registry     modules in list order, the actor command protocol, the state file
//!    └─ actor        one task per module: commands + child events, serialized
//!         ├─ transitions  allowed status changes (table)    ├─ budget       crash window, backoff
//!         ├─ preflight    argv[0] on the child's PATH        ├─ attribution  whose port holder (pure)
//!         ├─ probe        /proc port holders, readiness     ├─ diagnostics  every human-facing text
//!         ├─ pump, lines  bounded line splitting, prefixes  ├─ statefile    children on disk, leftovers
//!         └─ logbuf       ring buffer, seq, followers       └─ output       one bounded output writer
//! ```

mod actor;
pub(crate) mod attribution;
pub(crate) mod budget;
pub mod dependencies;
pub(crate) mod diagnostics;
pub mod handover;
pub(crate) mod journal;
pub(crate) mod lines;
pub(crate) mod logbuf;
pub(crate) mod output;
mod preflight;
mod probe;
mod pump;
mod registry;
pub mod resources;
pub(crate) mod state;
pub mod statefile;
pub(crate) mod transitions;

pub use crate::model::modules::SpawnRequest;
pub use logbuf::{LogEvent, LogFollower, LogLine, LogSnapshot};
pub use output::OutputSink;
pub use resources::Resources;
pub use state::{ErrorLine, ModuleState, ModuleStatus, StartError, StartErrorKind};
pub use statefile::{LeftoverOutcome, LeftoverReport, adopt_leftovers};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parachute_process::Spawner;
use tokio::sync::oneshot;

use output::Output;
use registry::{Cmd, Ctx};

/// Variables a service manager addresses to the hub itself (notify socket, watchdog,
/// socket activation, the hub's journal stream). Never passed to a module, whatever its
/// request says: a module holding `NOTIFY_SOCKET` could report the hub ready or feed its
/// watchdog.
pub const MANAGER_PROTOCOL_VARS: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "JOURNAL_STREAM",
];

/// What to do with a port holder found on the crash path that attribution says is ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReclaimPolicy {
    /// SIGTERM, grace, SIGKILL, re-verify, then respawn.
    #[default]
    Adopt,
    /// Never kill; surface a `port_squatter` error.
    Prompt,
}

/// Tunables. Defaults match the upstream hub where it was right.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Give up (status `crashed`) when this many crashes fall inside `crash_window`.
    pub max_crashes_in_window: u32,
    /// The sliding crash window.
    pub crash_window: Duration,
    /// First restart delay; doubles per crash in the window, capped at `restart_delay_max`.
    pub restart_delay: Duration,
    /// Cap of the exponential backoff.
    pub restart_delay_max: Duration,
    /// A child that stays up this long clears the crash history.
    pub healthy_reset: Duration,
    /// Grace between SIGTERM and SIGKILL when stopping.
    pub kill_timeout: Duration,
    /// Per-module ring buffer size.
    pub log_buffer_bytes: usize,
    /// Lines longer than this are split and marked as continued.
    pub max_line_bytes: usize,
    /// Capacity of the shared output queue, in lines; beyond it lines are dropped and counted.
    pub output_queue_lines: usize,
    /// Readiness window after every spawn (0 = off).
    pub ready_timeout: Duration,
    /// Readiness poll interval.
    pub ready_poll: Duration,
    /// How long a late bind is watched for after `started_but_unbound` (0 = off).
    pub late_bind_watch: Duration,
    /// Late-bind poll interval.
    pub late_bind_poll: Duration,
    /// Crash-path squatter policy.
    pub reclaim: ReclaimPolicy,
    /// Where `{short, pid, pgid, start time}` of live children is persisted, so a restarted
    /// supervisor can prove leftovers are its own.
    pub state_file: Option<PathBuf>,
    /// Every child of this process that is not a module's leader is an orphan of some
    /// module's tree (true only for a child subreaper whose children are all modules, i.e.
    /// the hub): such orphans are recorded in the state file and stopped at shutdown.
    pub adopt_orphans: bool,
    /// A random tag given to every child's environment and recorded in the state file, so
    /// the next boot finds what escaped tracking (see `statefile::TAG_VAR`).
    pub process_tag: Option<String>,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_crashes_in_window: 3,
            crash_window: Duration::from_secs(60),
            restart_delay: Duration::from_millis(500),
            restart_delay_max: Duration::from_secs(30),
            healthy_reset: Duration::from_secs(60),
            kill_timeout: Duration::from_secs(5),
            log_buffer_bytes: 64 * 1024,
            max_line_bytes: 16 * 1024,
            output_queue_lines: 4096,
            ready_timeout: Duration::from_secs(4),
            ready_poll: Duration::from_millis(100),
            late_bind_watch: Duration::from_secs(60),
            late_bind_poll: Duration::from_secs(1),
            reclaim: ReclaimPolicy::Adopt,
            state_file: None,
            adopt_orphans: false,
            process_tag: None,
        }
    }
}

/// Errors of the supervisor handle.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// `restart(short, Some(next))` with `next.short != short`; nothing was stopped.
    #[error(
        "refusing to restart {short}: nextReq.short is \"{next}\"; a restart must keep the \
         module's name (start {next} separately)"
    )]
    ShortMismatch {
        /// The module being restarted.
        short: String,
        /// The mismatched short of the new request.
        next: String,
    },
}

/// What [`Supervisor::shutdown`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every child exited on SIGTERM within its kill timeout and the deadline.
    pub clean: bool,
    /// Modules whose child had to be SIGKILLed (it ignored SIGTERM, or the deadline ran
    /// out), in `list()` order.
    pub killed: Vec<String>,
}

/// A cheap, cloneable handle to the supervisor. Dropping the last clone SIGKILLs every
/// child group and ends the actors (a test that fails half-way leaves nothing running).
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<Ctx>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Queue the abort before killing, so an actor sees the command (commands win) rather
        // than a crash it would respawn.
        let modules = self.ctx.modules();
        for m in &modules {
            let _ = m.tx.send(Cmd::Abort);
        }
        for m in &modules {
            m.kill_now();
        }
    }
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").field("modules", &self.list().len()).finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor with its own [`Spawner`] thread; starts the output writer task.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or if the spawner thread cannot be started (the OS refused
    /// a thread); use [`Supervisor::with_spawner`] to handle that.
    pub fn new(config: SupervisorConfig, output: OutputSink) -> Supervisor {
        let spawner = Spawner::new().expect("starting the supervisor's spawner thread");
        Supervisor::with_spawner(config, output, spawner)
    }

    /// A supervisor using `spawner` (keep one for the life of the process: children die
    /// with its thread). Must be called inside a tokio runtime.
    pub fn with_spawner(config: SupervisorConfig, output: OutputSink, spawner: Spawner) -> Supervisor {
        let output = Output::start(output, config.output_queue_lines);
        let ctx = Arc::new(Ctx::new(config, output, spawner));
        tokio::spawn(track_descendants(Arc::downgrade(&ctx)));
        tokio::spawn(sample_cpu(Arc::downgrade(&ctx)));
        Supervisor { inner: Arc::new(Inner { ctx }) }
    }

    fn ctx(&self) -> &Arc<Ctx> {
        &self.inner.ctx
    }

    /// Writes the state file now (no module yet: this supervisor's tag and boot) and waits
    /// up to `within` for it to be on disk. `false` when it is not: the writer has said why
    /// and keeps retrying (a full or read-only home), and the supervisor runs from memory.
    pub async fn claim_state_file(&self, within: std::time::Duration) -> bool {
        self.ctx().persist();
        match &self.ctx().state {
            Some(w) => w.try_flush(within).await,
            None => true,
        }
    }

    /// Starts a module, or returns its state unchanged if it is running, starting, or
    /// waiting out a crash delay (the pending respawn stays the only one, R1). Returns
    /// after the readiness gate (up to `ready_timeout`). After [`shutdown`](Self::shutdown)
    /// nothing is started.
    pub async fn start(&self, req: SpawnRequest) -> ModuleState {
        if self.ctx().closing.load(Ordering::SeqCst) {
            return self.get(&req.short).unwrap_or_else(|| stopped_state(&req.short));
        }
        let m = self.ctx().get_or_create(&req.short);
        let (reply, rx) = oneshot::channel();
        if m.tx.send(Cmd::Start { req, reply }).is_err() {
            return m.snapshot();
        }
        rx.await.unwrap_or_else(|_| m.snapshot())
    }

    /// Stops a module (SIGTERM, SIGKILL after `kill_timeout`, group reaped, output drained).
    /// `None` if it is not supervised.
    pub async fn stop(&self, short: &str) -> Option<ModuleState> {
        let m = self.ctx().find(short)?;
        let (reply, rx) = oneshot::channel();
        if m.tx.send(Cmd::Stop { reply }).is_err() {
            return Some(m.snapshot());
        }
        Some(rx.await.map_or_else(|_| m.snapshot(), |s| s.state))
    }

    /// Stops the module's child (if any) and starts it again with `next` (or the stored
    /// request). The crash budget resets; the log buffer and the `list()` position stay.
    /// `Ok(None)` if it is not supervised.
    pub async fn restart(
        &self,
        short: &str,
        next: Option<SpawnRequest>,
    ) -> Result<Option<ModuleState>, SupervisorError> {
        if let Some(n) = &next
            && n.short != short
        {
            return Err(SupervisorError::ShortMismatch { short: short.to_owned(), next: n.short.clone() });
        }
        let Some(m) = self.ctx().find(short) else { return Ok(None) };
        let (reply, rx) = oneshot::channel();
        if m.tx.send(Cmd::Restart { next, reply }).is_err() {
            return Ok(Some(m.snapshot()));
        }
        Ok(Some(rx.await.unwrap_or_else(|_| m.snapshot())))
    }

    /// Stops a module and forgets it: its followers end, `get` returns `None`.
    pub async fn remove(&self, short: &str) -> Option<ModuleState> {
        let m = self.ctx().find(short)?;
        let (reply, rx) = oneshot::channel();
        let state = match m.tx.send(Cmd::Remove { reply }) {
            Ok(()) => rx.await.map_or_else(|_| m.snapshot(), |s| s.state),
            Err(_) => m.snapshot(),
        };
        self.ctx().modules.lock().unwrap_or_else(|p| p.into_inner()).retain(|x| !Arc::ptr_eq(x, &m));
        Some(state)
    }

    /// The module's current state, without waiting on its actor.
    pub fn get(&self, short: &str) -> Option<ModuleState> {
        self.ctx().find(short).map(|m| m.snapshot())
    }

    /// Every module's state, in the order they were first started.
    pub fn list(&self) -> Vec<ModuleState> {
        self.ctx().modules().iter().map(|m| m.snapshot()).collect()
    }

    /// [`list`](Self::list) with each running module's [`Resources`] measured now (one
    /// process-table scan for all; on the blocking pool).
    pub async fn list_measured(&self) -> Vec<ModuleState> {
        let mut list = self.list();
        let ctx = Arc::clone(self.ctx());
        let measured =
            tokio::task::spawn_blocking(move || ctx.sample(&ctx.facts, None)).await.unwrap_or_default();
        for m in &mut list {
            m.resources = measured.get(&m.short).cloned().filter(|_| m.pid.is_some());
        }
        list
    }

    /// [`get`](Self::get) with the module's [`Resources`] measured now.
    pub async fn get_measured(&self, short: &str) -> Option<ModuleState> {
        let mut state = self.get(short)?;
        if state.pid.is_some() {
            let ctx = Arc::clone(self.ctx());
            let owned = short.to_owned();
            let mut measured = tokio::task::spawn_blocking(move || ctx.sample(&ctx.facts, Some(&owned)))
                .await
                .unwrap_or_default();
            state.resources = measured.remove(short);
        }
        Some(state)
    }

    /// The module's buffered log lines from `since` (a `seq`; `None`: all kept).
    pub fn logs(&self, short: &str, since: Option<u64>) -> Option<LogSnapshot> {
        self.ctx().find(short).map(|m| m.ring.snapshot(since))
    }

    /// Follows the module's log from `since` (`None`: the oldest kept line). Survives crash
    /// respawns and restarts; ends when the module is removed or the supervisor shuts down.
    pub fn follow(&self, short: &str, since: Option<u64>) -> Option<LogFollower> {
        self.ctx().find(short).map(|m| m.ring.follow(since))
    }

    /// Stops every module in parallel: SIGTERM, and SIGKILL to a group still alive after
    /// `deadline` (the grace, whatever its value: it replaces the kill timeout), then
    /// SIGKILLs every group that is left (R8). Later `start`s do nothing. Log followers end.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.ctx().closing.store(true, Ordering::SeqCst);
        let modules = self.ctx().modules();
        // Who left each module's group, recorded while the leaders live (the actors skip
        // their own walk once `closing` is set).
        let ctx = Arc::clone(self.ctx());
        let _ = tokio::task::spawn_blocking(move || ctx.track_descendants()).await;
        // The actors escalate at `deadline` themselves; this outer bound only catches an
        // actor that could not (a child stuck in uninterruptible sleep).
        let until = tokio::time::Instant::now() + deadline + parachute_process::KILL_WAIT;
        // Every group gets its SIGTERM now, in one pass, rather than as each actor gets to
        // run (50 actors on two workers spread the signals over ~10 ms, and the early
        // leaders' exits competed with the later signals). Each actor then waits, escalates
        // and drains as before, without signalling again (a second SIGTERM means "now" to
        // some programs).
        let termed: Vec<Option<u32>> = modules
            .iter()
            .map(|m| m.live().filter(|l| l.handle.signal_group(parachute_process::Signal::Term).is_ok()))
            .map(|l| l.map(|l| l.handle.pid()))
            .collect();
        let mut set = tokio::task::JoinSet::new();
        let mut pending: HashSet<String> = HashSet::new();
        for (m, termed) in modules.iter().zip(termed) {
            let (reply, rx) = oneshot::channel();
            if m.tx.send(Cmd::Shutdown { grace: deadline, termed, reply }).is_ok() {
                pending.insert(m.short.clone());
                let short = m.short.clone();
                set.spawn(async move { (short, rx.await.map(|s| s.escalated).unwrap_or(false)) });
            }
        }
        let mut escalated: HashMap<String, bool> = HashMap::new();
        while let Ok(Some(done)) = tokio::time::timeout_at(until, set.join_next()).await {
            if let Ok((short, esc)) = done {
                pending.remove(&short);
                escalated.insert(short, esc);
            }
        }
        if !pending.is_empty() {
            self.kill_all_now();
            let grace = tokio::time::Instant::now() + parachute_process::KILL_WAIT;
            while let Ok(Some(_)) = tokio::time::timeout_at(grace, set.join_next()).await {}
        }
        // Orphans that came back to us (a daemonizing wrapper's server whose module is now
        // stopped) go too: a clean shutdown leaves nothing of any module behind.
        let ctx = Arc::clone(self.ctx());
        let _ = tokio::task::spawn_blocking(move || ctx.track_descendants()).await;
        let orphans = std::mem::take(&mut *registry::lock(&self.ctx().orphans));
        let (stopped, killed) = statefile::stop_all(&orphans, deadline.min(ORPHAN_GRACE)).await;
        if stopped > 0 {
            self.ctx().output.line(bytes::Bytes::from(format!(
                "[supervisor] stopped {stopped} orphaned process(es) of modules{}.\n",
                if killed.is_empty() { String::new() } else { format!(" ({} needed SIGKILL)", killed.len()) }
            )));
        }
        self.ctx().persist();
        if let Some(state) = &self.ctx().state
            && !state.flush(Duration::from_secs(2)).await
        {
            tracing::warn!("the supervisor state file could not be brought up to date before exit");
        }
        for m in &modules {
            m.ring.close();
        }
        self.ctx().output.flush(Duration::from_secs(1)).await;
        let killed: Vec<String> = modules
            .iter()
            .map(|m| &m.short)
            .filter(|s| pending.contains(*s) || escalated.get(*s).copied().unwrap_or(false))
            .cloned()
            .collect();
        ShutdownReport { clean: killed.is_empty(), killed }
    }

    /// SIGKILLs every live child group at once (a second signal during shutdown). Only
    /// unreaped children are signalled, so this can never hit a recycled pid.
    pub fn kill_all_now(&self) {
        for m in self.ctx().modules() {
            m.kill_now();
        }
    }

    /// Freezes every module for an in-place upgrade (see [`handover`]): each actor, between
    /// two of its events, stops pumping output and answers with its state and pipes. `Err`
    /// (and every module resumed) when the supervisor is shutting down or an actor did not
    /// answer within `within`.
    pub async fn freeze(&self, within: Duration) -> Result<handover::Freeze, String> {
        if self.ctx().closing.load(Ordering::SeqCst) {
            return Err("the hub is shutting down".into());
        }
        let mut freeze = handover::Freeze::default();
        let mut replies = Vec::new();
        for m in self.ctx().modules() {
            let (reply, rx) = oneshot::channel();
            let (thaw, thawed) = oneshot::channel();
            if m.tx.send(Cmd::Freeze { reply, thaw: thawed }).is_err() {
                return Err(format!("{} is not answering", m.short));
            }
            freeze.thaws.push(thaw);
            replies.push((m.short.clone(), rx));
        }
        let until = tokio::time::Instant::now() + within;
        for (short, rx) in replies {
            match tokio::time::timeout_at(until, rx).await {
                Ok(Ok(frozen)) => freeze.modules.push(frozen),
                Ok(Err(_)) => return Err(format!("{short} is stopping")),
                Err(_) => return Err(format!("{short} is busy (a start or stop in progress); try again")),
            }
        }
        Ok(freeze)
    }

    /// Waits (up to `within`) until every line queued for the output has been written.
    pub async fn flush_output(&self, within: Duration) -> bool {
        self.ctx().output.flush(within).await
    }

    /// Supervises a module handed over by the image this process replaced. `false` if a
    /// module of that name is supervised already (nothing is taken over then: the caller
    /// still owns nothing, the child and its pipes were moved in and are dropped, which
    /// stops that child).
    pub fn adopt(&self, m: handover::AdoptedModule) -> bool {
        let adopted = self.ctx().adopt(m);
        self.ctx().persist();
        adopted
    }

    /// The spawner thread children of this supervisor are started from (keep using it for
    /// anything else this process starts or execs: see [`Spawner::exec`]).
    pub fn spawner(&self) -> &Spawner {
        &self.ctx().spawner
    }

    /// Pids of the live children (each leads its own group), for a PID-1/subreaper zombie
    /// reaper that must not steal their exit status.
    pub fn tracked_pids(&self) -> HashSet<u32> {
        self.ctx().live_leaders().into_iter().collect()
    }
}

/// How long orphans get after SIGTERM at shutdown (at most the stop timeout).
const ORPHAN_GRACE: Duration = Duration::from_secs(3);

/// How often descendants that left their module's group, and orphans that came back, are
/// looked for (a daemonizing wrapper's intermediate process lives only milliseconds, so the
/// subreaper's orphan list catches what this misses).
const TRACK_EVERY: Duration = Duration::from_secs(1);

/// The longest pause between two walks of a fleet where nothing changes. A walk reads the
/// children of every thread of every module's process: with 50 idle modules about a
/// thousand system calls, which every second were most of the hub's idle CPU. While walks
/// find nothing new and no module was (re)spawned, the pause doubles up to this; any change
/// brings it back to [`TRACK_EVERY`]. What a longer pause can miss is an escapee whose whole
/// parent chain dies within it; with the hub a subreaper, such an orphan comes back to it
/// and is found by its tag (`tagged_orphans`).
const TRACK_MAX: Duration = Duration::from_secs(8);

async fn track_descendants(ctx: std::sync::Weak<Ctx>) {
    let mut pause = TRACK_EVERY;
    let mut last_leaders: Vec<u32> = Vec::new();
    loop {
        tokio::time::sleep(pause).await;
        let Some(ctx) = ctx.upgrade() else { return };
        if ctx.closing.load(Ordering::SeqCst) {
            return;
        }
        let leaders = ctx.live_leaders();
        let changed = tokio::task::spawn_blocking(move || ctx.track_descendants()).await.unwrap_or(true);
        pause = if changed || leaders != last_leaders { TRACK_EVERY } else { (pause * 2).min(TRACK_MAX) };
        last_leaders = leaders;
    }
}

/// Samples every module's tree now and then, so a one-off `status` has a CPU baseline to
/// compute a percentage over (see `resources`). Skipped while no module runs.
async fn sample_cpu(ctx: std::sync::Weak<Ctx>) {
    let mut every = tokio::time::interval(resources::SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(ctx) = ctx.upgrade() else { return };
        if ctx.closing.load(Ordering::SeqCst) {
            return;
        }
        if ctx.live_leaders().is_empty() {
            continue;
        }
        let _ = tokio::task::spawn_blocking(move || ctx.record_cpu(&ctx.facts)).await;
    }
}

fn stopped_state(short: &str) -> ModuleState {
    ModuleState::new(short, ModuleStatus::Stopped)
}
