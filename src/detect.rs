//! Which service manager this host has, and a connected backend for it.
//!
//! The decision uses facts that matter, not a binary on `PATH` (W10): on Linux, systemd
//! only when `<root>/run/systemd/system` exists (systemd's own `sd_booted()` test) *and*
//! the scope's bus answers with a manager on it; launchd only on macOS; otherwise the
//! [`NoManager`] backend, which explains why. The filesystem root is a parameter so tests
//! can point it at a temporary directory, and every other input ([`HostFacts`]) is a value
//! the CLI took from its environment snapshot: nothing here reads the environment.
//!
//! [`Backend`] is the one type callers hold; it forwards every [`ServiceManager`] verb to
//! the backend that was chosen (the trait's `impl Future` methods are not object-safe, so
//! an enum stands in for `dyn ServiceManager`).

use std::path::PathBuf;
use std::time::Duration;

use parachute_container::{DetectProbe, Detected, NoManager};
use parachute_launchd::LaunchdManager;
use parachute_manager::{
    AfterInstall, Change, Drift, Error, InstalledUnit, Scope, ServiceManager, UnitId, UnitSpec, UnitStatus,
};
use parachute_systemd::{SystemdManager, connect};

/// What the caller knows about the host, as values.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// The filesystem root to look for `run/systemd/system` under (`/` in production).
    pub root: PathBuf,
    /// `std::env::consts::OS`.
    pub os: &'static str,
    /// The effective uid.
    pub euid: u32,
    /// `DBUS_SESSION_BUS_ADDRESS`.
    pub session_bus_address: Option<String>,
    /// `XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `DBUS_SYSTEM_BUS_ADDRESS`.
    pub system_bus_address: Option<String>,
    /// `$XDG_CONFIG_HOME`, else `$HOME/.config`: user units go to its `systemd/user` when
    /// the user manager searches it.
    pub user_config_dir: Option<PathBuf>,
    /// The invoking user's home (launchd agent directory).
    pub user_home: Option<PathBuf>,
    /// The invoking user's uid: under `sudo` the user behind it (launchd: whose GUI domain).
    pub invoking_uid: u32,
}

/// The backend chosen for this host.
pub enum Backend {
    /// systemd over D-Bus.
    Systemd(SystemdManager),
    /// launchd through `launchctl`.
    Launchd(LaunchdManager),
    /// No manager; every verb says why.
    None(NoManager),
}

/// Picks and connects the backend for `scope`.
pub async fn backend(facts: &HostFacts, scope: Scope, timeout: Duration) -> Backend {
    match facts.os {
        "linux" => linux(facts, scope, timeout).await,
        "macos" => {
            let home = facts.user_home.clone().unwrap_or_else(|| PathBuf::from("/var/root"));
            Backend::Launchd(LaunchdManager::new(
                scope,
                parachute_launchd::LaunchdDirs::for_home(&home),
                facts.invoking_uid,
                parachute_launchd::Launchctl::production(),
            ))
        }
        _ => none(facts, scope, false, false),
    }
}

fn none(facts: &HostFacts, scope: Scope, booted: bool, bus: bool) -> Backend {
    let container = if facts.root.join(".dockerenv").exists() {
        Some("docker")
    } else if facts.root.join("run/.containerenv").exists() {
        Some("podman")
    } else {
        None
    };
    let probe = DetectProbe {
        os: facts.os,
        euid: if scope == Scope::System { 0 } else { facts.euid.max(1) },
        run_systemd_system_exists: booted,
        bus_answers: bus,
        launchd_domain_reachable: false,
        container,
    };
    let why = match parachute_container::detect(&probe) {
        Detected::None { why } => why,
        other => format!("the host looked like {other:?} but no backend could be built"),
    };
    Backend::None(NoManager::new(scope, why))
}

fn unavailable(scope: Scope, e: Error) -> Backend {
    Backend::None(NoManager::new(scope, e.message.trim_end_matches('.').to_owned()))
}

async fn linux(facts: &HostFacts, scope: Scope, timeout: Duration) -> Backend {
    if !facts.root.join("run/systemd/system").is_dir() {
        return none(facts, scope, false, false);
    }
    let preferred = facts.user_config_dir.as_ref().map(|c| c.join("systemd/user"));
    let user = || {
        connect::user_target(
            facts.session_bus_address.as_deref(),
            facts.xdg_runtime_dir.as_deref(),
            preferred.as_deref(),
            timeout,
        )
    };
    let system_dir = PathBuf::from(connect::SYSTEM_UNIT_DIR);
    match scope {
        Scope::User => {
            let (conn, dir) = match user().await {
                Ok(x) => x,
                Err(e) => return unavailable(scope, e),
            };
            let mut m = SystemdManager::new(conn, Scope::User, dir);
            // The system scope is a courtesy look for status/teardown (W6); absent is fine.
            if let Ok(sys) = connect::system_bus(facts.system_bus_address.as_deref(), timeout).await {
                m = m.with_other_scope(sys, system_dir);
            }
            Backend::Systemd(m)
        }
        Scope::System => {
            let conn = match connect::system_bus(facts.system_bus_address.as_deref(), timeout).await {
                Ok(c) => c,
                Err(e) => return unavailable(scope, e),
            };
            let mut m = SystemdManager::new(conn, Scope::System, system_dir);
            let has_session = facts.xdg_runtime_dir.is_some() || facts.session_bus_address.is_some();
            if has_session && let Ok((u, dir)) = user().await {
                m = m.with_other_scope(u, dir);
            }
            Backend::Systemd(m)
        }
    }
}

/// Whether a systemd manager is usable here for `scope` (`<root>/run/systemd/system` and a
/// bus that answers).
pub async fn systemd_available(facts: &HostFacts, scope: Scope, timeout: Duration) -> bool {
    facts.os == "linux" && matches!(linux(facts, scope, timeout).await, Backend::Systemd(_))
}

impl Backend {
    /// The user-facing name of the backend (`systemd-user`, `launchd`, `none`).
    pub fn name(&self) -> &'static str {
        self.kind()
    }

    /// The systemd backend, when that is what was chosen.
    pub fn as_systemd(&self) -> Option<&SystemdManager> {
        match self {
            Backend::Systemd(m) => Some(m),
            _ => None,
        }
    }
}

macro_rules! each {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            Backend::Systemd($m) => $e,
            Backend::Launchd($m) => $e,
            Backend::None($m) => $e,
        }
    };
}

impl ServiceManager for Backend {
    fn kind(&self) -> &'static str {
        each!(self, m => m.kind())
    }

    fn scope(&self) -> Scope {
        each!(self, m => m.scope())
    }

    fn unit_path(&self, id: &UnitId) -> PathBuf {
        each!(self, m => m.unit_path(id))
    }

    fn display_name(&self, id: &UnitId) -> String {
        each!(self, m => m.display_name(id))
    }

    fn render(&self, spec: &UnitSpec) -> Result<Vec<u8>, Error> {
        each!(self, m => m.render(spec))
    }

    fn read_installed(&self, id: &UnitId) -> Result<Option<InstalledUnit>, Error> {
        each!(self, m => m.read_installed(id))
    }

    async fn restore(&self, id: &UnitId, previous: &[u8]) -> Result<Change, Error> {
        each!(self, m => m.restore(id, previous).await)
    }

    async fn install(&self, spec: &UnitSpec, then: AfterInstall) -> Result<Change, Error> {
        each!(self, m => m.install(spec, then).await)
    }

    async fn start(&self, id: &UnitId) -> Result<Change, Error> {
        each!(self, m => m.start(id).await)
    }

    async fn stop(&self, id: &UnitId) -> Result<Change, Error> {
        each!(self, m => m.stop(id).await)
    }

    async fn restart(&self, id: &UnitId) -> Result<Change, Error> {
        each!(self, m => m.restart(id).await)
    }

    async fn teardown(&self, id: &UnitId) -> Result<Change, Error> {
        each!(self, m => m.teardown(id).await)
    }

    async fn disable(&self, id: &UnitId) -> Result<Change, Error> {
        each!(self, m => m.disable(id).await)
    }

    async fn status(&self, id: &UnitId) -> Result<UnitStatus, Error> {
        each!(self, m => m.status(id).await)
    }

    async fn drift(&self, spec: &UnitSpec) -> Result<Drift, Error> {
        each!(self, m => m.drift(spec).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn facts(root: &Path) -> HostFacts {
        HostFacts { root: root.to_path_buf(), os: "linux", euid: 1000, ..HostFacts::default() }
    }

    fn why(b: Backend) -> String {
        match b {
            Backend::None(n) => n.why().to_owned(),
            other => panic!("expected no manager, got {}", other.kind()),
        }
    }

    #[tokio::test]
    async fn not_booted_with_systemd_means_no_manager() {
        let root = tempfile::tempdir().unwrap();
        let w = why(backend(&facts(root.path()), Scope::User, Duration::from_secs(1)).await);
        assert!(w.contains("/run/systemd/system does not exist"), "{w}");
        std::fs::write(root.path().join(".dockerenv"), "").unwrap();
        let w = why(backend(&facts(root.path()), Scope::System, Duration::from_secs(1)).await);
        assert!(w.contains("docker"), "{w}");
    }

    #[tokio::test]
    async fn booted_but_no_user_session_says_why() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("run/systemd/system")).unwrap();
        let w = why(backend(&facts(root.path()), Scope::User, Duration::from_secs(1)).await);
        assert!(w.contains("XDG_RUNTIME_DIR is not set"), "{w}");
        let f = HostFacts {
            system_bus_address: Some("unix:path=/nonexistent/sock".into()),
            ..facts(root.path())
        };
        let w = why(backend(&f, Scope::System, Duration::from_secs(1)).await);
        assert!(w.contains("no system bus"), "{w}");
        assert!(!systemd_available(&f, Scope::System, Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn other_systems_have_no_manager() {
        let root = tempfile::tempdir().unwrap();
        let f = HostFacts { os: "freebsd", ..facts(root.path()) };
        assert!(why(backend(&f, Scope::User, Duration::from_secs(1)).await).contains("freebsd"));
    }
}
