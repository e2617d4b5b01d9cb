//! The hub under its own faults: stray signals, a long stop timeout, a crashed hub's
//! leftovers, a full output, bad input files.

use std::time::{Duration, Instant};

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
