//! What a module's process tree costs right now: memory, CPU, and the TCP ports it really
//! listens on (from the kernel's listen table, not from services.json).
//!
//! A module's tree is its child's process group, every descendant of the child or of a group
//! member (a grandchild that left the group with `setsid` still counts), the descendants
//! the supervisor recorded as having left the group ([`Module::escaped`], by identity, so a
//! recycled pid is never counted), and orphans that came back to the hub carrying the
//! module's tag. Each is read from one snapshot of the process table: one `/proc` scan per
//! sample for all modules, however many there are.
//!
//! Sums: RSS counts a page shared by two members twice (a forked worker shares its parent's
//! pages), so PSS (Linux) is the honest total where the platform has it. CPU time is each
//! member's own time plus the time of the children it reaped (Linux `cutime + cstime`), so
//! short-lived helpers are counted once they are waited for. CPU percent is the tree's CPU
//! time over wall time since an earlier sample at least [`MIN_INTERVAL`] old (100 = one core);
//! the supervisor takes one every [`SAMPLE_EVERY`], so a one-off `status` has a baseline.
//! Nothing here is guessed: a fact that cannot be read is `None`, with the reason in
//! `unknown`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use parachute_process::facts::ProcessFacts;
use parachute_process::procfs::ProcStat;
use parachute_process::{Facts, HeldPort, ProcessIdentity};
use serde::{Deserialize, Serialize};

use super::registry::{Ctx, Module, lock};

/// How often the supervisor samples CPU time on its own (the baseline of a percentage).
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The shortest interval a CPU percentage is computed over (shorter ones are mostly noise
/// at a 10 ms clock tick).
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// How many CPU samples are kept per module.
const KEPT: usize = 3;

/// The most members counted in one tree (a fork bomb cannot make a sample unbounded).
const MAX_TREE: usize = 4096;

/// A module's process tree as measured at one moment. Every field that could not be read is
/// `None`; `unknown` says why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// When the sample was taken (RFC 3339).
    pub sampled_at: String,
    /// Seconds since the current child was spawned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    /// The tree's live processes, the child first.
    pub pids: Vec<u32>,
    /// Resident set size summed over the tree, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// Proportional set size summed over the tree, in bytes (Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pss_bytes: Option<u64>,
    /// CPU use of the tree since an earlier sample, in percent of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// CPU time the tree's live members (and the children they reaped) have used, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<u64>,
    /// The TCP ports the tree listens on (any address), sorted, from the kernel's listen
    /// table; `None` when the descriptors could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
    /// Why a field above is absent ("the memory of pid 7 could not be established …").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<String>,
}

/// One CPU sample of a module's tree: per-member CPU time, by identity.
#[derive(Debug, Clone)]
pub(crate) struct CpuSample {
    at: Instant,
    times: HashMap<ProcessIdentity, Duration>,
}

/// The CPU samples of every module, newest last.
#[derive(Debug, Default)]
pub(crate) struct CpuHistory {
    by_module: HashMap<String, Vec<CpuSample>>,
}

impl CpuHistory {
    /// Records `sample` unless the newest kept one is younger than [`MIN_INTERVAL`] (rapid
    /// requests would otherwise push out every baseline old enough to compute over).
    fn record(&mut self, short: &str, sample: CpuSample) {
        let kept = self.by_module.entry(short.to_owned()).or_default();
        if kept.last().is_some_and(|l| sample.at.saturating_duration_since(l.at) < MIN_INTERVAL) {
            return;
        }
        kept.push(sample);
        if kept.len() > KEPT {
            kept.remove(0);
        }
    }

    /// The newest sample at least [`MIN_INTERVAL`] older than `now`.
    fn baseline(&self, short: &str, now: Instant) -> Option<&CpuSample> {
        self.by_module.get(short)?.iter().rev().find(|s| now.saturating_duration_since(s.at) >= MIN_INTERVAL)
    }

    /// Forgets modules that are gone.
    fn retain(&mut self, shorts: &HashSet<&str>) {
        self.by_module.retain(|k, _| shorts.contains(k.as_str()));
    }
}

/// CPU percent of one core between `before` and `now`: each member's growth since the
/// baseline; a member the baseline did not have counts in full (it was born since: a tree
/// only gains processes by forking).
pub(crate) fn cpu_percent(before: &CpuSample, now: &CpuSample) -> Option<f64> {
    let wall = now.at.checked_duration_since(before.at)?.as_secs_f64();
    if wall <= 0.0 {
        return None;
    }
    let used: f64 = now
        .times
        .iter()
        .map(|(id, t)| t.saturating_sub(before.times.get(id).copied().unwrap_or_default()).as_secs_f64())
        .sum();
    Some((used / wall * 1000.0).round() / 10.0)
}

/// One snapshot of every live process (`/proc` scan): the table trees are cut from.
pub(crate) struct ProcTable {
    stats: HashMap<u32, ProcStat>,
    children: HashMap<u32, Vec<u32>>,
    groups: HashMap<u32, Vec<u32>>,
}

impl ProcTable {
    /// Reads every process's stat. `Err` when the list of processes cannot be read.
    pub(crate) fn read(facts: &dyn ProcessFacts) -> Result<ProcTable, String> {
        let pids = facts.all_pids().map_err(|e| e.to_string())?;
        let mut t = ProcTable { stats: HashMap::new(), children: HashMap::new(), groups: HashMap::new() };
        for pid in pids {
            // A process that exits during the scan, or cannot be read, is not counted.
            let Ok(Some(st)) = facts.stat(pid) else { continue };
            if st.is_exited() {
                continue;
            }
            t.children.entry(st.ppid).or_default().push(pid);
            t.groups.entry(st.pgid).or_default().push(pid);
            t.stats.insert(pid, st);
        }
        Ok(t)
    }

    fn identity(&self, pid: u32) -> Option<ProcessIdentity> {
        self.stats.get(&pid).map(|s| ProcessIdentity { pid, start_ticks: s.start_ticks })
    }

    /// The tree rooted at `leader` (see the module doc): its group, the still-live `extra`
    /// identities, and every descendant of any of them. `leader` first, then ascending pids.
    pub(crate) fn tree(&self, leader: ProcessIdentity, extra: &[ProcessIdentity]) -> Vec<ProcessIdentity> {
        let mut seen: HashSet<u32> = HashSet::new();
        let mut todo: Vec<u32> = Vec::new();
        if self.identity(leader.pid) == Some(leader) {
            todo.push(leader.pid);
            // The leader's pid is its group's id only while the leader lives (no reuse).
            todo.extend(self.groups.get(&leader.pid).into_iter().flatten().copied());
        }
        todo.extend(extra.iter().filter(|id| self.identity(id.pid) == Some(**id)).map(|id| id.pid));
        while let Some(p) = todo.pop() {
            if seen.len() >= MAX_TREE || !seen.insert(p) {
                continue;
            }
            todo.extend(self.children.get(&p).into_iter().flatten().copied());
        }
        let mut pids: Vec<u32> = seen.into_iter().filter(|p| *p != leader.pid).collect();
        pids.sort_unstable();
        let mut out: Vec<ProcessIdentity> =
            self.identity(leader.pid).filter(|id| *id == leader).into_iter().collect();
        out.extend(pids.into_iter().filter_map(|p| self.identity(p)));
        out
    }
}

/// What was measured of one tree.
pub(crate) struct Measured {
    pub resources: Resources,
    pub cpu: CpuSample,
}

/// Measures `tree` now: memory and CPU time; `ports` are the listening sockets already read
/// for every tree of the sample (one listen-table dump for all), or why they could not be.
/// `cpu_base` is the baseline for the percentage.
pub(crate) fn measure(
    facts: &dyn ProcessFacts,
    tree: &[ProcessIdentity],
    ports: &Result<Vec<HeldPort>, String>,
    uptime: Option<Duration>,
    cpu_base: Option<&CpuSample>,
) -> Measured {
    let mut unknown: Vec<String> = Vec::new();
    let (mut rss, mut pss, mut rss_known, mut pss_known) = (0u64, 0u64, true, true);
    let mut times: HashMap<ProcessIdentity, Duration> = HashMap::new();
    let mut cpu_known = true;
    for id in tree {
        match facts.memory(id.pid) {
            Ok(Some(m)) => {
                rss = rss.saturating_add(m.rss_bytes);
                match m.pss_bytes {
                    Some(p) => pss = pss.saturating_add(p),
                    None => pss_known = false,
                }
            }
            Ok(None) => {} // exited since the scan
            Err(e) => {
                rss_known = false;
                pss_known = false;
                unknown.push(e.to_string());
            }
        }
        match facts.cpu_time(id.pid) {
            Ok(Some(c)) => {
                times.insert(*id, c.total());
            }
            Ok(None) => {}
            Err(e) => {
                cpu_known = false;
                unknown.push(e.to_string());
            }
        }
    }
    let pids: Vec<u32> = tree.iter().map(|id| id.pid).collect();
    let ports = match ports {
        Ok(held) => {
            let mut ports: Vec<u16> =
                held.iter().filter(|h| pids.contains(&h.listener.pid)).map(|h| h.port).collect();
            ports.sort_unstable();
            ports.dedup();
            Some(ports)
        }
        Err(e) => {
            unknown.push(e.clone());
            None
        }
    };
    let cpu = CpuSample { at: Instant::now(), times };
    let total: Duration = cpu.times.values().sum();
    let cpu_percent = match (cpu_known, cpu_base) {
        (true, Some(base)) => cpu_percent(base, &cpu),
        _ => None,
    };
    unknown.sort();
    unknown.dedup();
    Measured {
        resources: Resources {
            sampled_at: crate::rfc3339::now(),
            uptime_secs: uptime.map(|u| u.as_secs()),
            pids,
            rss_bytes: rss_known.then_some(rss),
            pss_bytes: (pss_known && !tree.is_empty()).then_some(pss).filter(|_| rss_known),
            cpu_percent,
            cpu_time_ms: cpu_known.then(|| u64::try_from(total.as_millis()).unwrap_or(u64::MAX)),
            ports,
            unknown,
        },
        cpu,
    }
}

impl Ctx {
    /// Orphans that came back to the hub (its children that lead no module), by the module
    /// their tag names: read once per sample, from `table`.
    fn tagged_orphans_by_module(&self, table: &ProcTable) -> HashMap<String, Vec<ProcessIdentity>> {
        let mut out: HashMap<String, Vec<ProcessIdentity>> = HashMap::new();
        let (true, Some(tag)) = (self.config.adopt_orphans, self.config.process_tag.as_deref()) else {
            return out;
        };
        let leaders = self.live_leaders();
        for &pid in table.children.get(&std::process::id()).into_iter().flatten() {
            if leaders.contains(&pid) {
                continue;
            }
            if let (Some(short), Some(id)) = (super::statefile::tagged_module(pid, tag), table.identity(pid))
            {
                out.entry(short).or_default().push(id);
            }
        }
        out
    }

    /// Records a CPU sample of every module with a live child (the baseline a later
    /// `status` computes its percentage over), reading only what that needs: one
    /// process-table scan and each tree member's CPU time. The periodic sample used to be
    /// a full [`Ctx::sample`], which also reads every member's memory (`statm`,
    /// `smaps_rollup`: a page-table walk) and every descriptor for the ports, all thrown
    /// away. Blocking: reads `/proc`.
    pub(crate) fn record_cpu(&self, facts: &Facts) {
        let modules: Vec<_> = self.modules().into_iter().filter(|m| m.live().is_some()).collect();
        if modules.is_empty() {
            return;
        }
        let Ok(table) = ProcTable::read(facts.as_ref()) else { return };
        let mut orphans = self.tagged_orphans_by_module(&table);
        let mut samples = Vec::with_capacity(modules.len());
        for m in &modules {
            let Some(live) = m.live() else { continue };
            let leader = ProcessIdentity { pid: live.handle.pid(), start_ticks: live.start_ticks };
            let mut extra = lock(&m.escaped).clone();
            extra.extend(orphans.remove(&m.short).unwrap_or_default());
            let times: HashMap<ProcessIdentity, Duration> = table
                .tree(leader, &extra)
                .into_iter()
                .filter_map(|id| Some((id, facts.cpu_time(id.pid).ok()??.total())))
                .collect();
            samples.push((m.short.clone(), CpuSample { at: Instant::now(), times }));
        }
        let mut history = lock(&self.cpu);
        for (short, sample) in samples {
            history.record(&short, sample);
        }
        let shorts: HashSet<String> = self.modules().iter().map(|m| m.short.clone()).collect();
        history.retain(&shorts.iter().map(String::as_str).collect());
    }

    /// Measures every module with a live child — or only `only` — from one process-table
    /// scan and one listen-table read for all, records the CPU samples, and returns the
    /// resources by module. Blocking: reads `/proc`.
    pub(crate) fn sample(&self, facts: &Facts, only: Option<&str>) -> HashMap<String, Resources> {
        let modules: Vec<_> = self
            .modules()
            .into_iter()
            .filter(|m| m.live().is_some() && only.is_none_or(|o| o == m.short))
            .collect();
        let mut out = HashMap::new();
        if modules.is_empty() {
            return out;
        }
        let table = match ProcTable::read(facts.as_ref()) {
            Ok(t) => t,
            Err(e) => {
                for m in &modules {
                    out.insert(m.short.clone(), unreadable(&e));
                }
                return out;
            }
        };
        let mut orphans = self.tagged_orphans_by_module(&table);
        let trees: Vec<(&Module, Vec<ProcessIdentity>, Option<Duration>)> = modules
            .iter()
            .filter_map(|m| {
                let live = m.live()?;
                let leader = ProcessIdentity { pid: live.handle.pid(), start_ticks: live.start_ticks };
                let mut extra = lock(&m.escaped).clone();
                extra.extend(orphans.remove(&m.short).unwrap_or_default());
                Some((m.as_ref(), table.tree(leader, &extra), Some(live.since.elapsed())))
            })
            .collect();
        let all: Vec<u32> = trees.iter().flat_map(|(_, t, _)| t.iter().map(|id| id.pid)).collect();
        let ports = facts.listening_ports_of(&all).map_err(|e| e.to_string());
        let mut history = lock(&self.cpu);
        let now = Instant::now();
        for (m, tree, uptime) in trees {
            let measured = measure(facts.as_ref(), &tree, &ports, uptime, history.baseline(&m.short, now));
            history.record(&m.short, measured.cpu);
            out.insert(m.short.clone(), measured.resources);
        }
        if only.is_none() {
            let shorts: HashSet<String> = self.modules().iter().map(|m| m.short.clone()).collect();
            history.retain(&shorts.iter().map(String::as_str).collect());
        }
        out
    }
}

fn unreadable(reason: &str) -> Resources {
    Resources {
        sampled_at: crate::rfc3339::now(),
        uptime_secs: None,
        pids: Vec::new(),
        rss_bytes: None,
        pss_bytes: None,
        cpu_percent: None,
        cpu_time_ms: None,
        ports: None,
        unknown: vec![reason.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(pid: u32, ppid: u32, pgid: u32) -> ProcStat {
        ProcStat {
            pid,
            comm: "x".into(),
            state: 'S',
            ppid,
            pgid,
            sid: pgid,
            start_ticks: u64::from(pid) * 10,
        }
    }

    fn table(rows: &[ProcStat]) -> ProcTable {
        let mut t = ProcTable { stats: HashMap::new(), children: HashMap::new(), groups: HashMap::new() };
        for s in rows {
            t.children.entry(s.ppid).or_default().push(s.pid);
            t.groups.entry(s.pgid).or_default().push(s.pid);
            t.stats.insert(s.pid, s.clone());
        }
        t
    }

    fn id(pid: u32) -> ProcessIdentity {
        ProcessIdentity { pid, start_ticks: u64::from(pid) * 10 }
    }

    #[test]
    fn the_tree_is_the_group_the_descendants_and_the_recorded_escapees() {
        let t = table(&[
            st(100, 1, 100),   // the module's child
            st(101, 100, 100), // a worker
            st(102, 101, 102), // left the group (setsid), still a descendant
            st(103, 102, 102), // its child
            st(200, 1, 100),   // a group member reparented to init (its parent died)
            st(300, 1, 300),   // a double-forked daemon recorded as escaped
            st(301, 300, 300),
            st(400, 1, 400),   // unrelated
            st(401, 100, 401), // a descendant in another group
        ]);
        let pids: Vec<u32> = t.tree(id(100), &[id(300)]).iter().map(|i| i.pid).collect();
        assert_eq!(pids, [100, 101, 102, 103, 200, 300, 301, 401]);
        // A recorded escapee whose pid was reused by someone else is not counted.
        let reused = ProcessIdentity { pid: 400, start_ticks: 1 };
        assert!(!t.tree(id(100), &[reused]).iter().any(|i| i.pid == 400));
        // A leader that is gone (or a pid reused) has no tree, however its pgid looks.
        assert!(t.tree(ProcessIdentity { pid: 100, start_ticks: 7 }, &[]).is_empty());
    }

    #[test]
    fn cpu_percent_counts_growth_and_newcomers_over_wall_time() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let before = CpuSample { at: t0, times: HashMap::from([(id(1), ms(1000)), (id(2), ms(500))]) };
        let now = CpuSample {
            at: t0 + Duration::from_secs(2),
            // pid 1 used 1.5 s more, pid 2 exited, pid 3 was born and used 0.5 s.
            times: HashMap::from([(id(1), ms(2500)), (id(3), ms(500))]),
        };
        assert_eq!(cpu_percent(&before, &now), Some(100.0));
        assert_eq!(cpu_percent(&now, &before), None, "a baseline from the future is no baseline");
    }

    #[test]
    fn history_keeps_baselines_old_enough() {
        let mut h = CpuHistory::default();
        let t0 = Instant::now();
        let s = |at| CpuSample { at, times: HashMap::new() };
        h.record("a", s(t0));
        h.record("a", s(t0 + Duration::from_millis(100))); // too soon: ignored
        assert_eq!(h.by_module["a"].len(), 1);
        assert!(h.baseline("a", t0 + Duration::from_millis(500)).is_none());
        assert_eq!(h.baseline("a", t0 + Duration::from_secs(2)).map(|b| b.at), Some(t0));
        for i in 1..10 {
            h.record("a", s(t0 + Duration::from_secs(i)));
        }
        assert_eq!(h.by_module["a"].len(), KEPT);
        h.retain(&HashSet::new());
        assert!(h.by_module.is_empty());
    }
}
