//! Every text the supervisor produces for humans: `startError` values and `[supervisor] …`
//! lines.
//!
//! Kept in one place because tests, the CLI and operators' log searches match on these
//! strings; the wording follows upstream's templates where upstream had one.

use std::path::Path;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::state::StartError;

/// The current time as RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default()
}

fn base(error_type: &str, description: String) -> StartError {
    StartError {
        error_type: error_type.to_owned(),
        error_description: description,
        at: now_rfc3339(),
        binary: None,
        path: None,
        port: None,
        holder_pid: None,
        holder_cmdline: None,
        os_error: None,
    }
}

/// `argv[0]` was not found on the child's PATH (unregistered-binary wording of depcheck).
pub fn missing_dependency(binary: &str) -> StartError {
    StartError {
        binary: Some(binary.to_owned()),
        ..base(
            "missing_dependency",
            format!(
                "{binary} is required but was not found on PATH. Ask your system administrator, \
                 or check the Parachute docs."
            ),
        )
    }
}

/// `argv[0]` exists but lacks the execute bit (#634).
pub fn non_executable(binary: &str, path: &Path) -> StartError {
    let p = path.display();
    StartError {
        binary: Some(binary.to_owned()),
        path: Some(p.to_string()),
        ..base("non_executable", format!("{binary} found at {p} but is not executable — run chmod +x {p}"))
    }
}

/// The spawn itself failed for another reason (cwd gone, permission, resource limits); R31.
/// `detail` is the spawner's complete message, which names the program and the OS error.
pub fn spawn_failed(short: &str, detail: &str) -> StartError {
    StartError {
        os_error: Some(detail.to_owned()),
        ..base(
            "spawn_failed",
            format!("{short} could not be started: {detail}. Fix the cause and start it again."),
        )
    }
}

/// The declared port is held by a process outside the supervisor.
pub fn port_squatter(short: &str, port: u16, holder: u32, cmdline: Option<&str>) -> StartError {
    let who = match cmdline {
        Some(c) => format!("pid {holder} ({c})"),
        None => format!("pid {holder}"),
    };
    StartError {
        port: Some(port),
        holder_pid: Some(holder),
        holder_cmdline: cmdline.map(str::to_owned),
        ..base(
            "port_squatter",
            format!(
                "port {port} is held by {who} outside the supervisor — kill it and retry: \
                 kill {holder} && parachute start {short}"
            ),
        )
    }
}

/// The child lives but nothing of its own listens on the port after the readiness window.
pub fn started_but_unbound(short: &str, pid: u32, port: u16, window: Duration) -> StartError {
    StartError {
        port: Some(port),
        ..base(
            "started_but_unbound",
            format!(
                "{short} started (pid {pid}) but is not listening on port {port} after {}ms — it may \
                 still be coming up, or the port is held by another process.",
                window.as_millis()
            ),
        )
    }
}

/// `[supervisor] …` lines (without the trailing newline).
pub mod line {
    use std::time::Duration;

    /// Stop escalation.
    pub fn escalating(short: &str, timeout: Duration) -> String {
        format!(
            "[supervisor] {short} did not exit {}ms after SIGTERM — escalating to SIGKILL.",
            timeout.as_millis()
        )
    }

    /// A crash inside the budget.
    pub fn restarting(short: &str, code: Option<i32>, n: u32, max: u32, delay: Duration) -> String {
        let code = code.map_or_else(|| "?".to_owned(), |c| c.to_string());
        format!(
            "[supervisor] {short} exited (code={code}); restart {n}/{max} in window (in {}ms).",
            delay.as_millis()
        )
    }

    /// The budget is spent.
    pub fn giving_up(short: &str, n: u32, window: Duration) -> String {
        format!("[supervisor] {short} crashed {n}x within {}ms — giving up.", window.as_millis())
    }

    /// Crash path, policy `prompt`.
    pub fn prompt_surface(short: &str, port: u16, holder: u32) -> String {
        format!(
            "[supervisor] {short} crashed; port {port} held by pid {holder} (reclaim policy \"prompt\") \
             — surfacing instead of adopting."
        )
    }

    /// Crash path, holder not attributable.
    pub fn refuse_unrelated(short: &str, port: u16, holder: u32, cmdline: Option<&str>) -> String {
        format!(
            "[supervisor] {short} crashed; port {port} held by an unrelated process (pid {holder}, {}) \
             — refusing to kill it; surfacing.",
            cmdline.unwrap_or("command line unavailable")
        )
    }

    /// Crash path, holder attributable: adopt-kill.
    pub fn adopting(short: &str, port: u16, holder: u32, cmdline: Option<&str>) -> String {
        let who = match cmdline {
            Some(c) => format!("pid {holder}, {c}"),
            None => format!("pid {holder}"),
        };
        format!(
            "[supervisor] {short} crashed; port {port} held by an attributable orphan ({who}) — \
             adopting + killing it before restart."
        )
    }

    /// A start-path failure (preflight, squatter, spawn): the reason goes into the log too
    /// (R29), so `/logs` explains a `crashed` module.
    pub fn start_failed(short: &str, description: &str) -> String {
        format!("[supervisor] {short} not started: {description}")
    }

    /// The readiness gate gave up.
    pub fn unbound(description: &str) -> String {
        format!("[supervisor] {description}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squatter_message_names_pid_cmdline_and_the_fix() {
        // Scenario 3.
        let e = port_squatter("vault", 1940, 1921, Some("bun /x/vault/src/server.ts"));
        assert_eq!(e.error_type, "port_squatter");
        let d = &e.error_description;
        assert!(d.contains("port 1940 is held by pid 1921"), "{d}");
        assert!(d.contains("bun /x/vault/src/server.ts"), "{d}");
        assert!(d.contains("kill 1921 && parachute start vault"), "{d}");
    }

    #[test]
    fn squatter_with_unreadable_cmdline_has_no_parenthesis() {
        // Scenario 4.
        let e = port_squatter("vault", 1940, 1921, None);
        assert!(e.error_description.contains("pid 1921"));
        assert!(!e.error_description.contains('('), "{}", e.error_description);
        assert_eq!(e.holder_cmdline, None);
    }

    #[test]
    fn non_executable_says_how_to_fix_it() {
        // Scenario 44.
        let e = non_executable("parachute-vault", Path::new("/opt/bin/parachute-vault"));
        assert_eq!(
            e.error_description,
            "parachute-vault found at /opt/bin/parachute-vault but is not executable — run chmod +x \
             /opt/bin/parachute-vault"
        );
        assert_eq!(e.binary.as_deref(), Some("parachute-vault"));
    }

    #[test]
    fn unbound_names_port_pid_and_window_and_has_a_timestamp() {
        // Scenario 39.
        let e = started_but_unbound("vault", 77, 1940, Duration::from_millis(50));
        assert!(
            e.error_description
                .starts_with("vault started (pid 77) but is not listening on port 1940 after 50ms")
        );
        assert!(OffsetDateTime::parse(&e.at, &Rfc3339).is_ok(), "{}", e.at);
    }

    #[test]
    fn supervisor_lines_follow_upstream_templates() {
        assert_eq!(
            line::escalating("vault", Duration::from_millis(5)),
            "[supervisor] vault did not exit 5ms after SIGTERM — escalating to SIGKILL."
        );
        assert!(
            line::restarting("vault", None, 1, 3, Duration::from_millis(500))
                .starts_with("[supervisor] vault exited (code=?); restart 1/3 in window")
        );
        assert_eq!(
            line::giving_up("vault", 3, Duration::from_secs(60)),
            "[supervisor] vault crashed 3x within 60000ms — giving up."
        );
        assert!(line::refuse_unrelated("v", 1, 2, None).contains("command line unavailable"));
    }
}
