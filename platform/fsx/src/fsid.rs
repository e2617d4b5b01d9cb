//! The calling thread's file-system identity: root doing file work in a user's home as that
//! user.
//!
//! Linux checks file access against the *file-system* uid/gid (and the supplementary groups),
//! which `setfsuid`/`setfsgid` change for the calling thread only (the raw syscalls; glibc's
//! `setuid` family would change every thread). While a [`ThreadFsIdentity`] is held, every
//! `open`, `mkdir`, `unlink`, `rename` and path walk of this thread runs with the owner's
//! rights: a symlink the owner planted towards `/etc/shadow` cannot be opened for writing,
//! a file the owner cannot read is not read, and what is created belongs to the owner.
//! The thread keeps its real and effective uid 0, so it can still talk to the system
//! manager (D-Bus authenticates the socket's peer credentials, not the fs uid) and, inside
//! [`as_process_identity`], write the unit file under /etc/systemd/system.
//!
//! Changing the fs uid from 0 to another value also clears the file capabilities
//! (CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_CHOWN, …) from the thread's effective set; changing it
//! back restores them (capabilities(7), "Effect of user ID changes on capabilities").
//!
//! Only synchronous code may run under it: an `.await` may move a task to another thread.
//! The CLI runs its root verbs on a current-thread runtime, where that cannot happen.

use std::cell::Cell;
use std::io;

thread_local! {
    /// The identity this thread currently assumes, if any (for nesting and for
    /// [`as_process_identity`]).
    static ASSUMED: Cell<Option<(u32, u32)>> = const { Cell::new(None) };
}

/// This thread acts on files as `uid`/`gid` until dropped. Not `Send`: it must be dropped
/// on the thread it changed (so a future holding it across an `.await` cannot be spawned
/// onto a multi-threaded runtime).
#[derive(Debug)]
pub struct ThreadFsIdentity {
    previous: Option<(u32, u32)>,
    saved_groups: Vec<libc::gid_t>,
    _not_send: std::marker::PhantomData<*const ()>,
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;

    // Raw syscalls on purpose: they act on the calling thread only.
    pub fn setfsuid(uid: u32) -> u32 {
        // SAFETY: setfsuid takes a plain integer and returns the previous fs uid.
        unsafe { libc::syscall(libc::SYS_setfsuid, uid) as u32 }
    }

    pub fn setfsgid(gid: u32) -> u32 {
        // SAFETY: as above.
        unsafe { libc::syscall(libc::SYS_setfsgid, gid) as u32 }
    }

    pub fn setgroups(groups: &[libc::gid_t]) -> io::Result<()> {
        // SAFETY: the pointer and length describe a live slice.
        let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
        if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    pub fn getgroups() -> io::Result<Vec<libc::gid_t>> {
        // SAFETY: a zero-sized query returns the count; the second call fills the buffer.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut groups = vec![0; n as usize];
        let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        groups.truncate(n as usize);
        Ok(groups)
    }
}

impl ThreadFsIdentity {
    /// Makes this thread's file access that of `uid`/`gid` (supplementary groups: just
    /// `gid`). Fails when the switch did not take (the caller lacks the privilege), so file
    /// work never silently runs with the wrong rights.
    #[cfg(target_os = "linux")]
    pub fn assume(uid: u32, gid: u32) -> io::Result<ThreadFsIdentity> {
        let saved_groups = sys::getgroups()?;
        let previous = ASSUMED.with(Cell::get);
        sys::setgroups(&[gid])?;
        sys::setfsgid(gid);
        sys::setfsuid(uid);
        // setfsuid/setfsgid report only the previous value; read the new ones back.
        let (now_uid, now_gid) = (sys::setfsuid(u32::MAX), sys::setfsgid(u32::MAX));
        let guard = ThreadFsIdentity { previous, saved_groups, _not_send: std::marker::PhantomData };
        if now_uid != uid || now_gid != gid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "could not act as uid {uid} gid {gid} (the file-system identity stayed {now_uid}/{now_gid})"
                ),
            ));
        }
        ASSUMED.with(|a| a.set(Some((uid, gid))));
        Ok(guard)
    }

    /// Not available here: callers fall back to their no-follow, owner-checked opens.
    #[cfg(not(target_os = "linux"))]
    pub fn assume(_uid: u32, _gid: u32) -> io::Result<ThreadFsIdentity> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "per-thread file-system identity is Linux-only"))
    }

    /// The identity this thread assumes right now, if any.
    pub fn current() -> Option<(u32, u32)> {
        ASSUMED.with(Cell::get)
    }
}

#[cfg(target_os = "linux")]
fn restore(to: Option<(u32, u32)>, groups: &[libc::gid_t]) {
    // The effective uid is still 0, so these cannot fail for lack of privilege. Back to the
    // process's own identity first, then (if nested) the outer one.
    // SAFETY: geteuid/getegid cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    sys::setfsuid(euid);
    sys::setfsgid(egid);
    let _ = sys::setgroups(groups);
    if let Some((uid, gid)) = to {
        sys::setfsgid(gid);
        sys::setfsuid(uid);
    }
}

#[cfg(not(target_os = "linux"))]
fn restore(_to: Option<(u32, u32)>, _groups: &[libc::gid_t]) {}

impl Drop for ThreadFsIdentity {
    fn drop(&mut self) {
        restore(self.previous, &self.saved_groups);
        ASSUMED.with(|a| a.set(self.previous));
    }
}

/// Runs `f` with the process's own file-system identity (root's), even inside a
/// [`ThreadFsIdentity`]: for the few files only root may write (a system unit file).
pub fn as_process_identity<T>(f: impl FnOnce() -> T) -> T {
    let Some(outer) = ThreadFsIdentity::current() else { return f() };
    #[cfg(target_os = "linux")]
    {
        let groups = sys::getgroups().unwrap_or_default();
        let process_groups = process_groups();
        restore(None, &process_groups);
        ASSUMED.with(|a| a.set(None));
        let out = f();
        let _ = sys::setgroups(&groups);
        sys::setfsgid(outer.1);
        sys::setfsuid(outer.0);
        ASSUMED.with(|a| a.set(Some(outer)));
        out
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = outer;
        f()
    }
}

/// The process's supplementary groups as another thread sees them (`/proc/self/status`,
/// `Groups:`), i.e. unaffected by this thread's switch.
#[cfg(target_os = "linux")]
fn process_groups() -> Vec<libc::gid_t> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", std::process::id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| g.split_whitespace().filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn is_root() -> bool {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn files_are_created_as_and_checked_against_the_assumed_identity() {
        if !is_root() {
            // The switch needs CAP_SETUID; as a user it must refuse, not pretend.
            assert!(ThreadFsIdentity::assume(54_321, 54_321).is_err());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("root-only");
        std::fs::write(&secret, "s").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(54_321), Some(54_321)).unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        {
            let _as_user = ThreadFsIdentity::assume(54_321, 54_321).unwrap();
            assert_eq!(ThreadFsIdentity::current(), Some((54_321, 54_321)));
            let made = home.join("made");
            std::fs::write(&made, "x").unwrap();
            let m = std::fs::metadata(&made).unwrap();
            assert_eq!((m.uid(), m.gid()), (54_321, 54_321), "created as the owner");
            assert_eq!(
                std::fs::OpenOptions::new().write(true).open(&secret).unwrap_err().kind(),
                io::ErrorKind::PermissionDenied,
                "root's file is out of reach"
            );
            // Root's own rights, briefly, for what only root may write.
            as_process_identity(|| std::fs::write(dir.path().join("root-made"), "r").unwrap());
            assert_eq!(std::fs::metadata(dir.path().join("root-made")).unwrap().uid(), 0);
            assert_eq!(ThreadFsIdentity::current(), Some((54_321, 54_321)), "back to the owner");
            assert!(std::fs::OpenOptions::new().write(true).open(&secret).is_err());
        }
        assert_eq!(ThreadFsIdentity::current(), None);
        std::fs::OpenOptions::new().write(true).open(&secret).expect("root again after the guard");
    }
}
