//! The cutover lock, `<home>/hub/run/migrate.lock`: two cutovers, or a cutover and a
//! teardown, never interleave on one home (upstream W25 had no lock at all).
//!
//! It is an advisory `flock` (via `fs4`) on an open file description, so the kernel drops
//! it when the holder exits for any reason, SIGKILL included: a crashed cutover never
//! leaves a lock behind that someone has to delete by hand. The holder writes who it is
//! (`pid`, process start time, which verb) into the file so the loser can name it.
//!
//! This is the one state file not written with `write_atomic`: replacing it by rename would
//! swap the inode under the lock and a second process would lock the new file while the
//! first still holds the old one. The content is informational only, written in place by
//! the holder after it holds the lock.
//!
//! The home belongs to a user, and root reaches this file too (the package's prerm,
//! `migrate` under sudo). So the last component is opened with `O_NOFOLLOW` (a symlink to
//! `/etc/shadow` is an error, not a target), without blocking (a FIFO cannot hang us), and
//! the opened file must be a regular file with one link, owned by whoever we act as on the
//! home (see `crate::privsep`): only then is its content ever rewritten.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How often, and how far apart, a loser re-reads the holder's record (500 ms in all).
const HOLDER_READ_TRIES: u32 = 50;
const HOLDER_READ_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Who holds the lock, as the holder recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The holder's pid.
    pub pid: u32,
    /// When the holder process started (RFC 3339), from `/proc`.
    pub process_started_at: Option<String>,
    /// When it took the lock (RFC 3339).
    pub locked_at: String,
    /// `migrate --to-supervised` or `migrate --teardown`.
    pub verb: String,
}

impl Holder {
    /// A record for this process running `verb`, taken now.
    pub fn current(verb: &str) -> Holder {
        let pid = std::process::id();
        Holder {
            pid,
            process_started_at: parachute_process::procfs::start_time(pid).map(crate::rfc3339::of_system),
            locked_at: crate::rfc3339::now(),
            verb: verb.to_owned(),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`parachute {}` (pid {}", self.verb, self.pid)?;
        if let Some(s) = &self.process_started_at {
            write!(f, ", started {s}")?;
        }
        write!(f, ", holding the lock since {})", self.locked_at)
    }
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another cutover or teardown is running on this home: {}. Wait for it to finish, then run this again (the lock is {}).",
        holder.as_ref().map_or_else(|| "a process that has not recorded itself yet".to_owned(), |h| h.to_string()),
        path.display()
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, if it has recorded itself.
        holder: Option<Holder>,
    },
    /// The lock file could not be created or locked.
    #[error("cannot take the cutover lock {}: {source}. Check that the home is writable.", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct CutoverLock {
    file: File,
    path: PathBuf,
}

/// Opens (creating it `0644` if missing) the lock file without following a symlink at its
/// name, and checks what was opened before anything is written to it.
fn open_lock_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it is a symlink; a lock file never is (remove it)",
                )
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    if !meta.file_type().is_file() {
        return refuse(format!(
            "it is {}, not a regular file (remove it)",
            parachute_fsx::kind_of(&meta.file_type())
        ));
    }
    if meta.nlink() != 1 {
        return refuse(format!("it has {} hard links; a lock file has one (remove it)", meta.nlink()));
    }
    let acting_uid = crate::privsep::acting_uid();
    if meta.uid() != acting_uid {
        return refuse(format!(
            "it belongs to uid {}, not to uid {acting_uid} who takes the lock (remove it)",
            meta.uid()
        ));
    }
    Ok(file)
}

impl CutoverLock {
    /// Takes the lock without waiting, recording `holder`.
    pub fn acquire(path: &Path, holder: &Holder) -> Result<CutoverLock, LockError> {
        let io_err = |source| LockError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut file = open_lock_file(path).map_err(io_err)?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                // The holder writes its record right after it takes the lock; give that
                // write a moment rather than report an anonymous holder.
                let mut holder = None;
                for _ in 0..HOLDER_READ_TRIES {
                    let mut text = String::new();
                    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
                    holder = serde_json::from_str(text.trim()).ok();
                    if holder.is_some() {
                        break;
                    }
                    std::thread::sleep(HOLDER_READ_PAUSE);
                }
                return Err(LockError::Held { path: path.to_path_buf(), holder });
            }
            Err(fs4::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        let mut line = serde_json::to_vec(holder).expect("a holder always serializes");
        line.push(b'\n');
        (|| {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(&line)?;
            file.sync_data()
        })()
        .map_err(io_err)?;
        Ok(CutoverLock { file, path: path.to_path_buf() })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CutoverLock {
    fn drop(&mut self) {
        // Clear the record while still holding the lock, so nobody reads a stale holder.
        let _ = self.file.set_len(0);
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(verb: &str) -> Holder {
        Holder {
            pid: std::process::id(),
            process_started_at: Some("2025-01-01T00:00:00Z".into()),
            locked_at: "2025-01-01T00:00:01Z".into(),
            verb: verb.into(),
        }
    }

    #[test]
    fn second_acquirer_is_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hub/run/migrate.lock");
        let first = CutoverLock::acquire(&p, &holder("migrate --to-supervised")).unwrap();
        let err = CutoverLock::acquire(&p, &holder("migrate --teardown")).unwrap_err();
        match &err {
            LockError::Held { holder: Some(h), .. } => assert_eq!(h.verb, "migrate --to-supervised"),
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())) && msg.contains("--to-supervised"),
            "{msg}"
        );
        drop(first);
        let again = CutoverLock::acquire(&p, &holder("migrate --teardown")).unwrap();
        assert_eq!(again.path(), p);
    }

    #[test]
    fn a_symlink_fifo_or_hard_link_in_its_place_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        let p = dir.path().join("migrate.lock");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let err = CutoverLock::acquire(&p, &holder("x")).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        std::fs::remove_file(&p).unwrap();
        std::fs::hard_link(&target, &p).unwrap();
        let err = CutoverLock::acquire(&p, &holder("x")).unwrap_err().to_string();
        assert!(err.contains("hard links"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        std::fs::remove_file(&p).unwrap();
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let started = std::time::Instant::now();
        let err = CutoverLock::acquire(&p, &holder("x")).unwrap_err().to_string();
        assert!(err.contains("FIFO") && started.elapsed().as_secs() < 2, "{err}");
    }

    #[test]
    fn released_lock_leaves_no_holder_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("migrate.lock");
        drop(CutoverLock::acquire(&p, &holder("x")).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
    }
}
