//! `parachute start|stop|restart [<svc>]`, `parachute status`, `parachute logs <svc>`: the
//! module verbs, all through the running hub's control API (see [`crate::client`]).
//!
//! A verb judges the *state* the hub returns, not the HTTP status: a start that ends
//! `crashed` or with a `startError` prints the diagnostic and exits 1 (upstream R11 printed
//! "started" for those). Without a verb target, the operation applies to every module;
//! the hub process itself is the service manager's business (`parachute unit …`).

use std::io::Write;

use crate::api::wire::{ErrorCode, FollowEvent, ModuleList, ModuleReply};
use crate::client::{ClientError, Hub, Op};
use crate::supervisor::{ModuleState, ModuleStatus, StartError, StartErrorKind};

use super::HostEnv;
use super::exit::Code;
use super::host::{HomeArg, resolve_home};

/// Arguments of `start`, `stop` and `restart`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Without <SVC> the operation applies to every module the hub knows (services.json and \
supervised). The hub itself is managed by `parachute unit start|stop|restart` (or run in \
the foreground with `parachute serve`).

Exit codes: 0 done; 1 a module did not end in the requested state (the diagnostic is \
printed); 2 unknown module; 3 no hub running (on a box still running the legacy daemons, \
also when the legacy hub answers on the port; the migration is named); 6 the hub did not \
answer in time; 7 something else answers on the hub's port.")]
pub struct OpArgs {
    /// The module (`vault`, or a services.json row name for a third-party module).
    pub svc: Option<String>,
    /// Where the Parachute home is.
    #[command(flatten)]
    pub home: HomeArg,
    /// Print the resulting module state(s) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// After a follow stream ended: the same hub (pid and instance) answering as a later
/// generation within a few seconds, if it is one; `None` when the hub is stopping or gone.
async fn upgraded(home: &crate::model::home::Home, hub: &Hub) -> Option<Hub> {
    const WAIT: std::time::Duration = std::time::Duration::from_secs(5);
    let until = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < until {
        let next = Hub::connect(home).await.ok()?;
        if next.health.pid != hub.health.pid || next.health.instance != hub.health.instance {
            return None;
        }
        if next.health.generation > hub.health.generation {
            return Some(next);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    None
}

/// Arguments of `logs`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Lines come from the hub's in-memory ring buffer of the module's stdout and stderr, each \
with a sequence number. --follow streams new lines (across crashes, restarts and in-place \
upgrades of the hub) until the hub stops or you press Ctrl-C.

Exit codes: 0 done; 2 the module is not supervised; 3 no hub running; 6 timed out.")]
pub struct LogsArgs {
    /// The module (`vault`, or a services.json row name for a third-party module).
    pub svc: String,
    /// Keep printing new lines as they arrive.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start at this sequence number (default: everything still buffered).
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
    /// Where the Parachute home is.
    #[command(flatten)]
    pub home: HomeArg,
    /// Print the JSON answer (with --follow: one NDJSON event per line).
    #[arg(long)]
    pub json: bool,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime can be built")
}

/// The exit code and message for a failed connection or call.
fn fail(e: &ClientError) -> Code {
    eprintln!("parachute: {e}");
    code_of(e)
}

pub(crate) fn code_of(e: &ClientError) -> Code {
    match e {
        ClientError::NoHub { .. } => Code::NoHub,
        ClientError::Foreign { .. } => Code::PortHeld,
        ClientError::Timeout { .. } => Code::Timeout,
        ClientError::Api { code: ErrorCode::NotInstalled | ErrorCode::NotSupervised, .. } => Code::Usage,
        ClientError::Token(crate::token::TokenError::Malformed { .. }) => Code::Usage,
        _ => Code::Failure,
    }
}

/// Runs `start`, `stop` or `restart`.
pub fn run_op(op: Op, args: OpArgs, env: &HostEnv) -> Code {
    if args.svc.as_deref() == Some("hub") {
        eprintln!(
            "parachute: the hub is not a module; manage it with `parachute unit {}` (or run it in the foreground with `parachute serve`).",
            op.as_str()
        );
        return Code::Usage;
    }
    let home = match resolve_home(&args.home, env) {
        Ok(h) => h,
        Err(c) => return c,
    };
    let rt = runtime();
    let hub = match rt.block_on(Hub::connect(&home)) {
        Ok(h) => h,
        Err(e) => {
            // A box still on the legacy daemons is offered the migration (issue 5); its own
            // hub answering on the port is "no supervised hub" (exit 3), never a stranger
            // to stop by hand.
            let Some(live) = super::offer::legacy_box(&e, &home, env, &rt) else {
                if let Some(live) = super::offer::legacy_hub_on_port(&e, &home) {
                    eprintln!("parachute: {}", super::offer::no_supervised_hub_message(&e, &home));
                    eprintln!("parachute: {}", super::offer::unfinished_migration_hint(&home, &live));
                    return Code::NoHub;
                }
                return fail(&e);
            };
            eprintln!("parachute: {}", super::offer::no_supervised_hub_message(&e, &home));
            match super::offer::offer(op, &live, &home, env, args.json) {
                super::offer::Offer::Migrated => match rt.block_on(Hub::connect(&home)) {
                    Ok(h) => h,
                    Err(e) => return fail(&e),
                },
                super::offer::Offer::Failed(c) => return c,
                super::offer::Offer::Hinted => return Code::NoHub,
            }
        }
    };
    rt.block_on(async {
        let targets = match &args.svc {
            Some(s) => vec![s.clone()],
            None => match hub.modules().await {
                Ok(list) => every_target(op, &list),
                Err(e) => return fail(&e),
            },
        };
        if targets.is_empty() && !args.json {
            println!("No modules to {}: services.json lists none and the hub supervises none.", op.as_str());
        }
        let results = futures_util::future::join_all(targets.iter().map(|t| one_op(&hub, t, op))).await;
        let mut worst = Code::Success;
        let mut json_out = Vec::new();
        for (short, result) in targets.iter().zip(results) {
            let code = match &result {
                Ok(reply) => verdict(op, &reply.state),
                Err(e) => code_of(e),
            };
            if code != Code::Success && worst == Code::Success {
                worst = code;
            }
            if args.json {
                json_out.push(match result {
                    Ok(reply) => serde_json::json!({"short": reply.short, "state": reply.state, "ok": code == Code::Success}),
                    Err(e) => serde_json::json!({"short": short, "ok": false, "error": e.json_code(), "error_description": e.to_string()}),
                });
            } else {
                match result {
                    Ok(reply) => print_outcome(op, &reply, code == Code::Success),
                    Err(e) => eprintln!("✗ {short}: {e}"),
                }
            }
        }
        if args.json {
            let value = if args.svc.is_some() && json_out.len() == 1 {
                json_out.pop().expect("one result")
            } else {
                serde_json::Value::Array(json_out)
            };
            println!("{value:#}");
        }
        worst
    })
}

/// Which modules an operation without `<svc>` applies to.
fn every_target(op: Op, list: &ModuleList) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: &str| {
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    };
    for m in &list.modules {
        match op {
            Op::Stop if m.status == ModuleStatus::Stopped => {}
            _ => push(&m.short),
        }
    }
    if op != Op::Stop {
        for i in list.installed.iter().filter(|i| i.skip_reason.is_none()) {
            push(&i.short);
        }
    }
    out
}

async fn one_op(hub: &Hub, short: &str, op: Op) -> Result<ModuleReply, ClientError> {
    match hub.op(short, op).await {
        // A module the hub does not supervise (skipped at boot, added to services.json
        // later) is simply started.
        Err(e) if op == Op::Restart && e.code() == Some(&ErrorCode::NotSupervised) => {
            hub.op(short, Op::Start).await
        }
        other => other,
    }
}

/// Success when the module ended in the requested state without a diagnostic.
fn verdict(op: Op, state: &ModuleState) -> Code {
    let ok = match op {
        Op::Start | Op::Restart => {
            matches!(state.status, ModuleStatus::Running | ModuleStatus::Starting)
                && state.start_error.is_none()
        }
        Op::Stop => matches!(state.status, ModuleStatus::Stopped | ModuleStatus::Crashed),
    };
    if ok { Code::Success } else { Code::Failure }
}

fn print_outcome(op: Op, reply: &ModuleReply, ok: bool) {
    let s = &reply.state;
    if ok {
        match (op, s.pid) {
            (Op::Stop, _) => println!("✓ {} stopped.", reply.short),
            (_, Some(pid)) => println!("✓ {} {} (pid {pid}).", reply.short, s.status.as_str()),
            (_, None) => println!("✓ {} {}.", reply.short, s.status.as_str()),
        }
        return;
    }
    let mut err = std::io::stderr().lock();
    match &s.start_error {
        Some(e) => {
            let _ = writeln!(
                err,
                "✗ {}: {} — {}",
                crate::text::field(&reply.short),
                s.status.as_str(),
                crate::text::field(&e.to_string())
            );
            let _ = writeln!(err, "  → {}", hint(&reply.short, e));
        }
        None => {
            let exit = s.last_exit().map(|e| format!(" (last child {e})")).unwrap_or_default();
            let _ = writeln!(
                err,
                "✗ {}: {} after {} crash(es){exit}; see `parachute logs {}`.",
                reply.short,
                s.status.as_str(),
                s.restarts_in_window,
                reply.short
            );
        }
    }
}

/// What to do about a start diagnostic, by its kind (a non-executable binary is not "not
/// installed"; upstream R19). Text from outside (command lines, paths, OS errors) is made
/// safe for the terminal here.
pub fn hint(short: &str, e: &StartError) -> String {
    use crate::text::field;
    let short = field(short);
    match &e.kind {
        StartErrorKind::PortSquatter { port, holder_pid, holder_cmdline } => format!(
            "pid {holder_pid} ({}) holds port {port}; stop it (`kill {holder_pid}`), then `parachute start {short}`.",
            holder_cmdline.as_deref().map_or("command line unreadable".into(), field)
        ),
        StartErrorKind::MissingDependency { binary } => format!(
            "`{}` was not found on the module's PATH; install it (or set PATH in the module's .env), then `parachute start {short}`.",
            field(binary)
        ),
        StartErrorKind::NonExecutable { path, .. } => format!(
            "{} exists but is not executable; `chmod +x` it, then `parachute start {short}`.",
            field(path)
        ),
        StartErrorKind::SpawnFailed { os_error } => format!(
            "the OS refused to start it ({}); check the installDir and the command, then `parachute start {short}`.",
            field(os_error)
        ),
        StartErrorKind::StartedButUnbound { port } => {
            format!("it runs but has not bound port {port} yet; see `parachute logs {short}`.")
        }
        StartErrorKind::Other { .. } => format!("see `parachute logs {short}`."),
    }
}

/// A module's line as `logs` prints it: escaped (`crate::text::line`) when stdout is a
/// terminal, so module output cannot drive it; raw into a pipe or file, where the bytes are
/// data (`--json` always carries them raw, JSON-escaped).
fn for_reader(text: &str) -> std::borrow::Cow<'_, str> {
    use std::io::IsTerminal;
    static TERMINAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *TERMINAL.get_or_init(|| std::io::stdout().is_terminal()) {
        crate::text::line(text)
    } else {
        text.into()
    }
}

/// Runs `logs`.
pub fn run_logs(args: LogsArgs, env: &HostEnv) -> Code {
    let home = match resolve_home(&args.home, env) {
        Ok(h) => h,
        Err(c) => return c,
    };
    runtime().block_on(async {
        let hub = match Hub::connect(&home).await {
            Ok(h) => h,
            Err(e) => return fail(&e),
        };
        if !args.follow {
            let reply = match hub.logs(&args.svc, args.since).await {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            if args.json {
                println!("{}", serde_json::to_string(&reply).expect("serializable"));
                return Code::Success;
            }
            if reply.missed > 0 {
                eprintln!("({} earlier line(s) were already evicted from the hub's buffer)", reply.missed);
            }
            let mut out = std::io::stdout().lock();
            for l in &reply.lines {
                let _ = writeln!(out, "{}", for_reader(&l.text));
            }
            if reply.lines.is_empty() && reply.missed == 0 {
                eprintln!("({} has printed nothing yet)", crate::text::field(&args.svc));
            }
            return Code::Success;
        }
        let mut hub = hub;
        let mut since = args.since;
        loop {
            let mut stream = match hub.follow(&args.svc, since).await {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            while let Some(event) = stream.next().await {
                let event = match event {
                    Ok(ev) => ev,
                    Err(e) => return fail(&e),
                };
                if let FollowEvent::Line(l) = &event {
                    since = Some(l.seq + 1);
                }
                let mut out = std::io::stdout().lock();
                let written = if args.json {
                    writeln!(out, "{}", serde_json::to_string(&event).expect("serializable"))
                } else {
                    match &event {
                        FollowEvent::Line(l) => writeln!(out, "{}", for_reader(&l.text)),
                        FollowEvent::Gap { missed } => {
                            eprintln!("({missed} line(s) were evicted before they could be shown)");
                            Ok(())
                        }
                    }
                };
                // A closed stdout (`| head`) ends the follow quietly.
                if written.and_then(|()| out.flush()).is_err() {
                    return Code::Success;
                }
            }
            // The stream also ends when the hub replaces its own image (an in-place
            // upgrade): the same hub answers again as its next generation, with the same
            // sequence numbers, so the follow goes on from where it was.
            match upgraded(&home, &hub).await {
                Some(next) => hub = next,
                None => break,
            }
        }
        eprintln!("(the hub ended the stream: it is shutting down)");
        Code::Success
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::Installed;
    use crate::cli::status::note;

    fn state(short: &str, status: ModuleStatus) -> ModuleState {
        ModuleState::new(short, status)
    }

    fn err(kind: &str) -> StartError {
        let kind = match kind {
            "port_squatter" => StartErrorKind::PortSquatter {
                port: 1940,
                holder_pid: 77,
                holder_cmdline: Some("bun server.ts".into()),
            },
            "missing_dependency" => StartErrorKind::MissingDependency { binary: "ffmpeg".into() },
            "non_executable" => {
                StartErrorKind::NonExecutable { binary: "x".into(), path: "/opt/m/bin/x".into() }
            }
            "spawn_failed" => {
                StartErrorKind::SpawnFailed { os_error: "No such file or directory (os error 2)".into() }
            }
            "started_but_unbound" => StartErrorKind::StartedButUnbound { port: 1940 },
            other => StartErrorKind::Other { error_type: other.into() },
        };
        StartError { kind, description: "desc".into(), at: "2025-01-01T00:00:00Z".into() }
    }

    #[test]
    fn verdicts_judge_the_state_not_the_http_status() {
        let mut s = state("vault", ModuleStatus::Running);
        assert_eq!(verdict(Op::Start, &s), Code::Success);
        s.start_error = Some(err("started_but_unbound"));
        assert_eq!(verdict(Op::Start, &s), Code::Failure);
        let crashed =
            ModuleState { start_error: Some(err("port_squatter")), ..state("vault", ModuleStatus::Crashed) };
        assert_eq!(verdict(Op::Restart, &crashed), Code::Failure);
        assert_eq!(verdict(Op::Stop, &crashed), Code::Success, "a crashed module is down");
        assert_eq!(verdict(Op::Stop, &state("v", ModuleStatus::Running)), Code::Failure);
    }

    #[test]
    fn notes_and_hints_branch_on_error_type() {
        let n = note(&ModuleState {
            start_error: Some(err("non_executable")),
            ..state("v", ModuleStatus::Crashed)
        });
        assert_eq!(n, "not executable: /opt/m/bin/x");
        assert!(!hint("v", &err("non_executable")).contains("not installed"));
        assert!(hint("v", &err("non_executable")).contains("chmod +x"));
        let h = hint("vault", &err("port_squatter"));
        assert!(h.contains("pid 77") && h.contains("bun server.ts") && h.contains("kill 77"), "{h}");
        assert!(hint("s", &err("missing_dependency")).contains("`ffmpeg`"));
        assert!(
            note(&ModuleState {
                start_error: Some(err("port_squatter")),
                ..state("v", ModuleStatus::Crashed)
            })
            .contains("pid 77")
        );
    }

    #[test]
    fn every_target_covers_installed_and_supervised() {
        let list = ModuleList {
            modules: vec![state("a", ModuleStatus::Running), state("b", ModuleStatus::Stopped)],
            installed: vec![
                Installed { short: "a".into(), port: None, version: None, skip_reason: None },
                Installed { short: "c".into(), port: None, version: None, skip_reason: None },
                Installed {
                    short: "d".into(),
                    port: None,
                    version: None,
                    skip_reason: Some("no startCmd".into()),
                },
            ],
        };
        assert_eq!(every_target(Op::Start, &list), ["a", "b", "c"]);
        assert_eq!(every_target(Op::Stop, &list), ["a"]);
        assert_eq!(every_target(Op::Restart, &list), ["a", "b", "c"]);
    }
}
