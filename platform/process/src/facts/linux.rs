//! Process facts on Linux: `/proc` for processes, `NETLINK_SOCK_DIAG` (else
//! `/proc/net/tcp{,6}`) for listening sockets.
//!
//! Why hand-parsed `/proc` and not `lsof`/`ps`: these run in the supervisor's poll loops
//! (readiness, crash-path port checks), where a fork per probe blocked the upstream hub.
//! Costs: one small file read per stat/identity/cmdline (microseconds); a `/proc` scan for
//! [`ProcessFacts::group_members`]; one `sock_diag` dump per address family for
//! [`ProcessFacts::listening_sockets`] (16–20 µs; the `/proc/net` fallback about 1.7 ms);
//! a readlink per open fd of the scanned processes for the holders of a port.
//!
//! "Unknown" versus "absent": a missing `/proc/<pid>` is "no such process"; `EACCES` (another
//! user's process, `hidepid`), a missing `/proc` or an unparsable file is [`Unavailable`].

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use super::{Fact, ProcessFacts, Unavailable, pick_env};
use crate::procfs::{
    CpuTime, HeldPort, ListenSocket, Listener, MAX_ENVIRON, Memory, ProcStat, parse_kb_field, parse_stat,
    parse_stat_cpu, parse_tcp_line, parse_tcp_listen_line, socket_inode,
};
use crate::sockdiag::DiagError;

const SOURCE: &str = "linux-procfs";

/// The Linux implementation (stateless; the `sock_diag` availability is remembered
/// process-wide).
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxFacts;

fn unavailable(what: impl Into<String>, e: impl std::fmt::Display) -> Unavailable {
    Unavailable::new(SOURCE, what, e)
}

/// `Ok(None)` for "no such process" errors, `Err` for the rest.
fn absent_or<T>(r: io::Result<T>, what: impl FnOnce() -> String) -> Fact<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => Ok(None),
        Err(e) => Err(unavailable(what(), e)),
    }
}

/// Read a small file (one `/proc` stat is generated whole), bounded by `limit`.
///
/// Open, read into a 1 KiB buffer until end of file, close: three or four system calls for
/// a `/proc/<pid>/stat`. `read_to_end` costs twice that here (a `statx` for a size hint that
/// `/proc` reports as 0, then a 32-byte probe and growing reads, each of which makes the
/// kernel format the whole stat line again), and a `/proc` scan does this once per process.
fn read_bounded(path: &str, limit: u64) -> io::Result<Vec<u8>> {
    let mut file = fs::File::open(path)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let room =
            usize::try_from(limit.saturating_sub(buf.len() as u64)).unwrap_or(usize::MAX).min(chunk.len());
        if room == 0 {
            return Ok(buf);
        }
        match file.read(&mut chunk[..room]) {
            Ok(0) => return Ok(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

impl ProcessFacts for LinuxFacts {
    fn source(&self) -> &'static str {
        SOURCE
    }

    fn stat(&self, pid: u32) -> Fact<Option<ProcStat>> {
        let what = || format!("the state of pid {pid}");
        let Some(raw) = absent_or(read_bounded(&format!("/proc/{pid}/stat"), 4096), what)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&raw);
        parse_stat(&text).map(Some).ok_or_else(|| unavailable(what(), "/proc/<pid>/stat did not parse"))
    }

    fn uid(&self, pid: u32) -> Fact<Option<u32>> {
        let what = || format!("the owner of pid {pid}");
        let Some(raw) = absent_or(read_bounded(&format!("/proc/{pid}/status"), 64 * 1024), what)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&raw);
        let real = text
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_ascii_whitespace().next())
            .and_then(|u| u.parse().ok());
        real.map(Some).ok_or_else(|| unavailable(what(), "no Uid: line in /proc/<pid>/status"))
    }

    fn argv(&self, pid: u32) -> Fact<Option<Vec<String>>> {
        let what = || format!("the command line of pid {pid}");
        let Some(raw) = absent_or(fs::read(format!("/proc/{pid}/cmdline")), what)? else {
            return Ok(None);
        };
        Ok(split_argv(&raw))
    }

    fn exe(&self, pid: u32) -> Fact<Option<PathBuf>> {
        absent_or(fs::read_link(format!("/proc/{pid}/exe")), || format!("the executable of pid {pid}"))
    }

    fn cwd(&self, pid: u32) -> Fact<Option<PathBuf>> {
        absent_or(fs::read_link(format!("/proc/{pid}/cwd")), || format!("the working directory of pid {pid}"))
    }

    fn environ_vars(&self, pid: u32, keys: &[&str]) -> Fact<Option<Vec<(String, String)>>> {
        let what = || format!("the environment of pid {pid}");
        let raw = absent_or(read_bounded(&format!("/proc/{pid}/environ"), MAX_ENVIRON), what)?;
        Ok(raw.map(|block| pick_env(&block, keys)))
    }

    fn start_time(&self, pid: u32) -> Fact<Option<SystemTime>> {
        let Some(st) = self.stat(pid)? else { return Ok(None) };
        let what = || format!("the start time of pid {pid}");
        let hz =
            clock_ticks_per_second().ok_or_else(|| unavailable(what(), "sysconf(_SC_CLK_TCK) failed"))?;
        let boot = boot_time().ok_or_else(|| unavailable(what(), "no btime in /proc/stat"))?;
        let ticks = st.start_ticks;
        let since_boot =
            Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz);
        Ok(Some(boot + since_boot))
    }

    fn all_pids(&self) -> Fact<Vec<u32>> {
        let dir = fs::read_dir("/proc").map_err(|e| unavailable("the list of processes", e))?;
        Ok(dir.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())).collect())
    }

    fn listening_sockets(&self, port: u16) -> Fact<Vec<ListenSocket>> {
        static DIAG_UNSUPPORTED: AtomicBool = AtomicBool::new(false);
        if !DIAG_UNSUPPORTED.load(Ordering::Relaxed) {
            match crate::sockdiag::listening_sockets(port) {
                Ok(found) => return Ok(found),
                Err(DiagError::Unsupported(_)) => DIAG_UNSUPPORTED.store(true, Ordering::Relaxed),
                Err(DiagError::Failed(_)) => {}
            }
        }
        read_proc_net_tcp(port).map_err(|e| unavailable(format!("the listening sockets on port {port}"), e))
    }

    fn listeners_among(&self, port: u16, pids: &[u32]) -> Fact<Vec<Listener>> {
        let sockets = self.listening_sockets(port)?;
        if sockets.is_empty() {
            return Ok(Vec::new());
        }
        let by_inode: HashMap<u64, IpAddr> = sockets.iter().map(|s| (s.inode, s.addr)).collect();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut unreadable = Vec::new();
        for &pid in pids {
            let fds = match fs::read_dir(format!("/proc/{pid}/fd")) {
                Ok(fds) => fds,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => continue,
                Err(_) => {
                    unreadable.push(pid);
                    continue;
                }
            };
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
        let held: HashSet<u64> = out.iter().map(|l| l.inode).collect();
        if !unreadable.is_empty() && sockets.iter().any(|s| !held.contains(&s.inode)) {
            return Err(unavailable(
                format!("the holder of port {port}"),
                format!(
                    "a socket listens on it, and the descriptors of {} process(es) cannot be read (pids {}); run as root to see them",
                    unreadable.len(),
                    list(&unreadable)
                ),
            ));
        }
        Ok(out)
    }

    fn memory(&self, pid: u32) -> Fact<Option<Memory>> {
        // RSS from `statm` (the kernel's counters: no page-table walk, and the number `ps`
        // and `/proc/<pid>/status` show); PSS from `smaps_rollup` (Linux 4.14+), which walks
        // the page tables once per read: milliseconds for a large process, read only when
        // someone asks for status.
        let what = || format!("the memory of pid {pid}");
        let Some(raw) = absent_or(read_bounded(&format!("/proc/{pid}/statm"), 4096), what)? else {
            return Ok(None);
        };
        let resident: u64 = String::from_utf8_lossy(&raw)
            .split_ascii_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| unavailable(what(), "/proc/<pid>/statm did not parse"))?;
        let page = page_size().ok_or_else(|| unavailable(what(), "sysconf(_SC_PAGESIZE) failed"))?;
        let pss = read_bounded(&format!("/proc/{pid}/smaps_rollup"), 8192)
            .ok()
            .and_then(|raw| parse_kb_field(&String::from_utf8_lossy(&raw), "Pss"));
        Ok(Some(Memory { rss_bytes: resident.saturating_mul(page), pss_bytes: pss }))
    }

    fn cpu_time(&self, pid: u32) -> Fact<Option<CpuTime>> {
        let what = || format!("the CPU time of pid {pid}");
        let Some(raw) = absent_or(read_bounded(&format!("/proc/{pid}/stat"), 4096), what)? else {
            return Ok(None);
        };
        let [utime, stime, cutime, cstime] = parse_stat_cpu(&String::from_utf8_lossy(&raw))
            .ok_or_else(|| unavailable(what(), "/proc/<pid>/stat did not parse"))?;
        let hz =
            clock_ticks_per_second().ok_or_else(|| unavailable(what(), "sysconf(_SC_CLK_TCK) failed"))?;
        let ticks =
            |t: u64| Duration::from_secs(t / hz) + Duration::from_nanos((t % hz) * 1_000_000_000 / hz);
        Ok(Some(CpuTime { own: ticks(utime + stime), reaped_children: Some(ticks(cutime + cstime)) }))
    }

    fn listening_ports_of(&self, pids: &[u32]) -> Fact<Vec<HeldPort>> {
        let what = "the listening ports of a process tree";
        let table = all_listening_sockets().map_err(|e| unavailable(what, e))?;
        let by_inode: HashMap<u64, (u16, IpAddr)> =
            table.iter().map(|(port, s)| (s.inode, (*port, s.addr))).collect();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for &pid in pids {
            let fds = match fs::read_dir(format!("/proc/{pid}/fd")) {
                Ok(fds) => fds,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => continue,
                Err(e) => return Err(unavailable(what, format!("the descriptors of pid {pid}: {e}"))),
            };
            for fd in fds.flatten() {
                let Ok(target) = fs::read_link(fd.path()) else { continue };
                let Some(inode) = socket_inode(target.as_os_str().as_encoded_bytes()) else { continue };
                if let Some(&(port, addr)) = by_inode.get(&inode)
                    && seen.insert((pid, inode))
                {
                    out.push(HeldPort { port, listener: Listener { pid, inode, addr } });
                }
            }
        }
        Ok(out)
    }

    fn boot_id(&self) -> Fact<String> {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .map_err(|e| unavailable("the boot id", e))
    }

    fn children_of(&self, pid: u32) -> Fact<Vec<u32>> {
        // `/proc/<pid>/task/*/children` lists them directly (CONFIG_PROC_CHILDREN); without
        // it, the scan.
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for task in tasks.flatten() {
            let path = task.path().join("children");
            match read_bounded(&path.to_string_lossy(), 1 << 20) {
                Ok(raw) => out.extend(
                    raw.split(u8::is_ascii_whitespace)
                        .filter_map(|p| std::str::from_utf8(p).ok()?.parse::<u32>().ok()),
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound && task.path().join("stat").exists() => {
                    let mut found = Vec::new();
                    for p in self.all_pids()? {
                        if self.stat(p)?.is_some_and(|s| s.ppid == pid) {
                            found.push(p);
                        }
                    }
                    return Ok(found);
                }
                Err(_) => {}
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn group_members(&self, pgid: u32) -> Fact<Vec<u32>> {
        // A process that exits during the scan is skipped, not an error.
        let mut out = Vec::new();
        for p in self.all_pids()? {
            if self.stat(p).ok().flatten().is_some_and(|s| s.pgid == pgid && !s.is_exited()) {
                out.push(p);
            }
        }
        Ok(out)
    }
}

/// `a\0b\0` → `["a", "b"]` (empty arguments in the middle kept); `None` when empty.
fn split_argv(raw: &[u8]) -> Option<Vec<String>> {
    let end = raw.iter().rposition(|&b| b != 0)? + 1;
    Some(raw[..end].split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
}

fn list(pids: &[u32]) -> String {
    let shown: Vec<String> = pids.iter().take(8).map(u32::to_string).collect();
    if pids.len() > 8 { format!("{}, …", shown.join(", ")) } else { shown.join(", ") }
}

/// Every listening TCP socket in this network namespace with its port: `sock_diag`, else
/// `/proc/net/tcp{,6}`.
fn all_listening_sockets() -> io::Result<Vec<(u16, ListenSocket)>> {
    match crate::sockdiag::all_listening_sockets() {
        Ok(found) => return Ok(found),
        Err(DiagError::Unsupported(_) | DiagError::Failed(_)) => {}
    }
    let mut out = Vec::new();
    let mut last_err = None;
    let mut read_any = false;
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        match fs::read_to_string(file) {
            Ok(text) => {
                read_any = true;
                out.extend(text.lines().skip(1).filter_map(|l| parse_tcp_listen_line(l, v6)));
            }
            Err(e) => last_err = Some(e),
        }
    }
    match (read_any, last_err) {
        (false, Some(e)) => Err(e),
        _ => Ok(out),
    }
}

fn page_size() -> Option<u64> {
    static PAGE: OnceLock<Option<u64>> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(p).ok().filter(|&p| p > 0)
    })
}

/// Listening sockets on `port` through `NETLINK_SOCK_DIAG` only, with its error (to compare
/// the two sources in tests and diagnostics).
pub fn listening_sockets_diag(port: u16) -> io::Result<Vec<ListenSocket>> {
    crate::sockdiag::listening_sockets(port).map_err(DiagError::into_io)
}

/// Listening sockets on `port` from `/proc/net/tcp` and `/proc/net/tcp6` only: the fallback.
/// Slow on any host with much RAM (the kernel walks its whole established-socket hash to
/// print it): 1.6–1.8 ms per call on the development machine, against 16–20 µs for netlink.
/// An error only when neither file can be read (a kernel without IPv6 has no `tcp6`).
pub fn read_proc_net_tcp(port: u16) -> io::Result<Vec<ListenSocket>> {
    let mut out = Vec::new();
    let mut last_err = None;
    let mut read_any = false;
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        match fs::read_to_string(file) {
            Ok(text) => {
                read_any = true;
                out.extend(text.lines().skip(1).filter_map(|l| parse_tcp_line(l, v6, port)));
            }
            Err(e) => last_err = Some(e),
        }
    }
    match (read_any, last_err) {
        (false, Some(e)) => Err(e),
        _ => Ok(out),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_split() {
        assert_eq!(split_argv(b"sleep\x0010\x00"), Some(vec!["sleep".to_owned(), "10".to_owned()]));
        assert_eq!(split_argv(b"a\x00\x00b\x00"), Some(vec!["a".to_owned(), String::new(), "b".to_owned()]));
        assert_eq!(split_argv(b""), None);
        assert_eq!(split_argv(b"\x00\x00"), None);
    }
}
