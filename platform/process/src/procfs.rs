//! Readers over Linux `/proc`: process stat and command line, pid-reuse-safe identities,
//! TCP listeners and who holds them, ancestry and process-group membership.
//!
//! Why hand-parsed `/proc` and not `lsof`/`ps`: these run in the supervisor's poll loops
//! (readiness, crash-path port checks), where a fork per probe blocked the upstream hub.
//! Every function here is synchronous, allocation-light and never forks. Costs, measured in
//! shape rather than promised in numbers:
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
//! Callers on an async runtime may run the scanning ones via `spawn_blocking` if they poll
//! them often on a large host. On other platforms these return `None`/empty: only the Linux
//! supervisor relies on them (see the crate doc).

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

/// One listening TCP socket (not yet attributed to a process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenSocket {
    pub inode: u64,
    pub addr: IpAddr,
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

#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(not(target_os = "linux"))]
pub use fallback::*;

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use std::collections::HashSet;
    use std::fs;
    use std::path::Path;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use crate::sockdiag::DiagError;

    /// Read and parse `/proc/<pid>/stat`. `None` if the process does not exist (any more).
    pub fn stat(pid: u32) -> Option<ProcStat> {
        let mut buf = [0u8; 1024];
        let n = read_small(&format!("/proc/{pid}/stat"), &mut buf)?;
        parse_stat(std::str::from_utf8(&buf[..n]).ok()?)
    }

    /// The command line of `pid`, arguments joined by spaces. `None` if unreadable or empty
    /// (kernel threads, zombies).
    pub fn cmdline(pid: u32) -> Option<String> {
        parse_cmdline(&fs::read(format!("/proc/{pid}/cmdline")).ok()?)
    }

    /// When `pid` started, from its start ticks, the boot time (`btime` in `/proc/stat`) and
    /// the clock tick rate. Accurate to one tick (usually 10 ms).
    pub fn start_time(pid: u32) -> Option<SystemTime> {
        let ticks = stat(pid)?.start_ticks;
        let hz = clock_ticks_per_second()?;
        let since_boot =
            Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz);
        Some(boot_time()? + since_boot)
    }

    /// The identity of a live process. `None` if it does not exist or has already exited
    /// (a zombie is not "alive": it runs nothing and only waits to be reaped).
    pub fn identity(pid: u32) -> Option<ProcessIdentity> {
        let st = stat(pid)?;
        (!st.is_exited()).then_some(ProcessIdentity { pid, start_ticks: st.start_ticks })
    }

    /// Whether `id.pid` is alive and still the same process (same start ticks): a recycled
    /// pid gives `false`. A zombie gives `false` too (documented: it has exited).
    pub fn is_same_process(id: &ProcessIdentity) -> bool {
        identity(id.pid).is_some_and(|now| now == *id)
    }

    /// Every listening TCP socket (v4 and v6) on local `port` in this network namespace.
    ///
    /// Asks the kernel over `NETLINK_SOCK_DIAG`, which walks only the listening hash
    /// (microseconds); falls back to [`listening_sockets_proc`] when that interface is missing
    /// or refused (some sandboxes, kernels without `inet_diag`), and after it has once been
    /// found missing, stops asking for the life of the process. Both report the same sockets
    /// with the same addresses (an `AF_INET6` socket is always a V6 address, v4-mapped ones
    /// included).
    pub fn listening_sockets(port: u16) -> Vec<ListenSocket> {
        static DIAG_UNSUPPORTED: AtomicBool = AtomicBool::new(false);
        if !DIAG_UNSUPPORTED.load(Ordering::Relaxed) {
            match crate::sockdiag::listening_sockets(port) {
                Ok(found) => return found,
                Err(DiagError::Unsupported(_)) => DIAG_UNSUPPORTED.store(true, Ordering::Relaxed),
                Err(DiagError::Failed(_)) => {}
            }
        }
        listening_sockets_proc(port)
    }

    /// [`listening_sockets`] through `NETLINK_SOCK_DIAG` only, with its error. Public so the
    /// two sources can be compared (tests, diagnostics); callers want [`listening_sockets`].
    pub fn listening_sockets_diag(port: u16) -> std::io::Result<Vec<ListenSocket>> {
        crate::sockdiag::listening_sockets(port).map_err(DiagError::into_io)
    }

    /// [`listening_sockets`] from the text of `/proc/net/tcp` and `/proc/net/tcp6` only: the
    /// fallback. Slow on any host with much RAM (the kernel walks its whole established-socket
    /// hash to print it): 1.6–1.8 ms per call on the development machine, against 16–20 µs
    /// for the netlink query.
    pub fn listening_sockets_proc(port: u16) -> Vec<ListenSocket> {
        let mut out = Vec::new();
        for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
            if let Ok(text) = fs::read_to_string(file) {
                out.extend(text.lines().skip(1).filter_map(|l| parse_tcp_line(l, v6, port)));
            }
        }
        out
    }

    /// Every process holding a socket that listens on TCP `port`, one entry per (process,
    /// socket): a socket shared by a forking server's workers yields each worker.
    pub fn listeners(port: u16) -> Vec<Listener> {
        let sockets = listening_sockets(port);
        if sockets.is_empty() {
            return Vec::new();
        }
        holders(&sockets, all_pids())
    }

    /// Like [`listeners`], but only looks at the fds of `pids` (e.g. the members of one
    /// process group): cheap enough for a readiness poll loop.
    pub fn listeners_among(port: u16, pids: &[u32]) -> Vec<Listener> {
        let sockets = listening_sockets(port);
        if sockets.is_empty() {
            return Vec::new();
        }
        holders(&sockets, pids.iter().copied())
    }

    /// Whether `pid` descends from `ancestor` (strictly: a process is not its own
    /// descendant), following the parent chain at most [`MAX_ANCESTRY`] hops.
    pub fn is_descendant(pid: u32, ancestor: u32) -> bool {
        let mut cur = pid;
        for _ in 0..MAX_ANCESTRY {
            let Some(st) = stat(cur) else { return false };
            if st.ppid == ancestor {
                return true;
            }
            if st.ppid == 0 || st.ppid == cur {
                return false;
            }
            cur = st.ppid;
        }
        false
    }

    /// The direct children of `pid` (all its threads' children), from
    /// `/proc/<pid>/task/*/children`; falls back to a `/proc` scan where that file is absent.
    pub fn children_of(pid: u32) -> Vec<u32> {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
        let mut out = Vec::new();
        for task in tasks.flatten() {
            match fs::read_to_string(task.path().join("children")) {
                Ok(text) => out.extend(text.split_ascii_whitespace().filter_map(|p| p.parse::<u32>().ok())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && task_exists(&task.path()) => {
                    // Kernel built without CONFIG_PROC_CHILDREN.
                    return all_pids().filter(|&p| stat(p).is_some_and(|s| s.ppid == pid)).collect();
                }
                Err(_) => {}
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Live (not exited) processes whose process group is `pgid`, the leader included if it
    /// is alive. A full `/proc` scan.
    pub fn group_members(pgid: u32) -> Vec<u32> {
        all_pids().filter(|&p| stat(p).is_some_and(|s| s.pgid == pgid && !s.is_exited())).collect()
    }

    /// Every pid currently listed in `/proc`.
    pub fn all_pids() -> impl Iterator<Item = u32> {
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
    }

    fn task_exists(task: &Path) -> bool {
        task.join("stat").exists()
    }

    fn holders(sockets: &[ListenSocket], pids: impl Iterator<Item = u32>) -> Vec<Listener> {
        let by_inode: std::collections::HashMap<u64, IpAddr> =
            sockets.iter().map(|s| (s.inode, s.addr)).collect();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for pid in pids {
            let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
            for fd in fds.flatten() {
                let Ok(target) = fs::read_link(fd.path()) else { continue };
                let Some(inode) = socket_inode(target.as_os_str().as_encoded_bytes()) else { continue };
                if let Some(&addr) = by_inode.get(&inode)
                    && seen.insert((pid, inode))
                {
                    out.push(Listener { pid, inode, addr });
                }
            }
        }
        out
    }

    /// Read a small file into `buf` (one read; `/proc` stat files are generated whole).
    fn read_small(path: &str, buf: &mut [u8]) -> Option<usize> {
        use std::io::Read;
        let mut f = fs::File::open(path).ok()?;
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        Some(n)
    }

    fn clock_ticks_per_second() -> Option<u64> {
        static HZ: OnceLock<Option<u64>> = OnceLock::new();
        *HZ.get_or_init(|| {
            // SAFETY: sysconf has no memory-safety preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
            u64::try_from(hz).ok().filter(|&h| h > 0)
        })
    }

    fn boot_time() -> Option<SystemTime> {
        static BTIME: OnceLock<Option<SystemTime>> = OnceLock::new();
        *BTIME.get_or_init(|| {
            let text = fs::read_to_string("/proc/stat").ok()?;
            let secs = text.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod fallback {
    //! No `/proc` here. These report "unknown" rather than guessing; the supervisor's
    //! readiness falls back to connect probes and attribution to the pidfile identity.
    use super::*;

    pub fn stat(_pid: u32) -> Option<ProcStat> {
        None
    }
    pub fn cmdline(_pid: u32) -> Option<String> {
        None
    }
    pub fn start_time(_pid: u32) -> Option<SystemTime> {
        None
    }
    pub fn identity(_pid: u32) -> Option<ProcessIdentity> {
        None
    }
    pub fn is_same_process(_id: &ProcessIdentity) -> bool {
        false
    }
    pub fn listening_sockets(_port: u16) -> Vec<ListenSocket> {
        Vec::new()
    }
    pub fn listening_sockets_diag(_port: u16) -> std::io::Result<Vec<ListenSocket>> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
    pub fn listening_sockets_proc(_port: u16) -> Vec<ListenSocket> {
        Vec::new()
    }
    pub fn listeners(_port: u16) -> Vec<Listener> {
        Vec::new()
    }
    pub fn listeners_among(_port: u16, _pids: &[u32]) -> Vec<Listener> {
        Vec::new()
    }
    pub fn is_descendant(_pid: u32, _ancestor: u32) -> bool {
        false
    }
    pub fn children_of(_pid: u32) -> Vec<u32> {
        Vec::new()
    }
    pub fn group_members(_pgid: u32) -> Vec<u32> {
        Vec::new()
    }
    pub fn all_pids() -> impl Iterator<Item = u32> {
        std::iter::empty()
    }
}

/// `socket:[12345]` → 12345.
#[cfg(any(target_os = "linux", test))]
fn socket_inode(link: &[u8]) -> Option<u64> {
    let inner = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(inner).ok()?.parse().ok()
}

/// One line of `/proc/net/tcp{,6}`: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode
/// ...`. Returns the socket if it is in LISTEN (`0A`) on `port`.
#[cfg(any(target_os = "linux", test))]
fn parse_tcp_line(line: &str, v6: bool, port: u16) -> Option<ListenSocket> {
    let mut f = line.split_ascii_whitespace();
    let local = f.nth(1)?;
    let state = f.nth(1)?;
    if state != "0A" {
        return None;
    }
    let (addr_hex, port_hex) = local.split_once(':')?;
    if u16::from_str_radix(port_hex, 16).ok()? != port {
        return None;
    }
    let inode: u64 = f.nth(5)?.parse().ok()?;
    if inode == 0 {
        return None;
    }
    Some(ListenSocket { inode, addr: parse_hex_addr(addr_hex, v6)? })
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
