//! A booted system-mode systemd for the tests of what root does: `scripts/systemd-nspawn-
//! sandbox.sh` (systemd as PID 1 of a container on a copy-on-write view of `/`, private
//! network) behind a shared handle.
//!
//! Each test boots its own container ([`SystemBox::start`], about a second): the hub's unit
//! name is fixed (`parachute-hub.service`), so tests running in parallel cannot share one
//! system manager. A test creates its unprivileged users inside the container's overlay
//! only, never on the host. `Drop` halts the container and removes its directory; the
//! script's dead-man switch does the same if the test binary dies first, so no container,
//! overlay or mount outlives the run.
//!
//! Everything the tests run inside goes through [`SystemBox::run`] / [`SystemBox::run_as`]:
//! `nsenter` into the container's namespaces with a clean login environment. `parachute`
//! there is this build's binary (its target directory is bound read-only at the same path),
//! and the only service manager it can reach is the container's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::sandbox::skip_requested;

/// A running container (see the module docs).
pub struct SystemBox {
    dir: PathBuf,
    /// Host-side pid of the container's PID 1.
    pub leader: u32,
    users: AtomicU32,
}

/// An unprivileged user that exists only inside the container.
#[derive(Debug, Clone)]
pub struct BoxUser {
    /// Login name.
    pub name: String,
    /// Its uid (= its gid: `useradd --user-group`).
    pub uid: u32,
    /// `/home/<name>`, owned by the user.
    pub home: PathBuf,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd-nspawn-sandbox.sh")
}

/// The directory holding this build's binaries (`parachute`, `parachute-fixture`).
pub fn bin_dir() -> PathBuf {
    super::parachute_bin().parent().expect("binary has a directory").to_path_buf()
}

impl SystemBox {
    /// Boots a container for `test`; `None` (after saying so) when the systemd tests were
    /// told to skip. Panics with the script's output when the container cannot boot here.
    pub fn start(test: &str) -> Option<SystemBox> {
        if skip_requested() {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED {test}: PARACHUTE_SKIP_SYSTEMD_TESTS=1 (it needs a booted system-mode systemd)"
            );
            return None;
        }
        Some(SystemBox::boot(test))
    }

    fn boot(test: &str) -> SystemBox {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "parachute-sysbox-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            test.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(40).collect::<String>()
        ));
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(&dir)
            .arg("--bind-ro")
            .arg(bin_dir())
            .env("SANDBOX_OWNER_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run systemd-nspawn-sandbox.sh");
        assert!(
            out.status.success(),
            "systemd-nspawn-sandbox.sh start failed ({}); it needs root and systemd-container:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let leader = text
            .lines()
            .find_map(|l| l.strip_prefix("SYSTEM_BOX_LEADER="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unexpected start output:\n{text}"));
        SystemBox { dir, leader, users: AtomicU32::new(0) }
    }

    /// Creates a fresh unprivileged user (with its home) inside the container.
    pub fn new_user(&self, prefix: &str) -> BoxUser {
        let n = self.users.fetch_add(1, Ordering::Relaxed);
        let uid = 54_400 + n;
        let name =
            format!("{}{n}", prefix.chars().filter(char::is_ascii_lowercase).take(20).collect::<String>());
        let out = self.script_cmd("adduser").arg(&self.dir).arg(&name).arg(uid.to_string()).output().unwrap();
        assert!(out.status.success(), "adduser {name}: {}", super::show(&out));
        BoxUser { home: PathBuf::from("/home").join(&name), name, uid }
    }

    fn script_cmd(&self, verb: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(script()).arg(verb).stdin(Stdio::null());
        cmd
    }

    /// Runs `argv` inside the container as root, with a clean login environment
    /// (`HOME=/root`, no `SUDO_*`: a root shell). Prefix `env K=V` to add variables.
    pub fn run(&self, argv: &[&str]) -> Output {
        self.run_in(None, argv)
    }

    /// Runs `argv` inside the container as `user` (its HOME, its uid/gid and groups).
    pub fn run_as(&self, user: &BoxUser, argv: &[&str]) -> Output {
        self.run_in(Some(&user.name), argv)
    }

    fn run_in(&self, user: Option<&str>, argv: &[&str]) -> Output {
        let mut cmd = self.script_cmd("exec");
        cmd.arg(&self.dir);
        if let Some(u) = user {
            cmd.args(["--as", u]);
        }
        cmd.arg("--").args(argv);
        cmd.output().unwrap_or_else(|e| panic!("exec {argv:?} in the system box: {e}"))
    }

    /// Like [`run`](Self::run), but panics with the output unless it succeeds; returns stdout.
    pub fn sh(&self, script: &str) -> String {
        let out = self.run(&["sh", "-c", script]);
        assert!(out.status.success(), "in the system box, `{script}` failed:\n{}", super::show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`sh`](Self::sh), as `user`.
    pub fn sh_as(&self, user: &BoxUser, script: &str) -> String {
        let out = self.run_as(user, &["sh", "-c", script]);
        assert!(
            out.status.success(),
            "in the system box, as {}, `{script}` failed:\n{}",
            user.name,
            super::show(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `user`'s own manager (`user@<uid>.service`, as a login would) and waits until
    /// it answers on the user's bus (`/run/user/<uid>/bus`); returns that bus's address.
    pub fn start_user_manager(&self, user: &BoxUser) -> String {
        self.sh(&format!("systemctl start user@{}.service", user.uid));
        let bus = format!("unix:path=/run/user/{}/bus", user.uid);
        super::wait_for("the user manager on its bus", std::time::Duration::from_secs(30), || {
            let out = self.run_as(
                user,
                &[
                    "env",
                    &format!("DBUS_SESSION_BUS_ADDRESS={bus}"),
                    "busctl",
                    "--user",
                    "call",
                    "org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus",
                    "NameHasOwner",
                    "s",
                    "org.freedesktop.systemd1",
                ],
            );
            String::from_utf8_lossy(&out.stdout).contains("true").then_some(())
        });
        bus
    }

    /// The path of `inner` (a path inside the container) as seen from the host.
    pub fn host_path(&self, inner: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.leader)).join(inner.strip_prefix("/").unwrap_or(inner))
    }

    /// The `parachute` binary, at the path it has inside the container.
    pub fn parachute(&self) -> String {
        super::parachute_bin().to_string_lossy().into_owned()
    }

    /// The fixture module binary, at the path it has inside the container.
    pub fn fixture(&self) -> String {
        super::fixture_bin().to_string_lossy().into_owned()
    }
}

impl Drop for SystemBox {
    fn drop(&mut self) {
        match self.script_cmd("stop").arg(&self.dir).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("systemd-nspawn-sandbox.sh stop {}: {}", self.dir.display(), super::show(&o)),
            Err(e) => eprintln!("systemd-nspawn-sandbox.sh stop {}: {e}", self.dir.display()),
        }
    }
}
