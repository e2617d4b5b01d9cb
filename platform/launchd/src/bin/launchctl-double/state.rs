//! The double's persistent state: launchd's view of domains, services and overrides.
//!
//! Every invocation (and every per-service supervisor) reads and rewrites one JSON file
//! under an exclusive `flock`, so concurrent `launchctl` calls see a consistent launchd,
//! as they would with the real one. The override table lives apart from the services so
//! that, like `/var/db/com.apple.xpc.launchd/disabled.*.plist`, it survives bootout and
//! plist deletion.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Knobs for asynchronous behaviour, set with `__config`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    /// How long a booted-out service stays listed (and refuses bootstrap with 5 / bootout
    /// with 36) after its process exited.
    pub bootout_delay_ms: u64,
    /// How long after it disappeared from `print` a bootstrap of the label still fails
    /// with 5 (launchd still tearing down; openclaw #112731).
    pub ghost_ms: u64,
}

/// One queued failure: the next `verb` call exits with `code`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    pub verb: String,
    pub code: i32,
}

/// A loaded job, as launchd keeps it (copied from the plist at bootstrap time).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Service {
    pub domain: String,
    pub label: String,
    pub path: String,
    pub program_args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub keep_alive: bool,
    /// `KeepAlive = { SuccessfulExit = false }` makes this false: an exit with status 0 is
    /// not restarted.
    #[serde(default = "yes")]
    pub restart_on_success: bool,
    pub run_at_load: bool,
    pub throttle_ms: u64,
    pub exit_timeout_ms: u64,
    /// The per-service supervisor process (our stand-in for launchd's job machinery).
    pub supervisor: i32,
    pub state: String,
    pub pid: Option<i32>,
    pub runs: u32,
    pub last_exit_code: Option<i32>,
    pub last_signal: Option<i32>,
    pub booting_out: bool,
    /// Incremented by each `kickstart`; the supervisor acts on new values.
    pub kick: u64,
    pub kick_kill: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The process that first used this state (the test); supervisors end with it.
    pub owner_pid: i32,
    pub config: Config,
    pub faults: Vec<Fault>,
    /// domain → label → disabled.
    pub overrides: BTreeMap<String, BTreeMap<String, bool>>,
    /// `<domain>/<label>` → job.
    pub services: BTreeMap<String, Service>,
    /// `<domain>/<label>` → unix ms until which bootstrap still fails with 5.
    pub ghosts: BTreeMap<String, u64>,
    /// `gui/<uid>` domains that do not exist (`__headless <uid>`: nobody is logged in at the
    /// GUI, as over SSH or on a headless Mac).
    #[serde(default)]
    pub absent_domains: Vec<String>,
}

impl State {
    /// Pops the first queued fault for `verb`.
    pub fn take_fault(&mut self, verb: &str) -> Option<i32> {
        let i = self.faults.iter().position(|f| f.verb == verb)?;
        Some(self.faults.remove(i).code)
    }

    pub fn is_disabled(&self, domain: &str, label: &str) -> bool {
        self.overrides.get(domain).and_then(|m| m.get(label)).copied().unwrap_or(false)
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Runs `f` on the state under the lock, saving it when `f` changed it. Fails when the
    /// directory is gone (tests delete it when they end), which ends the supervisors.
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> io::Result<R> {
        let lock_file: File =
            OpenOptions::new().create(true).truncate(false).write(true).open(self.dir.join("lock"))?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
        let before = parachute_fsx::read_optional(&self.file()).map_err(io::Error::other)?;
        let mut state: State = match &before {
            Some(bytes) => serde_json::from_slice(bytes).map_err(io::Error::other)?,
            None => State::default(),
        };
        let out = f(&mut state);
        let after = serde_json::to_vec_pretty(&state).map_err(io::Error::other)?;
        if before.as_deref() != Some(&after[..]) {
            parachute_fsx::write_atomic(&self.file(), &after).map_err(io::Error::other)?;
        }
        Ok(out)
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn yes() -> bool {
    true
}
