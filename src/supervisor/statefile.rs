//! The runtime state file: every process this supervisor's modules have, with enough
//! identity to prove it after the supervisor itself was killed (R7d).
//!
//! `{bootId, hubStartTicks, modules: [{short, pid, pgid, start_ticks, escaped, cgroup}]}`. On Linux
//! a module's leader dies with the supervisor (`PR_SET_PDEATHSIG`), but nothing else of
//! its group does, and a descendant that left the group (a `setsid`/daemonizing wrapper)
//! is in no group of ours at all. [`adopt_leftovers`] runs at boot, before any module
//! starts, and stops what is *provably* left:
//!
//! - the recorded group, when its leader is still the recorded process, or when the leader
//!   is gone and the pid is not in use: the kernel never hands out a pid that still names a
//!   live group, so members of group `pgid` are then the recorded group's — counted only if
//!   they started inside the group's recorded life (after its leader, before this
//!   supervisor);
//! - every recorded escaped descendant that is still the very process recorded (pid and
//!   start time), and the members of a group it leads, under the same life rule.
//!
//! A pid that now names another process, a file from before a reboot (another boot id), a
//! malformed file: nothing is signalled on their say-so. Every signal goes by identity.
//!
//! Writes go through one [`StateWriter`]: producers hand it the newest state and never
//! wait; it keeps at most one write in flight and writes only the latest state, so the
//! crash rate cannot queue writes, threads or memory (each write is a temp file, an fsync,
//! a rename and a directory fsync). A failed write is reported once and retried with
//! backoff until it succeeds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parachute_process::procfs::{self, ProcessIdentity};
use parachute_process::{Signal, Signalled, signal_identity};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// One supervised module's processes, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    /// The module.
    pub short: String,
    /// The leader's pid.
    pub pid: u32,
    /// Its process group (equal to `pid`: every child leads its own group).
    pub pgid: u32,
    /// The leader's start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
    /// Descendants seen outside the group (a `setsid` or daemonizing wrapper's server),
    /// each by identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escaped: Vec<ProcessIdentity>,
    /// The leader's cgroup at spawn (Linux; `/proc/<pid>/cgroup`), for the operator and for
    /// tools. Recorded, not acted on: a module shares the hub's cgroup (the hub unit
    /// delegates none), which the service manager already empties when the hub dies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateDoc {
    /// `/proc/sys/kernel/random/boot_id` when written: start ticks mean nothing across a
    /// reboot.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// Every live module's processes.
    pub modules: Vec<StateEntry>,
    /// Orphans that came back to the supervisor (a child subreaper) and that no module's
    /// tracking had seen leave: descendants of *some* module, by identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphans: Vec<ProcessIdentity>,
    /// The supervisor's random tag, given to every child as [`TAG_VAR`]`=<tag>/<short>` and
    /// inherited by everything it starts: a process that carries it and started during the
    /// supervisor's life is a descendant of one of its modules, even one that escaped
    /// between two looks.
    #[serde(default)]
    pub tag: Option<String>,
    /// The supervisor's own start time (clock ticks since boot).
    #[serde(default)]
    pub supervisor_start_ticks: Option<u64>,
}

/// The environment variable that marks a supervised process tree (see [`StateDoc::tag`]).
pub const TAG_VAR: &str = "PARACHUTE_SUPERVISOR_TAG";

/// Whether `pid`'s environment carries `TAG_VAR=<tag>/…`; `Some(short)` if it does.
pub fn tagged_module(pid: u32, tag: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{TAG_VAR}={tag}/");
    environ
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(prefix.as_bytes()))
        .map(|short| String::from_utf8_lossy(short).into_owned())
}

impl StateDoc {
    /// A document for `modules` stamped with this boot.
    pub fn now(modules: Vec<StateEntry>, orphans: Vec<ProcessIdentity>) -> StateDoc {
        StateDoc {
            boot_id: boot_id(),
            modules,
            orphans,
            tag: None,
            supervisor_start_ticks: Some(my_start_ticks()),
        }
    }
}

/// This boot's identity, where the kernel gives one.
pub fn boot_id() -> Option<String> {
    // Read once: it cannot change while this process runs, and every state write (two
    // per crash) stamps it.
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let raw = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        Some(raw.trim().to_owned()).filter(|s| !s.is_empty())
    })
    .clone()
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

/// Writes `doc` atomically, mode 0600 (pids and command lines are the hub user's
/// business only; `docs/security.md`).
pub fn write(path: &Path, doc: &StateDoc) -> Result<(), StateFileError> {
    let mut json = serde_json::to_vec_pretty(doc).unwrap_or_else(|_| b"{\"modules\":[]}".to_vec());
    json.push(b'\n');
    let opts = parachute_fsx::WriteOptions { mode: 0o600, ..Default::default() };
    // Not fsynced: what the file says is only ever acted on within the boot that wrote it
    // (a reader compares its boot id where there is one, and each process's start
    // time; every process it names died with a crash of the machine, and a torn or lost file
    // then names nothing to stop), while a killed hub's
    // last write is in the page cache for the next one to read. The two fsyncs per write
    // were milliseconds on every spawn, exit and shutdown.
    parachute_fsx::write_atomic_unsynced(path, &json, opts)?;
    Ok(())
}

/// Reads the file; a missing file is empty. The older format (a bare array of entries,
/// without a boot id) is still read.
pub fn read(path: &Path) -> Result<StateDoc, StateFileError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum AnyVersion {
        Doc(StateDoc),
        Entries(Vec<StateEntry>),
    }
    match parachute_fsx::read_optional(path)? {
        None => Ok(StateDoc::default()),
        Some(bytes) => match serde_json::from_slice::<AnyVersion>(&bytes) {
            Ok(AnyVersion::Doc(d)) => Ok(d),
            Ok(AnyVersion::Entries(modules)) => Ok(StateDoc { modules, ..StateDoc::default() }),
            Err(_) => Err(StateFileError::Malformed {
                path: path.to_path_buf(),
                // The untagged error says nothing; the document form's says where.
                source: serde_json::from_slice::<StateDoc>(&bytes)
                    .err()
                    .unwrap_or_else(|| serde_json::from_str::<StateDoc>("!").expect_err("not JSON")),
            }),
        },
    }
}

// ---- the one writer ---------------------------------------------------------------------

/// First retry delay after a failed write; doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// At most this between retries: a home that was full or read-only is written again soon
/// after it can be (one small write attempt every few seconds costs nothing).
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The single writer of one state file (see the module doc).
pub struct StateWriter {
    latest: watch::Sender<(u64, Arc<StateDoc>)>,
    /// The generations last written and last failed.
    written: watch::Receiver<(u64, u64)>,
}

impl StateWriter {
    /// Starts the writer task (inside a tokio runtime).
    pub fn start(path: PathBuf) -> StateWriter {
        let (latest, rx) = watch::channel((0, Arc::new(StateDoc::default())));
        let (written_tx, written) = watch::channel((0, 0));
        tokio::spawn(write_loop(path, rx, written_tx));
        StateWriter { latest, written }
    }

    /// Hands over the newest state; returns at once. A write in flight finishes; the next
    /// one writes whatever is newest by then.
    pub fn submit(&self, doc: StateDoc) {
        self.latest.send_modify(|(generation, d)| {
            *generation += 1;
            *d = Arc::new(doc);
        });
    }

    /// Waits (at most `within`) until the newest state submitted before this call is on
    /// disk. `false` if it is not (the write fails, or takes longer).
    pub async fn flush(&self, within: Duration) -> bool {
        self.wait(within, false).await
    }

    /// Like [`Self::flush`], but also returns (`false`) as soon as a write of that state
    /// has failed (the writer keeps retrying it).
    pub async fn try_flush(&self, within: Duration) -> bool {
        self.wait(within, true).await
    }

    async fn wait(&self, within: Duration, stop_on_failure: bool) -> bool {
        let want = self.latest.borrow().0;
        let mut written = self.written.clone();
        let settled = written.wait_for(|&(ok, failed)| ok >= want || (stop_on_failure && failed >= want));
        match tokio::time::timeout(within, settled).await {
            Ok(Ok(w)) => w.0 >= want,
            _ => false,
        }
    }
}

async fn write_loop(
    path: PathBuf,
    mut rx: watch::Receiver<(u64, Arc<StateDoc>)>,
    written: watch::Sender<(u64, u64)>,
) {
    let mut retry: Option<Duration> = None;
    loop {
        let open = match retry {
            None => rx.changed().await.is_ok(),
            Some(delay) => tokio::select! {
                r = rx.changed() => r.is_ok(),
                () = tokio::time::sleep(delay) => true,
            },
        };
        let (generation, doc) = rx.borrow_and_update().clone();
        if generation > written.borrow().0 {
            let p = path.clone();
            let res = tokio::task::spawn_blocking(move || write(&p, &doc)).await;
            match res {
                Ok(Ok(())) => {
                    if retry.take().is_some() {
                        tracing::warn!("the supervisor state file {} is written again", path.display());
                    }
                    written.send_modify(|w| w.0 = generation);
                }
                Ok(Err(e)) => {
                    if retry.is_none() {
                        tracing::warn!(
                            "cannot write the supervisor state file: {e}; supervising from memory, \
                             retrying (until it is written, a hub killed now could leave processes \
                             the next boot cannot prove are its own)"
                        );
                    }
                    retry = Some(retry.map_or(RETRY_FIRST, |d| (d * 2).min(RETRY_MAX)));
                    written.send_modify(|w| w.1 = generation);
                }
                Err(e) => tracing::warn!("the state file write task failed: {e}"),
            }
        }
        if !open {
            break;
        }
    }
}

// ---- leftovers at boot ------------------------------------------------------------------

/// What [`adopt_leftovers`] found for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftoverReport {
    /// The entry.
    pub entry: StateEntry,
    /// What happened.
    pub outcome: LeftoverOutcome,
    /// Processes of the entry (group members other than the leader, escaped descendants)
    /// that were still alive and were stopped.
    pub others: usize,
}

/// The fate of one recorded leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftoverOutcome {
    /// Still ours; its group exited after SIGTERM.
    Terminated,
    /// Still ours; its group needed SIGKILL after the grace period.
    Killed,
    /// The pid no longer exists: nothing sent to it.
    Gone,
    /// The pid now names another process (different start time or group): nothing sent to
    /// it or its group.
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
        let short = crate::text::field_clipped(&e.short, 64);
        write!(f, "{short} (pid {}, group {}) {what}", e.pid, e.pgid)?;
        match self.others {
            0 => f.write_str("."),
            n => write!(f, "; {n} more of its processes were still running and were stopped."),
        }
    }
}

/// Stops every process recorded in `state_file` that is provably still a module's of the
/// previous supervisor (see the module doc), then empties the file. Call it at boot,
/// before starting modules. A malformed file is reported and treated as empty.
pub async fn adopt_leftovers(state_file: &Path, grace: Duration) -> Vec<LeftoverReport> {
    let reports = stop_recorded(state_file, grace).await;
    if let Err(e) = write(state_file, &StateDoc::now(Vec::new(), Vec::new())) {
        tracing::warn!("{e}");
    }
    reports
}

/// [`adopt_leftovers`] without emptying the file: the hub has the supervisor's writer
/// replace it (with its own tag, retried on a full or read-only home; see
/// `Supervisor::claim_state_file`).
pub async fn stop_recorded(state_file: &Path, grace: Duration) -> Vec<LeftoverReport> {
    let doc = match read(state_file) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("{e}");
            StateDoc::default()
        }
    };
    stop_leftovers(doc, grace).await
}

/// The life bound's upper end: nothing started after this process can be a leftover.
pub fn my_start_ticks() -> u64 {
    // Fixed for the life of the process (an exec keeps it too).
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| procfs::stat(std::process::id()).map_or(u64::MAX, |s| s.start_ticks))
}

/// Live members of `pgid` that started inside `[from, until]`, by identity.
fn members_within(pgid: u32, from: u64, until: u64) -> Vec<ProcessIdentity> {
    procfs::group_members(pgid)
        .into_iter()
        .filter_map(procfs::identity)
        .filter(|id| (from..=until).contains(&id.start_ticks))
        .collect()
}

/// What is provably left of one entry: (the leader's outcome if it is alive and ours,
/// every process to stop).
fn provable(e: &StateEntry, until: u64) -> (Option<LeftoverOutcome>, Vec<ProcessIdentity>) {
    let mut doomed = Vec::new();
    let leader = procfs::stat(e.pid).filter(|s| !s.is_exited());
    let outcome = match &leader {
        Some(st) if st.start_ticks != e.start_ticks || st.pgid != e.pgid || e.pgid != e.pid => {
            // The pid was reused, so the recorded group had emptied before: whatever is in
            // group `pgid` now is someone else's.
            Some(LeftoverOutcome::NotOurs)
        }
        Some(_) => None,
        None => Some(LeftoverOutcome::Gone),
    };
    match outcome {
        // The leader is the recorded process and leads its group: the group is its own.
        None => doomed.extend(members_within(e.pgid, e.start_ticks, u64::MAX)),
        // Leader gone, pid free: only the recorded group can still hold the pgid.
        Some(LeftoverOutcome::Gone) if e.pid != 0 && e.pgid == e.pid => {
            doomed.extend(members_within(e.pgid, e.start_ticks, until));
        }
        _ => {}
    }
    for esc in &e.escaped {
        doomed.extend(escaped_left(esc, until));
    }
    (outcome, doomed)
}

/// A recorded escapee if it is still that very process, and the members of a group it
/// leads.
fn escaped_left(esc: &ProcessIdentity, until: u64) -> Vec<ProcessIdentity> {
    let mut out = Vec::new();
    if let Some(st) = procfs::stat(esc.pid).filter(|s| !s.is_exited() && s.start_ticks == esc.start_ticks) {
        out.push(*esc);
        if st.pgid == esc.pid {
            out.extend(members_within(esc.pid, esc.start_ticks, until));
        }
    }
    out
}

async fn stop_leftovers(doc: StateDoc, grace: Duration) -> Vec<LeftoverReport> {
    if doc.boot_id.is_some() && doc.boot_id != boot_id() {
        // Written before a reboot: every process it names is gone, and start times restarted.
        return doc
            .modules
            .into_iter()
            .map(|entry| LeftoverReport { entry, outcome: LeftoverOutcome::Gone, others: 0 })
            .collect();
    }
    let until = my_start_ticks();
    let (reports, doomed) = tokio::task::spawn_blocking(move || {
        let mut reports = Vec::new();
        let mut doomed: Vec<(usize, ProcessIdentity)> = Vec::new();
        for (i, e) in doc.modules.into_iter().enumerate() {
            let (outcome, procs) = provable(&e, until);
            doomed.extend(procs.into_iter().map(|p| (i, p)));
            reports.push(LeftoverReport {
                entry: e,
                outcome: outcome.unwrap_or(LeftoverOutcome::Terminated),
                others: 0,
            });
        }
        let n = reports.len();
        for o in &doc.orphans {
            doomed.extend(escaped_left(o, until).into_iter().map(|p| (n, p)));
        }
        // Everything that inherited the previous supervisor's tag and started during its
        // life: what escaped between two looks (a double fork right before the SIGKILL).
        if let Some(tag) = doc.tag.as_deref().filter(|t| !t.is_empty()) {
            let from = doc.supervisor_start_ticks.unwrap_or(0);
            let me = std::process::id();
            // Only our own user's processes: a hub run as root never acts on a tag another
            // user's process claims.
            let my_uid = nix::unistd::geteuid().as_raw();
            let own = |pid: u32| {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == my_uid)
            };
            for pid in procfs::all_pids().filter(|&p| p != me && own(p)) {
                let Some(short) = tagged_module(pid, tag) else { continue };
                let Some(id) = procfs::identity(pid).filter(|id| (from..=until).contains(&id.start_ticks))
                else {
                    continue;
                };
                let i = reports.iter().position(|r| r.entry.short == short).unwrap_or(n);
                doomed.push((i, id));
            }
        }
        doomed.sort_by_key(|(_, id)| id.pid);
        doomed.dedup_by_key(|(_, id)| id.pid);
        (reports, doomed)
    })
    .await
    .unwrap_or_default();
    let mut reports = reports;
    // Everything at once, so the worst case is one grace period.
    let ids: Vec<ProcessIdentity> = doomed.iter().map(|(_, id)| *id).collect();
    let (_, killed) = stop_all(&ids, grace).await;
    for (i, id) in &doomed {
        let Some(r) = reports.get_mut(*i) else { continue };
        if id.pid == r.entry.pid {
            if killed.contains(&id.pid) {
                r.outcome = LeftoverOutcome::Killed;
            }
        } else {
            r.others += 1;
        }
    }
    let orphans = doomed.iter().filter(|(i, _)| *i >= reports.len()).count();
    if orphans > 0 {
        tracing::warn!("stopped {orphans} orphaned process(es) of the previous supervisor's modules");
    }
    reports
}

/// SIGTERM (and SIGCONT) every process by identity, wait up to `grace` for all to go,
/// SIGKILL the rest by identity. Returns how many were alive, and the pids that needed
/// SIGKILL.
pub async fn stop_all(ids: &[ProcessIdentity], grace: Duration) -> (usize, Vec<u32>) {
    let mut alive = 0;
    for id in ids {
        if matches!(signal_identity(id, Signal::Term, false), Ok(Signalled::Process | Signalled::Group)) {
            alive += 1;
            let _ = signal_identity(id, Signal::Cont, false);
        }
    }
    if alive == 0 || all_gone(ids, tokio::time::Instant::now() + grace).await {
        return (alive, Vec::new());
    }
    let mut killed = Vec::new();
    for id in ids {
        if procfs::is_same_process(id) {
            let _ = signal_identity(id, Signal::Kill, false);
            killed.push(id.pid);
        }
    }
    all_gone(ids, tokio::time::Instant::now() + parachute_process::KILL_WAIT).await;
    (alive, killed)
}

async fn all_gone(ids: &[ProcessIdentity], deadline: tokio::time::Instant) -> bool {
    loop {
        if !ids.iter().any(procfs::is_same_process) {
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

    fn entry(short: &str, pid: u32, pgid: u32, start_ticks: u64) -> StateEntry {
        StateEntry { short: short.into(), pid, pgid, start_ticks, escaped: Vec::new(), cgroup: None }
    }

    #[test]
    fn round_trip_old_format_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        assert!(read(&p).unwrap().modules.is_empty());
        let mut e = entry("vault", 10, 10, 99);
        e.escaped.push(ProcessIdentity { pid: 12, start_ticks: 100 });
        let doc = StateDoc::now(vec![e], vec![ProcessIdentity { pid: 13, start_ticks: 101 }]);
        write(&p, &doc).unwrap();
        assert_eq!(read(&p).unwrap(), doc);
        // The format before escapees and boot ids: a bare array.
        std::fs::write(&p, r#"[{"short":"notes","pid":5,"pgid":5,"start_ticks":7}]"#).unwrap();
        assert_eq!(read(&p).unwrap().modules, [entry("notes", 5, 5, 7)]);
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
        let doc = StateDoc::now(
            vec![
                // This very test process, but "started" at another time: a recycled pid.
                entry("vault", me, st.pgid, st.start_ticks + 1),
                // A pid that does not exist.
                entry("notes", u32::MAX - 1, u32::MAX - 1, 1),
            ],
            // This process again as an "orphan" with another start time: left alone.
            vec![ProcessIdentity { pid: me, start_ticks: st.start_ticks + 1 }],
        );
        write(&p, &doc).unwrap();
        let reports = adopt_leftovers(&p, Duration::from_millis(10)).await;
        let outcomes: Vec<_> = reports.iter().map(|r| (r.outcome, r.others)).collect();
        assert_eq!(outcomes, [(LeftoverOutcome::NotOurs, 0), (LeftoverOutcome::Gone, 0)]);
        assert!(read(&p).unwrap().modules.is_empty(), "the file is emptied");
    }

    #[tokio::test]
    async fn a_file_from_another_boot_signals_nothing() {
        let me = std::process::id();
        let st = procfs::stat(me).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        // This very process, identity and all — but recorded in another boot.
        let doc = StateDoc {
            boot_id: Some("00000000-0000-0000-0000-000000000000".into()),
            modules: vec![entry("vault", me, st.pgid, st.start_ticks)],
            ..StateDoc::default()
        };
        write(&p, &doc).unwrap();
        let reports = adopt_leftovers(&p, Duration::from_millis(10)).await;
        assert_eq!(reports[0].outcome, LeftoverOutcome::Gone);
    }

    #[tokio::test]
    async fn one_writer_coalesces_and_retries_until_the_write_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let blocked = dir.path().join("blocked");
        // The state file's directory is a file for now: every write fails.
        std::fs::write(&blocked, "").unwrap();
        let p = blocked.join("state.json");
        let w = StateWriter::start(p.clone());
        for i in 0..1000 {
            w.submit(StateDoc::now(vec![entry("vault", i, i, 1)], Vec::new()));
        }
        assert!(!w.flush(Duration::from_millis(300)).await, "a failing write is not reported as done");
        std::fs::remove_file(&blocked).unwrap();
        std::fs::create_dir(&blocked).unwrap();
        assert!(w.flush(Duration::from_secs(10)).await, "the write is retried and succeeds");
        assert_eq!(read(&p).unwrap().modules, [entry("vault", 999, 999, 1)], "the latest state wins");
    }
}
