//! Signalling processes that are NOT our children (a legacy daemon from a pidfile, an orphan
//! left by a previous supervisor), where we cannot pin the pid by not reaping it.
//!
//! Instead the caller proves *which* process it means with a [`ProcessIdentity`] (pid + start
//! ticks), and [`signal_identity`] closes the check-then-signal window: on Linux it first opens
//! a pidfd (which names one process for good), then verifies the identity, then signals
//! through the pidfd. A pid recycled in between can only make the check fail, never redirect
//! the signal. Without pidfds (macOS) the check is made right before a signal by number.

use crate::procfs::ProcessIdentity;
use crate::{Signal, SignalError};

/// What [`signal_identity`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signalled {
    /// The process (only) was signalled: `group` was false, or it is no longer a group leader.
    Process,
    /// Its whole process group was signalled (it still leads the group: `pgid == pid`).
    Group,
    /// No live process has that pid (exited, or a zombie). Nothing was sent.
    Gone,
    /// The pid now belongs to a different process (different start time). Nothing was sent.
    Replaced,
}

/// Send `sig` to the process `id` names (and its group when `group` and it still leads one),
/// only if it is still that very process. See the module doc for why this is race-free on
/// Linux for the leader. For the group, `killpg` is sent after re-checking that the leader is
/// alive, same identity and `pgid == pid`; the pgid cannot be reused while its leader lives.
///
/// Elsewhere the identity is checked through the host's process facts and the signal sent by
/// number right after (see `imp` below); where the identity cannot be established, nothing is
/// sent and the error says why ([`SignalError::Unverifiable`]).
pub fn signal_identity(id: &ProcessIdentity, sig: Signal, group: bool) -> Result<Signalled, SignalError> {
    imp::signal_identity(id, sig, group)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::os::fd::AsFd;

    use super::*;
    use crate::sys;

    pub(super) fn signal_identity(
        id: &ProcessIdentity,
        sig: Signal,
        group: bool,
    ) -> Result<Signalled, SignalError> {
        let esrch = |e: &std::io::Error| e.raw_os_error() == Some(libc::ESRCH);
        let os = |group, source| SignalError::Os { pid: id.pid, group, signal: sig, source };
        // Never init, never ourselves, whatever a pidfile says.
        if id.pid <= 1 || id.pid == std::process::id() {
            return Err(os(group, std::io::Error::from_raw_os_error(libc::EPERM)));
        }
        // 1. Pin whatever process has this pid right now.
        let pidfd = match sys::pidfd_open(id.pid) {
            Ok(fd) => fd,
            Err(e) if esrch(&e) || e.raw_os_error() == Some(libc::EINVAL) => return Ok(Signalled::Gone),
            Err(e) => return Err(os(false, e)),
        };
        // 2. Check that the pinned process is the one meant. If the pid was recycled after step
        //    1, the stat belongs to a newer process and the check fails: nothing is sent.
        let st = crate::facts::host_ref()
            .stat(id.pid)
            .map_err(|source| SignalError::Unverifiable { pid: id.pid, source })?;
        let Some(st) = st.filter(|s| !s.is_exited()) else { return Ok(Signalled::Gone) };
        if st.start_ticks != id.start_ticks {
            return Ok(Signalled::Replaced);
        }
        // 3. Group: the leader is alive and leads its group, so the pgid is still its own.
        //    Prefer signalling the group through the pidfd (Linux ≥ 6.9): the pinned leader
        //    names the group, so even a leader that exits and whose pid is reused in the
        //    meantime cannot redirect the signal. Older kernels answer EINVAL: fall back to
        //    killpg right after the check above.
        if group && st.pgid == id.pid {
            match sys::pidfd_send_signal_flags(pidfd.as_fd(), sig.as_raw(), sys::PIDFD_SIGNAL_PROCESS_GROUP) {
                Ok(()) => return Ok(Signalled::Group),
                Err(e) if esrch(&e) => return Ok(Signalled::Gone),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(os(true, e)),
            }
            return match sys::killpg(id.pid, sig.as_raw()) {
                Ok(()) => Ok(Signalled::Group),
                Err(e) if esrch(&e) => Ok(Signalled::Gone),
                Err(e) => Err(os(true, e)),
            };
        }
        // 4. The process alone, through the pidfd: it cannot reach any other process.
        match sys::pidfd_send_signal(pidfd.as_fd(), sig.as_raw()) {
            Ok(()) => Ok(Signalled::Process),
            Err(e) if esrch(&e) => Ok(Signalled::Gone),
            Err(e) => Err(os(false, e)),
        }
    }
}

/// Without pidfds (macOS, other Unix): check the identity, then `kill`/`killpg` by number.
/// The window between the check and the signal is a few microseconds; for the pid to name
/// another process in it, the process must exit and the kernel hand its pid to a new one
/// in that time (macOS allocates pids in increasing order and wraps at 99999), which is the
/// accepted residual risk. Where the identity cannot be read, nothing is sent:
/// [`SignalError::Unverifiable`].
#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;
    use crate::sys;

    pub(super) fn signal_identity(
        id: &ProcessIdentity,
        sig: Signal,
        group: bool,
    ) -> Result<Signalled, SignalError> {
        let esrch = |e: &std::io::Error| e.raw_os_error() == Some(libc::ESRCH);
        let os = |group, source| SignalError::Os { pid: id.pid, group, signal: sig, source };
        let st = crate::facts::host_ref()
            .stat(id.pid)
            .map_err(|source| SignalError::Unverifiable { pid: id.pid, source })?;
        let Some(st) = st.filter(|s| !s.is_exited()) else { return Ok(Signalled::Gone) };
        if st.start_ticks != id.start_ticks {
            return Ok(Signalled::Replaced);
        }
        if group && st.pgid == id.pid {
            return match sys::killpg(id.pid, sig.as_raw()) {
                Ok(()) => Ok(Signalled::Group),
                Err(e) if esrch(&e) => Ok(Signalled::Gone),
                Err(e) => Err(os(true, e)),
            };
        }
        match sys::kill(id.pid, sig.as_raw()) {
            Ok(()) => Ok(Signalled::Process),
            Err(e) if esrch(&e) => Ok(Signalled::Gone),
            Err(e) => Err(os(false, e)),
        }
    }
}
