//! Mapping zbus failures to the kinds callers act on.
//!
//! Matching is by D-Bus error *name* (stable API), never by message text (localised and
//! changed between releases). Every message names the manager, the call and the unit, and
//! says what to do next.

use std::time::Duration;

use parachute_manager::{Error, ErrorKind, Scope};
use zbus::DBusError as _;

/// The D-Bus error name and message of a method error reply, if `e` is one.
pub(crate) fn dbus_name(e: &zbus::Error) -> Option<(String, String)> {
    match e {
        zbus::Error::MethodError(name, detail, _) => {
            Some((name.as_str().to_owned(), detail.clone().unwrap_or_default()))
        }
        zbus::Error::FDO(f) => {
            Some((f.name().as_str().to_owned(), f.description().unwrap_or_default().to_owned()))
        }
        _ => None,
    }
}

/// Converts a zbus error from `call` (e.g. `StartUnit parachute-hub.service`) on the
/// `scope` manager.
pub(crate) fn from_zbus(e: zbus::Error, scope: Scope, call: &str) -> Error {
    let sudo = match scope {
        Scope::System => "run it as root (sudo), or use --scope user",
        Scope::User => "run it as the user who owns the session",
    };
    let (kind, text) = match dbus_name(&e) {
        Some((name, detail)) => {
            let short = name.rsplit('.').next().unwrap_or(&name).to_owned();
            let (kind, hint) = match short.as_str() {
                "NoSuchUnit" | "NoSuchUnitFile" | "NoSuchFile" | "FileNotFound" => {
                    (ErrorKind::NotFound, "the unit is not installed".to_owned())
                }
                "AccessDenied" | "InteractiveAuthorizationRequired" | "AuthFailed" => (
                    ErrorKind::PermissionDenied,
                    format!("the {scope} manager refused without asking for a password; {sudo}"),
                ),
                "ServiceUnknown" | "NameHasNoOwner" | "NoServer" | "Disconnected" => {
                    (ErrorKind::ManagerUnavailable, format!("no {scope} systemd manager answers on this bus"))
                }
                "LoadFailed" | "BadUnitSetting" => (
                    ErrorKind::InvalidSpec,
                    "systemd could not load the unit file; fix or re-install it".to_owned(),
                ),
                "UnitMasked" => (
                    ErrorKind::Other,
                    format!(
                        "the unit is masked; unmask it first (systemctl{} unmask <unit>)",
                        if scope == Scope::User { " --user" } else { "" }
                    ),
                ),
                "NoReply" | "Timeout" | "TimedOut" => {
                    (ErrorKind::Timeout, format!("the {scope} manager did not reply in time"))
                }
                _ => (ErrorKind::Other, String::new()),
            };
            let hint = if hint.is_empty() { String::new() } else { format!("; {hint}") };
            (kind, format!("systemd ({scope}) {call} failed: {name}: {detail}{hint}."))
        }
        None => match &e {
            zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut => (
                ErrorKind::Timeout,
                format!("systemd ({scope}) {call}: the manager did not reply in time ({e})."),
            ),
            zbus::Error::InputOutput(_) | zbus::Error::Connection(..) | zbus::Error::Handshake(_) => (
                ErrorKind::ManagerUnavailable,
                format!(
                    "systemd ({scope}) {call}: the bus connection failed ({e}). Is the {scope} manager running?"
                ),
            ),
            _ => (ErrorKind::Other, format!("systemd ({scope}) {call} failed: {e}.")),
        },
    };
    Error::new(kind, text).with_source(e)
}

/// The error for a call that did not answer within `after`.
pub(crate) fn timed_out(scope: Scope, call: &str, after: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!(
            "systemd ({scope}) {call}: no answer within {:.1}s. The manager may be busy or stuck; \
             check `systemctl{} status` and try again.",
            after.as_secs_f64(),
            if scope == Scope::User { " --user" } else { "" }
        ),
    )
}

/// A file-system error while writing or removing a unit file or the log directory.
pub(crate) fn io(e: impl std::error::Error + Send + Sync + 'static, what: String) -> Error {
    let kind = match find_io_kind(&e) {
        Some(std::io::ErrorKind::PermissionDenied) => ErrorKind::PermissionDenied,
        _ => ErrorKind::Io,
    };
    Error::new(kind, format!("{what}: {e}.")).with_source(e)
}

fn find_io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = c.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_permission_denied_maps_to_permission_kind() {
        let e = io(std::io::Error::from(std::io::ErrorKind::PermissionDenied), "write /etc/x".into());
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
        assert!(e.message.starts_with("write /etc/x: "), "{}", e.message);
        let e = io(std::io::Error::from(std::io::ErrorKind::NotFound), "write /x".into());
        assert_eq!(e.kind, ErrorKind::Io);
    }

    #[test]
    fn fdo_errors_are_mapped_by_name() {
        let e = zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied("no".into())));
        let m = from_zbus(e, Scope::System, "StartUnit x.service");
        assert_eq!(m.kind, ErrorKind::PermissionDenied);
        assert!(m.message.contains("sudo"), "{}", m.message);
        let e = zbus::Error::FDO(Box::new(zbus::fdo::Error::ServiceUnknown("gone".into())));
        assert_eq!(from_zbus(e, Scope::User, "LoadUnit x").kind, ErrorKind::ManagerUnavailable);
        let e = zbus::Error::FDO(Box::new(zbus::fdo::Error::InteractiveAuthorizationRequired("p".into())));
        assert_eq!(from_zbus(e, Scope::System, "StopUnit x").kind, ErrorKind::PermissionDenied);
    }
}
