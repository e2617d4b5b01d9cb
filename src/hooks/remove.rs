//! The removal hooks: take the hub unit down when the package goes, and on purge delete
//! the cutover's own state (journal and lock), never the operator's data.
//!
//! The unit is removed through the cutover's teardown when its home is known (it holds the
//! cutover lock, so a package removal never interleaves with a running migrate, and checks
//! with the manager that the unit is really gone), else by name through the manager.
//!
//! Purge has a packaging wrinkle: dpkg runs `postrm purge` after the package's files, this
//! binary included, are gone. So `preremove` can record the state files a later purge should
//! delete in a list (`--purge-list FILE`, one absolute path per line, written atomically),
//! and the Debian `postrm` deletes exactly the listed files whose names are the journal's
//! or the lock's. Formats whose binary is still there at purge time call
//! `parachute preremove --purge` instead, which uses [`purge_state`].

use std::path::{Path, PathBuf};

use parachute_manager::{Change, ServiceManager, UnitId};
use serde::Serialize;

use super::installed::InstalledHub;
use crate::cutover::lock::{CutoverLock, Holder};
use crate::cutover::report::Quiet;
use crate::cutover::{TeardownOutcome, teardown};
use crate::model::home::Home;

/// What the removal hook did in one scope.
#[derive(Debug, Clone, Serialize)]
pub struct RemoveReport {
    /// The backend (`systemd-user`, …).
    pub backend: &'static str,
    /// The scope.
    pub scope: parachute_manager::Scope,
    /// Whether something was stopped or removed.
    pub removed: bool,
    /// Whether the removal failed (the unit is still there).
    pub failed: bool,
    /// The home the unit served, when its file could be read.
    pub home: Option<PathBuf>,
    /// What happened, in one sentence.
    pub message: String,
}

/// Stops, disables and removes the hub unit found through `m` (by name, in both scopes
/// when `m` reaches both).
pub async fn remove_unit<M: ServiceManager>(m: &M) -> RemoveReport {
    let id = UnitId::hub();
    let name = m.display_name(&id);
    let home = m.read_installed(&id).ok().flatten().and_then(|u| InstalledHub::new(u).home().ok());
    let mut r = RemoveReport {
        backend: m.kind(),
        scope: m.scope(),
        removed: false,
        failed: false,
        home: home.as_ref().map(|h| h.root().to_path_buf()),
        message: String::new(),
    };
    let (removed, failure) = match &home {
        Some(h) => {
            let t = teardown(h, m, &mut Quiet).await;
            match t.outcome {
                TeardownOutcome::Removed => (true, None),
                TeardownOutcome::NothingInstalled => (false, None),
                TeardownOutcome::Failed | TeardownOutcome::Locked => {
                    (false, Some(t.messages.first().cloned().unwrap_or_default()))
                }
            }
        }
        None => match m.teardown(&id).await {
            Ok(c) => (c == Change::Changed, None),
            Err(e) => (false, Some(e.message)),
        },
    };
    r.removed = removed;
    // The teardown reads services.json for stale per-module units; a file it could not read
    // (a FIFO, a device, too large) was skipped, and the operator should hear why.
    let unreadable: Vec<String> = home
        .as_ref()
        .and_then(|h| {
            let _as_owner = crate::privsep::act_as_owner(h.root()).ok()?;
            let loaded = crate::model::services::ServicesFile::read_lenient(&h.services_json());
            Some(
                loaded
                    .warnings
                    .iter()
                    .filter(|w| w.kind == crate::model::services::IssueKind::Unreadable)
                    .map(|w| crate::text::line(&w.to_string()).into_owned())
                    .collect(),
            )
        })
        .unwrap_or_default();
    r.message = match (&failure, removed) {
        (Some(why), _) => {
            r.failed = true;
            format!("could not remove {name}: {why}")
        }
        (None, true) => format!("stopped and removed {name} ({} scope was asked).", m.scope()),
        (None, false) => format!("no {name} installed ({} scope was asked); nothing to remove.", m.scope()),
    };
    for w in unreadable {
        r.message.push_str(&format!(" Skipped {w}."));
    }
    r
}

/// The cutover state files of `home` a purge deletes: its journal and its lock.
pub fn purge_list_paths(home: &Home) -> [PathBuf; 2] {
    [home.cutover_journal(), home.cutover_lock()]
}

/// Whether `p` may be deleted by a purge: an absolute path whose name is a cutover journal
/// or lock (the same test the Debian `postrm` applies before deleting).
fn purgeable(p: &Path) -> bool {
    let s = p.to_string_lossy();
    p.is_absolute()
        && !s.contains('\n')
        && (s.ends_with("/hub/run/migrate-journal.json") || s.ends_with("/hub/run/migrate.lock"))
}

/// Writes the purge list for `homes` to `list` (atomically; one path per line).
pub fn write_purge_list(list: &Path, homes: &[Home]) -> Result<(), parachute_fsx::Error> {
    let mut text = String::new();
    for h in homes {
        for p in purge_list_paths(h) {
            if purgeable(&p) {
                text.push_str(&p.to_string_lossy());
                text.push('\n');
            }
        }
    }
    parachute_fsx::write_atomic(list, text.as_bytes()).map(drop)
}

/// The paths in a purge list that [`purgeable`] accepts (a missing list is empty).
pub fn read_purge_list(list: &Path) -> Result<Vec<PathBuf>, parachute_fsx::Error> {
    let bytes = parachute_fsx::read_optional(list)?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&bytes).lines().map(PathBuf::from).filter(|p| purgeable(p)).collect())
}

/// What a purge did to one home's state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PurgeReport {
    /// Files deleted.
    pub removed: Vec<PathBuf>,
    /// Why something was kept (a cutover holds the lock, a file could not be deleted).
    pub kept: Vec<String>,
}

/// Deletes `home`'s cutover journal and lock, unless a cutover holds the lock right now.
/// Nothing else in the home is touched; a home without them is left exactly as it is.
pub fn purge_state(home: &Home) -> PurgeReport {
    purge_files(&purge_list_paths(home))
}

/// Deletes the given journal/lock files (each checked with [`purgeable`]); a lock file is
/// deleted only while this process holds it, so a running cutover keeps its lock.
pub fn purge_files(paths: &[PathBuf]) -> PurgeReport {
    let mut r = PurgeReport::default();
    for p in paths.iter().filter(|p| purgeable(p)) {
        // `<home>/hub/run/<file>`: its deletion, and the lock, are the home owner's file work.
        let home = p.ancestors().nth(3).unwrap_or(p);
        let _as_owner = match crate::privsep::act_as_owner(home) {
            Ok(g) => g,
            Err(e) => {
                r.kept.push(format!("kept {}: {e}", p.display()));
                continue;
            }
        };
        let _held = if p.ends_with("migrate.lock") && p.exists() {
            match CutoverLock::acquire(p, &Holder::current("preremove --purge")) {
                Ok(l) => Some(l),
                // Held by a running cutover (or not lockable): its owner still needs it.
                Err(e) => {
                    r.kept.push(format!("kept {}: {e}", p.display()));
                    continue;
                }
            }
        } else {
            None
        };
        match parachute_fsx::remove_file(p) {
            Ok(parachute_fsx::Written::Changed) => r.removed.push(p.clone()),
            Ok(parachute_fsx::Written::Unchanged) => {}
            Err(e) => r.kept.push(format!("could not delete {}: {e}", p.display())),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_deletes_journal_and_lock_only_and_keeps_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path()).unwrap();
        std::fs::create_dir_all(home.root().join("hub/run")).unwrap();
        std::fs::write(home.cutover_journal(), "{}").unwrap();
        std::fs::write(home.services_json(), "{\"services\":[]}").unwrap();
        std::fs::write(home.hub_pidfile(), "1").unwrap();
        let held =
            CutoverLock::acquire(&home.cutover_lock(), &Holder::current("migrate --to-supervised")).unwrap();
        let r = purge_state(&home);
        assert_eq!(r.removed, [home.cutover_journal()]);
        assert!(r.kept[0].contains("migrate --to-supervised"), "{:?}", r.kept);
        assert!(home.cutover_lock().exists() && home.services_json().exists() && home.hub_pidfile().exists());
        drop(held);
        let r = purge_state(&home);
        assert_eq!(r.removed, [home.cutover_lock()]);
        assert!(purge_state(&home).removed.is_empty(), "a second purge has nothing to do");
        assert!(home.services_json().exists());
    }

    #[test]
    fn a_home_without_state_is_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("never-used")).unwrap();
        let r = purge_state(&home);
        assert!(r.removed.is_empty() && r.kept.is_empty());
        assert!(!home.root().exists(), "purge must not create the lock's directory");
    }

    #[test]
    fn purge_lists_hold_only_journal_and_lock_paths() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("state/purge.list");
        let homes = [Home::new("/srv/a b").unwrap(), Home::new("/h/x\ny").unwrap()];
        write_purge_list(&list, &homes).unwrap();
        let got = read_purge_list(&list).unwrap();
        assert_eq!(got, purge_list_paths(&homes[0]).to_vec());
        std::fs::write(&list, "/etc/passwd\nrelative/hub/run/migrate.lock\n/h/hub/run/migrate.lock\n")
            .unwrap();
        assert_eq!(read_purge_list(&list).unwrap(), [PathBuf::from("/h/hub/run/migrate.lock")]);
        assert!(read_purge_list(&dir.path().join("none")).unwrap().is_empty());
    }
}
