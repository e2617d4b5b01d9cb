//! `parachute migrate --to-supervised | --teardown` against real processes and a real
//! systemd (a private `systemd --user` sandbox per test): legacy daemons started detached
//! with pidfiles, squatters, reused pids, crashes after every step, concurrent runs.
//!
//! The binary runs inside the sandbox's mount namespace (`systemd-sandbox.sh exec`), where
//! `/run/systemd/system` exists and the session bus is the sandbox's; its environment is
//! cleared and names a system bus that does not exist, so nothing can reach the host's
//! managers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use parachute_process::procfs;
use serde_json::Value;

use crate::support::hub::wait_output;
use crate::support::legacy_box::{LegacyBox, alive, holders};
use crate::support::sandbox::Sandbox;
use crate::support::{free_port, parachute_bin, wait_for};
use crate::support::{json, show};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd-sandbox.sh")
}

/// Runs `parachute migrate <args> --home <box home>`, inside `sbx` when given.
fn migrate(sbx: Option<&Sandbox>, b: &LegacyBox, args: &[&str], env: &[(&str, &str)]) -> Output {
    wait_output(spawn_migrate(sbx, b, args, env), Duration::from_secs(90))
}

/// Starts `parachute migrate …` (its pid is the child's: the sandbox script and nsenter exec).
fn spawn_migrate(sbx: Option<&Sandbox>, b: &LegacyBox, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = match sbx {
        Some(s) => {
            let mut c = crate::support::isolated("bash");
            c.arg(script()).arg("exec").arg(s.dir()).arg("--").arg(parachute_bin());
            c
        }
        None => crate::support::parachute(),
    };
    cmd.arg("migrate").args(args).arg("--home").arg(b.home());
    cmd.env("HOME", b.root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn to_supervised(sbx: &Sandbox, b: &LegacyBox, env: &[(&str, &str)]) -> Output {
    migrate(Some(sbx), b, &["--to-supervised", "--scope", "user", "--json"], env)
}

fn teardown(sbx: &Sandbox, b: &LegacyBox) -> Output {
    migrate(Some(sbx), b, &["--teardown", "--scope", "user", "--json"], &[])
}

fn outcome(out: &Output) -> String {
    json(out)["outcome"].as_str().unwrap_or_default().to_owned()
}

/// After a migration: the hub port is held by the unit's main pid (= hub-instance.json's
/// pid) only, and each module port by exactly one process, a descendant of that hub.
fn assert_supervised(b: &LegacyBox, hub_port: u16, module_ports: &[u16], report: &Value) {
    let inst: Value =
        serde_json::from_slice(&std::fs::read(b.home().join("hub-instance.json")).unwrap()).unwrap();
    let main = inst["pid"].as_u64().unwrap() as u32;
    assert_eq!(report["final_state"]["unit"]["main_pid"].as_u64(), Some(u64::from(main)), "{report:#}");
    assert_eq!(report["final_state"]["hub_healthy"], true, "{report:#}");
    assert_eq!(holders(hub_port), vec![main], "the hub port is held by the supervised hub only");
    for &p in module_ports {
        let h = wait_for(&format!("one holder on module port {p}"), Duration::from_secs(10), || {
            let h = holders(p);
            (h.len() == 1).then_some(h)
        });
        assert!(procfs::is_descendant(h[0], main), "port {p} is held by pid {} outside the hub {main}", h[0]);
    }
}

fn wait_port_free(port: u16) {
    wait_for(&format!("port {port} to be free"), Duration::from_secs(15), || {
        holders(port).is_empty().then_some(())
    });
}

#[test]
fn no_manager_leaves_the_legacy_box_running_and_says_so() {
    let mut b = LegacyBox::new();
    let hp = free_port();
    let vp = free_port();
    let hub = b.hub(hp);
    let alpha = b.module("parachute-alpha", vp);
    // Outside the sandbox there is no /run/systemd/system: no manager.
    let out = migrate(None, &b, &["--to-supervised", "--scope", "user"], &[]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("still running: hub, parachute-alpha"), "{err}");
    assert!(err.contains("parachute migrate --to-supervised --home"), "the continuing command: {err}");
    assert!(alive(&hub) && alive(&alpha));
    assert!(b.pidfile("parachute-alpha").exists());
}

#[test]
fn a_held_lock_is_reported_with_its_holder() {
    let b = LegacyBox::new();
    let holder = parachute::cutover::lock::Holder {
        pid: std::process::id(),
        process_started_at: None,
        locked_at: "2025-01-01T00:00:00Z".into(),
        verb: "migrate --teardown".into(),
    };
    let _lock =
        parachute::cutover::lock::CutoverLock::acquire(&b.home().join("hub/run/migrate.lock"), &holder)
            .unwrap();
    let out = migrate(None, &b, &["--to-supervised", "--scope", "user", "--json", "--lock-wait", "1"], &[]);
    assert_eq!(out.status.code(), Some(10), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["outcome"], "locked");
    let msg = v["messages"].to_string();
    assert!(msg.contains(&format!("pid {}", std::process::id())) && msg.contains("--teardown"), "{msg}");
}

#[test]
fn migrates_then_already_migrated_then_teardown_twice() {
    // Declared first so it is dropped last: the sandbox stops the hub before the home goes.
    let mut b = LegacyBox::new();
    let Some(sbx) = Sandbox::start("cutover_migrate") else { return };
    let (hp, vp, sp) = (free_port(), free_port(), free_port());
    let hub = b.hub(hp);
    let alpha = b.module("parachute-alpha", vp);
    let beta = b.module("parachute-beta", sp);
    let bystander = b.unrelated_sleeper();

    let dry = migrate(Some(&sbx), &b, &["--to-supervised", "--scope", "user", "--dry-run", "--json"], &[]);
    assert_eq!(dry.status.code(), Some(0), "{}", show(&dry));
    let plan = json(&dry);
    assert_eq!(plan["dry_run"], true);
    let text = plan["steps_done"].to_string();
    assert!(text.contains("would stop") && text.contains(&format!("pid {}", alpha.pid)), "{text}");
    assert!(text.contains("would write"), "{text}");
    assert!(alive(&hub) && alive(&alpha) && alive(&beta), "a dry run stops nothing");
    assert!(!b.home().join("hub/run/migrate-journal.json").exists(), "a dry run writes no journal");
    assert!(!sbx.unit_dir().join("parachute-hub.service").exists(), "a dry run writes no unit");

    let out = to_supervised(&sbx, &b, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["outcome"], "migrated", "{v:#}");
    assert_supervised(&b, hp, &[vp, sp], &v);
    assert!(!alive(&hub) && !alive(&alpha) && !alive(&beta), "legacy daemons are gone");
    assert!(alive(&bystander), "an unrelated process is untouched");
    assert!(!b.home().join("hub/run/hub.pid").exists() && !b.pidfile("parachute-alpha").exists());
    assert_eq!(v["steps_done"].as_array().unwrap().len(), 9, "{v:#}");

    let again = to_supervised(&sbx, &b, &[]);
    assert_eq!(again.status.code(), Some(0), "{}", show(&again));
    assert_eq!(outcome(&again), "already-migrated", "{}", show(&again));

    let t = teardown(&sbx, &b);
    assert_eq!(t.status.code(), Some(0), "{}", show(&t));
    assert_eq!(json(&t)["outcome"], "removed", "{}", show(&t));
    assert!(!sbx.unit_dir().join("parachute-hub.service").exists());
    wait_port_free(hp);
    let t2 = teardown(&sbx, &b);
    assert_eq!(t2.status.code(), Some(0), "{}", show(&t2));
    assert_eq!(json(&t2)["outcome"], "nothing-installed", "{}", show(&t2));
}

#[test]
fn teardown_stops_a_unit_whose_file_was_deleted_while_loaded() {
    // Declared first so it is dropped last: the sandbox stops the hub before the home goes.
    let mut b = LegacyBox::new();
    let Some(sbx) = Sandbox::start("cutover_teardown_deleted") else { return };
    let (hp, vp) = (free_port(), free_port());
    b.hub(hp);
    b.module("parachute-alpha", vp);
    let out = to_supervised(&sbx, &b, &[]);
    assert_eq!(outcome(&out), "migrated", "{}", show(&out));
    let unit = sbx.unit_dir().join("parachute-hub.service");
    std::fs::remove_file(&unit).unwrap();
    let t = teardown(&sbx, &b);
    assert_eq!(t.status.code(), Some(0), "{}", show(&t));
    wait_port_free(hp);
    wait_port_free(vp);
    let t2 = teardown(&sbx, &b);
    assert_eq!(json(&t2)["outcome"], "nothing-installed", "{}", show(&t2));
}

/// A legacy box for the kill tests: hub, a first-party-shaped module, and a third-party
/// `python3 server.py` module run with cwd = installDir; plus a bystander that must survive.
struct KillBox {
    b: LegacyBox,
    hub_port: u16,
    module_ports: Vec<u16>,
    legacy: Vec<parachute_process::ProcessIdentity>,
    bystander: parachute_process::ProcessIdentity,
}

fn kill_box() -> KillBox {
    let mut b = LegacyBox::new();
    let (hp, vp, tp) = (free_port(), free_port(), free_port());
    let hub = b.hub(hp);
    let alpha = b.module("parachute-alpha", vp);
    let tiny = b.python_module("tinymod", tp, hp);
    let bystander = b.unrelated_sleeper();
    KillBox { b, hub_port: hp, module_ports: vec![vp, tp], legacy: vec![hub, alpha, tiny], bystander }
}

/// The box is migrated: no legacy process, each module once under the hub, every port
/// answering, the bystander untouched.
fn assert_migrated_box(k: &KillBox, report: &Value, what: &str) {
    assert_supervised(&k.b, k.hub_port, &k.module_ports, report);
    for id in &k.legacy {
        assert!(!alive(id), "{what}: legacy pid {} survived", id.pid);
    }
    assert!(alive(&k.bystander), "{what}: an unrelated process was touched");
    for &p in std::iter::once(&k.hub_port).chain(&k.module_ports) {
        assert!(std::net::TcpStream::connect(("127.0.0.1", p)).is_ok(), "{what}: port {p} does not answer");
    }
}

/// Removes the unit so the next iteration starts from a legacy box again.
fn reset(sbx: &Sandbox, k: &KillBox) {
    let t = teardown(sbx, &k.b);
    assert_eq!(t.status.code(), Some(0), "{}", show(&t));
    for &p in std::iter::once(&k.hub_port).chain(&k.module_ports) {
        wait_port_free(p);
    }
}

/// A small xorshift generator: the kill moments are random, and the seed is printed so a
/// failure can be replayed.
struct Rng(u64);

impl Rng {
    fn from_clock() -> Rng {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        Rng(u64::from(t.subsec_nanos()) | 1)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Starts `args` and SIGKILLs it `after`: `Ok(())` if it was still running then, else
/// `Err(how long it ran)`.
fn kill_after(sbx: &Sandbox, b: &LegacyBox, args: &[&str], after: Duration) -> Result<(), Duration> {
    let mut child = spawn_migrate(Some(sbx), b, args, &[]);
    let t0 = Instant::now();
    while t0.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return Err(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

#[test]
fn killed_at_any_moment_a_single_plain_rerun_converges() {
    let Some(sbx) = Sandbox::start("cutover_kill") else { return };
    let args = ["--to-supervised", "--scope", "user", "--json"];
    // Clean runs: the fastest is the span the kills are spread over. Runs get faster as the
    // sandbox warms (measured 3.8 s, 2.6 s, 1.3 s), and the killed runs are warm, so one
    // cold run overestimates the span and too many kills land after the end.
    let mut spans = Vec::new();
    for _ in 0..3 {
        let k = kill_box();
        let t0 = Instant::now();
        let mut child = spawn_migrate(Some(&sbx), &k.b, &args, &[]);
        // The process's own end (what `kill_after` tests), not its pipes' EOF.
        child.wait().unwrap();
        spans.push(t0.elapsed());
        let out = child.wait_with_output().unwrap();
        assert_eq!(outcome(&out), "migrated", "{}", show(&out));
        assert_migrated_box(&k, &json(&out), "clean run");
        reset(&sbx, &k);
    }
    let mut span = *spans.iter().min().unwrap();

    const KILLS: u32 = 30;
    let mut rng = Rng::from_clock();
    let seed = rng.0;
    let mut log = Vec::new();
    let mut mid_run = 0;
    for i in 0..KILLS {
        // One moment in each of 30 equal slices of the clean run: uniform over its whole
        // duration, not only at step boundaries.
        let at = span.mul_f64((f64::from(i) + rng.unit()) / f64::from(KILLS));
        let k = kill_box();
        let ran = kill_after(&sbx, &k.b, &args, at);
        let killed = ran.is_ok();
        // A run that ended before its moment shows the span was too long (the machine's
        // load varies): later moments use the shorter one.
        if let Err(took) = ran {
            span = span.min(took);
        }
        let what = format!("kill {i} at {at:?} of {span:?} (seed {seed}, killed mid-run: {killed})");
        let out = to_supervised(&sbx, &k.b, &[]);
        assert_eq!(out.status.code(), Some(0), "{what}: {}", show(&out));
        let v = json(&out);
        let finished_before = std::fs::read(k.b.home().join("hub/run/migrate-journal.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|j| !j["finished"].is_null());
        match v["outcome"].as_str() {
            Some("migrated") => {}
            // Only when the killed run had already finished (or was killed after).
            Some("already-migrated") if finished_before || !killed => {}
            other => panic!("{what}: outcome {other:?}: {v:#}"),
        }
        assert_migrated_box(&k, &v, &what);
        log.push(format!(
            "{:?}{}→{}",
            at,
            if killed { "" } else { " (after the end)" },
            v["outcome"].as_str().unwrap_or("?")
        ));
        mid_run += u32::from(killed);
        reset(&sbx, &k);
    }
    let log = log.join(", ");
    eprintln!("cutover kills (seed {seed}, clean runs {spans:?}, {mid_run}/{KILLS} mid-run): {log}");
    // The point of the test is kills *during* a run: if most landed after the end, the span
    // was mis-measured and the test proved little.
    assert!(mid_run >= KILLS / 2, "only {mid_run}/{KILLS} kills landed mid-run (seed {seed}): {log}");
}

#[test]
fn teardown_killed_at_any_moment_then_a_rerun_leaves_no_unit_and_nothing_listening() {
    let Some(sbx) = Sandbox::start("cutover_kill_teardown") else { return };
    let mut rng = Rng::from_clock();
    let seed = rng.0;
    let mut clean = None;
    const KILLS: u32 = 10;
    for i in 0..=KILLS {
        let k = kill_box();
        let out = to_supervised(&sbx, &k.b, &[]);
        assert_eq!(outcome(&out), "migrated", "{}", show(&out));
        let args = ["--teardown", "--scope", "user", "--json"];
        let what;
        match clean {
            None => {
                // The first, clean teardown measures the span.
                let t0 = Instant::now();
                let t = teardown(&sbx, &k.b);
                clean = Some(t0.elapsed());
                assert_eq!(json(&t)["outcome"], "removed", "{}", show(&t));
                what = "clean teardown".to_owned();
            }
            Some(span) => {
                let at = span.mul_f64((f64::from(i - 1) + rng.unit()) / f64::from(KILLS));
                let ran = kill_after(&sbx, &k.b, &args, at);
                let killed = ran.is_ok();
                if let Err(took) = ran {
                    clean = Some(span.min(took));
                }
                what = format!(
                    "teardown kill {i} at {at:?} of {span:?} (seed {seed}, killed mid-run: {killed})"
                );
                let t = teardown(&sbx, &k.b);
                assert_eq!(t.status.code(), Some(0), "{what}: {}", show(&t));
                let o = json(&t)["outcome"].as_str().unwrap_or_default().to_owned();
                assert!(o == "removed" || o == "nothing-installed", "{what}: {}", show(&t));
            }
        }
        assert!(!sbx.unit_dir().join("parachute-hub.service").exists(), "{what}: the unit file is left");
        for &p in std::iter::once(&k.hub_port).chain(&k.module_ports) {
            wait_for(&format!("{what}: port {p} free"), Duration::from_secs(5), || {
                holders(p).is_empty().then_some(())
            });
        }
    }
}

#[test]
fn a_third_party_module_run_as_python3_server_py_migrates_with_no_manual_step_c1() {
    // Declared first so it is dropped last: the sandbox stops the hub before the home goes.
    let mut b = LegacyBox::new();
    let Some(sbx) = Sandbox::start("cutover_python") else { return };
    let (hp, tp) = (free_port(), free_port());
    let hub = b.hub(hp);
    let tiny = b.python_module("tinymod", tp, hp);
    let out = to_supervised(&sbx, &b, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["outcome"], "migrated", "{v:#}");
    assert!(v["steps_done"].to_string().contains(&format!("stopped tinymod (pid {})", tiny.pid)), "{v:#}");
    assert!(!alive(&hub) && !alive(&tiny));
    assert_supervised(&b, hp, &[tp], &v);
    assert_eq!(v["final_state"]["unit"]["scope"], "user", "{v:#}");
    // The test's system bus is dead: no linger, and the report says so with the fix.
    assert_eq!(v["starts_at_boot"], false, "{v:#}");
    assert!(v["messages"].to_string().contains("loginctl enable-linger"), "{v:#}");
}

#[test]
fn a_module_that_exits_at_once_under_the_hub_fails_the_cutover_naming_it() {
    // Declared first so it is dropped last: the sandbox stops the hub before the home goes.
    let mut b = LegacyBox::new();
    let Some(sbx) = Sandbox::start("cutover_module_fails") else { return };
    let (hp, ap, cp) = (free_port(), free_port(), free_port());
    b.hub(hp);
    b.module("parachute-alpha", ap);
    b.module("parachute-crashy", cp);
    // Under the hub, crashy exits at once, every time.
    b.supervised_flags("parachute-crashy", cp, &["--exit-after-ms", "0", "--exit-code", "3"]);
    let t0 = Instant::now();
    let out = to_supervised(&sbx, &b, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["outcome"], "module-failed", "{v:#}");
    let msg = v["messages"].to_string();
    assert!(msg.contains("parachute-crashy is crashed") || msg.contains("crashy is crashed"), "{msg}");
    assert!(!msg.contains("alpha is"), "only the failing module is named: {msg}");
    assert!(t0.elapsed() < Duration::from_secs(40), "a crashed module is reported, not waited out");
    assert!(v["next"].as_str().unwrap().contains("--to-supervised"), "{v:#}");
}

#[test]
fn postinstall_upgrade_waits_for_a_running_cutover_and_never_interleaves() {
    // Declared first so it is dropped last: the sandbox stops the hub before the home goes.
    let mut b = LegacyBox::new();
    let Some(sbx) = Sandbox::start("cutover_postinstall_lock") else { return };
    let (hp, ap) = (free_port(), free_port());
    b.hub(hp);
    b.module("parachute-alpha", ap);
    let out = to_supervised(&sbx, &b, &[]);
    assert_eq!(outcome(&out), "migrated", "{}", show(&out));
    let unit = sbx.unit_dir().join("parachute-hub.service");
    // Make the unit out of date, so an upgrade would rewrite and restart it.
    let text = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(&unit, text.replace("Description=", "Description=old ")).unwrap();
    let before = std::fs::read(&unit).unwrap();
    // A cutover holds the lock (this process, as a cutover would).
    let held = parachute::cutover::lock::CutoverLock::acquire(
        &b.home().join("hub/run/migrate.lock"),
        &parachute::cutover::lock::Holder::current("migrate --to-supervised"),
    )
    .unwrap();
    let mut cmd = crate::support::isolated("bash");
    cmd.arg(script()).arg("exec").arg(sbx.dir()).arg("--").arg(parachute_bin());
    cmd.args(["postinstall", "--upgrade", "--scope", "user", "--json", "--home"]).arg(b.home());
    cmd.arg("--exec").arg(parachute_bin());
    cmd.env("HOME", b.root());
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        std::fs::read(&unit).unwrap(),
        before,
        "postinstall touched the unit while the cutover held the lock"
    );
    drop(held);
    let out = wait_output(child, Duration::from_secs(90));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_ne!(
        std::fs::read(&unit).unwrap(),
        before,
        "postinstall proceeded once the lock was free: {}",
        show(&out)
    );
}
/// Preflight found a holder it may not stop: exit 7, nothing stopped, nothing written.
fn assert_port_stuck_and_untouched(
    sbx: &Sandbox,
    b: &LegacyBox,
    out: &Output,
    keep: &[&parachute_process::ProcessIdentity],
) {
    assert_eq!(out.status.code(), Some(7), "{}", show(out));
    let v = json(out);
    assert_eq!(v["outcome"], "port-stuck");
    for id in keep {
        assert!(alive(id), "pid {} was touched", id.pid);
    }
    assert!(!sbx.unit_dir().join("parachute-hub.service").exists(), "preflight wrote a unit");
    assert!(!b.home().join("hub/run/migrate-journal.json").exists(), "a failed preflight wrote a journal");
    assert!(!b.home().join("hub/run/migrate.lock").exists(), "a failed preflight left a lock file");
    let msg = v["messages"].to_string();
    assert!(
        msg.contains("nothing was stopped")
            || msg.contains("Nothing was stopped")
            || msg.contains("read-only"),
        "{msg}"
    );
    assert!(msg.contains("--to-supervised --home"), "{msg}");
}

#[test]
fn unrelated_process_on_a_module_port_aborts_preflight_and_stops_nothing() {
    // Declared first so it is dropped last: the sandbox stops the hub before the home goes.
    let mut b = LegacyBox::new();
    let Some(sbx) = Sandbox::start("cutover_squatter") else { return };
    let (hp, vp, sp) = (free_port(), free_port(), free_port());
    let hub = b.hub(hp);
    let alpha = b.module("parachute-alpha", vp);
    b.declare("parachute-beta", sp);
    let squatter = b.squatter(sp);
    // The dry run ends as the real run would, and says what to run once the cause is fixed.
    let dry = migrate(Some(&sbx), &b, &["--to-supervised", "--scope", "user", "--dry-run", "--json"], &[]);
    assert_eq!(dry.status.code(), Some(7), "{}", show(&dry));
    let dv = json(&dry);
    assert!(dv["next"].as_str().is_some_and(|n| n.contains("--to-supervised")), "{dv:#}");
    let out = to_supervised(&sbx, &b, &[]);
    assert_port_stuck_and_untouched(&sbx, &b, &out, &[&hub, &alpha, &squatter]);
    let msg = json(&out)["messages"].to_string();
    assert!(
        msg.contains(&format!("pid {}", squatter.pid)) && msg.contains("unrelated-server"),
        "named: {msg}"
    );
}

#[test]
fn a_sibling_modules_process_on_another_modules_port_is_not_touched_601() {
    // Declared first so it is dropped last: the sandbox stops the hub before the home goes.
    let mut b = LegacyBox::new();
    let Some(sbx) = Sandbox::start("cutover_sibling") else { return };
    let (hp, vp, sp) = (free_port(), free_port(), free_port());
    let hub = b.hub(hp);
    let beta = b.module("parachute-beta", sp);
    b.declare("parachute-alpha", vp);
    // A beta process (no pidfile) squats alpha's port: it names Parachute, but not alpha.
    let bin = b.bin("parachute-beta");
    let stray_pidfile = b.root().join("stray.pid");
    let stray = b.daemon(&bin, &["--port", &vp.to_string()], &stray_pidfile, Some(vp));
    let out = to_supervised(&sbx, &b, &[]);
    assert_port_stuck_and_untouched(&sbx, &b, &out, &[&hub, &beta, &stray]);
}

#[test]
fn hub_port_held_by_something_else_aborts_w14() {
    // Declared first so it is dropped last: the sandbox stops the hub before the home goes.
    let mut b = LegacyBox::new();
    let Some(sbx) = Sandbox::start("cutover_hub_squatter") else { return };
    let (hp, vp) = (free_port(), free_port());
    let alpha = b.module("parachute-alpha", vp);
    let squatter = b.squatter(hp);
    let out = migrate(
        Some(&sbx),
        &b,
        &["--to-supervised", "--scope", "user", "--json", "--port", &hp.to_string()],
        &[],
    );
    assert_port_stuck_and_untouched(&sbx, &b, &out, &[&alpha, &squatter]);
}

#[test]
fn a_pidfile_whose_pid_was_reused_is_never_signalled_w13() {
    // Declared first so it is dropped last: the sandbox stops the hub before the home goes.
    let mut b = LegacyBox::new();
    let Some(sbx) = Sandbox::start("cutover_reused_pid") else { return };
    let (hp, vp, sp) = (free_port(), free_port(), free_port());
    b.hub(hp);
    b.module("parachute-beta", sp);
    b.declare("parachute-alpha", vp);
    let sleeper = b.unrelated_sleeper();
    let pidfile = b.pidfile("parachute-alpha");
    std::fs::create_dir_all(pidfile.parent().unwrap()).unwrap();
    std::fs::write(&pidfile, format!("{}\n", sleeper.pid)).unwrap();
    let out = to_supervised(&sbx, &b, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["outcome"], "migrated", "{v:#}");
    assert!(alive(&sleeper), "the process that reused the pid was signalled");
    assert!(!pidfile.exists(), "the stale pidfile is removed");
    assert!(v["steps_done"].to_string().contains("not ours"), "{v:#}");
    assert_supervised(&b, hp, &[vp, sp], &v);
}

#[test]
fn two_cutovers_started_together_exactly_one_proceeds() {
    // Declared first so it is dropped last: the sandbox stops the hub before the home goes.
    let mut b = LegacyBox::new();
    let Some(sbx) = Sandbox::start("cutover_concurrent") else { return };
    let (hp, vp) = (free_port(), free_port());
    b.hub(hp);
    b.module("parachute-alpha", vp);
    let args = ["--to-supervised", "--scope", "user", "--json", "--lock-wait", "0"];
    let children: Vec<Child> = (0..2).map(|_| spawn_migrate(Some(&sbx), &b, &args, &[])).collect();
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    let outs: Vec<Output> = children.into_iter().map(|c| wait_output(c, Duration::from_secs(90))).collect();
    let mut outcomes: Vec<String> = outs.iter().map(outcome).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["locked", "migrated"], "{}\n---\n{}", show(&outs[0]), show(&outs[1]));
    let winner = if outcome(&outs[0]) == "migrated" { 0 } else { 1 };
    let locked = &outs[1 - winner];
    assert_eq!(locked.status.code(), Some(10));
    let msg = json(locked)["messages"].to_string();
    assert!(msg.contains(&format!("pid {}", pids[winner])), "the loser names the winner: {msg}");
}

#[test]
fn stubborn_and_forking_legacy_daemons_are_stopped_by_group_under_one_budget() {
    // Declared first so it is dropped last: the sandbox stops the hub before the home goes.
    let mut b = LegacyBox::new();
    let Some(sbx) = Sandbox::start("cutover_stubborn") else { return };
    let (hp, ap, bp, cp) = (free_port(), free_port(), free_port(), free_port());
    b.hub(hp);
    // alpha's port is held by a grandchild in its process group, whose command line names
    // only the fixture binary: attributable through the group, not by name.
    let alpha = b.module_with("parachute-alpha", ap, &["--grandchild-holds-port"]);
    let holder = procfs::identity(holders(ap)[0]).unwrap();
    assert_ne!(holder.pid, alpha.pid);
    // beta and gamma ignore SIGTERM: both are SIGKILLed after the one shared grace period.
    let beta = b.module_with("parachute-beta", bp, &["--ignore-sigterm"]);
    let gamma = b.module_with("parachute-gamma", cp, &["--ignore-sigterm"]);
    let out = to_supervised(&sbx, &b, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["outcome"], "migrated", "{v:#}");
    let steps = v["steps_done"].to_string();
    assert!(
        steps.contains("a process of the legacy parachute-alpha"),
        "group attribution in preflight: {steps}"
    );
    assert!(steps.contains(&format!("pid {} did not exit on SIGTERM", beta.pid)), "{steps}");
    assert!(steps.contains(&format!("pid {} did not exit on SIGTERM", gamma.pid)), "{steps}");
    assert!(!alive(&alpha) && !alive(&beta) && !alive(&gamma));
    assert!(!alive(&holder), "the grandchild holding alpha's port was stopped with its group");
    assert_supervised(&b, hp, &[ap, bp, cp], &v);
}

#[test]
fn stale_per_module_units_are_disabled_durably_522() {
    // Declared first so it is dropped last: the sandbox stops the hub before the home goes.
    let mut b = LegacyBox::new();
    let Some(sbx) = Sandbox::start("cutover_stale_units") else { return };
    let unit = sbx.unit_dir().join("parachute-vault.service");
    std::fs::create_dir_all(sbx.unit_dir()).unwrap();
    std::fs::write(
        &unit,
        "[Unit]\nDescription=stale vault\n[Service]\nExecStart=/bin/sleep 600\n[Install]\nWantedBy=default.target\n",
    )
    .unwrap();
    let ctl = |args: &[&str]| {
        Command::new("bash")
            .arg(script())
            .arg("exec")
            .arg(sbx.dir())
            .args(["--", "systemctl", "--user"])
            .args(args)
            .output()
            .unwrap()
    };
    let en = ctl(&["enable", "--now", "parachute-vault.service"]);
    assert!(en.status.success(), "{}", show(&en));
    let (hp, ap) = (free_port(), free_port());
    b.hub(hp);
    b.module("parachute-alpha", ap);
    let out = to_supervised(&sbx, &b, &[]);
    let v = json(&out);
    assert_eq!(v["outcome"], "migrated", "{v:#}");
    assert!(v["steps_done"].to_string().contains("disabled parachute-vault.service"), "{v:#}");
    let enabled = ctl(&["is-enabled", "parachute-vault.service"]);
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "disabled", "{}", show(&enabled));
    let active = ctl(&["is-active", "parachute-vault.service"]);
    assert_ne!(String::from_utf8_lossy(&active.stdout).trim(), "active", "{}", show(&active));
    assert!(unit.exists(), "the stale unit file is left in place, only disabled");
}

#[test]
fn a_failed_start_reports_the_true_state_and_a_plain_rerun_recovers_w18_w19_w21() {
    // Declared first so it is dropped last: the sandbox stops the hub before the home goes.
    let mut b = LegacyBox::new();
    let Some(sbx) = Sandbox::start("cutover_start_failed") else { return };
    let (hp, ap) = (free_port(), free_port());
    let hub = b.hub(hp);
    let alpha = b.module("parachute-alpha", ap);
    // A binary that passes the preflight's `--version` but cannot serve.
    let broken = b.root().join("broken-parachute");
    std::fs::write(
        &broken,
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'parachute 0.0.0'; exit 0; }\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let args = ["--to-supervised", "--scope", "user", "--json", "--exec", broken.to_str().unwrap()];
    let out = migrate(Some(&sbx), &b, &args, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["outcome"], "start-failed", "{v:#}");
    let state = &v["final_state"];
    assert_eq!(state["legacy_stopped"], serde_json::json!(["hub", "parachute-alpha"]), "{v:#}");
    assert_eq!(state["legacy_running"], serde_json::json!([]), "{v:#}");
    assert!(state["unit"]["file"].is_string(), "the unit file is reported as present: {v:#}");
    assert_eq!(state["unit"]["active"], false, "{v:#}");
    assert_eq!(state["hub_healthy"], false);
    let msg = v["messages"].to_string();
    assert!(msg.contains("Nothing runs the hub"), "{msg}");
    assert!(v["next"].as_str().unwrap().contains("--to-supervised"), "{v:#}");
    assert!(!alive(&hub) && !alive(&alpha));

    // The plain command (this binary) continues: the flapping unit is stopped and rewritten.
    let out = to_supervised(&sbx, &b, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["outcome"], "migrated", "{v:#}");
    assert_supervised(&b, hp, &[ap], &v);
}
