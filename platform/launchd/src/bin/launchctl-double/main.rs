//! `launchctl-double`: a stateful stand-in for macOS `/bin/launchctl`, for tests on Linux.
//!
//! launchctl cannot run here, so this program models the behaviour the launchd backend
//! relies on, as documented in launchctl(1) and seen in the field (anchors §4): domains
//! `gui/<uid>`, `user/<uid>` and `system`; `bootstrap`, `bootout` (asynchronous: the
//! service stays listed until its process is gone, plus a configurable delay),
//! `enable`/`disable` (an override table that survives bootout and plist deletion),
//! `kickstart [-k] [-p]`, `kill`, `print`, `print-disabled`; and their exit codes and
//! messages (3, 5, 36, 37, 64, 113, 119). Jobs are real processes run by a per-service
//! supervisor (see `job.rs`), so `print` reports real pids and `KeepAlive` really restarts.
//!
//! Choices where launchd's answer varies by version: bootstrapping an already-loaded
//! label exits 37 (EALREADY); a label whose bootout is in flight, or that is still being
//! torn down after it left `print` (the `ghost_ms` window), exits 5 (EIO); `kickstart`
//! during a bootout exits 37. `bootout` returns at once (the most asynchronous launchd
//! allows); while the job is still terminating, `print` keeps showing it `running`, and
//! once its process is gone, `not running` until the delay ends.
//!
//! Not modelled: `UserName` switching (daemons run as the caller), `KeepAlive`
//! dictionary keys other than `SuccessfulExit` (treated as `true`), session types, and
//! plist ownership checks. Every code and output modelled is listed with its source in
//! `platform/launchd/README.md`.
//!
//! State lives in the directory named by `LAUNCHCTL_DOUBLE_STATE`. Hidden verbs drive the
//! simulation from tests: `__fault <verb> <code>` (the next `<verb>` fails with `<code>`),
//! `__config bootout_delay_ms|ghost_ms <n>`, `__login <uid> <LaunchAgents dir>` (load every
//! enabled agent, as a GUI login does), `__logout <uid>`, `__shutdown` (kill everything).

mod job;
mod state;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use plist::Value;

use state::{Fault, Service, State, Store, now_ms};

/// A failed verb: exit code and stderr text.
struct Fail(i32, String);

type Res = Result<String, Fail>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    #[expect(clippy::disallowed_methods, reason = "a test program's entry point reads its own configuration")]
    let dir = std::env::var_os("LAUNCHCTL_DOUBLE_STATE");
    let Some(dir) = dir else {
        eprintln!("launchctl-double: LAUNCHCTL_DOUBLE_STATE is not set");
        return ExitCode::from(70);
    };
    let store = Store::new(PathBuf::from(dir));
    if args.first().map(String::as_str) == Some("__job") {
        return ExitCode::from(job::supervise(&store, args.get(1).map_or("", String::as_str)) as u8);
    }
    if let Err(e) = std::fs::create_dir_all(store.dir()) {
        eprintln!("launchctl-double: cannot create {}: {e}", store.dir().display());
        return ExitCode::from(70);
    }
    match run(&store, &args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(Fail(code, msg)) => {
            if !msg.is_empty() {
                eprintln!("{msg}");
            }
            ExitCode::from(code as u8)
        }
    }
}

const USAGE: &str = "Usage: launchctl <subcommand> ... | help [subcommand]";

fn usage(msg: &str) -> Fail {
    Fail(64, format!("{msg}\n{USAGE}"))
}

fn io_fail(e: std::io::Error) -> Fail {
    Fail(70, format!("launchctl-double: state error: {e}"))
}

fn strerror(code: i32) -> &'static str {
    match code {
        1 => "Operation not permitted",
        2 => "No such file or directory",
        3 => "No such process",
        5 => "Input/output error",
        36 => "Operation now in progress",
        37 => "Operation already in progress",
        113 => "Could not find specified service",
        119 => "Service is disabled",
        _ => "Unknown error",
    }
}

fn run(store: &Store, args: &[String]) -> Res {
    let Some(verb) = args.first() else { return Err(usage("")) };
    let rest: Vec<&str> = args[1..].iter().map(String::as_str).collect();
    // A queued fault replaces the verb's outcome, as a flaky launchd would.
    if !verb.starts_with("__")
        && let Some(code) = store.with(|st| st.take_fault(verb)).map_err(io_fail)?
    {
        let prefix = match verb.as_str() {
            "bootstrap" => "Bootstrap failed",
            "bootout" => "Boot-out failed",
            _ => "Operation failed",
        };
        return Err(Fail(code, format!("{prefix}: {code}: {}", strerror(code))));
    }
    if !verb.starts_with("__")
        && let Some(absent) = absent_domain(store, &rest)?
    {
        return Err(no_domain(verb, &absent));
    }
    match (verb.as_str(), rest.as_slice()) {
        ("bootstrap", [domain, plists @ ..]) if !plists.is_empty() => {
            let domain = parse_domain(domain).ok_or_else(|| usage("Unrecognized target specifier."))?;
            for p in plists {
                bootstrap(store, &domain, Path::new(p))?;
            }
            Ok(String::new())
        }
        ("bootout", [target]) => {
            let (domain, label) =
                parse_service(target).ok_or_else(|| usage("Unrecognized target specifier."))?;
            bootout(store, &domain, &label)
        }
        ("bootout", [domain, plist]) => {
            let domain = parse_domain(domain).ok_or_else(|| usage("Unrecognized target specifier."))?;
            let label = read_job(&domain, Path::new(plist))?.label;
            bootout(store, &domain, &label)
        }
        ("enable" | "disable", [target]) => {
            let (domain, label) =
                parse_service(target).ok_or_else(|| usage("Unrecognized target specifier."))?;
            let disabled = verb == "disable";
            store
                .with(|st| st.overrides.entry(domain).or_default().insert(label, disabled))
                .map_err(io_fail)?;
            Ok(String::new())
        }
        ("kickstart", [flags @ .., target])
            if flags.iter().all(|f| matches!(*f, "-k" | "-p" | "-kp" | "-pk")) =>
        {
            let kill = flags.iter().any(|f| f.contains('k'));
            let print_pid = flags.iter().any(|f| f.contains('p'));
            let (domain, label) =
                parse_service(target).ok_or_else(|| usage("Unrecognized target specifier."))?;
            kickstart(store, &domain, &label, kill, print_pid)
        }
        ("kill", [signal, target]) => {
            let (domain, label) =
                parse_service(target).ok_or_else(|| usage("Unrecognized target specifier."))?;
            let sig = parse_signal(signal).ok_or_else(|| usage(&format!("Unrecognized signal: {signal}")))?;
            let pid = store
                .with(|st| st.services.get(&format!("{domain}/{label}")).map(|s| s.pid))
                .map_err(io_fail)?
                .ok_or_else(|| not_found(&domain, &label))?;
            match pid {
                Some(pid) => {
                    let _ = kill(Pid::from_raw(pid), sig);
                    Ok(String::new())
                }
                None => Err(Fail(3, "Could not kill service: 3: No such process".into())),
            }
        }
        ("print", [target]) => {
            if let Some((domain, label)) = parse_service(target) {
                let st = store.with(|st| st.clone()).map_err(io_fail)?;
                let svc = st
                    .services
                    .get(&format!("{domain}/{label}"))
                    .ok_or_else(|| not_found(&domain, &label))?;
                Ok(print_service(svc))
            } else if let Some(domain) = parse_domain(target) {
                let st = store.with(|st| st.clone()).map_err(io_fail)?;
                let mut out = format!("{domain} = {{\n\tservices = {{\n");
                for s in st.services.values().filter(|s| s.domain == domain) {
                    let pid = s.pid.map_or("-".to_owned(), |p| p.to_string());
                    out.push_str(&format!("\t\t{pid}\t-\t{}\n", s.label));
                }
                out.push_str("\t}\n}\n");
                Ok(out)
            } else {
                Err(usage("Unrecognized target specifier."))
            }
        }
        ("print-disabled", [domain]) => {
            let domain = parse_domain(domain).ok_or_else(|| usage("Unrecognized target specifier."))?;
            let st = store.with(|st| st.clone()).map_err(io_fail)?;
            let mut out = String::from("disabled services = {\n");
            for (label, disabled) in st.overrides.get(&domain).into_iter().flatten() {
                let word = if *disabled { "disabled" } else { "enabled" };
                out.push_str(&format!("\t\"{label}\" => {word}\n"));
            }
            out.push_str("}\n");
            Ok(out)
        }
        ("__fault", [verb, code]) => {
            let code = code.parse().map_err(|_| usage("__fault <verb> <code>"))?;
            store.with(|st| st.faults.push(Fault { verb: (*verb).to_owned(), code })).map_err(io_fail)?;
            Ok(String::new())
        }
        ("__config", [key, value]) => {
            let n: u64 = value.parse().map_err(|_| usage("__config <key> <number>"))?;
            store
                .with(|st| {
                    match *key {
                        "bootout_delay_ms" => st.config.bootout_delay_ms = n,
                        "ghost_ms" => st.config.ghost_ms = n,
                        _ => return Err(usage(&format!("unknown config key {key}"))),
                    }
                    Ok(())
                })
                .map_err(io_fail)??;
            Ok(String::new())
        }
        ("__login", [uid, dir]) => login(store, uid, Path::new(dir)),
        ("__logout", [uid]) => logout(store, &format!("gui/{uid}")),
        ("__headless", [uid]) => {
            store.with(|st| st.absent_domains.push(format!("gui/{uid}"))).map_err(io_fail)?;
            Ok(String::new())
        }
        ("__shutdown", []) => shutdown(store),
        (
            "bootstrap" | "bootout" | "enable" | "disable" | "kickstart" | "kill" | "print"
            | "print-disabled" | "__fault" | "__config" | "__login" | "__logout" | "__headless"
            | "__shutdown",
            _,
        ) => Err(usage(&format!("Bad arguments for {verb}."))),
        _ => Err(usage(&format!("Unrecognized subcommand: {verb}"))),
    }
}

/// The first argument naming a `gui/<uid>` domain (or a service in it) that does not exist.
fn absent_domain(store: &Store, args: &[&str]) -> Result<Option<String>, Fail> {
    let absent = store.with(|st| st.absent_domains.clone()).map_err(io_fail)?;
    Ok(args.iter().find_map(|a| {
        let domain = parse_service(a).map(|(d, _)| d).or_else(|| parse_domain(a))?;
        absent.contains(&domain).then_some(domain)
    }))
}

/// What launchctl answers about a `gui/<uid>` domain that does not exist: `print` exits 112
/// ("Could not find domain for user gui: 501"), changing verbs exit 125 ("Bootstrap failed:
/// 125: Domain does not support specified action"). Sources in README.md.
fn no_domain(verb: &str, domain: &str) -> Fail {
    let uid = domain.trim_start_matches("gui/");
    match verb {
        "print" | "print-disabled" => Fail(112, format!("Could not find domain for user gui: {uid}")),
        "bootstrap" => Fail(125, "Bootstrap failed: 125: Domain does not support specified action".into()),
        "bootout" => Fail(125, "Boot-out failed: 125: Domain does not support specified action".into()),
        _ => Fail(125, format!("Could not {verb} service: 125: Domain does not support specified action")),
    }
}

fn not_found(domain: &str, label: &str) -> Fail {
    let which = match domain.split_once('/') {
        Some(("gui", uid)) => format!("user gui: {uid}"),
        Some(("user", uid)) => format!("user: {uid}"),
        _ => "system".to_owned(),
    };
    Fail(113, format!("Could not find service \"{label}\" in domain for {which}"))
}

/// `system`, `gui/<uid>`, `user/<uid>` (trailing slash allowed).
fn parse_domain(s: &str) -> Option<String> {
    let s = s.strip_suffix('/').unwrap_or(s);
    match s.split_once('/') {
        None if s == "system" => Some("system".into()),
        Some((kind @ ("gui" | "user"), uid))
            if !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some(format!("{kind}/{uid}"))
        }
        _ => None,
    }
}

/// `<domain>/<label>`.
fn parse_service(s: &str) -> Option<(String, String)> {
    let (domain, label) = s.rsplit_once('/')?;
    let domain = parse_domain(domain)?;
    (!label.is_empty()).then(|| (domain, label.to_owned()))
}

fn parse_signal(s: &str) -> Option<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") { name } else { format!("SIG{name}") };
    name.parse().ok()
}

/// A job read from a plist, before it is loaded.
fn read_job(domain: &str, path: &Path) -> Result<Service, Fail> {
    if !path.exists() {
        return Err(Fail(2, format!("Bootstrap failed: 2: {}", strerror(2))));
    }
    let bad = |why: &str| {
        Fail(
            5,
            format!(
                "Bootstrap failed: 5: Input/output error\n{why} ({})\nTry re-running the command as root for richer errors.",
                path.display()
            ),
        )
    };
    let value = Value::from_file(path).map_err(|e| bad(&format!("invalid property list: {e}")))?;
    let dict = value.as_dictionary().ok_or_else(|| bad("the property list is not a dictionary"))?;
    let string = |k: &str| dict.get(k).and_then(Value::as_string).map(str::to_owned);
    let label = string("Label").ok_or_else(|| bad("missing Label"))?;
    let program_args: Vec<String> = match dict.get("ProgramArguments").and_then(Value::as_array) {
        Some(a) => {
            a.iter().map(|v| v.as_string().map(str::to_owned)).collect::<Option<_>>().unwrap_or_default()
        }
        None => string("Program").into_iter().collect(),
    };
    if program_args.is_empty() {
        return Err(bad("missing Program/ProgramArguments"));
    }
    if domain != "system" && dict.contains_key("UserName") {
        return Err(bad("UserName is not supported for non-System services"));
    }
    let env = dict
        .get("EnvironmentVariables")
        .and_then(Value::as_dictionary)
        .map(|d| d.iter().filter_map(|(k, v)| Some((k.clone(), v.as_string()?.to_owned()))).collect())
        .unwrap_or_default();
    let int = |k: &str, default: u64| dict.get(k).and_then(Value::as_unsigned_integer).unwrap_or(default);
    Ok(Service {
        domain: domain.to_owned(),
        label,
        path: std::path::absolute(path).unwrap_or(path.to_path_buf()).to_string_lossy().into_owned(),
        program_args,
        env,
        working_dir: string("WorkingDirectory"),
        stdout: string("StandardOutPath"),
        stderr: string("StandardErrorPath"),
        // `KeepAlive = true`: always; a dictionary: restart conditions, of which the double
        // models `SuccessfulExit` (launchd.plist(5)) and treats any other key as always.
        keep_alive: dict.get("KeepAlive").is_some_and(|v| v.as_boolean().unwrap_or(true)),
        restart_on_success: dict
            .get("KeepAlive")
            .and_then(Value::as_dictionary)
            .and_then(|d| d.get("SuccessfulExit"))
            .and_then(Value::as_boolean)
            .unwrap_or(true),
        run_at_load: dict.get("RunAtLoad").and_then(Value::as_boolean).unwrap_or(false),
        throttle_ms: int("ThrottleInterval", 10) * 1000,
        exit_timeout_ms: int("ExitTimeOut", 20) * 1000,
        supervisor: 0,
        state: "not running".into(),
        pid: None,
        runs: 0,
        last_exit_code: None,
        last_signal: None,
        booting_out: false,
        kick: 0,
        kick_kill: false,
    })
}

fn bootstrap(store: &Store, domain: &str, path: &Path) -> Result<(), Fail> {
    let job = read_job(domain, path)?;
    let target = format!("{domain}/{}", job.label);
    let owner = nix::unistd::getppid().as_raw();
    store
        .with(|st| {
            if st.owner_pid == 0 {
                st.owner_pid = owner;
            }
            if st.is_disabled(domain, &job.label) {
                return Err(Fail(119, "Bootstrap failed: 119: Service is disabled".into()));
            }
            if let Some(existing) = st.services.get(&target) {
                let code = if existing.booting_out { 5 } else { 37 };
                return Err(Fail(code, format!("Bootstrap failed: {code}: {}", strerror(code))));
            }
            if st.ghosts.get(&target).is_some_and(|&until| until > now_ms()) {
                return Err(Fail(5, "Bootstrap failed: 5: Input/output error".into()));
            }
            st.ghosts.remove(&target);
            let exe = std::env::current_exe().map_err(|e| Fail(5, format!("Bootstrap failed: 5: {e}")))?;
            let mut cmd = std::process::Command::new(exe);
            cmd.args(["__job", &target])
                .env("LAUNCHCTL_DOUBLE_STATE", store.dir())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            // SAFETY: setsid is async-signal-safe. The supervisor is launchd's stand-in:
            // it must not share our session or die with our caller's terminal.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                    libc::setsid();
                    Ok(())
                });
            }
            let child = cmd.spawn().map_err(|e| Fail(5, format!("Bootstrap failed: 5: {e}")))?;
            let mut job = job;
            job.supervisor = child.id() as i32;
            st.services.insert(target.clone(), job);
            // The supervisor reads the state only after we release the lock; it is
            // reaped by init, like any daemon.
            std::mem::forget(child);
            Ok(())
        })
        .map_err(io_fail)?
}

fn bootout(store: &Store, domain: &str, label: &str) -> Res {
    let target = format!("{domain}/{label}");
    store
        .with(|st| match st.services.get_mut(&target) {
            None => Err(Fail(3, "Boot-out failed: 3: No such process".into())),
            Some(s) if s.booting_out => {
                Err(Fail(36, "Boot-out failed: 36: Operation now in progress".into()))
            }
            Some(s) => {
                // Asynchronous, like launchd: the supervisor stops the job and unlists it.
                s.booting_out = true;
                Ok(String::new())
            }
        })
        .map_err(io_fail)?
}

fn kickstart(store: &Store, domain: &str, label: &str, kill_first: bool, print_pid: bool) -> Res {
    let target = format!("{domain}/{label}");
    let before = store
        .with(|st| {
            let s = st.services.get_mut(&target).ok_or_else(|| not_found(domain, label))?;
            if s.booting_out {
                return Err(Fail(
                    37,
                    format!("Could not kickstart service \"{label}\": 37: {}", strerror(37)),
                ));
            }
            if s.pid.is_some() && !kill_first {
                return Ok(None);
            }
            s.kick += 1;
            s.kick_kill = kill_first;
            Ok(Some(s.runs))
        })
        .map_err(io_fail)??;
    // launchctl kickstart returns once the job has been spawned again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        let now = store
            .with(|st| st.services.get(&target).map(|s| (s.runs, s.pid)))
            .map_err(io_fail)?
            .ok_or_else(|| not_found(domain, label))?;
        match before {
            None => break now.1,
            Some(runs) if now.0 > runs && now.1.is_some() => break now.1,
            _ if Instant::now() > deadline => {
                return Err(Fail(5, format!("Could not kickstart service \"{label}\": 5: {}", strerror(5))));
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    Ok(match (print_pid, pid) {
        (true, Some(pid)) => format!("service spawned with pid: {pid}\n"),
        _ => String::new(),
    })
}

fn print_service(s: &Service) -> String {
    let kind = if s.domain == "system" { "LaunchDaemon" } else { "LaunchAgent" };
    let mut out = format!("{}/{} = {{\n", s.domain, s.label);
    out.push_str(&format!("\tactive count = {}\n", usize::from(s.pid.is_some())));
    out.push_str(&format!("\tpath = {}\n", s.path));
    out.push_str(&format!("\ttype = {kind}\n"));
    out.push_str(&format!("\tstate = {}\n\n", s.state));
    out.push_str(&format!("\tprogram = {}\n\targuments = {{\n", s.program_args[0]));
    for a in &s.program_args {
        out.push_str(&format!("\t\t{a}\n"));
    }
    out.push_str("\t}\n\n");
    if let Some(p) = &s.stdout {
        out.push_str(&format!("\tstdout path = {p}\n"));
    }
    if let Some(p) = &s.stderr {
        out.push_str(&format!("\tstderr path = {p}\n"));
    }
    if !s.env.is_empty() {
        out.push_str("\tenvironment = {\n");
        for (k, v) in &s.env {
            out.push_str(&format!("\t\t{k} => {v}\n"));
        }
        out.push_str("\t}\n");
    }
    out.push_str(&format!("\n\truns = {}\n", s.runs));
    if let Some(pid) = s.pid {
        out.push_str(&format!("\tpid = {pid}\n"));
    }
    match (s.last_exit_code, s.last_signal) {
        (Some(code), _) => out.push_str(&format!("\tlast exit code = {code}\n")),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("?");
            out.push_str(&format!("\tlast terminating signal = {name}: {sig}\n"));
        }
        (None, None) => out.push_str("\tlast exit code = (never exited)\n"),
    }
    out.push_str("}\n");
    out
}

/// A GUI login: launchd loads every plist in LaunchAgents that is not disabled.
fn login(store: &Store, uid: &str, dir: &Path) -> Res {
    let domain = format!("gui/{uid}");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Fail(5, format!("cannot read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "plist"))
        .collect();
    entries.sort();
    let mut out = String::new();
    for path in entries {
        match bootstrap(store, &domain, &path) {
            // Disabled or already loaded: skipped, as at a real login.
            Ok(()) | Err(Fail(119 | 37, _)) => {}
            Err(Fail(_, msg)) => out.push_str(&format!("{}: {msg}\n", path.display())),
        }
    }
    Ok(out)
}

/// A logout: every job in the domain is booted out, and this waits until they are gone.
fn logout(store: &Store, domain: &str) -> Res {
    let labels: Vec<String> = store
        .with(|st| st.services.values().filter(|s| s.domain == domain).map(|s| s.label.clone()).collect())
        .map_err(io_fail)?;
    for label in &labels {
        let _ = bootout(store, domain, label);
    }
    wait_until(store, |st| st.services.values().all(|s| s.domain != domain))
}

/// Kills every supervisor and job and forgets them (tests call this when they end).
fn shutdown(store: &Store) -> Res {
    let procs: Vec<(i32, Option<i32>)> = store
        .with(|st| {
            let procs = st.services.values().map(|s| (s.supervisor, s.pid)).collect();
            st.services.clear();
            procs
        })
        .map_err(io_fail)?;
    for &(supervisor, pid) in &procs {
        if let Some(pid) = pid {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(supervisor), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for &(supervisor, pid) in &procs {
        while (job::alive(supervisor) || pid.is_some_and(job::alive)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(String::new())
}

fn wait_until(store: &Store, done: impl Fn(&State) -> bool) -> Res {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if store.with(|st| done(st)).map_err(io_fail)? {
            return Ok(String::new());
        }
        if Instant::now() > deadline {
            return Err(Fail(36, "timed out waiting for launchd".into()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
