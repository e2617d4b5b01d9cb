//! Thin, typed wrappers over the few syscalls this crate needs and `nix` does not cover the
//! way we want: `pidfd_open`, `pidfd_send_signal`, `waitid` (with the raw `siginfo_t`, so a
//! child killed by a realtime signal still decodes) and `killpg`.
//!
//! Everything here is a direct syscall with EINTR retried; policy lives in the callers.

use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::ExitInfo;

/// Run a libc call that returns -1 + errno, retrying on EINTR.
fn retry(mut f: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        let r = f();
        if r != -1 {
            return Ok(r);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `pidfd_open(pid, 0)`: a file descriptor that names this very process for as long as we hold
/// it, and polls readable once the process has exited (before it is reaped).
#[cfg(target_os = "linux")]
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: plain syscall with integer arguments; the result is a new fd we take ownership of.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us (always O_CLOEXEC) and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(fd, sig, NULL, 0)`: signal exactly the process the pidfd names.
#[cfg(target_os = "linux")]
pub(crate) fn pidfd_send_signal(fd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    pidfd_send_signal_flags(fd, sig, 0)
}

/// `PIDFD_SIGNAL_PROCESS_GROUP` (Linux 6.9): signal the process group the pidfd's process
/// leads, through the pidfd, so the target cannot be a recycled pid.
#[cfg(target_os = "linux")]
pub(crate) const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

/// `pidfd_send_signal(2)` with flags.
#[cfg(target_os = "linux")]
pub(crate) fn pidfd_send_signal_flags(fd: BorrowedFd<'_>, sig: i32, flags: libc::c_uint) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall; a NULL siginfo asks the kernel to fill in a SI_USER one.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            flags,
        )
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `killpg(pgid, sig)`, refused (`EPERM`, nothing sent) for a pgid ≤ 1 and for the caller's
/// own group: glibc's `killpg(1, sig)` is `kill(-1, sig)`, every process the caller may
/// signal, and `killpg(0, sig)` is the caller's own group.
pub(crate) fn killpg(pgid: u32, sig: i32) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: getpgrp cannot fail.
    if pgid <= 1 || pgid == unsafe { libc::getpgrp() } {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    // SAFETY: plain syscall with integer arguments.
    retry(|| unsafe { libc::killpg(pgid, sig) }).map(drop)
}

/// `kill(pid, sig)`. Only used where the pid is pinned (an unreaped child of ours).
pub(crate) fn kill(pid: u32, sig: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: plain syscall with integer arguments.
    retry(|| unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Block until the child has exited, WITHOUT reaping it (`WEXITED | WNOWAIT`).
/// Portable: the status is not decoded, only the fact of the exit matters to callers.
pub(crate) fn wait_exit_nowait(pid: u32) -> io::Result<()> {
    let id = libc::id_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ECHILD))?;
    // SAFETY: an all-zero siginfo_t is a valid out-parameter.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t for the duration of the call.
    retry(|| unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) }).map(drop)
}

/// Reap the child the pidfd names if it has exited: `Ok(None)` while it still runs.
#[cfg(target_os = "linux")]
pub(crate) fn reap_pidfd(fd: BorrowedFd<'_>) -> io::Result<Option<ExitInfo>> {
    use std::os::fd::AsRawFd;
    reap_waitid(libc::P_PIDFD, fd.as_raw_fd() as libc::id_t)
}

/// Reap child `pid` if it has exited: `Ok(None)` while it still runs.
#[cfg(target_os = "linux")]
pub(crate) fn reap_pid(pid: u32) -> io::Result<Option<ExitInfo>> {
    reap_waitid(libc::P_PID, pid as libc::id_t)
}

/// `waitid(idtype, id, WEXITED | WNOHANG)` decoded from the raw siginfo, so that a child
/// killed by a realtime signal still reports its signal number.
#[cfg(target_os = "linux")]
fn reap_waitid(idtype: libc::idtype_t, id: libc::id_t) -> io::Result<Option<ExitInfo>> {
    // SAFETY: an all-zero siginfo_t is a valid out-parameter; si_pid stays 0 under WNOHANG
    // when nothing was collected, which is how we tell "still running".
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t for the duration of the call.
    retry(|| unsafe { libc::waitid(idtype, id, &mut info, libc::WEXITED | libc::WNOHANG) })?;
    // SAFETY: after a successful waitid the SIGCHLD fields of the union are the valid ones.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => ExitInfo { code: Some(status), signal: None },
        libc::CLD_KILLED | libc::CLD_DUMPED => ExitInfo { code: None, signal: Some(status) },
        _ => ExitInfo { code: None, signal: None },
    }))
}

/// Portable reap of one pid (`waitpid(pid, WNOHANG)`): `Ok(None)` while it still runs.
#[cfg(not(target_os = "linux"))]
pub(crate) fn reap_pid(pid: u32) -> io::Result<Option<ExitInfo>> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ECHILD))?;
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid out-parameter.
    let r = retry(|| unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) })?;
    if r == 0 {
        return Ok(None);
    }
    Ok(Some(if libc::WIFEXITED(status) {
        ExitInfo { code: Some(libc::WEXITSTATUS(status)), signal: None }
    } else if libc::WIFSIGNALED(status) {
        ExitInfo { code: None, signal: Some(libc::WTERMSIG(status)) }
    } else {
        ExitInfo { code: None, signal: None }
    }))
}

#[cfg(test)]
mod guard_tests {
    #[test]
    fn killpg_refuses_init_everyone_and_our_own_group() {
        // SAFETY: getpgrp cannot fail.
        let own = unsafe { libc::getpgrp() } as u32;
        for pgid in [0, 1, own] {
            // Signal 0 only probes, so even a missing guard would not hurt this machine.
            let err = super::killpg(pgid, 0).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EPERM), "pgid {pgid}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pidfile_naming_init_or_us_is_never_signalled() {
        for pid in [1, std::process::id()] {
            let id = crate::procfs::identity(pid).expect("identity of a live process");
            // SIGCONT: harmless to a running process even if the guard were missing.
            let err = crate::signal_identity(&id, crate::Signal::Cont, true).unwrap_err();
            assert!(err.to_string().contains("not permitted"), "pid {pid}: {err}");
        }
    }
}
