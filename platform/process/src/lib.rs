//! `parachute-process`: start children in their own process group, signal only what is
//! still ours, reap the whole group, and read `/proc`. Mechanism only: no restart, backoff,
//! readiness or attribution policy (that is the supervisor's).
//!
//! # Guarantees
//!
//! - **Never signal a reaped pid.** A [`GroupChild`] signals its leader through a pidfd and
//!   its group with `killpg` only while the leader is unreaped; after [`GroupChild::reap`]
//!   every [`ChildHandle`] gets [`SignalError::Reaped`]. Nothing signals a bare stored number.
//!   Processes that are not our children are signalled by [`ProcessIdentity`] (pid + start
//!   time) through [`signal_identity`], which pins the process with a pidfd before checking.
//! - **The group is gone before the exit is reported.** [`GroupChild::exited`] observes the
//!   leader's exit without reaping it, so its pid and pgid stay reserved;
//!   [`GroupChild::reap`] then SIGTERMs the rest of the group, waits a grace period, SIGKILLs
//!   what is left, and only then reaps the leader and returns its [`ExitInfo`]. A backgrounded
//!   grandchild holding the module's port does not outlive a crash.
//! - **Children die with us (Linux; elsewhere see Platforms).** Every child gets `PR_SET_PDEATHSIG(SIGKILL)`. That
//!   fires when the *forking thread* exits, so all forks happen on one long-lived thread owned
//!   by the [`Spawner`]: keep one `Spawner` for the life of the process.
//! - **No zombies.** Dropping an unreaped [`GroupChild`] SIGKILLs its group and reaps it on a
//!   background thread. As a subreaper or PID 1, [`reap_untracked_zombies`] reaps adopted
//!   orphans by pid, never `waitpid(-1)`, and never a tracked leader.
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use parachute_process::{Signal, SpawnSpec, Spawner};
//!
//! let spawner = Spawner::new()?; // once, at startup
//! let spec = SpawnSpec::new("my-module").arg("--serve").env("PATH", "/usr/bin:/bin").cwd("/srv/m");
//! let spawned = spawner.spawn(spec).await?; // typed SpawnError: NotFound, CwdMissing, ...
//! let child = spawned.child;
//! // ... pump spawned.stdout / spawned.stderr ...
//! child.signal_group(Signal::Term)?; // to stop it; or just wait for a crash
//! tokio::time::timeout(Duration::from_secs(5), child.exited()).await.ok();
//! child.signal_group(Signal::Kill).ok();
//! let exit = child.reap(Duration::from_secs(2)).await;
//! println!("module {exit}");
//! # Ok(()) }
//! ```
//!
//! # Platforms
//!
//! Linux (kernel ≥ 5.3 for pidfds; older kernels fall back to a waiter thread) and macOS.
//! Process facts (identity, ancestry, command line, working directory, environment, who
//! listens on a port) sit behind one trait, [`facts::ProcessFacts`], with a Linux (`/proc`,
//! `sock_diag`) and a macOS (libproc, `sysctl`) implementation and one conformance suite;
//! a fact that cannot be established is [`facts::Unavailable`], never "absent". Without
//! pidfds (macOS) [`signal_identity`] checks the identity right before signalling by number,
//! and nothing kills children when the supervisor dies (no `PR_SET_PDEATHSIG`): a restarted
//! supervisor finds them by their recorded identities instead. Other Unix builds compile
//! with [`facts::NoFacts`]: every fact unknown, nothing signalled by identity.

mod child;
pub mod facts;
mod foreign;
mod peer;
pub mod procfs;
mod shared;
#[cfg(target_os = "linux")]
mod sockdiag;
mod spawn;
mod sys;
mod zombies;

pub use child::{ChildHandle, GroupChild, KILL_WAIT, Reaped};
pub use facts::{Fact, Facts, NoFacts, ProcessFacts, Unavailable};
pub use foreign::{Signalled, signal_identity};
pub use peer::{PeerOwner, tcp_peer_owner};
pub use procfs::{CpuTime, HeldPort, Listener, Memory, ProcessIdentity};
pub use shared::SharedScan;
pub use spawn::{
    Resolve, SpawnError, SpawnSpec, Spawned, Spawner, SpawnerLoop, inherit_across_exec, resolve_program,
};
pub use zombies::{reap_untracked_zombies, set_child_subreaper};

use std::fmt;

/// How a process ended. Both `None` means unknown (the status was collected elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct ExitInfo {
    /// The exit code, if it exited normally.
    pub code: Option<i32>,
    /// The signal number, if a signal killed it.
    pub signal: Option<i32>,
}

impl ExitInfo {
    /// Exited normally with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with code {code}"),
            (None, Some(sig)) => match signal_name(sig) {
                Some(name) => write!(f, "was killed by signal {sig} ({name})"),
                None => write!(f, "was killed by signal {sig}"),
            },
            (None, None) => f.write_str("ended with an unknown status"),
        }
    }
}

/// The signals a supervisor sends. (Our own type, so that no `nix` type is part of the API.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    Hup,
    Int,
    Quit,
    Kill,
    Usr1,
    Usr2,
    Term,
    Cont,
    Stop,
}

impl Signal {
    /// The platform's signal number.
    pub fn as_raw(self) -> i32 {
        match self {
            Signal::Hup => libc::SIGHUP,
            Signal::Int => libc::SIGINT,
            Signal::Quit => libc::SIGQUIT,
            Signal::Kill => libc::SIGKILL,
            Signal::Usr1 => libc::SIGUSR1,
            Signal::Usr2 => libc::SIGUSR2,
            Signal::Term => libc::SIGTERM,
            Signal::Cont => libc::SIGCONT,
            Signal::Stop => libc::SIGSTOP,
        }
    }

    /// `SIGTERM`, `SIGKILL`, ...
    pub fn name(self) -> &'static str {
        signal_name(self.as_raw()).unwrap_or("SIG?")
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `SIGTERM` for 15, ...; `None` for numbers without a name (realtime signals).
pub fn signal_name(raw: i32) -> Option<&'static str> {
    nix::sys::signal::Signal::try_from(raw).ok().map(|s| s.as_str())
}

/// Why a signal was not delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    #[error(
        "process {pid} was not signalled: it has already been reaped, so its pid may belong to \
         another process now"
    )]
    Reaped { pid: u32 },
    #[error("could not send {signal} to process{} {pid}: {source}", if *group { " group" } else { "" })]
    Os { pid: u32, group: bool, signal: Signal, source: std::io::Error },
    #[error("process {pid} was not signalled: its identity could not be verified: {source}")]
    Unverifiable { pid: u32, source: crate::facts::Unavailable },
}

/// The supervisor moves these across tasks and awaits them inside `tokio::spawn`.
#[cfg(test)]
mod send_sync {
    fn send_sync<T: Send + Sync>(_: &T) {}

    #[allow(dead_code, reason = "compile-time check only")]
    fn futures_are_send(child: crate::GroupChild, spawner: crate::Spawner, spec: crate::SpawnSpec) {
        send_sync(&child);
        send_sync(&child.handle());
        send_sync(&spawner);
        let handle = child.handle();
        fn send<T: Send>(_: T) {}
        send(handle.exited());
        send(spawner.spawn(spec));
        send(child.reap(std::time::Duration::ZERO));
    }
}
