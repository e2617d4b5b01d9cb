//! `parachute serve`: the hub process. Boot order, signals, reaping and shutdown.
//!
//! Boot, in order, each step before anything that could leave a process behind:
//! 1. become a child subreaper (Linux), so orphans of a module's wrapper come back to us;
//! 2. install the SIGTERM, SIGINT and SIGCHLD handlers (upstream installed them after module
//!    boot, so a SIGTERM during boot orphaned every child; R7);
//! 3. bind the control API on 127.0.0.1 — a held port exits naming the holder, with nothing
//!    spawned (hub#536);
//! 4. take the home's serve lock (a second hub on the same home would stop the first's
//!    children as "leftovers"), load or mint the operator token, write `hub-instance.json`
//!    — on a full or read-only home each write that fails is said and retried, and the hub
//!    runs from memory ([`home_writes`]);
//! 5. stop provable leftovers of a previous instance from the supervisor's state file;
//! 6. serve the API, then boot the modules concurrently (see [`boot`]).
//!
//! Shutdown on SIGTERM/SIGINT/SIGQUIT: starts are refused, boot is cancelled, every module is
//! stopped in parallel under one deadline (then SIGKILL); a second signal kills every group
//! at once and exits. The API closes last (a log follower sees the final lines), and
//! `hub-instance.json` is removed. Exit 0 when clean, 8 when something had to be killed.
//!
//! Zombies: on every SIGCHLD (and every few seconds, since signals coalesce) untracked
//! zombie children are reaped by pid; as PID 1 in a container that covers every orphan.

pub mod bind;
pub mod boot;
pub mod build_id;
pub mod handover;
pub mod home_writes;
pub mod limits;
pub mod notify;
pub mod upgrade;

use std::io::Write;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::api::{self, ApiState, Phase};
use crate::model::home::Home;
use crate::model::hub_instance::HubInstance;
use crate::model::modules::HubContext;
use crate::supervisor::{OutputSink, Supervisor, SupervisorConfig};
use crate::token::{OperatorToken, Origin, TokenError};

/// Default shutdown deadline: below launchd's 20 s `ExitTimeOut`, above the supervisor's
/// 5 s SIGTERM grace.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(8);

/// Starts (each possibly waiting out the readiness window) in flight at once during boot.
/// High enough that a home's modules start together (a slot is held until the module
/// listens, so a cap of 4 made 50 modules boot in 13 rounds); it bounds the readiness
/// windows open at once on a very large home. Spawns themselves are one at a time, in
/// services.json order, on the spawner thread.
pub const BOOT_CONCURRENCY: usize = 64;

/// How often zombies are looked for even without a SIGCHLD.
const REAP_SWEEP: Duration = Duration::from_secs(5);

/// How long boot gets to abandon its pending starts at shutdown.
const BOOT_ABANDON: Duration = Duration::from_secs(2);

/// How long boot waits for the state file to name this hub before starting modules
/// anyway (a full or read-only home: the writer keeps retrying).
const STATE_CLAIM_WAIT: Duration = Duration::from_secs(2);

/// How long an in-place upgrade asked for during boot waits for boot to finish.
const BOOT_BEFORE_UPGRADE: Duration = Duration::from_secs(20);

/// How long the API gets to finish in-flight answers after the modules stopped.
const API_DRAIN: Duration = Duration::from_secs(2);

/// Everything `serve` needs, resolved by the CLI from flags and the environment snapshot.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The home.
    pub home: Home,
    /// The control API port (0 = any free port; tests).
    pub port: u16,
    /// What every child is given (`hub_port` is filled in once the port is bound).
    pub ctx: HubContext,
    /// Supervisor tunables (`state_file` is set to the home's).
    pub supervisor: SupervisorConfig,
    /// Shutdown deadline for all modules together.
    pub stop_timeout: Duration,
    /// Boot concurrency.
    pub boot_concurrency: usize,
    /// What the service manager passed for readiness and the watchdog (empty outside
    /// systemd).
    pub notify: notify::NotifyEnv,
    /// `JOURNAL_STREAM`: when it names the hub's stderr or stdout, the output is the
    /// journal and every module's lines go there under the module's own identifier.
    pub journal_stream: Option<String>,
    /// `--log-file`: the hub writes all its output to this file itself, rotated by size
    /// (`crate::logfile`), instead of to stdout or the journal.
    pub log_file: Option<crate::logfile::LogFileConfig>,
    /// How to start this hub again in place (`None`: in-place upgrades are refused).
    pub reexec: Option<upgrade::Reexec>,
    /// The hand-over document's descriptor, when this image replaced a running hub
    /// ([`handover::FD_ENV`]).
    pub handover_fd: Option<i32>,
}

/// How a hub that got as far as serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every module stopped on SIGTERM within the grace.
    Clean,
    /// Something had to be SIGKILLed, or the control API failed.
    Unclean,
    /// A second stop signal: every group was SIGKILLed at once; the process should exit now.
    Forced,
}

/// Why the hub did not get as far as serving. Nothing was spawned in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The async runtime could not be built.
    #[error("parachute serve: cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The signal handlers could not be installed.
    #[error("parachute serve: cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The control API's port could not be bound (held, or another failure).
    #[error(transparent)]
    Bind(#[from] bind::BindError),
    /// The bound listener could not be handed to tokio.
    #[error("parachute serve: cannot use the listener on 127.0.0.1:{port}: {source}")]
    Listener {
        /// The port.
        port: u16,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another hub holds this home's serve lock, or the lock file is unusable.
    #[error("parachute serve: {0}")]
    Locked(String),
    /// The operator token could not be loaded or minted.
    #[error("parachute serve: {0}")]
    Token(#[from] TokenError),
    /// The `--log-file` could not be opened.
    #[error("parachute serve: cannot open the log file {path}: {source}", path = path.display())]
    LogFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Writes one `[hub] …` line to stderr in a single write, so it never interleaves with
/// another line mid-way.
pub fn say(msg: &str) {
    let _ = std::io::stderr().lock().write_all(format!("[hub] {msg}\n").as_bytes());
}

/// Runs the hub until it is told to stop. Progress goes to the hub's log (`[hub] …` lines
/// on stderr: the service's own log, not a CLI message); errors are returned.
pub fn run(opts: ServeOptions) -> Result<Outcome, ServeError> {
    // First, so everything the hub says from here on is in its (bounded) log.
    let log = match &opts.log_file {
        Some(cfg) => Some(open_log(cfg)?),
        None => None,
    };
    #[cfg(target_os = "linux")]
    let opts = become_subreaper(opts);
    if let Err(e) = limits::raise_nofile() {
        say(&format!("could not raise the open-file limit ({e}); a connection flood exhausts it sooner."));
    }
    limits::private_log();
    limits::lean_malloc();
    // Read before anything else opens a descriptor: what the old image handed over.
    let received = opts.handover_fd.map(upgrade::receive);
    // Modules are forked (and an in-place upgrade execs) on this, the main thread; the
    // hub runs on another. See `Spawner::on_current_thread`: that is what lets a module
    // survive any number of upgrades.
    let (spawner, spawner_loop) = parachute_process::Spawner::on_current_thread();
    let quit = spawner.clone();
    let hub = std::thread::Builder::new()
        .name("parachute-hub".into())
        .spawn(move || {
            let outcome = run_hub(opts, log, received, spawner);
            quit.quit();
            outcome
        })
        .map_err(ServeError::Runtime)?;
    spawner_loop.run();
    hub.join().unwrap_or_else(|_| Err(ServeError::Runtime(std::io::Error::other("the hub thread panicked"))))
}

fn run_hub(
    opts: ServeOptions,
    log: Option<crate::logfile::RotatingLog>,
    received: Option<Result<(handover::Handover, Vec<u8>), handover::HandoverError>>,
    spawner: parachute_process::Spawner,
) -> Result<Outcome, ServeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let outcome = rt.block_on(serve(opts, log, received, spawner));
    if let Ok(Outcome::Forced) = outcome {
        // Second signal: every group was SIGKILLed; do not wait for anything else.
        rt.shutdown_background();
    } else {
        rt.shutdown_timeout(Duration::from_secs(1));
    }
    outcome
}

/// Every signal the hub answers (docs/cli.md, "Signals"). The rest of the catchable signals whose
/// default action would end the process are ignored with a log line ([`ignore_signals`]),
/// so nothing but SIGKILL (or a fault of the hub's own) ends it without a word.
/// Makes the hub a child subreaper, so orphans of a module's wrapper come back to it; then
/// every child of the hub is a module or an orphan of one, which the supervisor accounts for.
#[cfg(target_os = "linux")]
fn become_subreaper(mut opts: ServeOptions) -> ServeOptions {
    match parachute_process::set_child_subreaper() {
        Ok(()) => opts.supervisor.adopt_orphans = true,
        Err(e) => say(&format!(
            "could not become a child subreaper ({e}); orphans of module wrappers go to init instead."
        )),
    }
    opts
}

struct Signals {
    stop: StopSignals,
    hup: Signal,
    usr1: Signal,
    chld: Signal,
}

/// SIGTERM, SIGINT and SIGQUIT: each asks for a graceful stop; a second one kills.
struct StopSignals {
    term: Signal,
    int: Signal,
    quit: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        let signals = Signals {
            stop: StopSignals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                quit: signal(SignalKind::quit())?,
            },
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            chld: signal(SignalKind::child())?,
        };
        ignore_signals()?;
        Ok(signals)
    }
}

impl StopSignals {
    /// The next stop request (SIGTERM, SIGINT or SIGQUIT), by name.
    async fn requested(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.quit.recv() => "SIGQUIT",
        }
    }
}

/// Signals whose default action ends the process but that mean nothing to the hub: each
/// arrival is logged and otherwise ignored. (SIGPIPE is ignored by the Rust runtime: a
/// broken pipe is an `EPIPE` error where it happens. SIGILL, SIGFPE, SIGSEGV, SIGBUS and
/// SIGTRAP are left fatal: they mean the hub itself faulted, and returning from a handler
/// would fault again. Job-control stops keep their default.)
fn ignore_signals() -> std::io::Result<()> {
    #[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(unused_mut))]
    let mut named = vec![
        (libc::SIGUSR2, "SIGUSR2".to_owned()),
        (libc::SIGALRM, "SIGALRM".to_owned()),
        (libc::SIGVTALRM, "SIGVTALRM".to_owned()),
        (libc::SIGPROF, "SIGPROF".to_owned()),
        (libc::SIGXCPU, "SIGXCPU".to_owned()),
        (libc::SIGXFSZ, "SIGXFSZ".to_owned()),
        (libc::SIGIO, "SIGIO".to_owned()),
        (libc::SIGSYS, "SIGSYS".to_owned()),
    ];
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        named.push((libc::SIGPWR, "SIGPWR".to_owned()));
        named.push((libc::SIGSTKFLT, "SIGSTKFLT".to_owned()));
        // Real-time signals end a process by default too.
        for n in libc::SIGRTMIN()..=libc::SIGRTMAX() {
            named.push((n, format!("SIGRTMIN+{}", n - libc::SIGRTMIN())));
        }
    }
    for (raw, name) in named {
        let mut s = signal(SignalKind::from_raw(raw))?;
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                say(&format!("{name} received: the hub does not use it; ignored."));
            }
        });
    }
    Ok(())
}

/// SIGUSR1: one line per module with its state, so an operator can see what the hub
/// thinks without the API.
fn report_states(supervisor: &Supervisor) {
    let states = supervisor.list();
    say(&format!("SIGUSR1: {} module(s) supervised.", states.len()));
    for s in &states {
        say(&format!("  {}", boot::describe(s)));
    }
}

fn reap(supervisor: &Supervisor) {
    for (pid, exit) in parachute_process::reap_untracked_zombies(&supervisor.tracked_pids()) {
        say(&format!("reaped orphaned process {pid} ({exit})."));
    }
}

/// Opens the hub's own rotating log and makes it the process's stdout and stderr, saying
/// so first where the output went until now.
fn open_log(cfg: &crate::logfile::LogFileConfig) -> Result<crate::logfile::RotatingLog, ServeError> {
    use crate::logfile::{Redirect, RotatingLog};
    let fail = |source| ServeError::LogFile { path: cfg.path.clone(), source };
    // Opened without the redirection first: a failure is still reported where the output
    // went so far (a terminal, the manager's file).
    let log = RotatingLog::open(cfg.clone(), crate::logfile::Redirect::None).map_err(fail)?;
    say(&format!(
        "output goes to {} from here on (rotated at {} bytes, {} backups kept).",
        crate::text::field(&cfg.path.to_string_lossy()),
        cfg.max_bytes,
        cfg.backups
    ));
    drop(log);
    RotatingLog::open(cfg.clone(), Redirect::StdStreams).map_err(fail)
}

/// The hub, from signal installation to exit.
async fn serve(
    mut opts: ServeOptions,
    log: Option<crate::logfile::RotatingLog>,
    received: Option<Result<(handover::Handover, Vec<u8>), handover::HandoverError>>,
    spawner: parachute_process::Spawner,
) -> Result<Outcome, ServeError> {
    let mut signals = Signals::install().map_err(ServeError::Signals)?;
    // This image replaced a running hub (whether or not its document is usable): the
    // service manager was told the hub started long ago.
    let reexeced = received.is_some();
    let handed = match received {
        Some(Ok(h)) => Some(h),
        Some(Err(e)) => {
            say(&format!(
                "in-place upgrade: {e}; starting afresh (leftover modules are stopped and started again)."
            ));
            None
        }
        None => None,
    };
    // Descriptors the document named that this image has taken (each at most once).
    let mut taken = Vec::new();
    let std_listener = match handed.as_ref().and_then(|(doc, _)| upgrade::inherited_listener(doc, &mut taken))
    {
        Some(l) => l,
        None => bind::bind_loopback(opts.port)?,
    };
    let port = std_listener.local_addr().map(|a| a.port()).unwrap_or(opts.port);
    // Kept for an in-place upgrade: the socket stays open (and listening) while the API
    // server is down, so a client is never refused.
    let listener_keep = std_listener.try_clone().map_err(|source| ServeError::Listener { port, source })?;
    let listener = tokio::net::TcpListener::from_std(std_listener)
        .map_err(|source| ServeError::Listener { port, source })?;
    let home = opts.home.clone();
    // A full or read-only home does not stop the hub: what cannot be written is said once
    // and retried (see home_writes).
    let (lock, lock_failed) =
        match handed.as_ref().and_then(|(doc, _)| upgrade::inherited_lock(doc, &mut taken)) {
            Some(lock) => (lock, None),
            None => home_writes::lock_home(&home).map_err(ServeError::Locked)?,
        };
    let lock = Arc::new(std::sync::Mutex::new(lock));
    let mut writes = home_writes::HomeWrites::new(home.clone(), Arc::clone(&lock));
    if let Some(why) = lock_failed {
        writes.lock_failed(&why);
    }
    let loaded = OperatorToken::load_or_mint(&home.operator_token())?;
    let token = loaded.token;
    match (loaded.origin, loaded.unwritten) {
        (Origin::Minted, None) => {
            say(&format!("minted the operator token at {} (mode 0600).", home.operator_token().display()))
        }
        (Origin::Minted, Some(e)) => writes.token_failed(token.clone(), &e),
        (Origin::Existing, Some(e)) => {
            say(&format!("could not tighten the operator token file to mode 0600 ({e}); using it as it is."))
        }
        (Origin::Existing, None) => {}
    }
    // An in-place upgrade keeps the instance: its nonce (every module's process tag),
    // its start time; it counts one more generation.
    let (nonce, started_at, generation) = match &handed {
        Some((doc, _)) => (
            doc.instance.clone(),
            crate::rfc3339::parse(&doc.started_at).unwrap_or_else(time::OffsetDateTime::now_utc),
            doc.generation.saturating_add(1),
        ),
        None => (crate::token::random_hex(16)?, time::OffsetDateTime::now_utc(), 0),
    };
    let instance = HubInstance::new(std::process::id(), port, nonce, started_at);
    if let Err(e) = instance.write(&home.hub_instance()) {
        writes.instance_failed(instance.clone(), &e);
    }
    let retries = writes.spawn();

    opts.ctx.hub_port = port;
    let state_file = home.supervised_state();
    let config = SupervisorConfig {
        state_file: Some(state_file.clone()),
        process_tag: Some(instance.instance.clone()),
        ..opts.supervisor.clone()
    };
    // After an in-place upgrade the recorded children are this very hub's, being adopted.
    if handed.is_none() {
        for report in crate::supervisor::statefile::stop_recorded(&state_file, config.kill_timeout).await {
            say(&report.to_string());
        }
    }
    let to_journal = [std::io::stderr().as_fd(), std::io::stdout().as_fd()]
        .into_iter()
        .any(|fd| crate::supervisor::journal::is_journal_stream(opts.journal_stream.as_deref(), fd));
    let sink = match log {
        // Asked for explicitly: the file, even under a manager with a journal.
        Some(log) => OutputSink::Writer(Box::new(crate::logfile::AsyncLog::new(log))),
        None if to_journal => OutputSink::Journal(Default::default()),
        None => OutputSink::Stdout,
    };
    let supervisor = Supervisor::with_spawner(config, sink, spawner);
    // The state file names this hub's tag before any module starts, so a hub killed before
    // its first spawn still leaves the next boot a way to find what its modules started.
    // A home that cannot be written is reported by the writer, which keeps retrying.
    supervisor.claim_state_file(STATE_CLAIM_WAIT).await;
    if let Some((doc, logs)) = &handed {
        let notes = upgrade::adopt_all(&supervisor, doc, logs, &mut taken);
        let adopted = supervisor.list().len();
        say(&format!(
            "in-place upgrade (generation {generation}): build {} took over from build {}; {adopted} of {} module(s) \
             kept as they were.",
            build_id::current().unwrap_or("unknown"),
            crate::text::field(&doc.from_build),
            doc.modules.len()
        ));
        for n in notes {
            say(&n);
        }
    }
    let (upgrade_tx, mut upgrade_rx) = tokio::sync::mpsc::channel::<upgrade::Ask>(1);
    let resolver = Arc::new(boot::ModelResolver::new(home.clone(), opts.ctx.clone()));
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let beat = Arc::new(api::probes::LoopBeat::default());
    beat.beat();
    let state = Arc::new(ApiState {
        supervisor: supervisor.clone(),
        token,
        instance: instance.clone(),
        resolver: resolver.clone(),
        phase: phase_rx.clone(),
        beat: Arc::clone(&beat),
        generation,
        upgrade: opts.reexec.is_some().then_some(upgrade_tx),
    });
    let serve_api = |listener: tokio::net::TcpListener| {
        let mut closing = phase_rx.clone();
        tokio::spawn(api::serve(listener, Arc::clone(&state), async move {
            let _ = closing.wait_for(Phase::ends_streams).await;
        }))
    };
    let mut server = serve_api(listener);
    say(&format!(
        "listening on http://127.0.0.1:{port} (pid {}, home {}, instance {}, hub origin {}).",
        instance.pid,
        home.root().display(),
        instance.instance,
        opts.ctx.hub_origin.as_deref().unwrap_or("none")
    ));
    let notifier = notify::Notifier::new(&opts.notify, std::process::id());
    let mut readiness =
        if reexeced { notify::Readiness::already_sent() } else { notify::Readiness::begin(&notifier) };
    let (booted_tx, mut booted_rx) = tokio::sync::oneshot::channel::<()>();
    let boot_run = boot::boot(supervisor.clone(), resolver, opts.boot_concurrency, phase_rx.clone());
    let mut boot = tokio::spawn(async move {
        let out = boot_run.await;
        let _ = booted_tx.send(());
        out
    });

    let mut sweep = tokio::time::interval(REAP_SWEEP);
    // The serve loop's own tick: the liveness beat, the status line and the only watchdog
    // ping (a wedged loop stops pinging; the notifier is inert outside systemd).
    let mut tick = tokio::time::interval(notifier.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut booted = false;
    let mut api_failed = false;
    let which = loop {
        tokio::select! {
            which = signals.stop.requested() => break which,
            _ = signals.hup.recv() => say(
                "SIGHUP received: nothing to reload (services.json and .env are read at every start and restart; \
                 use `parachute restart <module>` to apply changes); ignored."
            ),
            _ = signals.usr1.recv() => report_states(&supervisor),
            _ = signals.chld.recv() => reap(&supervisor),
            _ = sweep.tick() => reap(&supervisor),
            Some(ask) = upgrade_rx.recv() => {
                let base = handover::Handover {
                    version: handover::FORMAT_VERSION,
                    hub_pid: std::process::id(),
                    boot_id: crate::supervisor::statefile::boot_id(),
                    instance: instance.instance.clone(),
                    started_at: crate::rfc3339::format(instance.started_at),
                    generation,
                    listener_fd: std::os::fd::AsRawFd::as_raw_fd(&listener_keep),
                    port,
                    lock_fds: home_writes::lock_fds(&lock),
                    from_build: build_id::current().unwrap_or("unknown").to_owned(),
                    modules: Vec::new(),
                };
                let Some(reexec) = opts.reexec.as_ref() else { continue };
                // Boot creates modules as it goes; one created after the freeze would be
                // started by an actor nobody froze, and be lost to the hand-over. So an
                // upgrade asked for during boot waits for it (the API keeps serving).
                if !booted {
                    if tokio::time::timeout(BOOT_BEFORE_UPGRADE, &mut booted_rx).await.is_err() {
                        let why = format!(
                            "the hub is still starting its modules after {BOOT_BEFORE_UPGRADE:?}; ask again once boot is done"
                        );
                        say(&format!("in-place upgrade refused: {why}"));
                        let _ = ask.reply.send(Err(upgrade::Refusal { unusable: false, why }));
                        continue;
                    }
                    booted = true;
                    beat.booted();
                    readiness.booted(&notifier, &supervisor.list());
                }
                let Some(binary) = upgrade_checked(&supervisor, reexec, &base, ask).await else { continue };
                // Answered "handing over": stop serving (the listener stays open), freeze, exec.
                let _ = phase_tx.send(Phase::Upgrading);
                if tokio::time::timeout(API_DRAIN, &mut server).await.is_err() {
                    server.abort();
                    let _ = (&mut server).await;
                }
                let ended = hand_over(&supervisor, reexec, &binary, &base, &mut signals.stop).await;
                let _ = phase_tx.send(Phase::Running);
                let served = listener_keep.try_clone().and_then(tokio::net::TcpListener::from_std);
                match served {
                    Ok(l) => server = serve_api(l),
                    Err(e) => {
                        say(&format!("the control API cannot serve again ({e}); shutting down so the service manager restarts the hub."));
                        api_failed = true;
                        break "control API failure";
                    }
                }
                match ended {
                    HandOverEnd::Failed(why) => say(&format!(
                        "in-place upgrade failed: {why}; this build carries on, every module as it was."
                    )),
                    HandOverEnd::Stop(which) => {
                        say(&format!("in-place upgrade abandoned: {which} arrived during the hand-over."));
                        break which;
                    }
                }
            }
            _ = tick.tick() => {
                beat.beat();
                if notifier.active() {
                    readiness.tick(&notifier, &supervisor.list());
                }
            }
            _ = &mut booted_rx, if !booted => {
                booted = true;
                beat.booted();
                readiness.booted(&notifier, &supervisor.list());
            }
            res = &mut server => {
                let why = match res {
                    Ok(Ok(())) => "it ended".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                say(&format!("the control API failed ({why}); shutting down so the service manager restarts the hub."));
                api_failed = true;
                break "control API failure";
            }
        }
    };

    let running = supervisor.list().len();
    notifier.stopping(&format!("{which}: stopping {running} module(s)"));
    say(&format!(
        "{which}: stopping {running} module(s) (grace {:?}; send SIGTERM/SIGINT/SIGQUIT again to kill them at once).",
        opts.stop_timeout
    ));
    let _ = phase_tx.send(Phase::Stopping);
    // Boot abandons its pending starts; once it has returned, every module it started is
    // registered, so the shutdown below covers it.
    if tokio::time::timeout(BOOT_ABANDON, &mut boot).await.is_err() {
        boot.abort();
    }
    let shutdown = supervisor.shutdown(opts.stop_timeout);
    tokio::pin!(shutdown);
    let report = loop {
        tokio::select! {
            r = &mut shutdown => break r,
            _ = signals.stop.requested() => {
                stop_retries(retries).await;
                return force_exit(&supervisor, &instance, &home);
            }
            _ = signals.hup.recv() => say("SIGHUP received during shutdown; ignored."),
            _ = signals.usr1.recv() => report_states(&supervisor),
            _ = signals.chld.recv() => reap(&supervisor),
        }
    };
    let _ = phase_tx.send(Phase::Closing);
    if !api_failed && tokio::time::timeout(API_DRAIN, &mut server).await.is_err() {
        server.abort();
    }
    reap(&supervisor);
    stop_retries(retries).await;
    remove_instance(&instance, &home);
    let outcome = if report.clean && !api_failed {
        say("stopped cleanly.");
        Outcome::Clean
    } else {
        if !report.killed.is_empty() {
            say(&format!(
                "stopped; SIGKILLed after the {:?} grace: {}.",
                opts.stop_timeout,
                report.killed.join(", ")
            ));
        }
        Outcome::Unclean
    };
    Ok(outcome)
}

/// The checks before an in-place upgrade: the binary is trusted and passed its dry run.
/// Answers `ask` either way; `Some(binary)` when the hub should hand over to it now.
async fn upgrade_checked(
    supervisor: &Supervisor,
    reexec: &upgrade::Reexec,
    base: &handover::Handover,
    ask: upgrade::Ask,
) -> Option<std::path::PathBuf> {
    let refuse = |ask: upgrade::Ask, refusal: upgrade::Refusal| {
        say(&format!("in-place upgrade refused: {}", refusal.why));
        let _ = ask.reply.send(Err(refusal));
    };
    let binary = match upgrade::trusted_binary(&reexec.program, nix::unistd::geteuid().as_raw()) {
        Ok(b) => b,
        Err(why) => {
            refuse(ask, upgrade::Refusal { unusable: false, why });
            return None;
        }
    };
    match upgrade::dry_run(supervisor.spawner(), &binary, &reexec.env, base).await {
        Ok(summary) => say(&format!("in-place upgrade: the new binary's dry run: {summary}")),
        Err(refusal) => {
            refuse(ask, refusal);
            return None;
        }
    }
    let accepted = upgrade::Accepted {
        status: "handing_over",
        binary: binary.to_string_lossy().into_owned(),
        from_build: build_id::current().map(str::to_owned),
        to_build: build_id::of_file(&binary),
        pid: std::process::id(),
        generation: base.generation,
    };
    say(&format!(
        "in-place upgrade: handing over to {} (build {} → {}).",
        crate::text::field(&accepted.binary),
        accepted.from_build.as_deref().unwrap_or("unknown"),
        accepted.to_build.as_deref().unwrap_or("unknown")
    ));
    ask.reply.send(Ok(accepted)).ok().map(|()| binary)
}

/// Why [`hand_over`] returned (it returns only when the exec did not happen).
enum HandOverEnd {
    /// Something failed, with why.
    Failed(String),
    /// A stop signal arrived during the hand-over: the hub stops instead.
    Stop(&'static str),
}

/// Freezes every module, flushes, and execs `binary` with the hand-over. Returns only
/// if that did not happen; every module has resumed by then. A stop signal that arrived
/// since the upgrade began is honoured here, right before the exec, instead of being lost
/// with the old image's handlers.
async fn hand_over(
    supervisor: &Supervisor,
    reexec: &upgrade::Reexec,
    binary: &std::path::Path,
    base: &handover::Handover,
    stop: &mut StopSignals,
) -> HandOverEnd {
    use futures_util::FutureExt;
    let freeze = match supervisor.freeze(upgrade::FREEZE_WITHIN).await {
        Ok(f) => f,
        Err(why) => return HandOverEnd::Failed(why),
    };
    if !supervisor.flush_output(Duration::from_secs(2)).await {
        say(
            "in-place upgrade: the output did not drain in 2 s; lines still queued are in the module logs only.",
        );
    }
    let (doc, logs) = upgrade::document(base, &freeze);
    if let Some(which) = stop.requested().now_or_never() {
        return HandOverEnd::Stop(which);
    }
    let err = upgrade::exec(supervisor.spawner(), reexec, binary, &doc, &logs).await.to_string();
    freeze.thaw();
    HandOverEnd::Failed(err)
}

/// Ends the retries of failed home writes, so none lands after this point.
async fn stop_retries(retries: Option<tokio::task::JoinHandle<()>>) {
    if let Some(task) = retries {
        task.abort();
        let _ = task.await;
    }
}

fn force_exit(supervisor: &Supervisor, instance: &HubInstance, home: &Home) -> Result<Outcome, ServeError> {
    supervisor.kill_all_now();
    say("second signal: SIGKILLed every module's process group; exiting now.");
    remove_instance(instance, home);
    Ok(Outcome::Forced)
}

/// Removes `hub-instance.json` if it still names this instance.
fn remove_instance(instance: &HubInstance, home: &Home) {
    let path = home.hub_instance();
    match HubInstance::read(&path) {
        Ok(Some(cur)) if cur.instance == instance.instance => {
            if let Err(e) = HubInstance::clear(&path) {
                say(&format!("could not remove {}: {e}", path.display()));
            }
        }
        _ => {}
    }
}

/// The hub's canonical origin from the environment, resolved once at boot (R17): an
/// explicit `PARACHUTE_HUB_ORIGIN`, else `RENDER_EXTERNAL_URL`, else
/// `https://<FLY_APP_NAME>.fly.dev`. Only absolute `http(s)` origins count; trailing
/// slashes are dropped. An unusable value is an error naming the variable.
pub fn hub_origin(
    explicit: Option<&str>,
    render: Option<&str>,
    fly_app: Option<&str>,
) -> Result<Option<String>, String> {
    let check = |var: &str, v: &str| -> Result<Option<String>, String> {
        let v = v.trim_end_matches('/');
        if v.is_empty() {
            return Ok(None);
        }
        let rest = v.strip_prefix("https://").or_else(|| v.strip_prefix("http://"));
        match rest {
            Some(host)
                if !host.is_empty()
                    && !host.contains(['/', '?', '#', '@'])
                    && !v.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                Ok(Some(v.to_owned()))
            }
            _ => Err(format!(
                "{var}={v:?} is not an origin like https://hub.example.com (scheme and host only); fix or unset it."
            )),
        }
    };
    if let Some(o) = explicit.map(|v| check("PARACHUTE_HUB_ORIGIN", v)).transpose()?.flatten() {
        return Ok(Some(o));
    }
    if let Some(o) = render.map(|v| check("RENDER_EXTERNAL_URL", v)).transpose()?.flatten() {
        return Ok(Some(o));
    }
    match fly_app.filter(|a| !a.is_empty()) {
        Some(app) if app.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
            Ok(Some(format!("https://{app}.fly.dev")))
        }
        Some(app) => Err(format!("FLY_APP_NAME={app:?} is not a valid app name; fix or unset it.")),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::hub_origin;

    #[test]
    fn origin_ladder_and_sanitizing() {
        assert_eq!(hub_origin(None, None, None), Ok(None));
        assert_eq!(
            hub_origin(Some("https://h.example/"), Some("https://r"), None),
            Ok(Some("https://h.example".into()))
        );
        assert_eq!(
            hub_origin(Some(""), Some("https://r.onrender.com"), None),
            Ok(Some("https://r.onrender.com".into()))
        );
        assert_eq!(hub_origin(None, None, Some("my-app")), Ok(Some("https://my-app.fly.dev".into())));
        for bad in ["hub.example", "https://h/x", "https://a b", "ftp://h", "https://h\n"] {
            assert!(hub_origin(Some(bad), None, None).is_err(), "{bad:?}");
        }
        assert!(hub_origin(None, None, Some("a/b")).is_err());
    }
}
