//! What operators read: exit reasons, boot lines, `status` (issue 15), against a real
//! `parachute serve`.

use serde_json::Value;

use crate::support::free_port;
use crate::support::hub::{Serve, TestHome, alive};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_sigkilled_module_is_reported_as_killed_by_sigkill_in_its_log_and_in_status() {
    let h = TestHome::new();
    h.fixture("alpha", free_port(), &[]);
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("boot", |l| l.contains("boot done"));
    let pid = s.state(&h, "alpha")["pid"].as_u64().unwrap() as u32;

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let line = s.wait_out("the restart line", |l| l.contains("[supervisor] alpha killed by"));
    assert!(line.contains("alpha killed by SIGKILL (signal 9); restart 1/"), "{line}");
    assert!(!s.stdout().contains("code=?"), "{}", s.stdout());
    let state = s.wait_state(&h, "alpha", "the restart", |v| {
        v["status"] == "running" && v["pid"].as_u64().is_some_and(|p| p as u32 != pid)
    });
    assert!(!alive(pid));
    assert_eq!(state["lastExitSignal"], 9, "{state}");
    assert!(state["lastExitCode"].is_null(), "{state}");

    let out = h.cli(&["logs", "alpha"]);
    assert!(text(&out.stdout).contains("alpha killed by SIGKILL (signal 9)"), "{}", text(&out.stdout));
    let out = h.cli(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let row = table.lines().find(|l| l.starts_with("alpha")).unwrap();
    assert!(row.contains("running") && row.contains("last child killed by SIGKILL (signal 9)"), "{table}");
    let out = h.cli(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let alpha = v["modules"].as_array().unwrap().iter().find(|m| m["short"] == "alpha").unwrap();
    assert_eq!(alpha["lastExitSignal"], 9, "{v}");
}

#[test]
fn a_failed_boot_start_has_no_doubled_prefix() {
    let h = TestHome::new();
    h.module("nodep", free_port(), &["parachute-definitely-missing".into()]);
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("boot", |l| l.contains("boot done"));
    let all = format!("{}\n{}", s.stderr(), s.stdout());
    assert!(!all.contains("[hub] [supervisor]"), "{all}");
}
