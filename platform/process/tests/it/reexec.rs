//! Tests that need a process of their own: this test binary re-executes itself, running one
//! `#[ignore]`d helper test selected by `--exact`, with its role in an environment variable.
//! - PDEATHSIG: the helper spawns a child through a `Spawner`, then we SIGKILL the helper; the
//!   child must die although nobody signalled it.
//! - Subreaper: setting it would change how orphans behave for every other test in this
//!   process, so the helper does it in its own process.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use parachute_process::procfs::{self, ProcessIdentity, is_same_process};
use parachute_process::{ExitInfo, SpawnSpec, reap_untracked_zombies, set_child_subreaper};
use tokio::process::Command;

use crate::support::{DEADLINE, KillOnDrop, LineReader, PATH, sh, spawn, spawner, wait_until, within};

const ROLE_VAR: &str = "PARACHUTE_PROCESS_TEST_ROLE";

/// Start this binary running only `helper` (a full test path) with `role`.
fn helper(helper: &str, role: &str) -> Command {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", helper, "--ignored", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[expect(clippy::disallowed_methods, reason = "the re-executed helper learns its role from its environment")]
fn role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

#[tokio::test]
async fn children_die_when_the_supervisor_is_sigkilled() {
    let mut parent = helper("reexec::helper_spawns_a_child_and_waits", "pdeathsig").spawn().unwrap();
    let mut out = LineReader::new(parent.stdout.take().unwrap());
    let line = out.after("CHILD ").await;
    let (pid, ticks) = line.split_once(' ').unwrap();
    let id = ProcessIdentity { pid: pid.parse().unwrap(), start_ticks: ticks.parse().unwrap() };
    let _guard = KillOnDrop(id);
    assert!(is_same_process(&id), "the grandchild runs while its supervisor does");
    assert!(procfs::is_descendant(id.pid, std::process::id()));

    parent.start_kill().unwrap();
    within("helper exit", parent.wait()).await.unwrap();
    wait_until("PDEATHSIG to kill the orphaned child", || !is_same_process(&id)).await;
}

#[test]
#[ignore = "helper: runs only when re-executed by children_die_when_the_supervisor_is_sigkilled"]
fn helper_spawns_a_child_and_waits() {
    if role().as_deref() != Some("pdeathsig") {
        eprintln!("NOTE: helper only; run via children_die_when_the_supervisor_is_sigkilled");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let spawner = spawner();
        let s = spawn(&spawner, SpawnSpec::new("sleep").arg("1000").env("PATH", PATH)).await;
        let id = procfs::identity(s.child.pid()).unwrap();
        println!("CHILD {} {}", id.pid, id.start_ticks);
        // Bounded: if nobody kills us, exit (and the child dies with the spawner thread).
        tokio::time::sleep(DEADLINE).await;
    });
}

#[tokio::test]
async fn subreaper_reaps_orphans_but_never_a_tracked_child() {
    let mut helper = helper("reexec::helper_subreaper", "subreaper");
    let out = within("subreaper helper", helper.stderr(Stdio::piped()).output()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("SUBREAPER-OK"),
        "helper failed: {}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "helper: runs only when re-executed by subreaper_reaps_orphans_but_never_a_tracked_child"]
fn helper_subreaper() {
    if role().as_deref() != Some("subreaper") {
        eprintln!("NOTE: helper only; run via subreaper_reaps_orphans_but_never_a_tracked_child");
        return;
    }
    set_child_subreaper().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let no_tracked = HashSet::new();

        // 1. An orphaned grandchild is reparented to us and reaped with its status.
        let mut sh_parent = std::process::Command::new("sh")
            .args(["-c", "(sleep 0.2; exit 7) & echo $!"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(sh_parent.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let orphan: u32 = line.trim().parse().unwrap();
        assert!(sh_parent.wait().unwrap().success());
        let mut reaped = Vec::new();
        within("orphan reaped", async {
            while !reaped.iter().any(|(p, _)| *p == orphan) {
                reaped.extend(reap_untracked_zombies(&no_tracked));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(reaped.contains(&(orphan, ExitInfo { code: Some(7), signal: None })), "{reaped:?}");

        // 2. A supervised leader's zombie is never stolen, even with an empty `tracked`.
        let spawner = spawner();
        let child = spawn(&spawner, sh("exit 3")).await.child;
        within("leader exit", child.exited()).await;
        let reaped = reap_untracked_zombies(&no_tracked);
        assert!(!reaped.iter().any(|(p, _)| *p == child.pid()), "stole a GroupChild's status: {reaped:?}");
        assert_eq!(within("reap", child.reap(Duration::from_secs(1))).await.code, Some(3));

        // 3. Another waiter's child, named in `tracked`, is left alone too.
        let mut other = std::process::Command::new("sh").args(["-c", "exit 5"]).spawn().unwrap();
        let other_pid = other.id();
        wait_until("other child zombie", || procfs::stat(other_pid).is_some_and(|s| s.state == 'Z')).await;
        let reaped = reap_untracked_zombies(&HashSet::from([other_pid]));
        assert!(!reaped.iter().any(|(p, _)| *p == other_pid), "stole a tracked child's status: {reaped:?}");
        assert_eq!(other.wait().unwrap().code(), Some(5), "its own waiter still gets the status");
        println!("SUBREAPER-OK");
    });
}
