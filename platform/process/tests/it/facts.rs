//! The conformance suite of `ProcessFacts`: what every platform's implementation must say
//! about real processes and real listening sockets. Nothing here names a platform: it runs
//! against `facts::host()`, which is the `/proc` + `sock_diag` implementation on Linux and
//! the libproc + `sysctl` one on macOS, so the same assertions hold (or fail) on a Mac.
//!
//! Processes are plain `std::process::Command` children (`sleep`), not the crate's spawner,
//! so the suite tests the facts alone.

use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use parachute_process::facts::{self, ProcessFacts};
use parachute_process::procfs::ProcessIdentity;
use parachute_process::resolve_program;

use crate::support::PATH;

/// A pid no process has: above every platform's pid limit, within `pid_t`.
const NO_SUCH_PID: u32 = 0x3fff_fff0;

/// A `sleep` child that is killed and reaped on drop.
struct Sleeper(Child);

impl Sleeper {
    fn start(cwd: &Path, env: &[(&str, &str)], own_group: bool, keep_fd: Option<i32>) -> Sleeper {
        let sleep = resolve_program("sleep", PATH, None).unwrap();
        let mut cmd = Command::new(&sleep);
        cmd.arg("1000").current_dir(cwd).env_clear().env("PATH", PATH).stdin(Stdio::null());
        cmd.envs(env.iter().copied());
        if own_group {
            cmd.process_group(0);
        }
        if let Some(fd) = keep_fd {
            // SAFETY: only fcntl (async-signal-safe) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Sleeper(cmd.spawn().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn stop(mut self) -> u32 {
        let pid = self.pid();
        self.0.kill().unwrap();
        self.0.wait().unwrap();
        pid
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn host() -> facts::Facts {
    facts::host()
}

/// Polls `cond` for up to 10 s (a fact about a just-started child can lag its fork: the
/// child's exec, e.g., replaces its command line).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_live_child_is_described_completely() {
    let f = host();
    let dir = tempfile::tempdir().unwrap();
    let me = std::process::id();
    let sleep = resolve_program("sleep", PATH, None).unwrap();
    let child = Sleeper::start(dir.path(), &[("PORT", "1940"), ("OTHER", "x")], false, None);
    let pid = child.pid();
    eventually("the child to exec sleep", || {
        f.argv(pid).unwrap().is_some_and(|a| a == [sleep.display().to_string(), "1000".to_owned()])
    });

    let st = f.stat(pid).unwrap().expect("alive");
    assert_eq!((st.pid, st.ppid), (pid, me));
    assert_eq!(st.pgid, f.stat(me).unwrap().unwrap().pgid, "inherits our process group");
    assert!(!st.is_exited(), "{st:?}");
    assert_eq!(f.cmdline(pid).unwrap().unwrap(), format!("{} 1000", sleep.display()));
    assert_eq!(
        f.exe(pid).unwrap().map(|e| e.canonicalize().unwrap()),
        Some(sleep.canonicalize().unwrap()),
        "the executable"
    );
    assert_eq!(f.cwd(pid).unwrap(), Some(dir.path().canonicalize().unwrap()), "the working directory");
    assert_eq!(
        f.environ_vars(pid, &["PORT", "MISSING"]).unwrap(),
        Some(vec![("PORT".to_owned(), "1940".to_owned())]),
        "the environment it was started with"
    );
    // SAFETY: getuid has no preconditions.
    assert_eq!(f.uid(pid).unwrap(), Some(unsafe { libc::getuid() }));

    let started = f.start_time(pid).unwrap().unwrap();
    let age = SystemTime::now().duration_since(started).unwrap_or_default();
    assert!(age < Duration::from_secs(60), "started {age:?} ago?");
    let mine = f.start_time(me).unwrap().unwrap();
    assert!(mine <= started + Duration::from_millis(20), "we started before our child");

    let id = f.identity(pid).unwrap().unwrap();
    assert_eq!(id, ProcessIdentity { pid, start_ticks: st.start_ticks });
    assert_eq!(f.identity(pid).unwrap(), Some(id), "the start stamp is stable");
    assert!(f.is_same_process(&id).unwrap());
    let other = ProcessIdentity { pid, start_ticks: id.start_ticks + 1 };
    assert!(!f.is_same_process(&other).unwrap(), "same pid, other start stamp: another process");
    assert!(f.identity(me).unwrap().unwrap().start_ticks <= id.start_ticks, "stamps order like start times");

    assert!(f.all_pids().unwrap().contains(&pid));
    assert!(f.children_of(me).unwrap().contains(&pid));
    assert!(f.is_descendant(pid, me).unwrap());
    assert!(!f.is_descendant(me, pid).unwrap());

    let gone = child.stop();
    assert_eq!(f.stat(gone).unwrap(), None, "a reaped child is gone");
    assert_eq!(f.identity(gone).unwrap(), None);
    assert!(!f.is_same_process(&id).unwrap());
    assert_eq!(f.argv(gone).unwrap(), None);
    assert!(!f.children_of(me).unwrap().contains(&gone));
}

#[test]
fn a_pid_nobody_has_is_known_absent_not_unknown() {
    let f = host();
    assert_eq!(f.stat(NO_SUCH_PID).unwrap(), None);
    assert_eq!(f.identity(NO_SUCH_PID).unwrap(), None);
    assert_eq!(f.argv(NO_SUCH_PID).unwrap(), None);
    assert_eq!(f.cwd(NO_SUCH_PID).unwrap(), None);
    assert_eq!(f.exe(NO_SUCH_PID).unwrap(), None);
    assert_eq!(f.environ_vars(NO_SUCH_PID, &["PATH"]).unwrap(), None);
    assert_eq!(f.start_time(NO_SUCH_PID).unwrap(), None);
    assert_eq!(f.uid(NO_SUCH_PID).unwrap(), None);
    assert!(!f.is_descendant(NO_SUCH_PID, 1).unwrap());
    assert!(!f.is_same_process(&ProcessIdentity { pid: NO_SUCH_PID, start_ticks: 1 }).unwrap());
}

#[test]
fn a_zombie_has_no_identity() {
    let f = host();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Sleeper::start(dir.path(), &[], false, None);
    let pid = child.pid();
    // SAFETY: plain kill of our own unreaped child.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    eventually("the child to become a zombie", || {
        f.stat(pid).unwrap().is_some_and(|s| s.is_exited()) || f.stat(pid).unwrap().is_none()
    });
    assert_eq!(f.identity(pid).unwrap(), None, "exited, unreaped: not a live process");
    child.0.wait().unwrap();
}

#[test]
fn a_process_group_lists_its_live_members() {
    let f = host();
    let dir = tempfile::tempdir().unwrap();
    let leader = Sleeper::start(dir.path(), &[], true, None);
    let pid = leader.pid();
    eventually("the leader's own group", || f.stat(pid).unwrap().is_some_and(|s| s.pgid == pid));
    assert_eq!(f.group_members(pid).unwrap(), vec![pid]);
    let gone = leader.stop();
    assert_eq!(f.group_members(gone).unwrap(), Vec::<u32>::new());
}

#[test]
fn a_listening_socket_and_every_process_holding_it() {
    let f = host();
    let me = std::process::id();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    // An established connection on the same local port is not a listener.
    let client = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    let (accepted, _) = listener.accept().unwrap();

    let sockets = f.listening_sockets(port).unwrap();
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    assert_eq!(sockets[0].addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
    // Eventually: another test of this binary forking at this moment holds every
    // descriptor of ours, close-on-exec or not, until its child's exec.
    let holders = || f.listeners(port).unwrap().iter().map(|l| (l.pid, l.inode)).collect::<Vec<_>>();
    eventually("this process alone to hold the socket", || holders() == vec![(me, sockets[0].inode)]);
    assert_eq!(f.listeners_among(port, &[me]).unwrap().len(), 1);

    // A child that inherits the socket holds it too: one socket, two holders (a forking
    // server's workers).
    let dir = tempfile::tempdir().unwrap();
    let heir = Sleeper::start(dir.path(), &[], false, Some(listener.as_raw_fd()));
    let heir_pid = heir.pid();
    eventually("the heir to hold the socket", || {
        f.listeners_among(port, &[heir_pid]).unwrap().iter().any(|l| l.inode == sockets[0].inode)
    });
    let mut expected = vec![me, heir_pid];
    expected.sort_unstable();
    eventually("this process and the heir alone to hold it", || {
        let mut both: Vec<u32> = f.listeners(port).unwrap().into_iter().map(|l| l.pid).collect();
        both.sort_unstable();
        both == expected
    });
    assert_eq!(f.listening_sockets(port).unwrap().len(), 1, "still one socket");

    // Another port says nothing about this one.
    let elsewhere = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    assert!(f.listeners_among(elsewhere.local_addr().unwrap().port(), &[heir_pid]).unwrap().is_empty());

    heir.stop();
    drop((listener, client, accepted));
    assert_eq!(f.listening_sockets(port).unwrap(), vec![], "closed: nothing listens");
    assert_eq!(f.listeners(port).unwrap(), vec![]);
}

#[test]
fn the_ports_a_set_of_processes_listens_on_whatever_the_port() {
    let f = host();
    let me = std::process::id();
    let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let b = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (pa, pb) = (a.local_addr().unwrap().port(), b.local_addr().unwrap().port());
    // An established connection is not a listening port.
    let _client = TcpStream::connect((Ipv4Addr::LOCALHOST, pa)).unwrap();
    let mut ports: Vec<u16> = f.listening_ports_of(&[me]).unwrap().into_iter().map(|h| h.port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert!(ports.contains(&pa) && ports.contains(&pb), "{ports:?}");
    // A child holding nothing lists nothing; a gone pid is skipped, not an error.
    let dir = tempfile::tempdir().unwrap();
    let s = Sleeper::start(dir.path(), &[], false, None);
    assert_eq!(f.listening_ports_of(&[s.pid(), NO_SUCH_PID]).unwrap(), vec![]);
    drop(b);
    let after: Vec<u16> = f.listening_ports_of(&[me]).unwrap().into_iter().map(|h| h.port).collect();
    assert!(after.contains(&pa) && !after.contains(&pb), "{after:?}");
}

#[test]
fn memory_and_cpu_time_of_a_live_process() {
    let f = host();
    let me = std::process::id();
    // Touch 32 MiB so it is resident.
    let mut block = vec![0u8; 32 << 20];
    for i in (0..block.len()).step_by(4096) {
        block[i] = 1;
    }
    let m = f.memory(me).unwrap().unwrap();
    assert!(m.rss_bytes >= 32 << 20, "{m:?}");
    if let Some(pss) = m.pss_bytes {
        assert!(pss > 0 && pss <= m.rss_bytes + (1 << 20), "{m:?}");
    }
    let busy_until = Instant::now() + Duration::from_millis(300);
    let mut x = 0u64;
    while Instant::now() < busy_until {
        x = std::hint::black_box(x.wrapping_add(1));
    }
    let c = f.cpu_time(me).unwrap().unwrap();
    assert!(c.own >= Duration::from_millis(100), "{c:?}");
    assert!(c.total() >= c.own);
    assert_eq!(f.memory(NO_SUCH_PID).unwrap(), None);
    assert_eq!(f.cpu_time(NO_SUCH_PID).unwrap(), None);
    std::hint::black_box(&block);
}

#[test]
fn the_boot_id_is_stable() {
    let f = host();
    let a = f.boot_id().unwrap();
    assert!(!a.is_empty());
    assert_eq!(f.boot_id().unwrap(), a);
}

/// The injectable "knows nothing" implementation answers every question with the reason,
/// never with "absent".
#[test]
fn unavailable_facts_never_pass_for_absence() {
    let f = facts::NoFacts::new("injected");
    let e = f.listeners(1).unwrap_err();
    assert_eq!(e.reason, "injected");
    assert!(f.stat(1).is_err() && f.identity(1).is_err() && f.group_members(1).is_err());
    assert!(
        f.listening_sockets(1).is_err()
            && f.is_same_process(&ProcessIdentity { pid: 1, start_ticks: 0 }).is_err()
    );
    assert!(f.memory(1).is_err() && f.cpu_time(1).is_err() && f.listening_ports_of(&[1]).is_err());
}
