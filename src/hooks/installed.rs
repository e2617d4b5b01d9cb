//! Reading an installed hub unit back: which home and port it serves, who it runs as and
//! what `PATH` it was given, so a package upgrade can re-render it for the new binary
//! without asking anyone (a maintainer script has no one to ask).
//!
//! The unit file is the only record of how the operator set the hub up: the home and port
//! are in its argv (`serve --home H --port P`, as [`crate::hub_unit`] writes it), the account
//! in `User=`/`UserName`, and any `PARACHUTE_EXTRA_PATH` entries at the front of `PATH`.
//! Units written by the upstream TypeScript hub (`<bun> <cli.ts> serve`, with
//! `PARACHUTE_HOME` and `PORT` in the environment) are read too, so an upgrade moves such a
//! box onto this binary's unit (upstream W4/W33: its units were never refreshed).
//!
//! systemd unit text is parsed with systemd's own word rules for `ExecStart=` and
//! `Environment=` (double or single quotes, C escapes, `%%`), enough to read back every unit
//! the renderer writes and the upstream ones; a `%` specifier other than `%%` cannot be
//! expanded here and is reported instead of guessed. launchd plists are parsed with the
//! backend crate's parser.

use std::path::{Path, PathBuf};

use parachute_manager::{Scope, UnitSpec};

use crate::model::home::Home;

/// What an installed hub unit says about the hub it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledHub {
    /// The full argv of the unit's main command.
    pub argv: Vec<String>,
    /// Its environment, in file order (later assignments of a name win, as in systemd).
    pub env: Vec<(String, String)>,
    /// `User=` (systemd) or `UserName` (launchd), when set.
    pub run_as_user: Option<String>,
}

/// Why an installed unit could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the installed hub unit {}: {why}", path.display())]
pub struct ParseError {
    /// The unit file.
    pub path: PathBuf,
    /// What is wrong, naming the line or key.
    pub why: String,
}

impl InstalledHub {
    /// Parses unit bytes as written for the backend `kind` (`launchd`, else systemd text).
    pub fn parse(kind: &str, path: &Path, bytes: &[u8]) -> Result<InstalledHub, ParseError> {
        let r = if kind == "launchd" { parse_plist(bytes) } else { parse_systemd(bytes) };
        r.map_err(|why| ParseError { path: path.to_path_buf(), why })
    }

    /// A variable of the unit's environment.
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The home the unit serves: `--home H` in argv, else `PARACHUTE_HOME` in its environment.
    pub fn home(&self) -> Result<Home, String> {
        let raw =
            flag_value(&self.argv, "--home").or_else(|| self.env_var("PARACHUTE_HOME").map(str::to_owned));
        let raw = raw.ok_or_else(|| {
            "its command has no --home and its environment no PARACHUTE_HOME, so the home it serves is unknown"
                .to_owned()
        })?;
        Home::new(&raw).map_err(|e| format!("its home {raw:?} cannot be used: {e}"))
    }

    /// The port the unit serves: `--port P` in argv, else `PORT`, else the default 1939.
    pub fn port(&self) -> Result<u16, String> {
        match flag_value(&self.argv, "--port").or_else(|| self.env_var("PORT").map(str::to_owned)) {
            None => Ok(crate::model::names::HUB_PORT),
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("its port {p:?} is not a port number (1-65535)")),
            },
        }
    }

    /// The user home its `PATH` was built for, and the operator's extra `PATH` entries (those
    /// that [`crate::hub_unit::hub_path`] would not add by itself), in their order.
    pub fn path_parts(&self) -> (Option<PathBuf>, Option<String>) {
        let Some(path) = self.env_var("PATH") else { return (None, None) };
        let entries: Vec<&str> = path.split(':').filter(|s| !s.is_empty()).collect();
        // The home is the X with both X/.bun/bin and X/.local/bin (hub_path adds both), so an
        // extra entry that happens to end in .bun/bin is not taken for it.
        let bun: Vec<&str> = entries.iter().filter_map(|e| e.strip_suffix("/.bun/bin")).collect();
        let local: Vec<&str> = entries.iter().filter_map(|e| e.strip_suffix("/.local/bin")).collect();
        let user_home = bun
            .iter()
            .find(|h| local.contains(h))
            .or(bun.first())
            .or(local.first())
            .filter(|h| h.starts_with('/'))
            .map(PathBuf::from);
        let standard = crate::hub_unit::hub_path(user_home.as_deref(), None);
        let standard: std::collections::HashSet<&str> = standard.split(':').collect();
        let extra: Vec<&str> = entries.into_iter().filter(|e| !standard.contains(e)).collect();
        (user_home, (!extra.is_empty()).then(|| extra.join(":")))
    }

    /// The hub spec this binary would install in place of this unit: same home, port,
    /// account and extra `PATH` entries, running `exec`. `fallback_user_home` is used for
    /// `PATH` when the unit's own `PATH` does not say whose home it was built for.
    pub fn respec(
        &self,
        exec: &Path,
        scope: Scope,
        fallback_user_home: Option<&Path>,
    ) -> Result<UnitSpec, String> {
        let home = self.home()?;
        let port = self.port()?;
        let (user_home, extra) = self.path_parts();
        let user_home = user_home.as_deref().or(fallback_user_home);
        let run_as = match scope {
            Scope::System => self.run_as_user.as_deref(),
            Scope::User => None,
        };
        Ok(crate::hub_unit::hub_unit_spec(&home, port, exec, user_home, extra.as_deref(), run_as))
    }
}

/// The value after `flag` (`--home H`) or in `--home=H`, the last one winning as in clap.
fn flag_value(argv: &[String], flag: &str) -> Option<String> {
    let mut found = None;
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        if a == flag {
            found = it.next().cloned();
        } else if let Some(v) = a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            found = Some(v.to_owned());
        }
    }
    found
}

fn parse_plist(bytes: &[u8]) -> Result<InstalledHub, String> {
    let v = parachute_launchd::parse_plist(bytes).map_err(|e| format!("it is not a property list ({e})"))?;
    let dict = v.as_dictionary().ok_or("it is not a dictionary")?;
    let argv: Vec<String> = dict
        .get("ProgramArguments")
        .and_then(|a| a.as_array())
        .ok_or("it has no ProgramArguments array")?
        .iter()
        .map(|s| {
            s.as_string().map(str::to_owned).ok_or("ProgramArguments holds a value that is not a string")
        })
        .collect::<Result<_, _>>()?;
    if argv.is_empty() {
        return Err("its ProgramArguments is empty".into());
    }
    let mut env = Vec::new();
    if let Some(e) = dict.get("EnvironmentVariables").and_then(|e| e.as_dictionary()) {
        for (k, v) in e {
            let v = v.as_string().ok_or_else(|| format!("EnvironmentVariables.{k} is not a string"))?;
            env.push((k.clone(), v.to_owned()));
        }
    }
    let run_as_user = dict.get("UserName").and_then(|u| u.as_string()).map(str::to_owned);
    Ok(InstalledHub { argv, env, run_as_user })
}

/// Logical lines of a unit file: continuations joined, comments and blanks dropped.
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

fn parse_systemd(bytes: &[u8]) -> Result<InstalledHub, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("it is not UTF-8 text ({e})"))?;
    let mut section = String::new();
    let mut exec: Option<(usize, String)> = None;
    let mut env: Vec<(String, String)> = Vec::new();
    let mut user = None;
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
        match key.trim() {
            // An empty assignment resets the list (systemd's rule for list settings).
            "ExecStart" if value.is_empty() => exec = None,
            "ExecStart" => exec = Some((n, value.to_owned())),
            "Environment" if value.is_empty() => env.clear(),
            "Environment" => {
                for word in words(value).map_err(|e| format!("line {n} (Environment=): {e}"))? {
                    let (k, v) = word
                        .split_once('=')
                        .ok_or_else(|| format!("line {n} (Environment=): {word:?} is not NAME=VALUE"))?;
                    env.retain(|(name, _)| name != k);
                    env.push((k.to_owned(), v.to_owned()));
                }
            }
            "User" => user = Some(unescape_specifiers(value).map_err(|e| format!("line {n} (User=): {e}"))?),
            _ => {}
        }
    }
    let (n, exec) = exec.ok_or("it has no ExecStart= in [Service]")?;
    let cmd = exec.trim_start_matches(['@', '-', ':', '+', '!']);
    let argv = words(cmd).map_err(|e| format!("line {n} (ExecStart=): {e}"))?;
    if argv.is_empty() {
        return Err(format!("line {n} (ExecStart=) names no program"));
    }
    if exec.starts_with('@') && argv.len() > 1 {
        // `@` means the second word is argv[0]; the program is the first. Keep the program.
        let mut a = argv;
        a.remove(1);
        return Ok(InstalledHub { argv: a, env, run_as_user: user });
    }
    Ok(InstalledHub { argv, env, run_as_user: user })
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
pub fn words(s: &str) -> Result<Vec<String>, String> {
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
    use proptest::prelude::*;

    fn golden(name: &str) -> Vec<u8> {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("units").join(name)).unwrap()
    }

    #[test]
    fn golden_units_read_back_home_port_user_and_path() {
        let sys =
            InstalledHub::parse("systemd-system", Path::new("/x"), &golden("parachute-hub.system.service"))
                .unwrap();
        assert_eq!(
            sys.argv,
            ["/usr/local/bin/parachute", "serve", "--home", "/home/op/.parachute", "--port", "1939"]
        );
        assert_eq!(sys.run_as_user.as_deref(), Some("op"));
        assert_eq!(sys.home().unwrap().root(), Path::new("/home/op/.parachute"));
        assert_eq!(sys.port().unwrap(), 1939);
        assert_eq!(sys.path_parts(), (Some(PathBuf::from("/home/op")), None));
        // Re-rendering it for the same binary gives the same bytes: no false drift.
        let spec = sys.respec(Path::new("/usr/local/bin/parachute"), Scope::System, None).unwrap();
        let text = parachute_systemd::render_unit(&spec, Scope::System).unwrap();
        assert_eq!(text.as_bytes(), golden("parachute-hub.system.service"));
    }

    #[test]
    fn upstream_units_are_read_from_their_environment() {
        let text = "[Unit]\nDescription=Parachute hub (serve + supervisor)\n[Service]\n\
            Environment=PARACHUTE_BIND_HOST=127.0.0.1\nEnvironment=PARACHUTE_HOME=/home/op/.parachute\n\
            Environment=PORT=2939\n\
            Environment=PATH=/opt/x:/home/op/.bun/bin:/usr/local/bin:/usr/bin:/bin:/home/op/.local/bin\n\
            ExecStart=/home/op/.bun/bin/bun /home/op/hub/src/cli.ts serve\n";
        let u = InstalledHub::parse("systemd-user", Path::new("/u"), text.as_bytes()).unwrap();
        assert_eq!(u.home().unwrap().root(), Path::new("/home/op/.parachute"));
        assert_eq!(u.port().unwrap(), 2939);
        assert_eq!(u.path_parts(), (Some(PathBuf::from("/home/op")), Some("/opt/x".to_owned())));
        let spec = u.respec(Path::new("/usr/bin/parachute"), Scope::User, None).unwrap();
        assert_eq!(
            spec.argv,
            ["/usr/bin/parachute", "serve", "--home", "/home/op/.parachute", "--port", "2939"]
        );
        assert!(spec.env[1].1.starts_with("/opt/x:/home/op/.bun/bin:"), "{:?}", spec.env);
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
    fn broken_units_say_what_is_missing() {
        let e = InstalledHub::parse("systemd-user", Path::new("/u/p.service"), b"[Service]\nType=simple\n")
            .unwrap_err();
        assert!(e.to_string().contains("/u/p.service") && e.to_string().contains("ExecStart"), "{e}");
        let u =
            InstalledHub::parse("systemd-user", Path::new("/u"), b"[Service]\nExecStart=/bin/hub serve\n")
                .unwrap();
        assert!(u.home().unwrap_err().contains("PARACHUTE_HOME"));
        let u = InstalledHub::parse(
            "systemd-user",
            Path::new("/u"),
            b"[Service]\nExecStart=/p serve --home rel\n",
        )
        .unwrap();
        assert!(u.home().unwrap_err().contains("relative"));
        let u =
            InstalledHub::parse("systemd-user", Path::new("/u"), b"[Service]\nExecStart=/p serve --port x\n")
                .unwrap();
        assert!(u.port().unwrap_err().contains("\"x\""));
        assert!(InstalledHub::parse("launchd", Path::new("/p.plist"), b"not a plist").is_err());
    }

    #[test]
    fn launchd_plists_read_back() {
        let home = Home::new("/Users/op/.parachute").unwrap();
        let spec = crate::hub_unit::hub_unit_spec(
            &home,
            1940,
            Path::new("/opt/homebrew/opt/parachute/bin/parachute"),
            Some(Path::new("/Users/op")),
            Some("/opt/homebrew/bin"),
            Some("op"),
        );
        let bytes = parachute_launchd::render_plist(&spec, Scope::System).unwrap();
        let u = InstalledHub::parse("launchd", Path::new("/p.plist"), &bytes).unwrap();
        assert_eq!(u.respec(Path::new(&spec.argv[0]), Scope::System, None).unwrap(), spec);
    }

    fn arb_text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ -~]{0,12}").unwrap()
    }

    proptest! {
        /// Whatever the renderer writes, the parser reads back to the same spec.
        #[test]
        fn render_then_parse_round_trips(home in "/[a-z%$\"' \\\\;]{1,10}", port in 1u16.., extra in arb_text(), user in "[a-z]{1,8}") {
            let Ok(home) = Home::new(home.trim_end()) else { return Ok(()) };
            let extra = extra.replace(':', "");
            let spec = crate::hub_unit::hub_unit_spec(
                &home, port, Path::new("/usr/bin/parachute"), Some(Path::new("/home/op")),
                Some(&format!("/opt/{extra}")), Some(&user),
            );
            for scope in [Scope::User, Scope::System] {
                let Ok(text) = parachute_systemd::render_unit(&spec, scope) else { continue };
                let u = InstalledHub::parse("systemd", Path::new("/u"), text.as_bytes()).unwrap();
                let back = u.respec(Path::new("/usr/bin/parachute"), scope, None).unwrap();
                let want = if scope == Scope::User { UnitSpec { run_as_user: None, ..spec.clone() } } else { spec.clone() };
                prop_assert_eq!(back, want);
            }
        }
    }
}
