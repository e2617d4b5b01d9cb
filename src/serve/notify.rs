//! The hub as a `Type=notify` service: readiness, a live status line, the watchdog and
//! the stop notice, through the `sd-notify` crate.
//!
//! * `READY=1` goes out once boot has returned, that is once every module of services.json
//!   has passed its readiness gate or reported why it did not start, so `After=` on the hub
//!   means "its modules answer". While boot makes progress (a module's state changes) the
//!   start window is pushed out with `EXTEND_TIMEOUT_USEC`; after [`START_WINDOW`] without
//!   progress the hub reports ready anyway, with the modules still pending named in
//!   `STATUS=`, rather than being killed by its manager's start timeout.
//! * `STATUS=` is one line, `3/4 modules up; scribe crashed (exit 1), retry in 8s`, sent
//!   when it changes.
//! * `WATCHDOG=1` is sent only by the serve loop's own tick, after it has read every
//!   module's state through the supervisor's registry: a wedged loop or registry stops the
//!   pings and the manager restarts the hub. No independent timer task pings.
//! * `STOPPING=1` when shutdown begins.
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) the notifier is inert and nothing changes. The
//! socket and watchdog variables come from the CLI's environment snapshot; every module's
//! environment has them removed (`supervisor::MANAGER_PROTOCOL_VARS`), so a module can
//! never speak for the hub.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::supervisor::{ModuleState, ModuleStatus};

/// How long boot may go without progress before the hub reports ready anyway; also the
/// start window each `EXTEND_TIMEOUT_USEC` asks for (a little longer, so the report wins).
pub const START_WINDOW: Duration = Duration::from_secs(30);

/// The extension asked for on each sign of progress.
const EXTEND_BY: Duration = Duration::from_secs(35);

/// Status refresh (and watchdog ping) period when no watchdog asks for faster.
const STATUS_TICK: Duration = Duration::from_secs(1);

/// What the manager handed the hub, from the environment snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyEnv {
    /// `NOTIFY_SOCKET`.
    pub socket: Option<String>,
    /// `WATCHDOG_USEC`.
    pub watchdog_usec: Option<String>,
    /// `WATCHDOG_PID`.
    pub watchdog_pid: Option<String>,
}

/// Talks to the service manager; every method is a no-op outside systemd.
#[derive(Debug, Clone)]
pub struct Notifier {
    active: bool,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier for this process (`pid`) from what the manager passed.
    pub fn new(env: &NotifyEnv, pid: u32) -> Notifier {
        let active = env.socket.as_deref().is_some_and(|s| !s.is_empty());
        let for_us =
            env.watchdog_pid.as_deref().and_then(|p| p.trim().parse::<u32>().ok()).is_none_or(|p| p == pid);
        let watchdog = env
            .watchdog_usec
            .as_deref()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us && active)
            .map(Duration::from_micros);
        Notifier { active, watchdog }
    }

    /// Whether a manager listens.
    pub fn active(&self) -> bool {
        self.active
    }

    /// How often the serve loop ticks: a quarter of the watchdog period (well inside the
    /// manager's "at least every half" advice), at most [`STATUS_TICK`].
    pub fn tick(&self) -> Duration {
        self.watchdog.map_or(STATUS_TICK, |w| (w / 4).clamp(Duration::from_millis(50), STATUS_TICK))
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.active {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!("could not notify the service manager: {e}");
        }
    }

    /// `READY=1` with the status line.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STATUS=`.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// `EXTEND_TIMEOUT_USEC=` (boot is still making progress).
    pub fn extend_start(&self) {
        let usec = u32::try_from(EXTEND_BY.as_micros()).unwrap_or(u32::MAX);
        self.send(&[NotifyState::ExtendTimeoutUsec(usec)]);
    }

    /// `WATCHDOG=1`, if the manager asked for a watchdog.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// `STOPPING=1` with the reason.
    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }
}

/// Whether a module counts as up: running, past its readiness gate, no start error.
pub fn is_up(m: &ModuleState) -> bool {
    m.status == ModuleStatus::Running && m.start_error.is_none() && m.ready_at.is_some()
}

/// What a module that is not up is doing, in a few words.
pub fn not_up(m: &ModuleState, now: time::OffsetDateTime) -> String {
    let exit = match (m.last_exit_code, m.last_exit_signal) {
        (Some(Some(c)), _) => format!(" (exit {c})"),
        (Some(None), Some(n)) => nix::sys::signal::Signal::try_from(n)
            .map_or_else(|_| format!(" (signal {n})"), |s| format!(" ({})", s.as_str())),
        (Some(None), None) => " (killed by a signal)".to_owned(),
        (None, _) => String::new(),
    };
    let name = crate::text::field(&m.short);
    match (m.status, &m.start_error) {
        (ModuleStatus::Starting, _) => format!("{name} starting"),
        (ModuleStatus::Running, Some(e)) => format!("{name} not ready ({})", e.kind.wire_name()),
        (ModuleStatus::Running, None) if m.ready_at.is_some() => format!("{name} up"),
        (ModuleStatus::Running, None) => format!("{name} waiting for its port"),
        (ModuleStatus::Stopped, _) => format!("{name} stopped"),
        (ModuleStatus::Restarting, _) => {
            let retry = m
                .next_restart_at
                .as_deref()
                .and_then(|t| {
                    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
                })
                .map(|t| (t - now).whole_seconds().max(0))
                .map_or_else(|| ", restarting".to_owned(), |s| format!(", retry in {s}s"));
            format!("{name} crashed{exit}{retry}")
        }
        (ModuleStatus::Crashed, Some(e)) => format!("{name} did not start ({})", e.kind.wire_name()),
        (ModuleStatus::Crashed, None) => format!("{name} crashed{exit}, gave up"),
    }
}

/// The one-line status: `N/M modules up`, then what every other module is doing.
pub fn status_line(modules: &[ModuleState], now: time::OffsetDateTime) -> String {
    let up = modules.iter().filter(|m| is_up(m)).count();
    let mut line = format!("{up}/{} modules up", modules.len());
    for m in modules.iter().filter(|m| !is_up(m)) {
        line.push_str("; ");
        line.push_str(&not_up(m, now));
    }
    line
}

/// Where the hub is in telling its manager it has started.
#[derive(Debug)]
pub struct Readiness {
    sent: bool,
    last_progress: tokio::time::Instant,
    last_status: String,
}

impl Readiness {
    /// Boot has begun: ask for the start window at once.
    pub fn begin(n: &Notifier) -> Readiness {
        n.extend_start();
        Readiness { sent: false, last_progress: tokio::time::Instant::now(), last_status: String::new() }
    }

    /// After an in-place upgrade the manager was told long ago: no `EXTEND_TIMEOUT_USEC`,
    /// no second `READY=1` (systemd would take one outside a start job as a spurious
    /// notification); status lines and watchdog pings go on as before.
    pub fn already_sent() -> Readiness {
        Readiness { sent: true, last_progress: tokio::time::Instant::now(), last_status: String::new() }
    }

    /// One tick of the serve loop with the modules' current states: status on change,
    /// start-window extension on progress, ready-anyway after [`START_WINDOW`] of none,
    /// then the watchdog ping.
    pub fn tick(&mut self, n: &Notifier, modules: &[ModuleState]) {
        let status = status_line(modules, time::OffsetDateTime::now_utc());
        let changed = status != self.last_status;
        if changed {
            self.last_status.clone_from(&status);
        }
        if !self.sent {
            if changed {
                self.last_progress = tokio::time::Instant::now();
                n.extend_start();
            } else if self.last_progress.elapsed() >= START_WINDOW {
                self.sent = true;
                n.ready(&format!(
                    "degraded: boot made no progress for {}s; {status}",
                    START_WINDOW.as_secs()
                ));
            }
            if changed && !self.sent {
                n.status(&format!("starting: {status}"));
            }
        } else if changed {
            n.status(&status);
        }
        n.watchdog();
    }

    /// Boot has returned: every module passed its gate or reported its error.
    pub fn booted(&mut self, n: &Notifier, modules: &[ModuleState]) {
        let status = status_line(modules, time::OffsetDateTime::now_utc());
        if !self.sent {
            self.sent = true;
            n.ready(&status);
        } else {
            n.status(&status);
        }
        self.last_status = status;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::{StartError, StartErrorKind};

    fn m(short: &str, status: ModuleStatus) -> ModuleState {
        ModuleState::new(short, status)
    }

    #[test]
    fn status_line_counts_up_modules_and_says_what_the_others_do() {
        let now = time::OffsetDateTime::now_utc();
        let mut scribe = m("scribe", ModuleStatus::Restarting);
        scribe.last_exit_code = Some(Some(1));
        scribe.next_restart_at = Some(crate::rfc3339::format(now + time::Duration::seconds(8)));
        let mut notes = m("notes", ModuleStatus::Crashed);
        notes.start_error = Some(StartError {
            kind: StartErrorKind::MissingDependency { binary: "notes".into() },
            description: "x".into(),
            at: String::new(),
        });
        let up = |short: &str| ModuleState {
            ready_at: Some(crate::rfc3339::now()),
            ..m(short, ModuleStatus::Running)
        };
        let all = [up("vault"), scribe, notes, up("x"), m("gated", ModuleStatus::Running)];
        assert_eq!(
            status_line(&all, now),
            "2/5 modules up; scribe crashed (exit 1), retry in 8s; notes did not start (missing_dependency); \
             gated waiting for its port"
        );
        assert_eq!(status_line(&all[..1], now), "1/1 modules up");
        assert_eq!(status_line(&[], now), "0/0 modules up");
    }

    #[test]
    fn a_hostile_module_name_cannot_inject_a_second_notify_field() {
        let line = status_line(&[m("a\nREADY=1", ModuleStatus::Stopped)], time::OffsetDateTime::now_utc());
        assert!(!line.contains('\n'), "{line:?}");
    }

    #[test]
    fn the_watchdog_is_ours_only_when_the_manager_says_so() {
        let env = |pid: Option<&str>| NotifyEnv {
            socket: Some("/run/x".into()),
            watchdog_usec: Some("2000000".into()),
            watchdog_pid: pid.map(str::to_owned),
        };
        assert_eq!(Notifier::new(&env(None), 7).tick(), Duration::from_millis(500));
        assert_eq!(Notifier::new(&env(Some("7")), 7).tick(), Duration::from_millis(500));
        // Meant for another process: no watchdog here.
        assert_eq!(Notifier::new(&env(Some("8")), 7).tick(), STATUS_TICK);
        let outside = Notifier::new(&NotifyEnv::default(), 7);
        assert!(!outside.active());
        assert_eq!(outside.tick(), STATUS_TICK);
    }
}
