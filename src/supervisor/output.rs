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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};

/// Where prefixed lines go.
pub enum OutputSink {
    /// The supervisor's stdout (the hub log under a service manager, the platform log in a
    /// container).
    Stdout,
    /// Any writer (tests, a file).
    Writer(Box<dyn AsyncWrite + Send + Unpin>),
    /// Nowhere (the ring buffers still get every line).
    Discard,
}

impl std::fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutputSink::Stdout => "Stdout",
            OutputSink::Writer(_) => "Writer(..)",
            OutputSink::Discard => "Discard",
        })
    }
}

enum Msg {
    Line(Bytes),
    Flush(oneshot::Sender<()>),
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    dropped: AtomicU64,
    dropped_total: AtomicU64,
}

/// A cheap handle producers use; never blocks.
#[derive(Clone)]
pub struct Output {
    inner: Option<Arc<Inner>>,
}

impl Output {
    /// Starts the writer task (inside a tokio runtime) with a queue of `cap` lines.
    pub fn start(sink: OutputSink, cap: usize) -> Output {
        let writer: Box<dyn AsyncWrite + Send + Unpin> = match sink {
            OutputSink::Discard => return Output { inner: None },
            OutputSink::Stdout => Box::new(tokio::io::stdout()),
            OutputSink::Writer(w) => w,
        };
        let cap = cap.max(2);
        let (tx, rx) = mpsc::channel(cap);
        let inner = Arc::new(Inner { tx, dropped: AtomicU64::new(0), dropped_total: AtomicU64::new(0) });
        tokio::spawn(write_loop(rx, Arc::clone(&inner), BufWriter::new(writer), cap));
        Output { inner: Some(inner) }
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

    /// Lines dropped so far because the queue was full.
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

async fn write_loop(
    mut rx: mpsc::Receiver<Msg>,
    inner: Arc<Inner>,
    mut w: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
    cap: usize,
) {
    // After a write error (closed pipe) the queue is still drained, so producers keep
    // counting drops instead of filling a queue nobody empties; the error is logged once.
    let mut broken = false;
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Line(b) => {
                if !broken && let Err(e) = w.write_all(&b).await {
                    tracing::warn!("supervisor output stopped: {e}; lines still go to the module logs");
                    broken = true;
                }
            }
            Msg::Flush(done) => {
                if !broken {
                    let _ = w.flush().await;
                }
                let _ = done.send(());
            }
        }
        if rx.len() <= cap / 2 {
            let n = inner.dropped.swap(0, Ordering::Relaxed);
            if n > 0 && !broken {
                let note = format!("[supervisor] dropped {n} lines: the output could not keep up.\n");
                broken |= w.write_all(note.as_bytes()).await.is_err();
            }
        }
        if rx.is_empty() && !broken {
            broken |= w.flush().await.is_err();
        }
    }
    let _ = w.flush().await;
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
    async fn discard_accepts_everything() {
        let out = Output::start(OutputSink::Discard, 1);
        out.line(Bytes::from_static(b"x\n"));
        assert!(out.flush(Duration::from_millis(10)).await);
        assert_eq!(out.dropped_total(), 0);
    }
}
