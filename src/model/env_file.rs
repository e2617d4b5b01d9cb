//! The per-module `.env` file (`<home>/<short>/.env`): a small, documented dotenv dialect.
//!
//! Upstream split each line at the first `=` and stripped one layer of quotes, so
//! `# A=b` and `export A=b` became keys named `# A` and `export A` (W40) and a broken line
//! vanished silently. Here a line is either understood or reported, and every problem in the
//! file is reported at once, each with the file and its 1-based line number.
//!
//! The dialect, exactly:
//!
//! - Lines end with `\n`, `\r\n` or a lone `\r`; a leading UTF-8 byte-order mark is
//!   dropped. Leading and trailing
//!   whitespace of a line is ignored. Blank lines and lines whose first character is `#`
//!   are skipped.
//! - `export ` (followed by spaces or tabs) before the key is allowed and ignored.
//! - `KEY=value`: the key must match `[A-Za-z_][A-Za-z0-9_]*`; spaces or tabs around `=`
//!   are allowed.
//! - Unquoted value: taken literally up to the end of the line or up to a `#` that follows
//!   a space or tab (which starts a comment); trailing whitespace is dropped. `A=#x` is the
//!   value `#x`; `A= #x` is empty.
//! - `'…'`: taken literally; there are no escapes inside single quotes.
//! - `"…"`: `\"` → `"`, `\\` → `\`, `\n` → newline. Any other backslash is kept as written
//!   (`"C:\temp"` stays `C:\temp`).
//! - After a closing quote only whitespace or a `# comment` may follow.
//! - No variable expansion: `$HOME` is the five characters `$HOME`. No multi-line values:
//!   a quote left open at the end of its line is an error.
//! - A NUL anywhere is an error (it cannot be passed in an environment).
//!
//! The reader returns `(key, value)` pairs in file order, duplicates included; consumers
//! apply them in order, so the last one wins. Nothing here writes the file.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// One malformed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, as a sentence fragment.
    pub reason: String,
}

/// Why a `.env` file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    /// The file exists but could not be read.
    #[error("cannot read {}: {source}. Check its permissions.", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is not UTF-8.
    #[error("{} is not valid UTF-8 text (first bad byte on line {line}); save it as UTF-8.", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line of the first invalid byte.
        line: usize,
    },
    /// One or more lines are malformed; nothing from the file was used.
    #[error("{} has malformed lines, so none of it was used: {}. Fix them (format: KEY=value).",
        path.display(), Problems(problems))]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Every malformed line, in order.
        problems: Vec<LineProblem>,
    },
}

struct Problems<'a>(&'a [LineProblem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "line {}: {}", p.line, p.reason)?;
        }
        Ok(())
    }
}

/// Reads `path`. A missing file is `Ok(None)`: a module without a `.env` is normal.
pub fn read(path: &Path) -> Result<Option<Vec<(String, String)>>, EnvFileError> {
    let bytes = match parachute_fsx::read_capped(path, 1 << 20) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(EnvFileError::Read { path: path.to_path_buf(), source }),
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count();
        EnvFileError::NotUtf8 { path: path.to_path_buf(), line }
    })?;
    parse(&text, path).map(Some)
}

/// Parses `.env` text; `path` is only used in the error.
pub fn parse(text: &str, path: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut pairs = Vec::new();
    let mut problems = Vec::new();
    // A UTF-8 byte-order mark (some Windows editors write one) is not part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in lines(text).enumerate() {
        match parse_line(raw) {
            Ok(Some(pair)) => pairs.push(pair),
            Ok(None) => {}
            Err(reason) => problems.push(LineProblem { line: i + 1, reason }),
        }
    }
    if problems.is_empty() {
        Ok(pairs)
    } else {
        Err(EnvFileError::Malformed { path: path.to_path_buf(), problems })
    }
}

/// The lines of `text`, ended by `\n`, `\r\n` or a lone `\r` (old Mac editors): a file
/// with CR endings is many lines, not one key swallowing the rest.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        match t.find(['\n', '\r']) {
            None => {
                rest = None;
                Some(t)
            }
            Some(i) => {
                let skip = if t[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&t[i + skip..]);
                Some(&t[..i])
            }
        }
    })
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn valid_key(k: &str) -> bool {
    let mut cs = k.chars();
    cs.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_line(raw: &str) -> Result<Option<(String, String)>, String> {
    let line = raw.trim_matches(|c: char| c.is_whitespace());
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    if line.contains('\0') {
        return Err("contains a NUL byte".to_owned());
    }
    let line = match line.strip_prefix("export") {
        Some(rest) if rest.starts_with(is_blank) => rest.trim_start_matches(is_blank),
        _ => line,
    };
    let Some((key, value)) = line.split_once('=') else {
        return Err(format!("no '=' in {:?}", clip(line)));
    };
    let key = key.trim_end_matches(is_blank);
    if !valid_key(key) {
        return Err(format!(
            "{:?} is not a valid key (letters, digits and '_', not starting with a digit)",
            clip(key)
        ));
    }
    let after_blank = value.starts_with(is_blank);
    let value = value.trim_start_matches(is_blank);
    let value = match value.chars().next() {
        // `A= # note`: the `#` follows a blank, so it is a comment and the value is empty.
        Some('#') if after_blank => String::new(),
        Some('"') => quoted(&value[1..], '"', key)?,
        Some('\'') => quoted(&value[1..], '\'', key)?,
        _ => unquoted(value).to_owned(),
    };
    Ok(Some((key.to_owned(), value)))
}

/// The value of an unquoted assignment: up to a `#` that follows a blank.
fn unquoted(v: &str) -> &str {
    let end = v
        .char_indices()
        .find(|&(i, c)| c == '#' && i > 0 && v[..i].ends_with(is_blank))
        .map_or(v.len(), |(i, _)| i);
    v[..end].trim_end_matches(is_blank)
}

/// The value inside quotes (`rest` starts after the opening quote).
fn quoted(rest: &str, q: char, key: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == q {
            let tail = rest[i + 1..].trim_start_matches(is_blank);
            if !tail.is_empty() && !tail.starts_with('#') {
                return Err(format!("unexpected text {:?} after the closing quote of {key}", clip(tail)));
            }
            return Ok(out);
        }
        if c == '\\' && q == '"' {
            match chars.next() {
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
            continue;
        }
        out.push(c);
    }
    Err(format!("the {q} quote of {key} is never closed on this line (multi-line values are not supported)"))
}

/// Keeps error messages short when a line is huge.
fn clip(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<(String, String)> {
        parse(text, Path::new("/h/x/.env")).unwrap()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn plain_blank_comment_and_export_lines_w40() {
        let text = "# A=b\n\nFOO=bar\n   # indented comment\nexport BAZ=qux\nexport\tTAB=1\nEMPTY=\n";
        assert_eq!(ok(text), pairs(&[("FOO", "bar"), ("BAZ", "qux"), ("TAB", "1"), ("EMPTY", "")]));
    }

    #[test]
    fn a_key_named_export_is_still_a_key() {
        assert_eq!(ok("export=1\nexporter=2"), pairs(&[("export", "1"), ("exporter", "2")]));
    }

    #[test]
    fn spaces_around_equals_and_crlf() {
        assert_eq!(ok("A = b \r\nB\t=\tc\r\n"), pairs(&[("A", "b"), ("B", "c")]));
    }

    #[test]
    fn quotes_one_level_stripped() {
        let text = "A=\"x y\"\nB='x y'\nC=\"'inner'\"\nD='\"inner\"'\nE=\"\"\nF=it's\nG=\"a\" # c\n";
        assert_eq!(
            ok(text),
            pairs(&[
                ("A", "x y"),
                ("B", "x y"),
                ("C", "'inner'"),
                ("D", "\"inner\""),
                ("E", ""),
                ("F", "it's"),
                ("G", "a")
            ])
        );
    }

    #[test]
    fn double_quote_escapes_and_literal_single_quotes() {
        let text = r#"A="say \"hi\"\\ok\nnext"
B='no \n escapes \'
C="C:\temp\x"
"#;
        assert_eq!(
            ok(text),
            pairs(&[("A", "say \"hi\"\\ok\nnext"), ("B", "no \\n escapes \\"), ("C", "C:\\temp\\x")])
        );
    }

    #[test]
    fn hash_starts_a_comment_only_after_whitespace_when_unquoted() {
        let text =
            "A=x # comment\nB=x#notcomment\nC=#value\nD=\"x # kept\"\nE='y # kept'\nF= # only comment\n";
        assert_eq!(
            ok(text),
            pairs(&[
                ("A", "x"),
                ("B", "x#notcomment"),
                ("C", "#value"),
                ("D", "x # kept"),
                ("E", "y # kept"),
                ("F", "")
            ])
        );
    }

    #[test]
    fn hostile_values_are_literal() {
        let text = "A=$HOME%PATH%<&>\nB=a=b=c\nC=\"${X}\"\n";
        assert_eq!(ok(text), pairs(&[("A", "$HOME%PATH%<&>"), ("B", "a=b=c"), ("C", "${X}")]));
    }

    #[test]
    fn duplicates_are_kept_in_order() {
        assert_eq!(ok("A=1\nA=2\n"), pairs(&[("A", "1"), ("A", "2")]));
    }

    #[test]
    fn every_malformed_line_is_reported_with_its_number() {
        let text =
            "GOOD=1\nno equals here\n1BAD=x\nBAD-KEY=x\nQ=\"open\nS='open\nT=\"x\" trailing\n=novalue\n";
        let err = parse(text, Path::new("/h/vault/.env")).unwrap_err();
        let EnvFileError::Malformed { path, problems } = &err else { panic!("{err}") };
        assert_eq!(path, Path::new("/h/vault/.env"));
        assert_eq!(problems.iter().map(|p| p.line).collect::<Vec<_>>(), vec![2, 3, 4, 5, 6, 7, 8]);
        let msg = err.to_string();
        assert!(
            msg.contains("/h/vault/.env") && msg.contains("line 2: no '='") && msg.contains("line 5:"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }

    proptest::proptest! {
        /// Any value without NUL survives being written double-quoted with the documented
        /// escapes, and any unquoted value without blanks, quotes or `#` is taken verbatim.
        #[test]
        fn double_quoted_values_round_trip(key in "[A-Za-z_][A-Za-z0-9_]{0,20}", value in "[^\\x00\\r]*") {
            let encoded = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let got = parse(&format!("{key}=\"{encoded}\"\n"), Path::new("/e")).unwrap();
            proptest::prop_assert_eq!(got, vec![(key, value)]);
        }

        #[test]
        fn plain_values_are_verbatim(value in "[^\\x00-\\x20\"'#\\x7f\\s]{1,40}") {
            let got = parse(&format!("K={value}"), Path::new("/e")).unwrap();
            proptest::prop_assert_eq!(got, vec![("K".to_owned(), value)]);
        }
    }

    /// `.env` line endings (LF, CRLF, CR-only, mixed) and a byte-order mark all parse to the
    /// same pairs; a CR-only file used to be one key swallowing the rest.
    #[test]
    fn env_files_parse_with_any_line_ending_and_a_bom() {
        let want: Vec<(String, String)> = [("A", "1"), ("B", "two words"), ("C", "3")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (case, text) in [
            ("LF", "A=1\nB=\"two words\"\n# c\nC=3\n"),
            ("CRLF", "A=1\r\nB=\"two words\"\r\n# c\r\nC=3\r\n"),
            ("CR", "A=1\rB=\"two words\"\r# c\rC=3\r"),
            ("mixed", "A=1\rB=\"two words\"\r\n# c\nC=3"),
            ("BOM+LF", "\u{feff}A=1\nB=\"two words\"\n# c\nC=3\n"),
            ("BOM+CR", "\u{feff}A=1\rB=\"two words\"\r\r# c\rC=3"),
        ] {
            let got =
                parse(text, std::path::Path::new("/h/m/.env")).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(got, want, "{case}");
        }
        // Line numbers count CR-only lines too.
        let err = parse("A=1\rB C\rD=4\r", std::path::Path::new("/h/m/.env")).unwrap_err().to_string();
        assert!(err.contains("/h/m/.env") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn nul_is_rejected() {
        assert!(parse("A=x\0y", Path::new("/e")).is_err());
    }

    #[test]
    fn read_missing_is_none_and_non_utf8_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join(".env")).unwrap().is_none());
        let p = dir.path().join("bad.env");
        std::fs::write(&p, b"A=1\nB=\xff\n").unwrap();
        let e = read(&p).unwrap_err();
        assert!(matches!(e, EnvFileError::NotUtf8 { line: 2, .. }), "{e}");
        assert!(e.to_string().contains(&p.display().to_string()));
    }

    #[test]
    fn fixture_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model");
        let got = read(&dir.join("hostile.env")).unwrap().unwrap();
        let get = |k: &str| got.iter().rev().find(|(kk, _)| kk == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PERCENT"), Some("100%done"));
        assert_eq!(get("DOLLAR"), Some("$HOME/${X}"));
        assert_eq!(get("XML"), Some("<a href=\"x\">&amp;</a>"));
        assert_eq!(get("NEWLINE"), Some("line1\nline2"));
        assert_eq!(get("PORT"), Some("1"));
        let e = read(&dir.join("malformed.env")).unwrap_err();
        assert!(matches!(&e, EnvFileError::Malformed { problems, .. } if problems.len() == 3), "{e}");
    }
}
