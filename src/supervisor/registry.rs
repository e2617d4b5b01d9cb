//! The registry shared by the [`Supervisor`](super::Supervisor) handle and the module
//! actors, and the command protocol between them.
//!
//! The handle finds modules here and talks to their actors over unbounded channels (a
//! send never waits, so `kill_all_now` and `Drop` can use it synchronously). Readers see
//! a module through two things the actor publishes: its [`ModuleState`] snapshot
//! (`watch`) and its live child's [`ChildHandle`] (a mutex-guarded slot), so `get`,
//! `list`, `tracked_pids` and `kill_all_now` never wait on an actor.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use parachute_process::{ChildHandle, ProcessIdentity, Signal, Spawner, procfs};
use tokio::sync::{mpsc, oneshot, watch};

use super::logbuf::LogRing;
use super::output::Output;
use super::state::{ErrorLine, ModuleState};
use super::statefile::{StateDoc, StateEntry, StateWriter};
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
    /// The state file's one writer (when the config names a state file).
    pub state: Option<StateWriter>,
    /// Orphans that came back to the supervisor (child subreaper) that no module's tracking
    /// saw leave its tree: descendants of some module, by identity.
    pub orphans: Mutex<Vec<ProcessIdentity>>,
    /// CPU samples of every module's tree (the baselines of a CPU percentage).
    pub cpu: Mutex<super::resources::CpuHistory>,
    /// The host's process facts (memory, CPU, listening ports of a tree).
    pub facts: parachute_process::Facts,
}

impl Ctx {
    pub fn new(config: SupervisorConfig, output: Output, spawner: Spawner) -> Ctx {
        let state = config.state_file.clone().map(StateWriter::start);
        Ctx {
            config,
            output,
            spawner,
            modules: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            state,
            orphans: Mutex::new(Vec::new()),
            cpu: Mutex::new(super::resources::CpuHistory::default()),
            facts: parachute_process::facts::host(),
        }
    }

    pub fn modules(&self) -> Vec<Arc<Module>> {
        lock(&self.modules).clone()
    }

    pub fn find(&self, short: &str) -> Option<Arc<Module>> {
        lock(&self.modules).iter().find(|m| m.short == short).cloned()
    }

    /// Registers a module handed over by the image this process replaced; `false` (and
    /// nothing registered) if one of that name exists.
    pub fn adopt(self: &Arc<Self>, m: super::handover::AdoptedModule) -> bool {
        let mut modules = lock(&self.modules);
        if modules.iter().any(|x| x.short == m.short) {
            return false;
        }
        modules.push(super::actor::adopt(Arc::clone(self), m));
        true
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

    /// Hands the state file's writer the current view (never waits; see
    /// [`StateWriter`]).
    pub fn persist(&self) {
        let Some(writer) = &self.state else { return };
        let modules: Vec<StateEntry> = self
            .modules()
            .iter()
            .filter_map(|m| {
                let l = m.live()?;
                let pid = l.handle.pid();
                Some(StateEntry {
                    short: m.short.clone(),
                    pid,
                    pgid: pid,
                    start_ticks: l.start_ticks,
                    escaped: lock(&m.escaped).clone(),
                    cgroup: l.cgroup.clone(),
                })
            })
            .collect();
        let mut doc = StateDoc::now(modules, lock(&self.orphans).clone());
        doc.tag.clone_from(&self.config.process_tag);
        writer.submit(doc);
    }

    /// Looks for descendants that left their module's group (a `setsid` or daemonizing
    /// wrapper) and for orphans that came back to the supervisor, records them by identity
    /// (dropping the ones that have exited), and persists when anything changed (and says
    /// so). Blocking: reads `/proc`.
    pub fn track_descendants(&self) -> bool {
        let mut changed = false;
        let mut seen_anywhere: Vec<ProcessIdentity> = Vec::new();
        let modules = self.modules();
        let leaders: Vec<u32> = modules.iter().filter_map(|m| m.live().map(|l| l.handle.pid())).collect();
        for m in &modules {
            let found = m.live().map(|l| escapees_of(l.handle.pid())).unwrap_or_default();
            let mut escaped = lock(&m.escaped);
            let before = escaped.len();
            escaped.retain(procfs::is_same_process);
            changed |= escaped.len() != before;
            for id in found {
                if !escaped.contains(&id) {
                    escaped.push(id);
                    changed = true;
                }
            }
            seen_anywhere.extend(escaped.iter().copied());
        }
        if !self.config.adopt_orphans {
            if changed {
                self.persist();
            }
            return changed;
        }
        let me = std::process::id();
        let strays: Vec<ProcessIdentity> = procfs::children_of(me)
            .into_iter()
            .filter(|p| !leaders.contains(p))
            .filter_map(procfs::identity)
            .filter(|id| !seen_anywhere.contains(id))
            .collect();
        {
            let mut orphans = lock(&self.orphans);
            let before = orphans.clone();
            orphans.retain(procfs::is_same_process);
            for id in strays {
                if !orphans.contains(&id) {
                    orphans.push(id);
                }
            }
            changed |= *orphans != before;
        }
        if changed {
            self.persist();
        }
        changed
    }
}

/// This process's children, one shared read for every module that asks at about the same
/// time (each module asks once its group is drained; at shutdown all of them at once).
static OWN_CHILDREN: parachute_process::SharedScan<Vec<u32>> =
    parachute_process::SharedScan::new(|| procfs::children_of(std::process::id()));

impl Ctx {
    /// Orphans that came back to the supervisor carrying `short`'s tag, and their
    /// descendants, as of now or later. Reads `/proc` on the blocking pool.
    pub async fn tagged_orphans(self: &Arc<Self>, short: &str) -> Vec<ProcessIdentity> {
        let (true, Some(_)) = (self.config.adopt_orphans, self.config.process_tag.as_deref()) else {
            return Vec::new();
        };
        let children = OWN_CHILDREN.since(std::time::Instant::now()).await;
        let leaders = self.live_leaders();
        let others: Vec<u32> = children.iter().copied().filter(|p| !leaders.contains(p)).collect();
        if others.is_empty() {
            return Vec::new();
        }
        let (ctx, short) = (Arc::clone(self), short.to_owned());
        tokio::task::spawn_blocking(move || {
            let tag = ctx.config.process_tag.as_deref().unwrap_or_default();
            let mut out = Vec::new();
            for pid in others {
                if super::statefile::tagged_module(pid, tag).as_deref() != Some(short.as_str()) {
                    continue;
                }
                if let Some(id) = procfs::identity(pid) {
                    out.push(id);
                    out.extend(escapees_of(pid));
                }
            }
            out
        })
        .await
        .unwrap_or_default()
    }
}

/// Descendants of `leader` outside its group (and their descendants), by identity. Bounded
/// walk: a fork bomb cannot keep it busy.
fn escapees_of(leader: u32) -> Vec<ProcessIdentity> {
    const MAX_WALK: usize = 4096;
    let mut out = Vec::new();
    let mut todo = vec![leader];
    let mut walked = 0;
    while let Some(p) = todo.pop() {
        walked += 1;
        if walked > MAX_WALK {
            break;
        }
        for c in procfs::children_of(p) {
            if let Some(st) = procfs::stat(c).filter(|s| !s.is_exited()) {
                if st.pgid != leader {
                    out.push(ProcessIdentity { pid: c, start_ticks: st.start_ticks });
                }
                todo.push(c);
            }
        }
    }
    out
}

/// The live child of a module, as other tasks may see it.
#[derive(Clone)]
pub(crate) struct Live {
    pub handle: ChildHandle,
    pub start_ticks: u64,
    /// Its cgroup at spawn (Linux).
    pub cgroup: Option<String>,
    /// When it was spawned.
    pub since: std::time::Instant,
}

/// One supervised module: the handle's view of its actor.
pub(crate) struct Module {
    pub short: String,
    pub ring: Arc<LogRing>,
    pub state: watch::Receiver<ModuleState>,
    pub tx: mpsc::UnboundedSender<Cmd>,
    pub live: Mutex<Option<Live>>,
    /// Descendants of the current (or last) child seen outside its group, by identity.
    pub escaped: Mutex<Vec<ProcessIdentity>>,
    /// The last line the module wrote to stderr (its stderr pump writes it).
    pub last_error: Arc<Mutex<Option<ErrorLine>>>,
}

impl Module {
    /// The actor's latest snapshot, with the last stderr line (which the output pump keeps,
    /// not the actor, so a chatty module never wakes its actor).
    pub fn snapshot(&self) -> ModuleState {
        let mut s = self.state.borrow().clone();
        s.last_error_line.clone_from(&lock(&self.last_error));
        s
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
        /// The leader whose group the supervisor has already sent SIGTERM (it signals
        /// every group at once, before the actors get to run): not signalled twice.
        termed: Option<u32>,
        reply: oneshot::Sender<Stopped>,
    },
    /// Stop, end the actor and close the log (the entry is being removed).
    Remove {
        reply: oneshot::Sender<Stopped>,
    },
    /// The supervisor handle was dropped: kill at once and end.
    Abort,
    /// An in-place upgrade: stop pumping, answer with the module's state, wait for `thaw`
    /// (see `handover`).
    Freeze {
        reply: oneshot::Sender<super::handover::FrozenModule>,
        thaw: oneshot::Receiver<()>,
    },
}
