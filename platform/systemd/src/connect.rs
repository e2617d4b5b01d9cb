//! Building production bus connections, choosing the user unit directory, and linger.
//!
//! Only the CLI calls these: tests hand [`SystemdManager`](crate::SystemdManager) a
//! connection to their sandbox bus instead. Nothing here reads the environment; the CLI
//! passes the values of `DBUS_SESSION_BUS_ADDRESS`, `XDG_RUNTIME_DIR` and
//! `DBUS_SYSTEM_BUS_ADDRESS` in. Every failure says *why* there is no manager to talk to
//! (sudo without a login, no lingering, no user bus) and what to do, because "failed to
//! connect to bus" is the most common dead end with user services (anchors §3.2).

use std::path::{Path, PathBuf};
use std::time::Duration;

use parachute_manager::{Change, Error, ErrorKind, Scope};
use zbus::Connection;

use crate::dbus::{LoginProxy, LoginUserProxy, ManagerProxy};
use crate::errors::{dbus_name, from_zbus, timed_out};

/// The system bus socket when `DBUS_SYSTEM_BUS_ADDRESS` is unset (D-Bus specification).
const DEFAULT_SYSTEM_BUS: &str = "unix:path=/run/dbus/system_bus_socket";

/// Where system units are written.
pub const SYSTEM_UNIT_DIR: &str = "/etc/systemd/system";

/// Where an account's own user units live, relative to its home (systemd.unit(5)).
pub const USER_UNIT_DIR_IN_HOME: &str = ".config/systemd/user";

fn unavailable(msg: String) -> Error {
    Error::new(ErrorKind::ManagerUnavailable, msg)
}

async fn open(address: &str, timeout: Duration) -> Result<Connection, zbus::Error> {
    let build = zbus::connection::Builder::address(address).method_timeout(timeout).build();
    match tokio::time::timeout(timeout, build).await {
        Ok(r) => r,
        Err(_) => Err(zbus::Error::InputOutput(std::sync::Arc::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from {address} within {:.1}s", timeout.as_secs_f64()),
        )))),
    }
}

/// Checks that `org.freedesktop.systemd1` is on the bus (a bus without a manager is a
/// session bus started by hand, e.g. `dbus-launch`).
async fn require_manager(
    conn: &Connection,
    scope: Scope,
    address: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let dbus = zbus::fdo::DBusProxy::new(conn).await.map_err(|e| from_zbus(e, scope, "connect"))?;
    let name = zbus::names::BusName::try_from("org.freedesktop.systemd1").expect("valid bus name");
    let has = tokio::time::timeout(timeout, dbus.name_has_owner(name))
        .await
        .map_err(|_| timed_out(scope, "NameHasOwner", timeout))?
        .map_err(|e| from_zbus(e.into(), scope, "NameHasOwner"))?;
    if has {
        Ok(())
    } else {
        Err(unavailable(format!(
            "the bus at {address} has no systemd {scope} manager on it (org.freedesktop.systemd1 is not \
             registered). If this is a bus started by hand (dbus-launch), unset DBUS_SESSION_BUS_ADDRESS so the \
             session's own bus at $XDG_RUNTIME_DIR/bus is used."
        )))
    }
}

/// Connects to the invoking user's manager: `DBUS_SESSION_BUS_ADDRESS` when set, else
/// `unix:path=$XDG_RUNTIME_DIR/bus` (both passed in as values).
pub async fn user_bus(
    session_bus_address: Option<&str>,
    xdg_runtime_dir: Option<&Path>,
    timeout: Duration,
) -> Result<Connection, Error> {
    let address = match (session_bus_address.filter(|a| !a.is_empty()), xdg_runtime_dir) {
        (Some(a), _) => a.to_owned(),
        (None, Some(rt)) => {
            let bus = rt.join("bus");
            if !bus.exists() {
                let private = rt.join("systemd/private");
                return Err(unavailable(if private.exists() {
                    format!(
                        "the user's systemd runs ({} exists) but there is no user D-Bus at {}. Install the \
                         dbus-user-session package (apt-get install dbus-user-session) and log in again.",
                        private.display(),
                        bus.display()
                    )
                } else if !rt.exists() {
                    format!(
                        "XDG_RUNTIME_DIR={} does not exist: no systemd user session is running for this user. \
                         Log in as the user (a real login, not su), or as root run `loginctl enable-linger <user>` \
                         so the user's manager runs without a login.",
                        rt.display()
                    )
                } else {
                    format!(
                        "there is no user bus at {}: the user's systemd manager is not running (no login session \
                         and no lingering). Log in as the user, or as root run `loginctl enable-linger <user>`.",
                        bus.display()
                    )
                }));
            }
            format!("unix:path={}", bus.display())
        }
        (None, None) => {
            return Err(unavailable(
                "XDG_RUNTIME_DIR is not set, so there is no user session to talk to (typical for sudo or su \
                 without a login). Run this as the user in a real login session, use `machinectl shell <user>@` \
                 to get one, or install a system unit as root with --scope system."
                    .to_owned(),
            ));
        }
    };
    let conn = open(&address, timeout).await.map_err(|e| {
        unavailable(format!(
            "could not connect to the user bus at {address} ({e}). Is the user's systemd manager running? \
             Log in as the user or enable lingering (`loginctl enable-linger <user>` as root)."
        ))
        .with_source(e)
    })?;
    require_manager(&conn, Scope::User, &address, timeout).await?;
    Ok(conn)
}

/// [`user_bus`] plus [`user_unit_dir`]: what a user-scope
/// [`SystemdManager`](crate::SystemdManager) needs. Without a preferred directory, the
/// manager's first writable user-level directory is used.
pub async fn user_target(
    session_bus_address: Option<&str>,
    xdg_runtime_dir: Option<&Path>,
    preferred_unit_dir: Option<&Path>,
    timeout: Duration,
) -> Result<(Connection, PathBuf), Error> {
    let conn = user_bus(session_bus_address, xdg_runtime_dir, timeout).await?;
    let preferred =
        preferred_unit_dir.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/nonexistent"));
    let dir = user_unit_dir(&conn, &preferred, timeout).await?;
    Ok((conn, dir))
}

/// Connects to the system bus: `DBUS_SYSTEM_BUS_ADDRESS` when set, else the standard socket.
pub async fn system_bus(system_bus_address: Option<&str>, timeout: Duration) -> Result<Connection, Error> {
    let address = system_bus_address.filter(|a| !a.is_empty()).unwrap_or(DEFAULT_SYSTEM_BUS).to_owned();
    if let Some(path) = address.strip_prefix("unix:path=")
        && !Path::new(path).exists()
    {
        return Err(unavailable(format!(
            "there is no system bus at {path}: D-Bus is not running, so systemd is not the service manager \
             here (a container or a minimal VM?). Run `parachute serve` under whatever supervises this machine."
        )));
    }
    let conn = open(&address, timeout).await.map_err(|e| {
        unavailable(format!("could not connect to the system bus at {address} ({e}). Is dbus running?"))
            .with_source(e)
    })?;
    require_manager(&conn, Scope::System, &address, timeout).await?;
    Ok(conn)
}

/// Picks the directory user units are written to: `preferred`
/// (`$XDG_CONFIG_HOME/systemd/user`) if the running manager searches it, else the first
/// writable, persistent, user-level directory in the manager's `UnitPath`.
pub async fn user_unit_dir(conn: &Connection, preferred: &Path, timeout: Duration) -> Result<PathBuf, Error> {
    let m = ManagerProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|e| from_zbus(e, Scope::User, "UnitPath"))?;
    let paths = tokio::time::timeout(timeout, m.unit_path())
        .await
        .map_err(|_| timed_out(Scope::User, "UnitPath", timeout))?
        .map_err(|e| from_zbus(e, Scope::User, "UnitPath"))?;
    choose_user_unit_dir(&paths, preferred).ok_or_else(|| {
        unavailable(format!(
            "none of the user manager's unit directories is writable and persistent ({}); expected {} among them. \
             Is XDG_CONFIG_HOME the same for this shell and the user's manager?",
            paths.join(", "),
            preferred.display()
        ))
    })
}

/// The choice behind [`user_unit_dir`], on a given `UnitPath`.
fn choose_user_unit_dir(unit_path: &[String], preferred: &Path) -> Option<PathBuf> {
    if unit_path.iter().any(|p| Path::new(p) == preferred) {
        return Some(preferred.to_path_buf());
    }
    unit_path.iter().map(PathBuf::from).find(|p| is_user_level(p) && writable(p))
}

/// Persistent, user-owned unit directories: not the system trees, not the runtime,
/// transient, generator or `user.control` directories (those vanish or belong to systemctl).
fn is_user_level(p: &Path) -> bool {
    let s = p.to_string_lossy();
    let system = ["/etc/", "/usr/", "/lib/", "/run/"].iter().any(|pre| s.starts_with(pre));
    let volatile = ["user.control", "transient", "generator", "generator.early", "generator.late"]
        .iter()
        .any(|n| p.file_name().is_some_and(|f| f == *n));
    p.is_absolute() && !system && !volatile && s.ends_with("systemd/user")
}

/// Writable now, or creatable: the nearest existing ancestor is writable.
fn writable(p: &Path) -> bool {
    let mut cur = Some(p);
    while let Some(c) = cur {
        if c.exists() {
            return nix::unistd::access(c, nix::unistd::AccessFlags::W_OK).is_ok();
        }
        cur = c.parent();
    }
    false
}

/// Makes sure the user's manager keeps running without a login session (so the unit
/// starts at boot): probes logind first and only asks for a change when lingering is off.
/// Never prompts; without the right, it fails with [`ErrorKind::PermissionDenied`] and a
/// `loginctl enable-linger` hint the caller can print as a warning.
pub async fn ensure_linger(
    system: &Connection,
    uid: u32,
    user_name: &str,
    timeout: Duration,
) -> Result<Change, Error> {
    let hint =
        format!("run `sudo loginctl enable-linger {user_name}` so the unit starts at boot without a login");
    let call = |what: &'static str, e: zbus::Error| {
        let mut err = from_zbus(e, Scope::System, what);
        if err.kind == ErrorKind::PermissionDenied {
            err.message = format!("logind refused to turn on lingering for {user_name} (uid {uid}); {hint}.");
        }
        err
    };
    let login = LoginProxy::new(system).await.map_err(|e| call("login1", e))?;
    let current = match tokio::time::timeout(timeout, login.get_user(uid)).await {
        Err(_) => return Err(timed_out(Scope::System, "login1 GetUser", timeout)),
        Ok(Ok(path)) => {
            let user = LoginUserProxy::builder(system)
                .path(path)
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build()
                .await
                .map_err(|e| call("login1 User", e))?;
            tokio::time::timeout(timeout, user.linger())
                .await
                .map_err(|_| timed_out(Scope::System, "login1 Linger", timeout))?
                .map_err(|e| call("login1 Linger", e))?
        }
        // Not logged in and not lingering: logind does not know the user yet.
        Ok(Err(e)) if dbus_name(&e).is_some_and(|(n, _)| n.ends_with(".NoSuchUser")) => false,
        Ok(Err(e)) => return Err(call("login1 GetUser", e)),
    };
    if current {
        return Ok(Change::AlreadyInPlace);
    }
    tokio::time::timeout(timeout, login.set_user_linger(uid, true, false))
        .await
        .map_err(|_| timed_out(Scope::System, "login1 SetUserLinger", timeout))?
        .map_err(|e| call("login1 SetUserLinger", e))?;
    Ok(Change::Changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferred_dir_is_used_only_when_the_manager_searches_it() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tmp.path().join("cfg/systemd/user");
        let data = tmp.path().join("data/systemd/user");
        let list = |v: &[&Path]| v.iter().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>();
        let path = list(&[
            &tmp.path().join("cfg/systemd/user.control"),
            Path::new("/run/user/0/systemd/transient"),
            &cfg,
            Path::new("/etc/systemd/user"),
            &data,
        ]);
        assert_eq!(choose_user_unit_dir(&path, &cfg), Some(cfg.clone()));
        // preferred not searched (XDG_CONFIG_HOME differs from the manager's): first user-level dir
        let other = tmp.path().join("elsewhere/systemd/user");
        assert_eq!(choose_user_unit_dir(&path, &other), Some(cfg.clone()));
        let only_system = list(&[Path::new("/etc/systemd/user"), Path::new("/usr/lib/systemd/user")]);
        assert_eq!(choose_user_unit_dir(&only_system, &other), None);
    }

    #[tokio::test]
    async fn missing_runtime_dir_and_sudo_case_explain_why() {
        let e = user_bus(None, None, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::ManagerUnavailable);
        assert!(e.message.contains("machinectl shell"), "{}", e.message);
        let tmp = tempfile::tempdir().unwrap();
        let e = user_bus(None, Some(&tmp.path().join("nope")), Duration::from_secs(1)).await.unwrap_err();
        assert!(e.message.contains("enable-linger"), "{}", e.message);
        std::fs::create_dir_all(tmp.path().join("systemd")).unwrap();
        std::fs::write(tmp.path().join("systemd/private"), "").unwrap();
        let e = user_bus(None, Some(tmp.path()), Duration::from_secs(1)).await.unwrap_err();
        assert!(e.message.contains("dbus-user-session"), "{}", e.message);
        let e = system_bus(Some("unix:path=/nonexistent/bus"), Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::ManagerUnavailable);
        assert!(e.message.contains("no system bus"), "{}", e.message);
    }
}
