//! Per-module log ring buffer with sequence numbers, and followers that are woken, not
//! polled.
//!
//! Upstream's follow compared array lengths, so once the buffer was full (every push
//! evicts one line, the length stays put) a follower never saw another line (R10). Here
//! every line gets a monotonically increasing `seq`; a reader keeps a cursor (the next
//! `seq` it wants) and learns how many lines were evicted before it could read them. New
//! lines are announced through a `watch` channel carrying the next `seq`, which cannot lose
//! a wake-up. The buffer is bounded by bytes; a single line larger than the cap is kept
//! until the next push, so the newest line is always readable.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

/// One buffered line: the prefixed text including its trailing `\n` (upstream's shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Position in the module's log, counted from 0 for the first line ever pushed.
    pub seq: u64,
    /// `"[<short>] <text>\n"` (or a `[supervisor] …` line), invalid UTF-8 replaced.
    pub text: String,
}

/// A copy of the buffer from a cursor on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSnapshot {
    /// Buffered lines with `seq >= since`, oldest first.
    pub lines: Vec<LogLine>,
    /// Lines that were evicted between `since` and the oldest line still kept.
    pub missed: u64,
    /// The `seq` the next pushed line will get: pass it as `since` to continue.
    pub next_seq: u64,
}

/// What a follower receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// The next line.
    Line(LogLine),
    /// `missed` lines were evicted before the follower got to them.
    Gap {
        /// How many.
        missed: u64,
    },
}

#[derive(Debug)]
struct Ring {
    lines: VecDeque<(u64, Bytes)>,
    bytes: usize,
    next_seq: u64,
}

impl Ring {
    fn first_seq(&self) -> u64 {
        self.lines.front().map_or(self.next_seq, |(s, _)| *s)
    }

    fn get(&self, seq: u64) -> Option<&Bytes> {
        let first = self.first_seq();
        let idx = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.lines.get(idx).map(|(_, b)| b)
    }
}

/// Shared by the module's pumps (writers) and any number of readers.
#[derive(Debug)]
pub struct LogRing {
    ring: Mutex<Ring>,
    cap: usize,
    /// `(next_seq, closed)`: bumped on every push, closed when the module entry goes away.
    tick: watch::Sender<(u64, bool)>,
}

impl LogRing {
    /// An empty buffer holding at most `cap` bytes (plus one oversize line).
    pub fn new(cap: usize) -> Arc<LogRing> {
        Arc::new(LogRing {
            ring: Mutex::new(Ring { lines: VecDeque::new(), bytes: 0, next_seq: 0 }),
            cap,
            tick: watch::Sender::new((0, false)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // A panic while holding this lock cannot leave the ring inconsistent in a way
        // that matters to readers, so a poisoned lock is used as is.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one complete line (ending in `\n`) and returns its `seq`.
    pub fn push(&self, line: Bytes) -> u64 {
        self.push_many(std::iter::once(line))
    }

    /// Appends several lines under one lock with one wake-up for followers (a pump hands
    /// over every line of one read at once). Returns the sequence number of the last line.
    pub fn push_many(&self, lines: impl IntoIterator<Item = Bytes>) -> u64 {
        let last;
        {
            let mut r = self.lock();
            for line in lines {
                let seq = r.next_seq;
                r.next_seq += 1;
                r.bytes += line.len();
                r.lines.push_back((seq, line));
            }
            while r.bytes > self.cap && r.lines.len() > 1 {
                if let Some((_, old)) = r.lines.pop_front() {
                    r.bytes -= old.len();
                }
            }
            last = r.next_seq.saturating_sub(1);
        }
        self.tick.send_modify(|t| t.0 = last + 1);
        last
    }

    /// Bytes currently held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The lines from `since` on (`None`: everything kept).
    pub fn snapshot(&self, since: Option<u64>) -> LogSnapshot {
        let r = self.lock();
        let first = r.first_seq();
        let since = since.unwrap_or(first);
        let missed = first.saturating_sub(since);
        let lines = r
            .lines
            .iter()
            .filter(|(s, _)| *s >= since)
            .map(|(s, b)| LogLine { seq: *s, text: String::from_utf8_lossy(b).into_owned() })
            .collect();
        LogSnapshot { lines, missed, next_seq: r.next_seq }
    }

    /// Every kept line, oldest first, and the `seq` of the first (an in-place upgrade hands
    /// them to the new image: [`LogRing::restore`]).
    pub fn export(&self) -> (u64, Vec<Bytes>) {
        let r = self.lock();
        (r.first_seq(), r.lines.iter().map(|(_, b)| b.clone()).collect())
    }

    /// A buffer holding `lines` (as [`LogRing::export`] gave them) numbered from
    /// `first_seq` on, so followers resume at the same sequence numbers.
    pub fn restore(cap: usize, first_seq: u64, lines: Vec<Bytes>) -> Arc<LogRing> {
        let ring = LogRing::new(cap);
        ring.lock().next_seq = first_seq;
        ring.tick.send_modify(|t| t.0 = first_seq);
        if !lines.is_empty() {
            ring.push_many(lines);
        }
        ring
    }

    /// A follower starting at `since` (`None`: the oldest kept line).
    pub fn follow(self: &Arc<Self>, since: Option<u64>) -> LogFollower {
        let cursor = since.unwrap_or_else(|| self.lock().first_seq());
        LogFollower { ring: Arc::clone(self), rx: self.tick.subscribe(), cursor }
    }

    /// Ends every follower once it has read what is buffered.
    pub fn close(&self) {
        self.tick.send_modify(|t| t.1 = true);
    }
}

/// A cursor into a [`LogRing`] that waits for new lines.
#[derive(Debug)]
pub struct LogFollower {
    ring: Arc<LogRing>,
    rx: watch::Receiver<(u64, bool)>,
    cursor: u64,
}

impl LogFollower {
    /// The next line, a gap notice, or `None` once the module entry is gone.
    pub async fn next(&mut self) -> Option<LogEvent> {
        loop {
            // Mark the current value seen *before* looking at the ring, so a push that
            // lands after the look is still a change for `changed()` below.
            let closed = self.rx.borrow_and_update().1;
            if let Some(ev) = self.poll_ring() {
                return Some(ev);
            }
            if closed || self.rx.changed().await.is_err() {
                // Closed: deliver anything pushed in between, then end.
                return self.poll_ring();
            }
        }
    }

    /// The `seq` this follower will deliver next.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    fn poll_ring(&mut self) -> Option<LogEvent> {
        let r = self.ring.lock();
        let first = r.first_seq();
        if self.cursor < first {
            let missed = first - self.cursor;
            self.cursor = first;
            return Some(LogEvent::Gap { missed });
        }
        let bytes = r.get(self.cursor)?;
        let line = LogLine { seq: self.cursor, text: String::from_utf8_lossy(bytes).into_owned() };
        self.cursor += 1;
        Some(LogEvent::Line(line))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_restored_ring_keeps_every_line_at_its_sequence_number() {
        let ring = LogRing::new(1 << 10);
        for i in 0..5 {
            ring.push(Bytes::from(format!("line {i}\n")));
        }
        let (first, lines) = ring.export();
        let back = LogRing::restore(1 << 10, first, lines);
        assert_eq!(back.snapshot(None), ring.snapshot(None));
        assert_eq!(back.push(Bytes::from_static(b"next\n")), 5);
    }

    use super::*;
    use std::time::Duration;

    fn line(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn texts(s: &LogSnapshot) -> Vec<&str> {
        s.lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn eviction_keeps_the_newest_within_the_cap() {
        // Scenario 36: cap 40, four 15-byte lines.
        let ring = LogRing::new(40);
        for i in 1..=4 {
            ring.push(line(&format!("[vault] line {i}\n")));
        }
        let snap = ring.snapshot(None);
        assert_eq!(texts(&snap), ["[vault] line 3\n", "[vault] line 4\n"]);
        assert!(ring.bytes() <= 40);
        assert_eq!(snap.next_seq, 4);
        assert_eq!(snap.lines[0].seq, 2);
    }

    #[test]
    fn an_oversize_line_is_kept_until_the_next_push() {
        let ring = LogRing::new(10);
        ring.push(line("short\n"));
        ring.push(line("a line much longer than ten bytes\n"));
        assert_eq!(texts(&ring.snapshot(None)), ["a line much longer than ten bytes\n"]);
        ring.push(line("x\n"));
        assert_eq!(texts(&ring.snapshot(None)), ["x\n"]);
    }

    #[test]
    fn snapshot_since_reports_missed_lines() {
        let ring = LogRing::new(20);
        for i in 0..10 {
            ring.push(line(&format!("{i}.....\n"))); // 7 bytes each → 2 kept
        }
        let s = ring.snapshot(Some(3));
        assert_eq!(s.missed, 5);
        assert_eq!(texts(&s), ["8.....\n", "9.....\n"]);
        let s = ring.snapshot(Some(9));
        assert_eq!((s.missed, texts(&s)), (0, vec!["9.....\n"]));
        let s = ring.snapshot(Some(10));
        assert_eq!((s.missed, s.lines.len(), s.next_seq), (0, 0, 10));
        assert_eq!(ring.snapshot(None).missed, 0);
    }

    #[test]
    fn invalid_utf8_is_replaced_only_when_read() {
        let ring = LogRing::new(100);
        ring.push(Bytes::from_static(b"[m] \xff ok\n"));
        assert_eq!(ring.snapshot(None).lines[0].text, "[m] \u{fffd} ok\n");
    }

    #[tokio::test]
    async fn follower_keeps_receiving_once_the_buffer_is_full() {
        // R10: upstream's length comparison went silent at capacity.
        let ring = LogRing::new(16);
        let mut f = ring.follow(None);
        for i in 0..5 {
            ring.push(line(&format!("old {i}\n"))); // 6 bytes → 2 kept
        }
        assert_eq!(f.next().await, Some(LogEvent::Gap { missed: 3 }));
        assert_eq!(f.next().await.unwrap(), LogEvent::Line(LogLine { seq: 3, text: "old 3\n".into() }));
        assert_eq!(f.next().await.unwrap(), LogEvent::Line(LogLine { seq: 4, text: "old 4\n".into() }));
        // Now at capacity: every new line must still arrive, pushed from another task.
        let r2 = Arc::clone(&ring);
        let writer = tokio::spawn(async move {
            for i in 0..50 {
                r2.push(line(&format!("new {i}\n")));
                tokio::task::yield_now().await;
            }
        });
        let mut got = Vec::new();
        let mut gaps = 0;
        while got.len() + gaps < 50 {
            match tokio::time::timeout(Duration::from_secs(5), f.next()).await.expect("follower stalled") {
                Some(LogEvent::Line(l)) => got.push(l.seq),
                Some(LogEvent::Gap { missed }) => gaps += missed as usize,
                None => panic!("ended early"),
            }
        }
        writer.await.unwrap();
        assert_eq!(*got.last().unwrap(), 54);
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    }

    #[tokio::test]
    async fn follower_ends_after_close_once_drained() {
        let ring = LogRing::new(100);
        let mut f = ring.follow(Some(0));
        ring.push(line("a\n"));
        ring.close();
        assert!(matches!(f.next().await, Some(LogEvent::Line(_))));
        assert_eq!(f.next().await, None);
    }

    #[tokio::test]
    async fn follower_waits_without_polling_and_wakes_on_push() {
        let ring = LogRing::new(100);
        let mut f = ring.follow(None);
        let r2 = Arc::clone(&ring);
        let waiter = tokio::spawn(async move { f.next().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        r2.push(line("late\n"));
        let ev = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert_eq!(ev, Some(LogEvent::Line(LogLine { seq: 0, text: "late\n".into() })));
    }

    #[tokio::test]
    async fn follower_from_a_future_cursor_waits_for_it() {
        let ring = LogRing::new(100);
        ring.push(line("0\n"));
        let mut f = ring.follow(Some(1));
        ring.push(line("1\n"));
        assert_eq!(f.next().await, Some(LogEvent::Line(LogLine { seq: 1, text: "1\n".into() })));
        assert_eq!(f.cursor(), 2);
    }
}
