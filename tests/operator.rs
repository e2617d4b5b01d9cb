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

/// `VmRSS` of `pid` in bytes, as the kernel's counters say (0 when it is gone).
fn vm_rss(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The listening TCP ports `ss -ltnp` shows for any of `pids`.
fn ss_ports(pids: &[u32]) -> Vec<u16> {
    let out = std::process::Command::new("ss").args(["-ltnpH"]).output().expect("ss runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut ports: Vec<u16> = text(&out.stdout)
        .lines()
        .filter(|l| {
            l.split("pid=").skip(1).any(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u32>().is_ok_and(|p| pids.contains(&p))
            })
        })
        .filter_map(|l| l.split_whitespace().nth(3)?.rsplit(':').next()?.parse().ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn module_json(h: &TestHome, short: &str) -> Value {
    let out = h.cli(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["modules"].as_array().unwrap().iter().find(|m| m["short"] == short).cloned().unwrap()
}

#[test]
fn status_reports_the_whole_tree_rss_and_the_ports_the_kernel_shows_for_it() {
    let h = TestHome::new();
    let (port, child_port) = (free_port(), free_port());
    let cp = child_port.to_string();
    // The module forks a child that leaves the process group (setsid), holds 50 MiB and
    // listens on a port services.json never mentions.
    h.fixture("alpha", port, &["--child-holds-mb", "50", "--child-port", &cp, "--child-setsid"]);
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("boot", |l| l.contains("boot done"));
    let holder_line = s.wait_out("the memory holder", |l| l.contains("holder pid="));
    let holder: u32 =
        holder_line.split("holder pid=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    s.track(holder);
    let pid = s.state(&h, "alpha")["pid"].as_u64().unwrap() as u32;
    crate::support::wait_for("the holder to listen", std::time::Duration::from_secs(20), || {
        (!ss_ports(&[holder]).is_empty()).then_some(())
    });
    assert_ne!(
        parachute_process::procfs::stat(holder).unwrap().pgid,
        pid,
        "the holder left the module's process group"
    );

    let m = module_json(&h, "alpha");
    let r = &m["resources"];
    let mut tree: Vec<u32> = vec![pid];
    tree.extend(crate::support::hub::descendants(pid));
    let reported_pids: Vec<u32> =
        r["pids"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u32).collect();
    assert!(reported_pids.contains(&pid) && reported_pids.contains(&holder), "{r}");
    let expected: u64 = tree.iter().map(|p| vm_rss(*p)).sum();
    assert!(expected >= 50 << 20, "the tree holds the 50 MiB: {expected}");
    let rss = r["rssBytes"].as_u64().unwrap();
    let diff = rss.abs_diff(expected) as f64 / expected as f64;
    assert!(diff <= 0.10, "reported {rss}, the tree's VmRSS sum is {expected} ({:.1} % off)", diff * 100.0);
    assert!(r["pssBytes"].as_u64().is_some_and(|p| p > 0 && p <= rss + (1 << 20)), "{r}");
    assert!(r["cpuTimeMs"].as_u64().is_some(), "{r}");
    assert!(m["restartsTotal"] == 0 && m["readyAt"].is_string(), "{m}");

    let kernel = ss_ports(&tree);
    assert_eq!(kernel, {
        let mut both = vec![port, child_port];
        both.sort_unstable();
        both
    });
    let ports: Vec<u16> = r["ports"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u16).collect();
    assert_eq!(ports, kernel, "{r}");

    // The table's PORTS column is the same list.
    let out = h.cli(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let header = table.lines().find(|l| l.starts_with("MODULE")).unwrap();
    let row = table.lines().find(|l| l.starts_with("alpha")).unwrap();
    let col = header.split_whitespace().position(|c| c == "PORTS").unwrap();
    let shown = row.split_whitespace().nth(col).unwrap();
    assert_eq!(shown, kernel.iter().map(u16::to_string).collect::<Vec<_>>().join(","), "{table}");
    assert!(row.split_whitespace().any(|c| c.ends_with('M') && c.starts_with('5')), "RSS about 5xM: {table}");
}

#[test]
fn a_busy_module_shows_its_cpu_percent() {
    let h = TestHome::new();
    h.fixture("busy", free_port(), &["--busy"]);
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("boot", |l| l.contains("boot done"));
    // The hub samples every few seconds; a percentage needs one sample at least a second old.
    let pct = crate::support::wait_for("a CPU percentage", std::time::Duration::from_secs(30), || {
        s.state(&h, "busy")["resources"]["cpuPercent"].as_f64()
    });
    assert!(pct >= 10.0, "one spinning thread shows as {pct} %");
}

#[test]
fn status_check_exits_0_only_while_every_module_runs_and_is_bound() {
    let h = TestHome::new();
    h.fixture("alpha", free_port(), &[]);
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("boot", |l| l.contains("boot done"));
    s.wait_state(&h, "alpha", "readiness", |v| v["readyAt"].is_string());
    let out = h.cli(&["status", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("ok: every module is running and bound"), "{}", text(&out.stdout));

    let out = h.cli(&["stop", "alpha"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = h.cli(&["status", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("✗ alpha: stopped"), "{}", text(&out.stderr));
    let out = h.cli(&["status", "--check", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["unhealthy"][0]["short"], "alpha", "{v}");

    // A module in services.json that the hub does not run is not healthy either.
    h.fixture("late", free_port(), &[]);
    assert!(h.cli(&["start", "alpha"]).status.success());
    let out = h.cli(&["status", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("✗ late: in services.json, not supervised"), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("alpha"), "{}", text(&out.stderr));
}

#[test]
fn a_module_listening_on_another_port_than_declared_fails_the_check() {
    let h = TestHome::new();
    let (declared, actual) = (free_port(), free_port());
    h.module(
        "astray",
        declared,
        &[crate::support::fixture_bin().to_str().unwrap().to_owned(), "--port".into(), actual.to_string()],
    );
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("boot", |l| l.contains("boot done"));
    let out = h.cli(&["status", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("✗ astray: running, but port {declared}")), "{err}");
    let m = module_json(&h, "astray");
    assert_eq!(m["resources"]["ports"], serde_json::json!([actual]), "{m}");
}

#[test]
fn status_watch_prints_plain_frames_off_a_terminal() {
    use std::io::BufRead;
    let h = TestHome::new();
    h.fixture("alpha", free_port(), &[]);
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("boot", |l| l.contains("boot done"));
    for json in [false, true] {
        let mut args = vec!["status", "--watch", "--interval", "0.2"];
        if json {
            args.push("--json");
        }
        let mut child = h
            .cli_command(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = Vec::new();
        let reader = std::io::BufReader::new(child.stdout.take().unwrap());
        let wanted = if json { 3 } else { 3 * 3 };
        for line in reader.lines().take(wanted) {
            lines.push(line.unwrap());
        }
        let _ = child.kill();
        let _ = child.wait();
        let all = lines.join("\n");
        assert!(!all.contains('\u{1b}'), "no terminal control off a terminal: {all:?}");
        if json {
            for l in &lines {
                let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                assert_eq!(v["modules"][0]["short"], "alpha", "{v}");
            }
        } else {
            assert!(lines.iter().filter(|l| l.starts_with("--- ")).count() >= 2, "{all}");
            assert!(lines.iter().filter(|l| l.starts_with("alpha ")).count() >= 2, "{all}");
        }
    }
}

/// One line per event at boot: a failed start is reported once, with its reason, by the
/// supervisor (before: the hub said it again, `[hub] nodep: crashed — …`); a module that
/// came up gets its `[hub] … running` line; the summary names the failed ones.
#[test]
fn a_module_that_fails_to_start_gets_one_boot_line() {
    let h = TestHome::new();
    h.module("nodep", free_port(), &["parachute-definitely-missing".into()]);
    h.fixture("mute", free_port(), &["--no-listen"]);
    h.fixture("alpha", free_port(), &[]);
    let s = Serve::ready(&h, free_port(), &[]);
    let summary = s.wait_err("boot", |l| l.contains("boot done"));
    assert!(summary.contains("1 running, 2 with problems (nodep, mute)"), "{summary}");
    // stdout and stderr are separate pipes: wait for both reports before counting.
    s.wait_out("nodep's report", |l| l.contains("[supervisor] nodep not started"));
    s.wait_out("mute's report", |l| l.contains("[supervisor] mute started"));
    let all = format!("{}\n{}", s.stderr(), s.stdout());
    let about = |name: &str, what: &str| all.lines().filter(|l| l.contains(name) && l.contains(what)).count();
    assert_eq!(about("nodep", "parachute-definitely-missing"), 1, "one line for the failed start:\n{all}");
    assert_eq!(about("mute", "not listening on port"), 1, "one line for the unbound port:\n{all}");
    assert_eq!(about("alpha", "running (pid"), 1, "{all}");
}
