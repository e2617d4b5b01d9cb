//! Process facts behind one trait, with one implementation per platform: Linux reads `/proc`
//! and `NETLINK_SOCK_DIAG` ([`linux`]), macOS asks the kernel through libproc and `sysctl`
//! ([`macos`]), and [`NoFacts`] knows nothing (other systems, and tests that need a host
//! whose facts are unavailable).
//!
//! Every fact is a [`Fact`]: `Ok` is knowledge — including "no such process" (`Ok(None)`)
//! and "nothing listens there" (`Ok(vec![])`) — and `Err(Unavailable)` says the fact could
//! not be established (not permitted, no `/proc`, an unknown platform) and why. Callers that
//! act on a fact (delete a pidfile, signal a process, call a port free) must treat
//! `Unavailable` as "unknown", never as "absent": see `docs/platforms.md`.
//!
//! The plain functions of [`crate::procfs`] are the host's facts with "unknown" folded into
//! `None`/empty, for the callers (readiness polls, diagnostics) that already treat a missing
//! fact conservatively.
//!
//! One conformance suite (`tests/it/facts.rs`) checks [`host`] against real processes and
//! real listening sockets; it has no platform-specific expectation, so the same suite runs
//! against the macOS implementation on a Mac.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::procfs::{
    CpuTime, HeldPort, ListenSocket, Listener, MAX_ANCESTRY, Memory, ProcStat, ProcessIdentity,
};

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "macos")]
pub mod macos;

/// A fact about processes: known (`Ok`), or not establishable here (`Err`).
pub type Fact<T> = Result<T, Unavailable>;

/// A fact that could not be established, and why. Never means "absent".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} could not be established ({source_name}): {reason}")]
pub struct Unavailable {
    /// What was asked: "the command line of pid 42", "the holders of port 1940".
    pub what: String,
    /// Which implementation answered ([`ProcessFacts::source`]).
    pub source_name: &'static str,
    /// Why not: the OS error, "not permitted", "no /proc".
    pub reason: String,
}

impl Unavailable {
    /// An `Unavailable` for `what`, from `source`, because of `reason`.
    pub fn new(source: &'static str, what: impl Into<String>, reason: impl fmt::Display) -> Unavailable {
        Unavailable { what: what.into(), source_name: source, reason: reason.to_string() }
    }
}

/// A shared handle on a facts implementation (what configuration structs hold).
pub type Facts = Arc<dyn ProcessFacts>;

/// The facts of the platform this binary was built for.
pub fn host() -> Facts {
    #[cfg(target_os = "linux")]
    return Arc::new(linux::LinuxFacts);
    #[cfg(target_os = "macos")]
    return Arc::new(macos::MacFacts);
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    return Arc::new(NoFacts::new("this platform has no process-facts implementation"));
}

/// The facts of the host, as a `'static` reference (the plain `procfs` functions use it).
pub(crate) fn host_ref() -> &'static dyn ProcessFacts {
    #[cfg(target_os = "linux")]
    return &linux::LinuxFacts;
    #[cfg(target_os = "macos")]
    return &macos::MacFacts;
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        static NONE: NoFacts = NoFacts { reason: "this platform has no process-facts implementation" };
        &NONE
    }
}

/// What the supervisor and the cutover need to know about processes they did not start, or
/// started in an earlier life: identity (pid + start stamp), ancestry and group, command
/// line, working directory, environment, and who listens on a TCP port.
///
/// `start_ticks` in [`ProcStat`] / [`ProcessIdentity`] is an opaque start stamp: equal for
/// one process every time it is read, different for a later process that reuses the pid, and
/// ordered like the start times, within one boot. Its unit is the platform's (Linux: clock
/// ticks since boot; macOS: microseconds since the epoch). Persisted identities are to be
/// compared only together with [`ProcessFacts::boot_id`].
pub trait ProcessFacts: Send + Sync + fmt::Debug {
    /// A short name for messages: `linux-procfs`, `macos-libproc`, `unavailable`.
    fn source(&self) -> &'static str;

    /// Pid, state, parent, group, session and start stamp. `Ok(None)`: no such process.
    fn stat(&self, pid: u32) -> Fact<Option<ProcStat>>;

    /// The real uid the process runs as. `Ok(None)`: no such process.
    fn uid(&self, pid: u32) -> Fact<Option<u32>>;

    /// The arguments, `argv[0]` first. `Ok(None)`: no such process, or none (a kernel
    /// thread, a zombie).
    fn argv(&self, pid: u32) -> Fact<Option<Vec<String>>>;

    /// The executable's path. `Ok(None)`: no such process, or none.
    fn exe(&self, pid: u32) -> Fact<Option<PathBuf>>;

    /// The current working directory. `Ok(None)`: no such process.
    fn cwd(&self, pid: u32) -> Fact<Option<PathBuf>>;

    /// The values of `keys` in the environment the process was started with, in `keys` order,
    /// absent keys skipped. `Ok(None)`: no such process.
    fn environ_vars(&self, pid: u32, keys: &[&str]) -> Fact<Option<Vec<(String, String)>>>;

    /// When the process started (wall clock). `Ok(None)`: no such process.
    fn start_time(&self, pid: u32) -> Fact<Option<SystemTime>>;

    /// Every pid on the machine (in this pid namespace).
    fn all_pids(&self) -> Fact<Vec<u32>>;

    /// Every listening TCP socket (v4 and v6) on local `port`.
    fn listening_sockets(&self, port: u16) -> Fact<Vec<ListenSocket>>;

    /// The processes among `pids` holding a socket that listens on `port`, one entry per
    /// (process, socket). Pids that no longer exist are skipped; a pid whose descriptors
    /// cannot be read makes the answer `Unavailable` only if a listening socket on the port
    /// is left without a holder.
    fn listeners_among(&self, port: u16, pids: &[u32]) -> Fact<Vec<Listener>>;

    /// An identifier of the current boot: identities persisted under another boot id name
    /// processes that no longer exist, whatever their numbers.
    fn boot_id(&self) -> Fact<String>;

    /// The memory `pid` holds. `Ok(None)`: no such process.
    fn memory(&self, pid: u32) -> Fact<Option<Memory>> {
        Err(Unavailable::new(self.source(), format!("the memory of pid {pid}"), "not implemented here"))
    }

    /// The CPU time `pid` has used. `Ok(None)`: no such process.
    fn cpu_time(&self, pid: u32) -> Fact<Option<CpuTime>> {
        Err(Unavailable::new(self.source(), format!("the CPU time of pid {pid}"), "not implemented here"))
    }

    /// Every listening TCP socket (v4 and v6) held by one of `pids`, whatever its port, one
    /// entry per (process, socket), from the kernel's listen table (not from what anyone
    /// declared). Pids that no longer exist are skipped; a pid whose descriptors cannot be
    /// read makes the answer `Unavailable` (a partial list would pass for a complete one).
    fn listening_ports_of(&self, pids: &[u32]) -> Fact<Vec<HeldPort>> {
        let _ = pids;
        Err(Unavailable::new(self.source(), "the listening ports of a process tree", "not implemented here"))
    }

    /// `argv` joined by spaces (how messages show a command line).
    fn cmdline(&self, pid: u32) -> Fact<Option<String>> {
        Ok(self.argv(pid)?.map(|a| a.join(" ")))
    }

    /// The identity of a live process; `Ok(None)` if it does not exist or has exited (a
    /// zombie runs nothing).
    fn identity(&self, pid: u32) -> Fact<Option<ProcessIdentity>> {
        Ok(self
            .stat(pid)?
            .filter(|s| !s.is_exited())
            .map(|s| ProcessIdentity { pid, start_ticks: s.start_ticks }))
    }

    /// Whether `id` is alive and still the same process (a reused pid is not).
    fn is_same_process(&self, id: &ProcessIdentity) -> Fact<bool> {
        Ok(self.identity(id.pid)?.is_some_and(|now| now == *id))
    }

    /// Every process holding a socket that listens on `port`.
    fn listeners(&self, port: u16) -> Fact<Vec<Listener>> {
        if self.listening_sockets(port)?.is_empty() {
            return Ok(Vec::new());
        }
        self.listeners_among(port, &self.all_pids()?)
    }

    /// The direct children of `pid`.
    fn children_of(&self, pid: u32) -> Fact<Vec<u32>> {
        let mut out = Vec::new();
        for p in self.all_pids()? {
            if self.stat(p)?.is_some_and(|s| s.ppid == pid) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Live (not exited) processes whose process group is `pgid`.
    fn group_members(&self, pgid: u32) -> Fact<Vec<u32>> {
        let mut out = Vec::new();
        for p in self.all_pids()? {
            if self.stat(p)?.is_some_and(|s| s.pgid == pgid && !s.is_exited()) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Whether `pid` descends from `ancestor` (strictly), following at most
    /// [`MAX_ANCESTRY`] parent hops. A process that does not exist descends from nothing.
    fn is_descendant(&self, pid: u32, ancestor: u32) -> Fact<bool> {
        let mut cur = pid;
        for _ in 0..MAX_ANCESTRY {
            let Some(st) = self.stat(cur)? else { return Ok(false) };
            if st.ppid == ancestor {
                return Ok(true);
            }
            if st.ppid == 0 || st.ppid == cur {
                return Ok(false);
            }
            cur = st.ppid;
        }
        Ok(false)
    }
}

/// Facts that are never available: every question answers [`Unavailable`] with one reason.
/// The host's facts on platforms without an implementation, and what a test injects to prove
/// that a verb stops, rather than guesses, when it cannot see processes.
#[derive(Debug, Clone)]
pub struct NoFacts {
    reason: &'static str,
}

impl NoFacts {
    /// Facts that are unavailable because of `reason`.
    pub const fn new(reason: &'static str) -> NoFacts {
        NoFacts { reason }
    }

    fn no<T>(&self, what: String) -> Fact<T> {
        Err(Unavailable::new(self.source(), what, self.reason))
    }
}

impl ProcessFacts for NoFacts {
    fn source(&self) -> &'static str {
        "unavailable"
    }
    fn stat(&self, pid: u32) -> Fact<Option<ProcStat>> {
        self.no(format!("the state of pid {pid}"))
    }
    fn uid(&self, pid: u32) -> Fact<Option<u32>> {
        self.no(format!("the owner of pid {pid}"))
    }
    fn argv(&self, pid: u32) -> Fact<Option<Vec<String>>> {
        self.no(format!("the command line of pid {pid}"))
    }
    fn exe(&self, pid: u32) -> Fact<Option<PathBuf>> {
        self.no(format!("the executable of pid {pid}"))
    }
    fn cwd(&self, pid: u32) -> Fact<Option<PathBuf>> {
        self.no(format!("the working directory of pid {pid}"))
    }
    fn environ_vars(&self, pid: u32, _keys: &[&str]) -> Fact<Option<Vec<(String, String)>>> {
        self.no(format!("the environment of pid {pid}"))
    }
    fn start_time(&self, pid: u32) -> Fact<Option<SystemTime>> {
        self.no(format!("the start time of pid {pid}"))
    }
    fn all_pids(&self) -> Fact<Vec<u32>> {
        self.no("the list of processes".to_owned())
    }
    fn listening_sockets(&self, port: u16) -> Fact<Vec<ListenSocket>> {
        self.no(format!("the listening sockets on port {port}"))
    }
    fn listeners_among(&self, port: u16, _pids: &[u32]) -> Fact<Vec<Listener>> {
        self.no(format!("the holders of port {port}"))
    }
    fn boot_id(&self) -> Fact<String> {
        self.no("the boot id".to_owned())
    }
    fn memory(&self, pid: u32) -> Fact<Option<Memory>> {
        self.no(format!("the memory of pid {pid}"))
    }
    fn cpu_time(&self, pid: u32) -> Fact<Option<CpuTime>> {
        self.no(format!("the CPU time of pid {pid}"))
    }
    fn listening_ports_of(&self, _pids: &[u32]) -> Fact<Vec<HeldPort>> {
        self.no("the listening ports of a process tree".to_owned())
    }
}

/// Keeps the keys of `keys` found in a NUL-separated `KEY=value` block, in `keys` order, the
/// first occurrence of each (what `getenv` returns).
pub(crate) fn pick_env(block: &[u8], keys: &[&str]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for entry in block.split(|b| *b == 0) {
        let Some(eq) = entry.iter().position(|b| *b == b'=') else { continue };
        let (k, v) = (&entry[..eq], &entry[eq + 1..]);
        if let Some(key) = keys.iter().find(|key| key.as_bytes() == k)
            && !out.iter().any(|(o, _)| o == key)
        {
            out.push(((*key).to_owned(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    out.sort_by_key(|(k, _)| keys.iter().position(|x| x == k));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_facts_answers_unavailable_with_its_reason() {
        let f = NoFacts::new("injected by a test");
        let e = f.identity(1).unwrap_err();
        assert_eq!(e.source_name, "unavailable");
        assert_eq!(
            e.to_string(),
            "the state of pid 1 could not be established (unavailable): injected by a test"
        );
        assert!(f.listeners(80).is_err(), "no port is free or held when nothing can be seen");
        assert!(f.is_same_process(&ProcessIdentity { pid: 1, start_ticks: 1 }).is_err());
    }

    #[test]
    fn env_block_picks_first_occurrence_in_key_order() {
        let block = b"A=1\0PORT=1940\0junk\0PORT=9\0HOME=/h\0";
        assert_eq!(
            pick_env(block, &["HOME", "PORT", "NOPE"]),
            vec![("HOME".to_owned(), "/h".to_owned()), ("PORT".to_owned(), "1940".to_owned())]
        );
    }
}
