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

use std::path::{Path, PathBuf};
use std::time::Duration;

use parachute_container::NoManager;
use parachute_launchd::LaunchdManager;
use parachute_manager::{
    AfterInstall, Change, Drift, Error, InstalledUnit, Scope, ServiceManager, UnitId, UnitSpec, UnitStatus,
};
use parachute_systemd::{SystemdManager, connect};

/// What `sd_booted(3)` looks for, relative to the filesystem root: a directory that exists
/// only while systemd is PID 1.
pub const SYSTEMD_BOOTED_MARKER: &str = "run/systemd/system";

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

/// Whether a manager answered when probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// It answered.
    Answered,
    /// It did not; the reason, when the probe gave one (a clause, no final period).
    Failed(String),
}

/// What the probes found out about the host: the inputs of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectProbe<'a> {
    /// `std::env::consts::OS` (`linux`, `macos`, …).
    pub os: &'a str,
    /// The scope asked for.
    pub scope: Scope,
    /// The invoking user's uid (whose user manager or `gui/<uid>` domain).
    pub uid: u32,
    /// `<root>/run/systemd/system` is a directory (systemd's own `sd_booted()` test).
    pub run_systemd_system_exists: bool,
    /// The scope's bus and the manager on it (Linux): the system bus for the system scope,
    /// the user's session bus (`systemd --user`) for the user scope.
    pub bus: Reach,
    /// `launchctl print gui/<uid>` (user scope) or `print system` answered (macOS).
    pub launchd_domain: Reach,
    /// A container runtime, when one is evident (`/.dockerenv` → `docker`,
    /// `/run/.containerenv` → `podman`); only used to explain.
    pub container: Option<&'a str>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// Use systemd.
    Systemd,
    /// Use launchd.
    Launchd,
    /// No usable manager; `why` is a clause for "No service manager was found: <why>."
    None {
        /// What is missing, in words an operator can check.
        why: String,
    },
}

/// The detection table: which manager to use, from the probes' answers (pure).
pub fn decide(p: &DetectProbe<'_>) -> Detected {
    let failed = |r: &Reach, generic: String| match r {
        Reach::Failed(why) if !why.is_empty() => Detected::None { why: why.clone() },
        _ => Detected::None { why: generic },
    };
    match p.os {
        "linux" if !p.run_systemd_system_exists => {
            let hint = match p.container {
                Some(rt) => format!("this is a {rt} container"),
                None => "not booted with systemd; a container?".to_owned(),
            };
            Detected::None { why: format!("/{SYSTEMD_BOOTED_MARKER} does not exist ({hint})") }
        }
        "linux" if p.bus == Reach::Answered => Detected::Systemd,
        "linux" if p.scope == Scope::System => failed(
            &p.bus,
            "systemd is running but the system bus did not answer (is dbus running?)".to_owned(),
        ),
        "linux" => failed(
            &p.bus,
            format!(
                "systemd is running but the user manager of uid {} did not answer on its bus (no login \
                 session: XDG_RUNTIME_DIR unset, e.g. under su or a bare SSH command?); log in normally or \
                 run `loginctl enable-linger`, or install a system unit with sudo",
                p.uid
            ),
        ),
        "macos" if p.launchd_domain == Reach::Answered => Detected::Launchd,
        "macos" if p.scope == Scope::System => {
            failed(&p.launchd_domain, "launchctl could not reach the system domain".to_owned())
        }
        // A LaunchAgent needs the user's GUI domain: without a GUI login there is none.
        "macos" => failed(
            &p.launchd_domain,
            format!(
                "launchctl could not reach the gui/{} domain (nobody is logged in at the GUI); on a headless \
                 Mac install a LaunchDaemon with sudo",
                p.uid
            ),
        ),
        other => {
            Detected::None { why: format!("{other} has no supported service manager (systemd or launchd)") }
        }
    }
}

fn container(root: &Path) -> Option<&'static str> {
    if root.join(".dockerenv").exists() {
        Some("docker")
    } else if root.join("run/.containerenv").exists() {
        Some("podman")
    } else {
        None
    }
}

/// Probes the host for `scope`, decides with [`decide`], and returns the connected backend.
pub async fn backend(facts: &HostFacts, scope: Scope, timeout: Duration) -> Backend {
    let mut probe = DetectProbe {
        os: facts.os,
        scope,
        uid: facts.invoking_uid,
        run_systemd_system_exists: false,
        bus: Reach::Failed(String::new()),
        launchd_domain: Reach::Failed(String::new()),
        container: container(&facts.root),
    };
    let mut systemd = None;
    let mut launchd_m = None;
    match facts.os {
        "linux" => {
            probe.run_systemd_system_exists = facts.root.join(SYSTEMD_BOOTED_MARKER).is_dir();
            if probe.run_systemd_system_exists {
                match connect_systemd(facts, scope, timeout).await {
                    Ok(m) => {
                        probe.bus = Reach::Answered;
                        systemd = Some(m);
                    }
                    Err(e) => probe.bus = Reach::Failed(e.message.trim_end_matches('.').to_owned()),
                }
            }
        }
        "macos" => {
            let m = launchd(facts, scope);
            probe.launchd_domain = match m.domain_reachable().await {
                Ok(()) => Reach::Answered,
                Err(e) => Reach::Failed(e.message.trim_end_matches('.').to_owned()),
            };
            launchd_m = Some(m);
        }
        _ => {}
    }
    match (decide(&probe), systemd, launchd_m) {
        (Detected::Systemd, Some(m), _) => Backend::Systemd(m),
        (Detected::Launchd, _, Some(m)) => Backend::Launchd(m),
        (Detected::None { why }, _, _) => Backend::None(NoManager::new(scope, why)),
        (d, _, _) => Backend::None(NoManager::new(
            scope,
            format!("the host looked like {d:?} but no backend was built"),
        )),
    }
}

fn launchd(facts: &HostFacts, scope: Scope) -> LaunchdManager {
    let home = facts.user_home.clone().unwrap_or_else(|| PathBuf::from("/var/root"));
    LaunchdManager::new(
        scope,
        parachute_launchd::LaunchdDirs::for_home(&home),
        facts.invoking_uid,
        parachute_launchd::Launchctl::production(),
    )
}

async fn connect_systemd(
    facts: &HostFacts,
    scope: Scope,
    timeout: Duration,
) -> Result<SystemdManager, Error> {
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
            let (conn, dir) = user().await?;
            let mut m = SystemdManager::new(conn, Scope::User, dir);
            // The system scope is a courtesy look for status/teardown (W6); absent is fine.
            if let Ok(sys) = connect::system_bus(facts.system_bus_address.as_deref(), timeout).await {
                m = m.with_other_scope(sys, system_dir);
            }
            Ok(m)
        }
        Scope::System => {
            let conn = connect::system_bus(facts.system_bus_address.as_deref(), timeout).await?;
            let mut m = SystemdManager::new(conn, Scope::System, system_dir);
            let has_session = facts.xdg_runtime_dir.is_some() || facts.session_bus_address.is_some();
            if has_session && let Ok((u, dir)) = user().await {
                m = m.with_other_scope(u, dir);
            }
            Ok(m)
        }
    }
}

/// A unit rendered without contacting any manager (`parachute unit render`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The backend kind it was rendered for.
    pub kind: &'static str,
    /// The name the manager would know it by.
    pub unit: String,
    /// Where `unit install` would write it.
    pub path: PathBuf,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

/// Renders `spec` for the manager this OS has, without connecting to it: systemd on Linux
/// (a user unit goes to `<user_config_dir>/systemd/user`), launchd on macOS.
pub fn render_offline(facts: &HostFacts, scope: Scope, spec: &UnitSpec) -> Result<Rendered, Error> {
    match facts.os {
        "linux" => {
            let dir = match scope {
                Scope::System => PathBuf::from(connect::SYSTEM_UNIT_DIR),
                Scope::User => facts
                    .user_config_dir
                    .as_ref()
                    .map(|c| c.join("systemd/user"))
                    .unwrap_or_else(|| PathBuf::from("~/.config/systemd/user")),
            };
            let unit = spec.id.systemd_unit();
            Ok(Rendered {
                kind: parachute_systemd::kind_of(scope),
                path: dir.join(&unit),
                unit,
                bytes: parachute_systemd::render_unit(spec, scope)?.into_bytes(),
            })
        }
        "macos" => {
            let m = launchd(facts, scope);
            Ok(Rendered {
                kind: m.kind(),
                unit: m.display_name(&spec.id),
                path: m.unit_path(&spec.id),
                bytes: m.render(spec)?,
            })
        }
        other => {
            let why = format!("{other} has no supported service manager (systemd or launchd)");
            let n = NoManager::new(scope, why);
            Ok(Rendered {
                kind: n.kind(),
                unit: n.display_name(&spec.id),
                path: n.unit_path(&spec.id),
                bytes: n.render(spec)?,
            })
        }
    }
}

/// Makes an installed user unit start at boot where the manager has to be told (systemd:
/// lingering for the user); a warning when it cannot. A launchd user agent lives in the
/// user's GUI domain, which exists only once they log in: it never starts at boot, and the
/// warning says how to get a daemon that does. System units need nothing.
pub async fn ensure_boot_start(backend: &Backend, facts: &HostFacts, timeout: Duration) -> Option<String> {
    if backend.scope() != Scope::User {
        return None;
    }
    if matches!(backend, Backend::Launchd(_)) {
        return Some(
            "a LaunchAgent runs in the user's login session (gui domain) and starts when they log in, \
             not at boot. For a hub that starts at boot, install it as a LaunchDaemon: \
             `sudo parachute unit install --scope system`."
                .to_owned(),
        );
    }
    if !matches!(backend, Backend::Systemd(_)) {
        return None;
    }
    let uid = facts.euid;
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten()?.name;
    let Ok(conn) = connect::system_bus(facts.system_bus_address.as_deref(), timeout).await else {
        return Some(format!(
            "could not check lingering for {user}: the system bus is not reachable. Without lingering the \
             unit starts only when {user} logs in; run `sudo loginctl enable-linger {user}`."
        ));
    };
    connect::ensure_linger(&conn, uid, &user, timeout).await.err().map(|e| e.message)
}

impl Backend {
    /// Why no manager is usable here, when none is (the no-manager backend's reason).
    pub fn why_unavailable(&self) -> Option<&str> {
        match self {
            Backend::None(n) => Some(n.why()),
            _ => None,
        }
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

    /// A LaunchAgent never starts at boot (the gui domain exists only after a login),
    /// so a user-scope launchd install must not report `starts_at_boot: true`; a
    /// LaunchDaemon needs nothing. The launchctl program is never run here.
    #[tokio::test]
    async fn a_launch_agent_is_reported_as_starting_at_login_not_at_boot() {
        let dir = tempfile::tempdir().unwrap();
        let launchd = |scope| {
            let dirs = parachute_launchd::LaunchdDirs {
                agents: dir.path().join("LaunchAgents"),
                daemons: dir.path().join("LaunchDaemons"),
            };
            let never_run = parachute_launchd::Launchctl::new(dir.path().join("no-launchctl"));
            Backend::Launchd(parachute_launchd::LaunchdManager::new(scope, dirs, 501, never_run))
        };
        let f = facts(dir.path());
        let agent = ensure_boot_start(&launchd(Scope::User), &f, Duration::from_secs(1)).await;
        assert!(agent.as_deref().is_some_and(|w| w.contains("--scope system")), "{agent:?}");
        assert_eq!(ensure_boot_start(&launchd(Scope::System), &f, Duration::from_secs(1)).await, None);
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
    }

    fn probe(os: &'static str, scope: Scope, booted: bool, bus: bool, domain: bool) -> DetectProbe<'static> {
        let reach = |ok| if ok { Reach::Answered } else { Reach::Failed(String::new()) };
        DetectProbe {
            os,
            scope,
            uid: 501,
            run_systemd_system_exists: booted,
            bus: reach(bus),
            launchd_domain: reach(domain),
            container: None,
        }
    }

    fn decided_why(d: Detected) -> String {
        match d {
            Detected::None { why } => why,
            other => panic!("expected no manager, got {other:?}"),
        }
    }

    #[test]
    fn decision_table() {
        use Scope::{System, User};
        // systemd: booted and the scope's bus answers.
        assert_eq!(decide(&probe("linux", User, true, true, false)), Detected::Systemd);
        assert_eq!(decide(&probe("linux", System, true, true, false)), Detected::Systemd);
        assert!(
            decided_why(decide(&probe("linux", User, false, true, false)))
                .contains("/run/systemd/system does not exist")
        );
        assert!(decided_why(decide(&probe("linux", System, false, false, false))).contains("a container?"));
        let docker = DetectProbe { container: Some("docker"), ..probe("linux", System, false, false, false) };
        assert!(decided_why(decide(&docker)).contains("this is a docker container"));
        assert!(decided_why(decide(&probe("linux", User, true, false, false))).contains("enable-linger"));
        assert!(decided_why(decide(&probe("linux", System, true, false, false))).contains("system bus"));
        // The probe's own reason wins over the generic sentence.
        let told = DetectProbe {
            bus: Reach::Failed("XDG_RUNTIME_DIR is not set".into()),
            ..probe("linux", User, true, false, false)
        };
        assert_eq!(decided_why(decide(&told)), "XDG_RUNTIME_DIR is not set");

        // launchd: an agent needs the gui/<uid> domain, a daemon the system domain.
        assert_eq!(decide(&probe("macos", User, false, false, true)), Detected::Launchd);
        assert_eq!(decide(&probe("macos", System, false, false, true)), Detected::Launchd);
        assert!(decided_why(decide(&probe("macos", User, false, false, false))).contains("gui/501"));
        assert!(decided_why(decide(&probe("macos", System, false, false, false))).contains("system domain"));

        // Facts of another platform never leak into the decision.
        assert!(
            decided_why(decide(&probe("freebsd", System, true, true, true)))
                .contains("freebsd has no supported service manager")
        );
        assert!(matches!(decide(&probe("macos", User, true, true, false)), Detected::None { .. }));
        assert!(matches!(decide(&probe("linux", User, false, false, true)), Detected::None { .. }));
    }

    #[test]
    fn offline_render_names_the_unit_and_its_path_without_a_manager() {
        let spec = crate::hub_unit::hub_unit_spec(
            &crate::model::home::Home::new("/home/op/.parachute").unwrap(),
            1939,
            Path::new("/usr/local/bin/parachute"),
            Some(Path::new("/home/op")),
            None,
            Some("op"),
        );
        let f = HostFacts { user_config_dir: Some("/home/op/.config".into()), ..facts(Path::new("/")) };
        let r = render_offline(&f, Scope::User, &spec).unwrap();
        assert_eq!((r.kind, r.unit.as_str()), ("systemd-user", "parachute-hub.service"));
        assert_eq!(r.path, Path::new("/home/op/.config/systemd/user/parachute-hub.service"));
        let mac = HostFacts { os: "macos", user_home: Some("/Users/op".into()), ..facts(Path::new("/")) };
        let r = render_offline(&mac, Scope::System, &spec).unwrap();
        assert_eq!((r.kind, r.unit.as_str()), ("launchd-daemon", "computer.parachute.hub"));
        assert_eq!(r.path, Path::new("/Library/LaunchDaemons/computer.parachute.hub.plist"));
        let odd = HostFacts { os: "freebsd", ..facts(Path::new("/")) };
        assert_eq!(
            render_offline(&odd, Scope::User, &spec).unwrap_err().kind,
            parachute_manager::ErrorKind::ManagerUnavailable
        );
    }

    #[tokio::test]
    async fn other_systems_have_no_manager() {
        let root = tempfile::tempdir().unwrap();
        let f = HostFacts { os: "freebsd", ..facts(root.path()) };
        assert!(why(backend(&f, Scope::User, Duration::from_secs(1)).await).contains("freebsd"));
    }
}
