//! Process-wide settings `serve` applies before anything else runs: enough descriptors for
//! a hub under a connection flood, and a private log (`docs/security.md`).

use std::os::fd::BorrowedFd;

/// Caps glibc's malloc at two arenas. By default it gives threads arenas of their own, up
/// to eight per core, and each keeps what it once held: the blocking pool's threads (a
/// readiness poll or `/proc` scan each, at boot) left the hub with a dozen arenas. With
/// two, the anonymous memory of a hub with 50 idle modules went from 2.9 to 2.3 MiB;
/// allocation is not where the hub spends its time. Elsewhere (musl, macOS): nothing.
pub fn lean_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt with an integer parameter, before the runtime's threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. systemd and most shells leave the soft
/// limit at 1024 (for `select()` users), which a local user exhausts with 1,024 idle
/// connections; the hub uses epoll. systemd (≥ 240) sets the hard limit to 512 Ki for every
/// service, so this alone gives the hub room without a `LimitNOFILE=` in its unit. Modules
/// inherit the raised limit. Returns `(before, after)`.
pub fn raise_nofile() -> std::io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let before = lim.rlim_cur;
        if lim.rlim_cur >= lim.rlim_max {
            return Ok((before, before));
        }
        // The hard limit first; where that is refused (macOS: an unlimited hard limit is not
        // a valid soft one, `OPEN_MAX` is 10240), the largest of a few smaller steps.
        let mut last = std::io::Error::from_raw_os_error(libc::EINVAL);
        for want in [lim.rlim_max, 65_536, 10_240] {
            if want <= before || want > lim.rlim_max {
                continue;
            }
            let try_lim = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &try_lim) == 0 {
                return Ok((before, want));
            }
            last = std::io::Error::last_os_error();
        }
        Err(last)
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_limit_and_never_lower() {
        let (before, after) = super::raise_nofile().unwrap();
        assert!(after >= before);
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct we pass.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, after);
        if cfg!(target_os = "linux") {
            assert_eq!(lim.rlim_cur, lim.rlim_max);
        }
    }
}
