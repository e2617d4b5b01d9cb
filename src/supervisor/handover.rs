//! The supervisor's half of an in-place upgrade (`crate::serve::handover` is the hub's):
//! freezing every module so the hub can hand its state to a new image of itself, and
//! adopting what such an image was handed.
//!
//! Freezing is a command to each actor, so it lands between two of the module's events —
//! never in the middle of a spawn, a stop or a crash verdict. A frozen actor has stopped its
//! output pumps between two reads (nothing read is lost; an unfinished line is handed over
//! as bytes) and waits; its child keeps running, untouched. Dropping the [`Freeze`] without
//! exec'ing resumes every actor where it stopped.

use std::os::fd::RawFd;
use std::time::Duration;

use bytes::Bytes;
use parachute_process::{ProcessIdentity, Spawned};
use tokio::sync::oneshot;

use super::SpawnRequest;
use super::state::ModuleState;

/// One module as an actor froze it.
#[derive(Debug)]
pub struct FrozenModule {
    /// The module.
    pub short: String,
    /// Its last published state (with its last stderr line).
    pub state: ModuleState,
    /// What it was started with (respawns use it).
    pub request: Option<SpawnRequest>,
    /// Its child, if it has one.
    pub child: Option<FrozenChild>,
    /// The `seq` of the first line of `ring`.
    pub ring_first_seq: u64,
    /// Every line of its log buffer, oldest first.
    pub ring: Vec<Bytes>,
    /// How long ago each crash its budget counts was.
    pub crash_ages: Vec<Duration>,
    /// Spawns so far (the next restart count follows on).
    pub spawn_seq: u64,
    /// A crash respawn that is due in this long.
    pub respawn_in: Option<Duration>,
}

/// A frozen module's child: who it is and the pipes its output comes through, which stay
/// open (`FD_CLOEXEC` set) while frozen; the hub clears that flag at the exec only.
#[derive(Debug)]
pub struct FrozenChild {
    /// The leader, by identity.
    pub leader: ProcessIdentity,
    /// The read end of its stdout pipe (`None`: the child closed it).
    pub stdout: Option<RawFd>,
    /// The read end of its stderr pipe (`None`: the child closed it).
    pub stderr: Option<RawFd>,
    /// An unfinished stdout line.
    pub partial_stdout: Vec<u8>,
    /// An unfinished stderr line.
    pub partial_stderr: Vec<u8>,
    /// How long it has been up.
    pub uptime: Duration,
}

/// Every module, frozen. Dropping it resumes them all (an abandoned upgrade).
#[derive(Debug, Default)]
pub struct Freeze {
    /// The modules, in `list()` order.
    pub modules: Vec<FrozenModule>,
    pub(super) thaws: Vec<oneshot::Sender<()>>,
}

impl Freeze {
    /// Resumes every module (the exec failed or was not attempted).
    pub fn thaw(self) {
        drop(self);
    }
}

/// A module handed to this image by the one it replaced.
#[derive(Debug)]
pub struct AdoptedModule {
    /// The module.
    pub short: String,
    /// Its state when it was frozen.
    pub state: ModuleState,
    /// What it was started with.
    pub request: Option<SpawnRequest>,
    /// Its child, taken back ([`Spawned::adopt_inherited`]).
    pub child: Option<AdoptedChild>,
    /// The `seq` of the first line of `ring`.
    pub ring_first_seq: u64,
    /// Its log buffer.
    pub ring: Vec<Bytes>,
    /// How long ago each counted crash was.
    pub crash_ages: Vec<Duration>,
    /// Spawns so far.
    pub spawn_seq: u64,
    /// A crash respawn due in this long.
    pub respawn_in: Option<Duration>,
    /// How long its child has been up.
    pub uptime: Duration,
}

/// An adopted child and where its output stands.
#[derive(Debug)]
pub struct AdoptedChild {
    /// The child and its pipes (a pipe the child had closed is a placeholder).
    pub spawned: Spawned,
    /// The leader's start time.
    pub start_ticks: u64,
    /// Whether `spawned.stdout` is the child's pipe (else a placeholder not to be read).
    pub stdout_open: bool,
    /// Whether `spawned.stderr` is the child's pipe.
    pub stderr_open: bool,
    /// An unfinished stdout line to go on from.
    pub partial_stdout: Vec<u8>,
    /// An unfinished stderr line to go on from.
    pub partial_stderr: Vec<u8>,
}
