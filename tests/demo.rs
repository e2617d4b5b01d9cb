//! `scripts/demo.sh` end to end: the README's first command must keep working. It runs
//! for real (a private systemd sandbox, detached legacy daemons, the cutover, a SIGKILLed
//! module, teardown) with the binaries this test was built with, and must exit 0 having
//! printed each step's check, leaving its temp dir removed.
//!
//! The script runs in its own process group and is killed with it if it overruns its
//! deadline; its systemd sandbox has a dead-man switch on the script's pid, so even then
//! nothing is left behind. It uses free ports (`PARACHUTE_DEMO_FREE_PORTS=1`) so that it
//! cannot collide with another run of the suite on the canonical ports.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::parachute_bin;

const DEADLINE: Duration = Duration::from_secs(150);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[expect(clippy::disallowed_methods, reason = "the documented opt-out switch of the systemd tests")]
fn skip_requested() -> bool {
    std::env::var_os("PARACHUTE_SKIP_SYSTEMD_TESTS").is_some_and(|v| v == "1")
}

/// Sends every line of `r` to `tx`, prefixed with the stream's name.
fn pump(r: impl Read + Send + 'static, name: &'static str, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(format!("{name}: {line}")).is_err() {
                break;
            }
        }
    });
}

#[test]
fn the_demo_tells_the_whole_story_and_cleans_up() {
    if skip_requested() {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIPPED demo: PARACHUTE_SKIP_SYSTEMD_TESTS=1 (it needs root)"
        );
        return;
    }
    assert!(
        is_root(),
        "scripts/demo.sh needs root: it starts a private systemd --user sandbox (cgroups, mount namespace). \
         Run the tests as root, or set PARACHUTE_SKIP_SYSTEMD_TESTS=1 to skip it."
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.sh");
    let bin_dir = parachute_bin().parent().unwrap().to_path_buf();
    let mut child = Command::new("bash")
        .arg(&script)
        .env("PARACHUTE_DEMO_BIN_DIR", &bin_dir)
        .env("PARACHUTE_DEMO_FREE_PORTS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    pump(child.stdout.take().unwrap(), "out", tx.clone());
    pump(child.stderr.take().unwrap(), "err", tx);

    // Lines are collected while waiting; EOF is never waited for (a stray grandchild could
    // hold the pipe), only the script's own exit, under the deadline.
    let start = Instant::now();
    let mut lines: Vec<String> = Vec::new();
    let status = loop {
        while let Ok(l) = rx.try_recv() {
            lines.push(l);
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > DEADLINE {
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            panic!(
                "scripts/demo.sh did not finish within {DEADLINE:?}; output so far:\n{}",
                lines.join("\n")
            );
        }
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
            lines.push(l);
        }
    };
    // What was written before the exit is in the pipe; give the readers a moment to drain it.
    let drain = Instant::now() + Duration::from_secs(2);
    while let Ok(l) = rx.recv_timeout(drain.saturating_duration_since(Instant::now())) {
        lines.push(l);
    }
    let all = lines.join("\n");
    assert!(status.success(), "scripts/demo.sh failed ({status}):\n{all}");
    for want in [
        "1. Build the binaries",
        "out:    $ scripts/systemd-sandbox.sh start",
        "a one-line hint",
        "$ parachute migrate --to-supervised --scope user --home",
        "[9/9] verify",
        "✓ outcome migrated",
        "Already migrated",
        "3 of 3 modules running, each a child of the hub",
        "now pid",
        "both lives of",
        "upgraded in place (pid",
        "(systemd saw no restart), now the new build",
        "Removed the hub unit parachute-hub.service",
        "✓ the unit is gone and nothing listens on ports",
        "Done in",
    ] {
        assert!(all.contains(want), "the demo's output lacks {want:?}:\n{all}");
    }
    assert!(!all.contains("FAILED"), "{all}");
    // The temp dir named in the output is gone.
    let home = all
        .split_whitespace()
        .find(|w| w.contains("parachute-demo.") && w.ends_with("/home"))
        .unwrap_or_else(|| panic!("no temp home in the output:\n{all}"));
    let tmp = Path::new(home).parent().unwrap();
    assert!(!tmp.exists(), "{} is left behind", tmp.display());
}
