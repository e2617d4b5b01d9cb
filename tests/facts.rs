//! Fail closed where a process fact is unknown (the macOS issue: the old non-Linux fallback
//! answered "no process, port free" and the cutover deleted live daemons' pidfiles). The
//! facts are injected in-process (`cutover::Config::facts`): the host's real facts
//! everywhere else, facts that cannot be established here.

use std::sync::Arc;
use std::time::Duration;

use parachute::cutover::report::Quiet;
use parachute::cutover::{self, Config, Outcome, Timeouts};
use parachute::model::home::Home;
use parachute_manager::Scope;
use parachute_process::NoFacts;

use crate::support::legacy_box::{LegacyBox, alive, holders};
use crate::support::{free_port, parachute_bin};

/// With process facts unavailable, `migrate --to-supervised` stops at step 1, before it
/// asks the manager anything, and says what it could not verify: every live daemon keeps
/// running under the same identity with its pidfile, a pidfile naming a dead pid is kept
/// too (unknown is not "gone"), no journal is written, nothing is signalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_process_facts_unavailable_the_cutover_stops_before_touching_anything() {
    let mut b = LegacyBox::new();
    let (hp, ap, dp) = (free_port(), free_port(), free_port());
    let hub = b.hub(hp);
    let alpha = b.module("parachute-alpha", ap);
    b.declare("parachute-dead", dp);
    let dead_pidfile = b.pidfile("parachute-dead");
    std::fs::create_dir_all(dead_pidfile.parent().unwrap()).unwrap();
    std::fs::write(&dead_pidfile, "4194000\n").unwrap();
    let before: Vec<_> = ["hub", "parachute-alpha", "parachute-dead"]
        .iter()
        .map(|n| {
            let p = if *n == "hub" { b.home().join("hub/run/hub.pid") } else { b.pidfile(n) };
            (p.clone(), std::fs::read(&p).unwrap())
        })
        .collect();

    let home = Home::new(b.home()).unwrap();
    let exec = parachute_bin();
    let cfg = Config {
        spec: parachute::hub_unit::hub_unit_spec(&home, hp, &exec, Some(b.root()), None, None),
        home,
        port: hp,
        exec,
        dry_run: false,
        lock_wait: Duration::ZERO,
        timeouts: Timeouts { stop_grace: Duration::from_secs(2), ..Timeouts::default() },
        rerun: "parachute migrate --to-supervised".into(),
        facts: Arc::new(NoFacts::new("process facts injected as unavailable by the test")),
    };
    // A manager that would refuse anyway: the outcome proves the facts gate came first.
    let manager = parachute_container::NoManager::new(Scope::User, "no manager in this test");
    let report = cutover::migrate(&cfg, &manager, &mut Quiet).await;

    assert_eq!(report.outcome, Outcome::Unverifiable, "{:#?}", report.messages);
    let text = report.messages.join("\n");
    for needle in [
        format!("names pid {}", hub.pid),
        format!("names pid {}", alpha.pid),
        "names pid 4194000".to_owned(),
        format!("Port {hp} (hub)"),
        format!("Port {ap} (parachute-alpha)"),
        "injected as unavailable by the test".to_owned(),
        "Nothing was stopped, signalled, deleted or written.".to_owned(),
    ] {
        assert!(text.contains(&needle), "the report names {needle:?}:\n{text}");
    }
    assert_eq!(report.steps.len(), 1, "only step 1 ran: {:?}", report.steps);
    assert_eq!(report.steps[0].status, "failed");

    assert!(alive(&hub) && alive(&alpha), "no daemon was stopped");
    assert_eq!(holders(hp), vec![hub.pid], "the hub still holds its port");
    assert_eq!(holders(ap), vec![alpha.pid]);
    for (path, bytes) in before {
        assert_eq!(std::fs::read(&path).ok(), Some(bytes), "{} is untouched", path.display());
    }
    assert!(b.home().join("hub/run/hub.port").exists());
    assert!(!b.home().join("hub/run/migrate-journal.json").exists(), "no journal was written");
}

/// launchd restarts a `KeepAlive` job forever; the hub keeps its own ceiling. With a budget
/// of 2 starts in 300 s and two recent starts recorded, the third start says so in the log
/// and exits 0 (which `KeepAlive = { SuccessfulExit = false }` does not restart); an
/// operator's `parachute unit start` clears the record; a malformed budget is a usage error.
#[test]
fn the_hub_stops_a_crash_loop_itself_and_unit_start_clears_it() {
    use std::process::Stdio;
    let h = crate::support::hub::TestHome::new();
    let record = h.home().join("hub/run/boots.json");
    std::fs::create_dir_all(record.parent().unwrap()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    std::fs::write(&record, format!("[{}, {}]", now - 20, now - 10)).unwrap();
    let serve = |budget: &str| {
        let mut cmd = crate::support::parachute();
        cmd.args(["serve", "--port", &free_port().to_string(), "--home"]).arg(h.home());
        cmd.env("HOME", h.scratch("user-home")).env("PARACHUTE_BOOT_BUDGET", budget);
        let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        crate::support::hub::wait_output(child, Duration::from_secs(20))
    };
    let out = serve("2/300");
    assert_eq!(out.status.code(), Some(0), "{}", crate::support::show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[hub] crash loop: 3 starts in the last 300s, over the budget of 2"), "{err}");
    assert!(err.contains("parachute unit start"), "{err}");

    let bad = serve("five");
    assert_eq!(bad.status.code(), Some(2), "{}", crate::support::show(&bad));

    // `unit start` clears the record before it asks the manager (there is none here).
    let _ = h.cli(&["unit", "start", "--scope", "user"]);
    assert!(!record.exists(), "unit start forgets the recorded starts");
}
