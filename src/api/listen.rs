//! Serving the control API on a loopback TCP listener that any local user can connect to,
//! with every resource bounded (`docs/security.md`):
//!
//! - **a header-read timeout** ([`HEADER_READ_TIMEOUT`]) through hyper's timer: a connection
//!   that sends no complete request head in time (idle, a slow drip, an idle keep-alive
//!   between requests) is closed;
//! - **a cap on connections at once** ([`connection_cap`]): at most a quarter of the
//!   open-file limit and never more than [`MAX_CONNECTIONS`], so pipes, pidfds and log files
//!   for modules always have room;
//! - **a per-user share** ([`PER_FOREIGN_USER`]): connections from a user other than the hub's
//!   own (and root) are counted per uid (the kernel's owner of the client socket,
//!   [`parachute_process::tcp_peer_owner`]). Another local user can hold a few, never the
//!   operator's share;
//! - over a cap, a connection is accepted and closed at once rather than left in the
//!   kernel's backlog, so the operator's own connection behind a flood is still accepted
//!   promptly; `EMFILE`/`ENFILE` at accept back off briefly instead of spinning.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

/// How long a connection may take to send a complete request head, and how long it may sit
/// idle between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most API connections open at once, whatever the open-file limit.
pub const MAX_CONNECTIONS: usize = 512;

/// Most API connections one user other than the hub's own (or root) may hold at once.
pub const PER_FOREIGN_USER: usize = 32;

/// How long accepting pauses when the process is out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connections the hub serves at once: a quarter of the soft open-file limit (the rest is
/// for module pipes, pidfds and files), at most [`MAX_CONNECTIONS`], at least 16.
pub fn connection_cap() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we pass.
    let soft =
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_cur } else { 1024 };
    usize::try_from(soft / 4).unwrap_or(MAX_CONNECTIONS).clamp(16, MAX_CONNECTIONS)
}

/// Who holds how many connections.
struct Counts {
    total: usize,
    by_foreign_uid: HashMap<u32, usize>,
}

/// One admitted connection; dropping it gives the slot back.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    foreign_uid: Option<u32>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if let Some(uid) = self.foreign_uid
            && let Some(n) = c.by_foreign_uid.get_mut(&uid)
        {
            *n -= 1;
            if *n == 0 {
                c.by_foreign_uid.remove(&uid);
            }
        }
    }
}

/// Admission control (see the module doc).
struct Admission {
    counts: Arc<Mutex<Counts>>,
    cap: usize,
    own_uid: u32,
}

impl Admission {
    fn admit(&self, stream: &tokio::net::TcpStream) -> Option<Slot> {
        let peer_uid = match (stream.local_addr(), stream.peer_addr()) {
            (Ok(l), Ok(r)) => parachute_process::tcp_peer_owner(l, r).ok().flatten().map(|o| o.uid),
            _ => None,
        };
        let foreign_uid = peer_uid.filter(|&u| u != self.own_uid && u != 0);
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.cap {
            return None;
        }
        if let Some(uid) = foreign_uid {
            let n = c.by_foreign_uid.entry(uid).or_insert(0);
            if *n >= PER_FOREIGN_USER {
                return None;
            }
            *n += 1;
        }
        c.total += 1;
        Some(Slot { counts: Arc::clone(&self.counts), foreign_uid })
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets every open connection
/// finish (hyper's graceful shutdown: idle ones close at once, a streaming log follow ends
/// when its handler does).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let admission = Admission {
        counts: Arc::new(Mutex::new(Counts { total: 0, by_foreign_uid: HashMap::new() })),
        cap: connection_cap(),
        own_uid: nix::unistd::geteuid().as_raw(),
    };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_transient(&e) => {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
                Err(e) => return Err(e),
            },
            () = &mut shutdown => break,
        };
        // Over a cap: dropped (closed) now, so the backlog keeps draining.
        let Some(slot) = admission.admit(&stream) else { continue };
        let _ = stream.set_nodelay(true);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
        let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            let _ = conn.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Accept errors that say "not now" rather than "never": out of descriptors or memory, or a
/// connection that died in the backlog.
fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED | libc::EINTR)
    ) || matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::Interrupted)
}
