//! Turning a child's byte stream into prefixed, bounded lines.
//!
//! Upstream decoded every chunk as UTF-8, concatenated strings and had no line limit, so a
//! child writing megabytes without a newline grew the hub without bound (R27). Here the
//! splitter works on bytes with `memchr`, keeps at most `max_line_bytes` of an unfinished
//! line, and cuts longer lines into pieces. Every piece but the last of a cut line ends in
//! [`CONTINUED`], so a reader can tell a cut from a real line end. Cuts avoid splitting a
//! UTF-8 sequence when one is in reach, so lossy decoding later does not mangle text that
//! was valid. Bytes stay bytes: conversion to text happens only where text is needed.

use bytes::{BufMut, Bytes, BytesMut};

/// Marks a piece of a line that was cut at `max_line_bytes`; the line goes on in the next
/// piece.
pub const CONTINUED: &str = " …[continued]";

/// Splits a byte stream into lines of at most `max` bytes (without the newline).
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    /// A splitter cutting lines longer than `max` bytes (at least 1).
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter { buf: Vec::new(), max: max.max(1) }
    }

    /// Feeds bytes; calls `emit(piece, continued)` for every finished piece, in order.
    pub fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8], bool)) {
        while !data.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    let (line, rest) = (&data[..i], &data[i + 1..]);
                    data = rest;
                    if self.buf.is_empty() {
                        self.emit_complete(line, emit);
                    } else {
                        self.buf.extend_from_slice(line);
                        let whole = std::mem::take(&mut self.buf);
                        self.emit_complete(&whole, emit);
                        self.buf = whole;
                        self.buf.clear();
                    }
                }
                None => {
                    self.buf.extend_from_slice(data);
                    data = &[];
                }
            }
            // Never hold more than `max` bytes of an unfinished line.
            while self.buf.len() > self.max {
                let cut = cut_point(&self.buf, self.max);
                emit(&self.buf[..cut], true);
                self.buf.drain(..cut);
            }
        }
    }

    /// End of stream: a non-empty unfinished line is emitted as a line.
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8], bool)) {
        if !self.buf.is_empty() {
            let tail = std::mem::take(&mut self.buf);
            self.emit_complete(&tail, emit);
        }
    }

    /// Bytes of an unfinished line currently held.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Takes the unfinished line held (an in-place upgrade hands it to the new image's
    /// splitter, so a line cut by the hand-over is still one line).
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    fn emit_complete(&self, mut line: &[u8], emit: &mut impl FnMut(&[u8], bool)) {
        while line.len() > self.max {
            let cut = cut_point(line, self.max);
            emit(&line[..cut], true);
            line = &line[cut..];
        }
        emit(line, false);
    }
}

/// Where to cut `b` (longer than `max`): at `max`, or just before a UTF-8 sequence that
/// would straddle the cut. Always at least 1, so the splitter makes progress.
fn cut_point(b: &[u8], max: usize) -> usize {
    // Walk back over continuation bytes (10xxxxxx) to the lead byte of the sequence that
    // contains b[max]; cutting before that lead keeps the sequence whole.
    let mut cut = max;
    for _ in 0..3 {
        if cut > 1 && (b[cut] & 0xC0) == 0x80 {
            cut -= 1;
        } else {
            break;
        }
    }
    if (b[cut] & 0xC0) == 0x80 { max } else { cut }
}

/// `"<prefix><piece>[ …[continued]]\n"` as one buffer, built once and shared by the ring
/// buffer and the output writer.
pub fn format_line(prefix: &[u8], piece: &[u8], continued: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(prefix.len() + piece.len() + CONTINUED.len() + 1);
    append_line(&mut b, prefix, piece, continued);
    b.freeze()
}

/// Appends one formatted line (as [`format_line`] makes it) to `buf`, so a pump can build
/// every line of a read into one buffer and hand out cheap slices of it.
pub fn append_line(buf: &mut BytesMut, prefix: &[u8], piece: &[u8], continued: bool) {
    buf.put_slice(prefix);
    buf.put_slice(piece);
    if continued {
        buf.put_slice(CONTINUED.as_bytes());
    }
    buf.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(max: usize, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut emit = |p: &[u8], c: bool| out.push((String::from_utf8_lossy(p).into_owned(), c));
        for c in chunks {
            s.push(c, &mut emit);
        }
        s.finish(&mut emit);
        out
    }

    fn plain(v: &[&str]) -> Vec<(String, bool)> {
        v.iter().map(|s| (s.to_string(), false)).collect()
    }

    #[test]
    fn a_line_split_across_chunks_comes_out_once() {
        // Scenario 33.
        assert_eq!(run(1024, &[b"listening on ", b"3200\n"]), plain(&["listening on 3200"]));
    }

    #[test]
    fn several_lines_in_one_chunk_and_empty_lines() {
        assert_eq!(run(1024, &[b"a\n\nb\r\nc"]), plain(&["a", "", "b\r", "c"]));
    }

    #[test]
    fn the_tail_is_flushed_at_eof_and_nothing_else() {
        assert_eq!(run(1024, &[b"x\n"]), plain(&["x"]));
        assert_eq!(run(1024, &[b"tail"]), plain(&["tail"]));
        assert!(run(1024, &[]).is_empty());
    }

    #[test]
    fn long_lines_are_cut_and_marked() {
        let out = run(4, &[b"abcdefghij\nxy\n"]);
        assert_eq!(
            out,
            vec![("abcd".into(), true), ("efgh".into(), true), ("ij".into(), false), ("xy".into(), false)]
        );
        // Exactly `max` bytes is not cut.
        assert_eq!(run(4, &[b"abcd\n"]), plain(&["abcd"]));
    }

    #[test]
    fn an_unfinished_line_never_holds_more_than_max() {
        // R27: a megabyte without a newline comes out in pieces as it arrives.
        let mut s = LineSplitter::new(1000);
        let mut pieces = 0;
        let chunk = vec![b'x'; 4096];
        for _ in 0..256 {
            s.push(&chunk, &mut |p: &[u8], c| {
                assert!(p.len() <= 1000 && c);
                pieces += 1;
            });
            assert!(s.pending() <= 1000);
        }
        assert_eq!(pieces, 256 * 4096 / 1000);
    }

    #[test]
    fn cuts_do_not_split_utf8_sequences() {
        // "é" is two bytes: at max 4, a cut at byte 4 would split the second "é", so it moves back.
        let out = run(4, &["aééb\n".as_bytes()]);
        assert_eq!(out, vec![("aé".into(), true), ("éb".into(), false)]);
        // Invalid bytes that look like continuations everywhere still make progress.
        let out = run(2, &[&[0x80, 0x80, 0x80, 0x80, b'\n']]);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn format_line_prefixes_and_marks() {
        assert_eq!(
            &format_line(b"[vault] ", b"listening on 1940", false)[..],
            b"[vault] listening on 1940\n"
        );
        assert_eq!(&format_line(b"[v] ", b"ab", true)[..], "[v] ab …[continued]\n".as_bytes());
    }
}
