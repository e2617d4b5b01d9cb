//! The one writer of the supervisor's combined output (prefixed child lines and
//! `[supervisor] …` lines).
//!
//! Upstream wrote every line synchronously to stdout with no backpressure, so a blocked
//! stdout (a full pipe to a stalled log collector) buffered without limit inside the hub
//! (R27). Here producers only ever `try_send` into a bounded queue: when it is full the
//! line is dropped and counted, never waited for, so a slow or stuck sink can never stall
//! a pump, an actor or a stop. The writer task reports the count as
//! `[supervisor] dropped N lines …` once the queue has drained to half, so the gap is
//! visible where the lines would have been.
//!
//! Dropping is for a *stuck* sink, not a merely slower one: a pump, between two reads of
//! its pipe, calls [`Output::make_room`], which waits while the queue is more than half
//! full and the writer is making progress. A chatty module is thereby throttled through
//! its own pipe (as with any supervisor writing to a file) and nothing is lost. Only when
//! the writer makes no progress for [`STALL_AFTER`] is the sink marked stalled: from then
//! on pumps stop waiting and lines are dropped and counted, until the writer drains the
//! queue again.
//!
//! A sink that fails (a full disk under the hub log, a closed pipe) is not given up on: the
//! failure is reported once on stderr, lines meanwhile are counted (they stay in the module
//! logs), the sink is tried again every [`RETRY_OUTPUT`], and output resumes with a note of
//! what was missed once it accepts writes again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{Notify, mpsc, oneshot};

/// How long the writer may make no progress before the sink counts as stalled.
pub const STALL_AFTER: Duration = Duration::from_millis(250);

/// Where prefixed lines go.
pub enum OutputSink {
    /// The supervisor's stdout (the hub log under a service manager, the platform log in a
    /// container).
    Stdout,
    /// Any writer (tests, a file).
    Writer(Box<dyn AsyncWrite + Send + Unpin>),
    /// Nowhere (the ring buffers still get every line).
    Discard,
    /// The supervisor's stdout, which is the systemd journal: each module's lines go to
    /// journald on streams of its own, under its own identifier (see `journal`).
    Journal(super::journal::JournalSockets),
}

impl std::fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutputSink::Stdout => "Stdout",
            OutputSink::Writer(_) => "Writer(..)",
            OutputSink::Discard => "Discard",
            OutputSink::Journal(_) => "Journal",
        })
    }
}

enum Msg {
    Line(Bytes),
    Flush(oneshot::Sender<()>),
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    cap: usize,
    dropped: AtomicU64,
    dropped_total: AtomicU64,
    /// Signalled by the writer whenever the queue has drained to half or less.
    space: Notify,
    /// Set when producers gave up waiting; cleared when the writer catches up.
    stalled: AtomicBool,
}

/// A cheap handle producers use; never blocks.
#[derive(Clone)]
pub struct Output {
    inner: Option<Arc<Inner>>,
    journal: Option<Arc<JournalSink>>,
}

/// The journal sink's per-module plumbing.
struct JournalSink {
    sockets: super::journal::JournalSockets,
    events: Option<super::journal::EventSender>,
    cap: usize,
}

/// A module's own journal streams (stdout at info, stderr at err) and the event sender.
#[derive(Clone)]
pub struct ModuleJournal {
    /// Unprefixed stdout lines.
    pub out: Output,
    /// Unprefixed stderr lines.
    pub err: Output,
    short: String,
    events: Arc<JournalSink>,
}

impl ModuleJournal {
    /// Sends a supervisor event about the module with its structured fields; `false` when
    /// there is no event socket (the caller writes the line to the output instead).
    pub fn event(&self, kind: super::journal::EventKind, text: &str) -> bool {
        match &self.events.events {
            Some(e) => {
                e.send(&self.short, kind, text);
                true
            }
            None => false,
        }
    }
}

impl Output {
    /// Starts the writer task (inside a tokio runtime) with a queue of `cap` lines.
    pub fn start(sink: OutputSink, cap: usize) -> Output {
        let mut journal = None;
        let writer: Box<dyn AsyncWrite + Send + Unpin> = match sink {
            OutputSink::Discard => return Output { inner: None, journal: None },
            OutputSink::Stdout => Box::new(tokio::io::stdout()),
            OutputSink::Writer(w) => w,
            OutputSink::Journal(sockets) => {
                let events = super::journal::EventSender::new(&sockets)
                    .map_err(|e| tracing::warn!("no journal event socket ({e}); events go to stdout"))
                    .ok();
                journal = Some(Arc::new(JournalSink { sockets, events, cap }));
                Box::new(tokio::io::stdout())
            }
        };
        let cap = cap.max(2);
        let (tx, rx) = mpsc::channel(cap);
        let inner = Arc::new(Inner {
            tx,
            cap,
            dropped: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
            space: Notify::new(),
            stalled: AtomicBool::new(false),
        });
        // 64 KiB: tokio's stdout hands every buffer flush to a blocking thread, so fewer,
        // larger writes are what keeps a chatty module from outrunning the sink.
        tokio::spawn(write_loop(rx, Arc::clone(&inner), BufWriter::with_capacity(64 * 1024, writer), cap));
        Output { inner: Some(inner), journal }
    }

    /// With the journal sink: `short`'s own journal streams (inside a tokio runtime).
    /// `None` for the other sinks, or when journald refused the connection (the module's
    /// lines then go to the shared output, prefixed, and a warning says why).
    pub fn module_journal(&self, short: &str) -> Option<ModuleJournal> {
        use super::journal::{Priority, open_stream};
        let j = self.journal.as_ref()?;
        let open = |p: Priority| -> std::io::Result<Output> {
            let s = open_stream(&j.sockets, short, p)?;
            s.set_nonblocking(true)?;
            let s = tokio::net::UnixStream::from_std(s)?;
            Ok(Output::start(OutputSink::Writer(Box::new(s)), j.cap))
        };
        match (open(Priority::Info), open(Priority::Err)) {
            (Ok(out), Ok(err)) => {
                Some(ModuleJournal { out, err, short: short.to_owned(), events: Arc::clone(j) })
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(
                    "cannot open journal streams for {short} ({e}); its lines go to the hub's own output"
                );
                None
            }
        }
    }

    /// Queues one complete line (ending in `\n`), or drops and counts it if the queue is
    /// full.
    pub fn line(&self, line: Bytes) {
        if let Some(inner) = &self.inner
            && inner.tx.try_send(Msg::Line(line)).is_err()
        {
            inner.dropped.fetch_add(1, Ordering::Relaxed);
            inner.dropped_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits while the queue is more than half full and the writer is making progress, so
    /// a fast producer is slowed to the sink's pace instead of losing lines. Returns at
    /// once when the sink is stalled (no progress for [`STALL_AFTER`]): then lines are
    /// dropped and counted by [`Output::line`], and nothing upstream ever blocks for long.
    pub async fn make_room(&self) {
        let Some(inner) = &self.inner else { return };
        loop {
            if inner.stalled.load(Ordering::Relaxed) || inner.tx.capacity() >= inner.cap / 2 {
                return;
            }
            let notified = inner.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Re-check after registering, so a wake-up between the check and the wait is
            // not lost.
            if inner.tx.capacity() >= inner.cap / 2 {
                return;
            }
            if tokio::time::timeout(STALL_AFTER, notified).await.is_err() {
                inner.stalled.store(true, Ordering::Relaxed);
                return;
            }
        }
    }

    /// Lines dropped so far because the queue was full.
    #[cfg(test)]
    pub fn dropped_total(&self) -> u64 {
        self.inner.as_ref().map_or(0, |i| i.dropped_total.load(Ordering::Relaxed))
    }

    /// Waits (at most `within`) until everything queued before this call has been written
    /// and flushed. Used at shutdown so the last lines are not lost.
    pub async fn flush(&self, within: Duration) -> bool {
        let Some(inner) = &self.inner else { return true };
        let (done, wait) = oneshot::channel();
        let sent = async { inner.tx.send(Msg::Flush(done)).await.is_ok() && wait.await.is_ok() };
        tokio::time::timeout(within, sent).await.unwrap_or(false)
    }
}

/// How often a failed output is tried again; lines in between are counted, not kept (they
/// are in the module logs).
pub const RETRY_OUTPUT: Duration = Duration::from_secs(1);

async fn write_loop(
    mut rx: mpsc::Receiver<Msg>,
    inner: Arc<Inner>,
    mut w: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
    cap: usize,
) {
    // After a write error (a full disk, a closed pipe) the queue is still drained, so
    // producers never wait on a dead sink; the lines are counted, the failure is reported
    // once, and the sink is tried again every RETRY_OUTPUT. When it accepts again (space was
    // freed), output resumes with a note of how many lines it could not take.
    let mut failed: Option<Failed> = None;
    // Drain whatever is queued in one go: one wake-up per batch, not per line.
    let mut batch = Vec::with_capacity(256);
    loop {
        let got = match &failed {
            // While failed, wake up for the retry even if nothing new arrives.
            Some(f) => {
                let until = f.last_try + RETRY_OUTPUT;
                tokio::select! {
                    n = rx.recv_many(&mut batch, 256) => n,
                    () = tokio::time::sleep_until(until) => usize::MAX,
                }
            }
            None => rx.recv_many(&mut batch, 256).await,
        };
        if got == 0 {
            break;
        }
        if let Some(f) = &mut failed
            && f.last_try.elapsed() >= RETRY_OUTPUT
        {
            f.last_try = tokio::time::Instant::now();
            // The buffer still holds what the failed write could not take (the torn line
            // is completed first).
            if w.flush().await.is_ok() {
                let lost = f.lost;
                failed = None;
                let note = format!(
                    "[supervisor] output resumed; {lost} lines could not be written meanwhile (they are in the module logs: `parachute logs`).\n"
                );
                tracing::warn!("the supervisor's output accepts writes again; {lost} lines were not written");
                if let Err(e) = w.write_all(note.as_bytes()).await {
                    failed = Some(Failed::new(e));
                }
            }
        }
        for msg in batch.drain(..) {
            match msg {
                Msg::Line(b) => match &mut failed {
                    Some(f) => f.lost += 1,
                    None => {
                        if let Err(e) = w.write_all(&b).await {
                            let f = Failed::new(e);
                            failed = Some(Failed { lost: 1, ..f });
                        }
                    }
                },
                Msg::Flush(done) => {
                    if failed.is_none()
                        && let Err(e) = w.flush().await
                    {
                        failed = Some(Failed::new(e));
                    }
                    let _ = done.send(());
                }
            }
        }
        if rx.len() <= cap / 2 {
            inner.stalled.store(false, Ordering::Relaxed);
            inner.space.notify_waiters();
            let n = inner.dropped.swap(0, Ordering::Relaxed);
            if n > 0 && failed.is_none() {
                let note = format!("[supervisor] dropped {n} lines: the output could not keep up.\n");
                if let Err(e) = w.write_all(note.as_bytes()).await {
                    failed = Some(Failed::new(e));
                }
            }
        }
        if rx.is_empty()
            && failed.is_none()
            && let Err(e) = w.flush().await
        {
            failed = Some(Failed::new(e));
        }
    }
    let _ = w.flush().await;
}

/// The output is failing: since when, and how many lines it did not take.
struct Failed {
    last_try: tokio::time::Instant,
    lost: u64,
}

impl Failed {
    /// Reports the failure (once per failure, not per line).
    fn new(e: std::io::Error) -> Failed {
        tracing::warn!(
            "the supervisor's output failed ({e}); lines still go to the module logs (`parachute logs`), \
             and the output is retried every {}s",
            RETRY_OUTPUT.as_secs()
        );
        Failed { last_try: tokio::time::Instant::now(), lost: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn lines_reach_the_writer_in_order() {
        let (w, mut r) = tokio::io::duplex(1 << 16);
        let out = Output::start(OutputSink::Writer(Box::new(w)), 16);
        out.line(Bytes::from_static(b"[a] one\n"));
        out.line(Bytes::from_static(b"[b] two\n"));
        assert!(out.flush(Duration::from_secs(5)).await);
        let mut buf = vec![0; 16];
        r.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"[a] one\n[b] two\n");
    }

    #[tokio::test]
    async fn a_stuck_sink_drops_and_counts_instead_of_blocking() {
        // The duplex holds 8 bytes and nobody reads: the writer blocks on its first line.
        let (w, mut r) = tokio::io::duplex(8);
        let out = Output::start(OutputSink::Writer(Box::new(w)), 4);
        for i in 0..100 {
            out.line(Bytes::from(format!("line {i:03}\n"))); // must return at once
        }
        assert!(out.dropped_total() >= 90, "dropped {}", out.dropped_total());
        // Once the reader drains, the writer reports the drop.
        let mut text = String::new();
        let mut buf = [0u8; 256];
        let found = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let n = r.read(&mut buf).await.unwrap();
                text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
                if text.contains("[supervisor] dropped ") {
                    break;
                }
            }
        })
        .await;
        assert!(found.is_ok(), "no drop notice in {text:?}");
        assert!(text.starts_with("line 000\n"), "{text:?}");
    }

    #[tokio::test]
    async fn a_slow_but_moving_sink_throttles_the_producer_and_loses_nothing() {
        // A reader that takes 64 bytes at a time with pauses: far slower than the
        // producer, but never stuck for STALL_AFTER.
        let (w, mut r) = tokio::io::duplex(64);
        let out = Output::start(OutputSink::Writer(Box::new(w)), 8);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(b"line 499\n") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            got
        });
        for i in 0..500 {
            out.make_room().await;
            out.line(Bytes::from(format!("line {i:03}\n")));
        }
        assert!(out.flush(Duration::from_secs(10)).await);
        assert_eq!(out.dropped_total(), 0, "a moving sink must not lose lines");
        let got = tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
        let text = String::from_utf8(got).unwrap();
        assert_eq!(text.lines().count(), 500);
        assert!(text.ends_with("line 499\n"));
    }

    #[tokio::test]
    async fn make_room_gives_up_on_a_stuck_sink() {
        let (w, _r) = tokio::io::duplex(8); // nobody reads
        let out = Output::start(OutputSink::Writer(Box::new(w)), 4);
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            for i in 0..100 {
                out.make_room().await;
                out.line(Bytes::from(format!("line {i:03}\n")));
            }
        })
        .await;
        assert!(waited.is_ok(), "a stuck sink must not block producers for long");
        assert!(out.dropped_total() >= 90, "dropped {}", out.dropped_total());
    }

    /// A writer that fails with ENOSPC while `full` is set.
    struct Flaky {
        full: Arc<AtomicBool>,
        got: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl AsyncWrite for Flaky {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            if self.full.load(Ordering::SeqCst) {
                return std::task::Poll::Ready(Err(std::io::Error::from_raw_os_error(libc::ENOSPC)));
            }
            self.got.lock().unwrap().extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_failed_sink_is_retried_and_output_resumes() {
        let full = Arc::new(AtomicBool::new(false));
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let w = Flaky { full: Arc::clone(&full), got: Arc::clone(&got) };
        let out = Output::start(OutputSink::Writer(Box::new(w)), 64);
        out.line(Bytes::from_static(b"before\n"));
        assert!(out.flush(Duration::from_secs(5)).await);
        full.store(true, Ordering::SeqCst);
        for _ in 0..5 {
            out.line(Bytes::from_static(b"lost\n"));
        }
        out.flush(Duration::from_secs(1)).await;
        full.store(false, Ordering::SeqCst);
        let text = || String::from_utf8(got.lock().unwrap().clone()).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !text().contains("after\n") {
            assert!(tokio::time::Instant::now() < deadline, "output never resumed: {:?}", text());
            out.line(Bytes::from_static(b"after\n"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let t = text();
        assert!(t.starts_with("before\n"), "{t:?}");
        assert!(t.contains("[supervisor] output resumed; "), "{t:?}");
        // What the buffer held when the sink failed is written first, the torn end included.
        let resumed = t.find("[supervisor] output resumed").unwrap();
        assert!(t[..resumed].ends_with("lost\n"), "{t:?}");
    }

    #[tokio::test]
    async fn discard_accepts_everything() {
        let out = Output::start(OutputSink::Discard, 1);
        out.line(Bytes::from_static(b"x\n"));
        assert!(out.flush(Duration::from_millis(10)).await);
        assert_eq!(out.dropped_total(), 0);
    }
}
