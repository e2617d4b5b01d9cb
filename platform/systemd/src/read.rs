//! Reading a `.service` file back: the inverse of [`crate::render`], with the same escaping
//! model, so whatever the renderer writes reads back to the same argv, environment, paths
//! and account (property-tested in this crate's tests).
//!
//! Unit text is parsed with systemd's own rules: logical lines (a trailing `\` continues the
//! line, `#`/`;` start a comment), `ExecStart=` and `Environment=` split into words
//! (`extract_first_word` with quotes and C escapes), and `%%` for a literal `%`. Units
//! written by hand or by the upstream TypeScript hub are read too. A `%` specifier other
//! than `%%` can only be expanded by systemd itself, so it is reported, never guessed.

use std::path::{Path, PathBuf};

use parachute_manager::{Error, ErrorKind, InstalledUnit};

/// Reads the `[Service]` settings Parachute renders from `bytes`, the content of `path`.
pub fn read_unit(path: &Path, bytes: &[u8]) -> Result<InstalledUnit, Error> {
    parse(bytes).map(|u| InstalledUnit { path: path.to_path_buf(), bytes: bytes.to_vec(), ..u }).map_err(
        |why| {
            Error::new(
                ErrorKind::Unreadable,
                format!("cannot read the installed unit {} back: {why}", path.display()),
            )
        },
    )
}

fn parse(bytes: &[u8]) -> Result<InstalledUnit, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("it is not UTF-8 text ({e})"))?;
    let mut section = String::new();
    let mut exec: Option<(usize, String)> = None;
    let mut u = InstalledUnit::default();
    for (n, line) in logical_lines(text) {
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_owned();
            continue;
        }
        if section != "Service" {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let value = value.trim();
        let at = |key: &'static str| move |e: String| format!("line {n} ({key}=): {e}");
        match key.trim() {
            // An empty assignment resets a list setting (systemd's rule).
            "ExecStart" if value.is_empty() => exec = None,
            "ExecStart" => exec = Some((n, value.to_owned())),
            "Environment" if value.is_empty() => u.env.clear(),
            "Environment" => {
                for word in words(value).map_err(at("Environment"))? {
                    let (k, v) = word
                        .split_once('=')
                        .ok_or_else(|| format!("line {n} (Environment=): {word:?} is not NAME=VALUE"))?;
                    u.env.retain(|(name, _)| name != k);
                    u.env.push((k.to_owned(), v.to_owned()));
                }
            }
            "User" if value.is_empty() => u.run_as_user = None,
            "User" => u.run_as_user = Some(unescape_specifiers(value).map_err(at("User"))?),
            "WorkingDirectory" if value.is_empty() => u.working_dir = None,
            "WorkingDirectory" => {
                // `-` only says a missing directory is not an error.
                let dir = unescape_specifiers(value.strip_prefix('-').unwrap_or(value))
                    .map_err(at("WorkingDirectory"))?;
                u.working_dir = Some(PathBuf::from(dir));
            }
            "StandardOutput" => {
                u.log_path = match value.strip_prefix("append:") {
                    Some(p) => Some(PathBuf::from(unescape_specifiers(p).map_err(at("StandardOutput"))?)),
                    None => None,
                }
            }
            _ => {}
        }
    }
    let (n, exec) = exec.ok_or("it has no ExecStart= in [Service]")?;
    let prefixes = exec.len() - exec.trim_start_matches(['@', '-', ':', '+', '!']).len();
    let (prefix, cmd) = exec.split_at(prefixes);
    let mut argv = words(cmd).map_err(|e| format!("line {n} (ExecStart=): {e}"))?;
    if argv.is_empty() {
        return Err(format!("line {n} (ExecStart=) names no program"));
    }
    if prefix.contains('@') && argv.len() > 1 {
        // `@`: the second word is argv[0] and the first the program. Keep the program.
        argv.remove(1);
    }
    u.argv = argv;
    Ok(u)
}

/// Logical lines of a unit file: continuations joined, comments and blank lines dropped,
/// each with the number of its first physical line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if cur.is_none() && (line.is_empty() || line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        let (n, mut acc) = cur.take().unwrap_or((i + 1, String::new()));
        match line.strip_suffix('\\') {
            Some(head) => {
                acc.push_str(head);
                acc.push(' ');
                cur = Some((n, acc));
            }
            None => {
                acc.push_str(line);
                out.push((n, acc));
            }
        }
    }
    out.extend(cur);
    out
}

/// `%%` → `%`; any other specifier cannot be expanded outside the manager.
fn unescape_specifiers(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('%') => out.push('%'),
            Some(o) => return Err(format!("it uses the specifier %{o}, which only systemd can expand")),
            None => return Err("it ends in a lone %".into()),
        }
    }
    Ok(out)
}

/// Splits a value into words with systemd's rules (`extract_first_word` with unquoting and
/// C unescaping), then undoes `%%` in each word.
fn words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (quote, c) {
                (_, '\\') => {
                    let e = chars.next().ok_or("it ends in a lone backslash")?;
                    word.push(c_escape(e, &mut chars)?);
                }
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, c) if c.is_whitespace() => break,
                (_, c) => word.push(c),
            }
        }
        if let Some(q) = quote {
            return Err(format!("a {q} quote is not closed"));
        }
        out.push(unescape_specifiers(&word)?);
    }
    Ok(out)
}

fn c_escape(e: char, rest: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, String> {
    let hex = |rest: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize| -> Result<char, String> {
        let digits: String = (0..n).filter_map(|_| rest.next()).collect();
        u32::from_str_radix(&digits, 16)
            .ok()
            .filter(|_| digits.len() == n)
            .and_then(char::from_u32)
            .ok_or_else(|| format!("\\{e}{digits} is not a valid escape"))
    };
    Ok(match e {
        'a' => '\u{7}',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\u{b}',
        's' => ' ',
        '\\' | '"' | '\'' | ' ' => e,
        'x' => hex(rest, 2)?,
        'u' => hex(rest, 4)?,
        'U' => hex(rest, 8)?,
        '0'..='7' => {
            let mut v = e.to_digit(8).unwrap_or(0);
            for _ in 0..2 {
                let d =
                    rest.next().and_then(|c| c.to_digit(8)).ok_or("an octal escape needs three digits")?;
                v = v * 8 + d;
            }
            char::from_u32(v).ok_or("an octal escape is out of range")?
        }
        other => return Err(format!("\\{other} is not an escape systemd knows")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<InstalledUnit, Error> {
        read_unit(Path::new("/u/p.service"), text.as_bytes())
    }

    #[test]
    fn words_follow_systemd_quoting() {
        assert_eq!(
            words(r#""a b" 'c d' e\ f "g\"h" 100%% x\x41"#).unwrap(),
            ["a b", "c d", "e f", "g\"h", "100%", "xA"]
        );
        assert_eq!(words(r#"a"b c"d"#).unwrap(), ["ab cd"]);
        assert!(words(r#""open"#).unwrap_err().contains("not closed"));
        assert!(words("%h/x").unwrap_err().contains("%h"));
        assert!(words(r"a\q").unwrap_err().contains("\\q"));
    }

    #[test]
    fn upstream_units_and_exec_prefixes_read_back() {
        let u = read(
            "[Unit]\nDescription=x\n[Service]\nEnvironment=A=1 \"B=two words\"\nEnvironment=A=3\n\
             ExecStart=-@/bin/prog argv0 --flag \\\n  value\nWorkingDirectory=-/srv/a%%b\n\
             StandardOutput=append:/var/log/x%%.log\n",
        )
        .unwrap();
        assert_eq!(u.argv, ["/bin/prog", "--flag", "value"]);
        assert_eq!(u.env, [("B".to_owned(), "two words".to_owned()), ("A".to_owned(), "3".to_owned())]);
        assert_eq!(u.working_dir, Some(PathBuf::from("/srv/a%b")));
        assert_eq!(u.log_path, Some(PathBuf::from("/var/log/x%.log")));
        assert_eq!(u.path, Path::new("/u/p.service"));
        assert!(u.bytes.starts_with(b"[Unit]"));
    }

    #[test]
    fn broken_units_say_what_is_wrong_and_where() {
        let e = read("[Service]\nType=simple\n").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unreadable);
        assert!(e.message.contains("/u/p.service") && e.message.contains("ExecStart"), "{e}");
        let e = read("[Service]\nExecStart=/bin/x %h\n").unwrap_err();
        assert!(e.message.contains("line 2") && e.message.contains("%h"), "{e}");
        let e = read("[Service]\nExecStart=/bin/x\nUser=%u\n").unwrap_err();
        assert!(e.message.contains("User="), "{e}");
        assert!(read_unit(Path::new("/x"), b"\xff\xfe").unwrap_err().message.contains("UTF-8"));
    }
}
