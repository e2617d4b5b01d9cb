//! Running `launchctl`, with a timeout on every call and a typed error for every exit.
//!
//! All launchd work goes through one [`Launchctl`] value whose program path is a
//! constructor argument: production passes `/bin/launchctl`, this crate's tests pass the
//! stateful double. Exit codes are mapped to [`ExitCode`] once here, so the verb logic
//! matches on meanings ("not loaded", "in progress", "disabled") rather than numbers.
//!
//! `launchctl print` output is explicitly not an API; [`PrintInfo::parse`] reads only
//! the few top-level `key = value` lines it needs and ignores everything else.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Where launchctl lives on every macOS since 10.10.
pub const PRODUCTION_LAUNCHCTL: &str = "/bin/launchctl";

/// A launchctl runner: program path, per-call timeout and extra environment.
#[derive(Debug, Clone)]
pub struct Launchctl {
    program: PathBuf,
    timeout: Duration,
    env: Vec<(OsString, OsString)>,
}

/// What a successful call printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// launchctl's exit codes, named by what they mean (anchors §4.2; `launchctl error <n>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// 1 (EPERM): not permitted (a system-domain verb without root).
    NotPermitted,
    /// 3 (ESRCH): the target is not loaded (`Boot-out failed: 3: No such process`).
    NoSuchProcess,
    /// 5 (EIO): catch-all (label still loaded, bootout in flight, bad plist, …).
    Io,
    /// 36 (EINPROGRESS): a bootout is still in progress.
    InProgress,
    /// 37 (EALREADY): already loaded / an operation is already in progress.
    Already,
    /// 64 (EX_USAGE): bad arguments, a caller bug.
    Usage,
    /// 112: the domain does not exist (e.g. `gui/<uid>` with nobody logged in).
    DomainNotFound,
    /// 113: `Could not find service "X" in domain for …`.
    ServiceNotFound,
    /// 119: `Service is disabled` (a persisted `disable` override).
    Disabled,
    /// 122: the plist has bad ownership or permissions.
    BadOwnership,
    /// 125: `Domain does not support specified action` (a `gui/<uid>` verb with no GUI
    /// login: an SSH session, a headless Mac).
    DomainUnsupported,
    /// Any other code.
    Other(i32),
}

impl ExitCode {
    /// Maps a raw exit status.
    pub(crate) fn from_code(code: i32) -> ExitCode {
        match code {
            1 => ExitCode::NotPermitted,
            3 => ExitCode::NoSuchProcess,
            5 => ExitCode::Io,
            36 => ExitCode::InProgress,
            37 => ExitCode::Already,
            64 => ExitCode::Usage,
            112 => ExitCode::DomainNotFound,
            113 => ExitCode::ServiceNotFound,
            119 => ExitCode::Disabled,
            122 => ExitCode::BadOwnership,
            125 => ExitCode::DomainUnsupported,
            n => ExitCode::Other(n),
        }
    }

    /// The raw exit status.
    pub fn code(self) -> i32 {
        match self {
            ExitCode::NotPermitted => 1,
            ExitCode::NoSuchProcess => 3,
            ExitCode::Io => 5,
            ExitCode::InProgress => 36,
            ExitCode::Already => 37,
            ExitCode::Usage => 64,
            ExitCode::DomainNotFound => 112,
            ExitCode::ServiceNotFound => 113,
            ExitCode::Disabled => 119,
            ExitCode::BadOwnership => 122,
            ExitCode::DomainUnsupported => 125,
            ExitCode::Other(n) => n,
        }
    }

    /// A short human meaning.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitCode::NotPermitted => "operation not permitted",
            ExitCode::NoSuchProcess => "not loaded",
            ExitCode::Io => "input/output error",
            ExitCode::InProgress => "operation in progress",
            ExitCode::Already => "already loaded or in progress",
            ExitCode::Usage => "usage error",
            ExitCode::DomainNotFound => "domain not found",
            ExitCode::ServiceNotFound => "service not found in domain",
            ExitCode::Disabled => "service is disabled",
            ExitCode::BadOwnership => "bad ownership or permissions",
            ExitCode::DomainUnsupported => "domain does not support the action",
            ExitCode::Other(_) => "unrecognised error",
        }
    }
}

/// A launchctl call that failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchctlError {
    /// launchctl ran and exited non-zero.
    #[error("`{command}` exited with {} ({}){}", code.code(), code.meaning(), detail(stderr, stdout))]
    Exit {
        /// The command line, for messages.
        command: String,
        /// The mapped exit code.
        code: ExitCode,
        /// What it printed on stdout.
        stdout: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// launchctl was killed by a signal.
    #[error("`{command}` was killed by signal {signal}")]
    Signal {
        /// The command line.
        command: String,
        /// The signal number.
        signal: i32,
    },
    /// launchctl did not finish within the per-call timeout (it was killed).
    #[error("`{command}` did not finish within {timeout:?} and was killed; launchd may be busy, try again")]
    Timeout {
        /// The command line.
        command: String,
        /// The limit that was exceeded.
        timeout: Duration,
    },
    /// launchctl could not be started at all.
    #[error("could not run {}: {source}", program.display())]
    Spawn {
        /// The program that was tried.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn detail(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() { stdout.trim() } else { stderr.trim() };
    if text.is_empty() { String::new() } else { format!(": {}", text.replace('\n', " / ")) }
}

impl LaunchctlError {
    /// The exit code, when launchctl ran and exited non-zero.
    pub fn code(&self) -> Option<ExitCode> {
        match self {
            LaunchctlError::Exit { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl Launchctl {
    /// A runner for the launchctl at `program` (production: [`PRODUCTION_LAUNCHCTL`]), with
    /// a 15 s per-call timeout.
    pub fn new(program: impl Into<PathBuf>) -> Launchctl {
        Launchctl { program: program.into(), timeout: Duration::from_secs(15), env: Vec::new() }
    }

    /// The real `/bin/launchctl`.
    pub fn production() -> Launchctl {
        Launchctl::new(PRODUCTION_LAUNCHCTL)
    }

    /// Sets the per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Launchctl {
        self.timeout = timeout;
        self
    }

    /// Adds an environment variable for every call (the double's state directory).
    pub fn with_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Launchctl {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The program this runner starts.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Runs `launchctl <args>`; a non-zero exit is an error carrying the mapped code.
    pub async fn run(&self, args: &[&str]) -> Result<Output, LaunchctlError> {
        let command = format!("launchctl {}", args.join(" "));
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child =
            cmd.spawn().map_err(|source| LaunchctlError::Spawn { program: self.program.clone(), source })?;
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(result) => {
                result.map_err(|source| LaunchctlError::Spawn { program: self.program.clone(), source })?
            }
            Err(_) => return Err(LaunchctlError::Timeout { command, timeout: self.timeout }),
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        tracing::debug!(%command, status = ?out.status, "launchctl");
        match out.status.code() {
            Some(0) => Ok(Output { stdout, stderr }),
            Some(code) => {
                Err(LaunchctlError::Exit { command, code: ExitCode::from_code(code), stdout, stderr })
            }
            None => {
                use std::os::unix::process::ExitStatusExt;
                Err(LaunchctlError::Signal { command, signal: out.status.signal().unwrap_or(0) })
            }
        }
    }
}

/// The few facts read from `launchctl print <domain>/<label>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrintInfo {
    /// `path = …`: the plist the job was loaded from.
    pub path: Option<String>,
    /// `state = …` (`running`, `not running`, `spawn scheduled`, …).
    pub state: Option<String>,
    /// `pid = …`, present while running.
    pub pid: Option<u32>,
    /// `runs = …`: how many times launchd spawned it.
    pub runs: Option<u32>,
    /// `last exit code = …`, when it has exited before.
    pub last_exit_code: Option<i32>,
    /// `program = …`.
    pub program: Option<String>,
    /// The lines of the `arguments = { … }` block.
    pub arguments: Option<Vec<String>>,
}

impl PrintInfo {
    /// Whether launchd reports the job running with a pid.
    pub fn is_running(&self) -> bool {
        self.state.as_deref() == Some("running") && self.pid.is_some()
    }

    /// Parses `print` output defensively: unknown lines and blocks are skipped, values
    /// that do not parse are left `None`.
    pub fn parse(text: &str) -> PrintInfo {
        let mut info = PrintInfo::default();
        let mut depth = 0usize;
        let mut in_arguments = false;
        let mut arguments = Vec::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if in_arguments {
                // The block closes with a brace at one tab; anything else is an argument,
                // which keeps its own spaces (even an argument that is itself "}").
                if line.trim_end() == "\t}" || line.trim_end() == "}" {
                    depth -= 1;
                    in_arguments = false;
                    info.arguments = Some(std::mem::take(&mut arguments));
                } else {
                    arguments.push(line.trim_start_matches('\t').to_owned());
                }
                continue;
            }
            if trimmed == "}" {
                depth = depth.saturating_sub(1);
                continue;
            }
            if let Some(name) = trimmed.strip_suffix(" = {").or_else(|| trimmed.strip_suffix(" => {")) {
                depth += 1;
                if depth == 2 && name == "arguments" {
                    in_arguments = true;
                }
                continue;
            }
            if depth != 1 {
                continue;
            }
            let Some((key, value)) = trimmed.split_once(" = ") else { continue };
            let value = value.trim();
            match key {
                "path" => info.path = Some(value.to_owned()),
                "state" => info.state = Some(value.to_owned()),
                "program" => info.program = Some(value.to_owned()),
                "pid" => info.pid = value.parse().ok(),
                "runs" => info.runs = value.parse().ok(),
                "last exit code" => info.last_exit_code = value.parse().ok(),
                _ => {}
            }
        }
        info
    }
}

/// Parses `launchctl print-disabled <domain>`: label → disabled. Accepts both the modern
/// `=> disabled`/`=> enabled` and the older `=> true`/`=> false` spellings.
pub fn parse_print_disabled(text: &str) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.trim().split_once("=>") else { continue };
        let name = name.trim().trim_matches('"');
        let disabled = match value.trim() {
            "disabled" | "true" => true,
            "enabled" | "false" => false,
            _ => continue,
        };
        if !name.is_empty() {
            out.insert(name.to_owned(), disabled);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shape of real macOS 14 output (abridged), with a nested block that must be skipped.
    const PRINT: &str = "gui/501/computer.parachute.hub = {
\tactive count = 1
\tpath = /Users/op/Library/LaunchAgents/computer.parachute.hub.plist
\ttype = LaunchAgent
\tstate = running

\tprogram = /opt/bun
\targuments = {
\t\t/opt/bun
\t\t  two spaces
\t\t}
\t\tserve
\t}

\tenvironment = {
\t\tPORT => 1939
\t\tstate = bogus
\t}

\truns = 3
\tpid = 4242
\tlast exit code = 78: EX_CONFIG
\tspawn type = daemon (3)
}
";

    #[test]
    fn print_is_parsed_defensively() {
        let info = PrintInfo::parse(PRINT);
        assert_eq!(info.state.as_deref(), Some("running"));
        assert_eq!(info.pid, Some(4242));
        assert_eq!(info.runs, Some(3));
        assert_eq!(info.path.as_deref(), Some("/Users/op/Library/LaunchAgents/computer.parachute.hub.plist"));
        assert_eq!(info.arguments.unwrap(), vec!["/opt/bun", "  two spaces", "}", "serve"]);
        // "78: EX_CONFIG" is not a plain number: left unknown rather than guessed.
        assert_eq!(info.last_exit_code, None);
        assert!(PrintInfo::parse("garbage\n= {\n}}}\n").state.is_none());
        let exited = PrintInfo::parse("x = {\n\tstate = not running\n\tlast exit code = 1\n}\n");
        assert_eq!(exited.last_exit_code, Some(1));
        assert!(!exited.is_running());
    }

    #[test]
    fn print_disabled_both_spellings() {
        let t = "disabled services = {\n\t\"a.b\" => disabled\n\t\"c\" => enabled\n\t\"d\" => true\n\t\"e\" => false\n}\n";
        let m = parse_print_disabled(t);
        assert_eq!(m.get("a.b"), Some(&true));
        assert_eq!(m.get("c"), Some(&false));
        assert_eq!(m.get("d"), Some(&true));
        assert_eq!(m.get("e"), Some(&false));
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn exit_codes_round_trip() {
        for n in [1, 3, 5, 36, 37, 64, 112, 113, 119, 122, 150] {
            assert_eq!(ExitCode::from_code(n).code(), n);
        }
        assert_eq!(ExitCode::from_code(119), ExitCode::Disabled);
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error_and_slow_one_times_out() {
        let err = Launchctl::new("/nonexistent/launchctl").run(&["print", "system"]).await.unwrap_err();
        assert!(matches!(err, LaunchctlError::Spawn { .. }), "{err}");
        let slow = Launchctl::new("/bin/sleep").with_timeout(Duration::from_millis(200));
        let err = slow.run(&["30"]).await.unwrap_err();
        assert!(matches!(err, LaunchctlError::Timeout { .. }), "{err}");
        let failing = Launchctl::new("/bin/sh");
        let err =
            failing.run(&["-c", "echo 'Boot-out failed: 3: No such process' >&2; exit 3"]).await.unwrap_err();
        assert_eq!(err.code(), Some(ExitCode::NoSuchProcess));
        assert!(err.to_string().contains("No such process"), "{err}");
    }
}
