//! The launchd backend's verbs against the stateful launchctl double (real processes,
//! asynchronous bootout, a persistent override table), plus the error mapping of every
//! documented exit code.
//!
//! Each test owns a temp dir holding the double's state, LaunchAgents, LaunchDaemons and
//! logs; dropping the harness shuts every supervised job down, and the double's
//! supervisors also end on their own when the state dir or this process disappears.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use parachute_launchd::{ExitCode, Launchctl, LaunchdDirs, LaunchdManager, PrintInfo, Timing};
use parachute_manager::{
    AfterInstall, Change, CrashLoop, Drift, ErrorKind, Scope, ServiceManager, UnitId, UnitSpec,
};

const DOUBLE: &str = env!("CARGO_BIN_EXE_launchctl-double");
const UID: u32 = 501;

struct Harness {
    dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        Harness { dir: tempfile::tempdir().unwrap() }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn agents(&self) -> PathBuf {
        self.dir.path().join("LaunchAgents")
    }

    fn daemons(&self) -> PathBuf {
        self.dir.path().join("LaunchDaemons")
    }

    fn launchctl(&self) -> Launchctl {
        Launchctl::new(DOUBLE)
            .with_env("LAUNCHCTL_DOUBLE_STATE", self.state())
            .with_timeout(Duration::from_secs(20))
    }

    fn manager(&self, scope: Scope) -> LaunchdManager {
        let dirs = LaunchdDirs { agents: self.agents(), daemons: self.daemons() };
        LaunchdManager::new(scope, dirs, UID, self.launchctl()).with_timing(Timing {
            poll: Duration::from_millis(25),
            start_timeout: Duration::from_secs(10),
            settle: Duration::from_millis(100),
            unload_timeout: Duration::from_secs(10),
            bootstrap_attempts: 8,
            backoff: Duration::from_millis(50),
        })
    }

    /// Runs the double directly (what an operator or another tool would type).
    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let out =
            Command::new(DOUBLE).args(args).env("LAUNCHCTL_DOUBLE_STATE", self.state()).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.ctl(args);
        assert_eq!(code, 0, "launchctl {args:?} failed: {err}");
        out
    }

    fn print(&self, service: &str) -> Option<PrintInfo> {
        let (code, out, err) = self.ctl(&["print", service]);
        match code {
            0 => Some(PrintInfo::parse(&out)),
            113 => None,
            _ => panic!("print {service}: {code} {err}"),
        }
    }

    fn spec(&self, short: &str, argv: &[&str]) -> UnitSpec {
        UnitSpec {
            id: UnitId::new(short).unwrap(),
            description: format!("test {short}"),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("GREETING".into(), "hello <&> world".into())],
            working_dir: Some(self.dir.path().to_path_buf()),
            log_path: self.dir.path().join(format!("{short}.log")),
            crash_loop: Some(CrashLoop { interval_sec: 60, burst: 5, throttle_sec: 1 }),
            run_as_user: None,
            readiness: parachute_manager::Readiness::Exec,
            hardened: false,
            log_to_journal: false,
            log_file_args: Vec::new(),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.ctl(&["__shutdown"]);
    }
}

fn svc(short: &str) -> String {
    format!("gui/{UID}/computer.parachute.{short}")
}

/// Whether a pid is a live (non-zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_dead(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "pid {pid} still alive");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

async fn running_pid(m: &LaunchdManager, id: &UnitId) -> u32 {
    let st = m.status(id).await.unwrap();
    assert!(st.active, "{st:?}");
    st.main_pid.expect("a running unit has a pid")
}

#[tokio::test]
async fn every_verb_twice_and_stop_then_start_works() {
    let h = Harness::new();
    let m = h.manager(Scope::User);
    let spec = h.spec("hub", &["/bin/sleep", "300"]);
    let id = spec.id.clone();

    assert_eq!(m.install(&spec, AfterInstall::Start).await.unwrap(), Change::Changed);
    assert!(m.unit_path(&id).starts_with(h.agents()));
    let pid = running_pid(&m, &id).await;
    assert!(cmdline(pid).contains("sleep 300"), "{}", cmdline(pid));
    assert_eq!(m.install(&spec, AfterInstall::Start).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(m.start(&id).await.unwrap(), Change::AlreadyInPlace);
    assert_eq!(running_pid(&m, &id).await, pid, "nothing restarted it");

    let st = m.status(&id).await.unwrap();
    assert_eq!(
        (st.scope, st.loaded, st.enabled, st.state_text.as_str()),
        (Some(Scope::User), true, true, "running")
    );
    assert_eq!(st.file.as_deref(), Some(m.unit_path(&id).as_path()));

    // stop = bootout, and it really waits until launchd has let go of the job.
    assert_eq!(m.stop(&id).await.unwrap(), Change::Changed);
    assert!(h.print(&svc("hub")).is_none());
    wait_dead(pid);
    assert_eq!(m.stop(&id).await.unwrap(), Change::AlreadyInPlace);
    let st = m.status(&id).await.unwrap();
    assert!(!st.loaded && !st.active && st.enabled, "{st:?}");

    // W2: start after stop must bootstrap again (kickstart cannot revive a booted-out job).
    assert_eq!(m.start(&id).await.unwrap(), Change::Changed);
    let pid2 = running_pid(&m, &id).await;
    assert_ne!(pid, pid2);
    assert_eq!(m.start(&id).await.unwrap(), Change::AlreadyInPlace);

    // restart always replaces the process (it is never "already in place").
    assert_eq!(m.restart(&id).await.unwrap(), Change::Changed);
    let pid3 = running_pid(&m, &id).await;
    assert_ne!(pid2, pid3);
    wait_dead(pid2);
    assert_eq!(m.restart(&id).await.unwrap(), Change::Changed);
    assert_ne!(running_pid(&m, &id).await, pid3);

    // restart of a stopped unit starts it.
    m.stop(&id).await.unwrap();
    assert_eq!(m.restart(&id).await.unwrap(), Change::Changed);
    let pid4 = running_pid(&m, &id).await;

    // disable = durable override + bootout; twice is a no-op.
    assert_eq!(m.disable(&id).await.unwrap(), Change::Changed);
    wait_dead(pid4);
    assert!(
        h.ok(&["print-disabled", &format!("gui/{UID}")]).contains("\"computer.parachute.hub\" => disabled")
    );
    assert_eq!(m.disable(&id).await.unwrap(), Change::AlreadyInPlace);
    let st = m.status(&id).await.unwrap();
    assert!(!st.enabled && !st.loaded && st.file.is_some(), "{st:?}");

    // start after disable enables first, then bootstraps.
    assert_eq!(m.start(&id).await.unwrap(), Change::Changed);
    let pid5 = running_pid(&m, &id).await;

    assert_eq!(m.teardown(&id).await.unwrap(), Change::Changed);
    wait_dead(pid5);
    assert!(!m.unit_path(&id).exists());
    assert!(h.print(&svc("hub")).is_none());
    assert_eq!(m.teardown(&id).await.unwrap(), Change::AlreadyInPlace);
    let st = m.status(&id).await.unwrap();
    assert_eq!((st.scope, st.loaded, st.file), (None, false, None));
}

#[tokio::test]
async fn environment_working_dir_and_log_reach_the_real_process() {
    let h = Harness::new();
    let m = h.manager(Scope::User);
    let spec = h.spec(
        "envcheck",
        &["/bin/sh", "-c", "echo \"$GREETING|$(pwd)|$1\"; exec sleep 300", "sh", "arg with 'quotes' & $x"],
    );
    m.install(&spec, AfterInstall::Start).await.unwrap();
    let log = spec.log_path.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().next() {
            break l.to_owned();
        }
        assert!(Instant::now() < deadline, "no output in {}", log.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(line, format!("hello <&> world|{}|arg with 'quotes' & $x", h.dir.path().display()));
}

#[tokio::test]
async fn bootstrap_racing_an_in_flight_bootout_is_retried_w3() {
    let h = Harness::new();
    let m = h.manager(Scope::User);
    let spec = h.spec("race", &["/bin/sleep", "300"]);
    m.install(&spec, AfterInstall::Start).await.unwrap();
    let pid = running_pid(&m, &spec.id).await;

    // Someone else boots it out; launchd keeps the label for a while after the process died.
    h.ok(&["__config", "bootout_delay_ms", "700"]);
    h.ok(&["bootout", &svc("race")]);
    let plist = m.unit_path(&spec.id);
    let (code, _, err) = h.ctl(&["bootout", &svc("race")]);
    assert_eq!((code, err.trim()), (36, "Boot-out failed: 36: Operation now in progress"));
    let (code, _, err) = h.ctl(&["bootstrap", &format!("gui/{UID}"), plist.to_str().unwrap()]);
    assert_eq!((code, err.trim()), (5, "Bootstrap failed: 5: Input/output error"));
    wait_dead(pid);
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.print(&svc("race")).and_then(|i| i.state).as_deref() != Some("not running") {
        assert!(Instant::now() < deadline, "the job should linger, idle, while its bootout completes");
        std::thread::sleep(Duration::from_millis(5));
    }

    // start sees a loaded, idle job; kickstart is refused mid-bootout (37); start waits it
    // out and bootstraps again.
    assert_eq!(m.start(&spec.id).await.unwrap(), Change::Changed);
    assert_ne!(running_pid(&m, &spec.id).await, pid);
}

#[tokio::test]
async fn bootstrap_eio_after_unload_is_retried_with_backoff() {
    let h = Harness::new();
    let m = h.manager(Scope::User);
    let spec = h.spec("ghost", &["/bin/sleep", "300"]);
    m.install(&spec, AfterInstall::Start).await.unwrap();

    // launchd still tearing down after print stopped listing the job (openclaw #112731).
    h.ok(&["__config", "ghost_ms", "400"]);
    m.stop(&spec.id).await.unwrap();
    let t0 = Instant::now();
    assert_eq!(m.start(&spec.id).await.unwrap(), Change::Changed);
    assert!(t0.elapsed() >= Duration::from_millis(300), "it must have waited out the EIO window");
    running_pid(&m, &spec.id).await;

    // Injected transient EIO twice: still converges.
    m.stop(&spec.id).await.unwrap();
    h.ok(&["__fault", "bootstrap", "5"]);
    h.ok(&["__fault", "bootstrap", "5"]);
    assert_eq!(m.start(&spec.id).await.unwrap(), Change::Changed);
    running_pid(&m, &spec.id).await;

    // A persistent EIO is reported, not treated as success.
    m.stop(&spec.id).await.unwrap();
    for _ in 0..8 {
        h.ok(&["__fault", "bootstrap", "5"]);
    }
    let err = m.start(&spec.id).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::JobFailed, "{err}");
    assert!(err.message.contains("after 8 attempts") && err.message.contains("Input/output error"), "{err}");
    assert!(h.print(&svc("ghost")).is_none());
}

#[tokio::test]
async fn disabled_label_start_enables_then_bootstraps() {
    let h = Harness::new();
    let m = h.manager(Scope::User);
    let spec = h.spec("dis", &["/bin/sleep", "300"]);
    m.install(&spec, AfterInstall::DontStart).await.unwrap();
    let plist = m.unit_path(&spec.id);
    h.ok(&["disable", &svc("dis")]);
    let (code, _, err) = h.ctl(&["bootstrap", &format!("gui/{UID}"), plist.to_str().unwrap()]);
    assert_eq!((code, err.trim()), (119, "Bootstrap failed: 119: Service is disabled"));

    assert_eq!(m.start(&spec.id).await.unwrap(), Change::Changed);
    running_pid(&m, &spec.id).await;
    assert!(
        h.ok(&["print-disabled", &format!("gui/{UID}")]).contains("\"computer.parachute.dis\" => enabled")
    );
}

#[tokio::test]
async fn install_without_start_stays_down_at_the_next_login_w26() {
    let h = Harness::new();
    let m = h.manager(Scope::User);
    let spec = h.spec("later", &["/bin/sleep", "300"]);
    assert_eq!(m.install(&spec, AfterInstall::DontStart).await.unwrap(), Change::Changed);
    assert_eq!(m.install(&spec, AfterInstall::DontStart).await.unwrap(), Change::AlreadyInPlace);
    assert!(m.unit_path(&spec.id).exists());
    assert!(h.print(&svc("later")).is_none(), "not loaded now");

    // Control: a plain plist in LaunchAgents *is* loaded and started by a login.
    let other = h.spec("plain", &["/bin/sleep", "300"]);
    std::fs::write(h.agents().join("computer.parachute.plain.plist"), m.render(&other).unwrap()).unwrap();

    h.ok(&["__login", &UID.to_string(), h.agents().to_str().unwrap()]);
    assert!(h.print(&svc("plain")).is_some(), "the login simulation loads enabled agents");
    assert!(h.print(&svc("later")).is_none(), "install(DontStart) must not start at the next login");
    let st = m.status(&spec.id).await.unwrap();
    assert!(!st.enabled && !st.loaded && st.file.is_some(), "{st:?}");

    // start enables it, so from now on a login starts it.
    assert_eq!(m.start(&spec.id).await.unwrap(), Change::Changed);
    h.ok(&["__logout", &UID.to_string()]);
    assert!(h.print(&svc("later")).is_none());
    h.ok(&["__login", &UID.to_string(), h.agents().to_str().unwrap()]);
    assert!(h.print(&svc("later")).is_some());
    running_pid(&m, &spec.id).await;
}

#[tokio::test]
async fn teardown_by_label_when_the_file_is_gone_w9_and_of_nothing() {
    let h = Harness::new();
    let m = h.manager(Scope::User);

    // Nothing installed: success, and nothing is written anywhere.
    let nothing = UnitId::new("nothing").unwrap();
    assert_eq!(m.teardown(&nothing).await.unwrap(), Change::AlreadyInPlace);
    assert!(!h.agents().exists() && !h.daemons().exists());
    assert!(!h.ok(&["print-disabled", &format!("gui/{UID}")]).contains("nothing"));

    let spec = h.spec("orphan", &["/bin/sleep", "300"]);
    m.install(&spec, AfterInstall::Start).await.unwrap();
    let pid = running_pid(&m, &spec.id).await;
    std::fs::remove_file(m.unit_path(&spec.id)).unwrap();
    assert!(m.status(&spec.id).await.unwrap().loaded, "still loaded without its file");
    assert_eq!(m.teardown(&spec.id).await.unwrap(), Change::Changed);
    wait_dead(pid);
    assert!(h.print(&svc("orphan")).is_none());
    assert_eq!(m.teardown(&spec.id).await.unwrap(), Change::AlreadyInPlace);
}

#[tokio::test]
async fn teardown_and_status_find_the_other_scope() {
    let h = Harness::new();
    let system = h.manager(Scope::System);
    let user = h.manager(Scope::User);
    let mut spec = h.spec("both", &["/bin/sleep", "300"]);
    spec.run_as_user = Some("op".into());
    system.install(&spec, AfterInstall::Start).await.unwrap();
    assert!(system.unit_path(&spec.id).starts_with(h.daemons()));
    assert!(h.print("system/computer.parachute.both").is_some());
    let st = user.status(&spec.id).await.unwrap();
    assert_eq!((st.scope, st.active), (Some(Scope::System), true), "{st:?}");
    let pid = st.main_pid.unwrap();
    assert_eq!(user.teardown(&spec.id).await.unwrap(), Change::Changed);
    wait_dead(pid);
    assert!(!system.unit_path(&spec.id).exists());
    assert!(h.print("system/computer.parachute.both").is_none());
}

#[tokio::test]
async fn a_changed_definition_is_reloaded_and_drift_sees_file_and_loaded_state() {
    let h = Harness::new();
    let m = h.manager(Scope::User);
    let a = h.spec("drift", &["/bin/sleep", "300"]);
    let b = h.spec("drift", &["/bin/sleep", "301"]);
    assert_eq!(m.drift(&a).await.unwrap(), Drift::NotInstalled);
    m.install(&a, AfterInstall::Start).await.unwrap();
    let pid_a = running_pid(&m, &a.id).await;
    assert_eq!(m.drift(&a).await.unwrap(), Drift::InSync);
    let Drift::FileDiffers { diff } = m.drift(&b).await.unwrap() else { panic!("b differs from the file") };
    assert!(
        diff.contains("-\t\t<string>300</string>") && diff.contains("+\t\t<string>301</string>"),
        "{diff}"
    );

    // install(Start) of a new definition reloads (bootout + bootstrap): new process, new args.
    assert_eq!(m.install(&b, AfterInstall::Start).await.unwrap(), Change::Changed);
    wait_dead(pid_a);
    let pid_b = running_pid(&m, &b.id).await;
    assert!(cmdline(pid_b).contains("sleep 301"));
    assert_eq!(m.drift(&b).await.unwrap(), Drift::InSync);

    // Writing A without starting leaves B loaded: the file matches A, launchd runs B.
    m.install(&a, AfterInstall::DontStart).await.unwrap();
    assert_eq!(m.drift(&a).await.unwrap(), Drift::LoadedStale);
    assert_eq!(running_pid(&m, &a.id).await, pid_b, "DontStart leaves the running job alone");
    // A byte-different but equal plist (re-indented) is not drift.
    let path = m.unit_path(&a.id);
    let text = std::fs::read_to_string(&path).unwrap().replace('\t', "  ");
    std::fs::write(&path, text).unwrap();
    assert_eq!(m.drift(&a).await.unwrap(), Drift::LoadedStale);
    // install(Start) applies it.
    assert_eq!(m.install(&a, AfterInstall::Start).await.unwrap(), Change::Changed);
    assert!(cmdline(running_pid(&m, &a.id).await).contains("sleep 300"));
    assert_eq!(m.drift(&a).await.unwrap(), Drift::InSync);
}

/// The hub's plist says `KeepAlive = { SuccessfulExit = false }`: a failure is restarted,
/// a clean exit (the hub's own crash-loop ceiling) is not (launchd.plist(5)).
#[test]
fn a_clean_exit_stays_down_and_a_failure_is_restarted() {
    let h = Harness::new();
    std::fs::create_dir_all(h.agents()).unwrap();
    let boot = |short: &str, code: i32| {
        let spec = h.spec(short, &["/bin/sh", "-c", &format!("exit {code}")]);
        let plist = h.agents().join(format!("computer.parachute.{short}.plist"));
        std::fs::write(&plist, parachute_launchd::render_plist(&spec, Scope::User).unwrap()).unwrap();
        h.ok(&["bootstrap", &format!("gui/{UID}"), plist.to_str().unwrap()]);
    };
    boot("clean", 0);
    boot("failing", 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    let runs = |short: &str| h.print(&svc(short)).and_then(|i| i.runs).unwrap_or(0);
    while runs("failing") < 2 {
        assert!(
            Instant::now() < deadline,
            "the failing job was not restarted: {:?}",
            h.print(&svc("failing"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let clean = h.print(&svc("clean")).expect("still loaded");
    assert_eq!((clean.runs, clean.last_exit_code), (Some(1), Some(0)), "{clean:?}");
    assert!(!clean.is_running());
}

#[tokio::test]
async fn keepalive_restarts_after_kill() {
    let h = Harness::new();
    let m = h.manager(Scope::User);
    let spec = h.spec("keep", &["/bin/sleep", "300"]);
    m.install(&spec, AfterInstall::Start).await.unwrap();
    let pid = running_pid(&m, &spec.id).await;
    h.ok(&["kill", "SIGKILL", &svc("keep")]);
    wait_dead(pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = m.status(&spec.id).await.unwrap();
        if st.active && st.main_pid != Some(pid) {
            assert_eq!(st.restarts, Some(1), "{st:?}");
            break;
        }
        assert!(Instant::now() < deadline, "KeepAlive did not restart it: {st:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// With nobody logged in at the GUI (SSH, a headless Mac) `gui/<uid>` does not exist: the
/// probe says so, and an agent verb fails as "no manager here", naming the fix.
#[tokio::test]
async fn no_gui_login_means_no_gui_domain() {
    let h = Harness::new();
    let m = h.manager(Scope::User);
    m.domain_reachable().await.expect("a logged-in user has the domain");
    h.ok(&["__headless", &UID.to_string()]);
    let err = m.domain_reachable().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::ManagerUnavailable, "{err}");
    assert_eq!(h.ctl(&["print", &format!("gui/{UID}")]).0, 112);
    let spec = h.spec("nogui", &["/bin/sleep", "300"]);
    let err = m.install(&spec, AfterInstall::Start).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::ManagerUnavailable, "{err}");
    assert!(err.message.contains("LaunchDaemon (system scope)"), "{err}");
}

/// launchd does not create the directory of `StandardOutPath`; a job whose log directory is
/// missing never runs (exit 78, EX_CONFIG). Install creates it.
#[tokio::test]
async fn install_creates_the_log_directory() {
    let h = Harness::new();
    let m = h.manager(Scope::User);
    let mut spec = h.spec("logs", &["/bin/sleep", "300"]);
    spec.log_path = h.dir.path().join("home/hub/logs/hub.log");
    assert!(!spec.log_path.parent().unwrap().exists());
    m.install(&spec, AfterInstall::Start).await.unwrap();
    assert!(spec.log_path.parent().unwrap().is_dir());
    running_pid(&m, &spec.id).await;
}

/// Without the directory the double, like launchd, cannot spawn the job: exit 78.
#[test]
fn a_missing_log_directory_is_exit_78() {
    let h = Harness::new();
    std::fs::create_dir_all(h.agents()).unwrap();
    let plist = h.agents().join("computer.parachute.nolog.plist");
    let mut spec = h.spec("nolog", &["/bin/sleep", "300"]);
    spec.log_path = h.dir.path().join("missing/dir/x.log");
    std::fs::write(&plist, parachute_launchd::render_plist(&spec, Scope::User).unwrap()).unwrap();
    h.ok(&["bootstrap", &format!("gui/{UID}"), plist.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = h.print(&svc("nolog")).expect("bootstrapped");
        if info.last_exit_code == Some(78) {
            break;
        }
        assert!(Instant::now() < deadline, "{info:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[tokio::test]
async fn a_job_that_cannot_run_fails_start_with_its_log_tail() {
    let h = Harness::new();
    let m = h.manager(Scope::User).with_timing(Timing {
        poll: Duration::from_millis(10),
        start_timeout: Duration::from_secs(2),
        settle: Duration::from_millis(100),
        ..Timing::default()
    });
    let spec = h.spec("crash", &["/bin/sh", "-c", "echo 'boom: port 1939 is taken' >&2; exit 3"]);
    let err = m.install(&spec, AfterInstall::Start).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::JobFailed, "{err}");
    assert!(err.message.contains(&spec.log_path.display().to_string()), "{err}");
    assert!(err.log_tail.iter().any(|l| l.contains("boom: port 1939 is taken")), "{:?}", err.log_tail);
}

#[tokio::test]
async fn manager_errors_map_to_kinds() {
    let h = Harness::new();
    let m = h.manager(Scope::User);
    let id = UnitId::new("never").unwrap();
    let err = m.start(&id).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(err.message.contains("install the unit first"), "{err}");

    let spec = h.spec("perm", &["/bin/sleep", "300"]);
    m.install(&spec, AfterInstall::DontStart).await.unwrap();
    h.ok(&["__fault", "enable", "1"]);
    assert_eq!(m.start(&spec.id).await.unwrap_err().kind, ErrorKind::PermissionDenied);
    h.ok(&["__fault", "print", "112"]);
    let err = m.start(&spec.id).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::ManagerUnavailable, "{err}");
    assert!(err.message.contains("headless"), "{err}");
    h.ok(&["__fault", "bootstrap", "122"]);
    assert_eq!(m.start(&spec.id).await.unwrap_err().kind, ErrorKind::PermissionDenied);

    let gone = LaunchdManager::new(
        Scope::User,
        LaunchdDirs { agents: h.agents(), daemons: h.daemons() },
        UID,
        Launchctl::new("/nonexistent/launchctl"),
    );
    let err = gone.start(&spec.id).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::ManagerUnavailable, "{err}");

    // A renderer rejection writes nothing.
    let mut bad = h.spec("bad", &["/bin/sleep", "1\n"]);
    bad.env.clear();
    assert_eq!(m.install(&bad, AfterInstall::Start).await.unwrap_err().kind, ErrorKind::InvalidSpec);
    assert!(!m.unit_path(&bad.id).exists());
}

#[tokio::test]
async fn launchctl_exit_codes_are_typed() {
    let h = Harness::new();
    let lc = h.launchctl();
    let m = h.manager(Scope::User);
    let spec = h.spec("codes", &["/bin/sleep", "300"]);
    m.install(&spec, AfterInstall::Start).await.unwrap();
    let plist = m.unit_path(&spec.id);
    let plist = plist.to_str().unwrap();
    let domain = format!("gui/{UID}");
    let code =
        |r: Result<parachute_launchd::Output, parachute_launchd::LaunchctlError>| r.unwrap_err().code();

    assert_eq!(code(lc.run(&["bootstrap", &domain, plist]).await), Some(ExitCode::Already));
    let err = lc.run(&["print", &svc("unknown")]).await.unwrap_err();
    assert_eq!(err.code(), Some(ExitCode::ServiceNotFound));
    assert!(
        err.to_string().contains("Could not find service \"computer.parachute.unknown\" in domain for"),
        "{err}"
    );
    assert_eq!(code(lc.run(&["kickstart", &svc("unknown")]).await), Some(ExitCode::ServiceNotFound));
    let err = lc.run(&["bootout", &svc("unknown")]).await.unwrap_err();
    assert_eq!(err.code(), Some(ExitCode::NoSuchProcess));
    assert!(err.to_string().contains("Boot-out failed: 3: No such process"), "{err}");
    assert_eq!(code(lc.run(&["bootout"]).await), Some(ExitCode::Usage));
    assert_eq!(code(lc.run(&["frobnicate"]).await), Some(ExitCode::Usage));
    assert_eq!(code(lc.run(&["print", "nodomain/x"]).await), Some(ExitCode::Usage));

    h.ok(&["__config", "bootout_delay_ms", "500"]);
    lc.run(&["bootout", &svc("codes")]).await.unwrap();
    assert_eq!(code(lc.run(&["bootout", &svc("codes")]).await), Some(ExitCode::InProgress));
    assert_eq!(code(lc.run(&["bootstrap", &domain, plist]).await), Some(ExitCode::Io));
    assert_eq!(code(lc.run(&["kickstart", "-k", &svc("codes")]).await), Some(ExitCode::Already));
    m.stop(&spec.id).await.unwrap();

    lc.run(&["disable", &svc("codes")]).await.unwrap();
    assert_eq!(code(lc.run(&["bootstrap", &domain, plist]).await), Some(ExitCode::Disabled));

    // UserName is for daemons only: launchd refuses it in an agent.
    let mut daemon_spec = h.spec("named", &["/bin/sleep", "300"]);
    daemon_spec.run_as_user = Some("op".into());
    let bytes = h.manager(Scope::System).render(&daemon_spec).unwrap();
    let wrong = h.dir.path().join("named.plist");
    std::fs::write(&wrong, bytes).unwrap();
    let err = lc.run(&["bootstrap", &domain, wrong.to_str().unwrap()]).await.unwrap_err();
    assert_eq!(err.code(), Some(ExitCode::Io));
    assert!(err.to_string().contains("UserName is not supported for non-System services"), "{err}");
    lc.run(&["bootstrap", "system", wrong.to_str().unwrap()]).await.unwrap();
}

#[test]
fn jobs_die_when_the_state_dir_goes_or_the_harness_drops() {
    for remove_state_first in [true, false] {
        let pids = {
            let h = Harness::new();
            let plist = h.dir.path().join("x.plist");
            let bytes = h.manager(Scope::User).render(&h.spec("x", &["/bin/sleep", "300"])).unwrap();
            std::fs::write(&plist, bytes).unwrap();
            h.ok(&["bootstrap", &format!("gui/{UID}"), plist.to_str().unwrap()]);
            let deadline = Instant::now() + Duration::from_secs(10);
            let pid = loop {
                if let Some(pid) = h.print(&svc("x")).and_then(|i| i.pid) {
                    break pid;
                }
                assert!(Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(10));
            };
            let state: serde_json::Value =
                serde_json::from_slice(&std::fs::read(h.state().join("state.json")).unwrap()).unwrap();
            let supervisor = state["services"][svc("x")]["supervisor"].as_u64().unwrap() as u32;
            assert!(alive(pid) && alive(supervisor));
            if remove_state_first {
                // No shutdown: the supervisor notices its state is gone and ends the job.
                std::fs::remove_dir_all(h.state()).unwrap();
                wait_dead(pid);
                wait_dead(supervisor);
            }
            vec![pid, supervisor]
        };
        for pid in pids {
            wait_dead(pid);
        }
    }
}
