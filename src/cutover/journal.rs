//! The cutover journal, `<home>/hub/run/migrate-journal.json`: which steps of the current
//! attempt completed, so a re-run after a crash knows where it stands and says so.
//!
//! Every save is an atomic replace ([`parachute_fsx::write_atomic`]: temp file, fsync,
//! rename, fsync of the directory), so after a crash at any instant the journal is either
//! the one before the step or the one after it, never torn. A step is journaled only after
//! its effect is complete; a crash between the effect and the save makes the re-run repeat
//! the step, which every step tolerates.
//!
//! Besides the step list the journal keeps what the sweep needs after the legacy processes
//! are gone: the process groups of the legacy processes step 4 stopped. Their pidfiles are
//! deleted by then, so without this record an orphaned grandchild could no longer be
//! attributed to its dead parent (upstream W16).
//!
//! An unreadable or malformed journal is moved aside (`….corrupt`), never silently
//! overwritten, and the attempt starts over: every step is safe to repeat.

use std::io;
use std::path::{Path, PathBuf};

use parachute_process::ProcessIdentity;
use serde::{Deserialize, Serialize};

use super::plan::{Outcome, Progress, StepKind};

/// Format version written by this binary.
pub const VERSION: u32 = 1;

/// The parameters an attempt was made with; a journal for other parameters is not resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The hub port baked into the unit.
    pub port: u16,
    /// The binary baked into the unit.
    pub exec: PathBuf,
    /// When the attempt began (RFC 3339).
    pub started_at: String,
    /// The pid of the `parachute migrate` that began it.
    pub pid: u32,
}

/// One completed step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Which step.
    pub step: StepKind,
    /// When it completed (RFC 3339).
    pub at: String,
    /// What it did, in one line.
    pub summary: String,
}

/// A legacy process step 4 stopped (or found already gone), kept for the sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedProcess {
    /// `hub` or the module short.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// Its process group.
    pub pgid: u32,
    /// Every member of its group (itself included) when it was stopped, by identity: a
    /// survivor still holding a port is attributable to it after it is gone.
    #[serde(default)]
    pub members: Vec<ProcessIdentity>,
}

/// How the attempt ended, once it ended well.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// The outcome (`migrated`).
    pub outcome: String,
    /// When (RFC 3339).
    pub at: String,
}

/// The journal file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Format version.
    pub version: u32,
    /// The attempt this journal records.
    pub attempt: Attempt,
    /// Completed steps, in order.
    pub steps: Vec<StepRecord>,
    /// Legacy processes stopped by step 4 (accumulated over re-runs).
    #[serde(default)]
    pub stopped: Vec<StoppedProcess>,
    /// Set when the attempt ended `migrated`.
    #[serde(default)]
    pub finished: Option<Finished>,
}

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading failed (other than "does not exist").
    #[error("cannot read the cutover journal {}: {source}", path.display())]
    Read {
        /// The journal path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing failed.
    #[error("cannot write the cutover journal: {0}. Check that the home is writable, then re-run.")]
    Write(#[from] parachute_fsx::Error),
}

/// What [`Journal::load`] found.
#[derive(Debug)]
pub enum Loaded {
    /// No journal: no cutover was attempted on this home (or a teardown cleared it).
    Absent,
    /// A journal.
    Found(Journal),
    /// A malformed journal, moved aside to `moved_to` (left in place by a dry run); the
    /// attempt starts over.
    Corrupt {
        /// Where the bad file now is.
        moved_to: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
}

impl Journal {
    /// A journal for a new attempt.
    pub fn begin(port: u16, exec: PathBuf, now: String, pid: u32) -> Journal {
        Journal {
            version: VERSION,
            attempt: Attempt { port, exec, started_at: now, pid },
            steps: Vec::new(),
            stopped: Vec::new(),
            finished: None,
        }
    }

    /// Reads the journal at `path`. A malformed one is moved aside when `move_aside` (see
    /// the module doc); otherwise (a dry run) it is only reported, in place.
    pub fn load(path: &Path, move_aside: bool) -> Result<Loaded, JournalError> {
        let bytes = match parachute_fsx::read_capped(path, parachute_fsx::MAX_STATE_FILE) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Absent),
            Err(source) => return Err(JournalError::Read { path: path.to_path_buf(), source }),
        };
        let reason = match serde_json::from_slice::<Journal>(&bytes) {
            Ok(j) if j.version == VERSION => return Ok(Loaded::Found(j)),
            Ok(j) => format!("format version {} is not {VERSION}", j.version),
            Err(e) => e.to_string(),
        };
        let mut moved_to = path.as_os_str().to_owned();
        moved_to.push(".corrupt");
        let moved_to = PathBuf::from(moved_to);
        if !move_aside {
            return Ok(Loaded::Corrupt { moved_to: path.to_path_buf(), reason });
        }
        std::fs::rename(path, &moved_to)
            .map_err(|source| JournalError::Read { path: path.to_path_buf(), source })?;
        Ok(Loaded::Corrupt { moved_to, reason })
    }

    /// Saves atomically.
    pub fn save(&self, path: &Path) -> Result<(), JournalError> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a journal always serializes");
        bytes.push(b'\n');
        parachute_fsx::write_atomic(path, &bytes)?;
        Ok(())
    }

    /// Removes the journal file (teardown); a missing file is fine.
    pub fn remove(path: &Path) -> Result<(), JournalError> {
        parachute_fsx::remove_file(path)?;
        Ok(())
    }

    /// The journal as the plan reads it, for an attempt with `port` and `exec`.
    pub fn progress(&self, port: u16, exec: &Path) -> Progress {
        Progress {
            done: self.steps.iter().map(|r| r.step).collect(),
            finished: self.finished.is_some(),
            same_params: self.attempt.port == port && self.attempt.exec == exec,
        }
    }

    /// Records `step` as completed. Completing a step invalidates every later record (the
    /// later steps run again in this attempt); detect, which every run repeats, only
    /// replaces its own record.
    pub fn complete(&mut self, step: StepKind, summary: String, now: String) {
        if step == StepKind::Detect {
            self.steps.retain(|r| r.step != StepKind::Detect);
            self.steps.insert(0, StepRecord { step, at: now, summary });
        } else {
            self.steps.retain(|r| r.step < step);
            self.steps.push(StepRecord { step, at: now, summary });
        }
    }

    /// Forgets `step` and every later record.
    pub fn forget_from(&mut self, step: StepKind) {
        self.steps.retain(|r| r.step < step || r.step == StepKind::Detect);
    }

    /// Adds stopped legacy processes (deduplicated by pid and group).
    pub fn add_stopped(&mut self, procs: impl IntoIterator<Item = StoppedProcess>) {
        for p in procs {
            if !self.stopped.contains(&p) {
                self.stopped.push(p);
            }
        }
    }

    /// Marks the attempt finished with `outcome`.
    pub fn finish(&mut self, outcome: Outcome, now: String) {
        self.finished = Some(Finished { outcome: outcome.as_str().to_owned(), at: now });
    }

    /// The latest completed step other than detect, if any.
    pub fn last_step(&self) -> Option<&StepRecord> {
        self.steps.iter().rev().find(|r| r.step != StepKind::Detect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j() -> Journal {
        Journal::begin(1939, PathBuf::from("/usr/bin/parachute"), "t0".into(), 42)
    }

    #[test]
    fn complete_truncates_later_records_but_detect_only_replaces_itself() {
        let mut j = j();
        for s in [StepKind::Detect, StepKind::Preflight, StepKind::WriteUnit, StepKind::StopLegacy] {
            j.complete(s, s.name().into(), "t".into());
        }
        j.complete(StepKind::Detect, "again".into(), "t2".into());
        assert_eq!(j.steps.len(), 4);
        assert_eq!(j.steps[0].summary, "again");
        j.complete(StepKind::Preflight, "re-run".into(), "t3".into());
        let names: Vec<_> = j.steps.iter().map(|r| r.step).collect();
        assert_eq!(names, vec![StepKind::Detect, StepKind::Preflight]);
        assert_eq!(j.last_step().unwrap().summary, "re-run");
    }

    #[test]
    fn forget_from_keeps_earlier_steps_and_detect() {
        let mut j = j();
        for s in StepKind::ALL {
            j.complete(s, String::new(), "t".into());
        }
        j.forget_from(StepKind::Start);
        let p = j.progress(1939, Path::new("/usr/bin/parachute"));
        assert!(p.done.contains(&StepKind::VerifyFree) && p.done.contains(&StepKind::Detect));
        assert!(!p.done.contains(&StepKind::Start) && !p.done.contains(&StepKind::Verify));
    }

    #[test]
    fn progress_notices_other_parameters_and_finish() {
        let mut j = j();
        j.complete(StepKind::Preflight, String::new(), "t".into());
        assert!(j.progress(1939, Path::new("/usr/bin/parachute")).same_params);
        assert!(!j.progress(1940, Path::new("/usr/bin/parachute")).same_params);
        assert!(!j.progress(1939, Path::new("/other")).same_params);
        j.finish(Outcome::Migrated, "t".into());
        assert!(j.progress(1939, Path::new("/usr/bin/parachute")).finished);
    }

    #[test]
    fn save_load_round_trip_and_absent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hub/run/migrate-journal.json");
        assert!(matches!(Journal::load(&p, true).unwrap(), Loaded::Absent));
        let mut j = j();
        j.complete(StepKind::StopLegacy, "stopped vault (pid 7)".into(), "t".into());
        j.add_stopped([StoppedProcess { name: "vault".into(), pid: 7, pgid: 7, members: vec![] }]);
        j.add_stopped([StoppedProcess { name: "vault".into(), pid: 7, pgid: 7, members: vec![] }]);
        j.save(&p).unwrap();
        match Journal::load(&p, true).unwrap() {
            Loaded::Found(back) => assert_eq!(back, j),
            other => panic!("{other:?}"),
        }
        assert_eq!(j.stopped.len(), 1);
        Journal::remove(&p).unwrap();
        Journal::remove(&p).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn malformed_journal_is_moved_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("migrate-journal.json");
        std::fs::write(&p, "{ not json").unwrap();
        match Journal::load(&p, true).unwrap() {
            Loaded::Corrupt { moved_to, reason } => {
                assert_eq!(std::fs::read_to_string(&moved_to).unwrap(), "{ not json");
                assert!(reason.contains("line 1"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!p.exists());
        std::fs::write(&p, "[]").unwrap();
        assert!(
            matches!(Journal::load(&p, false).unwrap(), Loaded::Corrupt { moved_to, .. } if moved_to == p)
        );
        assert!(p.exists(), "a dry run leaves a malformed journal in place");
        let mut future = serde_json::to_value(j()).unwrap();
        future["version"] = 99.into();
        std::fs::write(&p, future.to_string()).unwrap();
        assert!(
            matches!(Journal::load(&p, true).unwrap(), Loaded::Corrupt { reason, .. } if reason.contains("99"))
        );
    }
}
