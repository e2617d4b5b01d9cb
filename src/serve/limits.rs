//! Process-wide settings `serve` applies before anything else runs: enough descriptors for
//! a hub under a connection flood, and a private log (`docs/security.md`).

use std::os::fd::BorrowedFd;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. systemd and most shells leave the soft
/// limit at 1024 (for `select()` users), which a local user exhausts with 1,024 idle
/// connections; the hub uses epoll, and its children get the soft limit back untouched
/// only if they ask (`LimitNOFILE=` in the unit sets both). Returns `(before, after)`.
pub fn raise_nofile() -> std::io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let before = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok((before, lim.rlim_cur))
    }
}

/// Makes the hub's log private: when stdout or stderr is a regular file this user owns
/// (a service manager's `append:` log, a shell redirect), its mode loses every group and
/// other bit. Module output often carries secrets. A file owned by someone else (root's
/// journal export, a terminal) is left alone.
pub fn private_log() {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    for fd in [1, 2] {
        // SAFETY: fds 1 and 2 stay open for the life of the process.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let Ok(owned) = fd.try_clone_to_owned() else { continue };
        let file = std::fs::File::from(owned);
        let Ok(meta) = file.metadata() else { continue };
        if meta.file_type().is_file() && meta.uid() == me && meta.mode() & 0o077 != 0 {
            use std::os::unix::fs::PermissionsExt;
            let _ = file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o700));
        }
    }
}
