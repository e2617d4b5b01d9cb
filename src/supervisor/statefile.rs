//! The runtime state file: which children this supervisor has running, with enough
//! identity to prove it after a restart of the supervisor itself (R7d).
//!
//! `[{short, pid, pgid, start_ticks}]`, rewritten atomically on every spawn and exit. On
//! Linux children die with the supervisor (`PR_SET_PDEATHSIG`), but a grandchild that left
//! the group, a supervisor on a platform without it, or a SIGKILL in the wrong microsecond
//! can still leave processes behind. [`adopt_leftovers`] runs at boot, before any module
//! starts: an entry whose pid still carries the recorded start time (and still leads the
//! recorded group) is ours beyond doubt, and its group is stopped (SIGTERM, grace,
//! SIGKILL). Anything else — the pid is gone, or now names another process — is dropped
//! without sending a single signal.

use std::path::Path;
use std::time::Duration;

use parachute_process::procfs::{self, ProcessIdentity};
use parachute_process::{Signal, Signalled, signal_identity};
use serde::{Deserialize, Serialize};

/// One running child, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    /// The module.
    pub short: String,
    /// The child's pid.
    pub pid: u32,
    /// Its process group (equal to `pid`: every child leads its own group).
    pub pgid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] parachute_fsx::Error),
    /// The content is not the expected JSON.
    #[error(
        "the supervisor state file {} is not valid ({source}); it is rewritten on the next spawn, \
         and nothing it lists was signalled",
        path.display()
    )]
    Malformed {
        /// The file.
        path: std::path::PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// Writes `entries` atomically, mode 0600 (pids and command lines are the hub user's
/// business only; `docs/security.md`).
pub fn write(path: &Path, entries: &[StateEntry]) -> Result<(), StateFileError> {
    let mut json = serde_json::to_vec_pretty(entries).unwrap_or_else(|_| b"[]".to_vec());
    json.push(b'\n');
    let opts = parachute_fsx::WriteOptions { mode: 0o600, ..Default::default() };
    parachute_fsx::write_atomic_with(path, &json, opts)?;
    Ok(())
}

/// Reads the entries; a missing file is empty.
pub fn read(path: &Path) -> Result<Vec<StateEntry>, StateFileError> {
    match parachute_fsx::read_optional(path)? {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|source| StateFileError::Malformed { path: path.to_path_buf(), source }),
    }
}

/// What [`adopt_leftovers`] found for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftoverReport {
    /// The entry.
    pub entry: StateEntry,
    /// What happened.
    pub outcome: LeftoverOutcome,
}

/// The fate of one recorded child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftoverOutcome {
    /// Still ours; its group exited after SIGTERM.
    Terminated,
    /// Still ours; its group needed SIGKILL after the grace period.
    Killed,
    /// The pid no longer exists: nothing sent.
    Gone,
    /// The pid now names another process (different start time or group): nothing sent.
    NotOurs,
}

impl std::fmt::Display for LeftoverReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = &self.entry;
        let what = match self.outcome {
            LeftoverOutcome::Terminated => "was still running from a previous supervisor; stopped it",
            LeftoverOutcome::Killed => {
                "was still running from a previous supervisor; it ignored SIGTERM and was killed"
            }
            LeftoverOutcome::Gone => "from the previous supervisor has exited",
            LeftoverOutcome::NotOurs => {
                "from the previous supervisor is gone; its pid now names another process, left alone"
            }
        };
        write!(f, "[supervisor] {} (pid {}, group {}) {what}.", e.short, e.pid, e.pgid)
    }
}

/// Stops every child recorded in `state_file` that is provably still ours, then empties
/// the file. Call it at boot, before starting modules. A malformed file is reported in
/// the log and treated as empty (nothing is signalled on its say-so).
pub async fn adopt_leftovers(state_file: &Path, grace: Duration) -> Vec<LeftoverReport> {
    let entries = match read(state_file) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("{e}");
            Vec::new()
        }
    };
    let mut reports = Vec::with_capacity(entries.len());
    // Stop all in parallel so the worst case is one grace period, not one per entry.
    let mut tasks = tokio::task::JoinSet::new();
    for (i, entry) in entries.into_iter().enumerate() {
        tasks.spawn(async move { (i, stop_leftover(&entry, grace).await, entry) });
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, outcome, entry)) = done {
            reports.push((i, LeftoverReport { entry, outcome }));
        }
    }
    reports.sort_by_key(|(i, _)| *i);
    if let Err(e) = write(state_file, &[]) {
        tracing::warn!("{e}");
    }
    reports.into_iter().map(|(_, r)| r).collect()
}

async fn stop_leftover(e: &StateEntry, grace: Duration) -> LeftoverOutcome {
    let id = ProcessIdentity { pid: e.pid, start_ticks: e.start_ticks };
    match procfs::stat(e.pid).filter(|s| !s.is_exited()) {
        None => return LeftoverOutcome::Gone,
        Some(st) if st.start_ticks != e.start_ticks || st.pgid != e.pgid || e.pgid != e.pid => {
            return LeftoverOutcome::NotOurs;
        }
        Some(_) => {}
    }
    match signal_identity(&id, Signal::Term, true) {
        Ok(Signalled::Gone) => return LeftoverOutcome::Gone,
        Ok(Signalled::Replaced) => return LeftoverOutcome::NotOurs,
        _ => {}
    }
    let _ = signal_identity(&id, Signal::Cont, true);
    if group_gone(e.pgid, tokio::time::Instant::now() + grace).await {
        return LeftoverOutcome::Terminated;
    }
    // The leader may have exited while others in its group live on: its pgid cannot be
    // reused while any member exists, so each remaining member is killed by identity.
    for pid in procfs::group_members(e.pgid) {
        if let Some(member) = procfs::identity(pid) {
            let _ = signal_identity(&member, Signal::Kill, false);
        }
    }
    group_gone(e.pgid, tokio::time::Instant::now() + Duration::from_secs(2)).await;
    LeftoverOutcome::Killed
}

async fn group_gone(pgid: u32, deadline: tokio::time::Instant) -> bool {
    loop {
        let members =
            tokio::task::spawn_blocking(move || procfs::group_members(pgid)).await.unwrap_or_default();
        if members.is_empty() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        assert!(read(&p).unwrap().is_empty());
        let e = vec![StateEntry { short: "vault".into(), pid: 10, pgid: 10, start_ticks: 99 }];
        write(&p, &e).unwrap();
        assert_eq!(read(&p).unwrap(), e);
        std::fs::write(&p, "{not json").unwrap();
        let err = read(&p).unwrap_err().to_string();
        assert!(err.contains("state.json") && err.contains("nothing it lists was signalled"), "{err}");
    }

    #[tokio::test]
    async fn a_live_process_with_another_start_time_is_left_alone() {
        let me = std::process::id();
        let st = procfs::stat(me).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let entries = vec![
            // This very test process, but "started" at another time: a recycled pid.
            StateEntry { short: "vault".into(), pid: me, pgid: st.pgid, start_ticks: st.start_ticks + 1 },
            // A pid that does not exist.
            StateEntry { short: "notes".into(), pid: u32::MAX - 1, pgid: u32::MAX - 1, start_ticks: 1 },
        ];
        write(&p, &entries).unwrap();
        let reports = adopt_leftovers(&p, Duration::from_millis(10)).await;
        let outcomes: Vec<_> = reports.iter().map(|r| r.outcome).collect();
        assert_eq!(outcomes, [LeftoverOutcome::NotOurs, LeftoverOutcome::Gone]);
        assert!(read(&p).unwrap().is_empty(), "the file is emptied");
    }
}
