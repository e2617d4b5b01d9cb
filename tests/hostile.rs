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
                || libc::setresgid(STRANGER, STRANGER, STRANGER) != 0
                || libc::setresuid(STRANGER, STRANGER, STRANGER) != 0
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
        wait_for("the stranger's ready line", Duration::from_secs(10), || {
            s.lines().iter().any(|l| l.starts_with("ready ")).then_some(())
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

/// F5(a): the hub dies uncleanly, another user binds its port and answers `/health` with the
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
