//! The contract between Parachute and a platform service manager.
//!
//! A backend (systemd over D-Bus, launchd through `launchctl`, or the container /
//! no-manager fallback) implements [`ServiceManager`]. Callers (the `parachute unit`
//! verbs, the migrate cutover, the packaging hooks) only ever see this trait and the
//! platform-neutral types below: no zbus, plist or process types leak through it, so a
//! backend can change its plumbing without touching its callers.
//!
//! Every verb is idempotent and says whether it changed anything ([`Change`]), because the
//! cutover journals what it did and `--json` reports it. Errors come in the kinds callers
//! act on ([`ErrorKind`]); backend detail travels as text and as `source()`.
//!
//! Names are validated once, at the boundary: a [`UnitId`] can only hold characters that
//! are safe in a systemd unit name, a launchd label and a file name, so no caller can
//! smuggle a path separator or a newline into a unit file name.
#![warn(missing_docs)]

use std::fmt;
use std::future::Future;
use std::path::PathBuf;

use serde::Serialize;

/// Which manager instance a unit belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The invoking user's manager (`systemd --user`, launchd `gui/<uid>` LaunchAgent).
    User,
    /// The system manager (systemd PID 1, launchd `system` LaunchDaemon).
    System,
}

impl Scope {
    /// The other scope (status and teardown look in both).
    pub fn other(self) -> Scope {
        match self {
            Scope::User => Scope::System,
            Scope::System => Scope::User,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::User => "user",
            Scope::System => "system",
        })
    }
}

/// A validated unit identity: the short part shared by both naming schemes.
///
/// `UnitId::new("hub")` names `parachute-hub.service` on systemd and the launchd label
/// `computer.parachute.hub`, the names existing Parachute boxes already use. The stale
/// per-module units swept by the cutover are `UnitId::new("<short>")`.
///
/// Accepted: ASCII letters, digits, `-` and `_`, 1 to 64 characters, not starting with `-`.
///
/// ```
/// use parachute_manager::UnitId;
/// assert_eq!(UnitId::new("hub").unwrap().systemd_unit(), "parachute-hub.service");
/// assert_eq!(UnitId::new("vault").unwrap().launchd_label(), "computer.parachute.vault");
/// assert!(UnitId::new("a/b").is_err());
/// assert!(UnitId::new("x\nExecStart=/bin/sh").is_err());
/// assert!(UnitId::new("").is_err());
/// assert!(UnitId::new("%h").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UnitId(String);

impl UnitId {
    /// Validates `short` as a unit identity.
    pub fn new(short: &str) -> Result<UnitId, Error> {
        let ok = !short.is_empty()
            && short.len() <= 64
            && !short.starts_with('-')
            && short.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(UnitId(short.to_owned()))
        } else {
            Err(Error::new(
                ErrorKind::InvalidSpec,
                format!("invalid unit id {short:?}: use 1-64 ASCII letters, digits, '-' or '_'"),
            ))
        }
    }

    /// The hub's identity (`parachute-hub.service`, `computer.parachute.hub`).
    pub fn hub() -> UnitId {
        UnitId("hub".to_owned())
    }

    /// The short part (`hub`, `vault`, …).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The systemd unit name, `parachute-<id>.service`.
    pub fn systemd_unit(&self) -> String {
        format!("parachute-{}.service", self.0)
    }

    /// The launchd label, `computer.parachute.<id>`.
    pub fn launchd_label(&self) -> String {
        format!("computer.parachute.{}", self.0)
    }
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the manager should bound a crash loop of the unit itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CrashLoop {
    /// systemd `StartLimitIntervalSec=` (in `[Unit]`).
    pub interval_sec: u32,
    /// systemd `StartLimitBurst=` (in `[Unit]`).
    pub burst: u32,
    /// launchd `ThrottleInterval`, and systemd `RestartSec=`.
    pub throttle_sec: u32,
}

/// How a unit tells its manager that it has started, and whether the manager watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Readiness {
    /// Started as soon as the process is running (systemd `Type=simple`).
    Exec,
    /// The process says when it is ready (systemd `Type=notify`: `READY=1`), pings a
    /// watchdog, and is restarted when it stops pinging. Managers without a readiness
    /// protocol (launchd) treat it as [`Readiness::Exec`].
    Notify {
        /// How long the manager waits for readiness before failing the start (the process
        /// may extend it while it is still making progress).
        start_timeout_sec: u32,
        /// Restart the process when it has not pinged for this long (`None`: no watchdog).
        watchdog_sec: Option<u32>,
    },
}

/// A platform-neutral description of one unit: what to run and how.
///
/// Rendering it is a pure function of the spec and the scope, in each backend crate.
/// Renderers reject values they cannot represent faithfully (newlines and other control
/// characters); they never write a unit that would be read back differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitSpec {
    /// Which unit this is.
    pub id: UnitId,
    /// Human description (`Description=`).
    pub description: String,
    /// The full argv; `argv[0]` must be an absolute path.
    pub argv: Vec<String>,
    /// Environment, in order. Keys must be valid environment names.
    pub env: Vec<(String, String)>,
    /// Working directory of the process, if any.
    pub working_dir: Option<PathBuf>,
    /// Where stdout and stderr are appended.
    pub log_path: PathBuf,
    /// The manager's own crash-loop ceiling.
    pub crash_loop: Option<CrashLoop>,
    /// For system scope: the account the unit runs as (`User=`, launchd `UserName`).
    pub run_as_user: Option<String>,
    /// Readiness protocol and watchdog.
    pub readiness: Readiness,
    /// Confine the unit with the manager's sandboxing options that a process spawning
    /// arbitrary runtimes can live with (systemd: the hardening profile for the scope and
    /// the manager's version; launchd has none to apply).
    pub hardened: bool,
    /// Send stdout and stderr to the manager's journal rather than to `log_path` (systemd);
    /// a manager without a journal (launchd) still writes `log_path`.
    pub log_to_journal: bool,
    /// Arguments after which the program writes `log_path` itself, rotated by size (empty:
    /// it does not). A backend whose manager would append to `log_path` and never rotate it
    /// (launchd; systemd's `append:` when the output is not the journal) adds them to the
    /// command line; the manager's own redirection to the same file then only catches what
    /// the program writes before it has opened its log.
    pub log_file_args: Vec<String>,
}

/// What `install` does after writing the unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterInstall {
    /// Enable it (start at boot/login) and start it now, restarting it when it was running
    /// an older definition.
    Start,
    /// Write and register it, but neither start it now nor at the next boot/login.
    DontStart,
}

/// Whether a verb changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Something was written, started, stopped or removed.
    Changed,
    /// The unit was already in the requested state; nothing was done.
    AlreadyInPlace,
}

impl Change {
    /// `Changed` if either is.
    pub fn and(self, other: Change) -> Change {
        if self == Change::Changed || other == Change::Changed {
            Change::Changed
        } else {
            Change::AlreadyInPlace
        }
    }
}

/// Where a unit is in its life, in one vocabulary for every manager.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitState {
    /// Not running, and not about to (stopped, or never started).
    #[default]
    Inactive,
    /// Being started, or waiting to be restarted by the manager.
    Activating,
    /// Running.
    Active,
    /// Being stopped.
    Deactivating,
    /// The manager gave up on it (systemd `failed`, e.g. after its start limit).
    Failed,
}

/// What an installed unit file says, read back by the backend that wrote it: the inverse
/// of [`ServiceManager::render`] for every field callers need to re-render it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstalledUnit {
    /// The file it was read from.
    pub path: PathBuf,
    /// The file's exact bytes, for [`ServiceManager::restore`].
    pub bytes: Vec<u8>,
    /// The full argv of the main command.
    pub argv: Vec<String>,
    /// The environment, in file order (a later assignment of a name replaces an earlier one).
    pub env: Vec<(String, String)>,
    /// The working directory, when set.
    pub working_dir: Option<PathBuf>,
    /// The account it runs as (`User=`, `UserName`), when set.
    pub run_as_user: Option<String>,
    /// Where its output goes, when it is appended to a file.
    pub log_path: Option<PathBuf>,
}

impl InstalledUnit {
    /// A variable of the unit's environment.
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A unit's observed state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnitStatus {
    /// The scope the unit was found in (`None`: in neither).
    pub scope: Option<Scope>,
    /// The unit file on disk, when there is one.
    pub file: Option<PathBuf>,
    /// Whether the manager has the unit loaded (systemd `LoadState=loaded`; launchd: bootstrapped).
    pub loaded: bool,
    /// Whether it starts at boot/login (systemd `UnitFileState=enabled`; launchd: not disabled and loaded at login).
    pub enabled: bool,
    /// Whether it is running now.
    pub active: bool,
    /// Where it is in its life.
    pub state: UnitState,
    /// The manager's own words for the state (e.g. `active/running`, `failed/failed`), for
    /// display only: decide on [`UnitStatus::state`].
    pub state_text: String,
    /// The main process, when running.
    pub main_pid: Option<u32>,
    /// How often the manager restarted it, when the manager counts.
    pub restarts: Option<u32>,
    /// The last exit status of the main process, when known.
    pub last_exit_status: Option<i32>,
}

/// Where the rendered, on-disk and loaded definitions of a unit disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Drift {
    /// Rendered, on-disk and loaded definitions agree.
    InSync,
    /// No unit file is installed.
    NotInstalled,
    /// The file on disk differs from what this binary renders.
    FileDiffers {
        /// A unified-style diff, on-disk (`-`) against rendered (`+`).
        diff: String,
    },
    /// The file matches, but the manager still runs an older loaded definition.
    LoadedStale,
}

/// The kinds of failure callers act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// No service manager is reachable here (container, no user session, …).
    ManagerUnavailable,
    /// The unit is not known to the manager.
    NotFound,
    /// The manager or the file system refused (needs root or a polkit grant).
    PermissionDenied,
    /// A manager job ran and failed (systemd job result, launchctl exit code).
    JobFailed,
    /// The manager did not answer, or a job did not finish, in time.
    Timeout,
    /// The spec cannot be rendered faithfully (control characters, relative argv[0], …).
    InvalidSpec,
    /// Reading or writing a unit file failed.
    Io,
    /// An installed unit file holds something its backend cannot read back (not written by
    /// Parachute, or edited by hand).
    Unreadable,
    /// Anything else the backend reports.
    Other,
}

/// A backend error: a kind to act on, a message for a human, and optionally the tail of
/// the unit's log and the underlying cause.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// A complete sentence for a human: what failed and, where known, what to do.
    pub message: String,
    /// The last lines of the unit's log, when a start failed.
    pub log_tail: Vec<String>,
    /// The underlying cause.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), log_tail: Vec::new(), source: None }
    }

    /// Attaches a cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.source = Some(Box::new(source));
        self
    }

    /// Attaches the tail of the unit's log.
    pub fn with_log_tail(mut self, lines: Vec<String>) -> Error {
        self.log_tail = lines;
        self
    }
}

/// A platform service manager, as Parachute uses it.
///
/// Every method is idempotent: calling it twice leaves the same state and the second call
/// reports [`Change::AlreadyInPlace`]. The futures are `Send` so callers may spawn them on
/// a multi-threaded runtime.
pub trait ServiceManager: Send + Sync {
    /// A short name for messages and `--json` (`systemd-user`, `systemd-system`,
    /// `launchd-agent`, `launchd-daemon`, `none`). For display: callers never branch on it.
    fn kind(&self) -> &'static str;

    /// The name the manager knows `id` by (`parachute-hub.service`, `computer.parachute.hub`).
    fn display_name(&self, id: &UnitId) -> String;

    /// The scope this backend writes to.
    fn scope(&self) -> Scope;

    /// The path the unit file for `id` would have in this backend's scope.
    fn unit_path(&self, id: &UnitId) -> PathBuf;

    /// Renders `spec` as this backend would write it (pure; no manager call).
    fn render(&self, spec: &UnitSpec) -> Result<Vec<u8>, Error>;

    /// Reads the unit file of `id` in this backend's scope back (`None`: there is none).
    /// A file that cannot be read back faithfully is an [`ErrorKind::Unreadable`] error.
    fn read_installed(&self, id: &UnitId) -> Result<Option<InstalledUnit>, Error>;

    /// Puts `previous` (an earlier [`InstalledUnit::bytes`]) back as the unit file of `id` and
    /// makes the manager read it again; the running process is left alone (stop and start
    /// it to run the restored definition).
    fn restore(&self, id: &UnitId, previous: &[u8]) -> impl Future<Output = Result<Change, Error>> + Send;

    /// Writes the unit (only if its content differs) and registers it; with
    /// [`AfterInstall::Start`] also enables and starts it (restarting it when it was active
    /// and its definition changed), and verifies that it is running.
    fn install(
        &self,
        spec: &UnitSpec,
        then: AfterInstall,
    ) -> impl Future<Output = Result<Change, Error>> + Send;

    /// Starts the unit and waits until the manager reports it running.
    fn start(&self, id: &UnitId) -> impl Future<Output = Result<Change, Error>> + Send;

    /// Stops the unit and waits until it is down.
    fn stop(&self, id: &UnitId) -> impl Future<Output = Result<Change, Error>> + Send;

    /// Restarts the unit (starts it when it was not running).
    fn restart(&self, id: &UnitId) -> impl Future<Output = Result<Change, Error>> + Send;

    /// Stops, disables and removes the unit by name, even when its file is already gone or
    /// it lives in the other scope. A unit that does not exist is success.
    fn teardown(&self, id: &UnitId) -> impl Future<Output = Result<Change, Error>> + Send;

    /// Disables a unit durably (it will not start at boot/login) and stops it, without
    /// removing its file. Used for stale per-module units.
    fn disable(&self, id: &UnitId) -> impl Future<Output = Result<Change, Error>> + Send;

    /// The unit's state, looking in both scopes.
    fn status(&self, id: &UnitId) -> impl Future<Output = Result<UnitStatus, Error>> + Send;

    /// Compares the rendered, on-disk and loaded definitions.
    fn drift(&self, spec: &UnitSpec) -> impl Future<Output = Result<Drift, Error>> + Send;
}
