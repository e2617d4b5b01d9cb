//! `parachute migrate --teardown`: stop, disable and remove the hub unit in whichever scope
//! holds it, and disable stale per-module units.
//!
//! Removal goes by name through [`ServiceManager::teardown`], so a unit whose file was
//! deleted while it is still loaded, or one living in the other scope, is still stopped
//! (upstream W9/W6 gated removal on the file in the current scope). The result is checked
//! by asking the manager again: teardown reports success only when the unit is neither
//! running nor on disk, and otherwise fails naming what is left (upstream W38 ignored exit
//! codes). Like the cutover it holds the cutover lock, and it clears the cutover journal so a
//! later `--to-supervised` starts a fresh attempt.

use parachute_manager::{Change, ErrorKind, ServiceManager, UnitId};

use super::journal::Journal;
use super::legacy;
use super::lock::{CutoverLock, Holder, LockError};
use super::report::{Event, Sink, TeardownOutcome, TeardownReport, UnitState};
use super::stale_units;
use crate::model::home::Home;
use crate::model::services::ServicesFile;

/// Runs the teardown and reports, waiting up to [`super::lock::DEFAULT_WAIT`] for another
/// writer of the hub unit.
pub async fn teardown<M: ServiceManager>(home: &Home, manager: &M, sink: &mut dyn Sink) -> TeardownReport {
    teardown_within(home, manager, super::lock::DEFAULT_WAIT, sink).await
}

/// Runs the teardown and reports, waiting up to `lock_wait` for another writer of the hub
/// unit.
pub async fn teardown_within<M: ServiceManager>(
    home: &Home,
    manager: &M,
    lock_wait: std::time::Duration,
    sink: &mut dyn Sink,
) -> TeardownReport {
    let holder = Holder::current("migrate --teardown");
    // As root on a user's home, the lock and the journal are that user's files.
    let _as_owner = match crate::privsep::act_as_owner(home.root()) {
        Ok(g) => g,
        Err(e) => {
            return TeardownReport {
                outcome: TeardownOutcome::Failed,
                disabled: Vec::new(),
                messages: vec![e.to_string()],
                unit: UnitState::default(),
            };
        }
    };
    let _lock = match CutoverLock::acquire_within(&home.cutover_lock(), &holder, lock_wait) {
        Ok(l) => l,
        Err(e) => {
            let outcome = if matches!(e, LockError::Held { .. }) {
                TeardownOutcome::Locked
            } else {
                TeardownOutcome::Failed
            };
            return TeardownReport {
                outcome,
                disabled: Vec::new(),
                messages: vec![e.to_string()],
                unit: UnitState::default(),
            };
        }
    };
    let id = UnitId::hub();
    let name = stale_units::display(manager, &id);
    let mut messages = Vec::new();
    let before = manager.status(&id).await;
    let removal = manager.teardown(&id).await;

    let (targets, _) = legacy::targets(home, 0, &ServicesFile::read_lenient(&home.services_json()).file);
    let (disabled, warnings) = stale_units::disable(manager, &targets).await;
    for d in &disabled {
        let line = format!("Disabled the stale per-module unit {d} (it would fight the hub for its port).");
        sink.event(Event::Note(&line));
    }
    for w in &warnings {
        sink.event(Event::Note(w));
    }

    let after = manager.status(&id).await;
    let unit = match &after {
        Ok(u) => UnitState::observed(manager.kind(), u),
        Err(e) => UnitState {
            manager: manager.kind().to_owned(),
            file: Some(manager.unit_path(&id)).filter(|p| p.exists()),
            unknown: Some(e.message.clone()),
            ..Default::default()
        },
    };
    let left_over = unit.active || unit.file.is_some();
    let outcome = match removal {
        Ok(_) if left_over => {
            messages.push(format!(
                "Hub-unit teardown did not complete: the manager still reports {name} {} afterwards.",
                if unit.active { "running" } else { "with a unit file on disk" }
            ));
            TeardownOutcome::Failed
        }
        Ok(Change::Changed) => {
            let scope =
                before.ok().and_then(|s| s.scope).map(|s| format!(" ({s} scope)")).unwrap_or_default();
            messages.push(format!(
                "Removed the hub unit {name}{scope}: the hub no longer starts at boot or login."
            ));
            messages.push(String::new());
            messages.push("The supervised hub unit is gone. To run the hub now, either:".to_owned());
            messages.push(format!(
                "  - `parachute serve --home {}` (foreground), or",
                super::explain::shell_quote(&home.root().to_string_lossy())
            ));
            messages.push(format!(
                "  - `parachute migrate --to-supervised --home {}` to install the unit again.",
                super::explain::shell_quote(&home.root().to_string_lossy())
            ));
            TeardownOutcome::Removed
        }
        Ok(Change::AlreadyInPlace) => {
            messages.push("No hub unit was installed — nothing to tear down.".to_owned());
            TeardownOutcome::NothingInstalled
        }
        Err(e) if e.kind == ErrorKind::ManagerUnavailable && unit.file.is_none() => {
            messages.push(format!(
                "No hub unit was installed — nothing to tear down (no service manager is reachable: {}).",
                e.message
            ));
            TeardownOutcome::NothingInstalled
        }
        Err(e) => {
            messages.push(format!("Hub-unit teardown did not complete: {}", e.message));
            TeardownOutcome::Failed
        }
    };
    if outcome != TeardownOutcome::Failed
        && let Err(e) = Journal::remove(&home.cutover_journal())
    {
        messages.push(format!("Note: {e}"));
    }
    TeardownReport { outcome, disabled, messages, unit }
}
