//! `/proc` readers and identity-checked signalling of processes that are not ours to reap.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener};
use std::time::{Duration, SystemTime};

use parachute_process::procfs::{self, ProcessIdentity, is_same_process};
use parachute_process::{Signal, Signalled, SpawnSpec, resolve_program, signal_identity};

use crate::support::{KillOnDrop, LineReader, PATH, sh, spawn, spawner, wait_until, within};

#[tokio::test]
async fn stat_cmdline_and_identity_of_a_program_named_with_spaces_and_parens() {
    let dir = tempfile::tempdir().unwrap();
    let sleep = resolve_program("sleep", PATH, None).unwrap();
    let weird = dir.path().join("a b) c");
    std::fs::copy(&sleep, &weird).unwrap();

    let spawner = spawner();
    let child = spawn(&spawner, SpawnSpec::new(&weird).arg("1000").env("PATH", PATH)).await.child;
    let pid = child.pid();
    let st = procfs::stat(pid).unwrap();
    assert_eq!(st.comm, "a b) c");
    assert_eq!((st.pid, st.ppid, st.pgid), (pid, std::process::id(), pid));
    assert_ne!(st.state, 'Z');
    assert_eq!(procfs::cmdline(pid).unwrap(), format!("{} 1000", weird.display()));

    let started = procfs::start_time(pid).unwrap();
    let age = SystemTime::now().duration_since(started).unwrap_or_default();
    assert!(age < Duration::from_secs(60), "started {age:?} ago?");

    let id = procfs::identity(pid).unwrap();
    assert_eq!(id, ProcessIdentity { pid, start_ticks: st.start_ticks });
    assert_eq!(child.identity(), Some(id));
    assert!(is_same_process(&id));
    let recycled = ProcessIdentity { pid, start_ticks: st.start_ticks + 1 };
    assert!(!is_same_process(&recycled), "same pid, other start time: a different process");

    child.signal(Signal::Kill).unwrap();
    within("exit", child.exited()).await;
    assert!(procfs::identity(pid).is_none(), "a zombie has no live identity");
    assert!(!is_same_process(&id));
    assert!(procfs::cmdline(pid).is_none(), "a zombie has an empty cmdline");
    within("reap", child.reap(Duration::from_secs(1))).await;
    assert!(!is_same_process(&id));
    assert!(procfs::stat(u32::MAX).is_none());
    assert!(procfs::cmdline(2).is_none_or(|c| !c.is_empty()), "kernel threads have no cmdline");
}

#[test]
fn listeners_finds_our_own_v4_and_v6_sockets() {
    let me = std::process::id();
    let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = v4.local_addr().unwrap().port();
    let found = procfs::listeners(port);
    assert!(
        found.iter().any(|l| l.pid == me && l.addr == IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "{found:?} should include pid {me} on 127.0.0.1:{port}"
    );
    assert_eq!(procfs::listening_sockets(port).len(), 1);
    assert_eq!(procfs::listeners_among(port, &[me]).len(), 1);
    assert!(procfs::listeners_among(port, &[1]).is_empty(), "only the given pids are scanned");
    drop(v4);
    assert!(procfs::listeners(port).is_empty(), "closed: nobody listens");

    match TcpListener::bind("[::1]:0") {
        Ok(v6) => {
            let port = v6.local_addr().unwrap().port();
            let found = procfs::listeners(port);
            assert!(
                found.iter().any(|l| l.pid == me && l.addr == IpAddr::V6(Ipv6Addr::LOCALHOST)),
                "{found:?} should include pid {me} on [::1]:{port}"
            );
        }
        Err(e) => eprintln!("NOTE: IPv6 loopback unavailable here ({e}); v6 listener check not run"),
    }
}

/// The fast netlink (`sock_diag`) path and the `/proc/net/tcp{,6}` parser report the same
/// sockets, inodes and addresses, for every kind of bind the supervisor meets: v4/v6 loopback,
/// v4/v6 wildcard (`[::]` is dual-stack here) and a v4-mapped v6 bind. Established sockets on
/// the same port (an accepted connection) are not listeners for either. (Linux's two sources.)
#[cfg(target_os = "linux")]
#[test]
fn sock_diag_and_proc_report_the_same_listeners() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    let mut binds = vec!["127.0.0.1:0", "0.0.0.0:0"];
    if TcpListener::bind("[::1]:0").is_ok() {
        binds.extend(["[::1]:0", "[::]:0", "[::ffff:127.0.0.1]:0"]);
    } else {
        eprintln!("NOTE: IPv6 loopback unavailable here; only v4 binds compared");
    }
    let sorted = |mut v: Vec<procfs::ListenSocket>| {
        v.sort_by_key(|s| (s.inode, s.addr));
        v
    };
    let mut kept = Vec::new();
    for bind in binds {
        let listener = TcpListener::bind(bind).unwrap();
        let local = listener.local_addr().unwrap();
        // An accepted connection shares the listener's local port but is ESTABLISHED.
        let target = if local.ip().is_unspecified() { "127.0.0.1".parse().unwrap() } else { local.ip() };
        let client = std::net::TcpStream::connect((target, local.port())).unwrap();
        let accepted = listener.accept().unwrap();
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap().ino();
        let expected = vec![procfs::ListenSocket { inode, addr: local.ip() }];

        let diag = procfs::listening_sockets_diag(local.port())
            .unwrap_or_else(|e| panic!("sock_diag query for {bind} failed: {e}"));
        let proc = procfs::listening_sockets_proc(local.port());
        assert_eq!(sorted(diag), expected, "sock_diag for {bind} ({local})");
        assert_eq!(sorted(proc), expected, "/proc/net/tcp* for {bind} ({local})");
        assert_eq!(procfs::listening_sockets(local.port()), expected, "the default path for {bind}");
        kept.push((local.port(), listener, client, accepted));
    }
    // With all of them open at once each query still sees only its own port.
    for (port, ..) in &kept {
        let diag = sorted(procfs::listening_sockets_diag(*port).unwrap());
        assert_eq!(diag.len(), 1, "{diag:?}");
        assert_eq!(diag, sorted(procfs::listening_sockets_proc(*port)));
    }
    let ports: Vec<u16> = kept.iter().map(|k| k.0).collect();
    drop(kept);
    for port in ports {
        assert_eq!(procfs::listening_sockets_diag(port).unwrap(), vec![], "closed: port {port}");
        assert_eq!(procfs::listening_sockets_proc(port), vec![], "closed: port {port}");
    }
}

/// A forking server: one socket shared by two processes. Both are reported (R6), they are in
/// the leader's group, and the ancestry helpers see the worker under the leader.
#[tokio::test]
async fn a_shared_listening_socket_reports_every_holder() {
    let script = "import os, socket, time\n\
                  s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n\
                  pid = os.fork()\n\
                  if pid == 0:\n    time.sleep(1000)\n\
                  print(s.getsockname()[1], pid, flush=True)\n\
                  time.sleep(1000)\n";
    let spawner = spawner();
    let s = spawn(&spawner, SpawnSpec::new("python3").arg("-c").arg(script).env("PATH", PATH)).await;
    let leader = s.child.pid();
    let line = LineReader::new(s.stdout).next().await;
    let (port, worker) = line.split_once(' ').unwrap();
    let (port, worker): (u16, u32) = (port.parse().unwrap(), worker.parse().unwrap());
    let _worker_guard = KillOnDrop::pid(worker);

    let found = procfs::listeners(port);
    let pids: BTreeSet<u32> = found.iter().map(|l| l.pid).collect();
    assert_eq!(pids, BTreeSet::from([leader, worker]), "{found:?}");
    assert_eq!(found[0].inode, found[1].inode, "one socket, two holders");
    assert!(found.iter().all(|l| l.addr == IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let ours: Vec<u32> = procfs::listeners_among(port, &[leader]).iter().map(|l| l.pid).collect();
    assert_eq!(ours, vec![leader]);

    assert_eq!(s.child.group_members(), vec![worker]);
    assert_eq!(procfs::children_of(leader), vec![worker]);
    assert!(procfs::children_of(std::process::id()).contains(&leader));
    assert!(procfs::is_descendant(worker, leader));
    assert!(procfs::is_descendant(worker, std::process::id()));
    assert!(!procfs::is_descendant(leader, worker));
    assert!(!procfs::is_descendant(leader, leader), "not its own descendant");
    assert!(!procfs::is_descendant(u32::MAX, 1));
}

#[tokio::test]
async fn signal_identity_signals_only_the_same_process() {
    let spawner = spawner();
    let script = "trap 'echo usr1' USR1; trap 'echo term; exit 0' TERM; echo ready; \
                  while :; do sleep 1000 & wait $!; done";
    let s = spawn(&spawner, sh(script)).await;
    let child = s.child;
    let mut out = LineReader::new(s.stdout);
    assert_eq!(out.next().await, "ready");
    let id = procfs::identity(child.pid()).unwrap();

    let recycled = ProcessIdentity { start_ticks: id.start_ticks + 1, ..id };
    assert_eq!(signal_identity(&recycled, Signal::Usr1, false).unwrap(), Signalled::Replaced);
    assert_eq!(signal_identity(&id, Signal::Term, false).unwrap(), Signalled::Process);
    assert_eq!(out.next().await, "term", "the USR1 for the other identity was never sent");
    within("exit", child.exited()).await;
    assert_eq!(signal_identity(&id, Signal::Term, false).unwrap(), Signalled::Gone, "zombie");
    assert_eq!(within("reap", child.reap(Duration::from_secs(5))).await.code, Some(0));
    assert_eq!(signal_identity(&id, Signal::Term, true).unwrap(), Signalled::Gone);
}

#[tokio::test]
async fn signal_identity_group_only_for_a_group_leader() {
    let spawner = spawner();
    let s = spawn(&spawner, sh("sleep 1000 & echo $!; exec sleep 1001")).await;
    let child = s.child;
    let gpid: u32 = LineReader::new(s.stdout).next().await.parse().unwrap();
    let grandchild = KillOnDrop::pid(gpid);
    let leader = procfs::identity(child.pid()).unwrap();

    // The grandchild is not a group leader: only it is signalled, not the group.
    assert_eq!(signal_identity(&grandchild.0, Signal::Kill, true).unwrap(), Signalled::Process);
    wait_until("grandchild killed", || !is_same_process(&grandchild.0)).await;
    assert!(is_same_process(&leader), "the leader was not signalled");

    let s = spawn(&spawner, sh("sleep 1000 & echo $!; wait")).await;
    let child2 = s.child;
    let gpid2: u32 = LineReader::new(s.stdout).next().await.parse().unwrap();
    let grandchild2 = KillOnDrop::pid(gpid2);
    let leader2 = procfs::identity(child2.pid()).unwrap();
    assert_eq!(signal_identity(&leader2, Signal::Kill, true).unwrap(), Signalled::Group);
    within("exit", child2.exited()).await;
    wait_until("whole group killed", || !is_same_process(&grandchild2.0)).await;
    assert_eq!(within("reap", child2.reap(Duration::from_secs(1))).await.signal, Some(libc::SIGKILL));
    drop(child);
}
