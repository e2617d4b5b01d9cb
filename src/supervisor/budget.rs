//! The crash budget: how many crashes a module may have in a sliding window, and how long
//! to wait before each respawn.
//!
//! Pure (time is passed in), so the window, the healthy reset and the backoff are tested
//! without sleeping. Semantics match upstream's `maxRestarts` where it was right: with the
//! default of 3 the third crash inside the window gives up, so there are two automatic
//! respawns (upstream R23 names this honestly: `max_crashes_in_window`). Unlike upstream,
//! the delay grows: `restart_delay × 2^(n-1)`, capped, and a child that stayed up for
//! `healthy_reset` starts with a clean history.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::SupervisorConfig;

/// What the budget says about one crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Respawn after `delay`; this was crash `n` in the window.
    Restart {
        /// Crashes in the window, this one included.
        n: u32,
        /// How long to wait before the respawn.
        delay: Duration,
    },
    /// The budget is spent: `n` crashes in the window.
    GiveUp {
        /// Crashes in the window, this one included.
        n: u32,
    },
}

/// The knobs of [`CrashBudget`], taken from [`SupervisorConfig`].
#[derive(Debug, Clone, Copy)]
pub struct BudgetConfig {
    /// Give up when this many crashes fall inside the window.
    pub max_crashes: u32,
    /// The sliding window.
    pub window: Duration,
    /// First delay.
    pub base_delay: Duration,
    /// Backoff cap.
    pub max_delay: Duration,
    /// Uptime that clears the history.
    pub healthy_reset: Duration,
}

impl From<&SupervisorConfig> for BudgetConfig {
    fn from(c: &SupervisorConfig) -> Self {
        BudgetConfig {
            max_crashes: c.max_crashes_in_window,
            window: c.crash_window,
            base_delay: c.restart_delay,
            max_delay: c.restart_delay_max,
            healthy_reset: c.healthy_reset,
        }
    }
}

/// Crash timestamps of one module.
#[derive(Debug, Default, Clone)]
pub struct CrashBudget {
    stamps: VecDeque<Instant>,
}

impl CrashBudget {
    /// Records a crash at `now` of a child that had been up for `up_for`.
    pub fn record(&mut self, now: Instant, up_for: Duration, cfg: &BudgetConfig) -> Verdict {
        if up_for >= cfg.healthy_reset {
            self.stamps.clear();
        }
        // A stamp exactly at the cutoff is kept, like upstream.
        if let Some(cutoff) = now.checked_sub(cfg.window) {
            while self.stamps.front().is_some_and(|t| *t < cutoff) {
                self.stamps.pop_front();
            }
        }
        self.stamps.push_back(now);
        let n = self.count();
        if n >= cfg.max_crashes {
            Verdict::GiveUp { n }
        } else {
            Verdict::Restart { n, delay: backoff(cfg.base_delay, cfg.max_delay, n) }
        }
    }

    /// Crashes currently counted.
    pub fn count(&self) -> u32 {
        u32::try_from(self.stamps.len()).unwrap_or(u32::MAX)
    }

    /// Forgets every crash (an operator start or restart).
    pub fn reset(&mut self) {
        self.stamps.clear();
    }

    /// How long ago each counted crash was, oldest first (an in-place upgrade carries the
    /// history over, so an upgrade never resets a crash loop's budget).
    pub fn ages(&self, now: Instant) -> Vec<Duration> {
        self.stamps.iter().map(|t| now.saturating_duration_since(*t)).collect()
    }

    /// A history whose crashes were `ages` before `now` ([`CrashBudget::ages`]).
    pub fn from_ages(now: Instant, ages: &[Duration]) -> CrashBudget {
        let mut stamps: Vec<Instant> = ages.iter().filter_map(|a| now.checked_sub(*a)).collect();
        stamps.sort();
        CrashBudget { stamps: stamps.into() }
    }
}

/// `base × 2^(n-1)`, capped at `cap` (`n` is 1 for the first crash).
pub fn backoff(base: Duration, cap: Duration, n: u32) -> Duration {
    let shift = n.saturating_sub(1).min(31);
    base.checked_mul(1u32 << shift).unwrap_or(cap).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max: u32, window_ms: u64) -> BudgetConfig {
        BudgetConfig {
            max_crashes: max,
            window: Duration::from_millis(window_ms),
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            healthy_reset: Duration::from_secs(60),
        }
    }

    const QUICK: Duration = Duration::from_millis(10);

    #[test]
    fn a_handed_over_history_counts_the_same_crashes() {
        let (t0, c) = (Instant::now(), cfg(3, 60_000));
        let mut b = CrashBudget::default();
        b.record(t0, QUICK, &c);
        b.record(t0 + Duration::from_secs(1), QUICK, &c);
        let now = t0 + Duration::from_secs(2);
        let mut back = CrashBudget::from_ages(now, &b.ages(now));
        assert_eq!(back.count(), 2);
        assert_eq!(back.record(now, QUICK, &c), Verdict::GiveUp { n: 3 });
    }

    #[test]
    fn default_budget_gives_up_on_the_third_crash() {
        // Scenario 11: three crashes, two respawns.
        let c = cfg(3, 60_000);
        let mut b = CrashBudget::default();
        let t = Instant::now();
        assert!(matches!(b.record(t, QUICK, &c), Verdict::Restart { n: 1, .. }));
        assert!(matches!(b.record(t + QUICK, QUICK, &c), Verdict::Restart { n: 2, .. }));
        assert_eq!(b.record(t + QUICK * 2, QUICK, &c), Verdict::GiveUp { n: 3 });
    }

    #[test]
    fn crashes_outside_the_window_are_forgotten() {
        // Scenario 12: max 2, window 5 s, crash, 10 s later crash again → still restarting, n = 1.
        let c = cfg(2, 5_000);
        let mut b = CrashBudget::default();
        let t = Instant::now();
        assert!(matches!(b.record(t, QUICK, &c), Verdict::Restart { n: 1, .. }));
        let v = b.record(t + Duration::from_secs(10), QUICK, &c);
        assert!(matches!(v, Verdict::Restart { n: 1, .. }), "{v:?}");
    }

    #[test]
    fn a_stamp_exactly_at_the_cutoff_is_kept() {
        let c = cfg(2, 5_000);
        let mut b = CrashBudget::default();
        let t = Instant::now();
        b.record(t, QUICK, &c);
        assert_eq!(b.record(t + Duration::from_secs(5), QUICK, &c), Verdict::GiveUp { n: 2 });
    }

    #[test]
    fn a_healthy_run_clears_the_history() {
        let c = cfg(3, 600_000);
        let mut b = CrashBudget::default();
        let t = Instant::now();
        b.record(t, QUICK, &c);
        b.record(t + QUICK, QUICK, &c);
        let v = b.record(t + Duration::from_secs(120), Duration::from_secs(61), &c);
        assert!(matches!(v, Verdict::Restart { n: 1, .. }), "{v:?}");
    }

    #[test]
    fn a_budget_of_one_gives_up_at_once() {
        let mut b = CrashBudget::default();
        assert_eq!(b.record(Instant::now(), QUICK, &cfg(1, 1_000)), Verdict::GiveUp { n: 1 });
        let mut b = CrashBudget::default();
        assert_eq!(b.record(Instant::now(), QUICK, &cfg(0, 1_000)), Verdict::GiveUp { n: 1 });
    }

    #[test]
    fn reset_forgets_everything() {
        let c = cfg(2, 60_000);
        let mut b = CrashBudget::default();
        let t = Instant::now();
        b.record(t, QUICK, &c);
        b.reset();
        assert_eq!(b.count(), 0);
        assert!(matches!(b.record(t, QUICK, &c), Verdict::Restart { n: 1, .. }));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(30);
        let table = [(1, 500), (2, 1_000), (3, 2_000), (4, 4_000), (7, 30_000), (60, 30_000), (0, 500)];
        for (n, ms) in table {
            assert_eq!(backoff(base, cap, n), Duration::from_millis(ms), "n = {n}");
        }
    }

    #[test]
    fn restart_delay_follows_the_backoff() {
        let c = BudgetConfig { max_crashes: 10, ..cfg(10, 60_000) };
        let mut b = CrashBudget::default();
        let t = Instant::now();
        let delays: Vec<_> = (0..4)
            .map(|i| match b.record(t + QUICK * i, QUICK, &c) {
                Verdict::Restart { delay, .. } => delay.as_millis(),
                v => panic!("{v:?}"),
            })
            .collect();
        assert_eq!(delays, [500, 1_000, 2_000, 4_000]);
    }
}
