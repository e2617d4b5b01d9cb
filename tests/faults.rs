//! The hub under its own faults: stray signals, a long stop timeout, a crashed hub's
//! leftovers, a full output, bad input files.

use std::time::{Duration, Instant};

use parachute_process::procfs::{self, ProcessIdentity};

use crate::support::free_port;
use crate::support::hub::{Serve, TestHome, alive};

/// Each of these, sent to a hub with modules, leaves a running hub (modules untouched) or a
/// graceful stop with a log line — never a silent death.
#[test]
fn stray_signals_never_kill_the_hub_silently() {
    let h = TestHome::new();
    h.fixture("sig-a", free_port(), &[]);
    h.fixture("sig-b", free_port(), &[]);
    let mut s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("boot", |l| l.contains("boot done"));
    let pids: Vec<u64> =
        ["sig-a", "sig-b"].iter().map(|m| s.state(&h, m)["pid"].as_u64().expect("running")).collect();
    #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
    let mut signals = vec![
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGVTALRM, "SIGVTALRM"),
    ];
    #[cfg(target_os = "linux")] // macOS has no realtime signals
    signals.push((libc::SIGRTMIN() + 3, "SIGRTMIN+3"));
    for (sig, name) in signals {
        s.signal(sig);
        s.wait_err(&format!("a line about {name}"), |l| l.starts_with("[hub] ") && l.contains(name));
        let (st, body) = s.http("GET", "/health", None);
        assert_eq!(st, 200, "the hub survives {name}: {body}");
        for (m, pid) in ["sig-a", "sig-b"].iter().zip(&pids) {
            let state = s.state(&h, m);
            assert_eq!(state["status"], "running", "{name}: {state}");
            assert_eq!(state["pid"].as_u64(), Some(*pid), "{name} left {m} alone");
        }
    }
    let usr1 = s.wait_err("the SIGUSR1 state report", |l| l.contains("sig-b: running (pid"));
    assert!(usr1.contains(&pids[1].to_string()), "{usr1}");

    // SIGQUIT is a stop request: graceful, logged, modules SIGTERMed, instance file removed.
    s.signal(libc::SIGQUIT);
    assert_eq!(s.wait_exit(Duration::from_secs(20)).code(), Some(0), "{}", s.stderr());
    assert!(s.stderr().contains("[hub] SIGQUIT: stopping 2 module(s)"), "{}", s.stderr());
    assert!(s.stderr().contains("stopped cleanly"), "{}", s.stderr());
    assert!(pids.iter().all(|&p| !alive(p as u32)));
    assert!(h.instance().is_none(), "hub-instance.json is removed");
}

/// `--stop-timeout` is the grace, whatever its value (it used to be capped by a hard-coded
/// 5 s kill timeout), and the message says what happened.
#[test]
fn the_stop_timeout_is_the_grace_whatever_its_value() {
    let h = TestHome::new();
    h.fixture("stubborn", free_port(), &["--ignore-sigterm"]);
    let mut s = Serve::ready(&h, free_port(), &["--stop-timeout", "8"]);
    s.wait_err("boot", |l| l.contains("boot done"));
    let pid = s.state(&h, "stubborn")["pid"].as_u64().unwrap() as u32;
    let t = Instant::now();
    s.signal(libc::SIGTERM);
    let code = s.wait_exit(Duration::from_secs(30)).code();
    let took = t.elapsed();
    assert_eq!(code, Some(8), "something had to be SIGKILLed: {}", s.stderr());
    assert!(took >= Duration::from_secs(8), "the module got its 8 s: took {took:?}");
    assert!(!alive(pid));
    let (err, out) = (s.stderr(), s.stdout());
    assert!(out.contains("stubborn did not exit 8000ms after SIGTERM"), "{out}");
    assert!(err.contains("SIGKILLed after the 8s grace: stubborn"), "{err}");
}

/// Live processes whose environment carries `FAULTS_TOKEN=<token>` (every module of a
/// storm home and everything they start inherit it), by identity.
fn token_processes(token: &str) -> Vec<ProcessIdentity> {
    let needle = format!("FAULTS_TOKEN={token}");
    procfs::all_pids()
        .filter(|&p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .filter_map(procfs::identity)
        .collect()
}

/// A small deterministic generator: the seed is printed, so a failing run can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Acceptance: SIGKILL the hub at random moments of boot, restart, steady state and
/// shutdown, with modules that fork port-holding grandchildren, helper children, a `setsid`
/// server and a double-forked daemon. After every next boot nothing of an earlier hub's
/// modules is alive and every module is `running`; a final clean stop leaves nothing.
#[test]
fn sigkilled_hubs_leave_nothing_behind_the_next_boot_cannot_prove_and_stop() {
    let h = TestHome::new();
    let token = format!("{}-{}", std::process::id(), free_port());
    let _cleanup = KillTokenOnDrop(token.clone());
    let modules: [(&str, &[&str]); 6] = [
        ("k-plain", &[]),
        ("k-grandchild", &["--grandchild-holds-port"]),
        ("k-sleeper", &["--spawn-sleeper"]),
        ("k-setsid", &["--setsid-holds-port"]),
        ("k-daemon", &["--daemonize-holds-port"]),
        ("k-slow", &["--listen-delay-ms", "400", "--spawn-sleeper"]),
    ];
    for (name, flags) in modules {
        h.fixture(name, free_port(), flags);
        let dir = h.home().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".env"), format!("FAULTS_TOKEN={token}\n")).unwrap();
    }
    let seed = u64::from(std::process::id()) ^ 0x5eed;
    eprintln!("kill storm seed {seed}");
    let mut rng = Lcg(seed);
    let hub_port = free_port();
    let mut left_before: Vec<ProcessIdentity> = Vec::new();
    const ROUNDS: usize = 20;
    for round in 0..=ROUNDS {
        let mut s = Serve::start(&h, hub_port, &["--restart-delay-ms", "100"]);
        s.wait_err("boot", |l| l.contains("boot done") || l.contains("boot abandoned"));
        // What an earlier hub's modules left is gone now…
        let survivors: Vec<_> = left_before.iter().filter(|id| procfs::is_same_process(id)).collect();
        assert!(
            survivors.is_empty(),
            "round {round} (seed {seed}): processes of an earlier hub's modules survived the next boot: {survivors:?}\n{}",
            s.stderr()
        );
        // …and every module is running again.
        for (name, _) in modules {
            s.wait_state(&h, name, &format!("round {round}: {name} running"), |v| v["status"] == "running");
        }
        if round == ROUNDS {
            s.signal(libc::SIGTERM);
            s.wait_exit(Duration::from_secs(30));
            let left = token_processes(&token);
            assert!(left.is_empty(), "a clean stop leaves nothing of any module: {left:?}\n{}", s.stderr());
            break;
        }
        let phase = round % 4;
        match phase {
            // Boot: kill while the next boot's modules are being (re)started.
            0 => {
                s.signal(libc::SIGKILL);
                s.wait_exit(Duration::from_secs(10));
                let mut next = Serve::start(&h, hub_port, &["--restart-delay-ms", "100"]);
                next.wait_err("the listening line", |l| l.contains("[hub] listening on"));
                std::thread::sleep(Duration::from_millis(rng.below(600)));
                next.signal(libc::SIGKILL);
                next.wait_exit(Duration::from_secs(10));
                // Not dropped: Serve's drop would kill what the hub left, the very thing
                // under test.
                std::mem::forget(next);
            }
            // Restart: kill in the middle of an API restart.
            1 => {
                let (name, _) = modules[rng.below(modules.len() as u64) as usize];
                let token = h.token();
                let port = s.port;
                let restart = std::thread::spawn(move || {
                    crate::support::hub::http(
                        port,
                        "POST",
                        &format!("/api/modules/{name}/restart"),
                        Some(&token),
                    )
                });
                std::thread::sleep(Duration::from_millis(50 + rng.below(300)));
                s.signal(libc::SIGKILL);
                s.wait_exit(Duration::from_secs(10));
                let _ = restart.join();
            }
            // Steady state.
            2 => {
                std::thread::sleep(Duration::from_millis(rng.below(1500)));
                s.signal(libc::SIGKILL);
                s.wait_exit(Duration::from_secs(10));
            }
            // Shutdown: kill while the modules are being stopped.
            _ => {
                s.signal(libc::SIGTERM);
                std::thread::sleep(Duration::from_millis(rng.below(400)));
                s.signal(libc::SIGKILL);
                s.wait_exit(Duration::from_secs(10));
            }
        }
        std::mem::forget(s);
        left_before = token_processes(&token);
    }
}

/// Kills (by identity) whatever still carries the token when the test ends, pass or fail.
struct KillTokenOnDrop(String);

impl Drop for KillTokenOnDrop {
    fn drop(&mut self) {
        for id in token_processes(&self.0) {
            let _ = parachute_process::signal_identity(&id, parachute_process::Signal::Kill, false);
        }
    }
}

/// A tmpfs mounted for one test, unmounted (lazily) when dropped.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// After ENOSPC on the hub's own output, and space freed, new module lines arrive (the
/// writer used to give up for good at the first error, silently).
#[test]
fn output_resumes_after_the_disk_under_the_hub_log_was_full() {
    let h = TestHome::new();
    let mnt = h.scratch("logfs");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !crate::support::needs_root_feature("output_resumes_after_…", mounted, "a tmpfs mount (root)") {
        return;
    }
    let _fs = Tmpfs(mnt.clone());
    // A steady writer (a crash loop would slow down under the backoff).
    let script = "while :; do echo tick-$(printf %0100d 0); sleep 0.01; done";
    h.module("ticker", free_port(), &["/bin/sh".into(), "-c".into(), script.into()]);
    let log = mnt.join("hub.log");
    let err_path = h.scratch("hub.err");
    let mut cmd = crate::support::parachute();
    cmd.arg("serve")
        .arg("--home")
        .arg(h.home())
        .args(["--port", &free_port().to_string()])
        .env("HOME", h.scratch("user-home"))
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    // Its own group, so the guard's group SIGKILL reaches it if the test fails.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut hub = crate::support::hub::Proc(cmd.spawn().unwrap());
    let read =
        |p: &std::path::Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    crate::support::wait_for("ticks in the log", Duration::from_secs(20), || {
        read(&log).contains("[ticker] tick").then_some(())
    });
    // Fill the file system.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[b'x'; 4096]).is_ok() {}
        while f.write_all(b"x").is_ok() {}
    }
    crate::support::wait_for("the failure to be reported", Duration::from_secs(20), || {
        read(&err_path).contains("the supervisor's output failed").then_some(())
    });
    let stuck = std::fs::metadata(&log).unwrap().len();
    std::fs::remove_file(&filler).unwrap();
    crate::support::wait_for("output to resume", Duration::from_secs(20), || {
        let text = read(&log);
        let after = text.find("[supervisor] output resumed")?;
        text[after..].contains("[ticker] tick").then_some(())
    });
    assert!(std::fs::metadata(&log).unwrap().len() > stuck);
    // SAFETY: kill(2) on the hub this test started and has not reaped.
    unsafe {
        libc::kill(hub.pid() as i32, libc::SIGTERM);
    }
    let _ = hub.0.wait();
}

/// A UTF-8 byte-order mark on services.json is accepted by both readers (it used to make
/// the whole registry "not valid JSON at line 1 column 1": zero modules started).
#[test]
fn a_bom_on_services_json_is_accepted() {
    use parachute::model::services::ServicesFile;
    let json =
        r#"{"services":[{"name":"notes","port":1940,"paths":["/notes"],"health":"/health","version":"1"}]}"#;
    for (case, bytes) in
        [("plain", json.as_bytes().to_vec()), ("BOM", [&b"\xEF\xBB\xBF"[..], json.as_bytes()].concat())]
    {
        let path = std::path::Path::new("/h/services.json");
        let lenient = ServicesFile::parse_lenient(&bytes, path);
        assert_eq!(lenient.file.rows().count(), 1, "{case}: {:?}", lenient.warnings);
        let strict = ServicesFile::parse_strict(&bytes, path).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(strict.file.rows().count(), 1, "{case}");
    }
}

/// Module names that are invisible, direction-changing or look like flags are refused, and
/// a huge name is clipped wherever it is printed.
#[test]
fn hostile_module_names_are_refused_and_huge_ones_clipped() {
    use parachute::model::names::ModuleName;
    for bad in ["\u{feff}", "acme-\u{200b}zw", "acme-\u{202e}evil", "--help", "-", "a\u{7}b", ""] {
        assert!(ModuleName::parse(bad).is_err(), "{bad:?} must be refused");
    }
    let huge = "n".repeat(1_000_000);
    let shown = parachute::text::field_clipped(&huge, 64);
    assert!(shown.chars().count() < 100, "{} chars", shown.chars().count());
}

/// Runs `mount` with `args`; whether it worked.
fn mount(args: &[&std::ffi::OsStr]) -> bool {
    std::process::Command::new("mount")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The module's port accepts a connection.
fn bound(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// What a hub that could not write its home must have said (once each), and what it says
/// when the writes go through once the home accepts them again. Then the CLI finds and
/// drives it, and it stops cleanly and removes its instance record.
fn degraded_hub_recovers(
    h: &TestHome,
    s: &mut Serve,
    module: &str,
    module_port: u16,
    make_writable: impl FnOnce(),
) {
    s.wait_err("boot", |l| l.contains("boot done: 1 running"));
    assert!(bound(module_port), "{module} is up although the home cannot be written: {}", s.stderr());
    let err = s.stderr();
    for said in [
        "cannot write the operator token",
        "the CLI cannot find this hub",
        "cannot write the supervisor state file",
    ] {
        assert_eq!(err.matches(said).count(), 1, "said once: {said:?}\n{err}");
    }
    assert!(h.instance().is_none());
    let (st, _) = s.http("GET", "/health", None);
    assert_eq!(st, 200, "the control API answers");

    make_writable();
    s.wait_err("the token written", |l| l.contains("wrote the operator token"));
    s.wait_err("the instance written", |l| l.contains("hub-instance.json: the CLI can find this hub"));
    s.wait_err("the state file written", |l| l.contains("state file") && l.contains("written again"));
    let inst = h.instance().expect("hub-instance.json written after recovery");
    assert_eq!(inst["pid"].as_u64(), Some(u64::from(s.pid())));
    let state = s.state(h, module);
    assert_eq!(state["status"], "running", "{state}");
    let out = h.cli(&["status"]);
    assert!(out.status.success(), "the CLI reaches the recovered hub: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(module), "{out:?}");
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(20)).code(), Some(0), "{}", s.stderr());
    assert!(h.instance().is_none(), "hub-instance.json is removed at the clean stop");
}

/// Unmounts (lazily) when dropped, pass or fail.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A read-only home (a real read-only bind mount) used to stop the hub from starting at
/// all: it could not create `serve.lock`, mint the token or write `hub-instance.json`, so
/// every module was down. Now it supervises from memory, keeps a second hub off the home
/// (the home directory's own lock), says what it could not write, and writes it all once
/// the home is writable again.
#[test]
fn a_read_only_home_still_runs_its_modules_and_recovers() {
    let h = TestHome::new();
    let module_port = free_port();
    h.fixture("ro-mod", module_port, &[]);
    let home = h.home();
    let ok = mount(&["--bind".as_ref(), home.as_os_str(), home.as_os_str()]);
    if !crate::support::needs_root_feature("a_read_only_home_…", ok, "a bind mount (root)") {
        return;
    }
    let _guard = Unmount(home.clone());
    assert!(mount(&["-o".as_ref(), "remount,bind,ro".as_ref(), home.as_os_str()]), "remount read-only");
    assert!(std::fs::write(home.join("probe"), "x").is_err(), "the home is read-only");

    let mut s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("the lock fallback", |l| l.contains("running without the serve lock file"));
    s.wait_err("boot", |l| l.contains("boot done: 1 running"));
    // The home directory's lock keeps a second hub away even without serve.lock.
    let mut second = Serve::start(&h, free_port(), &[]);
    assert_eq!(second.wait_exit(Duration::from_secs(20)).code(), Some(1), "{}", second.stderr());
    assert!(second.stderr().contains("already runs for the home"), "{}", second.stderr());
    assert!(bound(module_port), "the second hub touched nothing");

    let remount = home.clone();
    degraded_hub_recovers(&h, &mut s, "ro-mod", module_port, move || {
        assert!(mount(&["-o".as_ref(), "remount,bind,rw".as_ref(), remount.as_os_str()]), "remount rw");
    });
    assert!(s.stderr().contains("created and locked"), "{}", s.stderr());
    assert!(home.join("hub/run/serve.lock").exists());
}

/// The same on a real full file system (a tmpfs filled to the last byte): the hub starts,
/// supervises, says what it could not write and writes it once space is freed.
#[test]
fn a_full_home_still_runs_its_modules_and_recovers() {
    let h = TestHome::new();
    let home = h.home();
    let ok = mount(&[
        "-t".as_ref(),
        "tmpfs".as_ref(),
        "-o".as_ref(),
        "size=256k,mode=0755".as_ref(),
        "tmpfs".as_ref(),
        home.as_os_str(),
    ]);
    if !crate::support::needs_root_feature("a_full_home_…", ok, "a tmpfs mount (root)") {
        return;
    }
    let _guard = Unmount(home.clone());
    let module_port = free_port();
    h.fixture("full-mod", module_port, &[]);
    let filler = home.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[b'x'; 4096]).is_ok() {}
        while f.write_all(b"x").is_ok() {}
    }
    assert!(std::fs::write(home.join("probe"), "x").is_err(), "the home is full");

    let mut s = Serve::ready(&h, free_port(), &[]);
    degraded_hub_recovers(&h, &mut s, "full-mod", module_port, move || {
        std::fs::remove_file(&filler).unwrap()
    });
}

/// A spawn that fails because the hub is out of descriptors (a real `RLIMIT_NOFILE`,
/// lowered on the running hub) is retried with backoff and the module comes back once the
/// limit is restored; it used to stay `crashed` for good.
#[cfg(target_os = "linux")]
#[test]
fn a_spawn_that_fails_for_lack_of_descriptors_is_retried() {
    let h = TestHome::new();
    h.fixture("fdmod", free_port(), &[]);
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("boot", |l| l.contains("boot done: 1 running"));
    let pid = s.state(&h, "fdmod")["pid"].as_u64().unwrap() as u32;
    let hub = s.pid() as libc::pid_t;
    let mut saved = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // Only the soft limit: the hub's own user may raise it back up to the hard one.
    // SAFETY: prlimit on the hub this test started; the structs outlive the calls.
    unsafe {
        assert_eq!(libc::prlimit(hub, libc::RLIMIT_NOFILE, std::ptr::null(), &mut saved), 0);
        let low = libc::rlimit { rlim_cur: 3, rlim_max: saved.rlim_max };
        assert_eq!(libc::prlimit(hub, libc::RLIMIT_NOFILE, &low, std::ptr::null_mut()), 0);
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let line = s.wait_out("a transient failure and a retry", |l| {
        l.contains("fdmod not started") && l.contains("EMFILE") && l.contains("retrying in")
    });
    assert!(line.contains("attempt 1 of"), "{line}");
    // SAFETY: as above.
    unsafe {
        assert_eq!(libc::prlimit(hub, libc::RLIMIT_NOFILE, &saved, std::ptr::null_mut()), 0);
    }
    let st = s.wait_state(&h, "fdmod", "fdmod running again", |v| {
        v["status"] == "running" && v["pid"].as_u64() != Some(u64::from(pid)) && v["startError"].is_null()
    });
    assert!(alive(st["pid"].as_u64().unwrap() as u32));
}

/// An environment too large to exec (a real 200 kB `.env` value: `E2BIG`) is reported with
/// the variable, the `.env` file it came from and its size — not just "Argument list too
/// long".
#[cfg(target_os = "linux")]
#[test]
fn an_oversized_env_file_is_named_with_its_variable_and_size() {
    let h = TestHome::new();
    h.fixture("bigenv", free_port(), &[]);
    let env_dir = h.home().join("bigenv");
    std::fs::create_dir_all(&env_dir).unwrap();
    let env_file = env_dir.join(".env");
    std::fs::write(&env_file, format!("SMALL=1\nHUGE_BLOB={}\n", "x".repeat(200_000))).unwrap();
    let s = Serve::ready(&h, free_port(), &[]);
    let st = s.wait_state(&h, "bigenv", "bigenv crashed", |v| v["status"] == "crashed");
    let e = &st["startError"];
    assert_eq!(e["error_type"], "spawn_failed", "{st}");
    let text = e["error_description"].as_str().unwrap();
    assert!(text.contains("the variable HUGE_BLOB"), "{text}");
    assert!(text.contains(&env_file.display().to_string()), "{text}");
    assert!(text.contains("200011 bytes"), "{text}");
    assert!(text.contains("E2BIG"), "{text}");
}

/// Each module's cgroup is recorded beside its process group in the state file.
#[cfg(target_os = "linux")]
#[test]
fn each_module_s_cgroup_is_recorded_in_the_state_file() {
    let h = TestHome::new();
    h.fixture("cg-mod", free_port(), &[]);
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("boot", |l| l.contains("boot done: 1 running"));
    let pid = s.state(&h, "cg-mod")["pid"].as_u64().unwrap();
    let raw = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let expected = procfs::parse_cgroup(&raw).expect("a cgroup line");
    let entry = crate::support::wait_for("the state file entry", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(h.home().join("hub/run/supervised.json")).ok()?;
        let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
        doc["modules"].as_array()?.iter().find(|m| m["pid"].as_u64() == Some(pid)).cloned()
    });
    assert_eq!(entry["cgroup"].as_str(), Some(expected.as_str()), "{entry}");
}
