//! The supervisor: keeps every module alive as a child in its own process group.
//!
//! CONTRACT (fixed so the serve/control-API work can proceed in parallel; the
//! implementation fills the bodies and may add, but not rename, public items):
//!
//! - [`Supervisor`] is a cheap, cloneable handle. Each module has one actor task that
//!   serializes every command (start, stop, restart) and its child's exit handling, so a
//!   start during a restart delay can never spawn a second child (upstream races R1/R2).
//! - Readers ([`Supervisor::get`], [`Supervisor::list`]) never wait on an actor: each actor
//!   publishes immutable [`ModuleState`] snapshots.
//! - Logs: every module has a ring buffer bounded by bytes; each line carries a sequence
//!   number so a follower resumes from a cursor and learns how many lines it missed.

pub mod state;

pub use state::{ModuleState, ModuleStatus, StartError};

use std::path::PathBuf;
use std::time::Duration;

/// What to run for one module. Built by exactly one function
/// (`model::modules::spawn_request`) for every path: boot, API start, restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnRequest {
    /// The module's key (`vault`, or a third-party row name).
    pub short: String,
    /// argv; `argv[0]` is resolved against the child's own PATH and cwd.
    pub argv: Vec<String>,
    /// Working directory (the row's `installDir`), if any.
    pub cwd: Option<PathBuf>,
    /// The child's complete environment (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// The declared port (from services.json); `None` skips squatter and readiness checks.
    pub port: Option<u16>,
}

/// What to do with a port holder found on the crash path that attribution says is ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReclaimPolicy {
    /// SIGTERM, grace, SIGKILL, re-verify, then respawn.
    #[default]
    Adopt,
    /// Never kill; surface a `port_squatter` error.
    Prompt,
}

/// Tunables. Defaults match the upstream hub where it was right.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Give up (status `crashed`) when this many crashes fall inside `crash_window`.
    pub max_crashes_in_window: u32,
    /// The sliding crash window.
    pub crash_window: Duration,
    /// First restart delay; doubles per crash in the window, capped at `restart_delay_max`.
    pub restart_delay: Duration,
    /// Cap of the exponential backoff.
    pub restart_delay_max: Duration,
    /// A child that stays up this long clears the crash history.
    pub healthy_reset: Duration,
    /// Grace between SIGTERM and SIGKILL when stopping.
    pub kill_timeout: Duration,
    /// Per-module ring buffer size.
    pub log_buffer_bytes: usize,
    /// Lines longer than this are split and marked as continued.
    pub max_line_bytes: usize,
    /// Capacity of the shared output queue, in lines; beyond it lines are dropped and counted.
    pub output_queue_lines: usize,
    /// Readiness window after every spawn (0 = off).
    pub ready_timeout: Duration,
    /// Readiness poll interval.
    pub ready_poll: Duration,
    /// How long a late bind is watched for after `started_but_unbound` (0 = off).
    pub late_bind_watch: Duration,
    /// Late-bind poll interval.
    pub late_bind_poll: Duration,
    /// Crash-path squatter policy.
    pub reclaim: ReclaimPolicy,
    /// Where `{short, pid, pgid, start time}` of live children is persisted, so a restarted
    /// supervisor can prove leftovers are its own.
    pub state_file: Option<PathBuf>,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_crashes_in_window: 3,
            crash_window: Duration::from_secs(60),
            restart_delay: Duration::from_millis(500),
            restart_delay_max: Duration::from_secs(30),
            healthy_reset: Duration::from_secs(60),
            kill_timeout: Duration::from_secs(5),
            log_buffer_bytes: 64 * 1024,
            max_line_bytes: 16 * 1024,
            output_queue_lines: 4096,
            ready_timeout: Duration::from_secs(4),
            ready_poll: Duration::from_millis(100),
            late_bind_watch: Duration::from_secs(60),
            late_bind_poll: Duration::from_secs(1),
            reclaim: ReclaimPolicy::Adopt,
            state_file: None,
        }
    }
}
