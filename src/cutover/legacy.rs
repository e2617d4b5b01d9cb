//! Inspecting a box that still runs the legacy detached daemons: which processes the
//! pidfiles name, whether each really is the daemon that wrote the file, and whose process
//! is holding each declared port.
//!
//! Two questions are answered by pure functions over facts read from `/proc`, so the
//! policy can be table-tested without processes:
//!
//! - [`verify`]: is the process a pidfile names the daemon that wrote it? Pidfiles survive
//!   reboots and processes do not, so a pid may now belong to anything (upstream W13). The
//!   process must be alive, its command line must carry the target's marker (its binary
//!   name, e.g. `parachute-vault`), and it must have started no later than the pidfile was
//!   written. Anything else is reported and its pidfile removed; it is never signalled.
//! - [`attribute`]: may the cutover stop the process holding a declared port? Only when it
//!   is a verified legacy process, a member of a verified legacy process's group (or its
//!   descendant), the hub unit's own process tree, or an orphan whose command line names
//!   both Parachute and the port's owner. Everything else is [`Attribution::Foreign`]:
//!   preflight aborts on it and the sweep never signals it (upstream W14 killed whatever
//!   held the hub port).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use parachute_process::ProcessFacts;
use parachute_process::ProcessIdentity;
use parachute_process::procfs;
use serde::Serialize;

use crate::model::home::Home;
use crate::model::names::ModuleName;
use crate::model::pidfile::{self, PidRecord};
use crate::model::services::ServicesFile;

/// Markers in the command line of a legacy hub: the detached hub binary and upstream's
/// direct entry (`bun src/hub-server.ts`).
pub const HUB_MARKERS: &[&str] = &["parachute-hub", "hub-server"];

/// How much later than the pidfile's mtime a process may appear to have started. The start
/// time is computed from clock ticks and the boot time, which `/proc/stat` rounds to a
/// second; the pidfile's mtime comes from a coarse clock.
pub const START_TIME_SLACK: Duration = Duration::from_secs(1);

/// A declared port and the legacy daemon that owned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// `hub` or the module's short.
    pub name: String,
    /// The module (`None` for the hub).
    #[serde(skip)]
    pub module: Option<ModuleName>,
    /// The declared port.
    pub port: u16,
    /// The legacy pidfile.
    pub pidfile: PathBuf,
    /// Lowercase needles, one of which the legacy process's command line contains.
    pub markers: Vec<String>,
}

impl Target {
    /// Whether this is the hub.
    pub fn is_hub(&self) -> bool {
        self.module.is_none()
    }
}

/// The hub and every services.json module, with their ports, pidfiles and markers. Rows
/// whose name cannot be a module name are skipped with a warning.
pub fn targets(home: &Home, hub_port: u16, services: &ServicesFile) -> (Vec<Target>, Vec<String>) {
    let mut out = vec![Target {
        name: "hub".to_owned(),
        module: None,
        port: hub_port,
        pidfile: home.hub_pidfile(),
        markers: HUB_MARKERS.iter().map(|m| (*m).to_owned()).collect(),
    }];
    let mut warnings = Vec::new();
    for row in services.rows() {
        let short = match ModuleName::for_row(row.name()) {
            Ok(s) => s,
            Err(e) => {
                warnings.push(format!("services.json row skipped: {e}"));
                continue;
            }
        };
        let mut markers = vec![row.name().to_lowercase()];
        if !short.as_str().starts_with("parachute-") {
            markers.push(format!("parachute-{}", short.as_str().to_lowercase()));
        }
        if let Some(dir) = row.install_dir() {
            markers.push(dir.to_string_lossy().to_lowercase());
        }
        markers.sort();
        markers.dedup();
        out.push(Target {
            name: short.as_str().to_owned(),
            pidfile: home.pidfile(&short),
            module: Some(short),
            port: row.port(),
            markers,
        });
    }
    (out, warnings)
}

/// What `/proc` says about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcFacts {
    /// Pid and start ticks.
    pub identity: ProcessIdentity,
    /// Process group.
    pub pgid: u32,
    /// Command line, arguments joined by spaces (`None`: unreadable).
    pub cmdline: Option<String>,
    /// Start time (`None`: unreadable).
    pub start_time: Option<SystemTime>,
    /// Parent, grandparent, … (nearest first, bounded).
    pub ancestors: Vec<u32>,
}

/// Reads the facts of a live process (`None` if it does not exist or has exited).
pub fn facts(pid: u32) -> Option<ProcFacts> {
    let st = procfs::stat(pid).filter(|s| !s.is_exited())?;
    let mut ancestors = Vec::new();
    let mut cur = st.ppid;
    while cur > 1 && ancestors.len() < 64 {
        ancestors.push(cur);
        match procfs::stat(cur) {
            Some(s) if s.ppid != cur => cur = s.ppid,
            _ => break,
        }
    }
    Some(ProcFacts {
        identity: ProcessIdentity { pid, start_ticks: st.start_ticks },
        pgid: st.pgid,
        cmdline: procfs::cmdline(pid),
        start_time: procfs::start_time(pid),
        ancestors,
    })
}

/// Whether `cmdline` contains one of `markers` (the crate's one command-line rule).
fn names_any(cmdline: &str, markers: &[String]) -> bool {
    crate::port_holder::names_any(cmdline, markers.iter().map(String::as_str))
}

/// Whether a process a pidfile names is the daemon that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No live process has that pid.
    Gone,
    /// It is the legacy daemon.
    Verified,
    /// The pid belongs to something else now; the reason says why we think so.
    NotOurs(String),
}

/// Checks a pidfile record against the facts of the process it names (see the module doc).
pub fn verify(record: &PidRecord, facts: Option<&ProcFacts>, markers: &[String]) -> Verdict {
    let Some(f) = facts else { return Verdict::Gone };
    let Some(cmd) = &f.cmdline else {
        return Verdict::NotOurs("its command line cannot be read".to_owned());
    };
    if !names_any(cmd, markers) {
        return Verdict::NotOurs(format!("its command line {cmd:?} does not contain any of {markers:?}"));
    }
    let Some(started) = f.start_time else {
        return Verdict::NotOurs("its start time cannot be read".to_owned());
    };
    if started > record.mtime + START_TIME_SLACK {
        return Verdict::NotOurs(format!(
            "it started at {}, after the pidfile was written at {}: the pid was reused",
            crate::rfc3339::of_system(started),
            crate::rfc3339::of_system(record.mtime)
        ));
    }
    Verdict::Verified
}

/// A verified, live legacy process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LegacyProcess {
    /// `hub` or the module short.
    pub name: String,
    /// Its identity (pid + start ticks).
    #[serde(serialize_with = "ser_identity")]
    pub identity: ProcessIdentity,
    /// Its process group.
    pub pgid: u32,
    /// Its command line.
    pub cmdline: String,
}

fn ser_identity<S: serde::Serializer>(id: &ProcessIdentity, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u32(id.pid)
}

/// What a target's pidfile amounts to now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidfileState {
    /// No pidfile.
    Absent,
    /// The pidfile is unreadable or not a pid.
    Malformed(String),
    /// The pidfile names no live process (stale).
    Stale {
        /// The recorded pid.
        pid: u32,
    },
    /// The pidfile names the legacy daemon, alive.
    Running(LegacyProcess),
    /// The pidfile's pid now belongs to another process: report and remove, never signal.
    Reused {
        /// The recorded pid.
        pid: u32,
        /// That process's command line, if readable.
        cmdline: Option<String>,
        /// Why it is not ours.
        reason: String,
    },
}

/// Reads and verifies `target`'s pidfile.
pub fn inspect(target: &Target) -> PidfileState {
    let record = match pidfile::read_pidfile(&target.pidfile) {
        Ok(None) => return PidfileState::Absent,
        Ok(Some(r)) => r,
        Err(e) => return PidfileState::Malformed(e.to_string()),
    };
    let pid = record.pid as u32;
    let f = facts(pid);
    if f.is_some()
        && let Err(reason) = attributable(pid)
    {
        return PidfileState::Reused { pid, cmdline: f.and_then(|f| f.cmdline), reason };
    }
    match verify(&record, f.as_ref(), &target.markers) {
        Verdict::Gone => PidfileState::Stale { pid },
        Verdict::NotOurs(reason) => PidfileState::Reused { pid, cmdline: f.and_then(|f| f.cmdline), reason },
        Verdict::Verified => {
            let f = f.expect("verified implies facts");
            PidfileState::Running(LegacyProcess {
                name: target.name.clone(),
                identity: f.identity,
                pgid: f.pgid,
                cmdline: f.cmdline.unwrap_or_default(),
            })
        }
    }
}

/// What the cutover knows about processes it may stop.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// Verified legacy processes, alive now.
    pub legacy: Vec<LegacyProcess>,
    /// Members of legacy process groups recorded when step 4 stopped them (from the
    /// journal), by owner name: a survivor holding a port is attributable to its dead leader.
    pub legacy_members: Vec<(String, ProcessIdentity)>,
    /// The hub unit's main pid, when the manager reports one.
    pub supervised_root: Option<u32>,
}

/// Whose process holds a declared port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Attribution {
    /// A verified legacy process: step 4 stops it.
    Legacy {
        /// Its owner (`hub` or a module).
        name: String,
    },
    /// In the group of, or descended from, a legacy process: stopped with it, or swept.
    LegacyGroup {
        /// The owner of the legacy process.
        name: String,
    },
    /// The hub unit's own process tree (an earlier attempt's hub): stopped through the manager.
    Supervised,
    /// An orphan whose command line names Parachute and the port's owner: swept.
    Orphan {
        /// The port's owner.
        name: String,
    },
    /// Nothing ties it to this box: never signalled.
    Foreign,
}

impl Attribution {
    /// Whether the cutover may stop it.
    pub fn is_ours(&self) -> bool {
        !matches!(self, Attribution::Foreign)
    }
}

/// Attributes the holder `h` of `owner`'s port (see the module doc). Conservative: an
/// unreadable command line is never enough.
pub fn attribute(h: &ProcFacts, owner: &Target, known: &Known) -> Attribution {
    if let Some(l) = known.legacy.iter().find(|l| l.identity == h.identity) {
        return Attribution::Legacy { name: l.name.clone() };
    }
    if let Some(root) = known.supervised_root
        && (h.identity.pid == root || h.ancestors.contains(&root))
    {
        return Attribution::Supervised;
    }
    // A live leader keeps its pgid from being reused, so group membership is proof.
    if let Some(l) = known
        .legacy
        .iter()
        .find(|l| (l.pgid == l.identity.pid && h.pgid == l.pgid) || h.ancestors.contains(&l.identity.pid))
    {
        return Attribution::LegacyGroup { name: l.name.clone() };
    }
    if let Some((name, _)) = known.legacy_members.iter().find(|(_, id)| *id == h.identity) {
        return Attribution::LegacyGroup { name: name.clone() };
    }
    if let Some(cmd) = &h.cmdline
        && crate::port_holder::names_any(cmd, ["parachute"])
        && names_any(cmd, &owner.markers)
    {
        return Attribution::Orphan { name: owner.name.clone() };
    }
    Attribution::Foreign
}

/// A process holding a declared port, with its attribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// The port.
    pub port: u16,
    /// The port's owner (`hub` or a module).
    pub owner: String,
    /// The holder's pid.
    pub pid: u32,
    /// Its command line (sanitized for display), if readable.
    pub cmdline: Option<String>,
    /// Whose it is.
    pub attribution: Attribution,
    /// Its identity, for signalling.
    #[serde(skip)]
    pub identity: ProcessIdentity,
}

/// Every process listening on `target.port`, attributed.
pub fn holders(target: &Target, known: &Known) -> Vec<Holder> {
    let mut pids: Vec<u32> = procfs::listeners(target.port).into_iter().map(|l| l.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter()
        .filter_map(facts)
        .map(|f| Holder {
            port: target.port,
            owner: target.name.clone(),
            pid: f.identity.pid,
            cmdline: f.cmdline.as_deref().map(sanitize),
            attribution: if attributable(f.identity.pid).is_ok() {
                attribute(&f, target, known)
            } else {
                Attribution::Foreign
            },
            identity: f.identity,
        })
        .collect()
}

/// Whether the cutover may signal `pid` at all, whatever its command line says: never init
/// (pid ≤ 1), never this process, and only a process whose real and effective uid are those
/// of whoever we act as on the home (`crate::privsep`: the home's owner when we are root).
/// The home's files are that user's, so they may only name that user's processes.
pub fn attributable(pid: u32) -> Result<(), String> {
    if pid <= 1 {
        return Err(format!("pid {pid} is init; it is never signalled"));
    }
    if pid == std::process::id() {
        return Err("it is this very process".to_owned());
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("its owner cannot be read ({e})"))?;
    let uids: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .map(|rest| rest.split_whitespace().filter_map(|u| u.parse().ok()).collect())
        .unwrap_or_default();
    let want = crate::privsep::acting_uid();
    match uids.as_slice() {
        [real, effective, ..] if *real == want && *effective == want => Ok(()),
        [real, effective, ..] => Err(format!(
            "it runs as uid {real} (effective {effective}), not as uid {want} who owns this home; it is never signalled"
        )),
        _ => Err("its owner cannot be read".to_owned()),
    }
}

/// Whether anything listens on `port` (from the listen table; no connection is made). A
/// port whose listeners cannot be established counts as in use: never assumed free.
pub fn port_in_use(facts: &dyn ProcessFacts, port: u16) -> bool {
    facts.listening_sockets(port).map_or(true, |s| !s.is_empty())
}

/// What the cutover could not verify about `targets` through `facts`, one sentence each:
/// the identity, start time and command line of each pid a pidfile names, and the holders
/// of each declared port. Empty when everything it will act on can be established; the
/// cutover acts on nothing otherwise (no pidfile removed, no port called free, no signal).
pub fn unverifiable(facts: &dyn ProcessFacts, targets: &[Target]) -> Vec<String> {
    let mut out = Vec::new();
    for t in targets {
        if let Ok(Some(record)) = pidfile::read_pidfile(&t.pidfile) {
            let pid = record.pid as u32;
            let checks = [
                facts.stat(pid).err(),
                facts.start_time(pid).err(),
                facts.argv(pid).err(),
                facts.cwd(pid).err(),
            ];
            if let Some(e) = checks.into_iter().flatten().next() {
                out.push(format!(
                    "{}'s pidfile {} names pid {pid}, and {e}: it may be the live daemon, so its pidfile is kept and it is not signalled.",
                    t.name,
                    t.pidfile.display()
                ));
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in targets.iter().filter(|t| seen.insert(t.port)) {
        if let Err(e) = facts.listeners(t.port) {
            out.push(format!(
                "Port {} ({}): {e}; it is not assumed free, and nothing holding it is stopped.",
                t.port, t.name
            ));
        }
    }
    out
}

/// Makes foreign text (a command line from `/proc`) safe to print on one line: escaped by
/// [`crate::text::field`] and clipped to 200 characters.
pub fn sanitize(s: &str) -> String {
    crate::text::field_clipped(s, 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, markers: &[&str]) -> Target {
        Target {
            name: name.into(),
            module: (name != "hub").then(|| ModuleName::parse(name).unwrap()),
            port: 1940,
            pidfile: PathBuf::from("/ph/x.pid"),
            markers: markers.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn proc_(pid: u32, pgid: u32, cmd: Option<&str>, started: SystemTime, ancestors: &[u32]) -> ProcFacts {
        ProcFacts {
            identity: ProcessIdentity { pid, start_ticks: u64::from(pid) * 10 },
            pgid,
            cmdline: cmd.map(str::to_owned),
            start_time: Some(started),
            ancestors: ancestors.to_vec(),
        }
    }

    /// (what, facts of the process the pidfile names, expected verdict).
    type VerifyCase = (&'static str, Option<ProcFacts>, fn(&Verdict) -> bool);

    #[test]
    fn verify_table_w13() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let rec = PidRecord { pid: 10, mtime: t0 };
        let m = vec!["parachute-vault".to_owned()];
        let early = t0 - Duration::from_secs(5);
        let cases: Vec<VerifyCase> = vec![
            ("no process", None, |v| *v == Verdict::Gone),
            (
                "the daemon, started before the pidfile was written",
                Some(proc_(10, 10, Some("/opt/bin/parachute-vault serve"), early, &[])),
                |v| *v == Verdict::Verified,
            ),
            (
                "marker matched case-insensitively",
                Some(proc_(10, 10, Some("/opt/Parachute-Vault"), early, &[])),
                |v| *v == Verdict::Verified,
            ),
            (
                "within the clock slack",
                Some(proc_(10, 10, Some("parachute-vault"), t0 + Duration::from_millis(500), &[])),
                |v| *v == Verdict::Verified,
            ),
            (
                "pid reused by an unrelated program",
                Some(proc_(10, 10, Some("sleep 1000"), early, &[])),
                |v| matches!(v, Verdict::NotOurs(r) if r.contains("sleep 1000")),
            ),
            (
                "pid reused by a later instance of the same program",
                Some(proc_(10, 10, Some("parachute-vault"), t0 + Duration::from_secs(60), &[])),
                |v| matches!(v, Verdict::NotOurs(r) if r.contains("reused")),
            ),
            (
                "a sibling module is not this module",
                Some(proc_(10, 10, Some("parachute-scribe"), early, &[])),
                |v| matches!(v, Verdict::NotOurs(_)),
            ),
            ("unreadable command line", Some(proc_(10, 10, None, early, &[])), |v| {
                matches!(v, Verdict::NotOurs(_))
            }),
        ];
        for (what, f, ok) in cases {
            let v = verify(&rec, f.as_ref(), &m);
            assert!(ok(&v), "{what}: {v:?}");
        }
    }

    #[test]
    fn attribution_table_w14_w16() {
        let t = SystemTime::UNIX_EPOCH;
        let vault = target("vault", &["parachute-vault"]);
        let hub = target("hub", &["parachute-hub", "hub-server"]);
        let legacy_vault = LegacyProcess {
            name: "vault".into(),
            identity: ProcessIdentity { pid: 100, start_ticks: 1000 },
            pgid: 100,
            cmdline: "parachute-vault".into(),
        };
        let known = Known {
            legacy: vec![legacy_vault.clone()],
            legacy_members: vec![("scribe".into(), ProcessIdentity { pid: 300, start_ticks: 3000 })],
            supervised_root: Some(500),
        };
        let cases: Vec<(&str, ProcFacts, &Target, Attribution)> = vec![
            (
                "the verified legacy process itself",
                ProcFacts { identity: legacy_vault.identity, ..proc_(100, 100, Some("x"), t, &[]) },
                &vault,
                Attribution::Legacy { name: "vault".into() },
            ),
            (
                "a grandchild in the legacy group, whatever its command line",
                proc_(101, 100, Some("bun run server.ts"), t, &[1]),
                &vault,
                Attribution::LegacyGroup { name: "vault".into() },
            ),
            (
                "a descendant that left the group",
                proc_(102, 102, Some("node x"), t, &[100, 1]),
                &vault,
                Attribution::LegacyGroup { name: "vault".into() },
            ),
            (
                "a survivor of a group stopped by an earlier run (journal)",
                proc_(300, 299, Some("bun"), t, &[]),
                &vault,
                Attribution::LegacyGroup { name: "scribe".into() },
            ),
            (
                "same pid as a recorded member but another start time: reused",
                ProcFacts {
                    identity: ProcessIdentity { pid: 300, start_ticks: 9 },
                    ..proc_(300, 299, Some("bun"), t, &[])
                },
                &vault,
                Attribution::Foreign,
            ),
            (
                "the unit's main pid",
                proc_(500, 500, Some("parachute serve"), t, &[]),
                &hub,
                Attribution::Supervised,
            ),
            (
                "a child of the unit's hub",
                proc_(501, 501, Some("anything"), t, &[500]),
                &vault,
                Attribution::Supervised,
            ),
            (
                "an orphan naming parachute and this module",
                proc_(600, 600, Some("/home/op/.bun/bin/parachute-vault serve"), t, &[]),
                &vault,
                Attribution::Orphan { name: "vault".into() },
            ),
            (
                "a sibling module's process on this module's port (#601)",
                proc_(601, 601, Some("/home/op/.bun/bin/parachute-scribe"), t, &[]),
                &vault,
                Attribution::Foreign,
            ),
            (
                "the module marker without parachute is not enough",
                proc_(602, 602, Some("vault server -dev"), t, &[]),
                &vault,
                Attribution::Foreign,
            ),
            (
                "an unrelated program on the hub port",
                proc_(603, 603, Some("python3 -m http.server"), t, &[]),
                &hub,
                Attribution::Foreign,
            ),
            ("unreadable command line", proc_(604, 604, None, t, &[]), &vault, Attribution::Foreign),
            (
                "a legacy hub orphan on the hub port",
                proc_(605, 605, Some("/usr/bin/parachute-hub"), t, &[]),
                &hub,
                Attribution::Orphan { name: "hub".into() },
            ),
        ];
        for (what, f, owner, want) in cases {
            assert_eq!(attribute(&f, owner, &known), want, "{what}");
        }
    }

    #[test]
    fn non_leader_legacy_process_does_not_claim_its_group() {
        // A legacy process started without setsid shares its group with, e.g., a shell.
        let legacy = LegacyProcess {
            name: "vault".into(),
            identity: ProcessIdentity { pid: 100, start_ticks: 1 },
            pgid: 50,
            cmdline: "parachute-vault".into(),
        };
        let known = Known { legacy: vec![legacy], ..Default::default() };
        let shell_sibling = proc_(51, 50, Some("bash"), SystemTime::UNIX_EPOCH, &[]);
        assert_eq!(
            attribute(&shell_sibling, &target("vault", &["parachute-vault"]), &known),
            Attribution::Foreign
        );
    }

    #[test]
    fn sanitize_keeps_one_line() {
        assert_eq!(sanitize("a\nb\u{1b}[31m"), "a\\nb\\e[31m");
        assert!(sanitize(&"x".repeat(300)).ends_with("…(+100 bytes)"));
    }
}
