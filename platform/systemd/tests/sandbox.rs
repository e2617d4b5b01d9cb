//! The backend against a real, private `systemd --user` (one sandbox per test).
//!
//! Units run real programs (`/bin/sleep`, `/bin/sh`); every wait is on a manager job or a
//! polled condition with a deadline. Needs root; see `tests/support/sandbox.rs`.

#[path = "../../../tests/support/sandbox.rs"]
mod sandbox;

use std::path::Path;
use std::time::{Duration, Instant};

use parachute_manager::{
    AfterInstall, Change, CrashLoop, Drift, ErrorKind, Scope, ServiceManager, UnitId, UnitSpec,
};
use parachute_systemd::{SystemdManager, Timeouts, connect};
use sandbox::Sandbox;

fn timeouts() -> Timeouts {
    Timeouts {
        call: Duration::from_secs(10),
        job: Duration::from_secs(20),
        settle: Duration::from_millis(300),
    }
}

async fn backend(sb: &Sandbox) -> SystemdManager {
    SystemdManager::new(sb.connect().await, Scope::User, sb.unit_dir()).with_timeouts(timeouts())
}

fn spec(sb: &Sandbox, id: &str, argv: &[&str]) -> UnitSpec {
    UnitSpec {
        id: UnitId::new(id).unwrap(),
        description: format!("test unit {id}"),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("GREETING".into(), "hello world".into())],
        working_dir: Some(sb.dir().to_path_buf()),
        log_path: sb.dir().join("logs").join(format!("{id}.log")),
        crash_loop: Some(CrashLoop { interval_sec: 60, burst: 5, throttle_sec: 1 }),
        run_as_user: None,
        readiness: parachute_manager::Readiness::Exec,
        hardened: false,
        log_to_journal: false,
        log_file_args: Vec::new(),
    }
}

/// Alive and not a zombie (orphans of a non-systemd PID 1 linger as zombies).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')))
        .unwrap_or(false)
}

async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn wants_link(sb: &Sandbox, id: &UnitId) -> bool {
    sb.unit_dir().join("default.target.wants").join(id.systemd_unit()).symlink_metadata().is_ok()
}

#[tokio::test]
async fn install_without_start_writes_and_loads_but_neither_starts_nor_enables() {
    let Some(sb) = Sandbox::start("install_dont_start") else { return };
    let m = backend(&sb).await;
    let s = spec(&sb, "quiet", &["/bin/sleep", "300"]);
    assert_eq!(m.install(&s, AfterInstall::DontStart).await.unwrap(), Change::Changed);
    let file = m.unit_path(&s.id);
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap());
    assert_eq!(std::fs::read(&file).unwrap(), m.render(&s).unwrap());
    assert!(s.log_path.parent().unwrap().is_dir(), "install creates the log directory");

    let st = m.status(&s.id).await.unwrap();
    assert_eq!(st.scope, Some(Scope::User));
    assert!(st.loaded && !st.enabled && !st.active, "{st:?}");
    assert_eq!(st.main_pid, None);
    assert!(!wants_link(&sb, &s.id));

    assert_eq!(m.install(&s, AfterInstall::DontStart).await.unwrap(), Change::AlreadyInPlace);
    let ino2 = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap());
    assert_eq!(ino, ino2, "an unchanged unit file is not rewritten");
    assert_eq!(m.drift(&s).await.unwrap(), Drift::InSync);
}

#[tokio::test]
async fn every_verb_is_idempotent() {
    let Some(sb) = Sandbox::start("every_verb") else { return };
    let m = backend(&sb).await;
    let s = spec(&sb, "busy", &["/bin/sleep", "300"]);

    assert_eq!(m.install(&s, AfterInstall::Start).await.unwrap(), Change::Changed);
    let st = m.status(&s.id).await.unwrap();
    assert!(st.loaded && st.enabled && st.active, "{st:?}");
    let pid = st.main_pid.expect("a main pid");
    assert!(alive(pid));
    assert!(wants_link(&sb, &s.id));
    assert_eq!(m.install(&s, AfterInstall::Start).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(m.status(&s.id).await.unwrap().main_pid, Some(pid), "a converged install restarts nothing");

    assert_eq!(m.start(&s.id).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(m.stop(&s.id).await.unwrap(), Change::Changed);
    wait_until("the stopped unit's process to die", Duration::from_secs(5), || async { !alive(pid) }).await;
    let st = m.status(&s.id).await.unwrap();
    assert!(!st.active && st.main_pid.is_none(), "{st:?}");
    assert_eq!(m.stop(&s.id).await.unwrap(), Change::AlreadyInPlace);

    assert_eq!(m.start(&s.id).await.unwrap(), Change::Changed);
    let pid1 = m.status(&s.id).await.unwrap().main_pid.unwrap();
    assert_eq!(m.start(&s.id).await.unwrap(), Change::AlreadyInPlace);

    // restart always restarts: it is the one verb whose repeat is not a no-op.
    assert_eq!(m.restart(&s.id).await.unwrap(), Change::Changed);
    let pid2 = m.status(&s.id).await.unwrap().main_pid.unwrap();
    assert_ne!(pid1, pid2);
    assert_eq!(m.restart(&s.id).await.unwrap(), Change::Changed);
    assert_ne!(m.status(&s.id).await.unwrap().main_pid.unwrap(), pid2);

    assert_eq!(m.disable(&s.id).await.unwrap(), Change::Changed);
    let st = m.status(&s.id).await.unwrap();
    assert!(!st.enabled && !st.active && st.file.is_some(), "disable keeps the file: {st:?}");
    assert!(!wants_link(&sb, &s.id));
    assert_eq!(m.disable(&s.id).await.unwrap(), Change::AlreadyInPlace);

    assert_eq!(m.teardown(&s.id).await.unwrap(), Change::Changed);
    assert!(!m.unit_path(&s.id).exists());
    let st = m.status(&s.id).await.unwrap();
    assert_eq!(st.scope, None, "{st:?}");
    assert_eq!(m.teardown(&s.id).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(m.drift(&s).await.unwrap(), Drift::NotInstalled);
}

#[tokio::test]
async fn drift_is_reported_and_install_repairs_it_by_restarting() {
    let Some(sb) = Sandbox::start("drift_repair") else { return };
    let m = backend(&sb).await;
    let s = spec(&sb, "drifty", &["/bin/sleep", "300"]);
    m.install(&s, AfterInstall::Start).await.unwrap();
    let pid = m.status(&s.id).await.unwrap().main_pid.unwrap();
    assert_eq!(m.drift(&s).await.unwrap(), Drift::InSync);

    // Someone edits the file by hand.
    let file = m.unit_path(&s.id);
    let edited = std::fs::read_to_string(&file).unwrap().replace("\"300\"", "\"301\"");
    std::fs::write(&file, edited).unwrap();
    match m.drift(&s).await.unwrap() {
        Drift::FileDiffers { diff } => {
            assert!(diff.contains("-ExecStart=:\"/bin/sleep\" \"301\""), "{diff}");
            assert!(diff.contains("+ExecStart=:\"/bin/sleep\" \"300\""), "{diff}");
        }
        d => panic!("expected FileDiffers, got {d:?}"),
    }
    assert_eq!(m.install(&s, AfterInstall::Start).await.unwrap(), Change::Changed);
    let pid2 = m.status(&s.id).await.unwrap().main_pid.unwrap();
    assert_ne!(pid, pid2, "the running unit was restarted onto the repaired definition");
    assert_eq!(m.drift(&s).await.unwrap(), Drift::InSync);

    // A new definition written without starting: the running process is older than it.
    let mut s2 = s.clone();
    s2.argv = vec!["/bin/sleep".into(), "302".into()];
    assert_eq!(m.install(&s2, AfterInstall::DontStart).await.unwrap(), Change::Changed);
    assert_eq!(m.status(&s.id).await.unwrap().main_pid, Some(pid2), "DontStart does not restart");
    assert_eq!(m.drift(&s2).await.unwrap(), Drift::LoadedStale);
    assert_eq!(m.install(&s2, AfterInstall::Start).await.unwrap(), Change::Changed);
    let pid3 = m.status(&s.id).await.unwrap().main_pid.unwrap();
    assert_ne!(pid2, pid3);
    let cmdline = std::fs::read(format!("/proc/{pid3}/cmdline")).unwrap();
    assert_eq!(cmdline, b"/bin/sleep\x00302\x00");
    assert_eq!(m.drift(&s2).await.unwrap(), Drift::InSync);
}

#[tokio::test]
async fn a_unit_that_fails_to_start_reports_its_last_log_lines() {
    let Some(sb) = Sandbox::start("fails_to_start") else { return };
    let m = backend(&sb).await;
    let s = spec(&sb, "crashy", &["/bin/sh", "-c", "echo boom-out-1; echo boom-err-2 >&2; exit 3"]);
    let e = m.install(&s, AfterInstall::Start).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::JobFailed, "{}", e.message);
    assert!(e.log_tail.iter().any(|l| l == "boom-out-1"), "{:?}", e.log_tail);
    assert!(e.log_tail.iter().any(|l| l == "boom-err-2"), "{:?}", e.log_tail);
    assert!(
        e.message.contains("parachute-crashy.service") && e.message.contains("status 3"),
        "{}",
        e.message
    );

    let s = spec(&sb, "falsy", &["/bin/false"]);
    let e = m.install(&s, AfterInstall::Start).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::JobFailed, "{}", e.message);
    assert!(e.message.contains("status 1"), "{}", e.message);

    let s = spec(&sb, "missing", &["/nonexistent/parachute-test-binary", "serve"]);
    let e = m.install(&s, AfterInstall::Start).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::JobFailed, "{}", e.message);
    assert!(e.message.contains("203/EXEC"), "{}", e.message);
    // start (not only install) reads the log path back from the unit file.
    let s = spec(&sb, "crashy", &[]);
    let e = m.start(&s.id).await.unwrap_err();
    assert!(e.log_tail.iter().any(|l| l == "boom-out-1"), "{:?}", e.log_tail);
}

#[tokio::test]
async fn a_unit_that_hit_its_start_limit_is_recovered_by_start() {
    let Some(sb) = Sandbox::start("start_limit") else { return };
    let m = backend(&sb).await;
    let marker = sb.dir().join("crash-while-this-exists");
    std::fs::write(&marker, "").unwrap();
    let script =
        format!("if [ -e '{}' ]; then echo crashing; exit 1; fi; exec /bin/sleep 300", marker.display());
    let mut s = spec(&sb, "limited", &["/bin/sh", "-c", &script]);
    s.crash_loop = Some(CrashLoop { interval_sec: 60, burst: 3, throttle_sec: 0 });
    let e = m.install(&s, AfterInstall::Start).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::JobFailed);

    // Restart=always with RestartSec=0 crash-loops until StartLimitBurst trips; then the
    // unit stays failed (252 keeps Result=exit-code for an automatic restart that hit it).
    let conn = sb.connect().await;
    let unit = unit_proxy(&conn, "parachute-limited.service", "org.freedesktop.systemd1.Unit").await;
    wait_until("the start limit to trip", Duration::from_secs(10), || async {
        unit.get_property::<String>("ActiveState").await.unwrap() == "failed"
    })
    .await;
    let st = m.status(&s.id).await.unwrap();
    assert!(!st.active && st.state_text == "failed/failed", "{st:?}");

    // A plain StartUnit is refused while the limit holds: the reset in `start` is needed.
    std::fs::remove_file(&marker).unwrap();
    conn.call_method(
        Some("org.freedesktop.systemd1"),
        "/org/freedesktop/systemd1",
        Some("org.freedesktop.systemd1.Manager"),
        "StartUnit",
        &("parachute-limited.service", "replace"),
    )
    .await
    .unwrap();
    wait_until("the plain start job to finish", Duration::from_secs(5), || async {
        unit.get_property::<(u32, zbus::OwnedObjectPath)>("Job").await.unwrap().0 == 0
    })
    .await;
    assert_eq!(
        unit.get_property::<String>("ActiveState").await.unwrap(),
        "failed",
        "start limit not enforced"
    );

    assert_eq!(m.start(&s.id).await.unwrap(), Change::Changed);
    let st = m.status(&s.id).await.unwrap();
    assert!(st.active && st.main_pid.is_some_and(alive), "{st:?}");
}

async fn unit_proxy(conn: &zbus::Connection, name: &str, interface: &'static str) -> zbus::Proxy<'static> {
    let reply = conn
        .call_method(
            Some("org.freedesktop.systemd1"),
            "/org/freedesktop/systemd1",
            Some("org.freedesktop.systemd1.Manager"),
            "LoadUnit",
            &(name,),
        )
        .await
        .unwrap();
    let path: zbus::OwnedObjectPath = reply.body().deserialize().unwrap();
    zbus::proxy::Builder::new(conn)
        .destination("org.freedesktop.systemd1")
        .path(path)
        .interface(interface)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn teardown_stops_a_loaded_unit_whose_file_is_already_gone() {
    let Some(sb) = Sandbox::start("teardown_file_gone") else { return };
    let m = backend(&sb).await;
    let s = spec(&sb, "orphaned", &["/bin/sleep", "300"]);
    m.install(&s, AfterInstall::Start).await.unwrap();
    let pid = m.status(&s.id).await.unwrap().main_pid.unwrap();
    std::fs::remove_file(m.unit_path(&s.id)).unwrap();

    assert_eq!(m.teardown(&s.id).await.unwrap(), Change::Changed);
    wait_until("the unit's process to die", Duration::from_secs(5), || async { !alive(pid) }).await;
    assert!(!wants_link(&sb, &s.id), "the enablement symlink is removed by name");
    let st = m.status(&s.id).await.unwrap();
    assert_eq!(st.scope, None, "{st:?}");
    assert_eq!(m.teardown(&s.id).await.unwrap(), Change::AlreadyInPlace);
}

#[tokio::test]
async fn verbs_on_a_unit_that_does_not_exist() {
    let Some(sb) = Sandbox::start("nothing") else { return };
    let m = backend(&sb).await;
    let id = UnitId::new("never-installed").unwrap();
    assert_eq!(m.teardown(&id).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(m.stop(&id).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(m.disable(&id).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(m.start(&id).await.unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(m.restart(&id).await.unwrap_err().kind, ErrorKind::NotFound);
    let st = m.status(&id).await.unwrap();
    assert!(st.scope.is_none() && !st.loaded && !st.active, "{st:?}");

    // A hostile spec is refused before anything is written.
    let mut s = spec(&sb, "hostile", &["/bin/sleep", "1"]);
    s.env.push(("X".into(), "a\nExecStartPre=/bin/rm -rf /".into()));
    assert_eq!(m.install(&s, AfterInstall::Start).await.unwrap_err().kind, ErrorKind::InvalidSpec);
    assert!(!m.unit_path(&s.id).exists());

    // A masked unit is left masked: install refuses and says how to unmask.
    let s = spec(&sb, "masked", &["/bin/sleep", "1"]);
    std::os::unix::fs::symlink("/dev/null", m.unit_path(&s.id)).unwrap();
    let e = m.install(&s, AfterInstall::Start).await.unwrap_err();
    assert!(e.message.contains("unmask"), "{}", e.message);
    assert_eq!(std::fs::read_link(m.unit_path(&s.id)).unwrap(), Path::new("/dev/null"));
}

/// Two real managers stand in for the two scopes: status and teardown look in both.
#[tokio::test]
async fn status_and_teardown_find_the_unit_in_the_other_scope() {
    let Some(user) = Sandbox::start("scope_user") else { return };
    let Some(system) = Sandbox::start("scope_system") else { return };
    let sys_backend = SystemdManager::new(system.connect().await, Scope::System, system.unit_dir())
        .with_timeouts(timeouts());
    let s = spec(&system, "elsewhere", &["/bin/sleep", "300"]);
    sys_backend.install(&s, AfterInstall::Start).await.unwrap();
    let pid = sys_backend.status(&s.id).await.unwrap().main_pid.unwrap();

    let m = backend(&user).await.with_other_scope(system.connect().await, system.unit_dir());
    let st = m.status(&s.id).await.unwrap();
    assert_eq!(st.scope, Some(Scope::System), "{st:?}");
    assert!(st.active && st.main_pid == Some(pid), "{st:?}");

    assert_eq!(m.teardown(&s.id).await.unwrap(), Change::Changed);
    wait_until("the other scope's process to die", Duration::from_secs(5), || async { !alive(pid) }).await;
    assert!(!sys_backend.unit_path(&s.id).exists());
    assert_eq!(m.status(&s.id).await.unwrap().scope, None);
    assert_eq!(m.teardown(&s.id).await.unwrap(), Change::AlreadyInPlace);
}

#[tokio::test]
async fn production_connection_helpers_work_against_the_sandbox() {
    let Some(sb) = Sandbox::start("connect_helpers") else { return };
    let rt = Path::new(sb.var("XDG_RUNTIME_DIR"));
    let t = Duration::from_secs(10);
    // XDG_RUNTIME_DIR alone is enough (no DBUS_SESSION_BUS_ADDRESS).
    let conn = connect::user_bus(None, Some(rt), t).await.unwrap();
    let cfg = Path::new(sb.var("XDG_CONFIG_HOME")).join("systemd/user");
    assert_eq!(connect::user_unit_dir(&conn, &cfg, t).await.unwrap(), cfg);
    // A preferred dir the manager does not search is not used.
    let elsewhere = sb.dir().join("not-searched/systemd/user");
    assert_eq!(connect::user_unit_dir(&conn, &elsewhere, t).await.unwrap(), cfg);
    // The address form works too.
    let by_address = connect::user_bus(Some(sb.bus_address()), None, t).await.unwrap();
    assert_eq!(connect::user_unit_dir(&by_address, &cfg, t).await.unwrap(), cfg);
    // No logind on this bus: linger fails with a clear kind, never hangs or prompts.
    let e = connect::ensure_linger(&conn, 0, "root", t).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::ManagerUnavailable, "{}", e.message);
}

/// What reaches the process is exactly the spec: `$`, `%`, quotes and backslashes are not
/// expanded at exec time either (the D-Bus round trip is covered by tests/roundtrip.rs).
#[tokio::test]
async fn hostile_values_reach_the_process_unchanged() {
    let Some(sb) = Sandbox::start("hostile_exec") else { return };
    let m = backend(&sb).await;
    let script = r#"for a in "$@"; do printf '[%s]\n' "$a"; done; printf '[%s]\n' "$HOSTILE" "$DONE"; exec /bin/sleep 300"#;
    let args = ["a  b", "$HOME", "${PATH}", "$$", "%h", "%%", "\"q\"", "'s'", "\\", "\\;", ";", "ü€ <&>", ""];
    let mut argv = vec!["/bin/sh", "-c", script, "sh"];
    argv.extend(args);
    let mut s = spec(&sb, "hostile-exec", &argv);
    s.env =
        vec![("HOSTILE".into(), r#"$HOME ${PATH} %h %% "x" 'y' \ ;"#.into()), ("DONE".into(), "end".into())];
    m.install(&s, AfterInstall::Start).await.unwrap();
    let mut want: Vec<String> = args.iter().map(|a| format!("[{a}]")).collect();
    want.push(format!("[{}]", s.env[0].1));
    want.push("[end]".into());
    let log = s.log_path.clone();
    wait_until("the unit to print its argv", Duration::from_secs(5), || {
        let log = log.clone();
        async move { std::fs::read_to_string(&log).is_ok_and(|t| t.ends_with("[end]\n")) }
    })
    .await;
    let got: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(got, want);
}
