//! A private `systemd --user` per test: `scripts/systemd-sandbox.sh` behind an RAII guard.
//!
//! [`Sandbox::start`] runs `systemd-sandbox.sh start --plain <dir>` with
//! `SANDBOX_OWNER_PID` set to this test process, so even a test binary that is killed
//! leaves nothing behind (the script's watcher stops the sandbox once we are gone). `Drop`
//! runs `stop`, which leaves no process, cgroup or directory behind.
//!
//! The sandbox needs root. Without root the tests fail with a message saying so, unless
//! `PARACHUTE_SKIP_SYSTEMD_TESTS=1` is set; then each one prints that it was skipped.
//! Tests get the bus address and unit directory from the guard and pass them to the code
//! under test explicitly: environment variables are process-wide and tests run in parallel.
//!
//! This file has no dependency on the root crate, so backend crates include it too
//! (`#[path = "../../../tests/support/sandbox.rs"] mod sandbox;`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A running sandbox; stopped (and its directory removed) on drop.
pub struct Sandbox {
    /// The `K=V` lines `start` printed (XDG_RUNTIME_DIR, DBUS_SESSION_BUS_ADDRESS, HOME,
    /// XDG_CONFIG_HOME, …, SYSTEMD_SANDBOX_*).
    pub env: BTreeMap<String, String>,
    dir: PathBuf,
}

fn script() -> PathBuf {
    // Both the root package and the platform crates find the script from their manifest.
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let candidate = dir.join("scripts/systemd-sandbox.sh");
        if candidate.exists() {
            return candidate;
        }
        if !dir.pop() {
            panic!("scripts/systemd-sandbox.sh not found above {}", env!("CARGO_MANIFEST_DIR"));
        }
    }
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1)) // effective uid
        .is_some_and(|euid| euid == "0")
}

#[expect(clippy::disallowed_methods, reason = "the documented opt-out switch of the systemd tests")]
pub fn skip_requested() -> bool {
    std::env::var_os("PARACHUTE_SKIP_SYSTEMD_TESTS").is_some_and(|v| v == "1")
}

impl Sandbox {
    /// Starts a sandbox, or returns `None` (after saying so) when the tests were told to
    /// skip; panics with a clear message when it cannot run here.
    pub fn start(test: &str) -> Option<Sandbox> {
        if skip_requested() {
            // Straight to the stderr handle, not eprintln!: the test harness captures the
            // macros, and a skip must be visible even when the test passes.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED {test}: PARACHUTE_SKIP_SYSTEMD_TESTS=1 (it needs a root systemd sandbox)"
            );
            return None;
        }
        assert!(
            is_root(),
            "{test} needs root: it starts a private systemd --user sandbox (cgroups, mount namespace). \
             Run the tests as root, or set PARACHUTE_SKIP_SYSTEMD_TESTS=1 to skip them."
        );
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "parachute-sbx-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            test.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(40).collect::<String>()
        ));
        let out = Command::new("bash")
            .arg(script())
            .args(["start", "--plain"])
            .arg(&dir)
            .env("SANDBOX_OWNER_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run systemd-sandbox.sh");
        assert!(
            out.status.success(),
            "systemd-sandbox.sh start failed for {test} ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let env: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        assert!(env.contains_key("DBUS_SESSION_BUS_ADDRESS"), "unexpected start output: {env:?}");
        Some(Sandbox { env, dir })
    }

    /// A variable printed by `start`.
    pub fn var(&self, k: &str) -> &str {
        self.env.get(k).unwrap_or_else(|| panic!("sandbox printed no {k}"))
    }

    /// The sandbox's session bus address.
    pub fn bus_address(&self) -> &str {
        self.var("DBUS_SESSION_BUS_ADDRESS")
    }

    /// The unit directory the sandbox manager searches (`$XDG_CONFIG_HOME/systemd/user`).
    pub fn unit_dir(&self) -> PathBuf {
        PathBuf::from(self.var("SYSTEMD_SANDBOX_UNIT_DIR"))
    }

    /// The sandbox directory (scratch space for logs and files lives here too).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A bus connection to the sandbox manager, on the current tokio runtime.
    pub async fn connect(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.bus_address())
            .build()
            .await
            .unwrap_or_else(|e| panic!("connect to sandbox bus {}: {e}", self.bus_address()))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let out = Command::new("bash").arg(script()).arg("stop").arg(&self.dir).stdin(Stdio::null()).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "systemd-sandbox.sh stop {} failed: {}",
                self.dir.display(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("systemd-sandbox.sh stop {}: {e}", self.dir.display()),
        }
    }
}
