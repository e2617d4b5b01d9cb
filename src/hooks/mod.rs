//! Packaging hooks: what `parachute postinstall [--upgrade]` and `parachute preremove
//! [--upgrade|--purge]` do for a package manager (dpkg maintainer scripts, Homebrew's
//! `post_install`), so the scripts stay one-line calls and the logic is tested here.
//!
//! - [`refresh`]: after an upgrade, re-render the installed hub unit for the new binary
//!   (same home, port, account, extra `PATH`, read back by [`installed`]), rewrite and
//!   restart it only when its definition or the running binary is out of date (upstream W4:
//!   units were never refreshed), check that the hub comes back healthy, and otherwise put
//!   the previous definition back byte for byte.
//! - [`remove`]: stop and remove the hub unit on package removal, and on purge delete the
//!   cutover's journal and lock (never services.json, tokens or module data).
//! - [`users`]: run as root, reach every other user's user-scope hub unit too.
//! - [`legacy_box`]: on a fresh install, find a box still run by the legacy detached
//!   daemons, so the hook can say how to migrate it without touching anything that runs.
//!
//! Everything here receives its manager, homes and paths from the CLI; nothing reads the
//! environment or guesses the user's home.

pub mod installed;
pub mod refresh;
pub mod remove;
pub mod users;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cutover::legacy::{self, PidfileState};
use crate::model::home::Home;
use crate::model::services::ServicesFile;

pub use refresh::{RefreshOptions, RefreshOutcome, RefreshReport, refresh};
pub use remove::{PurgeReport, purge_list_paths, purge_state};

/// A home still run (or last run) by the legacy detached daemons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LegacyBox {
    /// The home.
    pub home: PathBuf,
    /// The daemons whose pidfile names a live, verified process (`hub`, module shorts).
    pub running: Vec<String>,
    /// Every legacy pidfile present, live or stale.
    pub pidfiles: Vec<PathBuf>,
}

impl LegacyBox {
    /// One line telling the operator how to migrate this box.
    pub fn hint(&self) -> String {
        let home = crate::cutover::explain::shell_quote(&self.home.to_string_lossy());
        let what = if self.running.is_empty() {
            format!("legacy pidfiles ({} of them; no daemon is running)", self.pidfiles.len())
        } else {
            format!("legacy Parachute daemons running ({})", self.running.join(", "))
        };
        format!(
            "found {what} in {}; to run them under the service manager: parachute migrate --to-supervised --home {home}",
            self.home.display()
        )
    }
}

/// Looks for legacy pidfiles (the hub's and every services.json module's) in `home`.
/// `None` when there are none. Reads only; services.json problems count as no modules.
pub fn legacy_box(home: &Home) -> Option<LegacyBox> {
    let services = ServicesFile::read_lenient(&home.services_json()).file;
    let (targets, _) = legacy::targets(home, crate::model::names::HUB_PORT, &services);
    let mut b = LegacyBox { home: home.root().to_path_buf(), running: Vec::new(), pidfiles: Vec::new() };
    for t in &targets {
        match legacy::inspect(t) {
            PidfileState::Absent => continue,
            PidfileState::Running(p) => b.running.push(p.name),
            _ => {}
        }
        b.pidfiles.push(t.pidfile.clone());
    }
    (!b.pidfiles.is_empty()).then_some(b)
}

/// The homes a hook looks at when no `--home` is given: `PARACHUTE_HOME` and the invoking
/// (or `sudo`-ing) user's `<home>/.parachute` from the password database; relative or
/// unusable values are dropped, duplicates removed, order kept.
pub fn candidate_homes(
    flag: Option<&Path>,
    parachute_home_env: Option<&str>,
    user_home: Option<&Path>,
) -> Vec<Home> {
    if let Some(f) = flag {
        return Home::new(f).into_iter().collect();
    }
    let mut out: Vec<Home> = Vec::new();
    let env = parachute_home_env.filter(|v| !v.is_empty()).and_then(|v| Home::new(v).ok());
    let user = user_home.filter(|h| h.is_absolute()).and_then(|h| Home::new(h.join(".parachute")).ok());
    for h in [env, user].into_iter().flatten() {
        if !out.contains(&h) {
            out.push(h);
        }
    }
    out
}

/// The last `n` lines of a log file ([`parachute_fsx::tail_lines`]), control characters
/// made visible for a terminal.
pub fn log_tail(path: &Path, n: usize) -> Vec<String> {
    // Read as whoever controls the log's directory: root must not print through a symlink.
    let Ok(_as_owner) = crate::privsep::act_as_owner(path.parent().unwrap_or(path)) else {
        return Vec::new();
    };
    parachute_fsx::tail_lines(path, n).iter().map(|l| legacy::sanitize(l)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_homes_prefer_the_flag_then_env_and_user_without_duplicates() {
        let f = candidate_homes(Some(Path::new("/f")), Some("/e"), Some(Path::new("/u")));
        assert_eq!(f.iter().map(|h| h.root()).collect::<Vec<_>>(), [Path::new("/f")]);
        let h = candidate_homes(None, Some("/e"), Some(Path::new("/u")));
        assert_eq!(
            h.iter().map(|h| h.root()).collect::<Vec<_>>(),
            [Path::new("/e"), Path::new("/u/.parachute")]
        );
        let h = candidate_homes(None, Some("/u/.parachute"), Some(Path::new("/u")));
        assert_eq!(h.len(), 1);
        assert!(candidate_homes(None, Some("rel"), Some(Path::new("also-rel"))).is_empty());
        assert!(candidate_homes(Some(Path::new("rel")), None, None).is_empty());
    }

    #[test]
    fn legacy_boxes_are_found_by_their_pidfiles_only() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path()).unwrap();
        assert_eq!(legacy_box(&home), None);
        crate::model::pidfile::write_pidfile(&home.hub_pidfile(), 99_999_999).unwrap();
        let b = legacy_box(&home).unwrap();
        assert!(b.running.is_empty() && b.pidfiles == [home.hub_pidfile()]);
        let hint = b.hint();
        assert!(
            hint.contains("no daemon is running")
                && hint.contains("parachute migrate --to-supervised --home"),
            "{hint}"
        );
        assert!(!hint.contains('\n'));
    }

    #[test]
    fn log_tail_keeps_the_last_lines_and_escapes_controls() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hub.log");
        assert!(log_tail(&p, 3).is_empty());
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, format!("{text}bad \x1b[31m\n")).unwrap();
        let t = log_tail(&p, 3);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0], "line 98");
        assert!(!t[2].contains('\x1b'), "{t:?}");
    }
}
