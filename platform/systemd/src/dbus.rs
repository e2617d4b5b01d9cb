//! Typed zbus proxies for the slices of `org.freedesktop.systemd1` and
//! `org.freedesktop.login1` this backend uses.
//!
//! Hand-written rather than generated: a dozen members, each named after the systemd
//! D-Bus API (org.freedesktop.systemd1(5)), with the exact wire signatures. No method here
//! carries `allow_interactive_auth`, so no call can make polkit prompt; an unprivileged call
//! to the system manager fails fast with `InteractiveAuthorizationRequired` or
//! `AccessDenied` instead of hanging on a password dialog (W11). Unit proxies are built
//! without property caching: every read asks the manager, because state changes under us.

use zbus::proxy;
use zbus::{ObjectPath, OwnedObjectPath};

/// One `ExecStart` entry: path, argv, ignore-failure, start/exit timestamps (realtime and
/// monotonic), pid, exit code and status (`a(sasbttttuii)`).
pub type ExecCommand = (String, Vec<String>, bool, u64, u64, u64, u64, u32, i32, i32);

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    /// Enqueues a start job; returns the job's object path.
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Enqueues a stop job.
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Enqueues a restart job (starts the unit when it is not running).
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    /// Clears the failed state and the start-limit counter.
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    /// daemon-reload; the reply comes once the reload is complete.
    fn reload(&self) -> zbus::Result<()>;
    /// Creates the `[Install]` symlinks; does not reload.
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<(String, String, String)>)>;
    /// Removes the `[Install]` symlinks; does not reload.
    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    /// `enabled`, `disabled`, `static`, `masked`, …
    fn get_unit_file_state(&self, file: &str) -> zbus::Result<String>;
    /// Loads the unit (from disk if needed) and returns its object path; a missing unit
    /// comes back with `LoadState=not-found`.
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// The object path of a loaded unit; `NoSuchUnit` otherwise.
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// Asks the manager to emit job and unit signals to this client.
    fn subscribe(&self) -> zbus::Result<()>;

    /// A job finished: id, job path, unit name, result (`done`, `failed`, `canceled`, …).
    #[zbus(signal)]
    fn job_removed(&self, id: u32, job: ObjectPath<'_>, unit: &str, result: &str) -> zbus::Result<()>;

    /// The directories the manager loads units from, in priority order.
    #[zbus(property)]
    fn unit_path(&self) -> zbus::Result<Vec<String>>;

    /// The manager's version (`252.38-1~deb12u1`).
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
}

#[proxy(interface = "org.freedesktop.systemd1.Unit", default_service = "org.freedesktop.systemd1")]
pub trait Unit {
    /// `loaded`, `not-found`, `bad-setting`, `error`, `masked`.
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    /// Why loading failed: D-Bus error name and message.
    #[zbus(property)]
    fn load_error(&self) -> zbus::Result<(String, String)>;
    /// `active`, `inactive`, `failed`, `activating`, `deactivating`, `reloading`.
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    /// Type-specific state (`running`, `dead`, `auto-restart`, `failed`, …).
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    /// `enabled`, `disabled`, … (empty for a unit without a file).
    #[zbus(property)]
    fn unit_file_state(&self) -> zbus::Result<String>;
    /// The file changed on disk since it was loaded.
    #[zbus(property)]
    fn need_daemon_reload(&self) -> zbus::Result<bool>;
    /// The unit file the unit was loaded from.
    #[zbus(property)]
    fn fragment_path(&self) -> zbus::Result<String>;
}

#[proxy(interface = "org.freedesktop.systemd1.Service", default_service = "org.freedesktop.systemd1")]
pub trait Service {
    /// The main process, 0 when none.
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
    /// Automatic restarts since the last manual start.
    #[zbus(property, name = "NRestarts")]
    fn n_restarts(&self) -> zbus::Result<u32>;
    /// How the main process last ended (`CLD_EXITED`=1, `CLD_KILLED`=2, …; 0 = never).
    #[zbus(property)]
    fn exec_main_code(&self) -> zbus::Result<i32>;
    /// Exit status (or signal number) of the main process.
    #[zbus(property)]
    fn exec_main_status(&self) -> zbus::Result<i32>;
    /// When the current main process started (µs since the epoch; 0 = never).
    #[zbus(property)]
    fn exec_main_start_timestamp(&self) -> zbus::Result<u64>;
    /// `success`, `exit-code`, `signal`, `start-limit-hit`, …
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    /// The loaded command lines.
    #[zbus(property)]
    fn exec_start(&self) -> zbus::Result<Vec<ExecCommand>>;
    /// The loaded `Environment=` assignments, `K=V`.
    #[zbus(property)]
    fn environment(&self) -> zbus::Result<Vec<String>>;
}

#[proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
pub trait Login {
    /// The object of a user known to logind (`NoSuchUser` when it has no session or linger).
    fn get_user(&self, uid: u32) -> zbus::Result<OwnedObjectPath>;
    /// Turns lingering on or off; `interactive=false` never prompts.
    fn set_user_linger(&self, uid: u32, enable: bool, interactive: bool) -> zbus::Result<()>;
}

#[proxy(interface = "org.freedesktop.login1.User", default_service = "org.freedesktop.login1")]
pub trait LoginUser {
    /// Whether the user's manager keeps running without a session.
    #[zbus(property)]
    fn linger(&self) -> zbus::Result<bool>;
}
