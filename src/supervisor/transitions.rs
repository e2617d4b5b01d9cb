//! The module lifecycle as a table: which status may follow which.
//!
//! Read `(B, &[A, C])` as "B may be entered only from A or C", as in Horust's
//! `ALLOWED_TRANSITIONS`. `None` as a source means "no entry yet" (the first `start`).
//! Staying in the same status is not a transition and is always allowed (a snapshot
//! update such as a cleared `startError`). The actor asks [`allowed`] before every
//! status change, so a path the table forbids is a bug that shows up in tests (debug
//! assertion) and in the log (release), not a silently wrong status.
//!
//! ```text
//!             start               spawned                exit after a stop
//!  (none) ──────────► starting ────────────► running ──────────────────────────► stopped
//!  stopped ─────────►    │                    │   │  crash, budget left              ▲
//!  crashed ─────────►    │ preflight,         │   └──────────► restarting ── stop ───┤
//!                        │ squatter or        │ budget spent,     │ delay over       │
//!                        │ spawn failure      │ crash-path        ▼                  │
//!                        ▼                    │ squatter       starting            │
//!                     crashed ◄───────────────┘                                      │
//!                        └──────────────────────── stop ─────────────────────────────┘
//!  restart: running | stopped | crashed ──► restarting ──► starting (old child stopped first)
//!  transient spawn failure (EMFILE, ENFILE, EAGAIN, ENOMEM): starting ──► restarting (retried)
//! ```

use super::state::ModuleStatus::{self, Crashed, Restarting, Running, Starting, Stopped};

/// `(to, allowed sources)`; `None` is "no entry yet".
pub const ALLOWED_TRANSITIONS: &[(ModuleStatus, &[Option<ModuleStatus>])] = &[
    // A fresh start, a respawn after the crash delay, or the start half of a restart.
    (Starting, &[None, Some(Stopped), Some(Crashed), Some(Restarting)]),
    // Only a successful spawn makes a module running.
    (Running, &[Some(Starting)]),
    // A crash inside the budget, a restart command (from any settled status), or a spawn
    // that failed for lack of a resource (EMFILE, EAGAIN, …) and is retried.
    (Restarting, &[Some(Starting), Some(Running), Some(Stopped), Some(Crashed)]),
    // A stop command: of a live child, of a pending respawn, or of a crashed module.
    (Stopped, &[Some(Running), Some(Restarting), Some(Crashed)]),
    // Preflight, squatter or spawn failure; budget exhausted; crash-path squatter.
    (Crashed, &[Some(Starting), Some(Running)]),
];

/// Whether the actor may move a module from `from` to `to`.
pub fn allowed(from: Option<ModuleStatus>, to: ModuleStatus) -> bool {
    if from == Some(to) {
        return true;
    }
    ALLOWED_TRANSITIONS.iter().find(|(t, _)| *t == to).is_some_and(|(_, sources)| sources.contains(&from))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ModuleStatus; 5] = [Starting, Running, Stopped, Crashed, Restarting];

    /// Every legal `(from, to)` pair, written out independently of the table above so a
    /// change to either shows up here.
    const EXPECTED_ALLOWED: &[(Option<ModuleStatus>, ModuleStatus)] = &[
        (None, Starting),
        (Some(Stopped), Starting),
        (Some(Crashed), Starting),
        (Some(Restarting), Starting),
        (Some(Starting), Running),
        (Some(Starting), Restarting),
        (Some(Running), Restarting),
        (Some(Stopped), Restarting),
        (Some(Crashed), Restarting),
        (Some(Running), Stopped),
        (Some(Restarting), Stopped),
        (Some(Crashed), Stopped),
        (Some(Starting), Crashed),
        (Some(Running), Crashed),
    ];

    #[test]
    fn valid_transitions() {
        for &(from, to) in EXPECTED_ALLOWED {
            assert!(allowed(from, to), "transition {from:?} → {to:?} should be allowed");
        }
    }

    #[test]
    fn invalid_transitions_are_refused() {
        let sources = std::iter::once(None).chain(ALL.iter().copied().map(Some));
        let mut refused = 0;
        for from in sources {
            for to in ALL {
                if from == Some(to) || EXPECTED_ALLOWED.contains(&(from, to)) {
                    continue;
                }
                assert!(!allowed(from, to), "transition {from:?} → {to:?} should be refused");
                refused += 1;
            }
        }
        // 6 sources × 5 targets, minus 5 self-loops, minus the 14 allowed pairs.
        assert_eq!(refused, 30 - 5 - 14);
    }

    #[test]
    fn staying_put_is_always_allowed() {
        for s in ALL {
            assert!(allowed(Some(s), s), "{s:?} → {s:?}");
        }
    }

    #[test]
    fn nothing_but_starting_can_be_entered_without_an_entry() {
        for to in ALL {
            assert_eq!(allowed(None, to), to == Starting, "(none) → {to:?}");
        }
    }

    #[test]
    fn the_table_names_each_target_once() {
        for s in ALL {
            assert_eq!(ALLOWED_TRANSITIONS.iter().filter(|(t, _)| *t == s).count(), 1, "{s:?}");
        }
    }
}
