//! A helper process for this crate's own integration tests (`tests/it/reexec.rs`): some
//! behaviours need a process of their own.
//!
//! - `pdeathsig`: spawn `sleep 1000` through a `Spawner`, print `CHILD <pid> <start ticks>`,
//!   then wait; the test SIGKILLs this process and checks that the child dies by
//!   PR_SET_PDEATHSIG although nobody signalled it.
//! - `subreaper`: become a child subreaper (which would change how orphans behave for every
//!   other test if the test binary did it) and check `reap_untracked_zombies`; prints
//!   `SUBREAPER-OK` when every check held, panics (non-zero exit) otherwise.
//!
//! - `exec-spawner` / `exec-main`: spawn a child that exits 7 on SIGTERM, then replace this
//!   process's image with `after-exec` — through [`Spawner::exec`] (the spawner thread) or
//!   from the main thread. `after-exec` (same pid) sends the child SIGTERM, reaps it and
//!   prints `CHILD-EXIT code=<c> signal=<s>`: code 7 if the child survived the exec, signal 9
//!   if PR_SET_PDEATHSIG killed it.
//!
//! - `exec-adopt`: as `exec-spawner`, but hands the child's stdout and stderr pipes over
//!   (`FD_CLOEXEC` cleared) to `after-adopt`, which takes the child back with
//!   `Spawned::adopt_inherited`, sends it SIGTERM, reads the line it prints on the way out
//!   through the inherited pipe and reaps it: `ADOPTED code=7 line=bye`.
//!
//! Not a product binary: nothing installs or packages it.

use std::collections::HashSet;
use std::future::Future;
use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use parachute_process::procfs::{self};
use parachute_process::{ExitInfo, SpawnSpec, Spawner, reap_untracked_zombies, set_child_subreaper};

/// How long any wait may take before the helper gives up (the parent test has its own).
const DEADLINE: Duration = Duration::from_secs(20);
const PATH: &str = "/usr/bin:/bin";

async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(DEADLINE, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn main() {
    let role = std::env::args().nth(1).unwrap_or_default();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match role.as_str() {
        "pdeathsig" => rt.block_on(pdeathsig()),
        "subreaper" => {
            set_child_subreaper().expect("PR_SET_CHILD_SUBREAPER");
            rt.block_on(subreaper());
        }
        "exec-spawner" => rt.block_on(exec_keeping_children(true)),
        "exec-main" => rt.block_on(exec_keeping_children(false)),
        "after-exec" => after_exec(),
        "exec-adopt" => rt.block_on(exec_handing_over_pipes()),
        "after-adopt" => rt.block_on(after_adopt()),
        other => {
            eprintln!(
                "process-test-helper: unknown role {other:?} (expected pdeathsig, subreaper or exec-*)"
            );
            std::process::exit(2);
        }
    }
}

async fn pdeathsig() {
    let spawner = Spawner::new().expect("spawner thread");
    let s = within("spawn", spawner.spawn(SpawnSpec::new("sleep").arg("1000").env("PATH", PATH)))
        .await
        .expect("spawn sleep");
    let id = procfs::identity(s.child.pid()).expect("child identity");
    println!("CHILD {} {}", id.pid, id.start_ticks);
    // Bounded: if nobody kills us, exit (and the child dies with the spawner thread).
    tokio::time::sleep(DEADLINE).await;
}

async fn subreaper() {
    let no_tracked = HashSet::new();

    // 1. An orphaned grandchild is reparented to us and reaped with its status.
    let mut sh_parent = std::process::Command::new("sh")
        .args(["-c", "(sleep 0.2; exit 7) & echo $!"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let mut line = String::new();
    std::io::BufReader::new(sh_parent.stdout.take().expect("stdout")).read_line(&mut line).expect("read pid");
    let orphan: u32 = line.trim().parse().expect("orphan pid");
    assert!(sh_parent.wait().expect("wait sh").success());
    let mut reaped = Vec::new();
    within("the orphan to be reaped", async {
        while !reaped.iter().any(|(p, _)| *p == orphan) {
            reaped.extend(reap_untracked_zombies(&no_tracked));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(reaped.contains(&(orphan, ExitInfo { code: Some(7), signal: None })), "{reaped:?}");

    // 2. A supervised leader's zombie is never stolen, even with an empty `tracked`.
    let spawner = Spawner::new().expect("spawner thread");
    let spec = SpawnSpec::new("sh").arg("-c").arg("exit 3").env("PATH", PATH);
    let child = within("spawn", spawner.spawn(spec)).await.expect("spawn sh").child;
    within("the leader to exit", child.exited()).await;
    let reaped = reap_untracked_zombies(&no_tracked);
    assert!(!reaped.iter().any(|(p, _)| *p == child.pid()), "stole a GroupChild's status: {reaped:?}");
    assert_eq!(within("reap", child.reap(Duration::from_secs(1))).await.code, Some(3));

    // 3. Another waiter's child, named in `tracked`, is left alone too.
    let mut other = std::process::Command::new("sh").args(["-c", "exit 5"]).spawn().expect("spawn sh");
    let other_pid = other.id();
    within("the other child to become a zombie", async {
        while procfs::stat(other_pid).is_none_or(|s| s.state != 'Z') {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let reaped = reap_untracked_zombies(&HashSet::from([other_pid]));
    assert!(!reaped.iter().any(|(p, _)| *p == other_pid), "stole a tracked child's status: {reaped:?}");
    assert_eq!(other.wait().expect("wait other").code(), Some(5), "its own waiter still gets the status");
    println!("SUBREAPER-OK");
}

async fn exec_keeping_children(through_spawner: bool) {
    use std::os::unix::process::CommandExt;
    let spawner = Spawner::new().expect("spawner thread");
    let spec = SpawnSpec::new("sh")
        .arg("-c")
        .arg("trap 'exit 7' TERM; echo up; while :; do sleep 0.05; done")
        .env("PATH", PATH);
    let mut s = within("spawn", spawner.spawn(spec)).await.expect("spawn sh");
    // The trap is installed once the child said so: a SIGTERM from `after-exec` is then never
    // the default action.
    let mut up = String::new();
    within(
        "the child's first line",
        tokio::io::AsyncBufReadExt::read_line(&mut tokio::io::BufReader::new(&mut s.stdout), &mut up),
    )
    .await
    .expect("read");
    assert_eq!(up.trim(), "up");
    let pid = s.child.pid();
    // Not reaped by this image: the next one does it.
    std::mem::forget(s);
    let me = std::env::current_exe().expect("current_exe");
    let err = if through_spawner {
        let next = SpawnSpec::new(&me).arg("after-exec").arg(pid.to_string()).env("PATH", PATH);
        spawner.exec(next).await
    } else {
        std::process::Command::new(&me).args(["after-exec", &pid.to_string()]).exec()
    };
    panic!("exec failed: {err}");
}

fn after_exec() {
    let pid: libc::pid_t = std::env::args().nth(2).expect("the child's pid").parse().expect("a pid");
    // SAFETY: plain syscalls on a pid that is our own unreaped child (alive or a zombie).
    let status = unsafe {
        libc::kill(pid, libc::SIGTERM);
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid, "the child is still ours after the exec");
        status
    };
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    let signal = if libc::WIFSIGNALED(status) { libc::WTERMSIG(status) } else { 0 };
    println!("CHILD-EXIT code={code} signal={signal}");
}

async fn exec_handing_over_pipes() {
    use std::os::fd::{AsFd, AsRawFd};
    let spawner = Spawner::new().expect("spawner thread");
    let spec = SpawnSpec::new("sh")
        .arg("-c")
        .arg("trap 'echo bye; exit 7' TERM; echo up; while :; do sleep 0.05; done")
        .env("PATH", PATH);
    let mut s = within("spawn", spawner.spawn(spec)).await.expect("spawn sh");
    // Read "up" byte by byte: nothing after it may be left in a buffer of this image.
    let mut up = Vec::new();
    while !up.ends_with(b"\n") {
        let mut b = [0u8; 1];
        within("the child's first line", tokio::io::AsyncReadExt::read_exact(&mut s.stdout, &mut b))
            .await
            .expect("read");
        up.push(b[0]);
    }
    assert_eq!(up, b"up\n");
    let id = procfs::identity(s.child.pid()).expect("child identity");
    let out = s.stdout.into_owned_fd().expect("stdout fd");
    let err = s.stderr.into_owned_fd().expect("stderr fd");
    for fd in [&out, &err] {
        parachute_process::inherit_across_exec(fd.as_fd()).expect("clear FD_CLOEXEC");
    }
    let (o, e) = (out.as_raw_fd(), err.as_raw_fd());
    // The next image owns them (and the child); this one must not close or reap them.
    std::mem::forget((out, err, s.child));
    let me = std::env::current_exe().expect("current_exe");
    let next = SpawnSpec::new(&me)
        .args([
            "after-adopt".to_owned(),
            id.pid.to_string(),
            id.start_ticks.to_string(),
            o.to_string(),
            e.to_string(),
        ])
        .env("PATH", PATH);
    let err = spawner.exec(next).await;
    panic!("exec failed: {err}");
}

async fn after_adopt() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use tokio::io::AsyncBufReadExt;
    let a: Vec<String> = std::env::args().skip(2).collect();
    let num = |i: usize| a[i].parse::<u64>().expect("a number");
    let id = procfs::ProcessIdentity { pid: num(0) as u32, start_ticks: num(1) };
    // SAFETY: descriptors the previous image left open for exactly this.
    let (out, err) = unsafe { (OwnedFd::from_raw_fd(num(2) as i32), OwnedFd::from_raw_fd(num(3) as i32)) };

    // A wrong identity is refused, whatever the pid.
    let wrong = procfs::ProcessIdentity { pid: id.pid, start_ticks: id.start_ticks + 1 };
    let dup = |fd: &OwnedFd| fd.try_clone().expect("dup");
    assert!(parachute_process::Spawned::adopt_inherited(wrong, dup(&out), dup(&err), None).is_err());

    let s = parachute_process::Spawned::adopt_inherited(id, out, err, None).expect("adopt the child");
    s.child.signal(parachute_process::Signal::Term).expect("SIGTERM");
    let mut line = String::new();
    within("the child's last line", tokio::io::BufReader::new(s.stdout).read_line(&mut line))
        .await
        .expect("read");
    let exit = within("reap", s.child.reap(Duration::from_secs(5))).await;
    println!("ADOPTED code={} line={}", exit.code.unwrap_or(-1), line.trim());
}
