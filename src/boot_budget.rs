//! The hub's own crash-loop ceiling, for managers that have none (launchd: `KeepAlive`
//! restarts a job forever, `ThrottleInterval` only spaces the restarts; upstream W27).
//!
//! The unit hands the hub a budget in `PARACHUTE_BOOT_BUDGET=<starts>/<seconds>` (the
//! launchd renderer derives it from the spec's `CrashLoop`, the same numbers systemd gets as
//! `StartLimitBurst`/`StartLimitIntervalSec`). At each start the hub appends the time to
//! `<home>/hub/run/boots.json` and counts the starts within the window; past the budget it
//! says so in its log and exits 0, which a `KeepAlive = { SuccessfulExit = false }` job is
//! not restarted for. `parachute unit start|restart|install` clear the record, so an
//! operator's start always gets a fresh budget.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::model::home::Home;

/// The environment variable the unit sets.
pub const ENV: &str = "PARACHUTE_BOOT_BUDGET";

/// At most this many start times are kept (the record stays tiny whatever the budget).
const MAX_KEPT: usize = 64;

/// How many starts are allowed within how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Starts allowed within `window` (the one that would exceed them exits).
    pub starts: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Budget {
    /// `"5/300"` → 5 starts in 300 s.
    pub fn parse(raw: &str) -> Result<Budget, String> {
        let bad = || format!("{ENV} must be <starts>/<seconds> with both at least 1, got {raw:?}");
        let (n, secs) = raw.trim().split_once('/').ok_or_else(bad)?;
        let starts: u32 = n.trim().parse().map_err(|_| bad())?;
        let secs: u64 = secs.trim().parse().map_err(|_| bad())?;
        if starts == 0 || secs == 0 {
            return Err(bad());
        }
        Ok(Budget { starts, window: Duration::from_secs(secs) })
    }

    /// The text form (what the renderer writes).
    pub fn render(starts: u32, window_secs: u32) -> String {
        format!("{starts}/{window_secs}")
    }
}

/// What this start amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the budget: run.
    Within {
        /// Starts within the window, this one included.
        starts: usize,
    },
    /// Over it: say so and exit 0.
    Exceeded {
        /// Starts within the window, this one included.
        starts: usize,
    },
}

/// The record's path.
pub fn path(home: &Home) -> PathBuf {
    home.root().join("hub/run/boots.json")
}

/// Records a start at `now` and judges it against `budget`. An unreadable or malformed
/// record counts as empty (the ceiling is a safety net: it never keeps a hub from its first
/// starts); a record that cannot be written is an error the caller reports and runs anyway.
pub fn record(home: &Home, budget: Budget, now: SystemTime) -> Result<Verdict, std::io::Error> {
    let file = path(home);
    let mut starts: Vec<u64> = read(&file);
    let now_s = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    let since = now_s.saturating_sub(budget.window.as_secs());
    starts.retain(|&t| t > since && t <= now_s);
    starts.push(now_s);
    if starts.len() > MAX_KEPT {
        starts.drain(..starts.len() - MAX_KEPT);
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_vec(&starts).map_err(std::io::Error::other)?;
    parachute_fsx::write_atomic(&file, &text).map_err(|e| std::io::Error::other(e.to_string()))?;
    let n = starts.len();
    Ok(if n > budget.starts as usize {
        Verdict::Exceeded { starts: n }
    } else {
        Verdict::Within { starts: n }
    })
}

/// Forgets every recorded start (an operator's `unit start`). Absent is fine.
pub fn clear(home: &Home) -> std::io::Result<()> {
    match std::fs::remove_file(path(home)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The log line for an exceeded budget.
pub fn exceeded_message(budget: Budget, starts: usize) -> String {
    format!(
        "crash loop: {starts} starts in the last {}s, over the budget of {} ({ENV}); exiting 0 so the service manager stops restarting the hub. Fix the cause (see above in this log), then run `parachute unit start`.",
        budget.window.as_secs(),
        budget.starts
    )
}

fn read(file: &Path) -> Vec<u64> {
    use std::io::Read;
    let Ok(f) = std::fs::File::open(file) else { return Vec::new() };
    let mut buf = Vec::new();
    if f.take(64 * 1024).read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    serde_json::from_slice(&buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_parses_and_refuses_nonsense() {
        assert_eq!(Budget::parse("5/300"), Ok(Budget { starts: 5, window: Duration::from_secs(300) }));
        assert_eq!(Budget::parse(&Budget::render(5, 300)).unwrap().starts, 5);
        for bad in ["", "5", "0/300", "5/0", "x/300", "5/-1", "5/300/1"] {
            assert!(Budget::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_start_past_the_budget_is_refused_and_clear_resets() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path()).unwrap();
        let b = Budget { starts: 2, window: Duration::from_secs(300) };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(record(&home, b, t0).unwrap(), Verdict::Within { starts: 1 });
        assert_eq!(record(&home, b, t0 + Duration::from_secs(10)).unwrap(), Verdict::Within { starts: 2 });
        assert_eq!(record(&home, b, t0 + Duration::from_secs(20)).unwrap(), Verdict::Exceeded { starts: 3 });
        // Outside the window the old starts no longer count.
        assert_eq!(record(&home, b, t0 + Duration::from_secs(400)).unwrap(), Verdict::Within { starts: 1 });
        record(&home, b, t0 + Duration::from_secs(401)).unwrap();
        assert!(matches!(record(&home, b, t0 + Duration::from_secs(402)).unwrap(), Verdict::Exceeded { .. }));
        clear(&home).unwrap();
        clear(&home).unwrap();
        assert_eq!(record(&home, b, t0 + Duration::from_secs(403)).unwrap(), Verdict::Within { starts: 1 });
        // A garbled record is an empty one, never a refusal.
        std::fs::write(path(&home), b"{not json").unwrap();
        assert_eq!(record(&home, b, t0 + Duration::from_secs(404)).unwrap(), Verdict::Within { starts: 1 });
    }
}
