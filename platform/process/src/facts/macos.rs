//! Process facts on macOS, from the kernel through libproc and `sysctl` (the interfaces `ps`,
//! `lsof` and Activity Monitor use), never by running those tools:
//!
//! - stat, owner and start time: `proc_pidinfo(PROC_PIDTBSDINFO)` (`struct proc_bsdinfo`:
//!   status, ppid, pgid, real uid, start time to the microsecond). Readable for every process.
//! - command line and environment: `sysctl {CTL_KERN, KERN_PROCARGS2, pid}`: `argc`, the
//!   exec path, `argv`, then the environment. Only for the caller's own processes, or as root.
//! - executable: `proc_pidpath`; working directory: `proc_pidinfo(PROC_PIDVNODEPATHINFO)`.
//! - listening TCP sockets: `proc_pidinfo(PROC_PIDLISTFDS)` lists a process's descriptors,
//!   and `proc_pidfdinfo(PROC_PIDFDSOCKETINFO)` describes each socket (`struct
//!   socket_fdinfo`, declared below from `<sys/proc_info.h>`: `libc` does not carry it).
//!   There is no system-wide listen table readable without privilege here, so the sockets
//!   of a port are found by walking the descriptors of every process we may read. When that
//!   walk finds nothing but some processes could not be read (another user's, as non-root),
//!   a bind probe decides: if `port` can be bound on the IPv4 and the IPv6 wildcard, nothing
//!   listens on it; if not, the answer is [`Unavailable`] (something holds it, we cannot see
//!   what). A listener in an unreadable process that shares a port with one we can see
//!   (`SO_REUSEPORT`) is not reported: see `docs/platforms.md`.
//!
//! Errors: `ESRCH` is "no such process"; `EPERM` and the rest are [`Unavailable`].
//! `KERN_PROCARGS2` answers `EINVAL` both for "gone" and for "not yours", so a failure there
//! is re-checked against `PROC_PIDTBSDINFO`.
//!
//! This file compiles in CI for both Apple targets and has never run on a Mac in this
//! project; the behaviour it must have is the conformance suite's (`tests/it/facts.rs`).

use std::collections::HashSet;
use std::ffi::c_void;
use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{Fact, ProcessFacts, Unavailable, pick_env};
use crate::procfs::{CpuTime, HeldPort, ListenSocket, Listener, Memory, ProcStat};

const SOURCE: &str = "macos-libproc";

/// `PROC_PIDFDSOCKETINFO`: the `proc_pidfdinfo` flavor for a socket descriptor.
const PROC_PIDFDSOCKETINFO: libc::c_int = 3;
/// `SOCKINFO_TCP` in `soi_kind`.
const SOCKINFO_TCP: libc::c_int = 2;
/// `TSI_S_LISTEN` in `tcpsi_state`.
const TSI_S_LISTEN: libc::c_int = 1;

/// `struct proc_fileinfo` (`<sys/proc_info.h>`).
#[repr(C)]
#[derive(Clone, Copy)]
struct ProcFileInfo {
    fi_openflags: u32,
    fi_status: u32,
    fi_offset: i64,
    fi_type: i32,
    fi_guardflags: u32,
}

/// `struct sockbuf_info`.
#[repr(C)]
#[derive(Clone, Copy)]
struct SockbufInfo {
    sbi_cc: u32,
    sbi_hiwat: u32,
    sbi_mbcnt: u32,
    sbi_mbmax: u32,
    sbi_lowat: u32,
    sbi_flags: i16,
    sbi_timeo: i16,
}

/// `struct in_sockinfo`. The addresses are `union { struct in4in6_addr; struct in6_addr }`:
/// 16 bytes, an IPv4 address in the last four.
#[repr(C)]
#[derive(Clone, Copy)]
struct InSockInfo {
    insi_fport: libc::c_int,
    /// The local port, in network byte order, widened to an `int`.
    insi_lport: libc::c_int,
    insi_gencnt: u64,
    insi_flags: u32,
    insi_flow: u32,
    insi_vflag: u8,
    insi_ip_ttl: u8,
    rfu_1: u32,
    insi_faddr: [u32; 4],
    insi_laddr: [u32; 4],
    insi_v4_tos: u8,
    /// `struct { uint8_t in6_hlim; int in6_cksum; u_short in6_ifindex; short in6_hops; }`.
    insi_v6: [u32; 3],
}

/// `struct tcp_sockinfo`.
#[repr(C)]
#[derive(Clone, Copy)]
struct TcpSockInfo {
    tcpsi_ini: InSockInfo,
    tcpsi_state: libc::c_int,
    tcpsi_timer: [libc::c_int; 4],
    tcpsi_mss: libc::c_int,
    tcpsi_flags: u32,
    rfu_1: u32,
    tcpsi_tp: u64,
}

/// `struct socket_info`. `soi_proto` is a union whose largest member is `struct
/// un_sockinfo` (two `u64` and two 255-byte address unions: 526 bytes, 528 aligned).
#[repr(C)]
#[derive(Clone, Copy)]
struct SocketInfo {
    /// `struct vinfo_stat`: 136 bytes, 8-aligned.
    soi_stat: [u64; 17],
    soi_so: u64,
    soi_pcb: u64,
    soi_type: libc::c_int,
    soi_protocol: libc::c_int,
    soi_family: libc::c_int,
    /// `soi_options`, `soi_linger`, `soi_state`, `soi_qlen`, `soi_incqlen`, `soi_qlimit`,
    /// `soi_timeo`, `soi_error`.
    soi_shorts: [i16; 8],
    soi_oobmark: u32,
    soi_rcv: SockbufInfo,
    soi_snd: SockbufInfo,
    soi_kind: libc::c_int,
    rfu_1: u32,
    soi_proto: [u64; 66],
}

/// `struct socket_fdinfo`.
#[repr(C)]
#[derive(Clone, Copy)]
struct SocketFdInfo {
    pfi: ProcFileInfo,
    psi: SocketInfo,
}

// The sizes `<sys/proc_info.h>` gives these on both Apple targets (LP64, natural alignment):
// a wrong layout would be caught here, at compile time, not on a user's Mac.
const _: () = {
    assert!(size_of::<ProcFileInfo>() == 24);
    assert!(size_of::<SockbufInfo>() == 24);
    assert!(size_of::<InSockInfo>() == 80);
    assert!(size_of::<TcpSockInfo>() == 120);
    assert!(size_of::<SocketInfo>() == 768);
    assert!(size_of::<SocketFdInfo>() == 792);
    assert!(std::mem::offset_of!(SocketInfo, soi_kind) == 232);
    assert!(std::mem::offset_of!(SocketInfo, soi_proto) == 240);
    assert!(std::mem::offset_of!(InSockInfo, insi_laddr) == 48);
    assert!(std::mem::offset_of!(TcpSockInfo, tcpsi_state) == 80);
};

/// The macOS implementation (stateless).
#[derive(Debug, Clone, Copy, Default)]
pub struct MacFacts;

fn unavailable(what: impl Into<String>, e: impl std::fmt::Display) -> Unavailable {
    Unavailable::new(SOURCE, what, e)
}

fn c_pid(pid: u32) -> Option<libc::c_int> {
    libc::c_int::try_from(pid).ok().filter(|&p| p > 0)
}

/// `proc_pidinfo` into a `T`: `Ok(None)` for no such process (`ESRCH`).
fn pidinfo<T: Copy>(pid: u32, flavor: libc::c_int) -> io::Result<Option<T>> {
    let Some(cpid) = c_pid(pid) else { return Ok(None) };
    let mut out = MaybeUninit::<T>::zeroed();
    let size = size_of::<T>() as libc::c_int;
    // SAFETY: `out` is valid for writes of `size` bytes; the kernel writes at most that.
    let n = unsafe { libc::proc_pidinfo(cpid, flavor, 0, out.as_mut_ptr().cast::<c_void>(), size) };
    if n == size {
        // SAFETY: the kernel filled all `size` bytes; every field is a plain integer/array.
        return Ok(Some(unsafe { out.assume_init() }));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESRCH) => Ok(None),
        Some(0) | None => Err(io::Error::other(format!("proc_pidinfo returned {n} of {size} bytes"))),
        _ => Err(err),
    }
}

fn bsdinfo(pid: u32) -> Fact<Option<libc::proc_bsdinfo>> {
    pidinfo::<libc::proc_bsdinfo>(pid, libc::PROC_PIDTBSDINFO)
        .map_err(|e| unavailable(format!("the state of pid {pid}"), e))
}

/// `pbi_status` → the `/proc` state letter the rest of the crate uses.
fn state_letter(status: u32) -> char {
    match status {
        libc::SIDL | libc::SRUN => 'R',
        libc::SSLEEP => 'S',
        libc::SSTOP => 'T',
        libc::SZOMB => 'Z',
        _ => '?',
    }
}

fn c_text(raw: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = raw.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The raw `KERN_PROCARGS2` block of `pid`; `Ok(None)` when the process is gone or a zombie.
fn procargs(pid: u32, what: impl Fn() -> String) -> Fact<Option<Vec<u8>>> {
    let Some(cpid) = c_pid(pid) else { return Ok(None) };
    let argmax = sysctl_int(&mut [libc::CTL_KERN, libc::KERN_ARGMAX]).unwrap_or(1 << 20).max(4096);
    let mut buf = vec![0u8; argmax as usize];
    let mut size = buf.len();
    let mut mib = [libc::CTL_KERN, libc::KERN_PROCARGS2, cpid];
    // SAFETY: `mib` has 3 entries; `buf` is valid for writes of `size` bytes.
    let r = unsafe {
        libc::sysctl(mib.as_mut_ptr(), 3, buf.as_mut_ptr().cast(), &mut size, std::ptr::null_mut(), 0)
    };
    if r == 0 {
        buf.truncate(size);
        return Ok(Some(buf));
    }
    let err = io::Error::last_os_error();
    // EINVAL means "gone" as well as "not yours": ask PROC_PIDTBSDINFO which it is.
    match bsdinfo(pid)? {
        None => Ok(None),
        Some(b) if b.pbi_status == libc::SZOMB => Ok(None),
        Some(_) => Err(unavailable(what(), format!("{err} (another user's process? run as root)"))),
    }
}

/// A parsed `KERN_PROCARGS2` block: `int argc`, the exec path, NUL padding, `argc`
/// NUL-terminated arguments, then `KEY=value` strings up to an empty one.
#[derive(Debug, PartialEq, Eq)]
struct ProcArgs {
    argv: Vec<String>,
    env: Vec<u8>,
}

fn parse_procargs(block: &[u8]) -> Option<ProcArgs> {
    let argc = i32::from_ne_bytes(block.get(..4)?.try_into().ok()?);
    let mut rest = &block[4..];
    let path_end = rest.iter().position(|&b| b == 0)?;
    rest = &rest[path_end..];
    let first = rest.iter().position(|&b| b != 0).unwrap_or(rest.len());
    rest = &rest[first..];
    let mut argv = Vec::new();
    for _ in 0..argc.max(0) {
        if rest.is_empty() {
            break;
        }
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        argv.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        rest = rest.get(end + 1..).unwrap_or_default();
    }
    let mut env = Vec::new();
    while !rest.is_empty() {
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if end == 0 {
            break; // the empty string ends the environment (the "apple" strings follow)
        }
        env.extend_from_slice(&rest[..end]);
        env.push(0);
        rest = rest.get(end + 1..).unwrap_or_default();
    }
    Some(ProcArgs { argv, env })
}

fn sysctl_int(mib: &mut [libc::c_int]) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut size = size_of::<libc::c_int>();
    // SAFETY: `value` is valid for writes of `size` bytes; `mib` for `mib.len()` entries.
    let r = unsafe {
        libc::sysctl(
            mib.as_mut_ptr(),
            mib.len() as libc::c_uint,
            (&raw mut value).cast(),
            &mut size,
            std::ptr::null_mut(),
            0,
        )
    };
    (r == 0).then_some(value)
}

/// The descriptors of `pid` that are sockets. `Ok(None)`: no such process.
fn socket_fds(pid: u32) -> io::Result<Option<Vec<libc::c_int>>> {
    let Some(cpid) = c_pid(pid) else { return Ok(None) };
    let entry = size_of::<libc::proc_fdinfo>();
    let mut cap = 64usize;
    loop {
        let mut fds: Vec<libc::proc_fdinfo> = Vec::with_capacity(cap);
        let bytes = (cap * entry) as libc::c_int;
        // SAFETY: `fds` has room for `cap` entries (`bytes` bytes); the kernel writes at most that.
        let n = unsafe { libc::proc_pidinfo(cpid, libc::PROC_PIDLISTFDS, 0, fds.as_mut_ptr().cast(), bytes) };
        if n <= 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ESRCH) => Ok(None),
                Some(0) | None => Ok(Some(Vec::new())), // no descriptors at all
                _ => Err(err),
            };
        }
        let count = n as usize / entry;
        if count >= cap && cap < 1 << 20 {
            cap *= 4; // the table may have been cut short: ask again with more room
            continue;
        }
        // SAFETY: the kernel initialized `count` entries.
        unsafe { fds.set_len(count) };
        return Ok(Some(
            fds.into_iter()
                .filter(|f| f.proc_fdtype == libc::PROX_FDTYPE_SOCKET as u32)
                .map(|f| f.proc_fd)
                .collect(),
        ));
    }
}

/// The listening TCP socket behind descriptor `fd` of `pid`, if it listens on `port`.
fn listening_on(pid: u32, fd: libc::c_int, port: u16) -> Option<ListenSocket> {
    listening_socket(pid, fd).filter(|(p, _)| *p == port).map(|(_, s)| s)
}

/// The listening TCP socket behind descriptor `fd` of `pid`, with its local port.
fn listening_socket(pid: u32, fd: libc::c_int) -> Option<(u16, ListenSocket)> {
    let cpid = c_pid(pid)?;
    let mut info = MaybeUninit::<SocketFdInfo>::zeroed();
    let size = size_of::<SocketFdInfo>() as libc::c_int;
    // SAFETY: `info` is valid for writes of `size` bytes.
    let n = unsafe { libc::proc_pidfdinfo(cpid, fd, PROC_PIDFDSOCKETINFO, info.as_mut_ptr().cast(), size) };
    if n != size {
        return None; // closed in the meantime, or not a socket any more
    }
    // SAFETY: fully written by the kernel; all fields are plain integers.
    let info = unsafe { info.assume_init() };
    if info.psi.soi_kind != SOCKINFO_TCP {
        return None;
    }
    // SAFETY: soi_kind == SOCKINFO_TCP says the union holds a tcp_sockinfo; it is 8-aligned
    // at the start of `soi_proto`, which is large enough for it.
    let tcp: TcpSockInfo = unsafe { std::ptr::read(info.psi.soi_proto.as_ptr().cast::<TcpSockInfo>()) };
    if tcp.tcpsi_state != TSI_S_LISTEN {
        return None;
    }
    let port = u16::from_be(tcp.tcpsi_ini.insi_lport as u16);
    let mut bytes = [0u8; 16];
    for (chunk, word) in bytes.chunks_exact_mut(4).zip(tcp.tcpsi_ini.insi_laddr) {
        chunk.copy_from_slice(&word.to_ne_bytes()); // already network order in memory
    }
    let addr = match info.psi.soi_family {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(bytes[12], bytes[13], bytes[14], bytes[15])),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(bytes)),
        _ => return None,
    };
    Some((port, ListenSocket { inode: info.psi.soi_so, addr }))
}

/// `PROC_PIDTASKINFO` of `pid`: resident size and CPU times. `Ok(None)`: no such process.
fn taskinfo(pid: u32, what: impl Fn() -> String) -> Fact<Option<libc::proc_taskinfo>> {
    pidinfo::<libc::proc_taskinfo>(pid, libc::PROC_PIDTASKINFO).map_err(|e| unavailable(what(), e))
}

/// Nanoseconds per Mach absolute-time unit, as `numer / denom` (1/1 on Intel, 125/3 on Apple
/// silicon): `pti_total_user` and `pti_total_system` are in those units.
// `libc` marks the mach calls deprecated in favour of the `mach2` crate; this one call does not
// justify another dependency.
#[allow(deprecated)]
fn timebase() -> Option<(u64, u64)> {
    static TB: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
    *TB.get_or_init(|| {
        let mut info = libc::mach_timebase_info { numer: 0, denom: 0 };
        // SAFETY: `info` is valid for writes; the call only fills it.
        let r = unsafe { libc::mach_timebase_info(&mut info) };
        (r == 0 && info.denom != 0).then(|| (u64::from(info.numer), u64::from(info.denom)))
    })
}

/// What a walk over the descriptors of some processes found.
struct Walk {
    found: Vec<Listener>,
    unreadable: Vec<u32>,
}

fn walk(port: u16, pids: &[u32]) -> Walk {
    let mut found = Vec::new();
    let mut unreadable = Vec::new();
    let mut seen = HashSet::new();
    for &pid in pids {
        match socket_fds(pid) {
            Ok(None) => {}
            Ok(Some(fds)) => {
                for fd in fds {
                    if let Some(s) = listening_on(pid, fd, port)
                        && seen.insert((pid, s.inode))
                    {
                        found.push(Listener { pid, inode: s.inode, addr: s.addr });
                    }
                }
            }
            Err(_) => unreadable.push(pid),
        }
    }
    Walk { found, unreadable }
}

/// Whether `port` can be bound on the IPv4 and the IPv6 wildcard right now (without
/// `SO_REUSEADDR`, so any listener on the port, on any address, refuses the bind).
/// `Ok(false)`: something holds it; `Err`: the probe itself failed (a privileged port).
fn bindable(port: u16) -> io::Result<bool> {
    use std::net::{SocketAddr, TcpListener};
    for addr in
        [SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))]
    {
        match TcpListener::bind(addr) {
            Ok(l) => drop(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {} // no IPv6 here
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn list(pids: &[u32]) -> String {
    let shown: Vec<String> = pids.iter().take(8).map(u32::to_string).collect();
    if pids.len() > 8 { format!("{}, …", shown.join(", ")) } else { shown.join(", ") }
}

impl MacFacts {
    /// Every listener on `port` among all processes, failing closed as the module doc says.
    fn scan(&self, port: u16) -> Fact<Vec<Listener>> {
        let w = walk(port, &self.all_pids()?);
        if !w.found.is_empty() || w.unreadable.is_empty() {
            return Ok(w.found);
        }
        let what = || format!("the holder of port {port}");
        match bindable(port) {
            Ok(true) => Ok(Vec::new()),
            Ok(false) => Err(unavailable(
                what(),
                format!(
                    "something listens on it, and the descriptors of {} process(es) cannot be read (pids {}); run as root to see them",
                    w.unreadable.len(),
                    list(&w.unreadable)
                ),
            )),
            Err(e) => Err(unavailable(what(), format!("the bind probe failed: {e}"))),
        }
    }
}

impl ProcessFacts for MacFacts {
    fn source(&self) -> &'static str {
        SOURCE
    }

    fn stat(&self, pid: u32) -> Fact<Option<ProcStat>> {
        let Some(b) = bsdinfo(pid)? else { return Ok(None) };
        let name = c_text(&b.pbi_name);
        // SAFETY: getsid has no memory-safety preconditions.
        let sid = unsafe { libc::getsid(pid as libc::pid_t) };
        Ok(Some(ProcStat {
            pid,
            comm: if name.is_empty() { c_text(&b.pbi_comm) } else { name },
            state: state_letter(b.pbi_status),
            ppid: b.pbi_ppid,
            pgid: b.pbi_pgid,
            sid: u32::try_from(sid).unwrap_or(0),
            start_ticks: b.pbi_start_tvsec.saturating_mul(1_000_000).saturating_add(b.pbi_start_tvusec),
        }))
    }

    fn uid(&self, pid: u32) -> Fact<Option<u32>> {
        Ok(bsdinfo(pid)?.map(|b| b.pbi_ruid))
    }

    fn argv(&self, pid: u32) -> Fact<Option<Vec<String>>> {
        let what = || format!("the command line of pid {pid}");
        let Some(block) = procargs(pid, what)? else { return Ok(None) };
        let parsed =
            parse_procargs(&block).ok_or_else(|| unavailable(what(), "KERN_PROCARGS2 did not parse"))?;
        Ok((!parsed.argv.is_empty()).then_some(parsed.argv))
    }

    fn exe(&self, pid: u32) -> Fact<Option<PathBuf>> {
        let Some(cpid) = c_pid(pid) else { return Ok(None) };
        let mut buf = vec![0u8; libc::PROC_PIDPATHINFO_MAXSIZE as usize];
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::proc_pidpath(cpid, buf.as_mut_ptr().cast(), buf.len() as u32) };
        if n > 0 {
            buf.truncate(n as usize);
            return Ok(Some(PathBuf::from(std::ffi::OsStr::from_bytes(&buf))));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ESRCH) => Ok(None),
            _ => Err(unavailable(format!("the executable of pid {pid}"), err)),
        }
    }

    fn cwd(&self, pid: u32) -> Fact<Option<PathBuf>> {
        let info = pidinfo::<libc::proc_vnodepathinfo>(pid, libc::PROC_PIDVNODEPATHINFO)
            .map_err(|e| unavailable(format!("the working directory of pid {pid}"), e))?;
        Ok(info.map(|i| {
            let raw: Vec<u8> =
                i.pvi_cdir.vip_path.iter().flatten().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
            PathBuf::from(std::ffi::OsStr::from_bytes(&raw))
        }))
    }

    fn environ_vars(&self, pid: u32, keys: &[&str]) -> Fact<Option<Vec<(String, String)>>> {
        let what = || format!("the environment of pid {pid}");
        let Some(block) = procargs(pid, what)? else { return Ok(None) };
        let parsed =
            parse_procargs(&block).ok_or_else(|| unavailable(what(), "KERN_PROCARGS2 did not parse"))?;
        Ok(Some(pick_env(&parsed.env, keys)))
    }

    fn start_time(&self, pid: u32) -> Fact<Option<SystemTime>> {
        Ok(bsdinfo(pid)?.map(|b| {
            SystemTime::UNIX_EPOCH
                + Duration::from_secs(b.pbi_start_tvsec)
                + Duration::from_micros(b.pbi_start_tvusec)
        }))
    }

    fn all_pids(&self) -> Fact<Vec<u32>> {
        let what = "the list of processes";
        // SAFETY: a NULL buffer asks for the number of pids.
        let estimate = unsafe { libc::proc_listallpids(std::ptr::null_mut(), 0) };
        if estimate < 0 {
            return Err(unavailable(what, io::Error::last_os_error()));
        }
        let mut cap = estimate as usize + 64;
        loop {
            let mut pids = vec![0 as libc::pid_t; cap];
            let bytes = (cap * size_of::<libc::pid_t>()) as libc::c_int;
            // SAFETY: `pids` is valid for writes of `bytes` bytes.
            let n = unsafe { libc::proc_listallpids(pids.as_mut_ptr().cast(), bytes) };
            if n < 0 {
                return Err(unavailable(what, io::Error::last_os_error()));
            }
            let n = n as usize;
            if n >= cap && cap < 1 << 22 {
                cap *= 2; // processes appeared since the estimate: ask again with more room
                continue;
            }
            pids.truncate(n.min(cap));
            return Ok(pids.into_iter().filter_map(|p| u32::try_from(p).ok()).filter(|&p| p > 0).collect());
        }
    }

    fn listening_sockets(&self, port: u16) -> Fact<Vec<ListenSocket>> {
        let mut seen = HashSet::new();
        Ok(self
            .scan(port)?
            .into_iter()
            .filter(|l| seen.insert(l.inode))
            .map(|l| ListenSocket { inode: l.inode, addr: l.addr })
            .collect())
    }

    fn listeners_among(&self, port: u16, pids: &[u32]) -> Fact<Vec<Listener>> {
        let w = walk(port, pids);
        if w.found.is_empty() && !w.unreadable.is_empty() {
            return Err(unavailable(
                format!("the listeners on port {port}"),
                format!("the descriptors of pids {} cannot be read", list(&w.unreadable)),
            ));
        }
        Ok(w.found)
    }

    fn listeners(&self, port: u16) -> Fact<Vec<Listener>> {
        self.scan(port)
    }

    fn memory(&self, pid: u32) -> Fact<Option<Memory>> {
        // No proportional set size without walking the VM regions (`vmmap` does): PSS unknown.
        let info = taskinfo(pid, || format!("the memory of pid {pid}"))?;
        Ok(info.map(|t| Memory { rss_bytes: t.pti_resident_size, pss_bytes: None }))
    }

    fn cpu_time(&self, pid: u32) -> Fact<Option<CpuTime>> {
        let what = || format!("the CPU time of pid {pid}");
        let Some(t) = taskinfo(pid, what)? else { return Ok(None) };
        let (numer, denom) = timebase().ok_or_else(|| unavailable(what(), "mach_timebase_info failed"))?;
        let units = u128::from(t.pti_total_user) + u128::from(t.pti_total_system);
        let nanos = u64::try_from(units * u128::from(numer) / u128::from(denom)).unwrap_or(u64::MAX);
        // libproc does not report the time of reaped children.
        Ok(Some(CpuTime { own: Duration::from_nanos(nanos), reaped_children: None }))
    }

    fn listening_ports_of(&self, pids: &[u32]) -> Fact<Vec<HeldPort>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for &pid in pids {
            match socket_fds(pid) {
                Ok(None) => {}
                Ok(Some(fds)) => {
                    for fd in fds {
                        if let Some((port, s)) = listening_socket(pid, fd)
                            && seen.insert((pid, s.inode))
                        {
                            out.push(HeldPort {
                                port,
                                listener: Listener { pid, inode: s.inode, addr: s.addr },
                            });
                        }
                    }
                }
                Err(e) => {
                    return Err(unavailable(
                        "the listening ports of a process tree",
                        format!("the descriptors of pid {pid}: {e}"),
                    ));
                }
            }
        }
        Ok(out)
    }

    fn boot_id(&self) -> Fact<String> {
        let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
        let mut size = size_of::<libc::timeval>();
        let mut mib = [libc::CTL_KERN, libc::KERN_BOOTTIME];
        // SAFETY: `tv` is valid for writes of `size` bytes; `mib` has 2 entries.
        let r = unsafe {
            libc::sysctl(mib.as_mut_ptr(), 2, (&raw mut tv).cast(), &mut size, std::ptr::null_mut(), 0)
        };
        if r != 0 {
            return Err(unavailable("the boot id", io::Error::last_os_error()));
        }
        Ok(format!("boottime-{}.{:06}", tv.tv_sec, tv.tv_usec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procargs_block_parses() {
        let mut block = 2i32.to_ne_bytes().to_vec();
        block.extend_from_slice(b"/usr/bin/env\0\0\0\0env\0-i\0PATH=/bin\0PORT=1940\0\0ptr_munge=x\0");
        let p = parse_procargs(&block).unwrap();
        assert_eq!(p.argv, vec!["env".to_owned(), "-i".to_owned()]);
        assert_eq!(pick_env(&p.env, &["PORT", "ptr_munge"]), vec![("PORT".to_owned(), "1940".to_owned())]);
        assert!(parse_procargs(b"\x01").is_none());
    }
}
