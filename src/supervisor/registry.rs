//! The registry shared by the [`Supervisor`](super::Supervisor) handle and the module
//! actors, and the command protocol between them.
//!
//! The handle finds modules here and talks to their actors over unbounded channels (a
//! send never waits, so `kill_all_now` and `Drop` can use it synchronously). Readers see
//! a module through two things the actor publishes: its [`ModuleState`] snapshot
//! (`watch`) and its live child's [`ChildHandle`] (a mutex-guarded slot), so `get`,
//! `list`, `tracked_pids` and `kill_all_now` never wait on an actor.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use parachute_process::{ChildHandle, Signal, Spawner};
use tokio::sync::{mpsc, oneshot, watch};

use super::logbuf::LogRing;
use super::output::Output;
use super::state::ModuleState;
use super::statefile::{self, StateEntry};
use super::{SpawnRequest, SupervisorConfig};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by the handle and every actor.
pub(crate) struct Ctx {
    pub config: SupervisorConfig,
    pub output: Output,
    pub spawner: Spawner,
    /// Insertion order is `list()` order.
    pub modules: Mutex<Vec<Arc<Module>>>,
    /// Set by `shutdown`: no new spawns.
    pub closing: AtomicBool,
    persist_lock: Mutex<()>,
}

impl Ctx {
    pub fn new(config: SupervisorConfig, output: Output, spawner: Spawner) -> Ctx {
        Ctx {
            config,
            output,
            spawner,
            modules: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            persist_lock: Mutex::new(()),
        }
    }

    pub fn modules(&self) -> Vec<Arc<Module>> {
        lock(&self.modules).clone()
    }

    pub fn find(&self, short: &str) -> Option<Arc<Module>> {
        lock(&self.modules).iter().find(|m| m.short == short).cloned()
    }

    /// The module's entry, created (with its actor) if it does not exist yet.
    pub fn get_or_create(self: &Arc<Self>, short: &str) -> Arc<Module> {
        let mut modules = lock(&self.modules);
        if let Some(m) = modules.iter().find(|m| m.short == short) {
            return Arc::clone(m);
        }
        let m = super::actor::spawn(Arc::clone(self), short);
        modules.push(Arc::clone(&m));
        m
    }

    /// Pids of every live child (each leads its own group).
    pub fn live_leaders(&self) -> Vec<u32> {
        self.modules().iter().filter_map(|m| m.live().map(|l| l.handle.pid())).collect()
    }

    /// Rewrites the state file from the live slots (serialized, so the last write wins
    /// with the newest view).
    pub fn write_state(&self, path: &Path) {
        let _g = lock(&self.persist_lock);
        let entries: Vec<StateEntry> = self
            .modules()
            .iter()
            .filter_map(|m| {
                let l = m.live()?;
                let pid = l.handle.pid();
                Some(StateEntry { short: m.short.clone(), pid, pgid: pid, start_ticks: l.start_ticks })
            })
            .collect();
        if let Err(e) = statefile::write(path, &entries) {
            tracing::warn!("{e}");
        }
    }
}

/// The live child of a module, as other tasks may see it.
#[derive(Clone)]
pub(crate) struct Live {
    pub handle: ChildHandle,
    pub start_ticks: u64,
}

/// One supervised module: the handle's view of its actor.
pub(crate) struct Module {
    pub short: String,
    pub ring: Arc<LogRing>,
    pub state: watch::Receiver<ModuleState>,
    pub tx: mpsc::UnboundedSender<Cmd>,
    pub live: Mutex<Option<Live>>,
}

impl Module {
    pub fn snapshot(&self) -> ModuleState {
        self.state.borrow().clone()
    }

    pub fn live(&self) -> Option<Live> {
        lock(&self.live).clone()
    }

    /// Set by the actor only: on spawn, and once the child is reaped.
    pub fn set_live(&self, live: Option<Live>) {
        *lock(&self.live) = live;
    }

    /// SIGKILL the live child's group (refused, harmlessly, once it has been reaped).
    pub fn kill_now(&self) {
        if let Some(l) = self.live() {
            let _ = l.handle.signal_group(Signal::Kill);
        }
    }
}

/// What a stop did.
pub(crate) struct Stopped {
    pub state: ModuleState,
    /// The child ignored SIGTERM and had to be killed.
    pub escalated: bool,
}

pub(crate) enum Cmd {
    Start {
        req: SpawnRequest,
        reply: oneshot::Sender<ModuleState>,
    },
    Stop {
        reply: oneshot::Sender<Stopped>,
    },
    Restart {
        next: Option<SpawnRequest>,
        reply: oneshot::Sender<ModuleState>,
    },
    /// Stop and refuse every later start (supervisor shutdown); `grace` replaces the kill
    /// timeout (the hub's `--stop-timeout`).
    Shutdown {
        grace: std::time::Duration,
        reply: oneshot::Sender<Stopped>,
    },
    /// Stop, end the actor and close the log (the entry is being removed).
    Remove {
        reply: oneshot::Sender<Stopped>,
    },
    /// The supervisor handle was dropped: kill at once and end.
    Abort,
}
