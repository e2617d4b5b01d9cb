//! `parachute migrate --to-supervised` and `--teardown`: the resumable cutover from the
//! legacy detached daemons (a hub and modules started with pidfiles) to one hub supervised
//! by the platform's service manager.
//!
//! The shape follows Horust: deciding and doing are separate. [`plan::plan`] is a pure
//! function of the journal and of what this run has observed; [`run`] applies the one step
//! it names, journals it ([`journal`], atomic writes) and asks again. A crash at any point
//! leaves a journal saying which steps completed, and a plain re-run continues from there;
//! each journaled step is trusted only while its effect still holds, and a box that is
//! already supervised-healthy with no legacy daemon is finished (verified) whatever the
//! journal holds. A [`lock`] keeps every writer of the hub unit (cutover, teardown,
//! package hooks, `parachute unit`) from interleaving.
//!
//! # The state space
//!
//! A kill can land at any instant, so a re-run meets any journal position (none, steps
//! 1–9, finished, other parameters) × any observed box. [`plan::plan`] decides from both:
//!
//! | observed now | next step |
//! |---|---|
//! | no manager | `no-manager`, nothing done |
//! | a legacy daemon alive (whatever else) | 2 preflight, then 3–9 (3 stops a unit left running) |
//! | daemons gone, no unit file | 3, then 4–9 |
//! | daemons gone, unit written and stopped | the first unjournaled step after 3, through 9 (7 right before 8) |
//! | daemons gone, unit active not healthy, start journaled | 9 (a bounded wait for the starting hub) |
//! | daemons gone, unit active/enabled not healthy, start not journaled | 3 (stops it), then 4–9 |
//! | supervised-healthy, no legacy daemon | `already-migrated` (fresh journal), else 5 if unjournaled, then 9 |
//!
//! Every row either ends (nothing can or need be done) or runs a step whose success moves
//! the box down the table: daemons are only ever stopped, a unit is only started after the
//! ports are checked, and a healthy hub is never stopped, swept or blocked by its own
//! ports. `plan.rs` tests walk every journal position × every row
//! (`state_space_every_state_has_a_next_step_that_makes_progress`); the acceptance test
//! SIGKILLs real cutovers at 30 moments spread uniformly over a clean run and re-runs each
//! once. `docs/migrate.md` has the long form.
//!
//! ```text
//!            ┌──────────┐ manager unreachable ───────────────────────────► no-manager
//!  start ──► │ 1 DETECT │ a process or port fact cannot be established ──────► unverifiable
//!            │          │ unit active + /health instance == hub-instance.json
//!            └────┬─────┘   instance and its pid == manager MainPID, no legacy ► already-migrated
//!                 ▼
//!          2 PREFLIGHT (read-only; repeated until step 4 is done)
//!            `<exec> --version` fails ────────────────────────────────────► write-failed
//!            a port holder not attributable to this box ──────────────────► port-stuck
//!                 ▼                                              (nothing stopped)
//!          3 WRITE UNIT, not started (stop a unit left active by an earlier attempt)
//!            manager error ────────────────────────────────► write-failed / no-manager
//!                 ▼
//!          4 STOP LEGACY: identity-verified pidfile pids, process groups,
//!            SIGTERM → one shared grace → SIGKILL; reused pids never signalled
//!                 ▼
//!          5 DISABLE STALE per-module units (never fatal)
//!                 ▼
//!          6 SWEEP attributable orphans on every declared port (never the foreign)
//!                 ▼
//!          7 VERIFY FREE (repeated on every run until the start) ────────► port-stuck
//!                 ▼
//!          8 START: satisfied if already healthy; else a last port check (the unit's
//!            own tree excepted), install + enable + start ─► start-failed / verify-timeout
//!                 ▼
//!          9 VERIFY: /health from MainPID's instance, every module running with
//!                 │  its port bound by its own tree, under one deadline ─► verify-timeout
//!                 │  a module crashed / stopped / unsupervised ─────────► module-failed
//!                 ▼
//!              migrated
//! ```
//!
//! Failures at 8 and 9 forget the journaled start, so the re-run stops the unit (step 3)
//! and goes again instead of trusting a start that did not work (upstream W21). Every
//! failure reports the true state of the box, read after the fact ([`report`]).
//!
//! What the legacy box looks like and which processes may be stopped is in [`legacy`];
//! stale per-module units in [`stale_units`]; teardown in [`mod@teardown`].

pub mod explain;
pub mod journal;
pub mod legacy;
pub mod lock;
pub mod plan;
pub mod probe;
pub mod report;
pub mod run;
pub mod stale_units;
mod steps;
pub mod teardown;

use std::path::PathBuf;
use std::time::Duration;

use parachute_manager::UnitSpec;

use crate::model::home::Home;

pub use plan::Outcome;
pub use report::{Event, Report, Sink, TeardownOutcome, TeardownReport};
pub use run::migrate;
pub use teardown::{teardown, teardown_within};

/// Waits of the cutover. Each is one shared budget, not a per-item timeout.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// SIGTERM → SIGKILL grace, for all legacy processes (or all orphans) together.
    pub stop_grace: Duration,
    /// How long SIGKILLed processes get to disappear.
    pub kill_wait: Duration,
    /// How long step 7 waits for every declared port to be free.
    pub port_free: Duration,
    /// How long step 9 waits for the hub and its modules.
    pub verify: Duration,
    /// One HTTP probe.
    pub http: Duration,
    /// `<exec> --version`.
    pub exec: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            stop_grace: Duration::from_secs(10),
            kill_wait: Duration::from_secs(3),
            port_free: Duration::from_secs(5),
            verify: Duration::from_secs(45),
            http: Duration::from_secs(2),
            exec: Duration::from_secs(10),
        }
    }
}

/// Everything a cutover run needs, decided by the CLI.
#[derive(Debug, Clone)]
pub struct Config {
    /// The box.
    pub home: Home,
    /// The hub port the unit will use.
    pub port: u16,
    /// The binary baked into the unit.
    pub exec: PathBuf,
    /// The hub unit to install.
    pub spec: UnitSpec,
    /// Print the plan; change nothing.
    pub dry_run: bool,
    /// Budgets.
    pub timeouts: Timeouts,
    /// How long to wait for another writer of the hub unit to release the lock.
    pub lock_wait: Duration,
    /// The command that re-runs this cutover (for messages).
    pub rerun: String,
    /// Where process and port facts come from (`parachute_process::facts::host()`; a test
    /// injects facts that are unavailable). A fact it cannot establish stops the cutover.
    pub facts: parachute_process::Facts,
}
