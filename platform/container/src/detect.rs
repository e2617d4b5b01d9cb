//! Which service manager to use, decided from facts the caller gathered.
//!
//! Probing touches the host (a directory, a bus, `launchctl print`), so it belongs to the
//! CLI; deciding is a pure function of the answers, so every row of the table is a unit
//! test. Upstream decided "a manager exists" from a binary on `PATH` (W10), which is true
//! in containers that ship `systemctl` without systemd and in SSH sessions without a user
//! bus; here the facts are the ones that matter: is systemd PID 1, does the bus answer,
//! is the launchd domain there.

use parachute_manager::Scope;

/// What the caller found out about the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectProbe<'a> {
    /// `std::env::consts::OS` (`linux`, `macos`, …).
    pub os: &'a str,
    /// The effective uid: root manages the system scope, anyone else their own.
    pub euid: u32,
    /// `/run/systemd/system` is a directory (systemd's own `sd_booted()` test).
    pub run_systemd_system_exists: bool,
    /// The bus of the scope we would use answered: the system bus for root, the user's
    /// session bus (`systemd --user`) otherwise.
    pub bus_answers: bool,
    /// `launchctl print gui/<uid>` (root: `system`) succeeded.
    pub launchd_domain_reachable: bool,
    /// A container runtime, when one is evident (`/.dockerenv` → `docker`,
    /// `/run/.containerenv` → `podman`, PID 1's `container=`); only used to explain.
    pub container: Option<&'a str>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// Use systemd, in this scope.
    Systemd {
        /// `System` for root, `User` otherwise.
        scope: Scope,
    },
    /// Use launchd, in this scope.
    Launchd {
        /// `System` (LaunchDaemon) for root, `User` (LaunchAgent) otherwise.
        scope: Scope,
    },
    /// No usable manager; `why` is a clause for "No service manager was found: <why>."
    None {
        /// What is missing, in words an operator can check.
        why: String,
    },
}

fn scope_for(euid: u32) -> Scope {
    if euid == 0 { Scope::System } else { Scope::User }
}

/// Decides which manager to use from `probe`.
pub fn detect(probe: &DetectProbe<'_>) -> Detected {
    let scope = scope_for(probe.euid);
    match probe.os {
        "linux" if !probe.run_systemd_system_exists => {
            let hint = match probe.container {
                Some(rt) => format!("this is a {rt} container"),
                None => "not booted with systemd; a container?".to_owned(),
            };
            Detected::None { why: format!("/run/systemd/system does not exist ({hint})") }
        }
        "linux" if probe.bus_answers => Detected::Systemd { scope },
        "linux" if scope == Scope::System => Detected::None {
            why: "systemd is running but the system bus did not answer (is dbus running?)".to_owned(),
        },
        "linux" => Detected::None {
            why: format!(
                "systemd is running but the user manager of uid {} did not answer on its bus (no login \
                 session: XDG_RUNTIME_DIR unset, e.g. under su or a bare SSH command?); log in normally or \
                 run `loginctl enable-linger`, or install a system unit with sudo",
                probe.euid
            ),
        },
        "macos" if probe.launchd_domain_reachable => Detected::Launchd { scope },
        "macos" if scope == Scope::System => {
            Detected::None { why: "launchctl could not reach the system domain".to_owned() }
        }
        "macos" => Detected::None {
            why: format!(
                "launchctl could not reach the gui/{} domain (nobody is logged in at the GUI); on a headless \
                 Mac install a LaunchDaemon with sudo",
                probe.euid
            ),
        },
        other => {
            Detected::None { why: format!("{other} has no supported service manager (systemd or launchd)") }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux(euid: u32, booted: bool, bus: bool) -> DetectProbe<'static> {
        DetectProbe {
            os: "linux",
            euid,
            run_systemd_system_exists: booted,
            bus_answers: bus,
            launchd_domain_reachable: false,
            container: None,
        }
    }

    fn why(d: Detected) -> String {
        match d {
            Detected::None { why } => why,
            other => panic!("expected None, got {other:?}"),
        }
    }

    #[test]
    fn decision_table() {
        // (probe, expected) — every branch, both uids.
        assert_eq!(detect(&linux(1000, true, true)), Detected::Systemd { scope: Scope::User });
        assert_eq!(detect(&linux(0, true, true)), Detected::Systemd { scope: Scope::System });
        assert!(why(detect(&linux(1000, false, true))).contains("/run/systemd/system does not exist"));
        assert!(why(detect(&linux(0, false, false))).contains("a container?"));
        let docker = DetectProbe { container: Some("docker"), ..linux(0, false, false) };
        assert!(why(detect(&docker)).contains("this is a docker container"));
        assert!(why(detect(&linux(1000, true, false))).contains("enable-linger"));
        assert!(why(detect(&linux(0, true, false))).contains("system bus"));

        let mac = |euid, reachable| DetectProbe {
            os: "macos",
            euid,
            run_systemd_system_exists: false,
            bus_answers: false,
            launchd_domain_reachable: reachable,
            container: None,
        };
        assert_eq!(detect(&mac(501, true)), Detected::Launchd { scope: Scope::User });
        assert_eq!(detect(&mac(0, true)), Detected::Launchd { scope: Scope::System });
        assert!(why(detect(&mac(501, false))).contains("gui/501"));
        assert!(why(detect(&mac(0, false))).contains("system domain"));

        // Facts of another platform never leak into the decision.
        let odd = DetectProbe { os: "freebsd", ..linux(0, true, true) };
        assert!(why(detect(&odd)).contains("freebsd has no supported service manager"));
        let mac_with_systemd_facts = DetectProbe { os: "macos", ..linux(501, true, true) };
        assert!(matches!(detect(&mac_with_systemd_facts), Detected::None { .. }));
    }
}
