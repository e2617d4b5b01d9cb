//! Exit observation, group draining, refusal after reap, drop, PDEATHSIG on spawner exit.

use std::time::Duration;

use parachute_process::procfs::{self, is_same_process};
use parachute_process::{ExitInfo, Signal, SignalError, SpawnSpec};

use crate::support::{KillOnDrop, LineReader, PATH, sh, spawn, spawner, wait_until, within};

#[tokio::test]
async fn exited_fires_without_reaping_and_reap_refuses_later_signals() {
    let spawner = spawner();
    let s = spawn(&spawner, sh("exit 3")).await;
    let child = s.child;
    let pid = child.pid();
    let handle = child.handle();
    within("exit", child.exited()).await;
    assert!(child.has_exited());
    assert_eq!(procfs::stat(pid).map(|st| st.state), Some('Z'), "exited but still unreaped (zombie)");
    // Signalling an unreaped zombie is allowed (its pid cannot be reused) and harmless.
    child.signal(Signal::Term).unwrap();
    child.signal_group(Signal::Term).unwrap();
    within("exited again", child.exited()).await;

    let exit = within("reap", child.reap(Duration::from_secs(1))).await;
    assert_eq!(exit, ExitInfo { code: Some(3), signal: None });
    assert_eq!(exit.to_string(), "exited with code 3");
    assert!(handle.is_reaped());
    assert!(matches!(handle.signal(Signal::Term), Err(SignalError::Reaped { pid: p }) if p == pid));
    assert!(matches!(handle.signal_group(Signal::Kill), Err(SignalError::Reaped { .. })));
    let msg = handle.signal(Signal::Term).unwrap_err().to_string();
    assert!(msg.contains(&pid.to_string()) && msg.contains("reaped"), "{msg}");
    within("exited after reap", handle.exited()).await;
}

#[tokio::test]
async fn reap_terminates_a_backgrounded_grandchild_left_by_a_crashed_leader() {
    let spawner = spawner();
    let s = spawn(&spawner, sh("sleep 1000 & echo $!; wait")).await;
    let child = s.child;
    let gpid: u32 = LineReader::new(s.stdout).next().await.parse().unwrap();
    let grandchild = KillOnDrop::pid(gpid);
    assert_eq!(procfs::stat(gpid).unwrap().pgid, child.pid());
    assert_eq!(child.group_members(), vec![gpid]);

    // The leader "crashes"; the grandchild (the usual port holder) survives it.
    child.signal(Signal::Kill).unwrap();
    within("leader exit", child.exited()).await;
    assert!(is_same_process(&grandchild.0), "killing only the leader leaves the grandchild running");

    let reaped = within("reap", child.reap_detailed(Duration::from_secs(10))).await;
    assert_eq!(reaped.exit.signal, Some(libc::SIGKILL));
    assert_eq!(reaped.exit.to_string(), "was killed by signal 9 (SIGKILL)");
    assert_eq!(reaped.terminated, vec![gpid]);
    assert!(reaped.killed.is_empty(), "sleep dies on SIGTERM within the grace period");
    assert!(!is_same_process(&grandchild.0), "the group is gone before the exit is reported");
}

#[tokio::test]
async fn reap_sigkills_a_member_that_ignores_sigterm_after_the_grace() {
    let spawner = spawner();
    let s = spawn(&spawner, sh("trap '' TERM; sleep 1000 & echo $!; wait")).await;
    let child = s.child;
    let gpid: u32 = LineReader::new(s.stdout).next().await.parse().unwrap();
    let grandchild = KillOnDrop::pid(gpid);
    child.signal(Signal::Kill).unwrap();
    within("leader exit", child.exited()).await;
    let reaped = within("reap", child.reap_detailed(Duration::from_millis(300))).await;
    assert_eq!(reaped.terminated, vec![gpid]);
    assert_eq!(reaped.killed, vec![gpid], "SIGTERM was ignored, so SIGKILL followed");
    assert!(!is_same_process(&grandchild.0));
}

#[tokio::test]
async fn signal_group_reaches_every_member() {
    let spawner = spawner();
    let s = spawn(&spawner, sh("sleep 1000 & echo $!; wait")).await;
    let child = s.child;
    let gpid: u32 = LineReader::new(s.stdout).next().await.parse().unwrap();
    let grandchild = KillOnDrop::pid(gpid);
    child.signal_group(Signal::Term).unwrap();
    within("leader exit", child.exited()).await;
    wait_until("grandchild killed by the group signal", || !is_same_process(&grandchild.0)).await;
    let exit = within("reap", child.reap(Duration::from_secs(10))).await;
    assert_eq!(exit.signal, Some(libc::SIGTERM));
}

#[tokio::test]
async fn dropping_an_unreaped_child_kills_and_reaps_its_group() {
    let spawner = spawner();
    let s = spawn(&spawner, sh("sleep 1000 & echo $!; wait")).await;
    let pid = s.child.pid();
    let gpid: u32 = LineReader::new(s.stdout).next().await.parse().unwrap();
    let grandchild = KillOnDrop::pid(gpid);
    let leader = procfs::identity(pid).unwrap();
    let handle = s.child.handle();
    drop(s.child);
    wait_until("background reap of the dropped child", || handle.is_reaped()).await;
    assert!(!is_same_process(&leader));
    wait_until("grandchild killed with the group", || !is_same_process(&grandchild.0)).await;
    assert!(procfs::stat(pid).is_none_or(|st| st.start_ticks != leader.start_ticks), "no zombie left behind");
}

/// PDEATHSIG is tied to the forking thread: when the spawner thread ends (last handle
/// dropped), its children are SIGKILLed by the kernel.
#[tokio::test]
async fn children_die_when_their_spawner_thread_ends() {
    let own = spawner();
    let s = spawn(&own, SpawnSpec::new("sleep").arg("1000").env("PATH", PATH)).await;
    assert!(!s.child.has_exited());
    drop(own);
    within("PDEATHSIG after the spawner thread ended", s.child.exited()).await;
    let exit = within("reap", s.child.reap(Duration::from_secs(1))).await;
    assert_eq!(exit.signal, Some(libc::SIGKILL));
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported() {
    let spawner = spawner();
    let ok = spawn(&spawner, sh("exit 0")).await.child;
    assert!(within("reap", ok.reap(Duration::from_secs(1))).await.success());
    let err = spawn(&spawner, sh("exit 255")).await.child;
    assert_eq!(within("reap", err.reap(Duration::from_secs(1))).await.code, Some(255));
    let usr = spawn(&spawner, SpawnSpec::new("sleep").arg("1000").env("PATH", PATH)).await.child;
    usr.signal(Signal::Usr1).unwrap();
    within("exit", usr.exited()).await;
    let exit = within("reap", usr.reap(Duration::from_secs(1))).await;
    assert_eq!(exit, ExitInfo { code: None, signal: Some(libc::SIGUSR1) });
    assert!(!exit.success());
}

/// A spawn whose caller is cancelled after the fork must not leave an unwatched child.
#[tokio::test]
async fn a_cancelled_spawn_kills_its_child() {
    let spawner = spawner();
    let marker = "4321.5";
    let mut fut = Box::pin(spawner.spawn(SpawnSpec::new("sleep").arg(marker).env("PATH", PATH)));
    // One poll sends the request; then the caller gives up.
    let pending = std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx).is_pending())).await;
    assert!(pending, "the fork cannot have completed within the first poll");
    drop(fut);
    // Requests are served in order: once this one is done, the first was forked.
    let later = spawn(&spawner, SpawnSpec::new("true").env("PATH", PATH)).await.child;
    within("reap", later.reap(Duration::from_secs(1))).await;
    let expected = format!("sleep {marker}");
    wait_until("the orphaned spawn to be killed", || {
        !procfs::children_of(std::process::id())
            .into_iter()
            .any(|p| procfs::cmdline(p).as_deref() == Some(&*expected))
    })
    .await;
}
