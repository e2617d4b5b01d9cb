//! `parachute serve`: the hub runtime in the foreground (see [`crate::serve`]).
//!
//! This file only turns flags and the environment snapshot into [`ServeOptions`]; the port
//! comes from `--port`, else `PORT` (platforms such as Render set it), else 1939.

use std::time::Duration;

use super::HostEnv;
use super::exit::Code;
use super::host::{HomeArg, resolve_home};
use crate::model::modules::HubContext;
use crate::serve::bind::BindError;
use crate::serve::{self, Outcome, ServeError, ServeOptions};
use crate::supervisor::SupervisorConfig;

/// Arguments of `parachute serve`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Binds the control API on 127.0.0.1 first (a held port exits 7 naming the holder, with no \
module started), writes <home>/hub-instance.json and <home>/operator.token (0600, created \
once), then starts every module of <home>/services.json. A full or read-only home does not \
stop it: what cannot be written is said once and retried every few seconds. SIGTERM or SIGINT \
stops all modules in parallel within --stop-timeout and exits; a second signal kills them at once.

Exit codes: 0 clean shutdown; 1 startup failed; 2 bad flags or PORT; 7 the port is held; \
8 shutdown was not clean (something had to be SIGKILLed).

With --log-file PATH the hub writes everything it prints to PATH itself and rotates it: \
before PATH would pass --log-max-bytes it becomes PATH.1 (PATH.1 becomes PATH.2, … the \
oldest beyond --log-backups is deleted), always between two lines, so no line is lost or \
split.")]
pub struct Args {
    /// Where the Parachute home is.
    #[command(flatten)]
    pub home: HomeArg,
    /// The control API port on 127.0.0.1 (default: $PORT, else 1939).
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Seconds all modules together get to stop on shutdown before they are SIGKILLed.
    #[arg(long, value_name = "SECS", default_value_t = serve::DEFAULT_STOP_TIMEOUT.as_secs_f64())]
    pub stop_timeout: f64,
    /// First delay before a crashed module is respawned, in milliseconds; it doubles per
    /// crash inside the window (capped at 30 s). 0 respawns at once.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub restart_delay_ms: u64,
    /// A module that crashes this many times within --crash-window-secs is left `crashed`
    /// until an operator starts it again.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_crashes: u32,
    /// The sliding window the crash budget counts in, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub crash_window_secs: u64,
    /// Run as root even on a home another user owns or can write (that user would choose,
    /// through services.json, what root runs). Written into the unit by
    /// `unit install --user root`; otherwise root refuses such a home.
    #[arg(long)]
    pub allow_root: bool,
    /// Write all of the hub's output (every module's prefixed lines, the hub's own lines)
    /// to this file, rotated by size, instead of to stdout or the journal. launchd's hub
    /// plist passes it, because launchd never rotates a log; a container may.
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<std::path::PathBuf>,
    /// With --log-file: the file is rotated before it would grow past this many bytes
    /// (at least 4096).
    #[arg(long, value_name = "BYTES", default_value_t = crate::logfile::DEFAULT_MAX_BYTES,
          value_parser = clap::value_parser!(u64).range(crate::logfile::MIN_MAX_BYTES..), requires = "log_file")]
    pub log_max_bytes: u64,
    /// With --log-file: rotated files kept (`<PATH>.1` newest … `<PATH>.<N>`); the log never
    /// holds more than BYTES × (N + 1) plus one line. 0 empties the file instead.
    #[arg(long, value_name = "N", default_value_t = crate::logfile::DEFAULT_BACKUPS,
          value_parser = clap::value_parser!(u32).range(..=i64::from(crate::logfile::MAX_BACKUPS)), requires = "log_file")]
    pub log_backups: u32,
    /// The in-place upgrade's dry run (issue 17), run by the hub on a new binary before it
    /// execs it: read the hand-over document on descriptor FD, check this binary can take
    /// over (format version, written by its parent hub), print one line and exit 0 — or
    /// exit 1 with the reason. Starts nothing.
    #[arg(long, value_name = "FD", hide = true)]
    pub check_handover: Option<i32>,
}

/// Runs `serve`.
pub fn run(args: Args, env: &HostEnv) -> Code {
    if let Some(fd) = args.check_handover {
        let parent = u32::try_from(nix::unistd::getppid().as_raw()).unwrap_or(0);
        return match serve::handover::check(fd, parent) {
            Ok(summary) => {
                println!("{summary}");
                Code::Success
            }
            Err(e) => {
                eprintln!("parachute serve --check-handover: {e}");
                Code::Failure
            }
        };
    }
    let home = match resolve_home(&args.home, env) {
        Ok(h) => h,
        Err(c) => return c,
    };
    if nix::unistd::geteuid().is_root()
        && !args.allow_root
        && let Some(why) = crate::privsep::root_hub_refusal(home.root())
    {
        eprintln!(
            "parachute serve: refusing to run as root on {}: {why}, so that user would choose the commands root runs. \
             Run the hub as that user (a system unit's User=), or pass --allow-root if root really should run it.",
            home.root().display()
        );
        return Code::Usage;
    }
    let port = match (args.port, env.get("PORT")) {
        (Some(p), _) => p,
        (None, Some(raw)) if !raw.is_empty() => match raw.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                eprintln!("parachute serve: PORT must be 1..65535, got {raw:?}.");
                return Code::Usage;
            }
        },
        _ => crate::model::names::HUB_PORT,
    };
    if !(args.stop_timeout.is_finite() && args.stop_timeout >= 0.0 && args.stop_timeout <= 3600.0) {
        eprintln!("parachute serve: --stop-timeout must be between 0 and 3600 seconds.");
        return Code::Usage;
    }
    let hub_origin = match serve::hub_origin(
        env.get("PARACHUTE_HUB_ORIGIN"),
        env.get("RENDER_EXTERNAL_URL"),
        env.get("FLY_APP_NAME"),
    ) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("parachute serve: {msg}");
            return Code::Usage;
        }
    };
    let ctx = HubContext {
        hub_port: port,
        hub_origin,
        inherited_path: env.get("PATH").unwrap_or("/usr/local/bin:/usr/bin:/bin").to_owned(),
        user_home: super::host::own_home(env),
        extra_path: env.get("PARACHUTE_EXTRA_PATH").map(str::to_owned),
        // The hand-over descriptor of an in-place upgrade is the hub's own business.
        base_env: env
            .vars()
            .filter(|(k, _)| k.as_os_str() != serve::handover::FD_ENV)
            .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v.to_str()?.to_owned())))
            .collect(),
    };
    // The unit's crash-loop ceiling (launchd has none of its own; see boot_budget).
    if let Some(raw) = env.get(crate::boot_budget::ENV) {
        let budget = match crate::boot_budget::Budget::parse(raw) {
            Ok(b) => b,
            Err(msg) => {
                eprintln!("parachute serve: {msg}.");
                return Code::Usage;
            }
        };
        match crate::boot_budget::record(&home, budget, std::time::SystemTime::now()) {
            Ok(crate::boot_budget::Verdict::Within { .. }) => {}
            Ok(crate::boot_budget::Verdict::Exceeded { starts }) => {
                serve::say(&crate::boot_budget::exceeded_message(budget, starts));
                return Code::Success;
            }
            Err(e) => serve::say(&format!(
                "could not record this start in {} ({e}); the crash-loop ceiling is off for this start.",
                crate::boot_budget::path(&home).display()
            )),
        }
    }
    let outcome = serve::run(ServeOptions {
        home,
        port,
        ctx,
        supervisor: SupervisorConfig {
            restart_delay: Duration::from_millis(args.restart_delay_ms),
            max_crashes_in_window: args.max_crashes,
            crash_window: Duration::from_secs(args.crash_window_secs),
            ..SupervisorConfig::default()
        },
        stop_timeout: Duration::from_secs_f64(args.stop_timeout),
        boot_concurrency: serve::BOOT_CONCURRENCY,
        notify: serve::notify::NotifyEnv {
            socket: env.get("NOTIFY_SOCKET").map(str::to_owned),
            watchdog_usec: env.get("WATCHDOG_USEC").map(str::to_owned),
            watchdog_pid: env.get("WATCHDOG_PID").map(str::to_owned),
        },
        journal_stream: env.get("JOURNAL_STREAM").map(str::to_owned),
        log_file: args.log_file.map(|path| crate::logfile::LogFileConfig {
            path,
            max_bytes: args.log_max_bytes,
            backups: args.log_backups,
        }),
        reexec: reexec(env),
        handover_fd: env.get(serve::handover::FD_ENV).and_then(|v| v.parse().ok()),
    });
    match outcome {
        Ok(Outcome::Clean) => Code::Success,
        Ok(Outcome::Unclean | Outcome::Forced) => Code::UncleanShutdown,
        Err(e) => {
            eprintln!("{e}");
            match e {
                ServeError::Bind(BindError::Held { .. }) => Code::PortHeld,
                _ => Code::Failure,
            }
        }
    }
}

/// How this hub was started, for an in-place upgrade to start it again: the binary at the
/// path it was run from (`argv[0]` made absolute when it names a path — under a service
/// manager, the unit's `ExecStart` path — else the file the kernel ran), the same arguments
/// and the same environment. Resolved now, at boot: after a package replaced the file, the
/// running image's own path reads "(deleted)".
fn reexec(env: &HostEnv) -> Option<serve::upgrade::Reexec> {
    let mut argv = std::env::args_os();
    let arg0 = std::path::PathBuf::from(argv.next()?);
    let program = if arg0.components().count() > 1 {
        std::path::absolute(&arg0).ok()?
    } else {
        std::env::current_exe().ok()?
    };
    Some(serve::upgrade::Reexec {
        program,
        args: argv.collect(),
        env: env
            .vars()
            .filter(|(k, _)| k.as_os_str() != serve::handover::FD_ENV)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}
