//! `parachute unit …` and backend detection against a real, private `systemd --user`.
//!
//! The CLI runs inside the sandbox's mount namespace (`systemd-sandbox.sh exec`), where
//! `/run/systemd/system` exists, and reaches the sandbox manager through the
//! `DBUS_SESSION_BUS_ADDRESS`/`XDG_RUNTIME_DIR` that `exec` sets; `DBUS_SYSTEM_BUS_ADDRESS`
//! points at a socket that does not exist, so the host's system manager is never touched.
//! The backend crate's own verbs are covered in platform/systemd/tests.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use parachute::detect::{self, Backend, HostFacts, SYSTEMD_BOOTED_MARKER};
use parachute_manager::{AfterInstall, Change, CrashLoop, Scope, ServiceManager, UnitId, UnitSpec};
use serde_json::Value;

use crate::support::sandbox::Sandbox;
use crate::support::{fixture_bin, free_port, parachute_bin, wait_for};

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("units")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd-sandbox.sh")
}

/// `parachute unit <args>` inside the sandbox, with a clean environment.
fn unit_in(sb: &Sandbox, args: &[&str]) -> Output {
    let no_system_bus = format!("unix:path={}/no-system-bus", sb.dir().display());
    crate::support::isolated("bash")
        .arg(script())
        .arg("exec")
        .arg(sb.dir())
        .arg("--")
        .arg(parachute_bin())
        .arg("unit")
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", no_system_bus)
        .output()
        .expect("run parachute unit")
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn unit_render_matches_the_golden_files() {
    for (scope, golden) in
        [("user", "parachute-hub.user.service"), ("system", "parachute-hub.system.service")]
    {
        // A system unit's account is the home's owner, or --user; `op` has no password
        // entry on the test host, so its PATH has no home directories (the golden file's
        // PATH, with them, is pinned by the unit builder's own test in src/hooks/installed.rs).
        let out = crate::support::parachute()
            .args(["unit", "render", "--scope", scope, "--home", "/home/op/.parachute"])
            .args(["--port", "1939", "--exec", "/usr/local/bin/parachute", "--user", "op"])
            .env("HOME", "/home/op")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut want = std::fs::read_to_string(units_dir().join(golden)).expect("golden file");
        if scope == "system" {
            want = want.replace("/home/op/.bun/bin:", "").replace(":/home/op/.local/bin", "");
        }
        let got = String::from_utf8(out.stdout).unwrap();
        assert!(
            got == want,
            "{golden}:\n{}",
            parachute_systemd::diff::unified(&want, &got, "golden", "parachute unit render")
        );
    }
}

#[test]
fn unit_render_refuses_a_hostile_home_with_exit_2() {
    let out = crate::support::parachute()
        .args(["unit", "render", "--scope", "user", "--home", "/srv/a\nExecStartPre=/bin/sh"])
        .args(["--exec", "/usr/local/bin/parachute"])
        .env("HOME", "/home/op")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
}

#[test]
fn unit_install_status_remove_json_against_a_sandbox() {
    let Some(sb) = Sandbox::start("cli_unit") else { return };
    let home = sb.dir().join("home/.parachute");
    let port = free_port().to_string();
    let exe = parachute_bin();
    let common = ["--scope", "user", "--home", home.to_str().unwrap(), "--json"];
    let install: Vec<&str> = ["install"]
        .into_iter()
        .chain(common)
        .chain(["--port", &port, "--exec", exe.to_str().unwrap()])
        .collect();

    let out = unit_in(&sb, &install);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json_of(&out);
    assert_eq!(v["verb"], "install");
    assert_eq!(v["backend"], "systemd-user");
    assert_eq!(v["change"], "changed");
    assert_eq!(v["status"]["active"], true);
    let pid = v["status"]["main_pid"].as_u64().expect("a main pid") as u32;
    assert_eq!(v["path"], sb.unit_dir().join("parachute-hub.service").to_str().unwrap());
    // The hub itself runs under the manager and answers on its port.
    wait_for("the hub to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).ok()
    });
    // The hub logs to the journal (StandardOutput=journal), the sandbox's own.
    wait_for("the hub's listening line in the journal", Duration::from_secs(10), || {
        let out = crate::support::isolated("bash")
            .arg(script())
            .args(["exec"])
            .arg(sb.dir())
            .args(["--", "journalctl", "-D", sb.var("SYSTEMD_SANDBOX_JOURNAL_DIR")])
            .args(["--user-unit", "parachute-hub.service", "-o", "cat", "--no-pager"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("[hub] listening on").then_some(())
    });

    let v = json_of(&unit_in(&sb, &install));
    assert_eq!(v["change"], "already-in-place");
    assert_eq!(v["status"]["main_pid"].as_u64(), Some(u64::from(pid)));

    let status: Vec<&str> = ["status"].into_iter().chain(common).collect();
    let v = json_of(&unit_in(&sb, &status));
    assert_eq!(v["status"]["scope"], "user");
    assert_eq!(v["status"]["enabled"], true);
    assert_eq!(v["status"]["state_text"], "active/running");

    let remove: Vec<&str> = ["remove"].into_iter().chain(common).collect();
    let out = unit_in(&sb, &remove);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json_of(&out)["change"], "changed");
    assert!(!sb.unit_dir().join("parachute-hub.service").exists());
    let v = json_of(&unit_in(&sb, &status));
    assert_eq!(v["status"]["scope"], Value::Null);
    assert_eq!(json_of(&unit_in(&sb, &remove))["change"], "already-in-place");

    // start of a unit that is not installed: a JSON error and exit 1.
    let start: Vec<&str> = ["start"].into_iter().chain(common).collect();
    let out = unit_in(&sb, &start);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_of(&out)["error"]["kind"], "not-found");
}

#[test]
fn unit_verbs_without_a_manager_exit_4_and_say_why() {
    // Outside the sandbox namespace there is no /run/systemd/system on this host.
    let tmp = tempfile::tempdir().unwrap();
    let out = crate::support::parachute()
        .args(["unit", "status", "--scope", "user", "--json", "--home"])
        .arg(tmp.path())
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    if Path::new("/").join(SYSTEMD_BOOTED_MARKER).exists() {
        // A host booted with systemd: the user's own manager may answer; nothing to assert.
        return;
    }
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json_of(&out);
    assert_eq!(v["error"]["kind"], "manager-unavailable");
    assert!(v["error"]["message"].as_str().unwrap().contains(SYSTEMD_BOOTED_MARKER), "{v}");
}

/// Detection with the root pointed at a directory holding `run/systemd/system`, and the
/// sandbox's bus: systemd is chosen, with the manager's own unit directory; the fixture
/// module then runs under it as a unit and answers on its port.
#[tokio::test]
async fn detection_picks_systemd_when_booted_and_the_bus_answers() {
    let Some(sb) = Sandbox::start("detect_systemd") else { return };
    let root = tempfile::tempdir().unwrap();
    let facts = HostFacts {
        root: root.path().to_path_buf(),
        os: "linux",
        euid: 1000,
        session_bus_address: Some(sb.bus_address().to_owned()),
        xdg_runtime_dir: Some(sb.var("XDG_RUNTIME_DIR").into()),
        system_bus_address: Some(format!("unix:path={}/no-system-bus", sb.dir().display())),
        user_config_dir: Some(sb.var("XDG_CONFIG_HOME").into()),
        user_home: Some(sb.var("HOME").into()),
        invoking_uid: 1000,
    };
    let t = Duration::from_secs(10);
    assert!(
        matches!(detect::backend(&facts, Scope::User, t).await, Backend::None(_)),
        "not booted: no systemd"
    );
    std::fs::create_dir_all(root.path().join(SYSTEMD_BOOTED_MARKER)).unwrap();
    let backend = detect::backend(&facts, Scope::User, t).await;
    assert_eq!(backend.kind(), "systemd-user");
    assert_eq!(backend.as_systemd().unwrap().unit_dir(), sb.unit_dir());

    let port = free_port();
    let spec = UnitSpec {
        id: UnitId::new("fixture").unwrap(),
        description: "fixture module under systemd".into(),
        argv: vec![fixture_bin().to_string_lossy().into_owned(), "--port".into(), port.to_string()],
        env: vec![("FIXTURE_NOTE".into(), "100% \"real\"".into())],
        working_dir: None,
        log_path: sb.dir().join("logs/fixture.log"),
        crash_loop: Some(CrashLoop { interval_sec: 60, burst: 5, throttle_sec: 1 }),
        run_as_user: None,
        readiness: parachute_manager::Readiness::Exec,
        hardened: false,
        log_to_journal: false,
        log_file_args: Vec::new(),
    };
    assert_eq!(backend.install(&spec, AfterInstall::Start).await.unwrap(), Change::Changed);
    wait_for("the fixture to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let log = std::fs::read_to_string(&spec.log_path).unwrap_or_default();
    assert!(log.contains("ready pid="), "the fixture's stdout goes to the log file: {log:?}");
    assert_eq!(backend.teardown(&spec.id).await.unwrap(), Change::Changed);
    wait_for("the port to be released", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).err()
    });
}
