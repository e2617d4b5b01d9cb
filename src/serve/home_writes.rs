//! What the hub writes into its home at boot — the serve lock, the operator token,
//! `hub-instance.json` — and what it does when the home is full or read-only.
//!
//! None of these files is needed to supervise: the modules' commands come from files the
//! hub only reads, and the supervisor keeps its state in memory. So a home that cannot be
//! written does not stop the hub from starting (it used to: every module stayed down). Each
//! write that fails is said once, loudly, with what it costs; it is retried every
//! [`RETRY_EVERY`], and its success is said too. The supervisor's own state file has the
//! same policy in its writer (`supervisor::statefile`).
//!
//! The serve lock keeps two hubs off one home (the second would stop the first's children
//! as "leftovers"). The hub locks two things: a directory — `hub/run` (0700, so no other
//! user can open it and hold the lock to keep the hub from starting), or the home itself
//! when `hub/run` does not exist and cannot be created — and `hub/run/serve.lock` (what
//! older versions lock). An open directory can be `flock`ed on a read-only or full file
//! system, so when `serve.lock` cannot be created the directory lock alone keeps a second
//! hub of this version away; an existing `serve.lock` is locked through a read-only
//! descriptor, which `flock` allows. The bound control port is no substitute: two hubs on
//! one home may be given different ports.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::say;
use crate::model::home::Home;
use crate::model::hub_instance::HubInstance;
use crate::token::OperatorToken;

/// How often a failed write into the home is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(3);

/// The locks held for the life of the hub (dropping them releases them).
#[derive(Debug)]
pub struct HomeLock {
    /// The home directory, locked; `None` where the file system refuses `flock` on it.
    _dir: Option<File>,
    /// `hub/run/serve.lock`, locked; `None` until it can be created.
    file: Option<File>,
}

impl HomeLock {
    /// The descriptors holding the locks `(home directory, serve.lock)`, for an in-place
    /// upgrade to hand them to the new image: closing them would open a window in which a
    /// second hub could take the home.
    pub fn raw_fds(&self) -> (Option<i32>, Option<i32>) {
        use std::os::fd::AsRawFd;
        (self._dir.as_ref().map(AsRawFd::as_raw_fd), self.file.as_ref().map(AsRawFd::as_raw_fd))
    }

    /// The locks as the image this one replaced held them (the locks belong to the open
    /// files, which the exec kept). `None` unless it held the serve lock file.
    pub fn inherited(dir: Option<File>, file: Option<File>) -> Option<HomeLock> {
        file.is_some().then_some(HomeLock { _dir: dir, file })
    }
}

/// [`HomeLock::raw_fds`] of the hub's shared lock.
pub fn lock_fds(lock: &Mutex<HomeLock>) -> (Option<i32>, Option<i32>) {
    lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner).raw_fds()
}

/// The serve lock's path.
pub fn lock_path(home: &Home) -> PathBuf {
    home.root().join("hub/run/serve.lock")
}

enum Try {
    Held(File),
    Busy,
    Unavailable(String),
}

fn try_lock(file: File, path: &Path) -> Try {
    // fs4 rather than std's File::try_lock, which is newer than the workspace's MSRV.
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => Try::Held(file),
        Err(fs4::TryLockError::WouldBlock) => Try::Busy,
        Err(fs4::TryLockError::Error(e)) => Try::Unavailable(format!("cannot lock {}: {e}", path.display())),
    }
}

/// Creates `dir` (and its parents) mode 0700: the hub's run state (pids, locks, the
/// cutover journal) is private.
fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Opens (creating it, and its 0700 directory, when possible) and locks `serve.lock`.
fn lock_file(path: &Path) -> Try {
    let mut create_error = path.parent().and_then(|dir| create_private_dir(dir).err());
    if create_error.is_none() {
        match std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path) {
            Ok(f) => return try_lock(f, path),
            Err(e) => create_error = Some(format!("cannot create {}: {e}", path.display())),
        }
    }
    // A read-only (or full) home may still hold the file from an earlier boot: flock
    // needs no write access.
    match File::open(path) {
        Ok(f) => try_lock(f, path),
        Err(_) => Try::Unavailable(create_error.unwrap_or_default()),
    }
}

fn another_hub(home: &Home) -> String {
    let who = HubInstance::read(&home.hub_instance())
        .ok()
        .flatten()
        .map(|i| format!(" (pid {}, port {})", i.pid, i.port))
        .unwrap_or_default();
    format!(
        "another `parachute serve`{who} already runs for the home {}; refusing to start a second one (it would take over that hub's modules). Stop it first.",
        home.root().display()
    )
}

/// Takes the home's locks (see the module doc). `Err` when another hub holds either, or
/// when neither can be taken at all. `Ok((lock, Some(why)))`: the home directory is locked
/// but `serve.lock` could not be created (`why`); [`HomeWrites`] keeps trying.
pub fn lock_home(home: &Home) -> Result<(HomeLock, Option<String>), String> {
    let path = lock_path(home);
    let run = path.parent().unwrap_or(home.root());
    let _ = create_private_dir(run);
    let locked_dir = if run.is_dir() { run } else { home.root() };
    let dir = match File::open(locked_dir) {
        Ok(f) => try_lock(f, locked_dir),
        Err(e) => Try::Unavailable(format!("cannot open {}: {e}", locked_dir.display())),
    };
    let dir = match dir {
        Try::Held(f) => Ok(f),
        Try::Busy => return Err(another_hub(home)),
        Try::Unavailable(why) => Err(why),
    };
    match (lock_file(&path), dir) {
        (Try::Busy, _) => Err(another_hub(home)),
        (Try::Held(file), dir) => {
            if let Err(why) = &dir {
                tracing::debug!("{why}; the serve lock file alone keeps a second hub away");
            }
            Ok((HomeLock { _dir: dir.ok(), file: Some(file) }, None))
        }
        (Try::Unavailable(why), Ok(dir)) => Ok((HomeLock { _dir: Some(dir), file: None }, Some(why))),
        (Try::Unavailable(why), Err(dir_why)) => Err(format!("{why}; {dir_why}")),
    }
}

/// The boot writes that failed, retried until each succeeds (see the module doc).
pub struct HomeWrites {
    home: Home,
    lock: Arc<Mutex<HomeLock>>,
    lock_pending: bool,
    token: Option<OperatorToken>,
    instance: Option<HubInstance>,
}

impl HomeWrites {
    /// Nothing pending yet; `lock` is the hub's (shared so a late `serve.lock` joins it).
    pub fn new(home: Home, lock: Arc<Mutex<HomeLock>>) -> HomeWrites {
        HomeWrites { home, lock, lock_pending: false, token: None, instance: None }
    }

    /// `serve.lock` could not be created (`why`).
    pub fn lock_failed(&mut self, why: &str) {
        say(&format!(
            "{why}: running without the serve lock file — this hub holds the lock on its directory \
             instead, which keeps a second `parachute serve` of this version off the home {} (an older \
             version checks only serve.lock). Retrying every {}s.",
            self.home.root().display(),
            RETRY_EVERY.as_secs()
        ));
        self.lock_pending = true;
    }

    /// A minted token could not be written (`err`).
    pub fn token_failed(&mut self, token: OperatorToken, err: &parachute_fsx::Error) {
        say(&format!(
            "cannot write the operator token ({err}): the hub runs with a token held in memory only, so \
             the CLI cannot drive this hub until it is written. Retrying every {}s.",
            RETRY_EVERY.as_secs()
        ));
        self.token = Some(token);
    }

    /// `hub-instance.json` could not be written (`err`).
    pub fn instance_failed(&mut self, instance: HubInstance, err: &dyn std::fmt::Display) {
        say(&format!(
            "cannot write {} ({err}): every module is supervised from memory, but the CLI cannot find this \
             hub (pid {}, port {}) until it is written. Retrying every {}s.",
            self.home.hub_instance().display(),
            instance.pid,
            instance.port,
            RETRY_EVERY.as_secs()
        ));
        self.instance = Some(instance);
    }

    fn pending(&self) -> bool {
        self.lock_pending || self.token.is_some() || self.instance.is_some()
    }

    /// One round: each pending write is tried once; a success is said.
    fn retry(&mut self) {
        if self.lock_pending {
            let path = lock_path(&self.home);
            match lock_file(&path) {
                Try::Held(f) => {
                    self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner).file = Some(f);
                    self.lock_pending = false;
                    say(&format!("created and locked {}: the serve lock is complete again.", path.display()));
                }
                Try::Busy => {
                    // Only a hub that does not lock the home directory (an older version)
                    // can get here; say so once and stop trying.
                    self.lock_pending = false;
                    say(&format!(
                        "{} is locked by another process (an older `parachute serve` on this home?); \
                         two hubs on one home stop each other's modules — stop one of them.",
                        path.display()
                    ));
                }
                Try::Unavailable(_) => {}
            }
        }
        if let Some(token) = &self.token
            && token.write_to(&self.home.operator_token()).is_ok()
        {
            self.token = None;
            say(&format!(
                "wrote the operator token {} (mode 0600): the CLI can drive this hub.",
                self.home.operator_token().display()
            ));
        }
        // The instance record last: the CLI reads it first, then the token.
        if self.token.is_none()
            && let Some(instance) = &self.instance
            && instance.write(&self.home.hub_instance()).is_ok()
        {
            self.instance = None;
            say(&format!("wrote {}: the CLI can find this hub.", self.home.hub_instance().display()));
        }
    }

    /// Retries in the background until nothing is pending; `None` when nothing is. Abort the
    /// task (and await it) before removing `hub-instance.json` at shutdown, so a late write
    /// cannot bring it back.
    pub fn spawn(mut self) -> Option<JoinHandle<()>> {
        if !self.pending() {
            return None;
        }
        Some(tokio::spawn(async move {
            let mut every = tokio::time::interval(RETRY_EVERY);
            every.tick().await;
            while self.pending() {
                every.tick().await;
                // Synchronous on purpose: an abort cannot cut a write in half, and the
                // writes are a few hundred bytes.
                self.retry();
            }
        }))
    }
}
