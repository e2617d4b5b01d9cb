//! `parachute serve`, run for real: boot, the control API, signals, shutdown, reaping.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::hub::{Proc, Serve, TestHome, alive, descendants, http_stream};
use crate::support::{fixture_bin, free_port, parachute_bin, wait_for};

fn fixture() -> String {
    fixture_bin().to_str().unwrap().to_owned()
}

#[test]
fn boot_logs_real_states_and_health_matches_the_instance_file() {
    let h = TestHome::new();
    let (ok, crashy) = (free_port(), free_port());
    h.fixture("ok-mod", ok, &[]);
    h.fixture("crashy", crashy, &["--exit-after-ms", "0", "--exit-code", "3", "--no-listen"]);
    h.module("missing", free_port(), &["/nonexistent/parachute-nothing".into()]);
    h.row(serde_json::json!({"name": "cli-only", "port": free_port(), "paths": ["/c"], "health": "/h", "version": "1"}));
    let mut s = Serve::ready(&h, free_port(), &[]);

    let line = s.wait_err("ok-mod's boot line", |l| l.starts_with("[hub] ok-mod: "));
    assert!(line.starts_with("[hub] ok-mod: running (pid "), "{line}");
    // A failed module is reported once, by the supervisor, with its reason (R29); boot
    // says nothing more about it than its name in the summary.
    let line = s.wait_out("missing's start failure", |l| l.starts_with("[supervisor] missing "));
    assert!(line.contains("not started: /nonexistent/parachute-nothing is required"), "{line}");
    let line = s.wait_out("crashy's exit", |l| l.starts_with("[supervisor] crashy "));
    assert!(line.contains("exited (code=3)"), "R15: {line}");
    let line = s.wait_err("cli-only's boot line", |l| l.contains("cli-only"));
    assert!(line.contains("skipped"), "{line}");
    let summary = s.wait_err("the summary", |l| l.contains("boot done"));
    assert!(summary.contains("2 with problems (crashy, missing)"), "{summary}");
    assert!(!s.stderr().contains("[hub] missing") && !s.stderr().contains("[hub] crashy"), "{}", s.stderr());

    let inst = h.instance().expect("hub-instance.json is written");
    let (st, body) = s.http("GET", "/health", None);
    assert_eq!(st, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["instance"], inst["instance"]);
    assert_eq!(health["instance"].as_str().unwrap().len(), 32);
    assert_eq!(health["pid"].as_u64(), Some(u64::from(s.pid())));
    assert_eq!(inst["port"].as_u64(), Some(u64::from(s.port)));
    assert!(health["modules"]["running"].as_u64().unwrap() >= 1);
    assert_eq!(health["modules"]["total"].as_u64(), Some(3), "{body}");
    let crashy_state = s.wait_state(&h, "crashy", "crashy to give up", |v| v["status"] == "crashed");
    assert!(crashy_state["restartsInWindow"].as_u64().unwrap() >= 1, "{crashy_state}");

    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(15)).code(), Some(0), "{}", s.stderr());
    assert!(h.instance().is_none(), "hub-instance.json is removed on a clean exit");
}

#[test]
fn the_api_requires_the_token_and_answers_errors_as_json() {
    let h = TestHome::new();
    h.fixture("alpha", free_port(), &[]);
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("boot", |l| l.contains("boot done"));
    let token = h.token();
    assert_eq!(token.len(), 64);
    let mode = std::fs::metadata(h.home().join("operator.token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let err = |st: u16, body: &str, code: u16, error: &str| {
        assert_eq!(st, code, "{body}");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v["error"], error, "{body}");
        assert!(v["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
    };
    for (method, path) in [
        ("GET", "/api/modules"),
        ("GET", "/api/modules/alpha"),
        ("POST", "/api/modules/alpha/stop"),
        ("GET", "/api/modules/alpha/logs"),
    ] {
        let (st, body) = s.http(method, path, None);
        err(st, &body, 401, "unauthenticated");
        let (st, body) = s.http(method, path, Some(&"0".repeat(64)));
        err(st, &body, 401, "unauthenticated");
    }
    assert_eq!(s.http("GET", "/health", None).0, 200, "health is open");
    let (st, body) = s.http("GET", "/api/modules", Some(&token));
    assert_eq!(st, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["modules"][0]["short"], "alpha");
    assert_eq!(list["installed"][0]["short"], "alpha");

    // Method before auth, then unknown routes and modules.
    let (st, body) = s.http("GET", "/api/modules/alpha/start", None);
    err(st, &body, 405, "method_not_allowed");
    let (st, body) = s.http("DELETE", "/health", None);
    err(st, &body, 405, "method_not_allowed");
    let (st, body) = s.http("GET", "/nope", Some(&token));
    err(st, &body, 404, "not_found");
    let (st, body) = s.http("POST", "/api/modules/ghost/start", Some(&token));
    err(st, &body, 400, "not_installed");
    let (st, body) = s.http("POST", "/api/modules/ghost/stop", Some(&token));
    err(st, &body, 404, "not_supervised");
    let (st, body) = s.http("GET", "/api/modules/ghost", Some(&token));
    err(st, &body, 404, "not_supervised");
    let (st, body) = s.http("GET", "/api/modules/alpha/logs?since=x", Some(&token));
    err(st, &body, 400, "bad_request");
    // A hostile (percent-encoded) name is just an unknown module.
    let (st, body) = s.http("POST", "/api/modules/a%0Ab%22%24%25/start", Some(&token));
    err(st, &body, 400, "bad_request");
    let (st, body) = s.http("POST", "/api/modules/%24HOME%25/start", Some(&token));
    err(st, &body, 400, "not_installed");

    // A row added after boot is in services.json but not supervised: restart says so.
    let late = free_port();
    h.fixture("late", late, &[]);
    let (st, body) = s.http("POST", "/api/modules/late/restart", Some(&token));
    err(st, &body, 404, "not_supervised");
    let (st, body) = s.http("POST", "/api/modules/late/start", Some(&token));
    assert_eq!(st, 200, "any services.json module can be started (R20): {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["short"], "late");
    assert_eq!(v["state"]["status"], "running", "{body}");
    s.track(v["state"]["pid"].as_u64().unwrap() as u32);
}

#[test]
fn crash_restart_stop_and_start_over_the_api() {
    let h = TestHome::new();
    let port = free_port();
    // Crashes 300 ms after binding: the supervisor respawns it.
    h.fixture("bouncy", port, &["--exit-after-ms", "300", "--exit-code", "5"]);
    let s = Serve::ready(&h, free_port(), &[]);
    let token = h.token();
    let first = s.wait_state(&h, "bouncy", "a first pid", |v| v["pid"].is_u64());
    let crashed =
        s.wait_state(&h, "bouncy", "a counted crash", |v| v["restartsInWindow"].as_u64() >= Some(1));
    assert_eq!(crashed["lastExitCode"], 5, "{crashed}");
    s.wait_state(&h, "bouncy", "a respawn with another pid", |v| {
        v["pid"].is_u64() && v["pid"] != first["pid"]
    });

    let (st, body) = s.http("POST", "/api/modules/bouncy/stop", Some(&token));
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"]["status"], "stopped", "{body}");
    assert!(v["state"]["pid"].is_null(), "{body}");
    for pid in s.seen_pids() {
        assert!(!alive(pid), "pid {pid} survived the stop");
    }
    let (st, body) = s.http("POST", "/api/modules/bouncy/start", Some(&token));
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"]["status"], "running", "{body}");
    let pid = v["state"]["pid"].as_u64().unwrap() as u32;
    s.track(pid);
    assert!(alive(pid));
    let (st, body) = s.http("POST", "/api/modules/bouncy/restart", Some(&token));
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let new_pid = v["state"]["pid"].as_u64().unwrap() as u32;
    s.track(new_pid);
    assert_ne!(new_pid, pid);
}

#[test]
fn a_squatter_is_surfaced_with_pid_and_command_line() {
    let h = TestHome::new();
    let port = free_port();
    let squatter = Proc::fixture(&["--port", &port.to_string(), "--line-text", "squatting"]);
    h.fixture("victim", port, &[]);
    let s = Serve::ready(&h, free_port(), &[]);
    let line = s.wait_out("victim's start failure", |l| l.starts_with("[supervisor] victim "));
    assert!(line.contains("not started: port ") && line.contains("outside the supervisor"), "{line}");
    let st = s.state(&h, "victim");
    let e = &st["startError"];
    assert_eq!(e["error_type"], "port_squatter", "{st}");
    assert_eq!(e["holder_pid"].as_u64(), Some(u64::from(squatter.pid())), "{st}");
    assert!(e["holder_cmdline"].as_str().unwrap().contains("parachute-fixture"), "{st}");
    assert!(alive(squatter.pid()), "the squatter is not ours: it must be left alone");
}

#[test]
fn a_log_follow_keeps_streaming_across_a_crash() {
    let h = TestHome::new();
    h.fixture("phoenix", free_port(), &["--lines", "2", "--line-text", "hello", "--exit-after-ms", "400"]);
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_state(&h, "phoenix", "a pid", |v| v["pid"].is_u64());
    let mut r = http_stream(s.port, "/api/modules/phoenix/logs?follow=1&since=0", &h.token());
    let mut pids = std::collections::BTreeSet::new();
    let mut last_seq: Option<u64> = None;
    let start = Instant::now();
    while pids.len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(20), "saw pids {pids:?}");
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut r, &mut line).unwrap();
        assert!(n > 0, "the stream ended early");
        // Chunk-size lines of the chunked encoding sit between the events.
        if !line.starts_with('{') {
            continue;
        }
        let ev: Value = serde_json::from_str(line.trim()).unwrap();
        assert!(ev["missed"].is_null(), "nothing is evicted from a small buffer: {ev}");
        let seq = ev["seq"].as_u64().expect("a line event");
        assert!(last_seq.is_none_or(|l| seq > l), "sequence numbers increase");
        last_seq = Some(seq);
        if let Some(rest) = ev["text"].as_str().unwrap().strip_prefix("[phoenix] ready pid=") {
            pids.insert(rest.split(' ').next().unwrap().to_owned());
        }
    }
    // Non-follow form: JSON with nextSeq.
    let (st, body) = s.http("GET", "/api/modules/phoenix/logs?since=1", Some(&h.token()));
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["lines"][0]["seq"], 1, "{body}");
    assert_eq!(v["lines"][0]["text"], "[phoenix] hello 1", "{body}");
    assert!(v["nextSeq"].as_u64().unwrap() > 2);
    assert_eq!(v["missed"], 0);
}

#[test]
fn a_held_hub_port_exits_naming_the_holder_and_starts_nothing() {
    let h = TestHome::new();
    let hub_port = free_port();
    let holder = Proc::fixture(&["--port", &hub_port.to_string()]);
    let pidfile = h.scratch("module.pid");
    h.fixture("never", free_port(), &["--pidfile", pidfile.to_str().unwrap()]);
    let mut s = Serve::start(&h, hub_port, &[]);
    let st = s.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(7), "{}", s.stderr());
    let err = s.stderr();
    assert!(err.contains(&format!("pid {}", holder.pid())), "{err}");
    assert!(err.contains("parachute-fixture"), "{err}");
    assert!(!pidfile.exists(), "no module may be spawned");
    assert!(h.instance().is_none());
}

#[test]
fn shutdown_stops_every_process_and_kills_the_stubborn() {
    let h = TestHome::new();
    h.fixture("plain", free_port(), &[]);
    h.fixture("stubborn", free_port(), &["--ignore-sigterm"]);
    h.fixture("wrapped", free_port(), &["--grandchild-holds-port"]);
    let mut s = Serve::ready(&h, free_port(), &["--stop-timeout", "1"]);
    s.wait_err("boot", |l| l.contains("boot done"));
    for m in ["plain", "stubborn", "wrapped"] {
        s.wait_state(&h, m, "a pid", |v| v["pid"].is_u64());
    }
    let g = s.wait_out("the grandchild pid", |l| l.starts_with("[wrapped] grandchild pid="));
    s.track(g.rsplit('=').next().unwrap().parse().unwrap());
    let mut pids = s.seen_pids();
    pids.extend(descendants(s.pid()));
    assert!(pids.len() >= 4, "{pids:?}");
    s.signal(libc::SIGTERM);
    let st = s.wait_exit(Duration::from_secs(15));
    assert_eq!(st.code(), Some(8), "a SIGKILL was needed, so the exit is unclean:\n{}", s.stderr());
    assert!(s.stderr().contains("stubborn"), "{}", s.stderr());
    for pid in pids {
        assert!(!alive(pid), "pid {pid} outlived the hub");
    }
}

#[test]
fn a_second_signal_kills_at_once() {
    let h = TestHome::new();
    h.fixture("stubborn", free_port(), &["--ignore-sigterm"]);
    let mut s = Serve::ready(&h, free_port(), &["--stop-timeout", "60"]);
    let pid = s.wait_state(&h, "stubborn", "a pid", |v| v["pid"].is_u64())["pid"].as_u64().unwrap() as u32;
    s.signal(libc::SIGTERM);
    s.wait_err("the stopping line", |l| l.contains("stopping 1 module"));
    let t = Instant::now();
    s.signal(libc::SIGINT);
    assert_eq!(s.wait_exit(Duration::from_secs(10)).code(), Some(8));
    assert!(t.elapsed() < Duration::from_secs(5), "the second signal must not wait for the deadline");
    wait_for("the stubborn module to die", Duration::from_secs(5), || (!alive(pid)).then_some(()));
}

#[test]
fn sigterm_during_boot_leaves_no_orphan() {
    let h = TestHome::new();
    let pidfile = h.scratch("slow.pid");
    // Writes its pidfile at once, binds only after 3 s: boot is inside the readiness wait.
    h.fixture("slow", free_port(), &["--listen-delay-ms", "3000", "--pidfile", pidfile.to_str().unwrap()]);
    let mut s = Serve::ready(&h, free_port(), &[]);
    let pid: u32 = wait_for("the slow module's pidfile", Duration::from_secs(10), || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    s.track(pid);
    assert!(!s.stderr().contains("boot done"), "the SIGTERM must land during boot");
    s.signal(libc::SIGTERM);
    let st = s.wait_exit(Duration::from_secs(15));
    assert_eq!(st.code(), Some(0), "{}", s.stderr());
    assert!(!alive(pid), "the module being booted outlived the hub");
}

#[test]
fn leftovers_of_a_killed_hub_are_stopped_at_the_next_boot() {
    let h = TestHome::new();
    let port = free_port();
    h.fixture("keeper", port, &[]);
    let mut s = Serve::ready(&h, free_port(), &[]);
    let pid = s.wait_state(&h, "keeper", "a pid", |v| v["pid"].is_u64())["pid"].as_u64().unwrap() as u32;
    // SIGKILL the hub: the module dies by PDEATHSIG; the state file still names it.
    s.signal(libc::SIGKILL);
    s.wait_exit(Duration::from_secs(5));
    wait_for("the module to die with the hub", Duration::from_secs(5), || (!alive(pid)).then_some(()));
    let s2 = Serve::ready(&h, free_port(), &[]);
    let line = s2.wait_err("keeper's boot line", |l| l.starts_with("[hub] keeper: "));
    assert!(line.contains("running"), "the port is free again, so it starts: {line}");
}

/// PID 1 in a fresh PID namespace: orphans reparented to the hub are reaped, and SIGTERM
/// ends it with exit code 0.
#[test]
fn as_pid_1_orphans_are_reaped_and_sigterm_exits_cleanly() {
    let unshare_works = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !crate::support::needs_root_feature("as_pid_1", unshare_works, "`unshare --pid --fork --mount-proc`") {
        return;
    }
    let h = TestHome::new();
    let port = free_port();
    // The inner shell backgrounds a sleep and exits: the sleep is orphaned to the nearest
    // subreaper (the hub, PID 1 of the namespace), then exits and must be reaped by it.
    let script = format!("sh -c 'sleep 1 & echo orphan-started'; exec {} --port {port}", fixture());
    h.module("orphaner", port, &["sh".into(), "-c".into(), script]);
    let hub_port = free_port();
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"]).arg(parachute_bin());
    cmd.arg("serve").arg("--home").arg(h.home()).arg("--port").arg(hub_port.to_string());
    let mut s = Serve::spawn(cmd, &h, hub_port);
    s.wait_err("the listening line", |l| l.contains("[hub] listening on"));
    let line = s.wait_err("the hub's pid line", |l| l.contains("[hub] listening on"));
    assert!(line.contains("(pid 1,"), "serve is PID 1 in its namespace: {line}");
    // The host-side pid of the namespace's PID 1.
    let hub = wait_for("the hub inside the namespace", Duration::from_secs(5), || {
        parachute_process::procfs::children_of(s.pid()).into_iter().next()
    });
    s.wait_out("the orphan's start", |l| l.contains("orphan-started"));
    let sleeper = wait_for("the orphan reparented to the hub", Duration::from_secs(5), || {
        parachute_process::procfs::children_of(hub)
            .into_iter()
            .find(|&p| parachute_process::procfs::cmdline(p).is_some_and(|c| c.starts_with("sleep")))
    });
    // It exits after 1 s; the hub must reap it (a zombie would stay its child with state Z).
    wait_for("the orphan to be reaped", Duration::from_secs(10), || {
        (parachute_process::procfs::stat(sleeper).is_none()).then_some(())
    });
    let zombies: Vec<u32> = descendants(hub)
        .into_iter()
        .filter(|&p| parachute_process::procfs::stat(p).is_some_and(|st| st.state == 'Z'))
        .collect();
    assert!(zombies.is_empty(), "zombies left in the namespace: {zombies:?}");
    s.wait_err("boot", |l| l.contains("boot done"));
    // SAFETY: SIGTERM to the namespace's init, which this test started.
    unsafe {
        libc::kill(hub as i32, libc::SIGTERM);
    }
    let t = Instant::now();
    let st = s.wait_exit(Duration::from_secs(15));
    assert_eq!(st.code(), Some(0), "{}", s.stderr());
    assert!(t.elapsed() < Duration::from_secs(8), "took {:?}", t.elapsed());
}

/// `serve --check-handover FD` (issue 17's dry run), with the document on descriptor 9.
fn check_handover(doc: &[u8]) -> std::process::Output {
    use std::io::{Seek, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(doc).unwrap();
    file.rewind().unwrap();
    let raw = file.as_raw_fd();
    let mut cmd = crate::support::parachute();
    cmd.args(["serve", "--check-handover", "9"]);
    // SAFETY: dup2 only (async-signal-safe); the copy on 9 is not close-on-exec.
    unsafe {
        cmd.pre_exec(
            move || if libc::dup2(raw, 9) < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) },
        );
    }
    cmd.output().unwrap()
}

/// A hand-over memory file's bytes: its JSON part's length (8 bytes, little-endian), the JSON
/// part, and a log part of one 4-byte line.
fn handover_doc(version: u32) -> Vec<u8> {
    let json = serde_json::to_vec(&serde_json::json!({
        "version": version, "hubPid": std::process::id(), "bootId": "b", "instance": "n",
        "startedAt": "2026-12-04T17:00:00Z", "generation": 0,
        "listenerFd": 3, "port": 1939, "fromBuild": "old",
        "modules": [{
            "short": "vault", "state": {"short": "vault", "status": "running", "restartsInWindow": 0},
            "request": null, "leader": {"pid": 1, "start_ticks": 1}, "stdoutFd": 4, "stderrFd": 5,
            "ringFirstSeq": 7, "ringLens": [4], "spawnSeq": 1, "respawnInMs": null, "uptimeMs": 5
        }]
    }))
    .unwrap();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(b"abc\n");
    out
}

#[test]
fn check_handover_accepts_its_format_and_refuses_others_with_the_reason() {
    let ok = check_handover(&handover_doc(1));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        out.contains(&format!("can take over hub {}", std::process::id())) && out.contains("1 module(s)"),
        "{out}"
    );

    let newer = check_handover(&handover_doc(99));
    assert_eq!(newer.status.code(), Some(1));
    let err = String::from_utf8_lossy(&newer.stderr);
    assert!(err.contains("format version 99"), "{err}");

    let bad = b"{\"version\": 1, \"modules\": 3}";
    let mut garbage = (bad.len() as u64).to_le_bytes().to_vec();
    garbage.extend_from_slice(bad);
    let garbage = check_handover(&garbage);
    assert_eq!(garbage.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&garbage.stderr).contains("malformed"));

    // Nothing on the descriptor: a reason, not a panic.
    let none = crate::support::parachute().args(["serve", "--check-handover", "9"]).output().unwrap();
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("cannot read the hand-over document"));
}

/// A copy of `bin` whose GNU build id differs in its first byte (a "rebuilt" binary),
/// renamed over `bin` as a package manager does. Returns the new build id.
fn rebuild_in_place(bin: &std::path::Path) -> String {
    let id = parachute::build_id::of_file(bin).expect("a build id");
    let raw: Vec<u8> =
        (0..id.len()).step_by(2).map(|i| u8::from_str_radix(&id[i..i + 2], 16).unwrap()).collect();
    let mut bytes = std::fs::read(bin).unwrap();
    let at = bytes.windows(raw.len()).position(|w| w == raw).unwrap();
    bytes[at] ^= 0xff;
    crate::upgrade::replace_binary(bin, &bytes);
    parachute::build_id::of_file(bin).unwrap()
}

/// `parachute serve` for `h` run from a copy of the binary in `<scratch>/bin` (0755), which
/// an upgrade can replace: (the copy, the command, its API port).
fn hub_from_copy(h: &TestHome) -> (std::path::PathBuf, Command, u16) {
    let dir = h.scratch("bin");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Written by a child process: see `upgrade::write_executable` (ETXTBSY).
    let bin = crate::upgrade::binary_copy(&dir);
    let port = free_port();
    let mut cmd = crate::support::isolated(&bin);
    cmd.arg("serve").arg("--home").arg(h.home()).arg("--port").arg(port.to_string());
    (bin, cmd, port)
}

/// Issue 17: a module's child was forked by one thread of the hub, and an exec ends every
/// thread but the caller's; with a spawner thread of its own in each image, a second
/// upgrade ended the thread the first image's children were forked by, and their
/// `PR_SET_PDEATHSIG` killed them. Two upgrades in a row keep every module, and a broken
/// binary is refused with its own words while the hub carries on.
#[test]
fn modules_survive_upgrades_in_a_row_and_a_broken_binary_is_refused() {
    let h = TestHome::new();
    h.fixture("tick", free_port(), &["--tick-ms", "10"]);
    h.fixture("quiet", free_port(), &[]);
    // The hub runs from a copy of its own that can be replaced.
    let (bin, cmd, port) = hub_from_copy(&h);
    let s = Serve::spawn(cmd, &h, port);
    s.wait_err("boot", |l| l.contains("boot done: 2 running"));
    let health = |s: &Serve| -> Value { serde_json::from_str(&s.http("GET", "/health", None).1).unwrap() };
    let pids = |s: &Serve| (s.state(&h, "tick")["pid"].clone(), s.state(&h, "quiet")["pid"].clone());
    let before = pids(&s);
    assert!(before.0.is_u64() && before.1.is_u64(), "{before:?}");

    // What the hub holds besides sockets (pipes, files, the memfd while it lasts).
    let files = |pid: u32| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|t| t.to_string_lossy().into_owned())
            .filter(|t| !t.starts_with("socket:") && !t.starts_with("anon_inode:"))
            .map(|t| if t.starts_with("pipe:") { "pipe".to_owned() } else { t })
            .collect();
        v.sort();
        v
    };
    // A follower of the tick module's log, across both upgrades.
    let mut follower = h
        .cli_command(&["logs", "tick", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let followed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    {
        use std::io::BufRead;
        let (out, followed) = (follower.stdout.take().unwrap(), std::sync::Arc::clone(&followed));
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("[tick] tick ").and_then(|n| n.trim().parse().ok()) {
                    followed.lock().unwrap().push(n);
                }
            }
        });
    }
    let mut held = Vec::new();
    for generation in 1..=2u64 {
        let build = rebuild_in_place(&bin);
        let (st, body) = s.http("POST", "/api/hub/upgrade", Some(&h.token()));
        assert_eq!(st, 200, "{body}");
        let accepted: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(accepted["status"], "handing_over", "{accepted}");
        assert_eq!(accepted["toBuild"], build.as_str(), "{accepted}");
        assert_eq!(accepted["generation"], generation - 1, "{accepted}");
        let now = wait_for("the new image's /health", Duration::from_secs(20), || {
            let v = health(&s);
            (v["generation"] == generation).then_some(v)
        });
        assert_eq!(now["buildId"], build.as_str(), "{now}");
        assert_eq!(now["pid"], s.pid(), "{now}");
        assert_eq!(std::fs::read_link(format!("/proc/{}/exe", s.pid())).unwrap(), bin);
        assert_eq!(pids(&s), before, "upgrade {generation} restarted a module:\n{}", s.stderr());
        // The new image writes the state file as it adopts, and its writer holds the file
        // (and a temporary one) open for the moment of each write: compare the hub's
        // descriptors once two looks in a row agree.
        let mut seen = files(s.pid());
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(25));
            let again = files(s.pid());
            if again == seen {
                break;
            }
            seen = again;
        }
        held.push(seen);
    }
    assert_eq!(held[0], held[1], "an upgrade leaves no descriptor behind");
    assert!(held[1].iter().filter(|f| *f == "pipe").count() >= 4, "both modules' pipes: {:?}", held[1]);
    assert!(held[1].iter().any(|f| f.ends_with("serve.lock")), "the lock: {:?}", held[1]);
    assert!(!held[1].iter().any(|f| f.contains("parachute-handover")), "{:?}", held[1]);

    // The home's locks crossed both execs: a second hub on this home is still refused.
    let second = crate::support::parachute()
        .arg("serve")
        .arg("--home")
        .arg(h.home())
        .arg("--port")
        .arg(free_port().to_string())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1), "{}", String::from_utf8_lossy(&second.stderr));
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains(&format!("pid {}", s.pid())), "{said}");

    crate::upgrade::replace_binary(
        &bin,
        b"#!/bin/sh\necho 'cannot start: libfoo.so missing' >&2\nexit 127\n",
    );
    let (st, body) = s.http("POST", "/api/hub/upgrade", Some(&h.token()));
    assert_eq!(st, 422, "{body}");
    let refused: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refused["error"], "upgrade_binary_unusable", "{refused}");
    assert!(refused["error_description"].as_str().unwrap().contains("libfoo.so missing"), "{refused}");
    assert_eq!(health(&s)["generation"], 2);
    assert_eq!(pids(&s), before);

    // The follower went on through both upgrades: every tick once, in order, to a tick
    // printed after the second.
    let (st, body) = s.http("GET", "/api/modules/tick/logs", Some(&h.token()));
    assert_eq!(st, 200, "{body}");
    let newest: u64 = serde_json::from_str::<Value>(&body).unwrap()["lines"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find_map(|l| l["text"].as_str()?.strip_prefix("[tick] tick ")?.trim().parse().ok())
        .unwrap();
    wait_for("the follower to reach the newest tick", Duration::from_secs(20), || {
        followed.lock().unwrap().last().is_some_and(|&n| n >= newest).then_some(())
    });
    let _ = follower.kill();
    let _ = follower.wait();
    let seen = followed.lock().unwrap().clone();
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "the follower missed or repeated a line: {seen:?}");

    // Not a line of the tick sequence was lost across both hand-overs.
    let (st, body) = s.http("GET", "/api/modules/tick/logs", Some(&h.token()));
    assert_eq!(st, 200, "{body}");
    let logs: Value = serde_json::from_str(&body).unwrap();
    let ticks: Vec<u64> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["text"].as_str()?.strip_prefix("[tick] tick ")?.trim().parse().ok())
        .collect();
    assert!(ticks.len() > 10, "{logs}");
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "a gap in the sequence: {ticks:?}");
    let seqs: Vec<u64> =
        logs["lines"].as_array().unwrap().iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "log sequence numbers carried over: {seqs:?}");
}

/// Issue 17: a stop signal that arrives while the hub hands over (here held open by a
/// client that connected and has not sent its request yet) is honoured — the upgrade is
/// abandoned and the hub stops cleanly — instead of being lost with the old image's
/// handlers, which left a hub running that its manager had been told to stop.
#[test]
fn a_stop_signal_during_the_hand_over_stops_the_hub() {
    let h = TestHome::new();
    h.fixture("quiet", free_port(), &[]);
    let (bin, cmd, port) = hub_from_copy(&h);
    let mut s = Serve::spawn(cmd, &h, port);
    s.wait_err("boot", |l| l.contains("boot done: 1 running"));
    let module = s.state(&h, "quiet")["pid"].as_u64().unwrap() as u32;
    rebuild_in_place(&bin);
    // Accepted before the upgrade's own request (the accept loop takes connections in
    // order), so stopping the API waits for it.
    let _idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (st, body) = s.http("POST", "/api/hub/upgrade", Some(&h.token()));
    assert_eq!(st, 200, "{body}");
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}\n{}", s.stderr());
    assert!(s.stderr().contains("in-place upgrade abandoned: SIGTERM"), "{}", s.stderr());
    assert!(!alive(module), "the module stopped with the hub");
}
