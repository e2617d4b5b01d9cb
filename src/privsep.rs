//! Privilege separation: what root may do in a home that belongs to someone else.
//!
//! Root reaches a user's home through the package hooks (dpkg's prerm/postinst),
//! `sudo parachute migrate` and `unit install --scope system`. Everything in that home —
//! `services.json`, pidfiles, `.env`, the log, `migrate.lock`, the journal, the token, every
//! directory and every delete — is the owner's to shape, symlinks and FIFOs included. So
//! the rule, in one place:
//!
//! * **File work in a home runs as the home's owner.** [`act_as_owner`] switches the
//!   calling thread's file-system identity to the owner's uid/gid (`parachute_fsx::fsid`):
//!   every open, mkdir, unlink and path walk is checked with the owner's rights, so a
//!   symlink towards a root file reaches nothing the owner could not reach, and what is
//!   created belongs to the owner. Reads of the owner's files are bounded and refuse FIFOs
//!   and devices (`parachute_fsx::read_bounded`); the lock is opened with `O_NOFOLLOW`.
//! * **Root keeps only what needs root**: the manager calls (D-Bus authenticates the
//!   process's real credentials, which stay root) and the unit file under
//!   `/etc/systemd/system`, written inside [`with_root_files`].
//! * **Signals** go only to processes the owner could signal (`cutover::legacy`), and
//!   `killpg` refuses pgid ≤ 1 everywhere (`parachute_process`).
//! * **No root hub on a user's home**: [`root_hub_refusal`] says why a hub running as root
//!   on this home would run user-controlled commands as root; `serve` and
//!   `unit install --scope system` refuse unless `--user root` is given explicitly.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use parachute_fsx::fsid::ThreadFsIdentity;
pub use parachute_fsx::fsid::as_process_identity as with_root_files;

/// Who owns a home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The owner's uid.
    pub uid: u32,
    /// The owner's primary gid: the home directory's group.
    pub gid: u32,
}

impl Owner {
    /// The owner's login name, from the password database.
    pub fn name(&self) -> Option<String> {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(self.uid)).ok().flatten().map(|u| u.name)
    }
}

/// Why root would not act as the home's owner.
#[derive(Debug, thiserror::Error)]
pub enum PrivsepError {
    /// Neither the home nor any directory above it could be examined.
    #[error("cannot examine {}: {source}", path.display())]
    Stat {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The switch to the owner's identity did not take.
    #[error("cannot act as the owner (uid {uid}) of {}: {source}", home.display())]
    Switch {
        /// The home.
        home: PathBuf,
        /// The owner's uid.
        uid: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The owner of `home`, or of its nearest existing parent when it does not exist yet (a
/// home is created by whoever owns the directory it is created in).
pub fn owner_of(home: &Path) -> Result<Owner, PrivsepError> {
    let mut p = home;
    loop {
        match std::fs::metadata(p) {
            Ok(m) => return Ok(Owner { uid: m.uid(), gid: m.gid() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match p.parent() {
                Some(parent) => p = parent,
                None => return Err(PrivsepError::Stat { path: home.to_path_buf(), source: e }),
            },
            Err(e) => return Err(PrivsepError::Stat { path: p.to_path_buf(), source: e }),
        }
    }
}

/// The uid this thread's file work runs as: the assumed owner's inside [`act_as_owner`],
/// otherwise the effective uid.
pub fn acting_uid() -> u32 {
    ThreadFsIdentity::current().map_or_else(|| nix::unistd::geteuid().as_raw(), |(uid, _)| uid)
}

/// While held, this thread does its file work as the owner of the home (see the module
/// docs). A no-op when we are not root or the home is root's.
#[derive(Debug)]
#[must_use = "file work runs as the owner only while this guard is held"]
pub struct AsOwner {
    owner: Option<Owner>,
    _identity: Option<ThreadFsIdentity>,
}

impl AsOwner {
    /// The owner acted as, when the switch happened.
    pub fn owner(&self) -> Option<Owner> {
        self.owner
    }
}

/// Switches this thread's file work to the owner of `home` when we are root and the home
/// is not root's. Only synchronous code, or a current-thread runtime, may run under it.
pub fn act_as_owner(home: &Path) -> Result<AsOwner, PrivsepError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(AsOwner { owner: None, _identity: None });
    }
    let owner = owner_of(home)?;
    if owner.uid == 0 {
        return Ok(AsOwner { owner: None, _identity: None });
    }
    match ThreadFsIdentity::assume(owner.uid, owner.gid) {
        Ok(id) => Ok(AsOwner { owner: Some(owner), _identity: Some(id) }),
        Err(source) => Err(PrivsepError::Switch { home: home.to_path_buf(), uid: owner.uid, source }),
    }
}

/// Why a hub running as root must not serve `home`: it, or a directory above it, belongs to
/// or is writable by someone other than root, who then decides what the hub starts
/// (`services.json`, `module.json`, `.env`) and where it writes. `None`: only root controls
/// it. A missing directory is judged by its nearest existing parent.
pub fn root_hub_refusal(home: &Path) -> Option<String> {
    let mut p = Some(home);
    while let Some(dir) = p {
        if let Ok(m) = std::fs::metadata(dir) {
            let sticky = m.mode() & 0o1000 != 0;
            if m.uid() != 0 {
                let who =
                    Owner { uid: m.uid(), gid: m.gid() }.name().unwrap_or_else(|| format!("uid {}", m.uid()));
                return Some(format!("{} belongs to {who}", dir.display()));
            }
            // A sticky world-writable directory (/tmp) lets others create names, not
            // replace ours, except for the home itself which could be swapped.
            if m.mode() & 0o022 != 0 && !(sticky && dir != home) {
                return Some(format!(
                    "{} is writable by {}",
                    dir.display(),
                    if m.mode() & 0o002 != 0 { "every user" } else { "its group" }
                ));
            }
        }
        p = dir.parent();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_home_owned_or_writable_by_a_user_is_no_place_for_a_root_hub() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        if !nix::unistd::geteuid().is_root() {
            // Owned by the test user: always refused.
            assert!(root_hub_refusal(&home).is_some());
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(root_hub_refusal(&home), None, "root's own home");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(root_hub_refusal(&home).unwrap().contains("writable by its group"));
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&home, Some(54_321), Some(54_321)).unwrap();
        assert!(root_hub_refusal(&home.join("not-yet")).unwrap().contains("belongs to uid 54321"));
    }

    #[test]
    fn root_acts_as_the_owner_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let mine = act_as_owner(dir.path()).unwrap();
        assert_eq!(mine.owner(), None, "our own home needs no switch");
        assert_eq!(acting_uid(), nix::unistd::geteuid().as_raw());
        drop(mine);
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(54_321), Some(54_322)).unwrap();
        let guard = act_as_owner(&home.join("hub/run")).unwrap();
        assert_eq!(guard.owner(), Some(Owner { uid: 54_321, gid: 54_322 }));
        assert_eq!(acting_uid(), 54_321);
        std::fs::create_dir_all(home.join("hub/run")).unwrap();
        assert_eq!(std::fs::metadata(home.join("hub/run")).unwrap().uid(), 54_321, "created as the owner");
        with_root_files(|| assert_eq!(acting_uid(), 0));
        drop(guard);
        assert_eq!(acting_uid(), 0);
    }
}
