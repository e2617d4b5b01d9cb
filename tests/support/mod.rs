//! Shared test harness: temp homes, the fixture module, waiting on conditions.
#![allow(dead_code)]

pub mod hub;
pub mod legacy_box;
pub mod sandbox;
pub mod system_box;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The fixture module binary built by this workspace.
pub fn fixture_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_parachute-fixture"))
}

/// The `parachute` binary built by this workspace (its path, e.g. for `--exec`). To *run*
/// it, use [`parachute`]: `tests/isolation.rs` fails the suite if a test starts it any other
/// way.
pub fn parachute_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_parachute"))
}

/// Polls `cond` until it returns `Some`, or panics with `what` after `deadline`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A TCP port no other test in this run will be given, free on 127.0.0.1 and ::1 when
/// returned.
///
/// Ports come from 20000–32767, below Linux's ephemeral range (32768–60999 by default), so
/// the kernel never hands one of them to a connection or a `bind(…:0)` elsewhere in the
/// suite; a process-wide counter (offset by the pid, for concurrent test binaries) keeps
/// tests running in parallel from drawing the same port. A port some other program
/// already holds is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const BASE: u32 = 20_000;
    const SPAN: u32 = 12_768;
    let offset = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (BASE + (offset + n) % SPAN) as u16;
        let v4 = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        // A host without IPv6 loopback cannot hold the port there either.
        let v6 = match std::net::TcpListener::bind(("::1", port)) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::AddrNotAvailable,
        };
        if v4 && v6 {
            return port;
        }
    }
    panic!("no free TCP port in {BASE}..{}", BASE + SPAN);
}

/// A finished command's status and output, for assertion messages.
pub fn show(out: &std::process::Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A finished command's stdout as JSON; panics with the whole output when it is not.
pub fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", show(out)))
}

/// Gate for a test that needs root-only machinery (PID namespaces, `ns_last_pid`): returns
/// `false` (and says so on stderr, visible even when the test passes) only when the
/// documented opt-out `PARACHUTE_SKIP_SYSTEMD_TESTS=1` is set; otherwise panics with
/// `what` when `available` is false. A test never skips silently.
pub fn needs_root_feature(test: &str, available: bool, what: &str) -> bool {
    if sandbox::skip_requested() {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: PARACHUTE_SKIP_SYSTEMD_TESTS=1 ({what})");
        return false;
    }
    assert!(available, "{test} needs {what}; run the tests as root, or set PARACHUTE_SKIP_SYSTEMD_TESTS=1");
    true
}

/// The system bus address every test child gets: nothing listens there, so no test can
/// reach the host's system manager even on a host booted with systemd.
pub const NO_SYSTEM_BUS: &str = "unix:path=/nonexistent/system_bus_socket";

/// A command for `program` that inherits nothing from the developer's environment: no
/// `HOME`, no session bus, no `XDG_RUNTIME_DIR`, and a system bus address where nothing
/// listens. Callers add what the test needs (a sandbox's bus, a temp `HOME`); they must not
/// call `env_clear()` again. Use it for `parachute` and for any wrapper that runs it.
pub fn isolated(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("DBUS_SYSTEM_BUS_ADDRESS", NO_SYSTEM_BUS);
    cmd
}

/// `parachute`, isolated (see [`isolated`]): the one way tests run the binary.
pub fn parachute() -> std::process::Command {
    isolated(parachute_bin())
}
