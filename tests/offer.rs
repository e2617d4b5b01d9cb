//! The migration offer of `parachute start|stop|restart` (issue 5) on a real legacy box:
//! detached fixture daemons with pidfiles and no supervised hub. Off a terminal the verb
//! prints one line naming `parachute migrate --to-supervised --home …`, changes nothing and
//! exits as it would have without the offer; stale or reused pidfiles are not evidence.
//!
//! The binary runs with a cleared environment whose system bus does not exist and with no
//! user session, so the "is a hub unit installed?" question can never reach the host's
//! managers (outside a systemd sandbox there is none to find).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use parachute::model::hub_instance::HubInstance;

use crate::support::free_port;
use crate::support::hub::wait_output;
use crate::support::legacy_box::{LegacyBox, alive, holders};

fn cli(b: &LegacyBox, args: &[&str]) -> Output {
    let child = crate::support::parachute()
        .args(args)
        .arg("--home")
        .arg(b.home())
        .env("HOME", b.root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(30))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A `hub-instance.json` pointing the CLI at `port` (a hub that ran once and is gone, or
/// whatever holds that port), so the test does not depend on who holds 1939 here.
fn instance_on(home: &Path, port: u16) {
    let gone = {
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    HubInstance::new(gone, port, "stale-instance".into(), time::OffsetDateTime::now_utc())
        .write(&home.join("hub-instance.json"))
        .unwrap();
}

fn hint_lines(err: &str) -> Vec<&str> {
    err.lines().filter(|l| l.contains("parachute migrate --to-supervised --home")).collect()
}

#[test]
fn start_stop_restart_on_a_legacy_box_hint_the_migration_and_change_nothing() {
    let mut b = LegacyBox::new();
    let (hp, ap) = (free_port(), free_port());
    let hub = b.hub(hp);
    let alpha = b.module("parachute-alpha", ap);
    instance_on(&b.home(), free_port());
    for args in [&["start", "parachute-alpha"][..], &["stop"], &["restart", "parachute-alpha", "--json"]] {
        let out = cli(&b, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: the no-hub exit code is kept\n{err}");
        assert!(err.contains("no hub is running"), "{args:?}: the usual error comes first\n{err}");
        let hints = hint_lines(&err);
        assert_eq!(hints.len(), 1, "{args:?}: exactly one hint line\n{err}");
        let h = hints[0];
        assert!(h.contains(&b.home().display().to_string()), "{h}");
        assert!(
            h.contains(&format!("hub pid {}", hub.pid)) && h.contains(&format!("pid {}", alpha.pid)),
            "{h}"
        );
        assert!(!err.contains("[y/N]"), "no prompt off a terminal\n{err}");
    }
    assert!(alive(&hub) && alive(&alpha), "the offer changes nothing");
    assert!(b.pidfile("parachute-alpha").exists() && b.home().join("hub/run/hub.pid").exists());
    assert!(!b.home().join("hub/run/migrate-journal.json").exists(), "no cutover ran");
}

#[test]
fn the_legacy_hub_answering_on_the_hub_port_still_counts_as_no_hub() {
    let mut b = LegacyBox::new();
    let hp = free_port();
    let hub = b.hub(hp);
    // The CLI probes the legacy hub itself: it answers, but it is not a supervised hub.
    instance_on(&b.home(), hp);
    let out = cli(&b, &["start", "parachute-alpha"]);
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert_eq!(hint_lines(&err).len(), 1, "{err}");
    assert!(alive(&hub) && holders(hp) == vec![hub.pid]);
}

#[test]
fn stale_or_reused_pidfiles_and_foreign_port_holders_get_no_offer() {
    let mut b = LegacyBox::new();
    // A module pidfile naming a process that is gone.
    let vp = free_port();
    let gone = b.module("parachute-alpha", vp);
    parachute_process::signal_identity(&gone, parachute_process::Signal::Kill, true).unwrap();
    crate::support::wait_for("the legacy module to die", Duration::from_secs(10), || {
        (!alive(&gone)).then_some(())
    });
    // A hub pidfile whose pid now belongs to an unrelated program.
    let sleeper = b.unrelated_sleeper();
    std::fs::create_dir_all(b.home().join("hub/run")).unwrap();
    std::fs::write(b.home().join("hub/run/hub.pid"), format!("{}\n", sleeper.pid)).unwrap();
    instance_on(&b.home(), free_port());
    let out = cli(&b, &["start", "parachute-alpha"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(hint_lines(&err).is_empty(), "no live legacy daemon, no offer\n{err}");

    // A live legacy module, but the probed port is held by something that is not ours.
    let mut c = LegacyBox::new();
    c.module("parachute-beta", free_port());
    let sp = free_port();
    c.squatter(sp);
    instance_on(&c.home(), sp);
    let out = cli(&c, &["start", "parachute-beta"]);
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(hint_lines(&err).is_empty(), "a foreign responder is not 'no hub'\n{err}");
}

#[test]
fn status_on_a_legacy_box_shows_the_daemons_and_names_the_migration() {
    let mut b = LegacyBox::new();
    let (hp, ap, gp) = (free_port(), free_port(), free_port());
    let hub = b.hub(hp);
    let alpha = b.module("parachute-alpha", ap);
    b.declare("parachute-gamma", gp);
    // The CLI probes the hub port, where the legacy hub itself answers.
    instance_on(&b.home(), hp);
    let out = cli(&b, &["status"]);
    let (text, err) = (String::from_utf8_lossy(&out.stdout).into_owned(), stderr(&out));
    assert_eq!(out.status.code(), Some(11), "{text}{err}");
    assert!(!text.contains("Stop whatever holds the port") && !err.contains("Stop whatever"), "{text}{err}");
    assert!(text.contains("legacy detached daemons"), "{text}");
    let row =
        |name: &str| text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {text}"));
    let hub_row: Vec<&str> = row("hub").split_whitespace().collect();
    assert_eq!(hub_row[1..3], [hub.pid.to_string(), hp.to_string()], "{text}");
    assert!(row("hub").contains("running, listening"), "{text}");
    assert!(row("parachute-alpha").contains(&alpha.pid.to_string()), "{text}");
    assert!(row("parachute-alpha").contains("running, listening"), "{text}");
    assert!(row("parachute-gamma").contains("no pidfile"), "{text}");
    assert!(text.contains(&b.pidfile("parachute-alpha").display().to_string()), "{text}");
    assert!(
        text.contains(&format!("parachute migrate --to-supervised --home {}", b.home().display())),
        "{text}"
    );

    let out = cli(&b, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(11));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["legacy"], true, "{v}");
    let daemons = v["daemons"].as_array().unwrap();
    let a = daemons.iter().find(|d| d["name"] == "parachute-alpha").unwrap();
    assert!(a["alive"] == true && a["listening"] == true && a["pid"] == alpha.pid, "{v}");

    // `start` on the same box names the legacy hub as such, never as a stranger to stop.
    let out = cli(&b, &["start", "parachute-alpha"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(!err.contains("Stop whatever holds the port"), "{err}");
    assert!(err.contains("held by this box's legacy hub"), "{err}");
    assert_eq!(hint_lines(&err).len(), 1, "{err}");
    assert!(alive(&hub) && alive(&alpha), "status and the offer change nothing");
}
