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
//!   promptly; `EMFILE`/`ENFILE` at accept back off briefly instead of spinning;
//! - **when serving stops** (an in-place upgrade hands the listener over, or the hub shuts
//!   down), every accepted connection still gets the answer to the request it sent: one that
//!   has not sent a byte yet gets [`FIRST_BYTE_GRACE`] to do so (see there).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
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

/// Once serving stops, how long a connection that has not sent a byte yet may take to send
/// its request before it is closed. hyper's graceful shutdown closes a connection that has
/// read nothing yet at once, even when its request already waits in the socket (hyper
/// #3792, docs/upstream.md), so a client that connected just before an in-place upgrade
/// would have its connection closed unanswered instead of waiting a moment. Bounded: a
/// client that connects and sends nothing delays a hand-over or a shutdown by at most this.
pub const FIRST_BYTE_GRACE: Duration = Duration::from_secs(1);

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
/// when its handler does; one that has not sent its request yet first gets
/// [`FIRST_BYTE_GRACE`] to send it).
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
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
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
        let first = Arc::new(FirstRead::default());
        let io = TokioIo::new(Marked { inner: stream, first: Arc::clone(&first) });
        let conn = builder.serve_connection(io, TowerToHyperService::new(app.clone()));
        let mut closing = closing.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = closing.wait_for(|c| *c) => {}
            }
            if !first.seen.load(Ordering::SeqCst) {
                tokio::select! {
                    _ = conn.as_mut() => return,
                    () = first.notify.notified() => {}
                    () = tokio::time::sleep(FIRST_BYTE_GRACE) => {}
                }
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop((listener, closing));
    let _ = closing_tx.send(true);
    // Every connection task holds a receiver: all of them have ended when none is left.
    closing_tx.closed().await;
    Ok(())
}

/// Whether a connection has read its first byte (and a wake-up for the moment it does).
#[derive(Default)]
struct FirstRead {
    seen: AtomicBool,
    notify: tokio::sync::Notify,
}

/// A connection's stream that marks its [`FirstRead`] on the first byte read from it.
struct Marked {
    inner: tokio::net::TcpStream,
    first: Arc<FirstRead>,
}

impl tokio::io::AsyncRead for Marked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && !self.first.seen.swap(true, Ordering::SeqCst)
        {
            // A permit is kept if nobody waits yet, so the shutdown path cannot miss it.
            self.first.notify.notify_one();
        }
        r
    }
}

impl tokio::io::AsyncWrite for Marked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accept errors that say "not now" rather than "never": out of descriptors or memory, or a
/// connection that died in the backlog.
fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED | libc::EINTR)
    ) || matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::Interrupted)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Connections waiting in `port`'s accept queue (a listening socket's `rx_queue` in
    /// `/proc/net/tcp`).
    fn accept_queue(port: u16) -> Option<u64> {
        let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
        text.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && f.get(3) == Some(&"0A"))
                .then(|| u64::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok())
                .flatten()
        })
    }

    #[tokio::test]
    async fn a_connection_accepted_before_serving_stops_is_still_answered() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = Router::new().route("/", axum::routing::get(|| async { "answered" }));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, async move {
            let _ = stop_rx.await;
        }));
        // Connected and accepted, but no byte sent yet: what a client that connected just
        // before an in-place upgrade looks like to the hub.
        let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        while accept_queue(port) != Some(0) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        stop_tx.send(()).unwrap();
        // hyper alone would close the connection now, before its request arrives (#3792).
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("answered"), "{answer:?}");
        server.await.unwrap().unwrap();
    }
}
