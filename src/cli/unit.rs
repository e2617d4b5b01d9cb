//! `parachute unit …`: the hub's unit in the platform service manager.
//!
//! One verb per manager operation (`render`, `install [--no-start]`, `start`, `stop`,
//! `restart`, `status`, `diff`, `remove`), each a thin shell around the
//! [`ServiceManager`] trait: the backend is picked by [`crate::detect`] from facts taken
//! from the [`HostEnv`] snapshot, and every verb prints either a sentence for humans or,
//! with `--json`, one object (`{"verb", "unit", "backend", "scope", …}`; on failure
//! `{"verb", "error": {"kind", "message", "log_tail"}, "exit_code"}`).
//!
//! The hub unit runs `<exe> serve --home <home> --port <port>`: home and port are in argv,
//! because `serve` acts on its flags and they are what `systemctl status` and `ps` show.
//! `PARACHUTE_HOME` is also set in the environment so the modules the hub spawns, and any
//! tool they run, agree on the home whatever the manager's environment is; `PORT` is not,
//! because modules would inherit it and each module has its own port. `PATH` is baked with
//! `/usr/sbin:/sbin` included (W17) and `~/.bun/bin` for bun-based modules.

use std::path::PathBuf;
use std::time::Duration;

use parachute_manager::{AfterInstall, Change, Drift, Error, Scope, ServiceManager, UnitId, UnitSpec};
use serde_json::{Value, json};

use super::HostEnv;
use super::exit::{self, Code};
use super::host::{self, ScopeArg};
use super::host::{HomeArg, resolve_home};
use crate::detect::{self, Backend};
use crate::text;

const EXIT_HELP: &str = "\
Exit codes: 0 done (or already so; `diff`: in sync); 1 the manager ran the operation and it \
failed (the unit's last log lines are printed), or `diff` found a difference; 2 bad flags or a \
value that cannot go into a unit; 4 no service manager here (the reason is printed); 5 \
permission denied (use sudo for --scope system); 6 the manager did not answer in time; 10 another \
writer of the hub unit (a cutover, a package hook) held the home's lock longer than 120 s (it is named).";

/// The `unit` verbs.
#[derive(Debug, clap::Subcommand)]
#[command(after_help = EXIT_HELP)]
pub enum Verb {
    /// Print the unit this binary would install (no manager is contacted on Linux).
    #[command(after_help = EXIT_HELP)]
    Render(Args),
    /// Write the unit, enable it and start it (restarting it if its definition changed).
    #[command(after_help = EXIT_HELP)]
    Install(InstallArgs),
    /// Start the installed unit and wait until it runs.
    #[command(after_help = EXIT_HELP)]
    Start(Args),
    /// Stop the unit and wait until it is down.
    #[command(after_help = EXIT_HELP)]
    Stop(Args),
    /// Restart the unit (starts it when it is not running).
    #[command(after_help = EXIT_HELP)]
    Restart(Args),
    /// Show the unit's state (looks in both scopes when it can).
    #[command(after_help = EXIT_HELP)]
    Status(Args),
    /// Show how the installed unit differs from what this binary renders.
    #[command(after_help = EXIT_HELP)]
    Diff(Args),
    /// Stop, disable and remove the unit, by name, in both scopes when reachable.
    #[command(after_help = EXIT_HELP)]
    Remove(Args),
}

/// Flags every `unit` verb takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The manager scope (default: system for root, user otherwise).
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
    /// Where the Parachute home is.
    #[command(flatten)]
    pub home: HomeArg,
    /// The hub's port, baked into the unit by render, install and diff (default 1939).
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// The parachute binary the unit runs, for render, install and diff (default: this one).
    #[arg(long, value_name = "PATH")]
    pub exec: Option<PathBuf>,
    /// The account a system unit's hub runs as (default: the owner of the home; `root` only
    /// when given here, for a home that someone else owns or can write).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Print one JSON object instead of sentences.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `unit install`.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// The flags every verb takes.
    #[command(flatten)]
    pub common: Args,
    /// Write and register the unit, but neither start it now nor enable it for boot.
    #[arg(long)]
    pub no_start: bool,
}

const TIMEOUT: Duration = Duration::from_secs(10);

fn verb_name(v: &Verb) -> &'static str {
    match v {
        Verb::Render(_) => "render",
        Verb::Install(_) => "install",
        Verb::Start(_) => "start",
        Verb::Stop(_) => "stop",
        Verb::Restart(_) => "restart",
        Verb::Status(_) => "status",
        Verb::Diff(_) => "diff",
        Verb::Remove(_) => "remove",
    }
}

/// Runs a `unit` verb.
pub fn run(verb: Verb, env: &HostEnv) -> Code {
    let name = verb_name(&verb);
    let (args, no_start) = match &verb {
        Verb::Install(i) => (i.common.clone(), i.no_start),
        Verb::Render(a)
        | Verb::Start(a)
        | Verb::Stop(a)
        | Verb::Restart(a)
        | Verb::Status(a)
        | Verb::Diff(a)
        | Verb::Remove(a) => (a.clone(), false),
    };
    let scope = host::scope(args.scope);
    let out = Out { verb: name, json: args.json };
    let facts = host::facts(env);
    let needs_spec = matches!(verb, Verb::Render(_) | Verb::Install(_) | Verb::Diff(_));
    let spec = if needs_spec {
        match spec_for(&args, env, scope, name, matches!(verb, Verb::Install(_))) {
            Ok(s) => Some(s),
            Err(c) => return c,
        }
    } else {
        None
    };
    // One writer of the hub unit at a time (a cutover, a package hook, another verb).
    let writes = matches!(
        verb,
        Verb::Install(_) | Verb::Start(_) | Verb::Stop(_) | Verb::Restart(_) | Verb::Remove(_)
    );
    let _lock = if writes {
        let home = match resolve_home(&args.home, env) {
            Ok(h) => h,
            Err(c) => return c,
        };
        match crate::cutover::lock::for_unit_writer(
            &home,
            &format!("unit {name}"),
            crate::cutover::lock::DEFAULT_WAIT,
        ) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("parachute unit {name}: {e}");
                return Code::Locked;
            }
        }
    } else {
        None
    };
    if let (Verb::Render(_), Some(spec)) = (&verb, &spec) {
        // Pure: no manager is contacted.
        return match detect::render_offline(&facts, scope, spec) {
            Ok(r) => {
                let text = String::from_utf8_lossy(&r.bytes).into_owned();
                let v = json!({
                    "verb": out.verb, "unit": r.unit, "backend": r.kind, "scope": scope, "path": r.path, "text": text,
                });
                out.emit(v, &text, false);
                Code::Success
            }
            Err(e) => out.error(&e),
        };
    }
    // An operator's start gets a fresh crash-loop budget (crate::boot_budget).
    if matches!(verb, Verb::Start(_) | Verb::Restart(_) | Verb::Install(_))
        && let Ok(home) = resolve_home(&args.home, env)
        && let Err(e) = crate::boot_budget::clear(&home)
    {
        eprintln!(
            "parachute unit {name}: could not clear {}: {e}",
            crate::boot_budget::path(&home).display()
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    rt.block_on(async {
        let backend = detect::backend(&facts, scope, TIMEOUT).await;
        let id = UnitId::hub();
        let name = backend.display_name(&id);
        let r = match verb {
            Verb::Render(_) => unreachable!("render returned above"),
            Verb::Install(_) => {
                let spec = spec.as_ref().expect("install builds a spec");
                install(&out, &backend, spec, no_start, &facts).await
            }
            Verb::Start(_) => simple(&out, &backend, "started", backend.start(&id).await).await,
            Verb::Stop(_) => simple(&out, &backend, "stopped", backend.stop(&id).await).await,
            Verb::Restart(_) => simple(&out, &backend, "restarted", backend.restart(&id).await).await,
            Verb::Remove(_) => simple(&out, &backend, "removed", backend.teardown(&id).await).await,
            Verb::Status(_) => match backend.status(&id).await {
                Ok(st) => {
                    let human = match st.scope {
                        None => format!("{name} is not installed (looked in the {scope} scope)."),
                        Some(s) => format!(
                            "{name} ({s} scope): {}{}{}\n  file: {}\n  enabled: {}",
                            text::field(&st.state_text),
                            st.main_pid.map(|p| format!(", pid {p}")).unwrap_or_default(),
                            st.restarts.map(|n| format!(", {n} automatic restarts")).unwrap_or_default(),
                            st.file
                                .as_ref()
                                .map(|f| text::field(&f.to_string_lossy()).into_owned())
                                .unwrap_or_else(|| "(none)".into()),
                            if st.enabled { "yes" } else { "no" },
                        ),
                    };
                    out.print(&backend, json!({ "status": st }), &human);
                    Ok(Code::Success)
                }
                Err(e) => Err(e),
            },
            Verb::Diff(_) => match backend.drift(spec.as_ref().expect("diff builds a spec")).await {
                Ok(d) => {
                    let (code, human) = match &d {
                        Drift::InSync => {
                            (Code::Success, "The installed unit is what this parachute renders.".to_owned())
                        }
                        Drift::NotInstalled => (Code::Failure, "The unit is not installed.".to_owned()),
                        Drift::LoadedStale => (
                            Code::Failure,
                            "The file is current but the manager runs an older definition; \
                             `parachute unit install` restarts it onto the new one."
                                .to_owned(),
                        ),
                        Drift::FileDiffers { diff } => (Code::Failure, diff.trim_end().to_owned()),
                    };
                    out.print(&backend, json!({ "drift": d, "path": backend.unit_path(&id) }), &human);
                    Ok(code)
                }
                Err(e) => Err(e),
            },
        };
        r.unwrap_or_else(|e| out.error(&e))
    })
}

/// Builds the hub spec from the flags; prints the problem and returns the exit code.
fn spec_for(
    args: &Args,
    env: &HostEnv,
    scope: Scope,
    verb: &str,
    must_exist: bool,
) -> Result<UnitSpec, Code> {
    let home = resolve_home(&args.home, env)?;
    let must_exist = if must_exist { host::MustExist::Yes } else { host::MustExist::No };
    let exec = host::exec_path(args.exec.as_deref(), must_exist, env).map_err(|e| {
        exit::print_error(&format!("unit {verb}"), &format!("{e}."), &[]);
        Code::Usage
    })?;
    // Only install runs it; render and diff merely name it.
    if must_exist == host::MustExist::Yes {
        for w in &exec.warnings {
            exit::print_warning(&format!("unit {verb}"), w);
        }
    }
    let port = args.port.unwrap_or(crate::model::names::HUB_PORT);
    host::hub_spec(&home, port, &exec.path, scope, args.user.as_deref(), env).map_err(|why| {
        exit::print_error(&format!("unit {verb}"), &why, &[]);
        Code::Usage
    })
}

async fn install(
    out: &Out,
    backend: &Backend,
    spec: &UnitSpec,
    no_start: bool,
    facts: &detect::HostFacts,
) -> Result<Code, Error> {
    let then = if no_start { AfterInstall::DontStart } else { AfterInstall::Start };
    let change = backend.install(spec, then).await?;
    let st = backend.status(&spec.id).await?;
    let mut warnings = Vec::new();
    if !no_start && let Some(w) = detect::ensure_boot_start(backend, facts, TIMEOUT).await {
        warnings.push(w);
    }
    let name = backend.display_name(&spec.id);
    let what = match (no_start, change) {
        (true, Change::Changed) => {
            "written and registered; not started and not enabled (`parachute unit start` starts it)"
        }
        (true, Change::AlreadyInPlace) => "already written and registered; nothing to do",
        (false, Change::Changed) => "installed, enabled and running",
        (false, Change::AlreadyInPlace) => "already installed and running; nothing to do",
    };
    let pid = st.main_pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    let mut human = format!(
        "{name} ({}): {what}{pid}.\n  file: {}",
        backend.kind(),
        backend.unit_path(&spec.id).display()
    );
    for w in &warnings {
        human.push_str(&format!("\n  warning: {w}"));
    }
    out.print(
        backend,
        json!({ "change": change, "started": !no_start, "path": backend.unit_path(&spec.id), "status": st, "warnings": warnings }),
        &human,
    );
    Ok(Code::Success)
}

async fn simple(out: &Out, backend: &Backend, done: &str, r: Result<Change, Error>) -> Result<Code, Error> {
    let change = r?;
    let id = UnitId::hub();
    let st = backend.status(&id).await?;
    let name = backend.display_name(&id);
    let human = match change {
        Change::Changed => format!("{name}: {done}."),
        Change::AlreadyInPlace => format!("{name}: already {done}; nothing to do."),
    };
    out.print(backend, json!({ "change": change, "status": st }), &human);
    Ok(Code::Success)
}

/// Output for one verb: sentences, or one JSON object.
struct Out {
    verb: &'static str,
    json: bool,
}

impl Out {
    fn print(&self, backend: &Backend, extra: Value, human: &str) {
        let mut v = json!({
            "verb": self.verb,
            "unit": backend.display_name(&UnitId::hub()),
            "backend": backend.kind(),
            "scope": backend.scope(),
        });
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        self.emit(v, human, true);
    }

    /// The JSON object with `--json`, else the human text (`line`: with a final newline).
    fn emit(&self, v: Value, human: &str, line: bool) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        } else if line {
            println!("{human}");
        } else {
            print!("{human}");
        }
    }

    /// Prints the error once (the JSON object on stdout with `--json`, the sentence and its
    /// log lines on stderr) and returns its exit code.
    fn error(&self, e: &Error) -> Code {
        let code = exit::for_manager(e.kind);
        if self.json {
            let v = json!({
                "verb": self.verb,
                "error": { "kind": e.kind, "message": e.message, "log_tail": e.log_tail },
                "exit_code": code as u8,
            });
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        }
        exit::print_error(&format!("unit {}", self.verb), &e.message, &e.log_tail);
        code
    }
}
