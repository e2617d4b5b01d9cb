//! Output pumps: one task per child stream, from pipe to ring buffer and output writer.
//!
//! A pump reads raw bytes, cuts them into bounded lines ([`LineSplitter`]), prefixes each
//! once and hands the same buffer to the module's ring and to the output queue. Pumps are
//! joined (with a short timeout) after the child's group has been reaped, so `stop()` does
//! not return before the last lines are in the log (R9). A pump whose pipe is still held by
//! an escaped grandchild keeps running detached and keeps feeding the same ring.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use std::borrow::Cow;

use super::journal::EventKind;
use super::lines::{LineSplitter, append_line, format_line};
use super::logbuf::LogRing;
use super::output::{ModuleJournal, Output};
use super::state::ErrorLine;

/// Where a module's lines go.
#[derive(Clone)]
pub struct LineSink {
    /// `"[<short>] "`.
    pub prefix: Bytes,
    /// The module's ring buffer.
    pub ring: Arc<LogRing>,
    /// The shared output writer.
    pub output: Output,
    /// Cut lines longer than this.
    pub max_line: usize,
    /// The module's own journal streams, when the output is the journal.
    pub journal: Option<ModuleJournal>,
    /// The journal stream of the stream this pump reads (set by [`LineSink::stdout`] and
    /// [`LineSink::stderr`]); its lines go there unprefixed instead of to `output`.
    pub stream: Option<Output>,
    /// Where the last stderr line is kept for `status` (dropped by [`LineSink::stdout`]).
    pub last_error: Option<Arc<std::sync::Mutex<Option<ErrorLine>>>>,
}

impl LineSink {
    /// A `[supervisor] …` line (no module prefix) into the ring and the output (R29); to
    /// the journal as an entry with the module and `kind` fields when that is the output.
    pub fn event(&self, kind: EventKind, text: &str) {
        let line = format_line(b"", text.as_bytes(), false);
        self.ring.push(line.clone());
        if !self.journal.as_ref().is_some_and(|j| j.event(kind, text)) {
            self.output.line(line);
        }
    }

    /// The sink for the child's stdout.
    pub fn stdout(&self) -> LineSink {
        LineSink { stream: self.journal.as_ref().map(|j| j.out.clone()), last_error: None, ..self.clone() }
    }

    /// The sink for the child's stderr.
    pub fn stderr(&self) -> LineSink {
        LineSink { stream: self.journal.as_ref().map(|j| j.err.clone()), ..self.clone() }
    }
}

/// The first read buffer of a pump, and the most it grows to.
const READ_FIRST: usize = 1024;
const READ_MAX: usize = 64 * 1024;

/// What a pump hands back when it is paused (an in-place upgrade): its stream, untouched
/// since the last line it delivered, and the unfinished line it held.
pub struct Paused<R> {
    /// The pipe.
    pub stream: R,
    /// Bytes of a line whose end has not arrived yet.
    pub partial: Vec<u8>,
}

/// Pumps `stream` until EOF or a read error, then flushes a partial last line; or, once
/// `pause` turns `true`, stops between two reads and hands the stream back (nothing read
/// is lost: a read is only ever abandoned before it returned bytes). `partial` is an
/// unfinished line handed over by a previous pump of the same pipe.
///
/// Every line of one read is formatted into a single buffer and handed out as slices of it
/// (no allocation per line), pushed into the ring under one lock with one wake-up, then
/// queued for the output writer.
pub async fn pump<R: AsyncRead + Unpin>(
    mut stream: R,
    sink: LineSink,
    partial: Vec<u8>,
    mut pause: watch::Receiver<bool>,
) -> Option<Paused<R>> {
    let mut splitter = LineSplitter::new(sink.max_line);
    splitter.push(&partial, &mut |_, _| {});
    // Starts small and doubles whenever a read fills it: a quiet module (most of them)
    // keeps 1 KiB per stream instead of 16, and a chatty one reaches 64 KiB reads, a
    // quarter of the system calls of 16 KiB ones.
    let mut buf = vec![0u8; READ_FIRST];
    let mut chunk = BytesMut::new();
    let mut ends: Vec<usize> = Vec::new();
    // The hub's log gets every module line escaped (`crate::text::line_bytes`), so a
    // module can never clear the reader's screen or pose as a `[hub]` line with a `\r`; the
    // ring keeps the raw bytes for `parachute logs` (which escapes on a terminal). Lines
    // that need no escaping (nearly all) are shared, not copied.
    let mut escaped: Vec<(usize, Bytes)> = Vec::new();
    loop {
        let read = tokio::select! {
            biased;
            () = paused(&mut pause) => None,
            r = stream.read(&mut buf) => Some(r),
        };
        let Some(read) = read else {
            return Some(Paused { stream, partial: splitter.take_pending() });
        };
        let eof = match read {
            Ok(0) | Err(_) => true,
            Ok(n) => {
                let full = n == buf.len();
                splitter.push(&buf[..n], &mut |piece: &[u8], continued: bool| {
                    if let Cow::Owned(safe) = crate::text::line_bytes(piece) {
                        escaped.push((ends.len(), format_line(&sink.prefix, &safe, continued)));
                    }
                    append_line(&mut chunk, &sink.prefix, piece, continued);
                    ends.push(chunk.len());
                });
                if full && buf.len() < READ_MAX {
                    buf.resize(buf.len() * 2, 0);
                }
                false
            }
        };
        if eof {
            splitter.finish(&mut |piece: &[u8], continued: bool| {
                if let Cow::Owned(safe) = crate::text::line_bytes(piece) {
                    escaped.push((ends.len(), format_line(&sink.prefix, &safe, continued)));
                }
                append_line(&mut chunk, &sink.prefix, piece, continued);
                ends.push(chunk.len());
            });
        }
        if !ends.is_empty() {
            let all = chunk.split().freeze();
            let mut start = 0;
            let lines: Vec<Bytes> = ends
                .drain(..)
                .map(|end| {
                    let line = all.slice(start..end);
                    start = end;
                    line
                })
                .collect();
            sink.ring.push_many(lines.iter().cloned());
            if let Some(slot) = &sink.last_error
                && let Some(last) = lines
                    .iter()
                    .rev()
                    .map(|l| l.slice(sink.prefix.len().min(l.len())..))
                    .find(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
            {
                *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ErrorLine::new(&last));
            }
            let mut overrides = escaped.drain(..).peekable();
            for (i, line) in lines.into_iter().enumerate() {
                let line = match overrides.next_if(|(at, _)| *at == i) {
                    Some((_, safe)) => safe,
                    None => line,
                };
                match &sink.stream {
                    // The journal entry is named after the module: no prefix.
                    Some(stream) => stream.line(line.slice(sink.prefix.len()..)),
                    None => sink.output.line(line),
                }
            }
        }
        if eof {
            return None;
        }
        // Throttle a chatty child to the sink's pace (through its own pipe) rather than
        // dropping its lines; returns at once when the sink is stalled.
        tokio::select! {
            biased;
            () = paused(&mut pause) => {}
            () = sink.stream.as_ref().unwrap_or(&sink.output).make_room() => {}
        }
    }
}

/// Resolves once a pause is asked for. A dropped sender is not a request: a pump left
/// running detached (its pipe held by an escaped process) goes on until EOF.
async fn paused(pause: &mut watch::Receiver<bool>) {
    if pause.wait_for(|p| *p).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::output::OutputSink;
    use tokio::io::AsyncWriteExt;

    /// A sink with `prefix` into a fresh ring (returned), its output discarded.
    fn sink(prefix: &'static [u8]) -> (Arc<LogRing>, LineSink) {
        let ring = LogRing::new(1 << 16);
        let sink = LineSink {
            prefix: Bytes::from_static(prefix),
            ring: Arc::clone(&ring),
            output: Output::start(OutputSink::Discard, 8),
            max_line: 1024,
            journal: None,
            stream: None,
            last_error: None,
        };
        (ring, sink)
    }

    #[tokio::test]
    async fn lines_are_prefixed_and_the_tail_gets_a_newline() {
        // Scenarios 32/33.
        let (ring, sink) = sink(b"[scribe] ");
        let (mut w, r) = tokio::io::duplex(64);
        let (_pause, paused) = watch::channel(false);
        let task = tokio::spawn(pump(r, sink, b"listening ".to_vec(), paused));
        w.write_all(b"on ").await.unwrap();
        w.write_all(b"3200\nbye").await.unwrap();
        drop(w);
        assert!(task.await.unwrap().is_none(), "EOF ends the pump");
        let texts: Vec<_> = ring.snapshot(None).lines.into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["[scribe] listening on 3200\n", "[scribe] bye\n"]);
    }

    #[tokio::test]
    async fn a_paused_pump_hands_back_its_stream_and_unfinished_line() {
        let (ring, sink) = sink(b"[notes] ");
        let (mut w, r) = tokio::io::duplex(64);
        let (pause, paused) = watch::channel(false);
        let task = tokio::spawn(pump(r, sink, Vec::new(), paused));
        w.write_all(b"one\ntw").await.unwrap();
        while ring.snapshot(None).lines.is_empty() {
            tokio::task::yield_now().await;
        }
        pause.send_replace(true);
        let Paused { mut stream, partial } = task.await.unwrap().expect("paused, not ended");
        assert_eq!(partial, b"tw");
        // The pipe is intact: what is written next is still there for the next pump.
        w.write_all(b"o\n").await.unwrap();
        let mut rest = [0u8; 2];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"o\n");
        let texts: Vec<_> = ring.snapshot(None).lines.into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["[notes] one\n"]);
    }
}
