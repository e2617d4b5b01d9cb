//! Every text the supervisor produces for humans: `startError` values and `[supervisor] …`
//! lines.
//!
//! Kept in one place because tests, the CLI and operators' log searches match on these
//! strings; the wording follows upstream's templates where upstream had one.

use std::path::Path;
use std::time::Duration;

use super::state::{StartError, StartErrorKind};
use crate::text;

fn error(kind: StartErrorKind, description: String) -> StartError {
    StartError { kind, description, at: crate::rfc3339::now() }
}

/// `argv[0]` was not found on the child's PATH. Upstream's wording; for a binary the
/// registry knows, its install recipe and docs follow on the same line (one line per event
/// in the log, where upstream printed a block).
pub fn missing_dependency(binary: &str) -> StartError {
    let b = text::field(binary);
    let description = match super::dependencies::lookup(binary) {
        None => format!(
            "{b} is required but was not found on PATH. Ask your system administrator, \
             or check the Parachute docs."
        ),
        Some(k) => {
            let mut d = format!("{b} is required to {}, but it was not found on PATH.", k.why);
            if let Some(recipe) = k.install.here() {
                d.push_str(&format!(" Install it: {}.", recipe.replace('\n', " or ")));
            }
            if let Some(url) = k.docs_url {
                d.push_str(&format!(" Docs: {url}"));
            }
            d
        }
    };
    error(StartErrorKind::MissingDependency { binary: binary.to_owned() }, description)
}

/// `argv[0]` exists but lacks the execute bit (hub#634).
pub fn non_executable(binary: &str, path: &Path) -> StartError {
    let raw = path.display().to_string();
    let (b, p) = (text::field(binary), text::field(&raw));
    let description = format!("{b} found at {p} but is not executable — run chmod +x {p}");
    error(StartErrorKind::NonExecutable { binary: binary.to_owned(), path: raw.clone() }, description)
}

/// The spawn itself failed for another reason (cwd gone, permission, resource limits); R31.
/// `detail` is the spawner's complete message, which names the program and the OS error.
pub fn spawn_failed(short: &str, detail: &str) -> StartError {
    error(
        StartErrorKind::SpawnFailed { os_error: detail.to_owned() },
        format!("{short} could not be started: {}. Fix the cause and start it again.", text::field(detail)),
    )
}

/// The spawn failed for lack of a resource (`errno`: descriptors, processes, memory) and
/// is retried in `delay` (`attempt` of `of`).
pub fn spawn_retrying(
    short: &str,
    detail: &str,
    errno: &str,
    attempt: u32,
    of: u32,
    delay: Duration,
) -> StartError {
    error(
        StartErrorKind::SpawnFailed { os_error: detail.to_owned() },
        format!(
            "{short} could not be started: {} — the system is short of a resource ({errno}), which \
             usually passes; retrying in {}s (attempt {attempt} of {of}).",
            text::field(detail),
            delay.as_secs_f64()
        ),
    )
}

/// The transient shortage outlasted every retry.
pub fn spawn_gave_up(short: &str, detail: &str, errno: &str, attempts: u32) -> StartError {
    error(
        StartErrorKind::SpawnFailed { os_error: detail.to_owned() },
        format!(
            "{short} could not be started: {} — the system stayed short of a resource ({errno}) through \
             {attempts} attempts; find what exhausts it (open files, processes, memory) and start it again.",
            text::field(detail)
        ),
    )
}

/// The OS refused the exec because argv and the environment are too large (`E2BIG`): the
/// largest variable or argument is named, with the `.env` file it came from, its size and
/// the limit it broke — "Argument list too long" alone sent operators hunting.
pub fn too_large(short: &str, req: &super::SpawnRequest, detail: &str) -> StartError {
    // Each string costs its bytes, a NUL and a pointer.
    let ptr = std::mem::size_of::<usize>();
    let mut total = 0usize;
    let mut largest: Option<(String, usize)> = None;
    let mut consider = |what: String, bytes: usize| {
        total += bytes + ptr;
        if largest.as_ref().is_none_or(|(_, b)| bytes > *b) {
            largest = Some((what, bytes));
        }
    };
    for (i, a) in req.argv.iter().enumerate() {
        consider(format!("argument {i}"), a.len() + 1);
    }
    for (k, v) in &req.env {
        let from = req
            .env_file
            .as_ref()
            .filter(|f| f.keys.iter().any(|x| x == k))
            .map(|f| format!(" from {}", text::field(&f.path.display().to_string())))
            .unwrap_or_default();
        consider(format!("the variable {}{from}", text::field_clipped(k, 64)), k.len() + v.len() + 2);
    }
    let Some((what, bytes)) = largest else { return spawn_failed(short, detail) };
    let limits = arg_limits();
    let why = match limits.per_string {
        Some(max) if bytes > max => format!(
            "{what} is {bytes} bytes, and the OS starts no program with a single variable or argument over \
             {max} bytes (E2BIG)"
        ),
        _ => format!(
            "its arguments and environment take {total} bytes{}, and the largest is {what} at {bytes} bytes (E2BIG)",
            limits.total.map(|t| format!(", over the OS limit of {t} bytes")).unwrap_or_default()
        ),
    };
    error(
        StartErrorKind::SpawnFailed { os_error: detail.to_owned() },
        format!("{short} could not be started: {why}. Shorten it (or pass it as a file) and start it again."),
    )
}

struct ArgLimits {
    /// Largest single argument or `KEY=value` string, NUL included (Linux: `MAX_ARG_STRLEN`).
    per_string: Option<usize>,
    /// Arguments and environment together (`ARG_MAX`).
    total: Option<usize>,
}

fn arg_limits() -> ArgLimits {
    // SAFETY: sysconf only reads system configuration.
    let sc = |name| usize::try_from(unsafe { libc::sysconf(name) }).ok().filter(|&v| v > 0);
    // Linux: MAX_ARG_STRLEN is 32 pages (include/uapi/linux/binfmts.h); macOS has no
    // per-string limit.
    let per_string = if cfg!(target_os = "linux") { sc(libc::_SC_PAGESIZE).map(|p| 32 * p) } else { None };
    ArgLimits { per_string, total: sc(libc::_SC_ARG_MAX) }
}

/// The declared port is held by a process outside the supervisor.
pub fn port_squatter(short: &str, port: u16, holder: u32, cmdline: Option<&str>) -> StartError {
    let who = match cmdline {
        Some(c) => format!("pid {holder} ({})", text::field(c)),
        None => format!("pid {holder}"),
    };
    error(
        StartErrorKind::PortSquatter { port, holder_pid: holder, holder_cmdline: cmdline.map(str::to_owned) },
        format!(
            "port {port} is held by {who} outside the supervisor — kill it and retry: \
             kill {holder} && parachute start {short}"
        ),
    )
}

/// The child lives but nothing of its own listens on the port after the readiness window.
pub fn started_but_unbound(short: &str, pid: u32, port: u16, window: Duration) -> StartError {
    error(
        StartErrorKind::StartedButUnbound { port },
        format!(
            "{short} started (pid {pid}) but is not listening on port {port} after {}ms — it may \
             still be coming up, or the port is held by another process.",
            window.as_millis()
        ),
    )
}

/// How a child ended, in words: `exited (code=1)`, or `killed by SIGKILL (signal 9)` where
/// upstream printed only `code=137` and a bare wait status loses the signal altogether.
pub fn exit_reason(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exited (code={c})"),
        (None, Some(n)) => match nix::sys::signal::Signal::try_from(n) {
            Ok(sig) => format!("killed by {} (signal {n})", sig.as_str()),
            Err(_) => format!("killed by signal {n}"),
        },
        (None, None) => "exited (code=?)".to_owned(),
    }
}

/// `[supervisor] …` lines (without the trailing newline). Descriptions and lines carry text
/// from outside (binaries, paths, command lines, OS messages) only through
/// [`crate::text::field`]; the structured fields keep it raw for programs.
pub mod line {
    use std::time::Duration;

    use super::exit_reason;

    /// Stop escalation.
    pub fn escalating(short: &str, timeout: Duration) -> String {
        format!(
            "[supervisor] {short} did not exit {}ms after SIGTERM — escalating to SIGKILL.",
            timeout.as_millis()
        )
    }

    /// A crash inside the budget.
    pub fn restarting(
        short: &str,
        code: Option<i32>,
        signal: Option<i32>,
        n: u32,
        max: u32,
        delay: Duration,
    ) -> String {
        format!(
            "[supervisor] {short} {}; restart {n}/{max} in window (in {}ms).",
            exit_reason(code, signal),
            delay.as_millis()
        )
    }

    /// The budget is spent (one line: the last exit and the verdict).
    pub fn giving_up(
        short: &str,
        code: Option<i32>,
        signal: Option<i32>,
        n: u32,
        window: Duration,
    ) -> String {
        format!(
            "[supervisor] {short} {}; crashed {n}x within {}ms — giving up.",
            exit_reason(code, signal),
            window.as_millis()
        )
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
            cmdline.map_or("command line unavailable".into(), crate::text::field)
        )
    }

    /// Crash path, holder attributable: adopt-kill.
    pub fn adopting(short: &str, port: u16, holder: u32, cmdline: Option<&str>) -> String {
        let who = match cmdline {
            Some(c) => format!("pid {holder}, {}", crate::text::field(c)),
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
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    #[test]
    fn squatter_message_names_pid_cmdline_and_the_fix() {
        // Scenario 3.
        let e = port_squatter("vault", 1940, 1921, Some("bun /x/vault/src/server.ts"));
        assert_eq!(e.kind.wire_name(), "port_squatter");
        let d = &e.description;
        assert!(d.contains("port 1940 is held by pid 1921"), "{d}");
        assert!(d.contains("bun /x/vault/src/server.ts"), "{d}");
        assert!(d.contains("kill 1921 && parachute start vault"), "{d}");
    }

    #[test]
    fn a_hostile_command_line_reaches_no_text_raw() {
        let evil = "bun \u{1b}]52;c;cm0gLXJm\u{7}\r[hub] ok \u{202e}";
        let e = port_squatter("vault", 1940, 1921, Some(evil));
        for text in [
            e.description.clone(),
            missing_dependency(evil).description,
            non_executable(evil, Path::new(evil)).description,
            spawn_failed("vault", evil).description,
            line::refuse_unrelated("vault", 1940, 1921, Some(evil)),
            line::adopting("vault", 1940, 1921, Some(evil)),
        ] {
            assert!(!text.chars().any(crate::text::is_unsafe_char), "{text:?}");
            assert!(text.contains("\\e]52"), "the escape stays visible: {text}");
        }
        // The structured field keeps the facts as they are; printers sanitize it.
        assert!(matches!(e.kind, StartErrorKind::PortSquatter { holder_cmdline: Some(c), .. } if c == evil));
    }

    #[test]
    fn squatter_with_unreadable_cmdline_has_no_parenthesis() {
        // Scenario 4.
        let e = port_squatter("vault", 1940, 1921, None);
        assert!(e.description.contains("pid 1921"));
        assert!(!e.description.contains('('), "{}", e.description);
        assert!(matches!(e.kind, StartErrorKind::PortSquatter { holder_cmdline: None, .. }));
    }

    #[test]
    fn a_known_missing_binary_says_why_and_how_to_install_it_on_one_line() {
        let e = missing_dependency("/nowhere/parachute-vault");
        assert_eq!(
            e.description,
            "/nowhere/parachute-vault is required to run the vault module, but it was not found on \
             PATH. Install it: bun add -g @openparachute/vault."
        );
        let e = missing_dependency("python3");
        assert!(e.description.starts_with("python3 is required to run modules written in Python"), "{e}");
        assert!(!e.description.contains('\n'), "{e}");
        assert!(e.description.ends_with("Docs: https://www.python.org/downloads/"), "{e}");
        assert!(missing_dependency("nope").description.starts_with("nope is required but was not found"));
    }

    #[test]
    fn non_executable_says_how_to_fix_it() {
        // Scenario 44.
        let e = non_executable("parachute-vault", Path::new("/opt/bin/parachute-vault"));
        assert_eq!(
            e.description,
            "parachute-vault found at /opt/bin/parachute-vault but is not executable — run chmod +x \
             /opt/bin/parachute-vault"
        );
        assert!(
            matches!(&e.kind, StartErrorKind::NonExecutable { binary, .. } if binary == "parachute-vault")
        );
    }

    #[test]
    fn unbound_names_port_pid_and_window_and_has_a_timestamp() {
        // Scenario 39.
        let e = started_but_unbound("vault", 77, 1940, Duration::from_millis(50));
        assert!(
            e.description.starts_with("vault started (pid 77) but is not listening on port 1940 after 50ms")
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
            line::restarting("vault", Some(1), None, 1, 3, Duration::from_millis(500))
                .starts_with("[supervisor] vault exited (code=1); restart 1/3 in window")
        );
        assert_eq!(
            line::giving_up("vault", Some(2), None, 3, Duration::from_secs(60)),
            "[supervisor] vault exited (code=2); crashed 3x within 60000ms — giving up."
        );
        assert!(line::refuse_unrelated("v", 1, 2, None).contains("command line unavailable"));
    }

    #[test]
    fn a_signal_is_named_not_reported_as_an_unknown_code() {
        assert_eq!(exit_reason(None, Some(9)), "killed by SIGKILL (signal 9)");
        assert_eq!(exit_reason(None, Some(15)), "killed by SIGTERM (signal 15)");
        assert_eq!(exit_reason(None, Some(200)), "killed by signal 200");
        assert_eq!(exit_reason(Some(0), None), "exited (code=0)");
        assert!(
            line::restarting("vault", None, Some(9), 1, 3, Duration::from_millis(500))
                .starts_with("[supervisor] vault killed by SIGKILL (signal 9); restart 1/3")
        );
    }
}
