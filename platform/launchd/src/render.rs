//! Rendering a [`UnitSpec`] as a launchd property list, and nothing else (pure).
//!
//! The plist is built as a `plist::Value` and serialised by the `plist` crate, so XML
//! escaping is the serialiser's job, never a string template's (upstream's template broke
//! on `&`/`<` and carried control characters straight into an unparsable file).
//!
//! What the renderer refuses, and why:
//! - every C0 control character (including TAB, LF and CR) and DEL, plus U+FFFE/U+FFFF.
//!   XML 1.0 cannot carry most of them at all; CR would be read back as LF by every XML
//!   parser (line-end normalisation); LF and TAB survive a plist, but the shared
//!   [`UnitSpec`] contract rejects them on every backend (systemd cannot carry them in a
//!   unit file), so a spec is either valid everywhere or nowhere, and `launchctl print`
//!   (which lists one argument per line) stays parseable.
//! - a relative `argv[0]`, log path or working directory: launchd does no `PATH` lookup
//!   and resolves nothing relative to anything useful.
//! - environment names that are not `[A-Za-z_][A-Za-z0-9_]*`, and duplicate names (a
//!   dictionary would silently keep only one).
//!
//! `description` has no plist key and is not rendered; `run_as_user` becomes `UserName`
//! only for [`Scope::System`] (launchd rejects `UserName` in a LaunchAgent).

use parachute_manager::{Error, ErrorKind, InstalledUnit, Scope, UnitSpec};
use plist::{Dictionary, Value, XmlWriteOptions};
use std::path::Path;

/// The environment variable that carries a spec's `CrashLoop` to the program as
/// `<burst>/<interval_sec>`: launchd restarts a `KeepAlive` job without limit, so the hub
/// counts its own recent starts and, past the budget, exits 0, which `KeepAlive = {
/// SuccessfulExit = false }` does not restart (`parachute::boot_budget`).
pub const BOOT_BUDGET_ENV: &str = "PARACHUTE_BOOT_BUDGET";

/// The launchd label for a spec (`computer.parachute.<id>`).
fn label_of(spec: &UnitSpec) -> String {
    spec.id.launchd_label()
}

/// Renders `spec` as the bytes of a LaunchAgent ([`Scope::User`]) or LaunchDaemon
/// ([`Scope::System`]) plist: XML, tab-indented, ending in a newline.
///
/// Keys, in order: `Label`, `ProgramArguments` (argv, then `log_file_args`), `EnvironmentVariables` (only when the
/// environment is non-empty; with a `crash_loop`, plus [`BOOT_BUDGET_ENV`]), `WorkingDirectory`
/// (when set), `RunAtLoad` (true), `KeepAlive` (true, or `{ SuccessfulExit = false }` with a
/// `crash_loop`), `ThrottleInterval` (from `crash_loop.throttle_sec`), `StandardOutPath` and
/// `StandardErrorPath` (both the log path), and `UserName` (daemons with a `run_as_user`).
pub fn render_plist(spec: &UnitSpec, scope: Scope) -> Result<Vec<u8>, Error> {
    validate(spec)?;
    let mut dict = Dictionary::new();
    dict.insert("Label".into(), Value::String(label_of(spec)));
    dict.insert(
        "ProgramArguments".into(),
        // launchd never rotates StandardOutPath: a program that can write and rotate its
        // log itself is told to, and launchd's file (the same path) only catches what it
        // writes before that.
        Value::Array(spec.argv.iter().chain(&spec.log_file_args).cloned().map(Value::String).collect()),
    );
    let mut env = Dictionary::new();
    for (k, v) in &spec.env {
        env.insert(k.clone(), Value::String(v.clone()));
    }
    // launchd has no start limit: the program keeps its own (see `BOOT_BUDGET_ENV`).
    if let Some(crash) = spec.crash_loop
        && !env.contains_key(BOOT_BUDGET_ENV)
    {
        env.insert(BOOT_BUDGET_ENV.into(), Value::String(format!("{}/{}", crash.burst, crash.interval_sec)));
    }
    if !env.is_empty() {
        dict.insert("EnvironmentVariables".into(), Value::Dictionary(env));
    }
    if let Some(dir) = &spec.working_dir {
        dict.insert("WorkingDirectory".into(), Value::String(utf8(spec, "working_dir", dir)?.to_owned()));
    }
    dict.insert("RunAtLoad".into(), Value::Boolean(true));
    if spec.crash_loop.is_some() {
        // Restarted after a failure only: a clean exit (the program's own crash-loop
        // ceiling, or a requested stop) stays down.
        let mut keep = Dictionary::new();
        keep.insert("SuccessfulExit".into(), Value::Boolean(false));
        dict.insert("KeepAlive".into(), Value::Dictionary(keep));
    } else {
        dict.insert("KeepAlive".into(), Value::Boolean(true));
    }
    if let Some(crash) = spec.crash_loop {
        dict.insert("ThrottleInterval".into(), Value::Integer(i64::from(crash.throttle_sec).into()));
    }
    let log = utf8(spec, "log_path", &spec.log_path)?.to_owned();
    dict.insert("StandardOutPath".into(), Value::String(log.clone()));
    dict.insert("StandardErrorPath".into(), Value::String(log));
    if scope == Scope::System
        && let Some(user) = &spec.run_as_user
    {
        dict.insert("UserName".into(), Value::String(user.clone()));
    }
    let mut out = Vec::new();
    Value::Dictionary(dict)
        .to_writer_xml_with_options(&mut out, &XmlWriteOptions::default())
        .map_err(|e| invalid(spec, format!("the plist serialiser failed ({e})")))?;
    // The serialiser stops at `</plist>`; a text file ends with a newline.
    out.push(b'\n');
    Ok(out)
}

/// Parses plist bytes (XML or binary) into a value, for drift checks.
pub fn parse_plist(bytes: &[u8]) -> Result<Value, plist::Error> {
    Value::from_reader(std::io::Cursor::new(bytes))
}

/// Reads an installed plist back (the inverse of [`render_plist`]): `ProgramArguments`,
/// `EnvironmentVariables`, `WorkingDirectory`, `UserName` and `StandardOutPath`.
pub fn read_plist(path: &Path, bytes: &[u8]) -> Result<InstalledUnit, Error> {
    read_dict(bytes).map(|u| InstalledUnit { path: path.to_path_buf(), bytes: bytes.to_vec(), ..u }).map_err(
        |why| {
            Error::new(
                ErrorKind::Unreadable,
                format!("cannot read the installed plist {} back: {why}", path.display()),
            )
        },
    )
}

fn read_dict(bytes: &[u8]) -> Result<InstalledUnit, String> {
    let v = parse_plist(bytes).map_err(|e| format!("it is not a property list ({e})"))?;
    let dict = v.as_dictionary().ok_or("it is not a dictionary")?;
    let text = |key: &str| -> Result<Option<String>, String> {
        match dict.get(key) {
            None => Ok(None),
            Some(v) => {
                v.as_string().map(|s| Some(s.to_owned())).ok_or_else(|| format!("{key} is not a string"))
            }
        }
    };
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
    if let Some(e) = dict.get("EnvironmentVariables") {
        let e = e.as_dictionary().ok_or("EnvironmentVariables is not a dictionary")?;
        for (k, v) in e {
            let v = v.as_string().ok_or_else(|| format!("EnvironmentVariables.{k} is not a string"))?;
            env.push((k.clone(), v.to_owned()));
        }
    }
    Ok(InstalledUnit {
        argv,
        env,
        working_dir: text("WorkingDirectory")?.map(Into::into),
        run_as_user: text("UserName")?,
        log_path: text("StandardOutPath")?.map(Into::into),
        ..InstalledUnit::default()
    })
}

fn validate(spec: &UnitSpec) -> Result<(), Error> {
    let Some(argv0) = spec.argv.first() else {
        return Err(invalid(spec, "argv is empty; give the absolute path of the program to run".into()));
    };
    for (i, arg) in spec.argv.iter().enumerate() {
        check_text(spec, &format!("argv[{i}]"), arg)?;
    }
    for (i, arg) in spec.log_file_args.iter().enumerate() {
        check_text(spec, &format!("log_file_args[{i}]"), arg)?;
    }
    if !argv0.starts_with('/') {
        return Err(invalid(
            spec,
            format!("argv[0] {argv0:?} is not an absolute path; launchd does no PATH lookup"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (k, v) in &spec.env {
        let valid_name = k.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return Err(invalid(
                spec,
                format!("environment name {k:?} is not a valid name (use [A-Za-z_][A-Za-z0-9_]*)"),
            ));
        }
        if !seen.insert(k.as_str()) {
            return Err(invalid(spec, format!("environment name {k:?} is given twice")));
        }
        check_text(spec, &format!("env[{k}]"), v)?;
    }
    check_path(spec, "log_path", &spec.log_path)?;
    if let Some(dir) = &spec.working_dir {
        check_path(spec, "working_dir", dir)?;
    }
    if let Some(user) = &spec.run_as_user {
        if user.is_empty() {
            return Err(invalid(spec, "run_as_user is empty; omit it or name an account".into()));
        }
        check_text(spec, "run_as_user", user)?;
        if !valid_user(user) {
            return Err(invalid(
                spec,
                format!(
                    "run_as_user {user:?} is not a valid user name; use letters, digits, '_', '-', '.' \
                     (not starting with a digit or '-'), or a numeric uid"
                ),
            ));
        }
    }
    Ok(())
}

/// The same account-name rule the systemd backend applies, so a spec is valid on both.
fn valid_user(u: &str) -> bool {
    let numeric = u.len() <= 10 && u.bytes().all(|c| c.is_ascii_digit());
    let mut b = u.bytes();
    let named = u.len() <= 32
        && matches!(b.next(), Some(c) if c == b'_' || c.is_ascii_alphabetic())
        && b.all(|c| c == b'_' || c == b'-' || c == b'.' || c.is_ascii_alphanumeric());
    numeric || named
}

fn check_path(spec: &UnitSpec, field: &str, path: &Path) -> Result<(), Error> {
    let text = utf8(spec, field, path)?;
    check_text(spec, field, text)?;
    if !path.is_absolute() {
        return Err(invalid(spec, format!("{field} {text:?} is not an absolute path")));
    }
    Ok(())
}

fn utf8<'a>(spec: &UnitSpec, field: &str, path: &'a Path) -> Result<&'a str, Error> {
    path.to_str().ok_or_else(|| invalid(spec, format!("{field} {path:?} is not valid UTF-8")))
}

/// Rejects the characters described in the module doc, naming the field and position.
fn check_text(spec: &UnitSpec, field: &str, value: &str) -> Result<(), Error> {
    if let Some((at, c)) =
        value.char_indices().find(|&(_, c)| c < ' ' || c == '\u{7f}' || c == '\u{fffe}' || c == '\u{ffff}')
    {
        return Err(invalid(
            spec,
            format!(
                "{field} contains the control character U+{:04X} at byte {at}; plists cannot \
                 carry it faithfully and Parachute rejects newlines and control characters in \
                 every unit, so remove it",
                c as u32
            ),
        ));
    }
    Ok(())
}

fn invalid(spec: &UnitSpec, why: String) -> Error {
    Error::new(
        ErrorKind::InvalidSpec,
        format!("Cannot render the launchd plist for unit {:?}: {why}.", spec.id.as_str()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use parachute_manager::UnitId;
    use std::path::PathBuf;

    fn spec() -> UnitSpec {
        UnitSpec {
            id: UnitId::hub(),
            description: "d".into(),
            argv: vec!["/bin/sleep".into(), "5".into()],
            env: vec![],
            working_dir: None,
            log_path: PathBuf::from("/tmp/hub.log"),
            crash_loop: None,
            run_as_user: Some("op".into()),
            readiness: parachute_manager::Readiness::Exec,
            hardened: false,
            log_to_journal: false,
            log_file_args: Vec::new(),
        }
    }

    #[test]
    fn user_name_only_in_daemons_and_env_only_when_set() {
        let agent = String::from_utf8(render_plist(&spec(), Scope::User).unwrap()).unwrap();
        let daemon = String::from_utf8(render_plist(&spec(), Scope::System).unwrap()).unwrap();
        assert!(!agent.contains("UserName"), "{agent}");
        assert!(daemon.contains("<key>UserName</key>"), "{daemon}");
        assert!(!agent.contains("EnvironmentVariables"));
        assert!(!agent.contains("ThrottleInterval"));
        assert!(agent.ends_with("</plist>\n"));
    }

    #[test]
    fn rejects_what_it_cannot_carry() {
        type Mutation = Box<dyn Fn(&mut UnitSpec)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("argv[0]", Box::new(|s| s.argv[0] = "sleep".into())),
            ("argv is empty", Box::new(|s| s.argv.clear())),
            ("U+000A", Box::new(|s| s.argv[1] = "a\nb".into())),
            ("U+000D", Box::new(|s| s.env = vec![("A".into(), "x\ry".into())])),
            ("U+0000", Box::new(|s| s.env = vec![("A".into(), "\0".into())])),
            ("U+0009", Box::new(|s| s.argv[1] = "\t".into())),
            ("U+FFFF", Box::new(|s| s.argv[1] = "\u{ffff}".into())),
            ("not a valid name", Box::new(|s| s.env = vec![("A=B".into(), "x".into())])),
            ("not a valid name", Box::new(|s| s.env = vec![("1A".into(), "x".into())])),
            ("given twice", Box::new(|s| s.env = vec![("A".into(), "x".into()), ("A".into(), "y".into())])),
            ("log_path", Box::new(|s| s.log_path = PathBuf::from("rel.log"))),
            ("working_dir", Box::new(|s| s.working_dir = Some(PathBuf::from("x")))),
            ("run_as_user is empty", Box::new(|s| s.run_as_user = Some(String::new()))),
            ("not a valid user name", Box::new(|s| s.run_as_user = Some("-op".into()))),
        ];
        for (needle, mutate) in cases {
            let mut s = spec();
            mutate(&mut s);
            let err = render_plist(&s, Scope::System).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidSpec, "{needle}: {err}");
            assert!(err.message.contains(needle), "{needle}: {err}");
            assert!(err.message.contains("\"hub\""), "names the unit: {err}");
        }
    }
}
