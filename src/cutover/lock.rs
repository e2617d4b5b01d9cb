//! The hub-unit lock, `<home>/hub/run/migrate.lock`: one lock for every writer of the hub
//! unit of a home — `migrate --to-supervised`, `migrate --teardown`, `postinstall`,
//! `preremove` and every `parachute unit` verb that changes the unit — so none of them
//! interleaves with another (upstream W25 had no lock at all, and a package upgrade could
//! restart the unit in the middle of a cutover). A second writer waits a bounded time
//! ([`CutoverLock::acquire_within`]), then gives up naming the holder: pid, command, and
//! since when.
//!
//! A holder may delete the file while it holds the lock (a run that wrote nothing else
//! leaves no trace: [`CutoverLock::remove_on_release`]; a purge). That is safe because a
//! taker checks, once it holds the lock, that the path still names the file it locked, and
//! starts over when it does not: two processes can never hold "the" lock on two inodes.
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

/// How long a writer of the hub unit waits for another by default: longer than a cutover
/// normally takes (seconds), bounded so a wedged holder is reported, not waited out.
pub const DEFAULT_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// How often a waiting writer tries again.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

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
        "another writer of the hub unit is running on this home: {}. Wait for it to finish, then run this again (the lock is {}).",
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

/// Takes `home`'s hub-unit lock for a writer that keeps no state there (`postinstall`,
/// `preremove`, a `parachute unit` verb): waits up to `wait`, and leaves no file behind.
/// `Ok(None)` when the home does not exist: no cutover can be running on it.
pub fn for_unit_writer(
    home: &crate::model::home::Home,
    verb: &str,
    wait: std::time::Duration,
) -> Result<Option<CutoverLock>, LockError> {
    if !home.root().is_dir() {
        return Ok(None);
    }
    // As root on a user's home, the lock file is that user's (released as root: only the
    // taking needs the owner's identity).
    let as_owner = crate::privsep::act_as_owner(home.root())
        .map_err(|e| LockError::Io { path: home.cutover_lock(), source: io::Error::other(e.to_string()) })?;
    let mut lock = CutoverLock::acquire_within(&home.cutover_lock(), &Holder::current(verb), wait)?;
    drop(as_owner);
    lock.remove_on_release();
    Ok(Some(lock))
}

/// The home the hub unit installed in `m`'s scope serves (from its `--home` or
/// `PARACHUTE_HOME`), when there is a readable one.
pub fn served_home<M: parachute_manager::ServiceManager>(m: &M) -> Option<crate::model::home::Home> {
    let unit = m.read_installed(&parachute_manager::UnitId::hub()).ok().flatten()?;
    crate::hooks::installed::InstalledHub::new(unit).home().ok()
}

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct CutoverLock {
    file: File,
    path: PathBuf,
    /// Directories this taker created for the lock file, deepest first.
    created_dirs: Vec<PathBuf>,
    remove: bool,
}

/// The missing ancestors of `dir` (deepest first), before `create_dir_all` makes them.
fn missing_dirs(dir: &Path) -> Vec<PathBuf> {
    dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).map(Path::to_path_buf).collect()
}

/// Whether `path` still names the open `file` (the lock was not deleted or replaced).
fn still_named(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
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
        Self::acquire_within(path, holder, std::time::Duration::ZERO)
    }

    /// Takes the lock, waiting up to `wait` for a holder to finish; then fails naming it.
    pub fn acquire_within(
        path: &Path,
        holder: &Holder,
        wait: std::time::Duration,
    ) -> Result<CutoverLock, LockError> {
        let io_err = |source| LockError::Io { path: path.to_path_buf(), source };
        let deadline = std::time::Instant::now() + wait;
        let created_dirs = path.parent().map(missing_dirs).unwrap_or_default();
        loop {
            // Again on every try: a holder that removed the lock may have removed its
            // directory too.
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io_err)?;
            }
            let mut file = open_lock_file(path).map_err(io_err)?;
            match fs4::FileExt::try_lock(&file) {
                Ok(()) => {}
                Err(fs4::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(RETRY_PAUSE);
                    continue;
                }
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
            if !still_named(&file, path) {
                // Deleted (or replaced) by its previous holder after we opened it.
                continue;
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
            return Ok(CutoverLock { file, path: path.to_path_buf(), created_dirs, remove: false });
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the lock file (and the directories taken for it) on release: for a run
    /// that wrote nothing else, so it leaves no trace.
    pub fn remove_on_release(&mut self) {
        self.remove = true;
    }
}

impl Drop for CutoverLock {
    fn drop(&mut self) {
        // Clear the record (or the file) while still holding the lock, so nobody reads a
        // stale holder; a taker that opened the deleted file notices and starts over.
        if self.remove {
            let _ = std::fs::remove_file(&self.path);
            for d in &self.created_dirs {
                if std::fs::remove_dir(d).is_err() {
                    break;
                }
            }
        } else {
            let _ = self.file.set_len(0);
        }
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
    fn a_waiting_taker_gets_the_lock_when_it_is_released_or_names_the_holder() {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("migrate.lock");
        let first = CutoverLock::acquire(&p, &holder("migrate --to-supervised")).unwrap();
        let t0 = Instant::now();
        let err =
            CutoverLock::acquire_within(&p, &holder("postinstall"), Duration::from_millis(300)).unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(300), "it waited");
        assert!(err.to_string().contains("migrate --to-supervised"), "{err}");
        let p2 = p.clone();
        let waiter = std::thread::spawn(move || {
            CutoverLock::acquire_within(&p2, &holder("postinstall"), Duration::from_secs(10))
                .map(|_| Instant::now())
        });
        std::thread::sleep(Duration::from_millis(200));
        let released = Instant::now();
        drop(first);
        let got = waiter.join().unwrap().expect("the waiter takes the lock once it is free");
        assert!(got >= released);
    }

    #[test]
    fn a_lock_removed_by_its_holder_is_never_held_twice() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hub/run/migrate.lock");
        let mut first = CutoverLock::acquire(&p, &holder("migrate --to-supervised")).unwrap();
        first.remove_on_release();
        let p2 = p.clone();
        let waiter = std::thread::spawn(move || {
            let l =
                CutoverLock::acquire_within(&p2, &holder("postinstall"), Duration::from_secs(10)).unwrap();
            // The waiter holds the file the path names now, not the deleted one.
            assert!(still_named(&l.file, &p2));
            l
        });
        std::thread::sleep(Duration::from_millis(150));
        drop(first);
        let second = waiter.join().unwrap();
        assert!(matches!(
            CutoverLock::acquire(&p, &holder("x")),
            Err(LockError::Held { holder: Some(h), .. }) if h.verb == "postinstall"
        ));
        drop(second);
    }

    #[test]
    fn a_run_that_wrote_nothing_leaves_no_lock_file_or_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hub/run/migrate.lock");
        let mut l = CutoverLock::acquire(&p, &holder("x")).unwrap();
        l.remove_on_release();
        drop(l);
        assert!(!dir.path().join("hub").exists());
        std::fs::create_dir_all(dir.path().join("hub/run")).unwrap();
        std::fs::write(dir.path().join("hub/run/hub.pid"), "1").unwrap();
        let mut l = CutoverLock::acquire(&p, &holder("x")).unwrap();
        l.remove_on_release();
        drop(l);
        assert!(!p.exists() && dir.path().join("hub/run/hub.pid").exists());
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
