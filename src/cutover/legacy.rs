//! Inspecting a box that still runs the legacy detached daemons: which processes the
//! pidfiles name, whether each really is the daemon that wrote the file, and whose process
//! is holding each declared port.
//!
//! Two questions are answered by pure functions over facts read from `/proc`, so the
//! policy can be table-tested without processes:
//!
//! - [`verify`]: is the process a pidfile names the daemon that wrote it? Pidfiles survive
//!   reboots and processes do not, so a pid may now belong to anything (upstream W13). The
//!   process must be alive and have started no later than the pidfile was written, **and**
//!   one more fact must tie it to the pidfile's row ([`Evidence`]):
//!   - its program is the row's: the basename of `argv[0]` or of the executable — or, for
//!     a generic runtime (`bun`, `node`, `python3`, …), of its script — is one of the row's
//!     names (`parachute-vault`, `hub-server`; a whole name, never a substring), or lies
//!     under the row's `installDir`;
//!   - its working directory is the row's `installDir` or below it (upstream 0.6.2 started
//!     every module with cwd = installDir, so `python3 server.py` is identified by this);
//!   - its environment holds `PORT=<the row's port>`, and, when it also holds
//!     `PARACHUTE_HUB_ORIGIN` naming a loopback port, that port is this box's hub.
//!
//!   An `installDir` too generic to mean anything (`/`, a top-level directory, the home
//!   or one of its ancestors) is no evidence. Anything else is reported and its pidfile
//!   removed; it is never signalled.
//! - [`attribute`]: may the cutover stop the process holding a declared port? Only when it
//!   is a verified legacy process, a member of a verified legacy process's group (or its
//!   descendant), the hub unit's own process tree (never signalled by the sweep: the
//!   manager owns it), or an orphan with the same evidence for the port's owner. Without
//!   a pidfile there is no start time to anchor it, so for an orphan the environment alone
//!   is not enough: its program or its working directory must be the owner's. Everything
//!   else is [`Attribution::Foreign`]: preflight aborts on it, naming it, and the sweep
//!   never signals it (upstream W14 killed whatever held the hub port).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use parachute_process::ProcessFacts;
use parachute_process::ProcessIdentity;
use parachute_process::procfs;
use serde::Serialize;

use crate::model::home::Home;
use crate::model::names::ModuleName;
use crate::model::pidfile::{self, PidRecord};
use crate::model::services::ServicesFile;

/// Program names of a legacy hub: the detached hub binary and upstream's direct entry
/// (`bun src/hub-server.ts`).
pub const HUB_NAMES: &[&str] = &["parachute-hub", "hub-server"];

/// Interpreters whose script, not themselves, names the program (`bun server.ts`).
pub const GENERIC_RUNTIMES: &[&str] =
    &["bun", "node", "nodejs", "deno", "python", "python3", "ruby", "perl", "sh", "bash", "tsx", "ts-node"];

/// The environment variables read as evidence.
pub const ENV_KEYS: &[&str] = &["PORT", "PARACHUTE_HUB_ORIGIN"];

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
    /// Lowercase program names (basenames, extension ignored) the legacy process runs as.
    pub names: Vec<String>,
    /// The row's `installDir`, when it is specific enough to be evidence.
    pub install_dir: Option<PathBuf>,
    /// The hub port of this box (a module's `PARACHUTE_HUB_ORIGIN` names it).
    pub hub_port: u16,
}

impl Target {
    /// Whether this is the hub.
    pub fn is_hub(&self) -> bool {
        self.module.is_none()
    }
}

/// Whether `dir` is specific enough to identify a module by: absolute, at least two
/// components deep, and neither the home nor one of its ancestors (`/home/op` would make
/// every shell of that user "in the install dir").
pub fn specific_install_dir(dir: &Path, home: &Path) -> bool {
    use std::path::Component;
    let depth = dir.components().filter(|c| matches!(c, Component::Normal(_))).count();
    dir.is_absolute() && depth >= 2 && !home.starts_with(dir)
}

/// The hub and every services.json module, with their ports, pidfiles and evidence. Rows
/// whose name cannot be a module name are skipped with a warning.
pub fn targets(home: &Home, hub_port: u16, services: &ServicesFile) -> (Vec<Target>, Vec<String>) {
    let mut out = vec![Target {
        name: "hub".to_owned(),
        module: None,
        port: hub_port,
        pidfile: home.hub_pidfile(),
        names: HUB_NAMES.iter().map(|m| (*m).to_owned()).collect(),
        install_dir: None,
        hub_port,
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
        let mut names = vec![row.name().to_lowercase()];
        if !short.as_str().starts_with("parachute-") {
            names.push(format!("parachute-{}", short.as_str().to_lowercase()));
        }
        names.sort();
        names.dedup();
        let install_dir = match row.install_dir() {
            Some(d) if specific_install_dir(d, home.root()) => Some(d.to_path_buf()),
            Some(d) => {
                warnings.push(format!(
                    "{}'s installDir {} is too general to identify its processes by; only its program name and environment are used",
                    short.as_str(),
                    crate::text::field(&d.to_string_lossy())
                ));
                None
            }
            None => None,
        };
        out.push(Target {
            name: short.as_str().to_owned(),
            pidfile: home.pidfile(&short),
            module: Some(short),
            port: row.port(),
            names,
            install_dir,
            hub_port,
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
    /// The arguments, `argv[0]` first (empty: unreadable).
    pub argv: Vec<String>,
    /// The executable (`None`: unreadable).
    pub exe: Option<PathBuf>,
    /// The working directory (`None`: unreadable).
    pub cwd: Option<PathBuf>,
    /// The [`ENV_KEYS`] present in its environment.
    pub env: Vec<(String, String)>,
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
        argv: procfs::argv(pid).unwrap_or_default(),
        exe: procfs::exe(pid),
        cwd: procfs::cwd(pid),
        env: procfs::environ_vars(pid, ENV_KEYS).unwrap_or_default(),
        start_time: procfs::start_time(pid),
        ancestors,
    })
}

/// `server.ts` → `server`, `parachute-vault` → `parachute-vault` (lowercased).
fn stem(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path).to_lowercase();
    match base.rsplit_once('.') {
        Some((s, ext))
            if !s.is_empty() && !ext.is_empty() && ext.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            s.to_owned()
        }
        _ => base,
    }
}

/// The paths that say which program a process runs: `argv[0]`, the executable, and for a
/// generic runtime its script (the first argument that is not an option or `run`).
fn program_paths(f: &ProcFacts) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(a0) = f.argv.first() {
        out.push(a0.clone());
    }
    if let Some(exe) = &f.exe {
        out.push(exe.to_string_lossy().into_owned());
    }
    let runtime = |p: &String| {
        let b = stem(p);
        GENERIC_RUNTIMES.contains(&b.as_str()) || b.starts_with("python3")
    };
    if out.iter().any(runtime)
        && let Some(script) = f.argv.iter().skip(1).find(|a| !a.starts_with('-') && a.as_str() != "run")
    {
        out.push(script.clone());
    }
    out
}

/// One fact that ties a process to a target (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// Its program (or script) is named like the target's program.
    Program(String),
    /// Its program (or script) lies under the target's installDir.
    ProgramInInstallDir(String),
    /// Its working directory is (under) the target's installDir.
    Cwd(PathBuf),
    /// Its environment holds the target's `PORT` (and this hub's origin, where set).
    Env,
}

impl Evidence {
    /// Whether this fact alone identifies a process that no pidfile names.
    fn names_program_or_place(&self) -> bool {
        !matches!(self, Evidence::Env)
    }
}

/// Every fact in `f` that ties the process to `t`, strongest first.
pub fn evidence(f: &ProcFacts, t: &Target) -> Vec<Evidence> {
    let mut out = Vec::new();
    let programs = program_paths(f);
    if let Some(p) = programs.iter().find(|p| t.names.contains(&stem(p))) {
        out.push(Evidence::Program(p.clone()));
    }
    if let Some(dir) = &t.install_dir {
        let under = |p: &Path| p.is_absolute() && p.starts_with(dir);
        let in_dir = programs.iter().find(|p| {
            let path = Path::new(p.as_str());
            // A relative script is relative to the cwd.
            under(path) || (!path.is_absolute() && f.cwd.as_deref().is_some_and(|c| under(&c.join(path))))
        });
        if let Some(p) = in_dir {
            out.push(Evidence::ProgramInInstallDir(p.clone()));
        }
        if let Some(cwd) = f.cwd.as_deref().filter(|c| under(c)) {
            out.push(Evidence::Cwd(cwd.to_path_buf()));
        }
    }
    let var = |k: &str| f.env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let port_matches = var("PORT").and_then(|p| p.trim().parse::<u16>().ok()) == Some(t.port);
    let origin_matches = var("PARACHUTE_HUB_ORIGIN").is_none_or(|o| match loopback_port(o) {
        Some(p) => p == t.hub_port,
        None => true,
    });
    if !t.is_hub() && port_matches && origin_matches {
        out.push(Evidence::Env);
    }
    out
}

/// The port of a loopback `http://127.0.0.1:N` / `http://localhost:N` origin.
fn loopback_port(origin: &str) -> Option<u16> {
    let rest = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    matches!(host, "127.0.0.1" | "localhost" | "[::1]").then_some(())?;
    port.parse().ok()
}

/// Whether a process a pidfile names is the daemon that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No live process has that pid.
    Gone,
    /// It is the legacy daemon (the facts that say so).
    Verified(Vec<Evidence>),
    /// The pid belongs to something else now; the reason says why we think so.
    NotOurs(String),
}

/// Checks a pidfile record against the facts of the process it names (see the module doc).
pub fn verify(record: &PidRecord, facts: Option<&ProcFacts>, target: &Target) -> Verdict {
    let Some(f) = facts else { return Verdict::Gone };
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
    let ev = evidence(f, target);
    if ev.is_empty() {
        return Verdict::NotOurs(format!(
            "nothing ties it to {}: its command line {} runs none of {}{}{}",
            target.name,
            f.cmdline.as_deref().map_or_else(|| "(unreadable)".to_owned(), sanitize),
            target.names.join(", "),
            match (&target.install_dir, &f.cwd) {
                (Some(d), Some(c)) => format!(
                    ", its working directory {} is not under {}",
                    sanitize(&c.to_string_lossy()),
                    sanitize(&d.to_string_lossy())
                ),
                _ => String::new(),
            },
            if target.is_hub() {
                String::new()
            } else {
                format!(", and its environment has no PORT={}", target.port)
            }
        ));
    }
    Verdict::Verified(ev)
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
    match verify(&record, f.as_ref(), target) {
        Verdict::Gone => PidfileState::Stale { pid },
        Verdict::NotOurs(reason) => PidfileState::Reused { pid, cmdline: f.and_then(|f| f.cmdline), reason },
        Verdict::Verified(_) => {
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
    /// An orphan whose program or working directory is the port owner's: swept.
    Orphan {
        /// The port's owner.
        name: String,
    },
    /// Nothing ties it to this box: never signalled.
    Foreign,
}

impl Attribution {
    /// Whether it belongs to this box (preflight accepts it).
    pub fn is_ours(&self) -> bool {
        !matches!(self, Attribution::Foreign)
    }

    /// Whether the cutover itself may signal it: not the foreign, and not the hub unit's
    /// own tree, which only the manager stops.
    pub fn is_sweepable(&self) -> bool {
        !matches!(self, Attribution::Foreign | Attribution::Supervised)
    }
}

/// Attributes the holder `h` of `owner`'s port (see the module doc). Conservative: what
/// cannot be read is never evidence.
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
    if evidence(h, owner).iter().any(Evidence::names_program_or_place) {
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

    fn target(name: &str, names: &[&str]) -> Target {
        Target {
            name: name.into(),
            module: (name != "hub").then(|| ModuleName::parse(name).unwrap()),
            port: 1940,
            pidfile: PathBuf::from("/ph/x.pid"),
            names: names.iter().map(|s| (*s).to_owned()).collect(),
            install_dir: (name != "hub").then(|| PathBuf::from(format!("/srv/mods/{name}"))),
            hub_port: 1939,
        }
    }

    fn proc_(pid: u32, pgid: u32, cmd: Option<&str>, started: SystemTime, ancestors: &[u32]) -> ProcFacts {
        let argv: Vec<String> = cmd.map(|c| c.split(' ').map(str::to_owned).collect()).unwrap_or_default();
        ProcFacts {
            identity: ProcessIdentity { pid, start_ticks: u64::from(pid) * 10 },
            pgid,
            cmdline: cmd.map(str::to_owned),
            argv,
            exe: None,
            cwd: Some(PathBuf::from("/home/op")),
            env: Vec::new(),
            start_time: Some(started),
            ancestors: ancestors.to_vec(),
        }
    }

    fn with_cwd(mut f: ProcFacts, cwd: &str) -> ProcFacts {
        f.cwd = Some(PathBuf::from(cwd));
        f
    }

    fn with_env(mut f: ProcFacts, env: &[(&str, &str)]) -> ProcFacts {
        f.env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        f
    }

    /// (what, facts of the process the pidfile names, expected verdict).
    type VerifyCase = (&'static str, Option<ProcFacts>, fn(&Verdict) -> bool);

    #[test]
    fn verify_table_w13() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let rec = PidRecord { pid: 10, mtime: t0 };
        let vault = target("vault", &["parachute-vault"]);
        let early = t0 - Duration::from_secs(5);
        let verified = |v: &Verdict| matches!(v, Verdict::Verified(_));
        let cases: Vec<VerifyCase> = vec![
            ("no process", None, |v| *v == Verdict::Gone),
            (
                "the daemon, started before the pidfile was written",
                Some(proc_(10, 10, Some("/opt/bin/parachute-vault serve"), early, &[])),
                verified,
            ),
            (
                "a bun-installed module: the script is named like the module",
                Some(proc_(10, 10, Some("bun /home/op/.bun/bin/parachute-vault serve"), early, &[])),
                verified,
            ),
            (
                "name matched case-insensitively",
                Some(proc_(10, 10, Some("/opt/Parachute-Vault"), early, &[])),
                verified,
            ),
            (
                "within the clock slack",
                Some(proc_(10, 10, Some("parachute-vault"), t0 + Duration::from_millis(500), &[])),
                verified,
            ),
            (
                "python3 server.py with cwd = installDir (C1)",
                Some(with_cwd(proc_(10, 10, Some("python3 server.py"), early, &[]), "/srv/mods/vault")),
                |v| matches!(v, Verdict::Verified(e) if e.iter().any(|e| matches!(e, Evidence::Cwd(_)))),
            ),
            (
                "bun web/server/src/server.ts with cwd below installDir",
                Some(with_cwd(
                    proc_(10, 10, Some("bun web/server/src/server.ts"), early, &[]),
                    "/srv/mods/vault/web",
                )),
                verified,
            ),
            (
                "an environment holding the row's PORT and this hub's origin",
                Some(with_env(
                    proc_(10, 10, Some("python3 server.py"), early, &[]),
                    &[("PORT", "1940"), ("PARACHUTE_HUB_ORIGIN", "http://127.0.0.1:1939")],
                )),
                |v| *v == Verdict::Verified(vec![Evidence::Env]),
            ),
            (
                "the row's PORT but another box's hub origin",
                Some(with_env(
                    proc_(10, 10, Some("python3 server.py"), early, &[]),
                    &[("PORT", "1940"), ("PARACHUTE_HUB_ORIGIN", "http://127.0.0.1:2939")],
                )),
                |v| matches!(v, Verdict::NotOurs(_)),
            ),
            (
                "another PORT",
                Some(with_env(proc_(10, 10, Some("python3 server.py"), early, &[]), &[("PORT", "1950")])),
                |v| matches!(v, Verdict::NotOurs(_)),
            ),
            (
                "the name as a mere substring is not the program",
                Some(proc_(10, 10, Some("/usr/bin/grep parachute-vault"), early, &[])),
                |v| matches!(v, Verdict::NotOurs(_)),
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
            ("unreadable everything", Some(proc_(10, 10, None, early, &[])), |v| {
                matches!(v, Verdict::NotOurs(_))
            }),
        ];
        for (what, f, ok) in cases {
            let v = verify(&rec, f.as_ref(), &vault);
            assert!(ok(&v), "{what}: {v:?}");
        }
        let hub = target("hub", HUB_NAMES);
        let bun_hub = proc_(10, 10, Some("bun /opt/hub/src/hub-server.ts --port 1939"), early, &[]);
        assert!(matches!(verify(&rec, Some(&bun_hub), &hub), Verdict::Verified(_)));
    }

    #[test]
    fn an_install_dir_too_general_is_no_evidence() {
        let home = Path::new("/home/op/.parachute");
        for dir in ["/", "/srv", "/home/op", "/home", "relative/dir"] {
            assert!(!specific_install_dir(Path::new(dir), home), "{dir}");
        }
        for dir in ["/srv/tinymod", "/home/op/.parachute/modules/x", "/home/op/code/vault"] {
            assert!(specific_install_dir(Path::new(dir), home), "{dir}");
        }
        let services = ServicesFile::parse_lenient(
            br#"{"services":[{"name":"tinymod","port":1950,"paths":["/t"],"health":"/h","version":"1","installDir":"/"}]}"#,
            Path::new("services.json"),
        );
        let (ts, warnings) = targets(&Home::new(home).unwrap(), 1939, &services.file);
        assert_eq!(ts[1].install_dir, None);
        assert!(warnings.iter().any(|w| w.contains("too general")), "{warnings:?}");
    }

    #[test]
    fn attribution_table_w14_w16() {
        let t = SystemTime::UNIX_EPOCH;
        let vault = target("vault", &["parachute-vault"]);
        let hub = target("hub", HUB_NAMES);
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
                "an orphan running this module's program",
                proc_(600, 600, Some("/home/op/.bun/bin/parachute-vault serve"), t, &[]),
                &vault,
                Attribution::Orphan { name: "vault".into() },
            ),
            (
                "an orphan from a checkout under installDir, no 'parachute' in its path (C2)",
                proc_(606, 606, Some("bun /srv/mods/vault/src/server.ts"), t, &[]),
                &vault,
                Attribution::Orphan { name: "vault".into() },
            ),
            (
                "an orphan whose cwd is installDir",
                with_cwd(proc_(607, 607, Some("python3 server.py"), t, &[]), "/srv/mods/vault"),
                &vault,
                Attribution::Orphan { name: "vault".into() },
            ),
            (
                "an orphan with only PORT in its environment: no pidfile anchors it",
                with_env(proc_(608, 608, Some("python3 server.py"), t, &[]), &[("PORT", "1940")]),
                &vault,
                Attribution::Foreign,
            ),
            (
                "a sibling module's process on this module's port (#601)",
                proc_(601, 601, Some("/home/op/.bun/bin/parachute-scribe"), t, &[]),
                &vault,
                Attribution::Foreign,
            ),
            (
                "a program merely named like the short is not enough",
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
    fn the_supervised_tree_is_ours_but_never_swept() {
        assert!(Attribution::Supervised.is_ours() && !Attribution::Supervised.is_sweepable());
        assert!(!Attribution::Foreign.is_ours() && !Attribution::Foreign.is_sweepable());
        assert!(Attribution::Orphan { name: "x".into() }.is_sweepable());
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
    fn loopback_origins() {
        assert_eq!(loopback_port("http://127.0.0.1:1939"), Some(1939));
        assert_eq!(loopback_port("http://localhost:1939/"), Some(1939));
        assert_eq!(loopback_port("https://box.example.com"), None);
    }

    #[test]
    fn sanitize_keeps_one_line() {
        assert_eq!(sanitize("a\nb\u{1b}[31m"), "a\\nb\\e[31m");
        assert!(sanitize(&"x".repeat(300)).ends_with("…(+100 bytes)"));
    }
}
