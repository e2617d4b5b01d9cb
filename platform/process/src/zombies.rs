//! Reaping for a subreaper or PID 1 (a container's init): orphaned grandchildren are
//! reparented to us and must be reaped, but a blanket `waitpid(-1)` would steal the exit
//! status of a supervised leader (or of any other child this process waits for). So we list
//! our children, pick the zombies, skip tracked ones, and reap each by its own pid.

use std::collections::HashSet;
use std::io;

use crate::ExitInfo;

/// Make this process a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`): orphans from our
/// subtree are reparented to us instead of to init. Elsewhere: `Unsupported`.
pub fn set_child_subreaper() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    Err(io::Error::new(io::ErrorKind::Unsupported, "child subreapers exist only on Linux"))
}

/// Reap every child of this process that is a zombie and is neither in `tracked` nor a
/// [`GroupChild`](crate::GroupChild) leader (those are skipped automatically). Put into
/// `tracked` every other pid something in this process will wait for (e.g. a
/// `tokio::process::Child`). Returns the reaped pids and how they ended. Never `waitpid(-1)`.
/// Costs one `/proc` read per thread of this process plus one per child.
pub fn reap_untracked_zombies(tracked: &HashSet<u32>) -> Vec<(u32, ExitInfo)> {
    #[cfg(target_os = "linux")]
    {
        // Held throughout: a leader being spawned right now is registered before we look.
        let leaders = crate::child::leaders();
        crate::procfs::children_of(std::process::id())
            .into_iter()
            .filter(|pid| !tracked.contains(pid) && !leaders.contains(pid))
            .filter(|&pid| crate::procfs::stat(pid).is_some_and(|s| s.state == 'Z'))
            .filter_map(|pid| Some((pid, crate::sys::reap_pid(pid).ok().flatten()?)))
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tracked;
        Vec::new()
    }
}
