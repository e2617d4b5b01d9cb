//! The one place that makes text from outside safe to put in front of a person.
//!
//! Module output, other users' command lines (port squatters, legacy daemons),
//! `services.json` names and unit log tails are all written by someone other than the
//! operator reading them. Printed raw, `ESC ] 52` writes the reader's clipboard, `ESC [ 2J`
//! clears the screen, a `\r` rewrites the start of the line so a module line poses as a
//! `[hub]` line, and U+202E reverses what follows. Every path that prints such text goes
//! through this module; nothing else decides what is safe.
//!
//! The escapes are visible and unambiguous (`\e`, `\r`, `\x07`, `\u{202e}`), so an
//! operator can still see that something odd was sent. Printable text, including every
//! non-Latin script, passes through untouched and without allocation.

use std::borrow::Cow;

/// Whether `c` must never reach a terminal raw: C0 and C1 controls, DEL, and the Unicode
/// format characters that change how surrounding text is shown (bidi embeddings,
/// overrides and isolates, zero-width characters, the byte-order mark, interlinear
/// annotation marks).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || is_format_char(c)
}

/// Unicode format (`Cf`) characters that matter on a terminal: they are invisible or change
/// the direction of the text around them.
pub fn is_format_char(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{061C}'
        | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}')
}

fn push_escaped(out: &mut String, c: char, keep_tab: bool) {
    match c {
        '\t' if keep_tab => out.push('\t'),
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\u{1b}' => out.push_str("\\e"),
        c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
        c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
    }
}

fn escape_with(s: &str, keep_tab: bool) -> Cow<'_, str> {
    let unsafe_at = |c: char| is_unsafe_char(c) && !(keep_tab && c == '\t');
    let Some(first) = s.find(unsafe_at) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        if unsafe_at(c) {
            push_escaped(&mut out, c, keep_tab);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A one-line field (a name, a command line, a path, an error from outside): every
/// control and format character escaped, tab and newline included.
///
/// ```
/// use parachute::text::field;
/// assert_eq!(field("vault"), "vault");
/// assert_eq!(field("a\nb\u{1b}[2J"), "a\\nb\\e[2J");
/// assert_eq!(field("x\u{202e}y"), "x\\u{202e}y");
/// ```
pub fn field(s: &str) -> Cow<'_, str> {
    escape_with(s, false)
}

/// [`field`], clipped to `max_chars` characters (then `…`), for values that may be huge.
pub fn field_clipped(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => field(s).into_owned(),
        Some((cut, _)) => {
            let rest = s.len() - cut;
            format!("{}…(+{rest} bytes)", field(&s[..cut]))
        }
    }
}

/// One line of a module's output, as text: like [`field`], but a tab stays a tab.
pub fn line(s: &str) -> Cow<'_, str> {
    escape_with(s, true)
}

/// Printable ASCII or a tab.
fn is_plain_byte(x: u8) -> bool {
    x.wrapping_sub(0x20) < 0x5f || x == b'\t'
}

/// Whether every byte is printable ASCII or a tab. Every line a module writes passes
/// through this: it looks at 32 bytes at a time without an early exit inside a block,
/// which the compiler turns into vector compares (a byte-at-a-time `position` was the
/// largest single cost of a chatty module's output path).
fn is_plain(b: &[u8]) -> bool {
    let mut blocks = b.chunks_exact(32);
    for block in &mut blocks {
        let mut all = true;
        for &x in block {
            all &= is_plain_byte(x);
        }
        if !all {
            return false;
        }
    }
    blocks.remainder().iter().all(|&x| is_plain_byte(x))
}

/// One line of a module's output as raw bytes (no trailing newline): controls, C1 bytes and
/// format characters escaped; invalid UTF-8 is kept byte for byte except for the bytes a
/// terminal could take as a control (`0x80..=0x9f` alone), which are escaped as `\xNN`.
///
/// The common case, a printable ASCII line, is one scan and no allocation.
pub fn line_bytes(b: &[u8]) -> Cow<'_, [u8]> {
    if is_plain(b) {
        return Cow::Borrowed(b);
    }
    let Some(first) = b.iter().position(|&x| !is_plain_byte(x)) else {
        return Cow::Borrowed(b);
    };
    // Something other than printable ASCII: walk the rest by UTF-8 chunks.
    let mut out = Vec::with_capacity(b.len() + 16);
    out.extend_from_slice(&b[..first]);
    for chunk in b[first..].utf8_chunks() {
        out.extend_from_slice(line(chunk.valid()).as_bytes());
        for &x in chunk.invalid() {
            if (0x80..=0x9f).contains(&x) {
                out.extend_from_slice(format!("\\x{x:02x}").as_bytes());
            } else {
                out.push(x);
            }
        }
    }
    if out == b {
        return Cow::Borrowed(b);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 32-byte blocks and the tail agree with a byte-by-byte look, wherever the one
    /// byte that needs escaping sits.
    #[test]
    fn the_block_scan_finds_an_unsafe_byte_anywhere() {
        for len in 0..100 {
            let plain = vec![b'a'; len];
            assert!(is_plain(&plain), "{len}");
            for at in 0..len {
                for bad in [0x1b, b'\r', 0x7f, 0x9b, 0xe2] {
                    let mut b = plain.clone();
                    b[at] = bad;
                    assert!(!is_plain(&b), "{len} {at} {bad}");
                }
                let mut tab = plain.clone();
                tab[at] = b'\t';
                assert!(is_plain(&tab), "a tab is plain");
            }
        }
    }

    #[test]
    fn attacks_from_the_issues_are_escaped() {
        for (raw, want) in [
            ("\u{1b}]0;title\u{7}", "\\e]0;title\\x07"),
            ("\u{1b}]52;c;ZXZpbA==\u{7}", "\\e]52;c;ZXZpbA==\\x07"),
            ("\u{1b}[2J", "\\e[2J"),
            ("\r[hub] forged line", "\\r[hub] forged line"),
            ("abc\u{202e}fdp.exe", "abc\\u{202e}fdp.exe"),
            ("\u{9b}31m", "\\x9b31m"),
            ("zero\u{200b}width", "zero\\u{200b}width"),
            ("\u{feff}bom", "\\u{feff}bom"),
            ("\u{7f}", "\\x7f"),
        ] {
            assert_eq!(field(raw), want, "{raw:?}");
            assert_eq!(line_bytes(raw.as_bytes()).as_ref(), want.as_bytes(), "{raw:?}");
        }
    }

    #[test]
    fn printable_text_is_untouched_and_borrowed() {
        for s in ["plain ascii", "naïve café", "日本語", "emoji 🚀", "a\tb"] {
            assert!(matches!(line(s), Cow::Borrowed(_)), "{s}");
            assert!(matches!(line_bytes(s.as_bytes()), Cow::Borrowed(_)), "{s}");
        }
        assert_eq!(field("a\tb"), "a\\tb");
    }

    #[test]
    fn invalid_utf8_keeps_bytes_but_never_c1() {
        assert_eq!(line_bytes(b"a\xffb").as_ref(), b"a\xffb");
        assert_eq!(line_bytes(b"a\x9bb").as_ref(), b"a\\x9bb");
        assert_eq!(line_bytes(b"\xe2\x80\xae").as_ref(), b"\\u{202e}");
    }

    #[test]
    fn clipping_says_how_much_was_cut() {
        assert_eq!(field_clipped("abc", 5), "abc");
        let long = "x".repeat(10_000);
        let c = field_clipped(&long, 100);
        assert!(c.starts_with(&"x".repeat(100)) && c.ends_with("…(+9900 bytes)"), "{c}");
        assert_eq!(field_clipped("a\nbcdef", 2), "a\\n…(+5 bytes)");
    }

    proptest::proptest! {
        /// Whatever goes in, nothing unsafe comes out.
        #[test]
        fn output_is_always_safe(s in "\\PC{0,20}|[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\\u{200b}-\\u{202e}a ]{0,20}") {
            proptest::prop_assert!(!field(&s).chars().any(is_unsafe_char));
            proptest::prop_assert!(!line(&s).chars().any(|c| is_unsafe_char(c) && c != '\t'));
            let b = line_bytes(s.as_bytes());
            let as_text = String::from_utf8_lossy(&b);
            proptest::prop_assert!(!as_text.chars().any(|c| is_unsafe_char(c) && c != '\t'));
        }
    }
}
