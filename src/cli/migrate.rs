//! `parachute migrate --to-supervised | --teardown`: flags and environment in, a
//! [`crate::cutover`] run out, printed for a terminal, as plain lines, or as JSON.
//!
//! This file decides what the library cannot: the hub port (`--port`, else the legacy
//! `hub/run/hub.port`, else 1939), the binary baked into the unit (`--exec`, else this
//! executable's canonical path), which service manager to talk to (the only place that
//! builds bus connections for this verb). Nothing here (or anywhere in the shipped binary)
//! reacts to a test-only variable: the tests inject faults by killing the real process
//! from outside.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use parachute_manager::{Scope, ServiceManager};
use serde_json::json;

use super::HostEnv;
use super::exit::Code;
use super::host::{HomeArg, resolve_home};
use crate::cutover::explain::shell_quote;
use crate::cutover::{self, Config, Event, Outcome, Report, Sink, TeardownOutcome, TeardownReport, Timeouts};
use crate::model::home::Home;
use crate::model::pidfile;

/// Exit codes of `migrate`, printed by `--help`.
pub const HELP: &str = "\
Steps of --to-supervised (each is journaled in <home>/hub/run/migrate-journal.json; a re-run \
after a crash continues from the last one that still holds):
  1 detect  2 preflight (read-only: binary runs, every declared port's holder is ours)
  3 write the unit (not started)  4 stop legacy daemons (identity-checked pidfiles)
  5 disable stale per-module units  6 sweep attributable orphans  7 verify ports free
  8 start the unit  9 verify /health from the unit's main pid and every module running

Exit codes:
  0   migrated, or already migrated; teardown done or nothing installed
  1   start-failed: the service manager did not start the hub unit (teardown: removal failed);
      module-failed: the hub runs, but a module crashed or is not supervised (each is named)
  2   bad usage or bad input (a malformed hub/run/hub.port, a missing --exec)
  4   no-manager: no service manager (systemd, launchd) is reachable
  5   unverifiable: a process or port fact could not be established (another user's process, no /proc); nothing was changed
  6   verify-timeout: the unit started but the hub or a module was not verified in time (each
      module not running with its port bound is named, with its start error)
  7   port-stuck: a declared port is held by a process the cutover may not stop
  9   write-failed: the unit could not be written, or --exec does not run
  10  locked: another cutover or teardown is running on this home

Every failure says which legacy processes are stopped, whether the unit file exists, is \
enabled and running, and the one command that continues from there.";

pub use super::host::ScopeArg;

/// Arguments of `parachute migrate`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["to_supervised", "teardown"])))]
#[command(after_help = HELP)]
pub struct Args {
    /// Move this box from the legacy detached daemons to a hub supervised by the service
    /// manager (resumable; safe to re-run).
    #[arg(long)]
    pub to_supervised: bool,
    /// Stop, disable and remove the hub unit in whichever scope holds it, and disable stale
    /// per-module units. Nothing installed is not an error.
    #[arg(long, conflicts_with_all = ["port", "exec", "dry_run"])]
    pub teardown: bool,
    /// The Parachute home.
    #[command(flatten)]
    pub home: HomeArg,
    /// The hub port the unit uses (default: the legacy hub/run/hub.port, else the port of an
    /// earlier cutover of this home, else 1939).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// The parachute binary the unit runs (default: this executable).
    #[arg(long, value_name = "PATH")]
    pub exec: Option<PathBuf>,
    /// Print what would be stopped, swept, written and started; change nothing. Runs the
    /// read-only steps (detect, preflight) for real and exits with the code the real run
    /// would end with if they fail.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object (outcome, steps, final state) instead of progress lines.
    #[arg(long)]
    pub json: bool,
    /// The manager scope (default: system for root, user otherwise).
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
    /// The account a system-scope hub runs as (default: the owner of the home; `root` only
    /// when given here, for a home that someone else owns or can write).
    #[arg(long, value_name = "USER", conflicts_with = "teardown")]
    pub user: Option<String>,
    /// How long to wait for another writer of the hub unit (a cutover, a package hook, a
    /// `parachute unit` verb) to finish before giving up with `locked`, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = crate::cutover::lock::DEFAULT_WAIT.as_secs())]
    pub lock_wait: u64,
}

/// The exit code of a cutover outcome.
pub fn exit_code(o: Outcome) -> Code {
    match o {
        Outcome::AlreadyMigrated | Outcome::Migrated => Code::Success,
        Outcome::StartFailed | Outcome::ModuleFailed => Code::Failure,
        Outcome::NoManager => Code::NoManager,
        Outcome::VerifyTimeout => Code::Timeout,
        Outcome::PortStuck => Code::PortHeld,
        Outcome::WriteFailed => Code::WriteFailed,
        Outcome::Locked => Code::Locked,
        Outcome::Unverifiable => Code::Permission,
    }
}

/// Runs `migrate`.
pub fn run(args: Args, env: &HostEnv) -> Code {
    let home = match resolve_home(&args.home, env) {
        Ok(h) => h,
        Err(c) => return c,
    };
    // As root on a user's home, every file of the home is read and written as its owner
    // (crate::privsep); the backend writes the unit file as root. A current-thread runtime
    // keeps all of it on this thread.
    let _as_owner = match crate::privsep::act_as_owner(home.root()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("parachute migrate: {e}");
            return Code::Failure;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    let scope = super::host::scope(args.scope);
    if args.teardown {
        let wait = Duration::from_secs(args.lock_wait);
        return rt.block_on(async { teardown(&home, &backend(env, scope).await, wait, args.json).await });
    }
    let cfg = match config(&args, env, home, scope) {
        Ok(c) => c,
        Err(code) => return code,
    };
    rt.block_on(async {
        let b = backend(env, scope).await;
        let facts = super::host::facts(env);
        cutover_run(&cfg, &b, args.json, |b| async move {
            crate::detect::ensure_boot_start(b, &facts, CONNECT_TIMEOUT).await
        })
        .await
    })
}

fn config(args: &Args, env: &HostEnv, home: Home, scope: Scope) -> Result<Config, Code> {
    let port = match args.port {
        Some(p) => p,
        None => match pidfile::read_port_file(&home.hub_port_file()) {
            Ok(Some(p)) => p,
            Ok(None) => previous_port(&home).unwrap_or(crate::model::names::HUB_PORT),
            Err(e) => {
                eprintln!(
                    "parachute migrate: {e} It names the legacy hub's port; pass --port N to choose one."
                );
                return Err(Code::Usage);
            }
        },
    };
    let exec = match super::host::exec_path(args.exec.as_deref(), super::host::MustExist::Yes, env) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("parachute migrate: {e}.");
            return Err(Code::Usage);
        }
    };
    for w in &exec.warnings {
        eprintln!("parachute migrate: warning: {w}");
    }
    let exec = exec.path;
    let mut rerun =
        format!("parachute migrate --to-supervised --home {}", shell_quote(&home.root().to_string_lossy()));
    if let Some(p) = args.port {
        rerun.push_str(&format!(" --port {p}"));
    }
    if args.exec.is_some() {
        rerun.push_str(&format!(" --exec {}", shell_quote(&exec.to_string_lossy())));
    }
    if let Some(s) = args.scope {
        rerun.push_str(if s == ScopeArg::User { " --scope user" } else { " --scope system" });
    }
    if args.dry_run {
        rerun.push_str(" --dry-run");
    }
    let spec =
        super::host::hub_spec(&home, port, &exec, scope, args.user.as_deref(), env).map_err(|why| {
            eprintln!("parachute migrate: {why}");
            Code::Usage
        })?;
    Ok(Config {
        spec,
        home,
        port,
        exec,
        dry_run: args.dry_run,
        timeouts: Timeouts::default(),
        lock_wait: Duration::from_secs(args.lock_wait),
        rerun,
        facts: parachute_process::facts::host(),
    })
}

/// The port an earlier cutover chose, once the legacy `hub.port` is gone (step 4 removes
/// it): the journal's attempt (a re-run after a crash), else the running hub's
/// `hub-instance.json` (a re-run after a migration). Unreadable files count as absent here;
/// the cutover itself reports them.
fn previous_port(home: &Home) -> Option<u16> {
    let journal = parachute_fsx::read_capped(&home.cutover_journal(), parachute_fsx::MAX_STATE_FILE)
        .ok()
        .and_then(|b| serde_json::from_slice::<cutover::journal::Journal>(&b).ok())
        .map(|j| j.attempt.port);
    journal.or_else(|| {
        crate::model::hub_instance::HubInstance::read(&home.hub_instance()).ok().flatten().map(|i| i.port)
    })
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Picks and connects the backend, exactly as `parachute unit` does (one detection for
/// every verb). Tests reach a sandbox manager by passing its bus address and
/// `XDG_CONFIG_HOME` in the environment of the `parachute` they run.
async fn backend(env: &HostEnv, scope: Scope) -> crate::detect::Backend {
    crate::detect::backend(&super::host::facts(env), scope, CONNECT_TIMEOUT).await
}

/// Progress on a terminal: each step's line is rewritten in place when it ends.
struct Tty;
/// Progress as plain lines (pipes, logs).
struct Plain;

fn label(k: cutover::plan::StepKind) -> String {
    format!("[{}/9] {}", k.number(), k.title())
}

impl Sink for Tty {
    fn event(&mut self, e: Event<'_>) {
        let mut out = std::io::stdout().lock();
        let _ = match e {
            Event::Note(l) => writeln!(out, "{l}"),
            Event::Begin(k) => write!(out, "  … {}", label(k)),
            Event::Done(k, s) => writeln!(out, "\r\x1b[2K  ✓ {} — {s}", label(k)),
            Event::Skipped(k, s) => writeln!(out, "  ✓ {} — {s}", label(k)),
            Event::Failed(k, s) => writeln!(out, "\r\x1b[2K  ✗ {} — {s}", label(k)),
        };
        let _ = out.flush();
    }
}

impl Sink for Plain {
    fn event(&mut self, e: Event<'_>) {
        let mut out = std::io::stdout().lock();
        let _ = match e {
            Event::Note(l) => writeln!(out, "{l}"),
            Event::Begin(_) => Ok(()),
            Event::Done(k, s) => writeln!(out, "{}: done — {s}", label(k)),
            Event::Skipped(k, s) => writeln!(out, "{}: {s}", label(k)),
            Event::Failed(k, s) => writeln!(out, "{}: FAILED — {s}", label(k)),
        };
        let _ = out.flush();
    }
}

async fn cutover_run<'a, F>(
    cfg: &Config,
    manager: &'a crate::detect::Backend,
    json_out: bool,
    boot: impl FnOnce(&'a crate::detect::Backend) -> F,
) -> Code
where
    F: std::future::Future<Output = Option<String>>,
{
    let mut report = if json_out {
        cutover::migrate(cfg, manager, &mut cutover::report::Quiet).await
    } else if std::io::stdout().is_terminal() {
        cutover::migrate(cfg, manager, &mut Tty).await
    } else {
        cutover::migrate(cfg, manager, &mut Plain).await
    };
    if report.outcome.is_success() && !report.dry_run {
        // A user unit starts at boot only while its manager lingers (upstream hub#494).
        match boot(manager).await {
            None => {
                report.starts_at_boot = Some(true);
                report.messages.push("It starts at boot, before anyone logs in.".to_owned());
            }
            Some(why) => {
                report.starts_at_boot = Some(false);
                report.messages.push(format!(
                    "Note: the hub will not start at boot until the user logs in: {}",
                    why.trim_end()
                ));
            }
        }
    }
    let code = exit_code(report.outcome);
    if json_out {
        print_json(&report, code);
    } else {
        print_human(&report);
    }
    code
}

fn print_json(r: &Report, code: Code) {
    let v = json!({
        "outcome": r.outcome,
        "exit_code": code as u8,
        "dry_run": r.dry_run,
        "steps_done": r.steps,
        "final_state": r.final_state,
        "messages": r.messages,
        "next": r.next,
        "starts_at_boot": r.starts_at_boot,
    });
    println!("{}", serde_json::to_string_pretty(&v).expect("a report serializes"));
}

fn print_human(r: &Report) {
    if r.outcome.is_success() {
        for l in &r.messages {
            println!("{l}");
        }
    } else {
        let mut err = std::io::stderr().lock();
        for l in &r.messages {
            let _ = writeln!(err, "{l}");
        }
    }
}

async fn teardown<M: ServiceManager>(home: &Home, manager: &M, wait: Duration, json_out: bool) -> Code {
    let report: TeardownReport = if json_out {
        cutover::teardown_within(home, manager, wait, &mut cutover::report::Quiet).await
    } else {
        cutover::teardown_within(home, manager, wait, &mut Plain).await
    };
    let code = match report.outcome {
        TeardownOutcome::Removed | TeardownOutcome::NothingInstalled => Code::Success,
        TeardownOutcome::Failed => Code::Failure,
        TeardownOutcome::Locked => Code::Locked,
    };
    if json_out {
        let v = json!({
            "outcome": report.outcome,
            "exit_code": code as u8,
            "disabled": report.disabled,
            "unit": report.unit,
            "messages": report.messages,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("a report serializes"));
    } else if code == Code::Success {
        for l in &report.messages {
            println!("{l}");
        }
    } else {
        for l in &report.messages {
            eprintln!("{l}");
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_a_distinct_exit_code() {
        use Outcome::*;
        let failures = [
            NoManager,
            WriteFailed,
            PortStuck,
            StartFailed,
            VerifyTimeout,
            Locked,
            Unverifiable,
            ModuleFailed,
        ];
        let mut codes: Vec<u8> = failures.iter().map(|o| exit_code(*o) as u8).collect();
        assert!(codes.iter().all(|c| *c != 0));
        codes.sort_unstable();
        codes.dedup();
        // start-failed and module-failed share 1 ("the operation ran and failed").
        assert_eq!(codes.len(), failures.len() - 1);
        assert_eq!(exit_code(ModuleFailed), exit_code(StartFailed));
        assert_eq!(exit_code(Migrated) as u8, 0);
        assert_eq!(exit_code(AlreadyMigrated) as u8, 0);
        for o in failures {
            assert!(HELP.contains(o.as_str()), "--help documents {}", o.as_str());
        }
    }
}
