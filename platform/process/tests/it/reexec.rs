//! Tests that need a process of their own: they run `process-test-helper` (a helper binary
//! of this crate, `src/bin/process-test-helper.rs`) in a role.
//! - PDEATHSIG: the helper spawns a child through a `Spawner`, then we SIGKILL the helper; the
//!   child must die although nobody signalled it.
//! - Subreaper: setting it would change how orphans behave for every other test in this
//!   process, so the helper does it in its own process.

use std::process::Stdio;

use parachute_process::procfs::{self, ProcessIdentity, is_same_process};
use tokio::process::Command;

use crate::support::{KillOnDrop, LineReader, wait_until, within};

/// Start the helper binary in `role`.
fn helper(role: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_process-test-helper"));
    cmd.arg(role).stdin(Stdio::null()).stdout(Stdio::piped()).kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn children_die_when_the_supervisor_is_sigkilled() {
    let mut parent = helper("pdeathsig").spawn().unwrap();
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

#[tokio::test]
async fn subreaper_reaps_orphans_but_never_a_tracked_child() {
    let mut helper = helper("subreaper");
    let out = within("subreaper helper", helper.stderr(Stdio::piped()).output()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("SUBREAPER-OK"),
        "helper failed: {}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `after-exec` said about the child after its parent's image was replaced.
async fn child_exit_after(role: &str) -> String {
    let out = within(role, helper(role).stderr(Stdio::piped()).output()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "helper {role} failed: {}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("CHILD-EXIT "))
        .unwrap_or_else(|| panic!("no CHILD-EXIT in {stdout:?}"))
        .to_owned()
}

#[tokio::test]
async fn exec_through_the_spawner_keeps_every_child() {
    assert_eq!(
        child_exit_after("exec-spawner").await,
        "code=7 signal=0",
        "the child got the SIGTERM sent after the exec"
    );
}

/// The other half, so the test above can fail: an exec from any other thread ends the
/// spawner thread, and PR_SET_PDEATHSIG kills its children.
#[tokio::test]
async fn exec_from_another_thread_kills_the_children() {
    assert_eq!(child_exit_after("exec-main").await, "code=-1 signal=9");
}

/// The pipes cross the exec too: the new image adopts the child by identity with its
/// inherited stdout, and reads the line the child prints after the exec.
#[tokio::test]
async fn an_adopted_child_keeps_its_pipes_across_the_exec() {
    let role = "exec-adopt";
    let out = within(role, helper(role).stderr(Stdio::piped()).output()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ADOPTED code=7 line=bye"),
        "helper failed: {}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
