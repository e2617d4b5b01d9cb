//! The container / no-manager backend.
//!
//! In a container (or a session without a user bus, or a Mac with nobody logged in) there
//! is no service manager to put the supervisor under. Upstream then wrote unit files
//! anyway and reported "write-failed" after deleting them (W10, W19). Here the answer is
//! honest and side-effect free: [`NoManager`] implements every
//! [`ServiceManager`] verb as a [`ErrorKind::ManagerUnavailable`] error that says why no
//! manager was found and what to do instead (run `parachute serve` in the foreground, or
//! as the container's command), and it never touches the file system.
//!
//! `render` is refused too: there is no unit format without a manager, and a caller who
//! wants to preview a systemd unit or a plist asks that backend's renderer directly.
//! Which backend a host gets is decided in one place, the `parachute` crate's `detect`.
#![warn(missing_docs)]

use std::path::PathBuf;

use parachute_manager::{
    AfterInstall, Change, Drift, Error, ErrorKind, InstalledUnit, Scope, ServiceManager, UnitId, UnitSpec,
    UnitStatus,
};

/// The backend used when no service manager is reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoManager {
    scope: Scope,
    why: String,
}

impl NoManager {
    /// A backend for `scope` that explains `why` no manager was found (a clause, e.g.
    /// `"/run/systemd/system does not exist (not booted with systemd; a container?)"`).
    pub fn new(scope: Scope, why: impl Into<String>) -> NoManager {
        NoManager { scope, why: why.into() }
    }

    /// The reason given at construction.
    pub fn why(&self) -> &str {
        &self.why
    }

    fn unavailable(&self, doing: &str) -> Error {
        Error::new(
            ErrorKind::ManagerUnavailable,
            format!(
                "No service manager was found: {}. Parachute cannot {doing} here; run `parachute serve` \
                 in the foreground, or make it the container's command under your container runtime \
                 (with a restart policy such as `--restart unless-stopped`).",
                self.why.trim_end_matches('.')
            ),
        )
    }
}

impl ServiceManager for NoManager {
    fn kind(&self) -> &'static str {
        "none"
    }

    fn scope(&self) -> Scope {
        self.scope
    }

    /// Empty: without a manager there is no unit file.
    fn unit_path(&self, _id: &UnitId) -> PathBuf {
        PathBuf::new()
    }

    fn display_name(&self, id: &UnitId) -> String {
        format!("parachute-{id}")
    }

    fn render(&self, spec: &UnitSpec) -> Result<Vec<u8>, Error> {
        Err(self.unavailable(&format!("render a unit for {}", spec.id)))
    }

    /// Nothing is installed where there is no manager.
    fn read_installed(&self, _id: &UnitId) -> Result<Option<InstalledUnit>, Error> {
        Ok(None)
    }

    async fn restore(&self, id: &UnitId, _previous: &[u8]) -> Result<Change, Error> {
        Err(self.unavailable(&format!("restore {id}")))
    }

    async fn install(&self, spec: &UnitSpec, _then: AfterInstall) -> Result<Change, Error> {
        Err(self.unavailable(&format!("install {}", spec.id)))
    }

    async fn start(&self, id: &UnitId) -> Result<Change, Error> {
        Err(self.unavailable(&format!("start {id}")))
    }

    async fn stop(&self, id: &UnitId) -> Result<Change, Error> {
        Err(self.unavailable(&format!("stop {id}")))
    }

    async fn restart(&self, id: &UnitId) -> Result<Change, Error> {
        Err(self.unavailable(&format!("restart {id}")))
    }

    async fn teardown(&self, id: &UnitId) -> Result<Change, Error> {
        Err(self.unavailable(&format!("tear down {id}")))
    }

    async fn disable(&self, id: &UnitId) -> Result<Change, Error> {
        Err(self.unavailable(&format!("disable {id}")))
    }

    async fn status(&self, id: &UnitId) -> Result<UnitStatus, Error> {
        Err(self.unavailable(&format!("report the status of {id}")))
    }

    async fn drift(&self, spec: &UnitSpec) -> Result<Drift, Error> {
        Err(self.unavailable(&format!("compare the unit of {}", spec.id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_verb_is_unavailable_with_the_reason_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spec = UnitSpec {
            id: UnitId::hub(),
            description: "hub".into(),
            argv: vec!["/usr/local/bin/parachute".into(), "serve".into()],
            env: vec![],
            working_dir: Some(dir.path().to_path_buf()),
            log_path: dir.path().join("logs/hub.log"),
            crash_loop: None,
            run_as_user: None,
            readiness: parachute_manager::Readiness::Exec,
            hardened: false,
            log_to_journal: false,
            log_file_args: Vec::new(),
        };
        let why = "/run/systemd/system does not exist (not booted with systemd; a container?)";
        let m = NoManager::new(Scope::User, why);
        let id = UnitId::hub();
        let results = vec![
            m.render(&spec).map(drop),
            m.install(&spec, AfterInstall::Start).await.map(drop),
            m.install(&spec, AfterInstall::DontStart).await.map(drop),
            m.start(&id).await.map(drop),
            m.stop(&id).await.map(drop),
            m.restart(&id).await.map(drop),
            m.teardown(&id).await.map(drop),
            m.disable(&id).await.map(drop),
            m.status(&id).await.map(drop),
            m.drift(&spec).await.map(drop),
        ];
        for r in results {
            let e = r.unwrap_err();
            assert_eq!(e.kind, ErrorKind::ManagerUnavailable);
            assert!(e.message.starts_with(&format!("No service manager was found: {why}. ")), "{e}");
            assert!(e.message.contains("`parachute serve`"), "{e}");
            assert!(e.message.contains("container runtime"), "{e}");
        }
        assert_eq!(m.kind(), "none");
        assert_eq!(m.scope(), Scope::User);
        assert_eq!(m.unit_path(&id), PathBuf::new());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing may be written");
    }
}
