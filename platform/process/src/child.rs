//! [`GroupChild`]: the owner of one spawned child and its process group, and [`ChildHandle`],
//! a cloneable view that can watch and signal it.
//!
//! The shape follows one rule: **a pid is only signalled while we still hold it**. A child we
//! have not reaped keeps its pid (and, as group leader, its pgid) reserved even after it
//! exits, so:
//! - exit is observed *without* reaping (a pidfd polls readable on exit; elsewhere a thread
//!   blocks in `waitid(WEXITED | WNOWAIT)`);
//! - the group is drained (SIGTERM, grace, SIGKILL) while the leader is an unreaped zombie;
//! - only then is the leader reaped, under a write lock, and from that moment every signal
//!   through any handle is refused with [`SignalError::Reaped`]. Signals take the read lock,
//!   so a signal and the reap can never interleave.
//!
//! Unreaped leaders are also listed in a process-wide registry, which
//! [`crate::reap_untracked_zombies`] consults so that it never steals a leader's exit status.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::Duration;

#[cfg(target_os = "linux")]
use std::os::fd::{AsFd, OwnedFd};
#[cfg(target_os = "linux")]
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::procfs::ProcessIdentity;
use crate::{ExitInfo, Signal, SignalError, sys};

/// How long [`GroupChild::reap`] waits for group members to vanish after SIGKILL before it
/// reaps the leader anyway (a process in uninterruptible sleep can outlive SIGKILL for a while).
pub const KILL_WAIT: Duration = Duration::from_secs(2);

static LEADERS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// The registry of spawned, not yet reaped group leaders (held across each fork).
pub(crate) fn leaders() -> MutexGuard<'static, BTreeSet<u32>> {
    LEADERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The result of [`GroupChild::reap_detailed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// How the leader ended.
    pub exit: ExitInfo,
    /// Group members still alive after the leader exited; each was sent SIGTERM.
    pub terminated: Vec<u32>,
    /// Those still alive after the grace period; each was sent SIGKILL.
    pub killed: Vec<u32>,
}

/// A spawned child that leads its own process group (`pgid == pid`). Owns the right to reap it.
///
/// Dropping it unreaped SIGKILLs the whole group and reaps the leader on a background thread:
/// a child nobody tracks any more must not keep a port, nor stay a zombie.
#[derive(Debug)]
pub struct GroupChild {
    handle: ChildHandle,
}

/// A cloneable handle to a [`GroupChild`]: wait for its exit and signal it from other tasks.
/// It cannot reap; once the owner has reaped, every signal is refused.
#[derive(Debug, Clone)]
pub struct ChildHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pid: u32,
    /// `true` once the leader's exit status has been collected. Read-locked while signalling.
    reaped: RwLock<bool>,
    exit: ExitWatch,
    /// When this process first saw the leader's exit: a scan of the process table that
    /// started later sees every group member that outlived the leader.
    exited_at: OnceLock<std::time::Instant>,
}

#[derive(Debug)]
enum ExitWatch {
    #[cfg(target_os = "linux")]
    Pidfd(AsyncFd<OwnedFd>),
    /// Set to `true` by a thread blocked in `waitid(WEXITED | WNOWAIT)`.
    Thread(watch::Receiver<bool>),
}

impl GroupChild {
    /// Wrap a freshly forked child (registered in [`leaders`]). On failure the child is killed
    /// and reaped in the background.
    #[cfg(target_os = "linux")]
    pub(crate) fn from_forked(pid: u32, pidfd: Option<OwnedFd>) -> std::io::Result<Self> {
        let exit = match pidfd {
            Some(fd) => watch_pidfd(fd).map(ExitWatch::Pidfd),
            None => thread_watch(pid).map(ExitWatch::Thread),
        };
        Self::with_watch(pid, exit)
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) fn from_forked(pid: u32) -> std::io::Result<Self> {
        Self::with_watch(pid, thread_watch(pid).map(ExitWatch::Thread))
    }

    fn with_watch(pid: u32, exit: std::io::Result<ExitWatch>) -> std::io::Result<Self> {
        match exit {
            Ok(exit) => Ok(Self {
                handle: ChildHandle {
                    inner: Arc::new(Inner {
                        pid,
                        reaped: RwLock::new(false),
                        exit,
                        exited_at: OnceLock::new(),
                    }),
                },
            }),
            Err(e) => {
                abandon(pid);
                Err(e)
            }
        }
    }

    /// A cloneable handle for other tasks.
    pub fn handle(&self) -> ChildHandle {
        self.handle.clone()
    }

    /// The leader's pid, which is also the process group id.
    pub fn pid(&self) -> u32 {
        self.handle.pid()
    }

    /// See [`ChildHandle::identity`].
    pub fn identity(&self) -> Option<ProcessIdentity> {
        self.handle.identity()
    }

    /// See [`ChildHandle::exited`].
    pub async fn exited(&self) {
        self.handle.exited().await;
    }

    /// See [`ChildHandle::has_exited`].
    pub fn has_exited(&self) -> bool {
        self.handle.has_exited()
    }

    /// See [`ChildHandle::signal`].
    pub fn signal(&self, sig: Signal) -> Result<(), SignalError> {
        self.handle.signal(sig)
    }

    /// See [`ChildHandle::signal_group`].
    pub fn signal_group(&self, sig: Signal) -> Result<(), SignalError> {
        self.handle.signal_group(sig)
    }

    /// See [`ChildHandle::group_members`].
    pub fn group_members(&self) -> Vec<u32> {
        self.handle.group_members()
    }

    /// Wait for the leader to exit, drain the rest of its group (SIGTERM, up to `grace`,
    /// SIGKILL, up to [`KILL_WAIT`]), then reap the leader and return how it ended. The group
    /// is therefore gone (or unkillable) before the exit is reported. It does not signal the
    /// leader: stop it first (`signal_group`) if it should not run to completion.
    pub async fn reap(self, grace: Duration) -> ExitInfo {
        self.reap_detailed(grace).await.exit
    }

    /// [`reap`](Self::reap), also reporting which group members had to be terminated/killed.
    pub async fn reap_detailed(self, grace: Duration) -> Reaped {
        self.exited().await;
        let (terminated, killed) = drain_group(&self.handle, grace).await;
        let exit = self.handle.inner.reap_leader().await;
        Reaped { exit, terminated, killed }
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        let inner = &self.handle.inner;
        if inner.is_reaped() {
            return;
        }
        // Refused only if already reaped; an exited leader still pins the pgid, so this is safe.
        let _ = inner.send(Signal::Kill, true);
        let inner = Arc::clone(inner);
        let _ = std::thread::Builder::new().name("parachute-reap".into()).spawn(move || {
            let _ = sys::wait_exit_nowait(inner.pid);
            inner.reap_blocking();
        });
    }
}

impl ChildHandle {
    /// The leader's pid, which is also the process group id.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// The leader's pid-reuse-safe identity, to persist so that a later supervisor can prove
    /// a leftover process is this one (`None` once it has exited, or without `/proc`).
    pub fn identity(&self) -> Option<ProcessIdentity> {
        if self.inner.is_reaped() { None } else { crate::procfs::identity(self.inner.pid) }
    }

    /// Whether the owner has reaped the leader (after which nothing can be signalled).
    pub fn is_reaped(&self) -> bool {
        self.inner.is_reaped()
    }

    /// Resolves once the leader has exited. It does NOT reap: the pid and pgid stay reserved
    /// (a zombie) until [`GroupChild::reap`], so the group can still be signalled safely.
    /// Cancel-safe; resolves immediately on every later call.
    pub async fn exited(&self) {
        match &self.inner.exit {
            #[cfg(target_os = "linux")]
            ExitWatch::Pidfd(fd) => {
                // The readiness is never cleared, so later calls return at once. An error means
                // the runtime is shutting down: nothing left to wait for.
                match fd.readable().await {
                    Ok(_guard) => {}
                    Err(_) => std::future::pending().await,
                }
            }
            ExitWatch::Thread(rx) => {
                let mut rx = rx.clone();
                // The sender is only dropped after sending `true`.
                let _ = rx.wait_for(|exited| *exited).await;
            }
        }
        self.inner.exited_at.get_or_init(std::time::Instant::now);
    }

    /// Whether the leader has exited (non-blocking).
    pub fn has_exited(&self) -> bool {
        if self.inner.is_reaped() {
            return true;
        }
        let exited = match &self.inner.exit {
            #[cfg(target_os = "linux")]
            ExitWatch::Pidfd(fd) => {
                use std::os::fd::AsRawFd;
                let mut pfd = libc::pollfd { fd: fd.get_ref().as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd, zero timeout.
                let n = unsafe { libc::poll(&mut pfd, 1, 0) };
                n == 1 && pfd.revents & libc::POLLIN != 0
            }
            ExitWatch::Thread(rx) => *rx.borrow(),
        };
        if exited {
            self.inner.exited_at.get_or_init(std::time::Instant::now);
        }
        exited
    }

    /// Send `sig` to the leader only (via its pidfd on Linux). Refused once reaped.
    /// Signalling an exited-but-unreaped leader succeeds and does nothing.
    pub fn signal(&self, sig: Signal) -> Result<(), SignalError> {
        self.inner.send(sig, false)
    }

    /// Send `sig` to the whole process group (`killpg`). Refused once the leader is reaped,
    /// because only the unreaped leader keeps the pgid from being reused. If the group is
    /// empty (the leader moved itself to another group), the leader alone is signalled.
    pub fn signal_group(&self, sig: Signal) -> Result<(), SignalError> {
        self.inner.send(sig, true)
    }

    /// Live processes in the child's group other than the leader (a `/proc` scan; empty on
    /// platforms without `/proc`).
    pub fn group_members(&self) -> Vec<u32> {
        let pid = self.inner.pid;
        crate::procfs::group_members(pid).into_iter().filter(|&p| p != pid).collect()
    }

    /// [`group_members`](Self::group_members) as of a moment after the leader's exit was
    /// first seen (or after this call, while it runs). The `/proc` scan is shared: every
    /// caller waiting while one runs is answered by the next one, which covers all groups
    /// (when 50 leaders exit together at shutdown, a handful of scans instead of 50), and a
    /// caller whose leader exited before a scan started is answered by that scan.
    pub async fn group_members_after_exit(&self) -> Vec<u32> {
        let since = self.inner.exited_at.get().copied().unwrap_or_else(std::time::Instant::now);
        self.group_members_since(since).await
    }

    /// Group members (leader excluded) from a shared scan that started at `since` or later.
    async fn group_members_since(&self, since: std::time::Instant) -> Vec<u32> {
        let pid = self.inner.pid;
        GROUPS.since(since).await.get(&pid).into_iter().flatten().copied().filter(|&p| p != pid).collect()
    }
}

/// Every process group's live members, one shared scan for all groups (see [`SharedScan`]).
static GROUPS: crate::SharedScan<std::collections::HashMap<u32, Vec<u32>>> =
    crate::SharedScan::new(crate::procfs::groups);

impl Inner {
    fn is_reaped(&self) -> bool {
        *self.reaped.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, sig: Signal, group: bool) -> Result<(), SignalError> {
        let reaped = self.reaped.read().unwrap_or_else(PoisonError::into_inner);
        if *reaped {
            return Err(SignalError::Reaped { pid: self.pid });
        }
        let raw = sig.as_raw();
        let os = |source| SignalError::Os { pid: self.pid, group, signal: sig, source };
        if group {
            match sys::killpg(self.pid, raw) {
                // Nobody has our pgid any more: fall through to the leader itself.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                other => return other.map_err(os),
            }
        }
        let result = match &self.exit {
            #[cfg(target_os = "linux")]
            ExitWatch::Pidfd(fd) => sys::pidfd_send_signal(fd.get_ref().as_fd(), raw),
            // The pid is pinned: we hold the read lock and have not reaped it.
            ExitWatch::Thread(_) => sys::kill(self.pid, raw),
        };
        match result {
            // A zombie leader may answer ESRCH on some systems: it has exited, nothing to do.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other.map_err(os),
        }
    }

    /// Collect the exit status once, marking the handle reaped. `None` while still running.
    fn try_reap(&self) -> Option<ExitInfo> {
        let mut reaped = self.reaped.write().unwrap_or_else(PoisonError::into_inner);
        if *reaped {
            return Some(ExitInfo::default());
        }
        let result = match &self.exit {
            #[cfg(target_os = "linux")]
            ExitWatch::Pidfd(fd) => sys::reap_pidfd(fd.get_ref().as_fd()),
            ExitWatch::Thread(_) => sys::reap_pid(self.pid),
        };
        let info = match result {
            Ok(None) => return None,
            Ok(Some(info)) => info,
            // ECHILD: something else in this process reaped it; the status is lost.
            Err(_) => ExitInfo::default(),
        };
        *reaped = true;
        leaders().remove(&self.pid);
        Some(info)
    }

    async fn reap_leader(&self) -> ExitInfo {
        loop {
            if let Some(info) = self.try_reap() {
                return info;
            }
            // Exit was observed, so the status is there; retry defensively, never spin hot.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn reap_blocking(&self) {
        for _ in 0..1000 {
            if self.try_reap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Register a pidfd with the current runtime's reactor (readable = the process has exited).
#[cfg(target_os = "linux")]
fn watch_pidfd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd stays open and names the same file description until the AsyncFd
    // that owns it is dropped, and its as_raw_fd never changes.
    Ok(unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)? })
}

/// Start a thread that blocks until `pid` exits (without reaping) and then flips the watch.
fn thread_watch(pid: u32) -> std::io::Result<watch::Receiver<bool>> {
    let (tx, rx) = watch::channel(false);
    std::thread::Builder::new().name("parachute-exit-watch".into()).spawn(move || {
        let _ = sys::wait_exit_nowait(pid);
        let _ = tx.send(true);
    })?;
    Ok(rx)
}

/// Kill and reap a registered child that no [`GroupChild`] owns.
pub(crate) fn abandon(pid: u32) {
    let _ = sys::killpg(pid, libc::SIGKILL);
    let reap = move || {
        let _ = sys::wait_exit_nowait(pid);
        let _ = sys::reap_pid(pid);
        leaders().remove(&pid);
    };
    if std::thread::Builder::new().name("parachute-reap".into()).spawn(reap).is_err() {
        // No thread to spare: the child was SIGKILLed; wait for it here (bounded by the kill).
        let _ = sys::wait_exit_nowait(pid);
        let _ = sys::reap_pid(pid);
        leaders().remove(&pid);
    }
}

/// SIGTERM the leader's surviving group members, give them `grace`, SIGKILL the rest.
/// Returns (terminated, killed) pids.
#[cfg(target_os = "linux")]
async fn drain_group(handle: &ChildHandle, grace: Duration) -> (Vec<u32>, Vec<u32>) {
    let terminated = handle.group_members_after_exit().await;
    if terminated.is_empty() {
        return (terminated, Vec::new());
    }
    let _ = handle.signal_group(Signal::Term);
    // A stopped member would never act on SIGTERM.
    let _ = handle.signal_group(Signal::Cont);
    if wait_members_gone(handle, Instant::now() + grace).await {
        return (terminated, Vec::new());
    }
    let killed = handle.group_members_since(std::time::Instant::now()).await;
    let _ = handle.signal_group(Signal::Kill);
    wait_members_gone(handle, Instant::now() + KILL_WAIT).await;
    (terminated, killed)
}

/// Wait, event-driven, until the group has no live member besides the leader: a pidfd per
/// member, then a rescan (members may have forked meanwhile). `false` at the deadline.
#[cfg(target_os = "linux")]
async fn wait_members_gone(handle: &ChildHandle, deadline: Instant) -> bool {
    loop {
        let members = handle.group_members_since(std::time::Instant::now()).await;
        if members.is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        let fds: Vec<_> = members
            .iter()
            .filter_map(|&p| sys::pidfd_open(p).ok())
            .filter_map(|fd| watch_pidfd(fd).ok())
            .collect();
        if fds.len() < members.len() {
            // Some member vanished while we looked (or fds ran out): rescan after a short pause.
            tokio::time::sleep_until(deadline.min(Instant::now() + Duration::from_millis(10))).await;
            continue;
        }
        let _ = tokio::time::timeout_at(deadline, async {
            for fd in &fds {
                let _ = fd.readable().await;
            }
        })
        .await;
    }
}

/// Without `/proc` the members cannot be listed: signal the group and poll `killpg(pgid, 0)`
/// until nothing answers. Best effort: where an unreaped leader still counts as a member this
/// waits out `grace` before the SIGKILL.
#[cfg(not(target_os = "linux"))]
async fn drain_group(handle: &ChildHandle, grace: Duration) -> (Vec<u32>, Vec<u32>) {
    let pgid = handle.pid();
    let empty = || sys::killpg(pgid, 0).is_err();
    if empty() {
        return (Vec::new(), Vec::new());
    }
    let _ = handle.signal_group(Signal::Term);
    let _ = handle.signal_group(Signal::Cont);
    for deadline in [Instant::now() + grace, Instant::now() + grace + KILL_WAIT] {
        while !empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if empty() {
            break;
        }
        let _ = handle.signal_group(Signal::Kill);
    }
    (Vec::new(), Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The waiter-thread backend (used where pidfds are unavailable) observes exit without
    /// reaping, signals by pid, and reaps with waitpid.
    #[tokio::test]
    async fn thread_backend_works_like_pidfd() {
        let pid = {
            // Registered under the lock, as the spawner does.
            let mut registry = leaders();
            #[expect(clippy::zombie_processes, reason = "the GroupChild below reaps it")]
            let child = std::process::Command::new("sleep").arg("1000").process_group(0).spawn().unwrap();
            registry.insert(child.id());
            child.id()
        };
        let child = GroupChild::with_watch(pid, thread_watch(pid).map(ExitWatch::Thread)).unwrap();
        let handle = child.handle();
        assert!(!child.has_exited());
        child.signal(Signal::Term).unwrap();
        tokio::time::timeout(Duration::from_secs(10), child.exited()).await.expect("exit observed");
        assert!(child.has_exited());
        assert_eq!(crate::procfs::stat(pid).map(|s| s.state), Some('Z'), "exited but not reaped");
        let exit =
            tokio::time::timeout(Duration::from_secs(10), child.reap(Duration::from_secs(1))).await.unwrap();
        assert_eq!(exit, ExitInfo { code: None, signal: Some(libc::SIGTERM) });
        assert!(matches!(handle.signal(Signal::Kill), Err(SignalError::Reaped { .. })));
        assert!(!leaders().contains(&pid));
    }

    use std::os::unix::process::CommandExt;
}
