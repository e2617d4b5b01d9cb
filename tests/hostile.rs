//! The running hub against the other users of the machine (issue 12, `docs/security.md`).
//!
//! "Another local user" is a process the test runs under an unused uid/gid (54321) via
//! `setresgid`/`setresuid` in `pre_exec`: no account is created on the host.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::hub::{Serve, TestHome};
use crate::support::{fixture_bin, free_port, wait_for};

/// The uid/gid of "another local user".
const STRANGER: u32 = 54_321;

/// Runs `cmd` as [`STRANGER`] (no supplementary groups).
fn as_stranger(cmd: &mut Command) -> &mut Command {
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                // As root, setgid/setuid set the real, effective and saved ids alike (POSIX;
                // setres*id is not on macOS, where this file must still compile).
                || libc::setgid(STRANGER) != 0
                || libc::setuid(STRANGER) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A process of the stranger's, its stdout lines collected; killed on drop.
struct Stranger {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Stranger {
    fn fixture(args: &[&str]) -> Stranger {
        Stranger::fixture_until(args, "ready ", Duration::from_secs(10))
    }

    /// Starts the fixture and waits for a stdout line starting with `ready`.
    fn fixture_until(args: &[&str], ready: &str, deadline: Duration) -> Stranger {
        let mut cmd = Command::new(fixture_bin());
        cmd.args(args).process_group(0).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = as_stranger(&mut cmd).spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        let s = Stranger { child, lines };
        wait_for("the stranger's ready line", deadline, || {
            s.lines().iter().any(|l| l.starts_with(ready)).then_some(())
        });
        s
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Stranger {
    fn drop(&mut self) {
        // SAFETY: SIGKILL to the group of a process this test started.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn root_only(test: &str) -> bool {
    crate::support::needs_root_feature(
        test,
        nix::unistd::geteuid().is_root(),
        "root (to run a process as another uid)",
    )
}

/// Token theft: the hub dies uncleanly, another user binds its port and answers `/health` with the
/// (public) nonce of the stale `hub-instance.json`. The CLI refuses, naming the holder's
/// pid and uid, and the impostor never sees the token.
#[test]
fn a_stranger_holding_the_port_after_an_unclean_exit_never_receives_the_token() {
    if !root_only("a_stranger_holding_the_port") {
        return;
    }
    let h = TestHome::new();
    h.fixture("echo", free_port(), &[]);
    let port = free_port();
    let mut s = Serve::ready(&h, port, &[]);
    s.wait_err("boot", |l| l.contains("boot done"));
    let nonce = h.instance().unwrap()["instance"].as_str().unwrap().to_owned();
    let out = h.cli(&["status"]);
    assert_eq!(out.status.code(), Some(0), "the real hub is trusted: {}", crate::support::show(&out));

    s.signal(libc::SIGKILL);
    s.wait_exit(Duration::from_secs(10));
    assert!(h.instance().is_some(), "an unclean exit leaves hub-instance.json behind");
    let fake = Stranger::fixture(&["--port", &port.to_string(), "--fake-hub", &nonce]);
    let fake_pid = fake.child.id();

    for args in [&["status"][..], &["stop", "echo"], &["logs", "echo"], &["status", "--json"]] {
        let out = h.cli(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_ne!(out.status.code(), Some(0), "{args:?}: {}", crate::support::show(&out));
        assert!(err.contains("token was not sent"), "{args:?}: {err}");
        assert!(err.contains(&format!("pid {fake_pid}")), "{args:?} names the holder's pid: {err}");
        assert!(err.contains(&format!("uid {STRANGER}")), "{args:?} names the holder's uid: {err}");
    }
    let captured: Vec<String> = fake.lines().into_iter().filter(|l| l.starts_with("captured")).collect();
    assert!(captured.is_empty(), "the impostor received the token: {captured:?}");
}

/// The hub reached through a shell redirect, so its output goes to a log file and it
/// inherits an extra descriptor (fd 9; dash takes one digit) and a noisy environment, as from a careless launcher.
struct LoggedHub {
    serve: Serve,
    log: std::path::PathBuf,
}

impl LoggedHub {
    fn start(h: &TestHome, port: u16, marker: &std::path::Path) -> LoggedHub {
        let log = h.scratch("hub.log");
        let script = format!(
            "umask 022; exec env SUDO_USER=op SUDO_COMMAND=/bin/sh DBUS_SESSION_BUS_ADDRESS=unix:path=/nonexistent \
             AWS_SECRET_ACCESS_KEY=hunter2 GITHUB_TOKEN=ghp_x LC_TIME=C TZ=UTC \"$0\" serve --home '{}' --port {port} \
             9<'{}' >>'{}' 2>&1",
            h.home().display(),
            marker.display(),
            log.display()
        );
        let mut cmd = crate::support::isolated("sh");
        cmd.arg("-c").arg(script).arg(crate::support::parachute_bin());
        let serve = Serve::spawn(cmd, h, port);
        let hub = LoggedHub { serve, log };
        wait_for("the listening line in the log", Duration::from_secs(20), || {
            hub.log_text().contains("[hub] listening on").then_some(())
        });
        hub
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// Private state, an allow-listed environment and no inherited descriptor for modules.
#[test]
fn modules_get_an_allow_listed_environment_and_no_inherited_descriptor_and_state_is_private() {
    use parachute::model::home::Home;
    use parachute::model::names::ModuleName;
    let h = TestHome::new();
    h.fixture("envy", free_port(), &[]);
    let home = Home::new(h.home()).unwrap();
    let env_file = home.env_file(&ModuleName::parse("envy").unwrap());
    std::fs::create_dir_all(env_file.parent().unwrap()).unwrap();
    std::fs::write(&env_file, "MODULE_OWN=1\n").unwrap();
    let marker = h.scratch("inherited-marker");
    std::fs::write(&marker, "x").unwrap();
    let hub = LoggedHub::start(&h, free_port(), &marker);
    let hub_pid = wait_for("the hub under the shell", Duration::from_secs(5), || {
        // `sh` execs env, which execs parachute: the same pid.
        let pid = hub.serve.pid();
        parachute_process::procfs::cmdline(pid).filter(|c| c.contains(" serve ")).map(|_| pid)
    });
    let held = std::fs::read_link(format!("/proc/{hub_pid}/fd/9")).unwrap();
    assert_eq!(held, marker, "the test setup: the hub inherited fd 9");

    let state = hub.serve.wait_state(&h, "envy", "envy running", |v| v["status"] == "running");
    let pid = state["pid"].as_u64().unwrap() as u32;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    // The hub's own per-boot tag (leftover accounting) is set by the hub, not inherited.
    let own = ["PARACHUTE_HOME", "PATH", "PORT", "MODULE_OWN", parachute::supervisor::statefile::TAG_VAR];
    let mut names = Vec::new();
    for var in environ.split(|&b| b == 0).filter(|v| !v.is_empty()) {
        let var = String::from_utf8_lossy(var);
        let name = var.split('=').next().unwrap().to_owned();
        assert!(
            own.contains(&name.as_str()) || parachute::model::modules::is_passed_to_modules(&name),
            "{name} reached the module: {var}"
        );
        names.push(name);
    }
    for expected in ["MODULE_OWN", "PORT", "PARACHUTE_HOME", "LC_TIME", "TZ", "PATH", "HOME"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    // Above 2, the module holds only what it opened itself (its listening socket): nothing
    // the hub holds, the inherited marker included.
    let fds = |p: u32| -> Vec<(i32, std::path::PathBuf)> {
        std::fs::read_dir(format!("/proc/{p}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|fd| {
                Some((fd.file_name().to_str()?.parse().ok()?, std::fs::read_link(fd.path()).ok()?))
            })
            .collect()
    };
    let hub_holds: std::collections::HashSet<_> = fds(hub_pid).into_iter().map(|(_, t)| t).collect();
    for (n, target) in fds(pid) {
        assert_ne!(target, marker, "fd {n} of the module is the hub's inherited descriptor");
        if n > 2 {
            assert!(!hub_holds.contains(&target), "module fd {n} -> {} is also the hub's", target.display());
        }
    }

    for file in ["hub-instance.json", "operator.token", "hub/run/supervised.json"] {
        assert_eq!(mode(&h.home().join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&h.home().join("hub/run")), 0o700);
    assert_eq!(mode(&h.home().join("hub")), 0o700);
    assert_eq!(mode(&hub.log), 0o600, "the hub's log (created 0644 by the shell) is made private");
}

/// What a hostile module prints: a title and a clipboard write (OSC 0, OSC 52), a screen
/// clear, and a carriage return that would make the rest pose as a hub line.
const HOSTILE_TEXT: &str = "\u{1b}]0;PWNED-TITLE\u{7}\u{1b}[2J\u{1b}]52;c;aGk=\u{7}\r[hub] forged line";

fn assert_escaped(line: &str, context: &str) {
    assert!(
        !line.bytes().any(|b| b == 0x1b || b == b'\r' || b == 0x07),
        "{context}: raw control bytes in {line:?}"
    );
    assert!(
        line.contains(r"\e]0;PWNED-TITLE\x07\e[2J\e]52;c;aGk=\x07\r[hub] forged line"),
        "{context}: {line:?}"
    );
}

/// Terminal injection: module output reaches the hub's log escaped, always, and `parachute logs` escaped on a
/// terminal.
#[test]
fn escape_sequences_from_a_module_are_escaped_in_the_hub_log_and_in_logs_on_a_terminal() {
    use nix::sys::termios;
    use std::io::Read;
    let h = TestHome::new();
    h.fixture("esc", free_port(), &["--lines", "1", "--line-text", HOSTILE_TEXT]);
    let s = Serve::ready(&h, free_port(), &[]);
    let line = s.wait_out("the module's line", |l| l.contains("forged line"));
    assert!(line.starts_with("[esc] "), "the module's prefix stays first: {line:?}");
    assert_escaped(&line, "hub log");
    assert!(!s.stdout().lines().any(|l| l.starts_with("[hub]")), "no module line looks like a hub line");

    // `parachute logs` on a pseudo-terminal (raw mode, so the line discipline adds no `\r`).
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut attrs = termios::tcgetattr(&pty.slave).unwrap();
    termios::cfmakeraw(&mut attrs);
    termios::tcsetattr(&pty.slave, termios::SetArg::TCSANOW, &attrs).unwrap();
    let mut cmd = crate::support::parachute();
    cmd.args(["logs", "esc", "--home"]).arg(h.home()).env("HOME", h.scratch("user"));
    cmd.stdin(Stdio::null()).stdout(std::fs::File::from(pty.slave)).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    drop(cmd); // our copy of the slave: the master then reads EOF (EIO) after the CLI exits
    let status = wait_for("parachute logs to finish", Duration::from_secs(30), || child.try_wait().unwrap());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    let mut master = std::fs::File::from(pty.master);
    let mut shown = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => shown.extend_from_slice(&buf[..n]),
        }
    }
    let shown = String::from_utf8_lossy(&shown);
    let line = shown.lines().find(|l| l.contains("forged line")).unwrap_or_else(|| panic!("{shown:?}"));
    assert_escaped(line, "parachute logs on a terminal");

    // Into a pipe the bytes are data and stay as they were.
    let out = h.cli(&["logs", "esc"]);
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(raw.contains(HOSTILE_TEXT), "{raw:?}");
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Descriptor exhaustion: with the open-file limit systemd gives (1024, and no room to raise it), 2,000 idle
/// connections from another user leave `/health` answering, a killed module is respawned,
/// idle connections are closed by the header-read timeout, and the module is `running`
/// after the attack with no operator action.
#[test]
fn two_thousand_idle_connections_from_a_stranger_leave_the_hub_answering_and_respawning() {
    if !root_only("two_thousand_idle_connections") {
        return;
    }
    let h = TestHome::new();
    h.fixture("echo", free_port(), &[]);
    let port = free_port();
    let mut cmd = crate::support::isolated("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n 1024 && exec \"$0\" serve --home '{}' --port {port}", h.home().display()))
        .arg(crate::support::parachute_bin());
    let s = Serve::spawn(cmd, &h, port);
    s.wait_err("the listening line", |l| l.contains("[hub] listening on"));
    s.wait_err("boot", |l| l.contains("boot done"));
    let first = s.wait_state(&h, "echo", "echo running", |v| v["status"] == "running");
    let baseline = open_fds(s.pid());

    let attack = Stranger::fixture_until(
        &["--port", &port.to_string(), "--hold-connections", "2000"],
        "held ",
        Duration::from_secs(60),
    );
    assert!(attack.lines().iter().any(|l| l == "held 2000"), "{:?}", attack.lines());
    let fds = open_fds(s.pid());
    assert!(fds < baseline + 64, "the stranger holds at most its share: {fds} fds (baseline {baseline})");

    let t = std::time::Instant::now();
    let (status, body) = s.http("GET", "/health", None);
    assert_eq!(status, 200, "{body}");
    assert!(t.elapsed() < Duration::from_secs(2), "/health took {:?} under the flood", t.elapsed());

    let pid = first["pid"].as_u64().unwrap() as i32;
    // SAFETY: SIGKILL to the module process this test's hub started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let again = s.wait_state(&h, "echo", "echo respawned", |v| {
        v["status"] == "running" && v["pid"].as_u64().is_some_and(|p| p as i32 != pid)
    });
    assert_eq!(again["status"], "running");

    // The header-read timeout closes the stranger's idle connections although it keeps them.
    wait_for("idle connections closed by the hub", Duration::from_secs(30), || {
        (open_fds(s.pid()) <= baseline + 4).then_some(())
    });
    drop(attack);
    let after = s.wait_state(&h, "echo", "echo running after the attack", |v| v["status"] == "running");
    assert_eq!(after["pid"], again["pid"]);
}

/// A 10,000-row `services.json` (a user's own, or a runaway installer's): boot is not
/// quadratic, `GET /api/modules` answers within a second from the parse cached at boot, a
/// change to the file is seen by the next request (parsed once, off the runtime's workers)
/// and `/health` keeps answering meanwhile.
#[test]
fn ten_thousand_services_rows_list_in_under_a_second() {
    let h = TestHome::new();
    for i in 0..10_000u32 {
        let name = format!("bulk{i}");
        h.row_unflushed(serde_json::json!({
            "name": name, "port": 40_000 + i, "paths": [format!("/{name}")], "health": "/health", "version": "1",
        }));
    }
    h.flush_rows();
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("boot", |l| l.contains("boot done"));
    let token = h.token();
    let list = |expected: usize| {
        let t = std::time::Instant::now();
        let (status, body) = s.http("GET", "/api/modules", Some(&token));
        let took = t.elapsed();
        assert_eq!(status, 200, "{}", &body[..body.len().min(300)]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["installed"].as_array().unwrap().len(), expected);
        took
    };
    for round in 0..2 {
        let took = list(10_000 + round);
        assert!(took < Duration::from_secs(1), "round {round}: GET /api/modules took {took:?}");
        h.row(serde_json::json!({"name": format!("late{round}"), "port": 39_000 + round, "paths": ["/l"], "health": "/h", "version": "1"}));
        // The first request after the change parses the new file (a debug build needs ~2 s
        // for that; a release build well under one); /health is not held up by it.
        let slow = std::thread::scope(|scope| {
            let parse = scope.spawn(|| list(10_001 + round));
            std::thread::sleep(Duration::from_millis(50));
            let t = std::time::Instant::now();
            let (status, _) = s.http("GET", "/health", None);
            assert_eq!(status, 200);
            assert!(t.elapsed() < Duration::from_millis(500), "/health waited {:?} for a parse", t.elapsed());
            parse.join().unwrap()
        });
        assert!(slow < Duration::from_secs(20), "{slow:?}");
    }
    let took = list(10_002);
    assert!(took < Duration::from_secs(1), "cached again: {took:?}");
}
