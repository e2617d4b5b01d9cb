//! The in-place upgrade (issue 17), end to end: a hub started from a copy of `parachute`,
//! three fixture modules (one printing `tick <n>` every 10 ms), the copy replaced by a
//! rebuilt binary (one byte of its GNU build id changed, as a package upgrade renames a new
//! build over the old path), then `parachute upgrade --in-place` or
//! `parachute postinstall --upgrade`. Across it: the hub's pid stays, `/proc/<pid>/exe` is
//! the new file, every module pid stays, the tick sequence in `parachute logs` has no gap,
//! a client polling `/health` every 5 ms is never refused, and `/health` reports the new
//! build as generation 1. Run three ways: plain `serve`, under the private systemd sandbox's
//! user unit (MainPID and NRestarts unchanged), and as PID 1 of a PID namespace. A broken new
//! binary leaves the old hub exactly as it was and the command exits non-zero with the reason.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::support::hub::{Serve, TestHome, http, wait_output};
use crate::support::sandbox::Sandbox;
use crate::support::{free_port, json, parachute_bin, show, wait_for};

#[test]
fn upgrade_needs_in_place_and_a_running_hub() {
    let h = TestHome::new();
    h.fixture("alpha", free_port(), &[]);
    let out = h.cli(&["upgrade"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--in-place"), "{}", show(&out));

    // No hub: exit 3, as every verb that talks to one; --json says so in one object.
    let out = h.cli(&["upgrade", "--in-place"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no hub is running"), "{}", show(&out));
    let out = h.cli(&["upgrade", "--in-place", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let v = json(&out);
    assert_eq!((v["ok"].as_bool(), v["exit_code"].as_u64()), (Some(false), Some(3)), "{v:#}");
    assert!(v["error_description"].as_str().unwrap().contains("no hub is running"), "{v:#}");
}

/// The module that prints its sequence number; two quiet ones beside it.
const TICKER: &str = "ticker";
const MODULES: [&str; 3] = [TICKER, "alpha", "beta"];

fn three_modules(h: &TestHome) {
    h.fixture(TICKER, free_port(), &["--tick-ms", "10"]);
    h.fixture("alpha", free_port(), &[]);
    h.fixture("beta", free_port(), &[]);
}

/// Writes `bytes` to `path` (mode 0755) from a child process, never from this one: a file
/// this multi-threaded test process had open for writing can be inherited by a child that
/// another test thread forks at that moment, and until that child execs, executing the file
/// fails with ETXTBSY (the hub's dry run and exec of it included).
pub(crate) fn write_executable(path: &Path, bytes: &[u8]) {
    let mut c = Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 0755 \"$1\"", "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(bytes).unwrap();
    assert!(c.wait().unwrap().success(), "writing {}", path.display());
}

/// A copy of this build's `parachute` at `dir/parachute` (a copy, not a link: the upgrade
/// replaces that name and nothing else).
pub(crate) fn binary_copy(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("parachute");
    write_executable(&p, &std::fs::read(parachute_bin()).unwrap());
    p
}

/// Puts `bytes` at `path` the way a package manager does: written beside it, then renamed
/// over it (the running image keeps the old inode).
pub(crate) fn replace_binary(path: &Path, bytes: &[u8]) {
    let staged = path.with_file_name(".parachute.new");
    write_executable(&staged, bytes);
    std::fs::rename(&staged, path).unwrap();
}

/// Where this build's GNU build id lies in its file, and how long it is: the one ELF note
/// named `GNU` of type 3 (`NT_GNU_BUILD_ID`), found by its header bytes (namesz 4, descsz,
/// type 3, "GNU\0"), independently of the hub's own reader.
fn build_id_at(bytes: &[u8]) -> (usize, usize) {
    let at = bytes
        .windows(16)
        .position(|w| w[..4] == [4, 0, 0, 0] && w[8..] == [3, 0, 0, 0, b'G', b'N', b'U', 0])
        .expect("parachute has a GNU build id note");
    let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    (at + 16, len)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// This build's GNU build id.
fn this_build() -> String {
    let bytes = std::fs::read(parachute_bin()).unwrap();
    let (at, len) = build_id_at(&bytes);
    hex(&bytes[at..at + len])
}

/// This build with one byte of its GNU build id changed, and that new id: "a rebuilt
/// binary" that runs exactly as this one does.
fn rebuilt() -> (Vec<u8>, String) {
    let mut bytes = std::fs::read(parachute_bin()).unwrap();
    let (at, len) = build_id_at(&bytes);
    bytes[at] ^= 0xff;
    let id = hex(&bytes[at..at + len]);
    (bytes, id)
}

fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap().to_string_lossy().into_owned()
}

fn health(port: u16) -> Value {
    let (code, body) = http(port, "GET", "/health", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Every module's pid, once all three run (pids as the hub sees them: inside a PID
/// namespace, the namespace's).
fn module_pids(port: u16, token: &str) -> BTreeMap<String, u64> {
    wait_for("all three modules running", Duration::from_secs(30), || {
        let (code, body) = http(port, "GET", "/api/modules", Some(token));
        let v: Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
        let pids: BTreeMap<String, u64> = v["modules"]
            .as_array()?
            .iter()
            .filter(|m| m["status"] == "running")
            .filter_map(|m| Some((m["short"].as_str()?.to_owned(), m["pid"].as_u64()?)))
            .collect();
        (pids.len() == MODULES.len()).then_some(pids)
    })
}

/// What a client polling `GET /health` every 5 ms saw: each distinct (pid, buildId,
/// generation) in order, and every failed attempt.
#[derive(Debug, Default)]
struct Polls {
    answers: usize,
    refused: usize,
    failures: Vec<String>,
    seen: Vec<(u64, String, u64)>,
}

struct HealthPoller {
    stop: Arc<AtomicBool>,
    polls: Arc<Mutex<Polls>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthPoller {
    fn start(port: u16) -> HealthPoller {
        let (stop, polls) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Polls::default())));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&polls));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let r = poll_once(port);
                let mut p = p.lock().unwrap();
                match r {
                    Ok(key) => {
                        p.answers += 1;
                        if p.seen.last() != Some(&key) {
                            p.seen.push(key);
                        }
                    }
                    Err((refused, why)) => {
                        p.refused += usize::from(refused);
                        p.failures.push(why);
                    }
                }
                drop(p);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        HealthPoller { stop, polls, thread: Some(thread) }
    }

    /// Waits until `n` more answers came after the first one from `build`.
    fn wait_answers_from(&self, build: &str, n: usize) {
        let since = wait_for("the poller to see that build", Duration::from_secs(30), || {
            let p = self.polls.lock().unwrap();
            p.seen.iter().any(|(_, b, _)| b == build).then_some(p.answers)
        });
        wait_for("more answers", Duration::from_secs(30), || {
            (self.polls.lock().unwrap().answers >= since + n).then_some(())
        });
    }

    fn finish(mut self) -> Polls {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.polls.lock().unwrap())
    }
}

/// One `GET /health` on a fresh connection: (pid, buildId, generation), or (refused?, why).
fn poll_once(port: u16) -> Result<(u64, String, u64), (bool, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| (e.kind() == std::io::ErrorKind::ConnectionRefused, format!("connect: {e}")))?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
        .map_err(|e| (false, format!("write: {e}")))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| (false, format!("read: {e}")))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or((false, format!("no HTTP answer: {text:?}")))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err((false, format!("answered {head:?}")));
    }
    let v: Value = serde_json::from_str(body).map_err(|e| (false, format!("{e}: {body:?}")))?;
    Ok((
        v["pid"].as_u64().unwrap_or_default(),
        v["buildId"].as_str().unwrap_or_default().to_owned(),
        v["generation"].as_u64().unwrap_or(u64::MAX),
    ))
}

/// The `tick <n>` lines of `parachute logs ticker --json` (by the given CLI runner): the
/// buffer's `nextSeq`, and the ticks as (seq, n). Asserts nothing was evicted and the
/// buffer's own sequence numbers have no gap.
fn ticks(cli: &dyn Fn(&[&str]) -> Output) -> (u64, Vec<(u64, u64)>) {
    let out = cli(&["logs", TICKER, "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["missed"], 0, "the ring evicted lines; the test must stay within its size");
    let lines = v["lines"].as_array().unwrap();
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "sequence numbers with a gap: {seqs:?}");
    let prefix = format!("[{TICKER}] tick ");
    let ticks = lines
        .iter()
        .filter_map(|l| Some((l["seq"].as_u64()?, l["text"].as_str()?.strip_prefix(&prefix)?.parse().ok()?)))
        .collect();
    (v["nextSeq"].as_u64().unwrap(), ticks)
}

/// Every tick follows the one before it: no line lost, none repeated.
fn assert_no_gap(all: &[(u64, u64)]) {
    for w in all.windows(2) {
        assert!(w[1].0 > w[0].0 && w[1].1 == w[0].1 + 1, "a gap or repeat around {w:?}");
    }
}

/// The hub as a test sees it: its host pid, its port, the binary it was started from, and
/// how to run the CLI against it.
struct Running<'a> {
    home: &'a TestHome,
    port: u16,
    host_pid: u32,
    exe: PathBuf,
    cli: &'a dyn Fn(&[&str]) -> Output,
}

/// The state an upgrade must keep, taken before it.
struct Before {
    pids: BTreeMap<String, u64>,
    health: Value,
    next_seq: u64,
}

impl Running<'_> {
    /// Waits for the modules and some ticks, and checks the hub is the old build at
    /// generation 0.
    fn before(&self, old_build: &str) -> Before {
        let pids = module_pids(self.port, &self.home.token());
        wait_for("ticks in the log", Duration::from_secs(20), || {
            (ticks(self.cli).1.len() >= 10).then_some(())
        });
        let health = health(self.port);
        assert_eq!((health["buildId"].as_str(), health["generation"].as_u64()), (Some(old_build), Some(0)));
        Before { pids, health, next_seq: ticks(self.cli).0 }
    }

    /// Everything issue 17's acceptance asks of an upgrade that succeeded.
    fn after_success(&self, before: &Before, polls: &Polls, new_build: &str) {
        let exe = self.exe.to_string_lossy();
        assert_eq!(exe_of(self.host_pid), exe, "the same process now runs the new file");
        let h = health(self.port);
        assert_eq!(h["pid"], before.health["pid"], "{h:#}");
        assert_eq!(h["instance"], before.health["instance"], "the nonce is kept: {h:#}");
        assert_eq!(h["startedAt"], before.health["startedAt"], "{h:#}");
        assert_eq!((h["buildId"].as_str(), h["generation"].as_u64()), (Some(new_build), Some(1)), "{h:#}");
        assert_eq!(module_pids(self.port, &self.home.token()), before.pids, "every module kept its process");

        // A client polling /health every 5 ms: never refused, every request answered, and
        // it saw exactly the old build, then the new one, from the same pid.
        assert_eq!(polls.refused, 0, "refused connections: {:?}", polls.failures);
        assert!(polls.failures.is_empty(), "failed /health polls across the upgrade: {:?}", polls.failures);
        let pid = before.health["pid"].as_u64().unwrap();
        let old = before.health["buildId"].as_str().unwrap().to_owned();
        assert_eq!(polls.seen, [(pid, old, 0), (pid, new_build.to_owned(), 1)], "{polls:?}");

        // The tick sequence runs through the upgrade without a gap or a repeat, in the
        // ring and in the module's own numbering.
        wait_for("ticks after the upgrade", Duration::from_secs(20), || {
            (ticks(self.cli).0 > before.next_seq + 50).then_some(())
        });
        let (_, all) = ticks(self.cli);
        assert!(all.first().is_some_and(|(seq, _)| *seq < before.next_seq), "ticks from before: {all:?}");
        assert!(all.last().is_some_and(|(seq, _)| *seq > before.next_seq + 50), "ticks from after: {all:?}");
        assert_no_gap(&all);
    }
}

/// `parachute upgrade --in-place --json` against `r`, with the acceptance checks around it.
fn upgrade_in_place_and_check(r: &Running<'_>) {
    let (bytes, new_build) = rebuilt();
    let old_build = this_build();
    let before = r.before(&old_build);
    replace_binary(&r.exe, &bytes);
    assert!(exe_of(r.host_pid).ends_with(" (deleted)"), "the running image's file was replaced");
    let poller = HealthPoller::start(r.port);
    poller.wait_answers_from(&old_build, 3);
    let out = (r.cli)(&["upgrade", "--in-place", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(
        (v["fromBuild"].as_str(), v["toBuild"].as_str()),
        (Some(&*old_build), Some(&*new_build)),
        "{v:#}"
    );
    assert_eq!(v["pid"], before.health["pid"], "{v:#}");
    assert_eq!(v["generation"], 1, "{v:#}");
    assert_eq!(v["kept"].as_array().map(Vec::len), Some(3), "{v:#}");
    assert_eq!(v["restarted"], serde_json::json!([]), "{v:#}");
    poller.wait_answers_from(&new_build, 3);
    r.after_success(&before, &poller.finish(), &new_build);
}

/// A `serve` started from `exe` (wrapped by `wrap`, e.g. in `unshare`).
fn serve_from(h: &TestHome, port: u16, wrap: Option<&[&str]>, exe: &Path) -> Serve {
    let mut cmd = match wrap {
        Some(w) => {
            let mut c = crate::support::isolated(w[0]);
            c.args(&w[1..]).arg(exe);
            c
        }
        None => crate::support::isolated(exe),
    };
    cmd.arg("serve").arg("--home").arg(h.home()).arg("--port").arg(port.to_string());
    let s = Serve::spawn(cmd, h, port);
    s.wait_err("the listening line", |l| l.contains("[hub] listening on"));
    s
}

/// Three modules under a plain `serve` run from a replaceable copy of the binary: the home,
/// the copy, the hub's port and the hub.
fn plain_hub() -> (TestHome, PathBuf, u16, Serve) {
    let h = TestHome::new();
    three_modules(&h);
    let exe = binary_copy(&h.scratch("bin"));
    let port = free_port();
    let s = serve_from(&h, port, None, &exe);
    (h, exe, port, s)
}

#[test]
fn a_plain_serve_upgrades_in_place_keeping_its_pid_and_every_module() {
    let (h, exe, port, s) = plain_hub();
    let cli = |args: &[&str]| h.cli(args);
    let r = Running { home: &h, port, host_pid: s.pid(), exe, cli: &cli };
    upgrade_in_place_and_check(&r);
    for m in MODULES {
        s.wait_state(&h, m, "still running", |st| st["status"] == "running");
    }
}

#[test]
fn as_pid_1_the_hub_upgrades_in_place() {
    let unshare_works = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !crate::support::needs_root_feature(
        "upgrade as_pid_1",
        unshare_works,
        "`unshare --pid --fork --mount-proc`",
    ) {
        return;
    }
    let h = TestHome::new();
    three_modules(&h);
    let exe = binary_copy(&h.scratch("bin"));
    let port = free_port();
    let s = serve_from(&h, port, Some(&["unshare", "--pid", "--fork", "--mount-proc"]), &exe);
    let host_pid = wait_for("the hub inside the namespace", Duration::from_secs(5), || {
        parachute_process::procfs::children_of(s.pid()).into_iter().next()
    });
    assert_eq!(health(port)["pid"], 1, "the hub is PID 1 of its namespace");
    // The CLI runs in the namespace too: hub-instance.json names pid 1, which only there
    // is the hub.
    let cli = |args: &[&str]| {
        let mut c = crate::support::isolated("nsenter");
        c.args(["--target", &host_pid.to_string(), "--pid", "--mount", "--"]).arg(parachute_bin());
        c.args(args).arg("--home").arg(h.home()).stdout(Stdio::piped()).stderr(Stdio::piped());
        wait_output(c.spawn().unwrap(), Duration::from_secs(60))
    };
    let r = Running { home: &h, port, host_pid, exe, cli: &cli };
    upgrade_in_place_and_check(&r);
}

#[test]
fn a_broken_new_binary_leaves_the_old_hub_running_and_the_command_says_why() {
    let (h, exe, port, s) = plain_hub();
    let cli = |args: &[&str]| h.cli(args);
    let old_build = this_build();
    let r = Running { home: &h, port, host_pid: s.pid(), exe: exe.clone(), cli: &cli };
    let before = r.before(&old_build);

    let script = b"#!/bin/sh\necho \"broken build: cannot take the hub over\" >&2\nexit 1\n";
    let mut truncated = std::fs::read(parachute_bin()).unwrap();
    truncated.truncate(4096);
    // A `parachute` that refuses names the flag (as this build's own refusal does); anything
    // else cannot serve at all.
    let refusing =
        b"#!/bin/sh\necho \"parachute serve --check-handover: format version 9 unknown\" >&2\nexit 1\n";
    for (what, bytes, said, code) in [
        ("a script that exits 1", &script[..], "cannot serve", "upgrade_binary_unusable"),
        ("a truncated ELF", &truncated[..], "cannot serve", "upgrade_binary_unusable"),
        ("a parachute that refuses", &refusing[..], "refused the in-place upgrade", "upgrade_refused"),
    ] {
        replace_binary(&exe, bytes);
        let out = cli(&["upgrade", "--in-place"]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(said), "{what}: {}", show(&out));
        if what.contains("script") {
            assert!(err.contains("broken build: cannot take the hub over"), "the binary's own words: {err}");
        }
        let out = cli(&["upgrade", "--in-place", "--json"]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", show(&out));
        assert_eq!(json(&out)["error"], code, "{what}: {}", show(&out));

        // The old hub, untouched: same process and image, same build and generation,
        // every module on its old pid.
        assert!(exe_of(s.pid()).ends_with(" (deleted)"), "{what}: still the old image");
        let h2 = health(port);
        assert_eq!(h2["pid"], before.health["pid"], "{what}");
        assert_eq!(
            (h2["buildId"].as_str(), h2["generation"].as_u64()),
            (Some(&*old_build), Some(0)),
            "{what}"
        );
        assert_eq!(module_pids(port, &h.token()), before.pids, "{what}");
    }
    // And it still serves: the ticks go on without a gap.
    wait_for("more ticks", Duration::from_secs(20), || (ticks(&cli).0 > before.next_seq + 20).then_some(()));
    let (_, all) = ticks(&cli);
    assert_no_gap(&all);
}

fn sandbox_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd-sandbox.sh")
}

/// A command inside the sandbox's namespace and environment.
fn in_sandbox(sb: &Sandbox, cmd: &[&str]) -> Output {
    let mut c = crate::support::isolated("bash");
    c.arg(sandbox_script()).arg("exec").arg(sb.dir()).arg("--").args(cmd);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    wait_output(c.spawn().unwrap(), Duration::from_secs(120))
}

/// `parachute <args>` inside the sandbox.
fn parachute_in(sb: &Sandbox, args: &[&str]) -> Output {
    let bin = parachute_bin();
    let mut all = vec![bin.to_str().unwrap()];
    all.extend_from_slice(args);
    in_sandbox(sb, &all)
}

fn unit_prop(sb: &Sandbox, prop: &str) -> String {
    let out =
        in_sandbox(sb, &["systemctl", "--user", "show", "-p", prop, "--value", "parachute-hub.service"]);
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn postinstall_upgrade_upgrades_the_unit_hub_in_place() {
    let h = TestHome::new();
    three_modules(&h);
    let Some(sb) = Sandbox::start("upgrade_in_place") else { return };
    let exe = binary_copy(&sb.dir().join("bin"));
    let port = free_port();
    let home = h.home().to_string_lossy().into_owned();
    let out = parachute_in(
        &sb,
        &[
            "unit",
            "install",
            "--scope",
            "user",
            "--home",
            &home,
            "--port",
            &port.to_string(),
            "--exec",
            exe.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    let main_pid: u32 = wait_for("the unit's main pid to answer /health", Duration::from_secs(30), || {
        let pid: u32 = unit_prop(&sb, "MainPID").parse().ok().filter(|p| *p != 0)?;
        let (code, body) = http(port, "GET", "/health", None);
        let v: Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
        (v["pid"] == pid).then_some(pid)
    });
    let restarts = unit_prop(&sb, "NRestarts");
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--home", &home]);
        parachute_in(&sb, &all)
    };
    let r = Running { home: &h, port, host_pid: main_pid, exe: exe.clone(), cli: &cli };

    let (bytes, new_build) = rebuilt();
    let old_build = this_build();
    let before = r.before(&old_build);
    replace_binary(&exe, &bytes);
    let poller = HealthPoller::start(port);
    poller.wait_answers_from(&old_build, 3);
    let out = parachute_in(&sb, &["postinstall", "--upgrade", "--json", "--exec", exe.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let v = json(&out);
    let units = v["units"].as_array().unwrap();
    assert_eq!(units.len(), 1, "{v:#}");
    let u = &units[0];
    assert_eq!(
        (u["outcome"].as_str(), u["upgrade"].as_str()),
        (Some("upgraded-in-place"), Some("in_place")),
        "{u:#}"
    );
    assert_eq!(
        (u["pid_before"].as_u64(), u["pid_after"].as_u64()),
        (Some(main_pid.into()), Some(main_pid.into()))
    );
    assert_eq!(u["in_place"]["toBuild"], new_build, "{u:#}");
    assert_eq!(u["in_place"]["kept"].as_array().map(Vec::len), Some(3), "{u:#}");
    assert!(
        u["message"]
            .as_str()
            .unwrap()
            .contains(&format!("upgraded in place (pid {main_pid} kept, 3 modules kept running)")),
        "{u:#}"
    );
    poller.wait_answers_from(&new_build, 3);
    r.after_success(&before, &poller.finish(), &new_build);
    assert_eq!(unit_prop(&sb, "MainPID"), main_pid.to_string(), "the manager saw no new main process");
    assert_eq!(unit_prop(&sb, "NRestarts"), restarts, "the manager counted no restart");
    assert_eq!(unit_prop(&sb, "ActiveState"), "active");

    // Human output says which it did.
    let out = parachute_in(&sb, &["postinstall", "--upgrade", "--exec", exe.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("is current"),
        "nothing left to do: {}",
        show(&out)
    );
}

/// The packager's path, as root: a system unit whose hub runs as the home's owner (not
/// root), the package's binary at a root-owned path, a rebuilt binary renamed over it, and
/// root's `postinstall --upgrade`. The hub, running as that user, trusts the root-owned
/// binary and replaces its image in place: the system manager's MainPID and NRestarts stay,
/// the module keeps its pid, and the hub answers as the new build.
#[test]
fn root_postinstall_upgrades_a_system_unit_hub_in_place() {
    use crate::support::system_box::SystemBox;
    let Some(b) = SystemBox::start("root_in_place") else { return };
    let u = b.new_user("inplace");
    let home = format!("{}/ph", u.home.display());
    let (hub_port, module_port) = ("19411", "19412");
    // Both binaries at root's paths in the box, as a package installs them: the unit's
    // hub gets `PrivateTmp=`, so a module binary left in a checkout under /tmp would be
    // out of its sight.
    let fixture = "/usr/local/bin/parachute-fixture";
    b.sh(&format!("mkdir -p /usr/local/bin && install -m 0755 {} {fixture}", b.fixture()));
    let manifest =
        serde_json::json!({"name": TICKER, "startCmd": [fixture, "--port", module_port, "--tick-ms", "10"]});
    let services = serde_json::json!({"services": [{
        "name": TICKER, "port": 19412, "paths": ["/t"], "health": "/health", "version": "1.0.0",
        "installDir": format!("{home}/modules/{TICKER}"),
    }]});
    b.sh_as(
        &u,
        &format!(
            "mkdir -p {home}/modules/{TICKER}/.parachute && printf '%s' '{manifest}' > {home}/modules/{TICKER}/.parachute/module.json \
             && printf '%s' '{services}' > {home}/services.json"
        ),
    );
    // The package's binary: root's, at a path only root can write.
    let exe = "/usr/local/bin/parachute";
    b.sh(&format!("install -m 0755 {} {exe}", b.parachute()));
    let out = b.run(&[
        exe, "unit", "install", "--scope", "system", "--home", &home, "--exec", exe, "--port", hub_port,
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let prop =
        |key: &str| b.sh(&format!("systemctl show -p {key} --value parachute-hub.service")).trim().to_owned();
    let status = || -> Option<Value> {
        let out = b.run(&[exe, "status", "--home", &home, "--json"]);
        serde_json::from_slice(&out.stdout).ok()
    };
    let module_pid = |v: &Value| v["modules"][0]["pid"].as_u64();
    let before = wait_for("the hub and its module running", Duration::from_secs(30), || {
        let v = status()?;
        (v["modules"][0]["status"] == "running" && module_pid(&v).is_some()).then_some(v)
    });
    let main_pid = prop("MainPID");
    assert_eq!(before["hub"]["pid"].to_string(), main_pid, "{before:#}");
    assert_eq!(
        b.sh(&format!("stat -c %u /proc/{main_pid}")).trim(),
        u.uid.to_string(),
        "the hub runs as its owner"
    );
    let restarts = prop("NRestarts");

    let (bytes, new_build) = rebuilt();
    write_executable(&b.host_path(Path::new("/usr/local/bin/.parachute.new")), &bytes);
    b.sh(&format!("chown root:root /usr/local/bin/.parachute.new && mv /usr/local/bin/.parachute.new {exe}"));
    let out = b.run(&[exe, "postinstall", "--upgrade", "--exec", exe, "--wait", "20", "--json"]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"upgraded-in-place\""), "{}", show(&out));

    assert_eq!(prop("MainPID"), main_pid, "the manager saw no new main process");
    assert_eq!(prop("NRestarts"), restarts, "the manager counted no restart");
    assert_eq!(b.sh(&format!("readlink /proc/{main_pid}/exe")).trim(), exe);
    let after = status().expect("status after the upgrade");
    assert_eq!(after["hub"]["buildId"], new_build.as_str(), "{after:#}");
    assert_eq!(after["hub"]["generation"], 1, "{after:#}");
    assert_eq!(module_pid(&after), module_pid(&before), "the module was not restarted: {after:#}");
    b.sh("systemctl stop parachute-hub.service");
}
