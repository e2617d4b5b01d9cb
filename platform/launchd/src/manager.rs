//! [`LaunchdManager`]: the [`ServiceManager`] verbs as idempotent launchctl sequences.
//!
//! launchd has no "start" that works in every state, so each verb first asks launchd
//! where the job is (`print` for loaded/running, `print-disabled` for the override
//! database) and then does only the step that is missing:
//!
//! | verb | not loaded | loaded, not running | running |
//! |---|---|---|---|
//! | start | `enable`, `bootstrap`, wait running | `kickstart`, wait | nothing |
//! | stop | nothing | `bootout`, wait unloaded | `bootout`, wait unloaded |
//! | restart | as start | `kickstart -k`, wait | `kickstart -k`, wait for a new pid |
//!
//! `bootout` is asynchronous, so "stopped" means `print` no longer finds the job; a
//! `bootstrap` that races a bootout gets EIO (5) and is retried with backoff after the
//! job is gone (openclaw #84630/#110137). A persisted `disable` makes `bootstrap` fail
//! with 119, so start always `enable`s first; install-without-start `disable`s, because
//! a plist in LaunchAgents would otherwise load at the next login (W26).

use std::path::{Path, PathBuf};
use std::time::Duration;

use parachute_manager::{
    AfterInstall, Change, Drift, Error, ErrorKind, InstalledUnit, Scope, ServiceManager, UnitId, UnitSpec,
    UnitState, UnitStatus,
};
use tokio::time::Instant;

use crate::launchctl::{ExitCode, Launchctl, LaunchctlError, PrintInfo, parse_print_disabled};
use crate::render::{parse_plist, read_plist, render_plist};

/// Where plists live: LaunchAgents of the (invoking) user, and the system LaunchDaemons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchdDirs {
    /// `<user_home>/Library/LaunchAgents` in production.
    pub agents: PathBuf,
    /// `/Library/LaunchDaemons` in production.
    pub daemons: PathBuf,
}

impl LaunchdDirs {
    /// The production directories for a user whose home is `user_home` (under sudo: the
    /// invoking user's home, not root's).
    pub fn for_home(user_home: &Path) -> LaunchdDirs {
        LaunchdDirs {
            agents: user_home.join("Library/LaunchAgents"),
            daemons: PathBuf::from("/Library/LaunchDaemons"),
        }
    }
}

/// How long to wait for launchd, and how hard to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Between two `print` polls.
    pub poll: Duration,
    /// Until a started job must be running.
    pub start_timeout: Duration,
    /// How long a started job must keep the same pid to count as running (a job that
    /// dies at once is not "started").
    pub settle: Duration,
    /// Until a booted-out job must be gone; launchd waits `ExitTimeOut` (20 s by default)
    /// before SIGKILL, so this is longer.
    pub unload_timeout: Duration,
    /// How many times `bootstrap` is tried when it fails with EIO/EALREADY.
    pub bootstrap_attempts: u32,
    /// The first retry delay; it doubles per attempt, capped at 2 s.
    pub backoff: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            poll: Duration::from_millis(100),
            start_timeout: Duration::from_secs(15),
            settle: Duration::from_millis(300),
            unload_timeout: Duration::from_secs(25),
            bootstrap_attempts: 6,
            backoff: Duration::from_millis(200),
        }
    }
}

/// The launchd backend.
#[derive(Debug, Clone)]
pub struct LaunchdManager {
    scope: Scope,
    dirs: LaunchdDirs,
    gui_uid: u32,
    launchctl: Launchctl,
    timing: Timing,
}

/// One label in one domain.
#[derive(Debug, Clone)]
struct Target {
    scope: Scope,
    label: String,
    domain: String,
    service: String,
    plist: PathBuf,
}

impl LaunchdManager {
    /// A backend writing to `scope` (User: LaunchAgent in `gui/<gui_uid>`, System:
    /// LaunchDaemon in `system`), with plists under `dirs`, driving `launchctl`.
    pub fn new(scope: Scope, dirs: LaunchdDirs, gui_uid: u32, launchctl: Launchctl) -> LaunchdManager {
        LaunchdManager { scope, dirs, gui_uid, launchctl, timing: Timing::default() }
    }

    /// Replaces the waiting and retry policy.
    pub fn with_timing(mut self, timing: Timing) -> LaunchdManager {
        self.timing = timing;
        self
    }

    /// The domain of `scope`: `gui/<uid>` or `system`.
    pub fn domain(&self, scope: Scope) -> String {
        match scope {
            Scope::User => format!("gui/{}", self.gui_uid),
            Scope::System => "system".to_owned(),
        }
    }

    /// Whether launchd answers for this backend's domain (`launchctl print gui/<uid>` or
    /// `print system`): a LaunchAgent needs a GUI login, so on a headless Mac it does not.
    pub async fn domain_reachable(&self) -> Result<(), Error> {
        let domain = self.domain(self.scope);
        match self.call(&["print", &domain]).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let kind = match e.code() {
                    Some(ExitCode::NotPermitted) => ErrorKind::PermissionDenied,
                    _ => ErrorKind::ManagerUnavailable,
                };
                Err(Error::new(kind, format!("launchctl could not reach the {domain} domain ({e})"))
                    .with_source(e))
            }
        }
    }

    fn target(&self, id: &UnitId, scope: Scope) -> Target {
        let label = id.launchd_label();
        let domain = self.domain(scope);
        let dir = match scope {
            Scope::User => &self.dirs.agents,
            Scope::System => &self.dirs.daemons,
        };
        Target {
            scope,
            service: format!("{domain}/{label}"),
            plist: dir.join(format!("{label}.plist")),
            label,
            domain,
        }
    }

    async fn call(&self, args: &[&str]) -> Result<String, LaunchctlError> {
        self.launchctl.run(args).await.map(|o| o.stdout)
    }

    /// `print`: `Some` when loaded, `None` when launchd does not know the label.
    async fn probe(&self, t: &Target) -> Result<Option<PrintInfo>, Error> {
        match self.call(&["print", &t.service]).await {
            Ok(out) => Ok(Some(PrintInfo::parse(&out))),
            Err(e) if matches!(e.code(), Some(ExitCode::ServiceNotFound | ExitCode::NoSuchProcess)) => {
                Ok(None)
            }
            Err(e) => Err(map_err(t, "ask launchd about", e)),
        }
    }

    async fn is_disabled(&self, t: &Target) -> Result<bool, Error> {
        let out = self
            .call(&["print-disabled", &t.domain])
            .await
            .map_err(|e| map_err(t, "read the disabled overrides for", e))?;
        Ok(parse_print_disabled(&out).get(&t.label).copied().unwrap_or(false))
    }

    async fn set_enabled(&self, t: &Target, enabled: bool) -> Result<Change, Error> {
        if self.is_disabled(t).await? != enabled {
            return Ok(Change::AlreadyInPlace);
        }
        let verb = if enabled { "enable" } else { "disable" };
        self.call(&[verb, &t.service]).await.map_err(|e| map_err(t, verb, e))?;
        Ok(Change::Changed)
    }

    /// Loads the plist, riding out an in-flight bootout (EIO) and a racing load (EALREADY).
    async fn bootstrap(&self, t: &Target) -> Result<(), Error> {
        let plist = t.plist.to_string_lossy().into_owned();
        let mut delay = self.timing.backoff;
        let mut last: Option<LaunchctlError> = None;
        for attempt in 1..=self.timing.bootstrap_attempts.max(1) {
            if attempt > 1 {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            let err = match self.call(&["bootstrap", &t.domain, &plist]).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            match err.code() {
                // Someone loaded it meanwhile: fine once print confirms it.
                Some(ExitCode::Already) => {
                    if self.probe(t).await?.is_some() {
                        return Ok(());
                    }
                }
                // Disabled between our enable and now (or an old launchd answering 5 for it).
                Some(ExitCode::Disabled) => {
                    self.set_enabled(t, true).await?;
                }
                // The catch-all: usually the label is still being booted out. Wait until
                // print no longer finds it, re-enable if needed, then retry.
                Some(ExitCode::Io) => {
                    if self.probe(t).await?.is_some_and(|i| i.is_running()) {
                        // Loaded and running: the 5 meant "already loaded" on this macOS.
                        return Ok(());
                    }
                    self.wait_unloaded(t).await?;
                    self.set_enabled(t, true).await?;
                }
                _ => return Err(map_err(t, "bootstrap", err)),
            }
            tracing::debug!(service = %t.service, attempt, error = %err, "bootstrap retry");
            last = Some(err);
        }
        let err = last.expect("at least one attempt failed");
        Err(Error::new(
            ErrorKind::JobFailed,
            format!(
                "launchd refused to load {} from {} after {} attempts ({err}); check the plist with \
                 `plutil -lint {}` and the system log.",
                t.service,
                t.plist.display(),
                self.timing.bootstrap_attempts,
                t.plist.display()
            ),
        )
        .with_source(err))
    }

    /// Polls `print` until the job is gone.
    async fn wait_unloaded(&self, t: &Target) -> Result<(), Error> {
        let deadline = Instant::now() + self.timing.unload_timeout;
        loop {
            if self.probe(t).await?.is_none() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "{} was still loaded {:?} after bootout; its process may ignore SIGTERM. \
                         Check `launchctl print {}`.",
                        t.service, self.timing.unload_timeout, t.service
                    ),
                ));
            }
            tokio::time::sleep(self.timing.poll).await;
        }
    }

    /// Polls `print` until the job runs with a pid other than `not_pid`, and keeps that
    /// pid for `settle`, so a job that dies at once is not reported as started.
    async fn wait_running(&self, t: &Target, not_pid: Option<u32>) -> Result<PrintInfo, Error> {
        let deadline = Instant::now() + self.timing.start_timeout;
        let mut last: Option<PrintInfo> = None;
        let mut since: Option<(u32, Instant)> = None;
        loop {
            let info = self.probe(t).await?;
            match &info {
                Some(i) if i.is_running() && i.pid != not_pid => {
                    let pid = i.pid.unwrap_or_default();
                    let first_seen = match since {
                        Some((p, at)) if p == pid => at,
                        _ => since.insert((pid, Instant::now())).1,
                    };
                    if first_seen.elapsed() >= self.timing.settle {
                        return Ok(i.clone());
                    }
                }
                _ => since = None,
            }
            last = info.or(last);
            if Instant::now() >= deadline {
                let state = last
                    .as_ref()
                    .map(|i| {
                        format!(
                            "state {:?}, last exit code {}",
                            i.state.as_deref().unwrap_or("unknown"),
                            i.last_exit_code.map_or("unknown".to_owned(), |c| c.to_string())
                        )
                    })
                    .unwrap_or_else(|| "not loaded".to_owned());
                let log = self.log_path_of(t);
                return Err(Error::new(
                    ErrorKind::JobFailed,
                    format!(
                        "{} did not reach the running state within {:?} ({state}); see its log{}.",
                        t.service,
                        self.timing.start_timeout,
                        log.as_ref().map(|p| format!(" at {}", p.display())).unwrap_or_default()
                    ),
                )
                .with_log_tail(log.map(|p| parachute_fsx::tail_lines(&p, 20)).unwrap_or_default()));
            }
            tokio::time::sleep(self.timing.poll).await;
        }
    }

    /// `bootout` by label and wait until it is gone. Not loaded is success.
    async fn bootout(&self, t: &Target) -> Result<Change, Error> {
        match self.call(&["bootout", &t.service]).await {
            Ok(_) => {}
            Err(e) => match e.code() {
                Some(ExitCode::NoSuchProcess | ExitCode::ServiceNotFound) => {
                    return Ok(Change::AlreadyInPlace);
                }
                // A bootout already in flight (36), or Darwin 27's EIO for a label that is
                // (maybe) not loaded: either way, wait for print to agree.
                Some(ExitCode::InProgress | ExitCode::Io | ExitCode::Already) => {
                    if self.probe(t).await?.is_none() {
                        return Ok(Change::AlreadyInPlace);
                    }
                }
                _ => return Err(map_err(t, "bootout", e)),
            },
        }
        self.wait_unloaded(t).await?;
        Ok(Change::Changed)
    }

    /// Gets a loaded-or-not job running: bootstrap when unloaded, kickstart when idle.
    async fn bring_up(&self, t: &Target, info: Option<PrintInfo>) -> Result<Change, Error> {
        match info {
            Some(i) if i.is_running() => Ok(Change::AlreadyInPlace),
            Some(_) => {
                self.kickstart(t, false, None).await?;
                Ok(Change::Changed)
            }
            None => {
                if !t.plist.exists() {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "{} is not loaded and there is no plist at {}; install the unit first.",
                            t.service,
                            t.plist.display()
                        ),
                    ));
                }
                self.bootstrap(t).await?;
                self.wait_running(t, None).await?;
                Ok(Change::Changed)
            }
        }
    }

    /// `kickstart [-k]` and wait for a running pid other than `old_pid`. A job that turns
    /// out to be mid-bootout (EALREADY/EINPROGRESS) or already gone is waited out and
    /// bootstrapped again instead: kickstart cannot revive a booted-out label (openclaw #110137).
    async fn kickstart(&self, t: &Target, kill: bool, old_pid: Option<u32>) -> Result<(), Error> {
        let args: &[&str] = if kill { &["kickstart", "-k", &t.service] } else { &["kickstart", &t.service] };
        match self.call(args).await {
            Ok(_) => {}
            Err(e) => match e.code() {
                Some(
                    ExitCode::Already
                    | ExitCode::InProgress
                    | ExitCode::ServiceNotFound
                    | ExitCode::NoSuchProcess,
                ) => {
                    tracing::debug!(service = %t.service, error = %e, "kickstart raced a bootout");
                    self.wait_unloaded(t).await?;
                    self.bootstrap(t).await?;
                }
                _ => return Err(map_err(t, "kickstart", e)),
            },
        }
        self.wait_running(t, old_pid).await.map(drop)
    }

    /// Start in this backend's scope: enable, then bring up.
    async fn start_target(&self, t: &Target) -> Result<Change, Error> {
        let enabled = self.set_enabled(t, true).await?;
        let info = self.probe(t).await?;
        Ok(enabled.and(self.bring_up(t, info).await?))
    }

    async fn teardown_target(&self, t: &Target) -> Result<Change, Error> {
        let existed = t.plist.exists() || self.probe(t).await?.is_some();
        if !existed {
            return Ok(Change::AlreadyInPlace);
        }
        let mut change = self.bootout(t).await?;
        change = change.and(self.set_enabled(t, false).await?);
        let removed = parachute_fsx::remove_file(&t.plist).map_err(|e| io_err(t, e))?;
        if removed == parachute_fsx::Written::Changed {
            change = Change::Changed;
        }
        Ok(change)
    }

    /// The log path named in the on-disk plist (`StandardErrorPath`), if readable.
    fn log_path_of(&self, t: &Target) -> Option<PathBuf> {
        let bytes = std::fs::read(&t.plist).ok()?;
        let value = parse_plist(&bytes).ok()?;
        let dict = value.as_dictionary()?;
        let path = dict.get("StandardErrorPath").or_else(|| dict.get("StandardOutPath"))?.as_string()?;
        Some(PathBuf::from(path))
    }

    async fn status_in(&self, t: &Target) -> Result<Option<UnitStatus>, Error> {
        let info = self.probe(t).await?;
        let file = t.plist.exists().then(|| t.plist.clone());
        if info.is_none() && file.is_none() {
            return Ok(None);
        }
        let disabled = self.is_disabled(t).await?;
        let info = info.as_ref();
        Ok(Some(UnitStatus {
            scope: Some(t.scope),
            file: file.clone(),
            loaded: info.is_some(),
            // launchd loads every plist in LaunchAgents/LaunchDaemons at login/boot
            // unless an override disables it.
            enabled: file.is_some() && !disabled,
            active: info.is_some_and(PrintInfo::is_running),
            // A loaded job that is not running is waiting for KeepAlive to respawn it (every
            // plist Parachute writes keeps it alive); launchd has no "gave up" state.
            state: match info {
                Some(i) if i.is_running() => UnitState::Active,
                Some(_) => UnitState::Activating,
                None => UnitState::Inactive,
            },
            state_text: match info {
                Some(i) => i.state.clone().unwrap_or_else(|| "loaded".to_owned()),
                None if disabled => "not loaded (disabled)".to_owned(),
                None => "not loaded".to_owned(),
            },
            main_pid: info.filter(|i| i.is_running()).and_then(|i| i.pid),
            restarts: info.and_then(|i| i.runs).map(|r| r.saturating_sub(1)),
            last_exit_status: info.and_then(|i| i.last_exit_code),
        }))
    }
}

impl ServiceManager for LaunchdManager {
    fn kind(&self) -> &'static str {
        match self.scope {
            Scope::User => "launchd-agent",
            Scope::System => "launchd-daemon",
        }
    }

    fn scope(&self) -> Scope {
        self.scope
    }

    fn display_name(&self, id: &UnitId) -> String {
        id.launchd_label()
    }

    fn unit_path(&self, id: &UnitId) -> PathBuf {
        self.target(id, self.scope).plist
    }

    fn render(&self, spec: &UnitSpec) -> Result<Vec<u8>, Error> {
        render_plist(spec, self.scope)
    }

    fn read_installed(&self, id: &UnitId) -> Result<Option<InstalledUnit>, Error> {
        let t = self.target(id, self.scope);
        let bytes = parachute_fsx::read_optional(&t.plist).map_err(|e| io_err(&t, e))?;
        bytes.map(|b| read_plist(&t.plist, &b)).transpose()
    }

    /// launchd reads a plist only at bootstrap, so there is nothing to reload: the caller's
    /// stop (bootout) and start (bootstrap) load the restored definition.
    async fn restore(&self, id: &UnitId, previous: &[u8]) -> Result<Change, Error> {
        let t = self.target(id, self.scope);
        let written = parachute_fsx::write_atomic(&t.plist, previous).map_err(|e| io_err(&t, e))?;
        Ok(if written == parachute_fsx::Written::Changed { Change::Changed } else { Change::AlreadyInPlace })
    }

    async fn install(&self, spec: &UnitSpec, then: AfterInstall) -> Result<Change, Error> {
        let t = self.target(&spec.id, self.scope);
        let rendered = render_plist(spec, self.scope)?;
        // launchd opens StandardOutPath itself when it spawns the job and does not create
        // its directory: a missing one makes every spawn fail with EX_CONFIG (78).
        if let Some(dir) = spec.log_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("could not create the log directory {} for {}: {e}", dir.display(), t.label),
                )
            })?;
        }
        let before = parachute_fsx::read_optional(&t.plist).map_err(|e| io_err(&t, e))?;
        let definition_changed = match &before {
            None => true,
            Some(old) => parse_plist(old).ok() != parse_plist(&rendered).ok(),
        };
        let written = parachute_fsx::write_atomic(&t.plist, &rendered).map_err(|e| io_err(&t, e))?;
        let mut change =
            if written == parachute_fsx::Written::Changed { Change::Changed } else { Change::AlreadyInPlace };
        match then {
            // The file alone would load at the next login (RunAtLoad); the override keeps
            // it down until `start` enables it (W26). A job that is already loaded keeps
            // running, as on systemd.
            AfterInstall::DontStart => Ok(change.and(self.set_enabled(&t, false).await?)),
            AfterInstall::Start => {
                change = change.and(self.set_enabled(&t, true).await?);
                let info = self.probe(&t).await?;
                let stale = info.as_ref().is_some_and(|i| loaded_differs(i, &t, spec));
                if info.is_some() && (definition_changed || stale) {
                    // launchd reads a plist only at bootstrap: reload to apply the edit.
                    self.bootout(&t).await?;
                    self.bootstrap(&t).await?;
                    self.wait_running(&t, None).await?;
                    return Ok(Change::Changed);
                }
                Ok(change.and(self.bring_up(&t, info).await?))
            }
        }
    }

    async fn start(&self, id: &UnitId) -> Result<Change, Error> {
        self.start_target(&self.target(id, self.scope)).await
    }

    async fn stop(&self, id: &UnitId) -> Result<Change, Error> {
        // Only bootout sticks: `kill`/`stop` on a KeepAlive job just restarts it.
        self.bootout(&self.target(id, self.scope)).await
    }

    async fn restart(&self, id: &UnitId) -> Result<Change, Error> {
        let t = self.target(id, self.scope);
        match self.probe(&t).await? {
            Some(info) => {
                let old = info.pid.filter(|_| info.is_running());
                self.kickstart(&t, true, old).await?;
                Ok(Change::Changed)
            }
            None => self.start_target(&t).await.map(|_| Change::Changed),
        }
    }

    async fn teardown(&self, id: &UnitId) -> Result<Change, Error> {
        let own = self.teardown_target(&self.target(id, self.scope)).await?;
        let other = self.teardown_target(&self.target(id, self.scope.other())).await.map_err(|mut e| {
            e.message = format!(
                "{} It is installed in the {} scope too; run the teardown there (with sudo for the system scope).",
                e.message,
                self.scope.other()
            );
            e
        })?;
        Ok(own.and(other))
    }

    async fn disable(&self, id: &UnitId) -> Result<Change, Error> {
        let t = self.target(id, self.scope);
        let disabled = self.set_enabled(&t, false).await?;
        Ok(disabled.and(self.bootout(&t).await?))
    }

    async fn status(&self, id: &UnitId) -> Result<UnitStatus, Error> {
        if let Some(s) = self.status_in(&self.target(id, self.scope)).await? {
            return Ok(s);
        }
        // The other scope is informational; a domain we may not read is just "not there".
        match self.status_in(&self.target(id, self.scope.other())).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Ok(UnitStatus { state_text: "not installed".to_owned(), ..UnitStatus::default() }),
            Err(e) => {
                tracing::debug!(error = %e, "status in the other scope");
                Ok(UnitStatus { state_text: "not installed".to_owned(), ..UnitStatus::default() })
            }
        }
    }

    async fn drift(&self, spec: &UnitSpec) -> Result<Drift, Error> {
        let t = self.target(&spec.id, self.scope);
        let rendered = render_plist(spec, self.scope)?;
        let Some(on_disk) = parachute_fsx::read_optional(&t.plist).map_err(|e| io_err(&t, e))? else {
            return Ok(Drift::NotInstalled);
        };
        let equal = match (parse_plist(&on_disk), parse_plist(&rendered)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if !equal {
            return Ok(Drift::FileDiffers { diff: text_diff(&t.plist, &on_disk, &rendered) });
        }
        match self.probe(&t).await? {
            Some(info) if loaded_differs(&info, &t, spec) => Ok(Drift::LoadedStale),
            _ => Ok(Drift::InSync),
        }
    }
}

/// Whether the loaded job came from another file or runs other arguments than `spec`.
/// Fields `print` did not show are not held against it (its output is not an API).
fn loaded_differs(info: &PrintInfo, t: &Target, spec: &UnitSpec) -> bool {
    let path_differs = info.path.as_deref().is_some_and(|p| Path::new(p) != t.plist);
    let args_differ = info.arguments.as_ref().is_some_and(|a| a != &spec.argv);
    path_differs || args_differ
}

/// A unified diff, on-disk (`-`) against rendered (`+`).
fn text_diff(path: &Path, on_disk: &[u8], rendered: &[u8]) -> String {
    let old = String::from_utf8_lossy(on_disk);
    let new = String::from_utf8_lossy(rendered);
    similar::TextDiff::from_lines(old.as_ref(), new.as_ref())
        .unified_diff()
        .context_radius(3)
        .header(&format!("{} (on disk)", path.display()), "rendered")
        .to_string()
}

fn io_err(t: &Target, e: parachute_fsx::Error) -> Error {
    let kind = if e.source.kind() == std::io::ErrorKind::PermissionDenied {
        ErrorKind::PermissionDenied
    } else {
        ErrorKind::Io
    };
    let hint = if kind == ErrorKind::PermissionDenied && t.scope == Scope::System {
        " LaunchDaemons need root: run it with sudo."
    } else {
        ""
    };
    Error::new(kind, format!("Could not update the plist for {}: {e}.{hint}", t.service)).with_source(e)
}

/// Maps a failed launchctl call to the manager's error kinds, with a sentence to act on.
fn map_err(t: &Target, doing: &str, e: LaunchctlError) -> Error {
    let (kind, hint) = match &e {
        LaunchctlError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            (ErrorKind::ManagerUnavailable, " launchctl is missing: this is not a macOS host with launchd.")
        }
        LaunchctlError::Spawn { .. } | LaunchctlError::Signal { .. } => (ErrorKind::Other, ""),
        LaunchctlError::Timeout { .. } => (ErrorKind::Timeout, ""),
        LaunchctlError::Exit { code, .. } => match code {
            ExitCode::NotPermitted | ExitCode::BadOwnership => (
                ErrorKind::PermissionDenied,
                " The system domain needs root (sudo), and a daemon plist must be owned by root and not group/world-writable.",
            ),
            ExitCode::ServiceNotFound | ExitCode::NoSuchProcess => {
                (ErrorKind::NotFound, " It is not loaded.")
            }
            ExitCode::DomainNotFound | ExitCode::DomainUnsupported => (
                ErrorKind::ManagerUnavailable,
                " Nobody is logged in at the GUI, so there is no gui domain; on a headless Mac install a LaunchDaemon (system scope) instead.",
            ),
            ExitCode::Usage => (ErrorKind::Other, " This is a bug in Parachute; please report it."),
            _ => (ErrorKind::JobFailed, ""),
        },
    };
    Error::new(kind, format!("Could not {doing} {}: {e}.{hint}", t.service)).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_dirs() {
        let d = LaunchdDirs::for_home(Path::new("/Users/op"));
        assert_eq!(d.agents, Path::new("/Users/op/Library/LaunchAgents"));
        assert_eq!(d.daemons, Path::new("/Library/LaunchDaemons"));
    }
}
