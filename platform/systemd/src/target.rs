//! One manager instance (a bus connection, its scope and its unit directory) and the
//! low-level operations on it: property snapshots, reload, jobs that are waited for
//! correctly, and the "is it really running" check.
//!
//! Every D-Bus call goes through [`Target::call`], which bounds it with a timeout, so no
//! verb can hang on a stuck manager (W11). Jobs follow the documented race-free recipe
//! (anchors §3.3): subscribe, create the `JobRemoved` stream, *then* enqueue the job, and
//! drain the stream until our job's path appears, under an overall deadline.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use futures_util::StreamExt as _;
use parachute_manager::{Error, ErrorKind, Scope, UnitState};
use zbus::Connection;
use zbus::OwnedObjectPath;
use zbus::proxy::CacheProperties;

use crate::Timeouts;
use crate::dbus::{ExecCommand, ManagerProxy, ServiceProxy, UnitProxy};
use crate::errors::{dbus_name, from_zbus, timed_out};

/// A manager job verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Job {
    Start,
    Stop,
    Restart,
}

impl Job {
    fn method(self) -> &'static str {
        match self {
            Job::Start => "StartUnit",
            Job::Stop => "StopUnit",
            Job::Restart => "RestartUnit",
        }
    }
}

/// A snapshot of the unit and service properties the verbs decide on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Props {
    pub load_state: String,
    pub load_error: (String, String),
    pub active_state: String,
    pub sub_state: String,
    pub unit_file_state: String,
    pub need_daemon_reload: bool,
    pub fragment_path: String,
    pub main_pid: u32,
    pub n_restarts: u32,
    pub exec_main_code: i32,
    pub exec_main_status: i32,
    pub exec_main_start_us: u64,
    pub result: String,
}

impl Props {
    /// The manager knows the unit: it has a file, or it is still running without one.
    pub fn exists(&self) -> bool {
        self.load_state != "not-found" || !self.fragment_path.is_empty() || self.active_state != "inactive"
    }

    pub fn loaded(&self) -> bool {
        self.load_state == "loaded"
    }

    pub fn active(&self) -> bool {
        self.active_state == "active"
    }

    /// Something is running or about to run (including `activating/auto-restart`).
    pub fn stoppable(&self) -> bool {
        matches!(self.active_state.as_str(), "active" | "activating" | "reloading" | "deactivating")
    }

    pub fn enabled(&self) -> bool {
        matches!(self.unit_file_state.as_str(), "enabled" | "enabled-runtime")
    }

    pub fn state(&self) -> UnitState {
        match self.active_state.as_str() {
            "active" | "reloading" | "refreshing" => UnitState::Active,
            "activating" => UnitState::Activating,
            "deactivating" => UnitState::Deactivating,
            "failed" => UnitState::Failed,
            _ => UnitState::Inactive,
        }
    }

    pub fn state_text(&self) -> String {
        format!("{}/{}", self.active_state, self.sub_state)
    }

    /// The main process started before `file` was last written: it runs an older definition.
    pub fn started_before(&self, file: &Path) -> bool {
        let Ok(mtime) = std::fs::metadata(file).and_then(|m| m.modified()) else { return false };
        let Ok(since) = mtime.duration_since(UNIX_EPOCH) else { return false };
        self.exec_main_start_us != 0 && u128::from(self.exec_main_start_us) < since.as_micros()
    }
}

pub(crate) struct Target {
    pub conn: Connection,
    pub scope: Scope,
    pub unit_dir: PathBuf,
    pub t: Timeouts,
    subscribed: tokio::sync::OnceCell<()>,
}

/// Where a unit's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSource {
    /// An `append:` file.
    File(PathBuf),
    /// The journal.
    Journal,
}

impl Target {
    pub fn new(conn: Connection, scope: Scope, unit_dir: PathBuf, t: Timeouts) -> Target {
        Target { conn, scope, unit_dir, t, subscribed: tokio::sync::OnceCell::new() }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.unit_dir.join(name)
    }

    /// `systemctl` spelled for this scope, for messages.
    pub fn systemctl(&self) -> &'static str {
        match self.scope {
            Scope::User => "systemctl --user",
            Scope::System => "systemctl",
        }
    }

    /// Runs one D-Bus call under the call timeout, mapping its error.
    pub async fn call<T>(&self, what: &str, fut: impl Future<Output = zbus::Result<T>>) -> Result<T, Error> {
        match tokio::time::timeout(self.t.call, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(from_zbus(e, self.scope, what)),
            Err(_) => Err(timed_out(self.scope, what, self.t.call)),
        }
    }

    pub async fn manager(&self) -> Result<ManagerProxy<'static>, Error> {
        let b = ManagerProxy::builder(&self.conn).cache_properties(CacheProperties::No).build();
        self.call("connect to org.freedesktop.systemd1", b).await
    }

    /// The manager's version, for rendering only keys it parses; the baseline when it
    /// cannot be read (a unit for the baseline is what `unit render` shows, too).
    pub async fn version(&self) -> crate::ManagerVersion {
        let read = async {
            let m = self.manager().await?;
            self.call("read the manager's Version", m.version()).await
        };
        match read.await {
            Ok(v) => crate::ManagerVersion::parse(&v).unwrap_or(crate::ManagerVersion::BASELINE),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the systemd version; rendering for the baseline");
                crate::ManagerVersion::BASELINE
            }
        }
    }

    async fn unit_path(&self, name: &str) -> Result<OwnedObjectPath, Error> {
        let m = self.manager().await?;
        self.call(&format!("LoadUnit {name}"), m.load_unit(name)).await
    }

    async fn proxies(&self, name: &str) -> Result<(UnitProxy<'static>, ServiceProxy<'static>), Error> {
        let path = self.unit_path(name).await?;
        let what = format!("properties of {name}");
        let u =
            UnitProxy::builder(&self.conn).path(path.clone()).cache_properties(CacheProperties::No).build();
        let u = self.call(&what, u).await?;
        let s = ServiceProxy::builder(&self.conn).path(path).cache_properties(CacheProperties::No).build();
        let s = self.call(&what, s).await?;
        Ok((u, s))
    }

    /// Loads the unit (a missing one comes back `not-found`) and reads its state.
    pub async fn props(&self, name: &str) -> Result<Props, Error> {
        let (u, s) = self.proxies(name).await?;
        let w = |p: &str| format!("{p} of {name}");
        Ok(Props {
            load_state: self.call(&w("LoadState"), u.load_state()).await?,
            load_error: self.call(&w("LoadError"), u.load_error()).await?,
            active_state: self.call(&w("ActiveState"), u.active_state()).await?,
            sub_state: self.call(&w("SubState"), u.sub_state()).await?,
            unit_file_state: self.call(&w("UnitFileState"), u.unit_file_state()).await?,
            need_daemon_reload: self.call(&w("NeedDaemonReload"), u.need_daemon_reload()).await?,
            fragment_path: self.call(&w("FragmentPath"), u.fragment_path()).await?,
            main_pid: self.call(&w("MainPID"), s.main_pid()).await?,
            n_restarts: self.call(&w("NRestarts"), s.n_restarts()).await?,
            exec_main_code: self.call(&w("ExecMainCode"), s.exec_main_code()).await?,
            exec_main_status: self.call(&w("ExecMainStatus"), s.exec_main_status()).await?,
            exec_main_start_us: self
                .call(&w("ExecMainStartTimestamp"), s.exec_main_start_timestamp())
                .await?,
            result: self.call(&w("Result"), s.result()).await?,
        })
    }

    /// The loaded `ExecStart=` command lines and `Environment=` assignments.
    pub async fn loaded_definition(&self, name: &str) -> Result<(Vec<ExecCommand>, Vec<String>), Error> {
        let (_, s) = self.proxies(name).await?;
        let exec = self.call(&format!("ExecStart of {name}"), s.exec_start()).await?;
        let env = self.call(&format!("Environment of {name}"), s.environment()).await?;
        Ok((exec, env))
    }

    pub async fn reload(&self) -> Result<(), Error> {
        let m = self.manager().await?;
        self.call("Reload", m.reload()).await
    }

    /// ResetFailedUnit; a unit the manager does not have loaded has nothing to reset.
    pub async fn reset_failed(&self, name: &str) -> Result<(), Error> {
        let m = self.manager().await?;
        match self.call(&format!("ResetFailedUnit {name}"), m.reset_failed_unit(name)).await {
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    /// Enables by name (the file is in a directory the manager searches); returns whether
    /// any symlink changed.
    pub async fn enable(&self, name: &str) -> Result<bool, Error> {
        let m = self.manager().await?;
        let (_, changes) =
            self.call(&format!("EnableUnitFiles {name}"), m.enable_unit_files(&[name], false, false)).await?;
        Ok(!changes.is_empty())
    }

    /// Disables by name, persistent and runtime enablement both; a unit without a file has
    /// nothing to disable.
    pub async fn disable(&self, name: &str) -> Result<bool, Error> {
        let m = self.manager().await?;
        let mut changed = false;
        for runtime in [false, true] {
            let what = format!("DisableUnitFiles {name}");
            match self.call(&what, m.disable_unit_files(&[name], runtime)).await {
                Ok(changes) => changed |= !changes.is_empty(),
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(changed)
    }

    async fn subscribe(&self, m: &ManagerProxy<'static>) -> Result<(), Error> {
        self.subscribed
            .get_or_try_init(|| async {
                match tokio::time::timeout(self.t.call, m.subscribe()).await {
                    Ok(Ok(())) => Ok(()),
                    // Another user of this connection subscribed already; signals flow.
                    Ok(Err(e)) if dbus_name(&e).is_some_and(|(n, _)| n.ends_with(".AlreadySubscribed")) => {
                        Ok(())
                    }
                    Ok(Err(e)) => Err(from_zbus(e, self.scope, "Subscribe")),
                    Err(_) => Err(timed_out(self.scope, "Subscribe", self.t.call)),
                }
            })
            .await
            .map(|_| ())
    }

    /// Enqueues `job` for `name` (mode `replace`) and waits for its `JobRemoved`; returns
    /// the job result (`done`, `failed`, `canceled`, `timeout`, `dependency`, `skipped`).
    pub async fn run_job(&self, job: Job, name: &str) -> Result<String, Error> {
        let m = self.manager().await?;
        self.subscribe(&m).await?;
        let what = format!("{} {name}", job.method());
        // The match rule is in place once this returns, so the signal cannot be missed.
        let mut removed = self.call(&what, m.receive_job_removed()).await?;
        let path = match job {
            Job::Start => self.call(&what, m.start_unit(name, "replace")).await?,
            Job::Stop => self.call(&what, m.stop_unit(name, "replace")).await?,
            Job::Restart => self.call(&what, m.restart_unit(name, "replace")).await?,
        };
        let deadline = tokio::time::Instant::now() + self.t.job;
        loop {
            match tokio::time::timeout_at(deadline, removed.next()).await {
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "{what}: the job {} did not finish within {:.0}s; check `{} status {name}`.",
                            path.as_str(),
                            self.t.job.as_secs_f64(),
                            self.systemctl()
                        ),
                    ));
                }
                Ok(None) => {
                    return Err(Error::new(
                        ErrorKind::ManagerUnavailable,
                        format!("{what}: the bus connection closed while waiting for the job to finish."),
                    ));
                }
                Ok(Some(signal)) => {
                    let Ok(args) = signal.args() else { continue };
                    if args.job().as_str() == path.as_str() {
                        return Ok((*args.result()).to_owned());
                    }
                }
            }
        }
    }

    /// Where the unit's output goes, read back from our own unit file: an
    /// `StandardOutput=append:` file, or the journal.
    pub fn log_source(&self, name: &str, props: Option<&Props>) -> Option<LogSource> {
        let file = props
            .filter(|p| !p.fragment_path.is_empty())
            .map(|p| PathBuf::from(&p.fragment_path))
            .unwrap_or_else(|| self.file(name));
        let bytes = std::fs::read(&file).ok()?;
        // No `append:` file: the journal (systemd's default for services, and what our
        // journal units say).
        Some(match crate::read::read_unit(&file, &bytes).ok()?.log_path {
            Some(path) => LogSource::File(path),
            None => LogSource::Journal,
        })
    }

    /// The last lines of the unit's output and where they come from, for an error.
    pub async fn log_tail(&self, name: &str, props: Option<&Props>) -> Option<(String, Vec<String>)> {
        match self.log_source(name, props)? {
            LogSource::File(path) => Some((path.display().to_string(), parachute_fsx::tail_lines(&path, 20))),
            LogSource::Journal => {
                // journalctl is the journal's reader; linking libsystemd for 20 lines is not
                // worth a C dependency. Bounded in time, best effort.
                let unit_flag = match self.scope {
                    Scope::User => "--user-unit",
                    Scope::System => "--unit",
                };
                let run = tokio::process::Command::new("journalctl")
                    .args([unit_flag, name, "-n", "20", "-o", "cat", "--no-pager", "-q"])
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .output();
                let lines = match tokio::time::timeout(Duration::from_secs(5), run).await {
                    Ok(Ok(out)) => String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect(),
                    _ => Vec::new(),
                };
                let prefix = if self.scope == Scope::User { "--user " } else { "" };
                Some((format!("`journalctl {prefix}-u {name}`"), lines))
            }
        }
    }

    /// The error for a unit that is not running after a start: its state, how its main
    /// process ended, and the tail of its log (`log`: where, and the lines).
    pub fn not_running(
        &self,
        name: &str,
        verb: &str,
        p: &Props,
        log: Option<(String, Vec<String>)>,
    ) -> Error {
        let ended = match p.exec_main_code {
            1 if p.exec_main_status == 203 => {
                " systemd could not execute the program (status 203/EXEC): check that argv[0] exists and is executable."
                    .to_owned()
            }
            1 => format!(" Its main process exited with status {}.", p.exec_main_status),
            2 | 3 => format!(" Its main process was killed by signal {}.", p.exec_main_status),
            _ => String::new(),
        };
        // The lines themselves travel in `log_tail` only, so callers print them once.
        let (log_hint, tail) = match log {
            Some((l, tail)) if tail.is_empty() => (format!(" Its log {l} is empty."), tail),
            Some((l, tail)) => (format!(" Its log is {l}."), tail),
            None => (String::new(), Vec::new()),
        };
        Error::new(
            ErrorKind::JobFailed,
            format!(
                "{name} did not stay running after {verb}: it is {} (result {}).{ended} See `{} status {name}`.{log_hint}",
                p.state_text(),
                if p.result.is_empty() { "unknown" } else { &p.result },
                self.systemctl()
            ),
        )
        .with_log_tail(tail)
    }

    /// After a start job reported `done`: the unit must be active with a main process, and
    /// still the same process after a short settle (a `Type=simple` job is done right after
    /// fork, so a crash-on-start only shows up afterwards).
    pub async fn verify_running(&self, name: &str, verb: &str, settle: Duration) -> Result<(), Error> {
        let p = self.props(name).await?;
        if !(p.active() && p.main_pid > 0) {
            return Err(self.not_running(name, verb, &p, self.log_tail(name, Some(&p)).await));
        }
        tokio::time::sleep(settle).await;
        let q = self.props(name).await?;
        if !(q.active() && q.main_pid == p.main_pid && q.n_restarts == p.n_restarts) {
            return Err(self.not_running(name, verb, &q, self.log_tail(name, Some(&q)).await));
        }
        Ok(())
    }

    /// A job that ended in anything but `done`.
    pub async fn job_failed(&self, name: &str, verb: &str, result: &str) -> Error {
        match self.props(name).await {
            Ok(p) => {
                let mut e = self.not_running(name, verb, &p, self.log_tail(name, Some(&p)).await);
                e.message = format!("The {verb} job for {name} ended with '{result}'. {}", e.message);
                e
            }
            Err(_) => {
                Error::new(ErrorKind::JobFailed, format!("The {verb} job for {name} ended with '{result}'."))
            }
        }
    }
}
