//! Port probes: who holds a port, and is it one of ours.
//!
//! Everything comes from the host's process facts (`parachute_process::procfs`: `/proc` and
//! `sock_diag` on Linux, libproc on macOS), never from `lsof`/`ps`, and the scans run on the
//! blocking pool so a busy host cannot stall the runtime (upstream's synchronous `lsof` blocked the hub for up to 2 s, §9.2).
//! Readiness asks "does a process of *this child's* group (or a descendant) hold a LISTEN
//! socket on the port", so a squatter arriving after the pre-spawn check cannot make a
//! module look healthy and a module bound only to `::1` is not called unbound (R25).

use std::time::Duration;

use parachute_process::{ProcessIdentity, procfs};
use tokio::time::Instant;

use crate::port_holder::{on_port, on_port_async};

/// Whether a process in `leader`'s group (or a descendant) listens on `port`.
///
/// The leader's own descriptors are looked at first (most modules listen in the process
/// that was started): the answer is the same, and it costs a readlink per descriptor of
/// one process instead of one per descriptor of every process on the host, which is what
/// finding every holder of the port takes (and what the boot of 50 modules paid 50 times).
pub async fn owned_listener(port: u16, leader: u32) -> bool {
    if crate::port_holder::surely_unheld(port) {
        return false;
    }
    tokio::task::spawn_blocking(move || {
        // Nothing listens yet (what most polls find): one socket dump, no descriptor read.
        if procfs::listening_sockets(port).is_empty() {
            return false;
        }
        !procfs::listeners_among(port, &[leader]).is_empty()
            || on_port(port).iter().any(|h| h.in_any_group(&[leader]))
    })
    .await
    .unwrap_or(false)
}

/// Polls until a process of `pid`'s group listens on `port` (`true`) or `window` ends.
///
/// The interval starts at 1 ms and doubles up to `poll`: most modules bind within a few
/// milliseconds of exec, so the first probes catch them at once, and a slow starter costs
/// no more probes than a fixed `poll` would (the listen-table lookup is microseconds).
pub async fn watch_port(port: u16, pid: u32, window: Duration, poll: Duration) -> bool {
    let deadline = Instant::now() + window;
    let poll = poll.max(Duration::from_millis(1));
    let mut pause = Duration::from_millis(1).min(poll);
    loop {
        if owned_listener(port, pid).await {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(poll);
    }
}

/// Whether process `id` still holds `port` at `deadline` (returns early once it does not).
pub async fn holds_until(id: &ProcessIdentity, port: u16, deadline: Instant, poll: Duration) -> bool {
    loop {
        let still = procfs::is_same_process(id) && on_port_async(port).await.iter().any(|h| h.pid == id.pid);
        if !still {
            return false;
        }
        if Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(poll.max(Duration::from_millis(1))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_in_this_process_is_found_and_owned_by_our_group() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let holders = on_port_async(port).await;
        assert_eq!(holders.iter().map(|h| h.pid).collect::<Vec<_>>(), [std::process::id()]);
        // Our own group leader (the test harness's group) owns it; an unrelated pid does not.
        let pgid = holders[0].pgid.unwrap();
        assert!(owned_listener(port, pgid).await);
        assert!(!owned_listener(port, 1).await || pgid == 1);
        drop(l);
        assert!(on_port_async(port).await.is_empty());
    }
}
