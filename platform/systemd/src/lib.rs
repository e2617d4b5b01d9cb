//! The systemd backend: renders a [`UnitSpec`] as a `.service` file and drives the user or
//! system manager over D-Bus (zbus, async, tokio).
//!
//! Shape, and why:
//! * [`render`] is pure (spec + scope → text); its encoder was fixed by round-tripping
//!   hostile values through systemd 252, see that module.
//! * [`SystemdManager`] receives its bus connection and unit directory explicitly. Tests
//!   pass a private sandbox manager's bus and directory; only the CLI builds production
//!   connections, through [`connect`]. Nothing in this crate reads the environment.
//! * Verbs are convergent and report whether they changed anything. Each D-Bus call has a
//!   timeout, jobs are awaited on `JobRemoved` with the subscription made before the call,
//!   and "the job is done" is never taken as "it runs": the unit's state is re-checked
//!   after a short settle.
//! * Names are always used, never file existence, to decide what to stop or disable (W9),
//!   and `status`/`teardown` also look at the other scope when given a connection to it (W6).
#![warn(missing_docs)]

pub mod connect;
mod dbus;
pub mod diff;
mod errors;
pub mod hardening;
pub mod read;
pub mod render;
mod target;

use std::path::{Path, PathBuf};
use std::time::Duration;

use parachute_fsx::Written;
use parachute_manager::{
    AfterInstall, Change, Drift, Error, ErrorKind, InstalledUnit, Scope, ServiceManager, UnitId, UnitSpec,
    UnitStatus,
};
use zbus::Connection;

pub use hardening::ManagerVersion;
pub use read::read_unit;
pub use render::{render_unit, render_unit_for};
use target::{Job, Props, Target};

/// How long the backend waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Any single D-Bus call (default 25 s, systemctl's own default).
    pub call: Duration,
    /// A start/stop/restart job, from enqueueing to `JobRemoved` (default 120 s: the unit's
    /// stop timeout is 90 s by default).
    pub job: Duration,
    /// How long a freshly started unit must keep the same main process to count as running
    /// (default 500 ms).
    pub settle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            call: Duration::from_secs(25),
            job: Duration::from_secs(120),
            settle: Duration::from_millis(500),
        }
    }
}

/// The systemd implementation of [`ServiceManager`].
pub struct SystemdManager {
    this: Target,
    other: Option<Target>,
}

impl SystemdManager {
    /// A backend for the manager on `conn` (the user bus for [`Scope::User`], the system
    /// bus for [`Scope::System`]), writing unit files into `unit_dir`, which must be a
    /// directory that manager searches (see [`connect::user_unit_dir`]).
    pub fn new(conn: Connection, scope: Scope, unit_dir: PathBuf) -> SystemdManager {
        SystemdManager { this: Target::new(conn, scope, unit_dir, Timeouts::default()), other: None }
    }

    /// Also looks at the other scope's manager in `status` and `teardown`.
    pub fn with_other_scope(mut self, conn: Connection, unit_dir: PathBuf) -> SystemdManager {
        let scope = self.this.scope.other();
        self.other = Some(Target::new(conn, scope, unit_dir, self.this.t));
        self
    }

    /// Replaces the default [`Timeouts`].
    pub fn with_timeouts(mut self, t: Timeouts) -> SystemdManager {
        self.this.t = t;
        if let Some(o) = &mut self.other {
            o.t = t;
        }
        self
    }

    /// The directory unit files are written to.
    pub fn unit_dir(&self) -> &Path {
        &self.this.unit_dir
    }

    /// The unit's properties, refusing a unit that is not installed in this scope (so a
    /// start or restart says what to do instead of failing inside systemd), and reloading
    /// first when its file changed since the manager read it.
    async fn installed(t: &Target, name: &str) -> Result<target::Props, Error> {
        let p = t.props(name).await?;
        if !p.exists() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "{name} is not installed in the {} manager (no {}); install it first (`parachute unit install`).",
                    t.scope,
                    t.file(name).display()
                ),
            ));
        }
        if p.need_daemon_reload {
            t.reload().await?;
        }
        Ok(p)
    }

    async fn start_in(t: &Target, name: &str, verb: &str, job: Job) -> Result<(), Error> {
        // Clears `failed` and the start-limit counter, so a unit that hit its limit can be
        // started again from the CLI (W1).
        t.reset_failed(name).await?;
        let result = t.run_job(job, name).await?;
        if result != "done" {
            return Err(t.job_failed(name, verb, &result).await);
        }
        t.verify_running(name, verb, t.t.settle).await
    }

    async fn stop_in(t: &Target, name: &str) -> Result<Change, Error> {
        let p = t.props(name).await?;
        if !p.stoppable() {
            return Ok(Change::AlreadyInPlace);
        }
        let result = match t.run_job(Job::Stop, name).await {
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(Change::AlreadyInPlace),
            r => r?,
        };
        let q = t.props(name).await?;
        if result != "done" || q.stoppable() {
            return Err(Error::new(
                ErrorKind::JobFailed,
                format!(
                    "stopping {name} ended with '{result}' and it is now {}; see `{} status {name}`.",
                    q.state_text(),
                    t.systemctl()
                ),
            ));
        }
        Ok(Change::Changed)
    }

    fn wants_links(t: &Target, name: &str) -> bool {
        ["default.target.wants", "multi-user.target.wants"]
            .iter()
            .any(|w| t.unit_dir.join(w).join(name).symlink_metadata().is_ok())
    }

    async fn teardown_in(t: &Target, name: &str) -> Result<Change, Error> {
        let file = t.file(name);
        let p = t.props(name).await?;
        let has_file = file.symlink_metadata().is_ok();
        // Read-only look first: acting (even a no-op stop) on the system manager needs
        // privileges, and there may be nothing there at all.
        if !p.exists() && !has_file && !Self::wants_links(t, name) && p.unit_file_state.is_empty() {
            return Ok(Change::AlreadyInPlace);
        }
        let mut change = Self::stop_in(t, name).await?;
        if t.disable(name).await? {
            change = Change::Changed;
        }
        let removed = parachute_fsx::fsid::as_process_identity(|| parachute_fsx::remove_file(&file))
            .map_err(|e| errors::io(e, format!("could not remove the unit file {}", file.display())))?;
        if removed == Written::Changed {
            change = Change::Changed;
        }
        if change == Change::Changed || p.need_daemon_reload || p.exists() {
            t.reload().await?;
        }
        let before_reset = t.props(name).await?;
        t.reset_failed(name).await?;
        if before_reset.active_state == "failed" {
            change = Change::Changed;
        }
        Ok(change)
    }

    fn status_of(t: &Target, name: &str, p: &Props) -> UnitStatus {
        let file = if !p.fragment_path.is_empty() {
            Some(PathBuf::from(&p.fragment_path))
        } else {
            Some(t.file(name)).filter(|f| f.exists())
        };
        UnitStatus {
            scope: Some(t.scope),
            file,
            loaded: p.loaded(),
            enabled: p.enabled(),
            active: p.active(),
            state: p.state(),
            state_text: p.state_text(),
            main_pid: Some(p.main_pid).filter(|&pid| pid > 0),
            restarts: p.loaded().then_some(p.n_restarts),
            last_exit_status: (p.exec_main_code != 0).then_some(p.exec_main_status),
        }
    }

    fn io(e: parachute_fsx::Error, what: String) -> Error {
        errors::io(e, what)
    }
}

/// The backend kind for `scope` (`systemd-user`, `systemd-system`), also for an offline render.
pub fn kind_of(scope: Scope) -> &'static str {
    match scope {
        Scope::User => "systemd-user",
        Scope::System => "systemd-system",
    }
}

impl ServiceManager for SystemdManager {
    fn kind(&self) -> &'static str {
        kind_of(self.this.scope)
    }

    fn scope(&self) -> Scope {
        self.this.scope
    }

    fn display_name(&self, id: &UnitId) -> String {
        id.systemd_unit()
    }

    fn unit_path(&self, id: &UnitId) -> PathBuf {
        self.this.file(&id.systemd_unit())
    }

    fn render(&self, spec: &UnitSpec) -> Result<Vec<u8>, Error> {
        render_unit(spec, self.this.scope).map(String::into_bytes)
    }

    fn read_installed(&self, id: &UnitId) -> Result<Option<InstalledUnit>, Error> {
        let file = self.unit_path(id);
        let bytes = parachute_fsx::read_optional(&file)
            .map_err(|e| Self::io(e, format!("could not read the unit file {}", file.display())))?;
        bytes.map(|b| read_unit(&file, &b)).transpose()
    }

    async fn restore(&self, id: &UnitId, previous: &[u8]) -> Result<Change, Error> {
        let file = self.unit_path(id);
        let written = parachute_fsx::write_atomic(&file, previous)
            .map_err(|e| Self::io(e, format!("could not write the unit file {}", file.display())))?;
        if written == Written::Unchanged {
            return Ok(Change::AlreadyInPlace);
        }
        self.this.reload().await?;
        Ok(Change::Changed)
    }

    async fn install(&self, spec: &UnitSpec, then: AfterInstall) -> Result<Change, Error> {
        let t = &self.this;
        let name = spec.id.systemd_unit();
        let text = render_unit_for(spec, t.scope, t.version().await)?;
        let file = t.file(&name);
        // `append:` opens the log at start; its directory must exist (W8). System units log
        // to the journal (the manager would open the file as root).
        if t.scope == Scope::User
            && let Some(dir) = spec.log_path.parent()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                errors::io(e, format!("could not create the log directory {} for {name}", dir.display()))
            })?;
        }
        let before = t.props(&name).await?;
        if before.load_state == "masked" {
            // Writing over the mask would silently undo an operator's decision.
            return Err(Error::new(
                ErrorKind::Other,
                format!(
                    "{name} is masked in the {} manager; unmask it first (`{} unmask {name}`) if it should run.",
                    t.scope,
                    t.systemctl()
                ),
            ));
        }
        // Root's own file even while the caller does a user's file work as that user.
        let written =
            parachute_fsx::fsid::as_process_identity(|| parachute_fsx::write_atomic(&file, text.as_bytes()))
                .map_err(|e| Self::io(e, format!("could not write the unit file {}", file.display())))?;
        let mut change = if written == Written::Changed { Change::Changed } else { Change::AlreadyInPlace };
        if written == Written::Changed || before.need_daemon_reload || !before.loaded() {
            t.reload().await?;
        }
        // Reload can report success without having re-read anything (systemd #43001).
        let after = t.props(&name).await?;
        if !after.loaded() {
            let (ename, emsg) = &after.load_error;
            return Err(Error::new(
                ErrorKind::InvalidSpec,
                format!(
                    "systemd did not load {name} from {} after a reload: LoadState={} ({ename}: {emsg}). \
                     Is {} a directory this manager searches?",
                    file.display(),
                    after.load_state,
                    t.unit_dir.display()
                ),
            ));
        }
        if after.need_daemon_reload {
            return Err(Error::new(
                ErrorKind::Other,
                format!(
                    "systemd still reports NeedDaemonReload for {name} after a reload; run `{} daemon-reload` \
                     and look at the manager's log.",
                    t.systemctl()
                ),
            ));
        }
        if then == AfterInstall::DontStart {
            return Ok(change);
        }
        if !after.enabled() && t.enable(&name).await? {
            change = Change::Changed;
            t.reload().await?;
        }
        let stale = written == Written::Changed || before.need_daemon_reload || after.started_before(&file);
        if after.active() && !stale {
            return Ok(change);
        }
        let job = if after.active() { Job::Restart } else { Job::Start };
        Self::start_in(t, &name, "install", job).await?;
        Ok(Change::Changed)
    }

    async fn start(&self, id: &UnitId) -> Result<Change, Error> {
        let t = &self.this;
        let name = id.systemd_unit();
        let p = Self::installed(t, &name).await?;
        if p.active() {
            return Ok(Change::AlreadyInPlace);
        }
        Self::start_in(t, &name, "start", Job::Start).await?;
        Ok(Change::Changed)
    }

    async fn stop(&self, id: &UnitId) -> Result<Change, Error> {
        Self::stop_in(&self.this, &id.systemd_unit()).await
    }

    async fn restart(&self, id: &UnitId) -> Result<Change, Error> {
        let t = &self.this;
        let name = id.systemd_unit();
        Self::installed(t, &name).await?;
        Self::start_in(t, &name, "restart", Job::Restart).await?;
        Ok(Change::Changed)
    }

    async fn teardown(&self, id: &UnitId) -> Result<Change, Error> {
        let name = id.systemd_unit();
        let mut change = Self::teardown_in(&self.this, &name).await?;
        if let Some(o) = &self.other {
            change = change.and(Self::teardown_in(o, &name).await.map_err(|mut e| {
                e.message = format!(
                    "{name} also exists in the {} manager and could not be removed there: {}",
                    o.scope, e.message
                );
                e
            })?);
        }
        Ok(change)
    }

    async fn disable(&self, id: &UnitId) -> Result<Change, Error> {
        let t = &self.this;
        let name = id.systemd_unit();
        let p = t.props(&name).await?;
        let mut change = Change::AlreadyInPlace;
        if (p.exists() || Self::wants_links(t, &name)) && t.disable(&name).await? {
            change = Change::Changed;
            t.reload().await?;
        }
        Ok(change.and(Self::stop_in(t, &name).await?))
    }

    async fn status(&self, id: &UnitId) -> Result<UnitStatus, Error> {
        let name = id.systemd_unit();
        let p = self.this.props(&name).await?;
        if p.exists() || self.this.file(&name).exists() {
            return Ok(Self::status_of(&self.this, &name, &p));
        }
        if let Some(o) = &self.other {
            match o.props(&name).await {
                Ok(q) if q.exists() || o.file(&name).exists() => return Ok(Self::status_of(o, &name, &q)),
                Ok(_) => {}
                // The other scope is a courtesy look; its failure must not hide this scope's answer.
                Err(e) => {
                    tracing::warn!(scope = %o.scope, error = %e, "could not read {name} in the other scope")
                }
            }
        }
        Ok(UnitStatus { state_text: p.state_text(), ..UnitStatus::default() })
    }

    async fn drift(&self, spec: &UnitSpec) -> Result<Drift, Error> {
        let t = &self.this;
        let name = spec.id.systemd_unit();
        let text = render_unit_for(spec, t.scope, t.version().await)?;
        let file = t.file(&name);
        let on_disk = parachute_fsx::read_optional(&file)
            .map_err(|e| Self::io(e, format!("could not read the unit file {}", file.display())))?;
        let Some(on_disk) = on_disk else { return Ok(Drift::NotInstalled) };
        if on_disk != text.as_bytes() {
            let old = String::from_utf8_lossy(&on_disk);
            let diff =
                diff::unified(&old, &text, &format!("{} (on disk)", file.display()), "rendered by parachute");
            return Ok(Drift::FileDiffers { diff });
        }
        let p = t.props(&name).await?;
        if !p.loaded() || p.need_daemon_reload {
            return Ok(Drift::LoadedStale);
        }
        let (exec, env) = t.loaded_definition(&name).await?;
        let argv_matches = exec.len() == 1 && exec[0].1 == spec.argv;
        let want_env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !argv_matches || env != want_env || (p.active() && p.started_before(&file)) {
            return Ok(Drift::LoadedStale);
        }
        Ok(Drift::InSync)
    }
}
