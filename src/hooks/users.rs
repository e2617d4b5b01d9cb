//! Every user's user-scope hub unit, for the package hooks run as root.
//!
//! dpkg runs the maintainer scripts as root with no user bus, so the hooks cannot see the
//! user-scope hub units that non-root installs create (upstream left them running a deleted
//! binary, never refreshed them, and said "no hub unit installed"). Root therefore finds
//! them itself: each account's `~/.config/systemd/user/parachute-hub.service`, looked up as
//! that account (`crate::privsep`). When the account's user manager runs (its bus at
//! `/run/user/<uid>/bus`), this binary is run again *as that user* (a child that dropped to
//! the account's uid/gid and groups) with `--scope user`, so the user's own manager is
//! spoken to with the user's credentials and the ordinary user-scope hook does the work.
//! Without a running manager the unit file is removed directly (on removal) and the report
//! says what happens at that user's next login.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The unit file name of the hub in a user's unit directory.
const HUB_UNIT: &str = "parachute-hub.service";

/// An account with a user-scope hub unit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserUnit {
    /// Login name.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its home directory.
    pub home: PathBuf,
    /// `<home>/.config/systemd/user/parachute-hub.service`.
    pub unit_file: PathBuf,
}

/// What the hook did for one user.
#[derive(Debug, Clone, Serialize)]
pub struct UserReport {
    /// Login name.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// The unit file.
    pub unit_file: PathBuf,
    /// Whether the user's manager was running (and so was spoken to).
    pub manager_running: bool,
    /// Whether something went wrong (the message says what).
    pub failed: bool,
    /// What happened, in sentences.
    pub message: String,
}

/// What to do with each user's unit.
#[derive(Debug, Clone)]
pub enum UserAction {
    /// Package removal: stop, disable and remove it.
    Remove,
    /// Package upgrade: refresh it for `exec`, waiting up to `wait` for the hub.
    Refresh {
        /// The binary the unit should run.
        exec: PathBuf,
        /// Health wait, in seconds.
        wait: u64,
    },
}

/// Every non-root account of the password database with a user-scope hub unit file.
pub fn user_units() -> Vec<UserUnit> {
    let mut out = Vec::new();
    for (user, uid, gid, home) in accounts() {
        if uid == 0 || home.as_os_str().is_empty() || home == Path::new("/") {
            continue;
        }
        let unit_file = home.join(parachute_systemd::connect::USER_UNIT_DIR_IN_HOME).join(HUB_UNIT);
        // Looked at as that user: a symlink they planted leads nowhere root could go.
        let Ok(_as_owner) = crate::privsep::act_as_owner(&home) else { continue };
        if std::fs::symlink_metadata(&unit_file).is_ok_and(|m| m.file_type().is_file()) {
            out.push(UserUnit { user, uid, gid, home, unit_file });
        }
    }
    out.sort_by_key(|u| u.uid);
    out.dedup_by_key(|u| u.uid);
    out
}

/// The password database (NSS included), as (name, uid, gid, home).
fn accounts() -> Vec<(String, u32, u32, PathBuf)> {
    use std::ffi::CStr;
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    // SAFETY: the getpwent iteration is used from this one thread (the hooks run it once,
    // before any other thread touches the password database); each entry is copied out
    // before the next call.
    unsafe {
        libc::setpwent();
        loop {
            let p = libc::getpwent();
            if p.is_null() {
                break;
            }
            let p = &*p;
            if p.pw_name.is_null() || p.pw_dir.is_null() {
                continue;
            }
            let name = CStr::from_ptr(p.pw_name).to_string_lossy().into_owned();
            let dir = PathBuf::from(std::ffi::OsStr::from_bytes(CStr::from_ptr(p.pw_dir).to_bytes()));
            out.push((name, p.pw_uid, p.pw_gid, dir));
        }
        libc::endpwent();
    }
    out
}

/// Does `action` for every user unit [`user_units`] finds; `self_exe` is this binary.
pub fn act_on_user_units(action: &UserAction, self_exe: &Path) -> Vec<UserReport> {
    user_units().into_iter().map(|u| act_on(&u, action, self_exe)).collect()
}

fn act_on(u: &UserUnit, action: &UserAction, self_exe: &Path) -> UserReport {
    let runtime_dir = PathBuf::from(format!("/run/user/{}", u.uid));
    let bus = runtime_dir.join("bus");
    let manager_running = std::fs::symlink_metadata(&bus).is_ok();
    let mut r = UserReport {
        user: u.user.clone(),
        uid: u.uid,
        unit_file: u.unit_file.clone(),
        manager_running,
        failed: false,
        message: String::new(),
    };
    if !manager_running {
        r.message = match action {
            UserAction::Remove => match remove_files(u) {
                Ok(()) => format!(
                    "{}: no user manager is running; removed {} (nothing runs it now, and their next login starts no hub).",
                    u.user,
                    u.unit_file.display()
                ),
                Err(e) => {
                    r.failed = true;
                    format!(
                        "{}: no user manager is running, and {} could not be removed: {e}",
                        u.user,
                        u.unit_file.display()
                    )
                }
            },
            UserAction::Refresh { .. } => format!(
                "{}: no user manager is running, so {} was left as it is; their next login starts it with the \
                 binary it names (run `parachute postinstall --upgrade` as {} to re-render it).",
                u.user,
                u.unit_file.display(),
                u.user
            ),
        };
        return r;
    }
    let mut cmd = Command::new(self_exe);
    match action {
        UserAction::Remove => {
            cmd.args(["preremove", "--scope", "user"]);
        }
        UserAction::Refresh { exec, wait } => {
            cmd.args(["postinstall", "--upgrade", "--scope", "user", "--wait", &wait.to_string(), "--exec"])
                .arg(exec);
        }
    }
    let (uid, gid) = (u.uid, u.gid);
    cmd.env_clear()
        .env("HOME", &u.home)
        .env("USER", &u.user)
        .env("LOGNAME", &u.user)
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("XDG_RUNTIME_DIR", &runtime_dir)
        .env("DBUS_SESSION_BUS_ADDRESS", format!("unix:path={}", bus.display()))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let groups = [gid];
            if libc::setgroups(1, groups.as_ptr()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // A refresh may wait up to `wait` three times: for an in-place upgrade, for the restart
    // it falls back to, and for a rollback.
    let limit = Duration::from_secs(match action {
        UserAction::Remove => 60,
        UserAction::Refresh { wait, .. } => wait.saturating_mul(3).saturating_add(60),
    });
    match run_bounded(cmd, limit) {
        Ok((code, stdout, stderr)) => {
            let said: Vec<String> = String::from_utf8_lossy(&stdout)
                .lines()
                .chain(String::from_utf8_lossy(&stderr).lines())
                .map(|l| crate::text::line(l).into_owned())
                .filter(|l| !l.trim().is_empty())
                .collect();
            r.failed = code != Some(0);
            r.message = format!(
                "{} (their user manager, as {}): {}",
                u.user,
                u.user,
                if said.is_empty() { "done.".to_owned() } else { said.join(" / ") }
            );
        }
        Err(e) => {
            r.failed = true;
            r.message = format!("{}: could not run the user-scope hook as {}: {e}", u.user, u.user);
        }
    }
    r
}

/// The unit file and its enablement link, removed as their owner.
fn remove_files(u: &UserUnit) -> Result<(), String> {
    let _as_owner = crate::privsep::act_as_owner(&u.home).map_err(|e| e.to_string())?;
    let dir = u.unit_file.parent().unwrap_or(&u.home);
    for p in [dir.join("default.target.wants").join(HUB_UNIT), u.unit_file.clone()] {
        if std::fs::symlink_metadata(&p).is_ok() {
            std::fs::remove_file(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    Ok(())
}

/// Runs `cmd`, killing it after `limit`; (exit code, stdout, stderr).
fn run_bounded(mut cmd: Command, limit: Duration) -> std::io::Result<(Option<i32>, Vec<u8>, Vec<u8>)> {
    use std::io::Read;
    let mut child = cmd.spawn()?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.by_ref().take(1 << 20).read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.by_ref().take(1 << 20).read_to_end(&mut b);
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Some(s) => Ok((s.code(), stdout, stderr)),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("it did not finish within {}s and was killed", limit.as_secs()),
        )),
    }
}
