//! The fixture module does what its flags say: tests that rely on it rely on these.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{fixture_bin, free_port, wait_for};

#[test]
fn listens_on_port_and_announces_ready() {
    let port = free_port();
    let mut child = Command::new(fixture_bin())
        .args(["--port", &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("ready pid="), "{line}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn exits_with_the_requested_code() {
    let st = Command::new(fixture_bin()).args(["--exit-after-ms", "1", "--exit-code", "7"]).status().unwrap();
    assert_eq!(st.code(), Some(7));
}

#[test]
fn prints_lines_and_a_long_line_without_newline() {
    let out = Command::new(fixture_bin())
        .args(["--lines", "3", "--stderr-lines", "2", "--long-line", "100000", "--exit-after-ms", "0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("line 0\nline 1\nline 2\n"));
    assert!(stdout.ends_with(&"x".repeat(100_000)), "no trailing newline after the long line");
    assert_eq!(String::from_utf8(out.stderr).unwrap(), "err line 0\nerr line 1\n");
}

#[test]
fn grandchild_holds_the_port_after_the_parent_exits() {
    let port = free_port();
    // The grandchild inherits the stdout pipe, so read lines rather than waiting for EOF
    // (which only comes when the grandchild dies); its own `ready` line may come first.
    let mut parent = Command::new(fixture_bin())
        .args(["--port", &port.to_string(), "--grandchild-holds-port", "--parent-exits"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(parent.stdout.take().unwrap());
    let gpid: i32 = loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "fixture closed stdout before naming its grandchild"
        );
        if let Some(pid) = line.trim().strip_prefix("grandchild pid=") {
            break pid.parse().unwrap();
        }
    };
    // Whatever happens below, the grandchild must not outlive the test (it holds our pipe).
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            // SAFETY: plain kill(2) of the grandchild this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _guard = KillOnDrop(gpid);
    assert!(parent.wait().unwrap().success());
    wait_for("grandchild to bind", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
}

#[test]
fn ticks_count_up_without_a_gap() {
    let mut child = Command::new(fixture_bin())
        .args(["--no-listen", "--tick-ms", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let ticks: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .filter(|l| l.starts_with("tick "))
        .take(20)
        .collect();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(ticks, (0..20).map(|n| format!("tick {n}")).collect::<Vec<_>>());
}
