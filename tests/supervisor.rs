//! The supervisor with real processes: the fixture module on real ports, real signals,
//! real process groups. Scenario numbers refer to `upstream-supervisor.md` §8.1, race
//! numbers to §9; each race test fails on the upstream behaviour it names.
//!
//! Every test runs under [`within`] (a hard deadline), waits on conditions with
//! [`until`], uses its own free port and a unique token in its children's argv (so
//! [`pids_with`] counts exactly its own processes), and shuts its supervisor down; a
//! panicking test drops the supervisor, which SIGKILLs every group it started.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parachute::supervisor::{
    LeftoverOutcome, LogEvent, ModuleState, ModuleStatus, OutputSink, ReclaimPolicy, SpawnRequest,
    StartErrorKind, Supervisor, SupervisorConfig, adopt_leftovers,
};
use parachute_process::procfs;
use tokio::io::AsyncReadExt;

use crate::support::{fixture_bin, free_port};

// ---- harness ------------------------------------------------------------------------

const TEST_DEADLINE: Duration = Duration::from_secs(25);
const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_DEADLINE, f).await.expect("the test exceeded its deadline")
}

/// Polls `cond` (every 5 ms) until it yields, or panics naming `what`.
async fn until<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn cfg() -> SupervisorConfig {
    SupervisorConfig {
        restart_delay: Duration::from_millis(20),
        restart_delay_max: Duration::from_millis(200),
        kill_timeout: Duration::from_millis(300),
        ready_timeout: Duration::from_secs(2),
        ready_poll: Duration::from_millis(20),
        late_bind_watch: Duration::ZERO,
        late_bind_poll: Duration::from_millis(20),
        ..SupervisorConfig::default()
    }
}

fn sup(config: SupervisorConfig) -> Supervisor {
    Supervisor::new(config, OutputSink::Discard)
}

fn base_env(port: Option<u16>) -> Vec<(String, String)> {
    let mut env = vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
    if let Some(p) = port {
        env.push(("PORT".to_owned(), p.to_string()));
    }
    env
}

/// The fixture as module `short`; `--line-text <token>` marks its processes.
fn fixture(short: &str, port: Option<u16>, token: &str, args: &[&str]) -> SpawnRequest {
    let mut argv = vec![fixture_bin().display().to_string(), "--line-text".into(), token.into()];
    argv.extend(args.iter().map(|s| s.to_string()));
    SpawnRequest { short: short.into(), argv, cwd: None, env: base_env(port), port, env_file: None }
}

/// `sh -c script` as module `short` (for wrappers whose behaviour changes between runs).
fn shell(short: &str, port: Option<u16>, script: &str) -> SpawnRequest {
    let argv = vec!["sh".into(), "-c".into(), script.into()];
    SpawnRequest { short: short.into(), argv, cwd: None, env: base_env(port), port, env_file: None }
}

fn token(name: &str) -> String {
    format!("tok-{name}-{}", free_port())
}

/// Live (not zombie) processes whose command line contains `token`.
fn pids_with(token: &str) -> Vec<u32> {
    let mut v: Vec<u32> = procfs::all_pids()
        .filter(|&p| procfs::identity(p).is_some())
        .filter(|&p| procfs::cmdline(p).is_some_and(|c| c.contains(token)))
        .collect();
    v.sort_unstable();
    v
}

fn alive(pid: u32) -> bool {
    procfs::identity(pid).is_some()
}

fn text(s: &Supervisor, short: &str) -> String {
    s.logs(short, None).map(|l| l.lines.into_iter().map(|l| l.text).collect()).unwrap_or_default()
}

fn count(s: &Supervisor, short: &str, needle: &str) -> usize {
    text(s, short).matches(needle).count()
}

fn state(s: &Supervisor, short: &str) -> ModuleState {
    s.get(short).expect("module is supervised")
}

fn port_holders(port: u16) -> Vec<u32> {
    let mut v: Vec<u32> = procfs::listeners(port).into_iter().map(|l| l.pid).collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn sigkill(pid: u32) {
    // SAFETY: kill(2) of a live child the supervisor started for this test.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// A process the test started itself (a squatter, an orphan); killed and reaped on drop.
struct Guard(Child);

impl Guard {
    fn spawn(program: &Path, args: &[&str]) -> Guard {
        let child =
            Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        Guard(child)
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn exited(&mut self) -> bool {
        self.0.try_wait().unwrap().is_some()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process of the test itself listening on `port` (an unrelated squatter).
async fn squatter(program: &Path, port: u16) -> Guard {
    let g = Guard::spawn(program, &["--port", &port.to_string()]);
    let pid = g.pid();
    until("the squatter to listen", || port_holders(port).contains(&pid).then_some(())).await;
    g
}

/// A temp dir with `parachute-vault` → fixture, for marker attribution.
fn vault_link() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("parachute-vault");
    std::os::unix::fs::symlink(fixture_bin(), &link).unwrap();
    (dir, link)
}

async fn shutdown(s: &Supervisor) {
    s.shutdown(Duration::from_secs(3)).await;
}

// ---- start, idempotency, squatters ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_reaches_running_with_pid_and_binds() {
    // Scenarios 1, 5, 37, 47.
    within(async {
        let s = sup(cfg());
        let (port, tok) = (free_port(), token("start"));
        let st = s.start(fixture("m", Some(port), &tok, &[])).await;
        assert_eq!(st.status, ModuleStatus::Running, "{st:?}");
        assert_eq!(st.start_error, None);
        let pid = st.pid.expect("pid");
        assert!(
            time::OffsetDateTime::parse(
                st.started_at.as_deref().unwrap(),
                &time::format_description::well_known::Rfc3339
            )
            .is_ok()
        );
        assert_eq!(pids_with(&tok), [pid], "exactly one child");
        assert_eq!(port_holders(port), [pid], "start returns after the port is bound");
        assert_eq!(s.tracked_pids(), [pid].into_iter().collect());
        assert_eq!(s.list().iter().map(|m| m.short.as_str()).collect::<Vec<_>>(), ["m"]);
        assert!(
            s.get("nope").is_none() && s.logs("nope", None).is_none() && s.follow("nope", None).is_none()
        );
        assert!(s.stop("nope").await.is_none());
        assert!(s.restart("nope", None).await.unwrap().is_none());
        shutdown(&s).await;
        assert!(pids_with(&tok).is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_and_concurrent_starts_spawn_one_child() {
    // Scenario 2 and R2: sixteen concurrent starts of a new module, then another one.
    within(async {
        let s = sup(cfg());
        let (port, tok) = (free_port(), token("conc"));
        let req = fixture("m", Some(port), &tok, &[]);
        let starts = (0..16).map(|_| s.start(req.clone()));
        let states = futures_util::future::join_all(starts).await;
        let pid = state(&s, "m").pid.unwrap();
        assert!(states.iter().all(|st| st.pid.is_none() || st.pid == Some(pid)), "{states:?}");
        let again = s.start(req).await;
        assert_eq!(again.pid, Some(pid));
        assert_eq!(pids_with(&tok), [pid]);
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prespawn_squatter_is_reported_and_never_killed() {
    // Scenario 3 (and 7: a re-start while a stranger holds the port spawns nothing).
    within(async {
        let s = sup(cfg());
        let (port, tok) = (free_port(), token("squat"));
        let mut sq = squatter(&fixture_bin(), port).await;
        let st = s.start(fixture("vault", Some(port), &tok, &[])).await;
        assert_eq!(st.status, ModuleStatus::Crashed);
        assert_eq!(st.pid, None);
        let err = st.start_error.expect("startError");
        let StartErrorKind::PortSquatter { port: p, holder_pid, .. } = err.kind else { panic!("{err:?}") };
        assert_eq!((p, holder_pid), (port, sq.pid()));
        let d = &err.description;
        assert!(d.contains(&format!("port {port} is held by pid {} (", sq.pid())), "{d}");
        assert!(d.contains(&fixture_bin().display().to_string()), "cmdline in {d}");
        assert!(d.contains(&format!("kill {} && parachute start vault", sq.pid())), "{d}");
        assert!(pids_with(&tok).is_empty(), "nothing spawned");
        assert!(!sq.exited(), "the squatter is never killed on the start path");
        assert!(text(&s, "vault").contains("[supervisor] vault not started: port"), "R29");
        // Trying again changes nothing while it is there…
        assert_eq!(s.start(fixture("vault", Some(port), &tok, &[])).await.status, ModuleStatus::Crashed);
        assert!(!sq.exited() && pids_with(&tok).is_empty());
        // …and works once it is gone.
        drop(sq);
        until("the port to be free", || port_holders(port).is_empty().then_some(())).await;
        assert_eq!(s.start(fixture("vault", Some(port), &tok, &[])).await.start_error, None);
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_held_by_a_sibling_wrappers_grandchild_is_not_a_squatter() {
    // Scenario 6 with a wrapper (R6): the holder is not the sibling's direct child but a
    // process in its group. Upstream compared direct pids only and reported a squatter.
    within(async {
        let s = sup(SupervisorConfig { ready_timeout: Duration::from_millis(300), ..cfg() });
        let (port, ta, tb) = (free_port(), token("siba"), token("sibb"));
        let a = s.start(fixture("a", Some(port), &ta, &["--grandchild-holds-port"])).await;
        assert_eq!(a.start_error, None, "a's grandchild is a's own listener");
        assert!(!port_holders(port).contains(&a.pid.unwrap()), "the holder is the grandchild");
        let b = s.start(fixture("b", Some(port), &tb, &["--no-listen"])).await;
        assert_eq!(b.status, ModuleStatus::Running, "{b:?}");
        // …but a's listener does not make b ready (R25).
        assert!(matches!(b.start_error.map(|e| e.kind), Some(StartErrorKind::StartedButUnbound { .. })));
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_port_skips_squatter_check_and_readiness() {
    // Scenarios 8, 46.
    within(async {
        let s = sup(cfg());
        let tok = token("noport");
        let st = s.start(fixture("m", None, &tok, &["--no-listen"])).await;
        assert_eq!((st.status, st.start_error), (ModuleStatus::Running, None));
        shutdown(&s).await;
    })
    .await;
}

// ---- preflight and spawn errors ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_non_executable_binaries_are_diagnosed_on_the_childs_path() {
    // Scenarios 43, 44, R18, R28.
    within(async {
        let s = sup(cfg());
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let path = format!("{}:/usr/bin:/bin", bin.display());
        let req = |short: &str, argv0: &str| SpawnRequest {
            short: short.into(),
            argv: vec![argv0.into(), "--no-listen".into()],
            cwd: Some(dir.path().into()),
            env: vec![("PATH".into(), path.clone())],
            port: None,
            env_file: None,
        };

        let st = s.start(req("a", "parachute-vault")).await;
        assert_eq!((st.status, st.pid), (ModuleStatus::Crashed, None));
        let err = st.start_error.unwrap();
        assert_eq!(err.kind, StartErrorKind::MissingDependency { binary: "parachute-vault".into() });

        let file = bin.join("parachute-vault");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = s.start(req("b", "parachute-vault")).await.start_error.unwrap();
        assert!(matches!(err.kind, StartErrorKind::NonExecutable { .. }), "{err:?}");
        let fp = file.display();
        assert!(
            err.description.contains(&format!("but is not executable — run chmod +x {fp}")),
            "{}",
            err.description
        );

        // R18: found only through the child's PATH, or relative to its cwd.
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(fixture_bin(), &file).unwrap();
        assert_eq!(s.start(req("c", "parachute-vault")).await.start_error, None);
        assert_eq!(s.start(req("d", "./bin/parachute-vault")).await.status, ModuleStatus::Running);

        // R28: stop clears the diagnostic; the log keeps it.
        let st = s.stop("a").await.unwrap();
        assert_eq!((st.status, st.start_error), (ModuleStatus::Stopped, None));
        assert!(
            text(&s, "a").contains(
                "parachute-vault is required to run the vault module, but it was not found on PATH"
            )
        );
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_failure_is_crashed_not_stuck_in_starting() {
    // R31: upstream left the entry in `starting` for good; every later start was a no-op.
    within(async {
        let s = sup(cfg());
        let dir = tempfile::tempdir().unwrap();
        let tok = token("r31");
        let mut req = fixture("m", None, &tok, &["--no-listen"]);
        req.cwd = Some(dir.path().join("deleted-install-dir"));
        let st = s.start(req.clone()).await;
        assert_eq!(st.status, ModuleStatus::Crashed, "{st:?}");
        let err = st.start_error.unwrap();
        let StartErrorKind::SpawnFailed { os_error } = err.kind else { panic!("{err:?}") };
        assert!(os_error.contains("deleted-install-dir"));
        req.cwd = Some(dir.path().into());
        assert_eq!(s.start(req).await.status, ModuleStatus::Running);
        shutdown(&s).await;
    })
    .await;
}

// ---- crashes, budget, backoff -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_within_budget_respawns_and_keeps_the_log() {
    // Scenarios 10, 38; R29 (the restart line is in the module's own log).
    within(async {
        let s = sup(cfg());
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("crashed-once");
        let fx = fixture_bin().display().to_string();
        let script = format!(
            "if [ -e {f} ]; then exec {fx} --line-text second --lines 1 --no-listen; \
             else touch {f}; exec {fx} --line-text first --lines 1 --exit-after-ms 200 --exit-code 1; fi",
            f = flag.display()
        );
        let first = s.start(shell("m", None, &script)).await.pid.unwrap();
        let st = until("the respawn", || {
            s.get("m").filter(|st| st.status == ModuleStatus::Running && st.pid != Some(first))
        })
        .await;
        assert_eq!(st.restarts_in_window, 1);
        assert_eq!(st.last_exit_code, Some(Some(1)));
        assert!(st.last_crash_at.is_some());
        until("the second run's line", || (count(&s, "m", "[m] second 0\n") == 1).then_some(())).await;
        let log = text(&s, "m");
        assert!(log.contains("[m] first 0\n"), "the crash's output survives the respawn: {log}");
        assert!(log.contains("[supervisor] m exited (code=1); restart 1/3 in window"), "{log}");
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_third_crash_in_the_window_gives_up() {
    // Scenario 11.
    within(async {
        let s = sup(cfg());
        let tok = token("giveup");
        s.start(fixture("m", None, &tok, &["--lines", "1", "--exit-after-ms", "30", "--exit-code", "3"]))
            .await;
        let st = until("give-up", || s.get("m").filter(|st| st.status == ModuleStatus::Crashed)).await;
        assert_eq!((st.restarts_in_window, st.last_exit_code, st.pid), (3, Some(Some(3)), None));
        assert_eq!(count(&s, "m", &format!("[m] {tok} 0\n")), 3, "three spawns");
        assert_eq!(
            count(&s, "m", "[supervisor] m exited (code=3); crashed 3x within 60000ms — giving up.\n"),
            1
        );
        assert!(pids_with(&tok).is_empty());
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_stayed_up_long_enough_clears_its_history() {
    // Scenario 12 with a healthy reset instead of a clock jump: max 2 would give up on the
    // second crash, but each run outlives `healthy_reset`.
    within(async {
        let c =
            SupervisorConfig { max_crashes_in_window: 2, healthy_reset: Duration::from_millis(150), ..cfg() };
        let s = sup(c);
        let tok = token("healthy");
        s.start(fixture("m", None, &tok, &["--exit-after-ms", "250", "--exit-code", "1"])).await;
        until("three crashes", || (count(&s, "m", "exited (code=1); restart 1/2") >= 3).then_some(())).await;
        let st = state(&s, "m");
        assert_ne!(st.status, ModuleStatus::Crashed);
        assert!(!text(&s, "m").contains("giving up"));
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_during_the_restart_delay_yields_exactly_one_child() {
    // R1: upstream's start() during the delay spawned a second child while the old exit
    // handler respawned into the old entry.
    within(async {
        let s = sup(SupervisorConfig { restart_delay: Duration::from_millis(400), ..cfg() });
        let (port, tok) = (free_port(), token("r1"));
        let req = fixture("m", Some(port), &tok, &[]);
        let first = s.start(req.clone()).await.pid.unwrap();
        sigkill(first);
        until("restarting", || s.get("m").filter(|st| st.status == ModuleStatus::Restarting)).await;
        let during = s.start(req.clone()).await;
        assert_eq!(
            (during.status, during.pid),
            (ModuleStatus::Restarting, None),
            "start joins the pending respawn"
        );
        let st = until("the respawn", || s.get("m").filter(|st| st.status == ModuleStatus::Running)).await;
        let second = st.pid.unwrap();
        until("readiness", || (port_holders(port) == [second]).then_some(())).await;
        // Another full delay: no second respawn may follow.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(pids_with(&tok), [second]);
        assert_eq!(state(&s, "m").pid, Some(second));
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_during_the_restart_delay_cancels_the_respawn() {
    // R1/R2: the pending respawn is cancelled by the operator's stop.
    within(async {
        let s = sup(SupervisorConfig { restart_delay: Duration::from_millis(300), ..cfg() });
        let tok = token("cancel");
        let pid = s.start(fixture("m", None, &tok, &["--no-listen"])).await.pid.unwrap();
        sigkill(pid);
        until("restarting", || s.get("m").filter(|st| st.status == ModuleStatus::Restarting)).await;
        assert_eq!(s.stop("m").await.unwrap().status, ModuleStatus::Stopped);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(state(&s, "m").status, ModuleStatus::Stopped);
        assert!(pids_with(&tok).is_empty());
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_after_a_crash_never_signals_the_recycled_pid() {
    // R3: upstream kept the dead child's handle and sent SIGTERM to -pid/pid on stop. Here
    // a stranger is made to receive exactly that pid (and pgid) before `stop`.
    within(async {
        let s = sup(SupervisorConfig { max_crashes_in_window: 1, ..cfg() });
        let tok = token("r3");
        let dead = s.start(fixture("m", None, &tok, &["--exit-after-ms", "50"])).await.pid.unwrap();
        until("give-up", || s.get("m").filter(|st| st.status == ModuleStatus::Crashed)).await;
        let stranger = spawn_with_pid(dead);
        if !crate::support::needs_root_feature(
            "stop_after_a_crash_never_signals_the_recycled_pid",
            stranger.is_some(),
            "a writable /proc/sys/kernel/ns_last_pid to make a stranger reuse the dead child's pid",
        ) {
            return;
        }
        let mut stranger = stranger.expect("checked above");
        assert_eq!(s.stop("m").await.unwrap().status, ModuleStatus::Stopped);
        s.restart("m", Some(fixture("m", None, &tok, &["--no-listen"]))).await.unwrap();
        s.kill_all_now();
        s.shutdown(Duration::from_secs(2)).await;
        assert!(!stranger.exited(), "the stranger holding the recycled pid {dead} was signalled");
    })
    .await;
}

/// Starts a sleeping fixture (own process group) whose pid is `want`, via
/// `/proc/sys/kernel/ns_last_pid`. `None` when that is not possible here.
fn spawn_with_pid(want: u32) -> Option<Guard> {
    use std::os::unix::process::CommandExt;
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (want - 1).to_string()).ok()?;
        let child = Command::new(fixture_bin())
            .arg("--no-listen")
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let g = Guard(child);
        if g.pid() == want {
            return Some(g);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_wrapper_whose_grandchild_holds_the_port_restarts_cleanly() {
    // R4: upstream left the grandchild holding the port; the respawn hit EADDRINUSE and
    // attribution called its own grandchild a squatter.
    within(async {
        let s = sup(cfg());
        let (port, tok) = (free_port(), token("r4"));
        let st = s.start(fixture("m", Some(port), &tok, &["--grandchild-holds-port"])).await;
        assert_eq!(st.start_error, None);
        let leader = st.pid.unwrap();
        let grandchild = port_holders(port)[0];
        assert_ne!(grandchild, leader);
        sigkill(leader); // the leader alone: its grandchild keeps the port, as with `sh -c`
        let st = until("the respawn to be ready", || {
            s.get("m").filter(|st| {
                st.status == ModuleStatus::Running
                    && st.pid != Some(leader)
                    && count(&s, "m", "ready pid=") == 2
            })
        })
        .await;
        assert_eq!((st.restarts_in_window, st.start_error.as_ref()), (1, None), "{st:?}");
        assert!(!alive(grandchild), "the old group was reaped before the respawn");
        let holder = port_holders(port)[0];
        assert_eq!(procfs::stat(holder).unwrap().pgid, st.pid.unwrap(), "the new group holds the port");
        assert!(!text(&s, "m").contains("squatter"));
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_respawned_child_goes_through_the_readiness_gate() {
    // R24: upstream never gated crash respawns, so one that never bound looked healthy.
    within(async {
        let s = sup(SupervisorConfig { ready_timeout: Duration::from_millis(300), ..cfg() });
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("no-listen");
        let fx = fixture_bin().display().to_string();
        let script =
            format!("if [ -e {f} ]; then exec {fx} --no-listen; else exec {fx}; fi", f = flag.display());
        let st = s.start(shell("m", Some(port), &script)).await;
        assert_eq!(st.start_error, None);
        std::fs::write(&flag, "").unwrap();
        sigkill(st.pid.unwrap());
        let st = until("the respawn's readiness verdict", || {
            s.get("m").filter(|st| st.start_error.is_some() && st.status == ModuleStatus::Running)
        })
        .await;
        assert!(matches!(st.start_error.unwrap().kind, StartErrorKind::StartedButUnbound { .. }));
        shutdown(&s).await;
    })
    .await;
}

// ---- crash-path port reclamation ---------------------------------------------------------

/// A module running as `parachute-vault` (via symlink) without listening, so the test can
/// put an orphan on its port and then crash it.
async fn vault_without_port(s: &Supervisor, link: &Path, port: u16) -> u32 {
    let req = SpawnRequest {
        short: "vault".into(),
        argv: vec![link.display().to_string(), "serve".into(), "--no-listen".into()],
        cwd: None,
        env: base_env(Some(port)),
        port: Some(port),
        env_file: None,
    };
    s.start(req).await.pid.unwrap()
}

fn orphan_cfg(reclaim: ReclaimPolicy) -> SupervisorConfig {
    SupervisorConfig { ready_timeout: Duration::ZERO, reclaim, ..cfg() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attributable_orphan_is_adopted_and_killed_before_the_respawn() {
    // Scenario 13.
    within(async {
        let s = sup(orphan_cfg(ReclaimPolicy::Adopt));
        let (_dir, link) = vault_link();
        let port = free_port();
        let pid = vault_without_port(&s, &link, port).await;
        let mut orphan = squatter(&link, port).await;
        sigkill(pid);
        until("the orphan to be killed", || orphan.exited().then_some(())).await;
        let st = until("the respawn", || {
            s.get("vault").filter(|st| st.status == ModuleStatus::Running && st.pid.is_some_and(|p| p != pid))
        })
        .await;
        assert_eq!((st.restarts_in_window, st.start_error), (1, None));
        assert!(text(&s, "vault").contains("held by an attributable orphan"));
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrelated_holder_is_surfaced_and_never_killed() {
    // Scenarios 15, 19: the holder's command line does not carry the module's marker.
    within(async {
        let s = sup(orphan_cfg(ReclaimPolicy::Adopt));
        let (_dir, link) = vault_link();
        let port = free_port();
        let pid = vault_without_port(&s, &link, port).await;
        let mut stranger = squatter(&fixture_bin(), port).await;
        sigkill(pid);
        let st = until("crashed", || s.get("vault").filter(|st| st.status == ModuleStatus::Crashed)).await;
        let err = st.start_error.unwrap();
        assert!(matches!(err.kind, StartErrorKind::PortSquatter { holder_pid, .. } if holder_pid == stranger.pid()));
        assert_eq!(st.restarts_in_window, 0, "a squatter halt does not tick the budget");
        assert!(st.last_exit_code.is_some());
        assert!(text(&s, "vault").contains("refusing to kill it; surfacing"));
        assert!(!stranger.exited());
        shutdown(&s).await;
    })
    .await;
}

/// SIGKILLs, on drop, every process of this test whose command line carries the token.
struct KillByToken(String);

impl Drop for KillByToken {
    fn drop(&mut self) {
        for p in pids_with(&self.0) {
            sigkill(p);
        }
    }
}

/// Makes the next new process take `target` (a free pid) through `ns_last_pid` (root only),
/// as `setsid <fixture> --port <port>`: a stranger leading its own group, whose pgid is
/// therefore `target`. Retries while other processes on the host race for the pid.
async fn recycle_pid_as_group_leader(target: u32, port: u16) -> Guard {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (target - 1).to_string()).unwrap();
        let g = Guard(
            Command::new("setsid")
                .arg(fixture_bin())
                .args(["--port", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        if g.pid() == target {
            until("the stranger to listen", || port_holders(port).contains(&target).then_some(())).await;
            return g;
        }
        drop(g);
        assert!(!alive(target), "pid {target} was taken by another process; cannot recycle it");
    }
    panic!("could not make a new process take pid {target}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_that_recycled_the_dead_childs_pid_and_leads_its_group_is_never_signalled() {
    // After the crashed leader is reaped its pid (= its old pgid) is free. A stranger that
    // takes it and calls setsid has pgid == the dead child's pid; judging "own group" by
    // that number would SIGTERM it. A setsid'd helper keeps the output pipe open, so the
    // actor waits out its drain timeout between the reap and the port check: the window in
    // which the stranger takes the pid and the port.
    within(async {
        let s = sup(orphan_cfg(ReclaimPolicy::Adopt));
        let port = free_port();
        let tok = token("recycled");
        let pipe_tok = format!("{tok}-pipe");
        let fx = fixture_bin().display().to_string();
        let script = format!(
            "setsid {fx} --no-listen --line-text {pipe_tok} & exec {fx} --no-listen --line-text {tok}"
        );
        let pid = s.start(shell("m", Some(port), &script)).await.pid.unwrap();
        // Setsid'd, so the supervisor's group kill on drop cannot reach it: this guard does.
        let _pipe_holders = KillByToken(pipe_tok.clone());
        until("the pipe holder", || (!pids_with(&pipe_tok).is_empty()).then_some(())).await;
        sigkill(pid);
        until("the leader to be reaped", || (!Path::new(&format!("/proc/{pid}")).exists()).then_some(()))
            .await;
        let mut stranger = recycle_pid_as_group_leader(pid, port).await;
        let st = until("crashed", || s.get("m").filter(|st| st.status == ModuleStatus::Crashed)).await;
        let err = st.start_error.expect("a start error");
        assert!(
            matches!(err.kind, StartErrorKind::PortSquatter { holder_pid, .. } if holder_pid == pid),
            "{err:?}"
        );
        assert!(!stranger.exited(), "the stranger with the recycled pid was signalled");
        assert!(text(&s, "m").contains("refusing to kill it; surfacing"));
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_policy_surfaces_even_an_attributable_orphan() {
    // Scenario 18.
    within(async {
        let s = sup(orphan_cfg(ReclaimPolicy::Prompt));
        let (_dir, link) = vault_link();
        let port = free_port();
        let pid = vault_without_port(&s, &link, port).await;
        let mut orphan = squatter(&link, port).await;
        sigkill(pid);
        let st = until("crashed", || s.get("vault").filter(|st| st.status == ModuleStatus::Crashed)).await;
        assert!(matches!(st.start_error.unwrap().kind, StartErrorKind::PortSquatter { .. }));
        assert!(text(&s, "vault").contains("(reclaim policy \"prompt\") — surfacing instead of adopting"));
        assert!(!orphan.exited());
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_runtime_module_adopts_only_holders_from_its_install_dir() {
    // Scenarios 20/21: `sh …` says nothing; the install dir is the marker.
    within(async {
        let s = sup(orphan_cfg(ReclaimPolicy::Adopt));
        let dir = tempfile::tempdir().unwrap();
        let install = dir.path().join("vault-install");
        std::fs::create_dir(&install).unwrap();
        let server = install.join("server");
        std::os::unix::fs::symlink(fixture_bin(), &server).unwrap();
        let port = free_port();
        let req = SpawnRequest {
            short: "vault".into(),
            argv: vec!["sh".into(), "-c".into(), format!("exec {} --no-listen", fixture_bin().display())],
            cwd: Some(install.clone()),
            env: base_env(Some(port)),
            port: Some(port),
            env_file: None,
        };
        let pid = s.start(req).await.pid.unwrap();
        let mut orphan = squatter(&server, port).await;
        sigkill(pid);
        until("the orphan from the install dir to be killed", || orphan.exited().then_some(())).await;
        until("the respawn", || s.get("vault").filter(|st| st.status == ModuleStatus::Running)).await;
        shutdown(&s).await;
    })
    .await;
}

// ---- stop and restart ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_terminates_waits_and_frees_the_port() {
    // Scenarios 22, 24.
    within(async {
        let s = sup(cfg());
        let (port, tok) = (free_port(), token("stop"));
        let pid = s.start(fixture("m", Some(port), &tok, &[])).await.pid.unwrap();
        let st = s.stop("m").await.unwrap();
        assert_eq!((st.status, st.pid), (ModuleStatus::Stopped, None));
        assert_eq!(st.last_exit_code, Some(None), "killed by SIGTERM: no exit code");
        assert!(!alive(pid) && port_holders(port).is_empty(), "gone when stop returns");
        assert!(!text(&s, "m").contains("escalating"));
        assert_eq!(s.stop("m").await.unwrap().status, ModuleStatus::Stopped, "idempotent");
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_escalates_to_sigkill_after_the_kill_timeout() {
    // Scenario 23.
    within(async {
        let s = sup(cfg());
        let tok = token("esc");
        let pid = s.start(fixture("m", Some(free_port()), &tok, &["--ignore-sigterm"])).await.pid.unwrap();
        assert_eq!(s.stop("m").await.unwrap().status, ModuleStatus::Stopped);
        assert!(!alive(pid));
        let line = "[supervisor] m did not exit 300ms after SIGTERM — escalating to SIGKILL.\n";
        assert_eq!(count(&s, "m", line), 1, "{}", text(&s, "m"));
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_stop_of_a_wrapper_take_its_whole_group() {
    // Scenarios 25, 27, 28.
    within(async {
        let s = sup(cfg());
        let (port, tok) = (free_port(), token("wrap"));
        let first = s.start(fixture("m", Some(port), &tok, &["--grandchild-holds-port"])).await;
        let gc = port_holders(port)[0];
        let st = s.restart("m", None).await.unwrap().unwrap();
        assert_eq!((st.status, st.start_error.as_ref()), (ModuleStatus::Running, None), "{st:?}");
        assert_ne!(st.pid, first.pid);
        assert!(!alive(gc), "the old grandchild went with its group");
        assert_eq!(procfs::stat(port_holders(port)[0]).unwrap().pgid, st.pid.unwrap());
        s.stop("m").await;
        assert!(port_holders(port).is_empty() && pids_with(&tok).is_empty());
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_replays_or_replaces_the_request_and_respawns_use_it() {
    // Scenarios 29, 30, 31.
    within(async {
        let s = sup(cfg());
        let tok = token("env");
        let mut req = fixture("m", None, &tok, &["--print-env", "ORIGIN", "--no-listen"]);
        req.env.push(("ORIGIN".into(), "a".into()));
        s.start(req.clone()).await;
        until("first", || (count(&s, "m", "[m] env ORIGIN=a\n") == 1).then_some(())).await;
        s.restart("m", None).await.unwrap();
        until("replayed", || (count(&s, "m", "[m] env ORIGIN=a\n") == 2).then_some(())).await;

        let mut next = req.clone();
        next.env.retain(|(k, _)| k != "ORIGIN");
        next.env.push(("ORIGIN".into(), "b".into()));
        let pid = s.restart("m", Some(next)).await.unwrap().unwrap().pid.unwrap();
        until("new request", || (count(&s, "m", "[m] env ORIGIN=b\n") == 1).then_some(())).await;
        sigkill(pid);
        until("crash respawn with the new request", || {
            (count(&s, "m", "[m] env ORIGIN=b\n") == 2).then_some(())
        })
        .await;

        let pid = state(&s, "m").pid;
        let mut other = req.clone();
        other.short = "scribe".into();
        let err = s.restart("m", Some(other)).await.unwrap_err().to_string();
        assert!(err.contains("nextReq.short is \"scribe\""), "{err}");
        assert_eq!(state(&s, "m").pid, pid, "nothing was stopped");
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_returns_only_after_the_last_output_is_in_the_log() {
    // R9: upstream returned from stop() before the pumps had drained the pipes. Here a
    // process that left the group (setsid) still holds stdout; it is the module's, so stop
    // terminates it too, and it writes a last line on SIGTERM. stop returns only once that
    // line is in the log (the pipe's EOF, bounded by a 1 s drain timeout).
    within(async {
        let s = sup(cfg());
        let fx = fixture_bin().display().to_string();
        let script = format!(
            "setsid sh -c 'trap \"echo last-words; exit 0\" TERM; echo escaped; while :; do sleep 0.05; done' & \
             exec {fx} --no-listen"
        );
        s.start(shell("m", None, &script)).await;
        until("the writer to leave the group", || text(&s, "m").contains("[m] escaped\n").then_some(()))
            .await;
        s.stop("m").await;
        let log = text(&s, "m");
        let last = log.find("[m] last-words\n");
        assert!(last.is_some_and(|at| at > log.find("[m] escaped\n").unwrap()), "{log}");
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_a_delayed_bind() {
    // Scenario 40.
    within(async {
        let s = sup(cfg());
        let (port, tok) = (free_port(), token("delay"));
        let st = s.start(fixture("m", Some(port), &tok, &["--listen-delay-ms", "150"])).await;
        assert_eq!((st.status, st.start_error), (ModuleStatus::Running, None));
        assert_eq!(port_holders(port), [st.pid.unwrap()]);
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_is_reported_and_a_late_bind_clears_it() {
    // Scenarios 39, 41.
    within(async {
        let c = SupervisorConfig {
            ready_timeout: Duration::from_millis(100),
            late_bind_watch: Duration::from_secs(5),
            ..cfg()
        };
        let s = sup(c);
        let (port, tok) = (free_port(), token("late"));
        let st = s.start(fixture("m", Some(port), &tok, &["--listen-delay-ms", "400"])).await;
        assert_eq!(st.status, ModuleStatus::Running);
        let err = st.start_error.expect("started_but_unbound");
        assert!(matches!(err.kind, StartErrorKind::StartedButUnbound { .. }));
        assert!(err.description.contains(&format!("not listening on port {port} after 100ms")));
        until("the late bind to clear it", || s.get("m").filter(|st| st.start_error.is_none())).await;
        assert!(text(&s, "m").contains(&format!("[supervisor] m is now listening on port {port}.")));
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_stays_after_the_watch_and_restart_clears_it() {
    // Scenarios 42, 45.
    within(async {
        let c = SupervisorConfig {
            ready_timeout: Duration::from_millis(100),
            late_bind_watch: Duration::from_millis(100),
            ..cfg()
        };
        let s = sup(c);
        let (port, tok) = (free_port(), token("stay"));
        let st = s.start(fixture("m", Some(port), &tok, &["--no-listen"])).await;
        assert!(st.start_error.is_some());
        tokio::time::sleep(Duration::from_millis(300)).await; // past the watch's end
        assert!(state(&s, "m").start_error.is_some());
        let st = s.restart("m", Some(fixture("m", Some(port), &tok, &[]))).await.unwrap().unwrap();
        assert_eq!(st.start_error, None);
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_counts_only_the_childs_own_listener() {
    // R25: a squatter arriving after the pre-spawn check must not make the module look
    // ready, and a module bound only to ::1 is ready (upstream probed 127.0.0.1 only).
    within(async {
        let s = sup(SupervisorConfig { ready_timeout: Duration::from_millis(500), ..cfg() });
        let (port, tok) = (free_port(), token("r25"));
        let starting = s.start(fixture("m", Some(port), &tok, &["--no-listen"]));
        let bind_meanwhile = async {
            until("running", || s.get("m").filter(|st| st.status == ModuleStatus::Running)).await;
            std::net::TcpListener::bind(("127.0.0.1", port)).unwrap()
        };
        let (st, _late_squatter) = tokio::join!(starting, bind_meanwhile);
        assert!(matches!(st.start_error.map(|e| e.kind), Some(StartErrorKind::StartedButUnbound { .. })));

        let port6 = free_port();
        let st = s.start(fixture("v6", Some(port6), &tok, &["--bind", "v6"])).await;
        assert_eq!((st.status, st.start_error), (ModuleStatus::Running, None));
        shutdown(&s).await;
    })
    .await;
}

// ---- output and logs -----------------------------------------------------------------------

/// A writer sink whose text the test can read.
fn captured() -> (OutputSink, Arc<Mutex<String>>) {
    let (w, mut r) = tokio::io::duplex(1 << 16);
    let out = Arc::new(Mutex::new(String::new()));
    let o2 = Arc::clone(&out);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
            o2.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (OutputSink::Writer(Box::new(w)), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_prefixed_per_module_for_both_streams() {
    // Scenarios 32, 34, 35.
    within(async {
        let (sink, out) = captured();
        let s = Supervisor::new(cfg(), sink);
        let args = ["--lines", "3", "--stderr-lines", "2", "--no-listen"];
        s.start(fixture("a", None, "ta", &args)).await;
        s.start(fixture("b", None, "tb", &args)).await;
        let expect = |m: &str, t: &str| {
            let mut v: Vec<String> = (0..3).map(|i| format!("[{m}] {t} {i}\n")).collect();
            v.extend((0..2).map(|i| format!("[{m}] err {t} {i}\n")));
            v
        };
        for (m, t) in [("a", "ta"), ("b", "tb")] {
            until("all lines", || (s.logs(m, None).unwrap().lines.len() == 5).then_some(())).await;
            let lines: Vec<String> = s.logs(m, None).unwrap().lines.into_iter().map(|l| l.text).collect();
            let stdout: Vec<_> = lines.iter().filter(|l| !l.contains("err")).cloned().collect();
            let stderr: Vec<_> = lines.iter().filter(|l| l.contains("err")).cloned().collect();
            assert_eq!([stdout, stderr].concat(), expect(m, t), "each stream in order");
            until("the output", || {
                expect(m, t).iter().all(|l| out.lock().unwrap().contains(l.as_str())).then_some(())
            })
            .await;
        }
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_keeps_up_once_the_buffer_is_full_and_is_told_of_gaps() {
    // R10: upstream's follow compared lengths and went silent at capacity.
    within(async {
        let s = sup(SupervisorConfig { log_buffer_bytes: 2_000, ..cfg() });
        let tok = "r10";
        let args = ["--lines", "300", "--exit-after-ms", "100", "--exit-code", "1"];
        s.start(fixture("m", None, tok, &args)).await;
        let mut f = s.follow("m", Some(0)).unwrap();
        until("the first run's lines", || (s.logs("m", None).unwrap().next_seq >= 300).then_some(())).await;
        let (mut seen, mut missed, mut last, mut gave_up) = (0u64, 0u64, None, false);
        while !gave_up {
            match f.next().await.expect("the follower ended early") {
                LogEvent::Gap { missed: n } => missed += n,
                LogEvent::Line(l) => {
                    assert!(last.is_none_or(|p| l.seq > p), "seq goes up");
                    last = Some(l.seq);
                    seen += 1;
                    gave_up = l.text.contains("giving up");
                }
            }
        }
        assert!(missed > 0, "the slow follower was told about evicted lines");
        assert_eq!(seen + missed, last.unwrap() + 1, "every line is either delivered or counted");
        assert!(last.unwrap() >= 900, "lines of all three runs arrived");
        // The follower ends once the entry goes away.
        s.remove("m").await.unwrap();
        assert!(s.get("m").is_none());
        while let Some(ev) = f.next().await {
            assert!(matches!(ev, LogEvent::Line(_) | LogEvent::Gap { .. }));
        }
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_without_newline_comes_out_in_bounded_pieces() {
    // R27: upstream buffered the whole line in memory waiting for a newline.
    within(async {
        let max = 16 * 1024;
        let s = sup(SupervisorConfig { max_line_bytes: max, log_buffer_bytes: 4 << 20, ..cfg() });
        s.start(fixture("m", None, "big", &["--long-line", "1000000", "--no-listen"])).await;
        // 61 full pieces arrive while the child is alive and the line is unfinished.
        until("the pieces", || (s.logs("m", None).unwrap().lines.len() >= 1_000_000 / max).then_some(()))
            .await;
        for l in s.logs("m", None).unwrap().lines {
            assert!(l.text.ends_with(" …[continued]\n"), "{:?}", &l.text[l.text.len() - 20..]);
            assert!(l.text.len() <= "[m] ".len() + max + " …[continued]\n".len());
        }
        s.stop("m").await;
        let all = text(&s, "m");
        assert!(all.ends_with("x\n"), "the tail is flushed at EOF as a final line");
        assert_eq!(all.matches('x').count(), 1_000_000);
        shutdown(&s).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_output_never_blocks_the_supervisor() {
    // R27: nobody reads the output; lines are dropped and counted, the module runs on.
    within(async {
        let (w, mut r) = tokio::io::duplex(64);
        let c = SupervisorConfig { output_queue_lines: 16, log_buffer_bytes: 1 << 16, ..cfg() };
        let s = Supervisor::new(c, OutputSink::Writer(Box::new(w)));
        s.start(fixture("m", None, "stuck", &["--chatty-bytes", "2000000", "--no-listen"])).await;
        until("the child's last line in the log", || text(&s, "m").contains("chatty done").then_some(()))
            .await;
        assert_eq!(s.stop("m").await.unwrap().status, ModuleStatus::Stopped);
        let mut seen = String::new();
        let mut buf = vec![0u8; 1 << 16];
        while !seen.contains("[supervisor] dropped ") {
            let n = r.read(&mut buf).await.unwrap();
            assert!(n > 0, "output ended without a drop notice");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        shutdown(&s).await;
    })
    .await;
}

// ---- shutdown, state file --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_all_in_parallel_under_one_deadline() {
    // R8: upstream stopped modules one by one, each up to the kill timeout, with no bound
    // after SIGKILL.
    within(async {
        let s = sup(SupervisorConfig { kill_timeout: Duration::from_secs(30), ..cfg() });
        let tok = token("shut");
        s.start(fixture("polite", None, &tok, &["--no-listen"])).await;
        // With a port, start() returns once it listens, i.e. after it chose to ignore SIGTERM.
        let stubborn = s.start(fixture("stubborn", Some(free_port()), &tok, &["--ignore-sigterm"])).await;
        assert_eq!(stubborn.start_error, None);
        let mut f = s.follow("polite", None).unwrap();
        let t = tokio::time::Instant::now();
        let report = s.shutdown(Duration::from_millis(300)).await;
        assert!(t.elapsed() < Duration::from_secs(5), "bounded by the deadline, not the kill timeout");
        assert_eq!(report.killed, ["stubborn"]);
        assert!(!report.clean);
        assert!(pids_with(&tok).is_empty());
        while f.next().await.is_some() {} // followers end
        let after = s.start(fixture("late", None, &tok, &["--no-listen"])).await;
        assert_eq!(after.status, ModuleStatus::Stopped);
        assert!(pids_with(&tok).is_empty(), "nothing starts after shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_all_now_kills_every_group_at_once() {
    // The second signal: SIGKILL to every group, synchronously, SIGTERM-proof grandchildren
    // included.
    within(async {
        let s = sup(SupervisorConfig { kill_timeout: Duration::from_secs(30), ..cfg() });
        let (port, tok) = (free_port(), token("killnow"));
        let a =
            s.start(fixture("a", Some(port), &tok, &["--ignore-sigterm", "--grandchild-holds-port"])).await;
        let b = s.start(fixture("b", Some(free_port()), &tok, &["--ignore-sigterm"])).await;
        let doomed = [a.pid.unwrap(), b.pid.unwrap(), port_holders(port)[0]];
        assert!(doomed.iter().all(|&p| alive(p)) && doomed[2] != doomed[0], "two leaders and a grandchild");
        assert_eq!(s.tracked_pids(), [a.pid.unwrap(), b.pid.unwrap()].into_iter().collect());
        s.kill_all_now();
        until("every group to die", || doomed.iter().all(|&p| !alive(p)).then_some(())).await;
        s.shutdown(Duration::from_millis(200)).await;
        assert!(pids_with(&tok).is_empty());
        assert!(s.tracked_pids().is_empty());
    })
    .await;
}

/// Whether `pid` has SIGTERM set to `SIG_IGN` (the `SigIgn` mask of its `/proc` status).
fn ignores_sigterm(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| u64::from_str_radix(l.strip_prefix("SigIgn:")?.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_file_lists_live_children_and_leftovers_are_stopped_at_boot() {
    // R7(d).
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("run/supervisor.json");
        let s = sup(SupervisorConfig { state_file: Some(file.clone()), ..cfg() });
        let tok = token("state");
        let a = s.start(fixture("a", None, &tok, &["--no-listen"])).await.pid.unwrap();
        let b = s.start(fixture("b", None, &tok, &["--no-listen"])).await.pid.unwrap();
        let read = || parachute::supervisor::statefile::read(&file).unwrap();
        // The file is rewritten in the background (off the crash→respawn path), so wait for
        // the view to arrive rather than expecting it the instant start() returns.
        let pids = |want: Vec<u32>| {
            let read = &read;
            move || (read().modules.iter().map(|e| e.pid).collect::<Vec<_>>() == want).then_some(())
        };
        until("the state file to list both children", pids(vec![a, b])).await;
        let entries = read().modules;
        assert_eq!(
            entries.iter().map(|e| (e.short.as_str(), e.pid, e.pgid)).collect::<Vec<_>>(),
            [("a", a, a), ("b", b, b)]
        );
        assert_eq!(entries[0].start_ticks, procfs::stat(a).unwrap().start_ticks);
        s.stop("a").await;
        until("the state file to drop the stopped child", pids(vec![b])).await;
        shutdown(&s).await;
        until("the state file to be emptied at shutdown", pids(vec![])).await;

        // A previous supervisor's leftover (own group, ignores SIGTERM) is ours by identity.
        use std::os::unix::process::CommandExt;
        let mut left = Guard(
            Command::new(fixture_bin())
                .args(["--no-listen", "--ignore-sigterm", "--line-text", &tok])
                .process_group(0)
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let pid = left.pid();
        let st = until("the leftover to run", || procfs::stat(pid).filter(|s| s.pgid == pid)).await;
        // Its own group is set before the exec; SIGTERM is ignored only once the fixture
        // runs. A SIGTERM in between ended it as `Terminated` (about 1 run in 12 under load).
        until("the leftover to ignore SIGTERM", || ignores_sigterm(pid).then_some(())).await;
        let entry = parachute::supervisor::statefile::StateEntry {
            short: "vault".into(),
            pid,
            pgid: pid,
            start_ticks: st.start_ticks,
            escaped: Vec::new(),
            cgroup: None,
        };
        let doc = parachute::supervisor::statefile::StateDoc::now(vec![entry], Vec::new());
        parachute::supervisor::statefile::write(&file, &doc).unwrap();
        let reports = adopt_leftovers(&file, Duration::from_millis(100)).await;
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].outcome, LeftoverOutcome::Killed);
        until("the leftover to die", || left.exited().then_some(())).await;
        assert!(read().modules.is_empty());
    })
    .await;
}
