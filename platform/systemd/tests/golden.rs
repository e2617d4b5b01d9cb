//! Golden files: the rendered units must equal `units/*.service` byte for byte.
//!
//! The goldens are reviewed by hand and never written by tests; a difference fails with a
//! readable diff, and a missing golden fails with the rendered text to review.

use std::path::{Path, PathBuf};

use parachute_manager::{CrashLoop, Scope, UnitId, UnitSpec};
use parachute_systemd::{diff, render_unit};

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../units")
}

fn check(name: &str, rendered: &str) {
    let path = units_dir().join(name);
    let golden = match std::fs::read_to_string(&path) {
        Ok(g) => g,
        Err(e) => panic!(
            "golden file {} is missing ({e}). Review this rendering and save it there by hand:\n{rendered}",
            path.display()
        ),
    };
    if golden != rendered {
        panic!(
            "{} differs from the rendering:\n{}",
            path.display(),
            diff::unified(&golden, rendered, &format!("{} (golden)", path.display()), "rendered")
        );
    }
}

/// The hub unit as `parachute unit install` builds it for user `op` with the default home.
fn hub() -> UnitSpec {
    UnitSpec {
        id: UnitId::hub(),
        description: "Parachute hub (serve + supervisor)".into(),
        argv: ["/usr/local/bin/parachute", "serve", "--home", "/home/op/.parachute", "--port", "1939"]
            .map(String::from)
            .to_vec(),
        env: vec![
            ("PARACHUTE_HOME".into(), "/home/op/.parachute".into()),
            (
                "PATH".into(),
                "/home/op/.bun/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/home/op/.local/bin"
                    .into(),
            ),
        ],
        working_dir: Some("/home/op/.parachute".into()),
        log_path: "/home/op/.parachute/hub/logs/hub.log".into(),
        crash_loop: Some(CrashLoop { interval_sec: 300, burst: 5, throttle_sec: 5 }),
        run_as_user: Some("op".into()),
        readiness: parachute_manager::Readiness::Notify { start_timeout_sec: 60, watchdog_sec: Some(20) },
        hardened: true,
        log_to_journal: true,
        log_file_args: Vec::new(),
    }
}

#[test]
fn hub_user_unit_matches_golden() {
    check("parachute-hub.user.service", &render_unit(&hub(), Scope::User).unwrap());
}

#[test]
fn hub_system_unit_matches_golden() {
    check("parachute-hub.system.service", &render_unit(&hub(), Scope::System).unwrap());
}

/// Hostile but representable values: how each is written down.
#[test]
fn hostile_values_unit_matches_golden() {
    let spec = UnitSpec {
        id: UnitId::new("hostile").unwrap(),
        description: "100% \"quoted\" \\ $HOME; <xml & co>".into(),
        argv: [
            "/opt/my app/bin/run",
            "a b",
            "quote\"d",
            "back\\slash",
            "%h",
            "$HOME",
            "${X}",
            ";",
            "",
            "ünï €",
        ]
        .map(String::from)
        .to_vec(),
        env: vec![
            ("SPACES".into(), "a b  c".into()),
            ("QUOTES".into(), "'single' \"double\"".into()),
            ("SPECIFIERS".into(), "%h %u %%".into()),
            ("DOLLARS".into(), "$HOME ${PATH} $$".into()),
            ("EMPTY".into(), "".into()),
        ],
        working_dir: Some("/srv/odd dir/100%".into()),
        log_path: "/var/log/odd \"dir\"/%n.log".into(),
        crash_loop: None,
        run_as_user: None,
        readiness: parachute_manager::Readiness::Exec,
        hardened: false,
        log_to_journal: false,
        log_file_args: Vec::new(),
    };
    check("parachute-hostile.user.service", &render_unit(&spec, Scope::User).unwrap());
}
