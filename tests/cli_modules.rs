//! `parachute start|stop|restart|status|logs` against a real `parachute serve`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::free_port;
use crate::support::hub::{Serve, TestHome, alive};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn without_a_hub_every_verb_says_how_to_start_one() {
    let h = TestHome::new();
    for args in [&["status"][..], &["start", "x"], &["stop"], &["restart", "x"], &["logs", "x"]] {
        let out = h.cli(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("no hub is running") && err.contains("parachute serve --home"), "{err}");
        assert!(err.contains("parachute unit start"), "{err}");
    }
    let out = h.cli(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["hub"].is_null());
}

#[test]
fn stop_start_restart_and_status_through_the_cli() {
    let h = TestHome::new();
    let (a, b) = (free_port(), free_port());
    h.fixture("alpha", a, &[]);
    h.fixture("beta", b, &[]);
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("boot", |l| l.contains("boot done"));
    let pid_a = s.state(&h, "alpha")["pid"].as_u64().unwrap() as u32;

    let out = h.cli(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("MODULE") && table.contains("RESTARTS"), "{table}");
    let row = table.lines().find(|l| l.starts_with("alpha")).unwrap();
    assert!(
        row.contains("running") && row.contains(&pid_a.to_string()) && row.contains(&a.to_string()),
        "{table}"
    );

    let out = h.cli(&["stop", "alpha"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("✓ alpha stopped."));
    assert!(!alive(pid_a));
    let out = h.cli(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hub"]["instance"], h.instance().unwrap()["instance"]);
    let alpha = v["modules"].as_array().unwrap().iter().find(|m| m["short"] == "alpha").unwrap();
    assert_eq!(alpha["status"], "stopped", "{v}");

    let out = h.cli(&["start", "alpha", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"]["status"], "running", "{v}");
    let pid2 = v["state"]["pid"].as_u64().unwrap() as u32;
    s.track(pid2);

    let out = h.cli(&["restart", "alpha"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("✓ alpha running (pid "), "{}", text(&out.stdout));
    assert!(!alive(pid2));

    // Every module at once.
    let out = h.cli(&["stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let o = text(&out.stdout);
    assert!(o.contains("✓ alpha stopped.") && o.contains("✓ beta stopped."), "{o}");
    let out = h.cli(&["start", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    for r in v.as_array().unwrap() {
        assert_eq!(r["state"]["status"], "running", "{v}");
        s.track(r["state"]["pid"].as_u64().unwrap() as u32);
    }

    let out = h.cli(&["start", "hub"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("parachute unit start"));
    let out = h.cli(&["start", "ghost"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not installed"));
}

#[test]
fn a_failed_start_prints_the_diagnostic_and_exits_non_zero() {
    let h = TestHome::new();
    let tool = h.scratch("tool");
    std::fs::write(&tool, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o644)).unwrap();
    h.module("noexec", free_port(), &[tool.to_str().unwrap().to_owned()]);
    h.module("nodep", free_port(), &["parachute-definitely-missing".into()]);
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("boot", |l| l.contains("boot done"));

    let out = h.cli(&["start", "noexec"]);
    assert_eq!(out.status.code(), Some(1), "R11: a crashed start is a failure");
    let err = text(&out.stderr);
    assert!(err.contains("non_executable") && err.contains("chmod +x"), "{err}");
    assert!(!err.contains("not installed"), "R19: {err}");
    let out = h.cli(&["restart", "nodep"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("missing_dependency") && err.contains("parachute-definitely-missing"), "{err}");

    let out = h.cli(&["status"]);
    let table = text(&out.stdout);
    let row = table.lines().find(|l| l.starts_with("noexec")).unwrap();
    assert!(row.contains("not executable"), "{table}");
}

#[test]
fn logs_print_the_buffer_and_follow_across_a_crash() {
    let h = TestHome::new();
    h.fixture("talker", free_port(), &["--lines", "3", "--line-text", "said", "--exit-after-ms", "500"]);
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_out("a line", |l| l.contains("[talker] said 2"));

    let out = h.cli(&["logs", "talker"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let o = text(&out.stdout);
    assert!(o.starts_with("[talker] said 0\n[talker] said 1\n[talker] said 2\n"), "{o}");
    let out = h.cli(&["logs", "talker", "--since", "2", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["lines"][0]["text"], "[talker] said 2", "{v}");

    let mut cmd = crate::support::parachute();
    cmd.args(["logs", "talker", "--follow", "--home"]).arg(h.home());
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let guard = KillOnDrop(child.id());
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut readies = 0;
    let start = Instant::now();
    while readies < 2 {
        let left = Duration::from_secs(20).checked_sub(start.elapsed()).expect("two ready lines within 20 s");
        let line = rx.recv_timeout(left).expect("a followed line");
        if line.starts_with("[talker] ready pid=") {
            readies += 1;
        }
    }
    drop(guard);
    let _ = child.wait();
}

#[test]
fn a_foreign_responder_never_gets_the_token() {
    let h = TestHome::new();
    // A hub-instance.json naming a port where something else answers /health.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::fs::write(
        h.home().join("hub-instance.json"),
        format!(
            r#"{{"pid": 1, "port": {port}, "instance": "{}", "startedAt": "2025-01-01T00:00:00Z"}}"#,
            "a".repeat(32)
        ),
    )
    .unwrap();
    std::fs::write(h.home().join("operator.token"), "b".repeat(64)).unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).unwrap_or(0);
            log.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let body = format!(
                r#"{{"status":"ok","service":"parachute-hub","instance":"{}","pid":2,"port":{port},"version":"0","startedAt":"x","modules":{{"running":0,"total":0}}}}"#,
                "c".repeat(32)
            );
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    for args in [&["status"][..], &["stop", "x"]] {
        let out = h.cli(args);
        assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("something else answers") && err.contains("not sent"), "{err}");
    }
    let requests = seen.lock().unwrap().clone();
    assert!(!requests.is_empty());
    for r in &requests {
        assert!(r.starts_with("GET /health "), "{r}");
        assert!(!r.to_ascii_lowercase().contains("authorization"), "the token leaked: {r}");
        assert!(!r.contains(&"b".repeat(64)));
    }
}

#[test]
fn a_wedged_hub_times_out_instead_of_hanging() {
    let h = TestHome::new();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::fs::write(
        h.home().join("hub-instance.json"),
        format!(r#"{{"pid": 1, "port": {port}, "instance": "x", "startedAt": "2025-01-01T00:00:00Z"}}"#),
    )
    .unwrap();
    // Accepts (the kernel backlog does) but never answers.
    let t = Instant::now();
    let out = h.cli(&["status"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(t.elapsed() < Duration::from_secs(15));
    assert!(text(&out.stderr).contains("did not answer"), "{}", text(&out.stderr));
    drop(l);
}

#[test]
fn a_stale_instance_file_means_no_hub() {
    let h = TestHome::new();
    let port = free_port();
    std::fs::write(
        h.home().join("hub-instance.json"),
        format!(r#"{{"pid": 999999, "port": {port}, "instance": "x", "startedAt": "2025-01-01T00:00:00Z"}}"#),
    )
    .unwrap();
    let out = h.cli(&["logs", "x"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("pid 999999"), "{}", text(&out.stderr));
}

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: SIGKILL to a CLI process this test started.
        unsafe {
            libc::kill(self.0 as i32, libc::SIGKILL);
        }
    }
}
