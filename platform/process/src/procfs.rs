//! The host's process facts as plain values: stat and command line, pid-reuse-safe
//! identities, TCP listeners and who holds them, ancestry and process-group membership.
//!
//! Each function asks [`crate::facts::host`] (Linux: `/proc` and `NETLINK_SOCK_DIAG`; macOS:
//! libproc and `sysctl`) and folds "could not be established" into `None` / empty / `false`.
//! That is right for readiness polls and diagnostics; a caller about to delete a pidfile,
//! call a port free or signal a process uses [`crate::facts::ProcessFacts`] and stops on
//! [`crate::facts::Unavailable`]. Nothing here forks (no `lsof`/`ps`: a fork per probe
//! blocked the upstream hub). Costs on Linux:
//! - [`stat`], [`cmdline`], [`identity`], [`is_same_process`], [`start_time`]: one small file
//!   read (microseconds).
//! - [`is_descendant`]: one stat read per ancestry hop (bounded to [`MAX_ANCESTRY`] hops).
//! - [`children_of`]: one read per thread of the parent.
//! - [`group_members`]: one stat read per process on the machine (a `/proc` scan).
//! - [`listening_sockets`]: one `NETLINK_SOCK_DIAG` dump of the listening sockets per address
//!   family (microseconds; see `sockdiag`), else `/proc/net/tcp` and `/proc/net/tcp6` (about a
//!   millisecond: printing them walks every established socket's hash bucket).
//! - [`listeners`]: the above, then — only if something listens on the port — a readlink per
//!   open fd of every process (milliseconds on a busy host). [`listeners_among`] limits the fd
//!   scan to given pids (e.g. one module's process group) and is the cheap readiness check.
//!
//! On macOS every socket question is a walk over the descriptors of the processes asked
//! about (see `facts::macos`). Callers on an async runtime may run the scanning ones via
//! `spawn_blocking` if they poll them often on a large host.

use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// How many parent hops [`is_descendant`] follows before giving up (a cycle cannot happen in a
/// consistent snapshot, but `/proc` is read while processes come and go).
pub const MAX_ANCESTRY: usize = 4096;

/// The fields of `/proc/<pid>/stat` this crate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    /// The kernel's `comm` (executable name, at most 15 bytes); may contain spaces and `)`.
    pub comm: String,
    /// `R`, `S`, `D`, `Z` (zombie: exited, not yet reaped), `T`, `t`, `X`, `I`, ...
    pub state: char,
    pub ppid: u32,
    pub pgid: u32,
    pub sid: u32,
    /// Start time in clock ticks after boot: with `pid`, a pid-reuse-safe identity.
    pub start_ticks: u64,
}

impl ProcStat {
    /// Zombies (`Z`) and dead tasks (`X`) have exited: they hold their pid but run nothing.
    pub fn is_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// A process that cannot be confused with a later one reusing its pid: the pid plus its
/// start time in clock ticks since boot. Serializable so a supervisor can persist it and
/// prove, after its own restart, that a pid still names the process it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: u32,
    pub start_ticks: u64,
}

/// One process holding a listening TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Listener {
    pub pid: u32,
    /// The socket's inode (the `socket:[N]` of `/proc/<pid>/fd`): equal inodes are one socket
    /// shared by several processes (forking servers).
    pub inode: u64,
    /// The local address it is bound to (`0.0.0.0`, `::`, `127.0.0.1`, `::1`, ...).
    pub addr: IpAddr,
}

/// A listening TCP socket held by a process, with its local port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeldPort {
    /// The local port it listens on.
    pub port: u16,
    /// The process and the socket.
    pub listener: Listener,
}

/// One listening TCP socket (not yet attributed to a process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenSocket {
    pub inode: u64,
    pub addr: IpAddr,
}

/// The memory one process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    /// Resident set size in bytes (pages shared with other processes counted in full).
    pub rss_bytes: u64,
    /// Proportional set size in bytes (each shared page divided among its sharers), where the
    /// platform gives it cheaply (Linux: `/proc/<pid>/smaps_rollup`); `None` elsewhere.
    pub pss_bytes: Option<u64>,
}

/// The CPU time one process has used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTime {
    /// User plus system time of the process itself (all its threads).
    pub own: std::time::Duration,
    /// User plus system time of its children that it waited for (Linux `cutime + cstime`);
    /// `None` where the platform does not say.
    pub reaped_children: Option<std::time::Duration>,
}

impl CpuTime {
    /// Its own time plus its reaped children's (what it has cost, as far as is known).
    pub fn total(&self) -> std::time::Duration {
        self.own + self.reaped_children.unwrap_or_default()
    }
}

/// `utime stime cutime cstime` (clock ticks) from the text of `/proc/<pid>/stat`: fields 14
/// to 17 of proc(5), counted after the last `)` like [`parse_stat`].
pub fn parse_stat_cpu(text: &str) -> Option<[u64; 4]> {
    let close = text.rfind(')')?;
    let mut rest = text[close + 1..].split_ascii_whitespace().skip(14 - 3);
    let mut out = [0u64; 4];
    for v in &mut out {
        *v = rest.next()?.parse().ok()?;
    }
    Some(out)
}

/// A `kB` line of `/proc/<pid>/smaps_rollup` or `/proc/<pid>/status` (`Pss:  1234 kB`), in
/// bytes.
pub fn parse_kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.split_ascii_whitespace().next()?.parse().ok()?;
        kb.checked_mul(1024)
    })
}

/// Parse the text of `/proc/<pid>/stat`. The `comm` field is wrapped in parentheses and may
/// itself contain spaces and `)`, so the fixed fields start after the LAST `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_owned();
    // Fields after comm, numbered from 3 in proc(5): state(3) ppid(4) pgrp(5) session(6) ...
    // starttime(22).
    let mut rest = text[close + 1..].split_ascii_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgid = rest.next()?.parse().ok()?;
    let sid = rest.next()?.parse().ok()?;
    let start_ticks = rest.nth(22 - 7)?.parse().ok()?;
    Some(ProcStat { pid, comm, state, ppid, pgid, sid, start_ticks })
}

/// Join a raw `/proc/<pid>/cmdline` (NUL-separated) with spaces. `None` when empty, which is
/// what kernel threads and zombies show.
pub fn parse_cmdline(raw: &[u8]) -> Option<String> {
    let end = raw.iter().rposition(|&b| b != 0)? + 1;
    let parts: Vec<_> = raw[..end].split(|&b| b == 0).map(String::from_utf8_lossy).collect();
    Some(parts.join(" "))
}

/// The most of a process's environment [`environ_vars`] reads (what callers look for is set
/// by a parent near the top; the kernel's own limit is far larger).
pub const MAX_ENVIRON: u64 = 256 * 1024;

// The host's facts (`crate::facts`), with "unknown" folded into `None` / empty / `false`.
// Callers that must not act on an unknown fact use `crate::facts::ProcessFacts` instead.
use crate::facts::host_ref;

/// The process's stat fields. `None` if it does not exist (any more), or cannot be read.
pub fn stat(pid: u32) -> Option<ProcStat> {
    host_ref().stat(pid).ok().flatten()
}

/// The cgroup `pid` is in: the unified (v2) path, else the v1 `name=systemd` one. `None`
/// where there are no cgroups (macOS) or the file cannot be read. Read directly rather than
/// through the facts layer: it is a Linux-only fact, recorded, never acted on.
pub fn cgroup(pid: u32) -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        use std::io::Read;
        let mut text = String::new();
        // A few lines per hierarchy; a bounded read all the same.
        std::fs::File::open(format!("/proc/{pid}/cgroup"))
            .ok()?
            .take(16 * 1024)
            .read_to_string(&mut text)
            .ok()?;
        parse_cgroup(&text)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// The path of `/proc/<pid>/cgroup`'s unified line (`0::/path`), else of the
/// `name=systemd` hierarchy.
pub fn parse_cgroup(text: &str) -> Option<String> {
    let path_of = |prefix: &str| {
        text.lines().find_map(|l| l.strip_prefix(prefix)).map(str::to_owned).filter(|p| p.starts_with('/'))
    };
    path_of("0::").or_else(|| {
        text.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrl, path) = (parts.next()?, parts.next()?, parts.next()?);
            (ctrl == "name=systemd" && path.starts_with('/')).then(|| path.to_owned())
        })
    })
}

/// The command line of `pid`, arguments joined by spaces. `None` if unreadable or empty
/// (kernel threads, zombies).
pub fn cmdline(pid: u32) -> Option<String> {
    host_ref().cmdline(pid).ok().flatten()
}

/// The arguments of `pid`, `argv[0]` first. `None` if unreadable or empty.
pub fn argv(pid: u32) -> Option<Vec<String>> {
    host_ref().argv(pid).ok().flatten()
}

/// The current working directory of `pid` (`None` if unreadable: another user's process,
/// or gone).
pub fn cwd(pid: u32) -> Option<std::path::PathBuf> {
    host_ref().cwd(pid).ok().flatten()
}

/// The executable `pid` runs (`None` if unreadable).
pub fn exe(pid: u32) -> Option<std::path::PathBuf> {
    host_ref().exe(pid).ok().flatten()
}

/// The values of `keys` in the environment `pid` was started with, in `keys` order (absent
/// keys skipped). Reads at most [`MAX_ENVIRON`] bytes; `None` if unreadable.
pub fn environ_vars(pid: u32, keys: &[&str]) -> Option<Vec<(String, String)>> {
    host_ref().environ_vars(pid, keys).ok().flatten()
}

/// When `pid` started (Linux: to one clock tick, usually 10 ms; macOS: to the microsecond).
pub fn start_time(pid: u32) -> Option<SystemTime> {
    host_ref().start_time(pid).ok().flatten()
}

/// The identity of a live process. `None` if it does not exist, has already exited (a zombie
/// runs nothing and only waits to be reaped), or cannot be read.
pub fn identity(pid: u32) -> Option<ProcessIdentity> {
    host_ref().identity(pid).ok().flatten()
}

/// Whether `id.pid` is alive and still the same process (same start stamp): a recycled pid
/// gives `false`, and so does a zombie, and a process that cannot be read.
pub fn is_same_process(id: &ProcessIdentity) -> bool {
    host_ref().is_same_process(id).unwrap_or(false)
}

/// The memory `pid` holds (`None` if it does not exist or cannot be read).
pub fn memory(pid: u32) -> Option<Memory> {
    host_ref().memory(pid).ok().flatten()
}

/// The CPU time `pid` has used (`None` if it does not exist or cannot be read).
pub fn cpu_time(pid: u32) -> Option<CpuTime> {
    host_ref().cpu_time(pid).ok().flatten()
}

/// Every listening TCP socket (v4 and v6) on local `port` (empty if unknown).
pub fn listening_sockets(port: u16) -> Vec<ListenSocket> {
    host_ref().listening_sockets(port).unwrap_or_default()
}

/// Every process holding a socket that listens on TCP `port`, one entry per (process,
/// socket): a socket shared by a forking server's workers yields each worker.
pub fn listeners(port: u16) -> Vec<Listener> {
    host_ref().listeners(port).unwrap_or_default()
}

/// Like [`listeners`], but only looks at the descriptors of `pids` (e.g. the members of one
/// process group): cheap enough for a readiness poll loop.
pub fn listeners_among(port: u16, pids: &[u32]) -> Vec<Listener> {
    host_ref().listeners_among(port, pids).unwrap_or_default()
}

/// Whether `pid` descends from `ancestor` (strictly: a process is not its own descendant),
/// following the parent chain at most [`MAX_ANCESTRY`] hops.
pub fn is_descendant(pid: u32, ancestor: u32) -> bool {
    host_ref().is_descendant(pid, ancestor).unwrap_or(false)
}

/// The direct children of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    host_ref().children_of(pid).unwrap_or_default()
}

/// Live (not exited) processes whose process group is `pgid`, the leader included if it is
/// alive. A scan of every process.
pub fn group_members(pgid: u32) -> Vec<u32> {
    host_ref().group_members(pgid).unwrap_or_default()
}

/// Every live (not exited) process by process group: `pgid → pids`, from one scan of every
/// process (what [`group_members`] costs for one group, for all of them at once).
pub fn groups() -> std::collections::HashMap<u32, Vec<u32>> {
    let host = host_ref();
    let mut out: std::collections::HashMap<u32, Vec<u32>> = std::collections::HashMap::new();
    for p in host.all_pids().unwrap_or_default() {
        if let Ok(Some(s)) = host.stat(p)
            && !s.is_exited()
        {
            out.entry(s.pgid).or_default().push(p);
        }
    }
    out
}

/// Every pid on the machine (empty if the list cannot be read).
pub fn all_pids() -> impl Iterator<Item = u32> {
    host_ref().all_pids().unwrap_or_default().into_iter()
}

/// [`listening_sockets`] through `NETLINK_SOCK_DIAG` only, with its error (to compare the
/// two Linux sources in tests and diagnostics); callers want [`listening_sockets`].
#[cfg(target_os = "linux")]
pub fn listening_sockets_diag(port: u16) -> std::io::Result<Vec<ListenSocket>> {
    crate::facts::linux::listening_sockets_diag(port)
}

/// [`listening_sockets`] from `/proc/net/tcp{,6}` only: the Linux fallback (empty if
/// neither file can be read).
#[cfg(target_os = "linux")]
pub fn listening_sockets_proc(port: u16) -> Vec<ListenSocket> {
    crate::facts::linux::read_proc_net_tcp(port).unwrap_or_default()
}

/// `socket:[12345]` → 12345.
#[cfg(any(target_os = "linux", test))]
pub(crate) fn socket_inode(link: &[u8]) -> Option<u64> {
    let inner = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(inner).ok()?.parse().ok()
}

/// One line of `/proc/net/tcp{,6}`: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode
/// ...`. Returns the socket if it is in LISTEN (`0A`) on `port`.
#[cfg(any(target_os = "linux", test))]
pub(crate) fn parse_tcp_line(line: &str, v6: bool, port: u16) -> Option<ListenSocket> {
    parse_tcp_listen_line(line, v6).filter(|(p, _)| *p == port).map(|(_, s)| s)
}

/// Like [`parse_tcp_line`], for any port: `(port, socket)` of a line in LISTEN.
#[cfg(any(target_os = "linux", test))]
pub(crate) fn parse_tcp_listen_line(line: &str, v6: bool) -> Option<(u16, ListenSocket)> {
    let mut f = line.split_ascii_whitespace();
    let local = f.nth(1)?;
    let state = f.nth(1)?;
    if state != "0A" {
        return None;
    }
    let (addr_hex, port_hex) = local.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let inode: u64 = f.nth(5)?.parse().ok()?;
    if inode == 0 {
        return None;
    }
    Some((port, ListenSocket { inode, addr: parse_hex_addr(addr_hex, v6)? }))
}

/// The kernel prints addresses as 32-bit words in host byte order (`%08X` of the in-memory
/// word), so each word's native-endian bytes are the address bytes in network order.
#[cfg(any(target_os = "linux", test))]
pub(crate) fn parse_hex_addr(hex: &str, v6: bool) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?.to_ne_bytes())
    };
    if v6 {
        if hex.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        for i in 0..4 {
            b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
        }
        Some(IpAddr::from(b))
    } else {
        if hex.len() != 8 {
            return None;
        }
        Some(IpAddr::from(word(0)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn cgroup_prefers_the_unified_line_then_the_systemd_hierarchy() {
        let hybrid = "9:name=systemd:/user.slice/u.service\n4:memory:/m\n0::/system.slice/hub.service\n";
        assert_eq!(parse_cgroup(hybrid).as_deref(), Some("/system.slice/hub.service"));
        assert_eq!(parse_cgroup("12:name=systemd:/a/b\n3:cpu:/c\n").as_deref(), Some("/a/b"));
        assert_eq!(parse_cgroup("3:cpu:/c\n"), None);
        assert_eq!(parse_cgroup(""), None);
        #[cfg(target_os = "linux")]
        assert!(cgroup(std::process::id()).is_some_and(|p| p.starts_with('/')));
    }

    #[test]
    fn stat_comm_with_spaces_and_parens() {
        let text = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 \
                    1000 50 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let st = parse_stat(text).unwrap();
        assert_eq!(
            st,
            ProcStat {
                pid: 4242,
                comm: "a b) c".into(),
                state: 'S',
                ppid: 1,
                pgid: 4242,
                sid: 4242,
                start_ticks: 987654
            }
        );
        assert!(parse_stat("12 (x) S 1 2").is_none(), "truncated stat must not parse");
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn stat_cpu_fields_and_kb_lines() {
        let text = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 11 22 33 44 20 0 1 0 987654 \
                    1000 50 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(parse_stat_cpu(text), Some([11, 22, 33, 44]));
        assert_eq!(parse_stat_cpu("12 (x) S 1 2"), None);
        let rollup = "00400000-7ffd [rollup]\nRss:               51400 kB\nPss:               25700 kB\nPss_Anon: 1 kB\n";
        assert_eq!(parse_kb_field(rollup, "Pss"), Some(25700 * 1024));
        assert_eq!(parse_kb_field(rollup, "Rss"), Some(51400 * 1024));
        assert_eq!(parse_kb_field(rollup, "Swap"), None);
    }

    #[test]
    fn cmdline_joins_and_trims() {
        assert_eq!(parse_cmdline(b"sleep\x0010\x00").as_deref(), Some("sleep 10"));
        assert_eq!(parse_cmdline(b"a b\x00c\x00\x00").as_deref(), Some("a b c"));
        assert_eq!(parse_cmdline(b""), None);
        assert_eq!(parse_cmdline(b"\x00\x00"), None);
    }

    #[test]
    fn tcp_lines() {
        let v4 = "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            parse_tcp_line(v4, false, 8080),
            Some(ListenSocket { inode: 31337, addr: IpAddr::V4(Ipv4Addr::LOCALHOST) })
        );
        assert_eq!(parse_tcp_line(v4, false, 8081), None, "other port");
        let established = v4.replace(" 0A ", " 01 ");
        assert_eq!(parse_tcp_line(&established, false, 8080), None, "not LISTEN");

        let loopback6 = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            parse_tcp_line(loopback6, true, 8080),
            Some(ListenSocket { inode: 777, addr: IpAddr::V6(Ipv6Addr::LOCALHOST) })
        );
        let mapped = "   0: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 778 1 0000000000000000 100 0 0 10 0";
        let expected: Ipv6Addr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(
            parse_tcp_line(mapped, true, 8080),
            Some(ListenSocket { inode: 778, addr: IpAddr::V6(expected) })
        );
        assert_eq!(parse_tcp_line("  sl  local_address rem_address   st", false, 8080), None);
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode(b"socket:[123]"), Some(123));
        assert_eq!(socket_inode(b"pipe:[123]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
    }
}
