//! Host policy for the CLI: who invoked `parachute`, where that user's home is, which binary
//! a unit runs, which manager scope is meant, and the `PATH` a unit gets. One rule each,
//! used by `unit`, `migrate`, the packaging hooks and the migration offer, so they can
//! never disagree about the box they act on.
//!
//! - **Invoking user**: the effective user, except under `sudo` (euid 0 with `SUDO_UID`, or
//!   failing that `SUDO_USER`, naming another account): then the user behind `sudo`. Their
//!   entry in the password database is what counts.
//! - **User home**: under `sudo`, the invoking user's password-database home, never `$HOME`
//!   (which is root's, or whatever sudo kept). Otherwise `$HOME` when it is an absolute path
//!   (the user's own statement about their home, e.g. a container without a passwd entry),
//!   else the password-database home of the effective user.
//! - **Executable**: `--exec` as given, else this executable's path, never canonicalized: a
//!   stable symlink (`/usr/local/bin/parachute`, `/opt/homebrew/bin/parachute`) must not be
//!   resolved to a versioned path that the next upgrade deletes. Relative paths are refused;
//!   a path inside a temporary directory, a cargo build directory or a versioned Homebrew
//!   Cellar directory is accepted with a warning.
//! - **Scope**: `--scope` when given, else system for root and user for anyone else.
//! - **Unit `PATH`**: [`crate::hub_unit::hub_path`] built from the invoking user's home (no
//!   `/root/...` entries under `sudo`) and `PARACHUTE_EXTRA_PATH`.

use std::path::{Path, PathBuf};

use parachute_manager::Scope;

use super::HostEnv;

/// Which manager scope, as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScopeArg {
    /// The invoking user's manager (`systemd --user`, a LaunchAgent).
    User,
    /// The system manager (needs root).
    System,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Scope {
        match s {
            ScopeArg::User => Scope::User,
            ScopeArg::System => Scope::System,
        }
    }
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The scope used when none is asked for: root manages the system, anyone else themselves.
pub fn default_scope(euid: u32) -> Scope {
    if euid == 0 { Scope::System } else { Scope::User }
}

/// `--scope` when given, else [`default_scope`] for this process.
pub fn scope(arg: Option<ScopeArg>) -> Scope {
    arg.map(Scope::from).unwrap_or_else(|| default_scope(euid()))
}

/// The user on whose behalf `parachute` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoker {
    /// Their uid.
    pub uid: u32,
    /// Their account name, when the password database (or `SUDO_USER`) has one.
    pub name: Option<String>,
    /// Their home directory from the password database, when it has an entry.
    pub passwd_home: Option<PathBuf>,
    /// Whether this process runs as root through `sudo` on their behalf.
    pub via_sudo: bool,
}

/// Who invoked `parachute`, given the effective uid and the environment snapshot.
pub fn invoker_of(euid: u32, env: &HostEnv) -> Invoker {
    let entry = |uid: u32| nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten();
    let from_entry = |u: nix::unistd::User, via_sudo: bool| Invoker {
        uid: u.uid.as_raw(),
        name: Some(u.name),
        passwd_home: Some(u.dir).filter(|d| !d.as_os_str().is_empty()),
        via_sudo,
    };
    if euid == 0 {
        let sudo_uid = env.get("SUDO_UID").and_then(|s| s.trim().parse::<u32>().ok()).filter(|&u| u != 0);
        if let Some(uid) = sudo_uid {
            return match entry(uid) {
                Some(u) => from_entry(u, true),
                None => Invoker {
                    uid,
                    name: env.get("SUDO_USER").filter(|n| !n.is_empty() && *n != "root").map(str::to_owned),
                    passwd_home: None,
                    via_sudo: true,
                },
            };
        }
        let by_name = env
            .get("SUDO_USER")
            .filter(|n| !n.is_empty() && *n != "root")
            .and_then(|n| nix::unistd::User::from_name(n).ok().flatten())
            .filter(|u| u.uid.as_raw() != 0);
        if let Some(u) = by_name {
            return from_entry(u, true);
        }
    }
    match entry(euid) {
        Some(u) => from_entry(u, false),
        None => Invoker { uid: euid, name: None, passwd_home: None, via_sudo: false },
    }
}

/// Who invoked this process (see [`invoker_of`]).
pub fn invoker(env: &HostEnv) -> Invoker {
    invoker_of(euid(), env)
}

/// The invoking user's home directory (see the module doc for the rule).
pub fn user_home_of(invoker: &Invoker, env: &HostEnv) -> Option<PathBuf> {
    if invoker.via_sudo {
        return invoker.passwd_home.clone();
    }
    env.path("HOME").filter(|h| h.is_absolute()).or_else(|| invoker.passwd_home.clone())
}

/// The invoking user's home directory for this process.
pub fn user_home(env: &HostEnv) -> Option<PathBuf> {
    user_home_of(&invoker(env), env)
}

/// The home of the account this process runs as: `$HOME` when absolute, else the password
/// database's entry for the effective uid. `serve` uses it for its modules' `PATH` (their
/// `~/.local/bin`, `~/.bun/bin`): modules run as the hub's own user, so under `sudo` this is
/// never the invoking user's home — root must not run a binary from a user's directory.
pub fn own_home(env: &HostEnv) -> Option<PathBuf> {
    let passwd = || {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(euid()))
            .ok()
            .flatten()
            .map(|u| u.dir)
            .filter(|d| !d.as_os_str().is_empty())
    };
    env.path("HOME").filter(|h| h.is_absolute()).or_else(passwd)
}

/// The home flag every module verb takes.
#[derive(Debug, Clone, clap::Args)]
pub struct HomeArg {
    /// The Parachute home (default: $PARACHUTE_HOME, else ~/.parachute).
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
}

/// Resolves the home from the flag and the environment snapshot.
pub fn resolve_home(flag: &HomeArg, env: &HostEnv) -> Result<crate::model::home::Home, super::exit::Code> {
    crate::model::home::Home::resolve(
        flag.home.as_deref(),
        env.get("PARACHUTE_HOME"),
        user_home(env).as_deref(),
    )
    .map_err(|e| {
        eprintln!("parachute: {e}");
        super::exit::Code::Usage
    })
}

/// The host facts [`crate::detect`] decides from, taken from the environment snapshot.
pub fn facts(env: &HostEnv) -> crate::detect::HostFacts {
    let invoker = invoker(env);
    let user_home = user_home_of(&invoker, env);
    crate::detect::HostFacts {
        root: PathBuf::from("/"),
        os: std::env::consts::OS,
        euid: euid(),
        invoking_uid: invoker.uid,
        session_bus_address: env.get("DBUS_SESSION_BUS_ADDRESS").map(str::to_owned),
        xdg_runtime_dir: env.path("XDG_RUNTIME_DIR"),
        system_bus_address: env.get("DBUS_SYSTEM_BUS_ADDRESS").map(str::to_owned),
        user_config_dir: env
            .path("XDG_CONFIG_HOME")
            .or_else(|| user_home.as_ref().map(|h| h.join(".config"))),
        user_home,
    }
}

/// The hub unit spec for `home` on `port`, running `exec`, in `scope`. A user unit gets the
/// invoking user's `PATH`; a system unit runs as `explicit_user` (`--user`), else as the
/// home's owner, with that account's `PATH` ([`crate::hub_unit::hub_account`]). The error
/// says why a root hub on this home is refused.
pub fn hub_spec(
    home: &crate::model::home::Home,
    port: u16,
    exec: &Path,
    scope: Scope,
    explicit_user: Option<&str>,
    env: &HostEnv,
) -> Result<parachute_manager::UnitSpec, String> {
    let account = crate::hub_unit::hub_account(scope, home.root(), explicit_user, user_home(env).as_deref())?;
    let mut spec = crate::hub_unit::hub_unit_spec(
        home,
        port,
        exec,
        account.user_home.as_deref(),
        env.get("PARACHUTE_EXTRA_PATH"),
        account.user.as_deref(),
    );
    account.apply(&mut spec);
    Ok(spec)
}

/// Why no executable path could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// `--exec` was relative.
    #[error("--exec must be an absolute path, not {}", .0.display())]
    Relative(PathBuf),
    /// This executable's own path is unknown.
    #[error("cannot find this executable's path ({0}); pass --exec PATH")]
    Unknown(#[source] std::io::Error),
    /// The unit would run something that is not a file.
    #[error("{} does not exist or is not a file; pass --exec with the installed parachute binary", .0.display())]
    NotAFile(PathBuf),
}

/// The binary a unit runs, and what is worrying about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// The path, as given (never canonicalized).
    pub path: PathBuf,
    /// Sentences about a path that may go away (temporary, build or versioned directory).
    pub warnings: Vec<String>,
}

/// Whether the binary must exist now (install, migrate) or may be named only (render, diff).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MustExist {
    /// It must be a file now.
    Yes,
    /// Only its name is used.
    No,
}

/// The executable a unit runs: `flag` as given, else this executable (see the module doc).
pub fn exec_path(flag: Option<&Path>, must_exist: MustExist, env: &HostEnv) -> Result<Exec, ExecError> {
    let path = match flag {
        Some(p) if !p.is_absolute() => return Err(ExecError::Relative(p.to_path_buf())),
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe().map_err(ExecError::Unknown)?,
    };
    exec_checked(path, must_exist, env.path("TMPDIR").as_deref())
}

fn exec_checked(path: PathBuf, must_exist: MustExist, tmpdir: Option<&Path>) -> Result<Exec, ExecError> {
    if must_exist == MustExist::Yes && !path.is_file() {
        return Err(ExecError::NotAFile(path));
    }
    let mut warnings = Vec::new();
    if let Some(why) = ephemeral(&path, tmpdir) {
        warnings.push(format!(
            "the unit will run {}, which is inside {why}; it may disappear. Install parachute somewhere \
             permanent and pass --exec.",
            path.display()
        ));
    }
    if let Some(stable) = homebrew_cellar(&path) {
        warnings.push(format!(
            "the unit will run {}, inside a versioned Homebrew Cellar directory that the next `brew upgrade` \
             removes; pass --exec {} instead.",
            path.display(),
            stable.display()
        ));
    }
    Ok(Exec { path, warnings })
}

/// Why `exec` may disappear: it is inside a temporary directory or a cargo build directory.
pub fn ephemeral(exec: &Path, tmpdir: Option<&Path>) -> Option<String> {
    let temps: Vec<PathBuf> =
        [Some(PathBuf::from("/tmp")), Some(PathBuf::from("/var/tmp")), tmpdir.map(Path::to_path_buf)]
            .into_iter()
            .flatten()
            .collect();
    if let Some(t) = temps.iter().find(|t| exec.starts_with(t)) {
        return Some(format!("the temporary directory {}", t.display()));
    }
    let parts: Vec<String> =
        exec.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let build = parts.windows(2).any(|w| {
        w[0] == "target" || (w[0].starts_with("target") && matches!(w[1].as_str(), "debug" | "release"))
    });
    build.then(|| "a cargo build directory (target/)".to_owned())
}

/// For a path `<prefix>/Cellar/<formula>/<version>/<rest>`, the stable
/// `<prefix>/opt/<formula>/<rest>` Homebrew keeps pointing at the current version.
fn homebrew_cellar(exec: &Path) -> Option<PathBuf> {
    let parts: Vec<&std::ffi::OsStr> = exec.components().map(|c| c.as_os_str()).collect();
    let at = parts.iter().position(|p| *p == "Cellar")?;
    let (formula, rest) = (parts.get(at + 1)?, parts.get(at + 3..)?);
    if rest.is_empty() {
        return None;
    }
    let mut stable: PathBuf = parts[..at].iter().collect();
    stable.push("opt");
    stable.push(formula);
    stable.extend(rest);
    Some(stable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env(vars: &[(&str, &str)]) -> HostEnv {
        HostEnv::from_vars(vars.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect())
    }

    #[test]
    fn under_sudo_the_home_is_the_sudo_users_passwd_entry_not_home() {
        // uid 0's own entry stands in for "some user in the password database"; a uid with no
        // entry has no home at all rather than root's.
        let root_entry = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(0)).unwrap().unwrap();
        let e = env(&[("HOME", "/root"), ("SUDO_UID", "54321"), ("SUDO_USER", "op")]);
        let i = invoker_of(0, &e);
        assert_eq!((i.uid, i.via_sudo, i.name.as_deref()), (54321, true, Some("op")));
        assert_eq!(user_home_of(&i, &e), None, "never $HOME under sudo");
        let i = invoker_of(0, &env(&[("HOME", "/somewhere")]));
        assert!(!i.via_sudo);
        assert_eq!(user_home_of(&i, &env(&[("HOME", "/somewhere")])), Some(PathBuf::from("/somewhere")));
        assert_eq!(user_home_of(&i, &env(&[("HOME", "rel")])), Some(root_entry.dir.clone()));
        assert_eq!(user_home_of(&i, &env(&[])), Some(root_entry.dir));
        // SUDO_UID only matters when running as root, and SUDO_UID=0 is root itself.
        assert!(!invoker_of(1000, &e).via_sudo);
        assert!(!invoker_of(0, &env(&[("SUDO_UID", "0")])).via_sudo);
    }

    #[test]
    fn under_sudo_the_unit_path_has_no_root_entries() {
        let e = env(&[("HOME", "/root"), ("SUDO_UID", "54321"), ("PARACHUTE_EXTRA_PATH", "/opt/x")]);
        let i = invoker_of(0, &e);
        let p = crate::hub_unit::hub_path(user_home_of(&i, &e).as_deref(), e.get("PARACHUTE_EXTRA_PATH"));
        assert!(!p.contains("/root"), "{p}");
        assert!(p.starts_with("/opt/x:"), "{p}");
    }

    #[test]
    fn scope_defaults_to_system_for_root_only() {
        assert_eq!(default_scope(0), Scope::System);
        assert_eq!(default_scope(1000), Scope::User);
        assert_eq!(scope(Some(ScopeArg::User)), Scope::User);
        assert_eq!(scope(Some(ScopeArg::System)), Scope::System);
    }

    #[test]
    fn exec_is_kept_as_given_and_warned_about_when_it_may_disappear() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("parachute-1.0");
        std::fs::write(&real, "").unwrap();
        let link = dir.path().join("parachute");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = exec_path(Some(&link), MustExist::Yes, &env(&[])).unwrap();
        assert_eq!(e.path, link, "a stable symlink is not resolved");
        assert!(matches!(
            exec_path(Some(Path::new("rel/p")), MustExist::No, &env(&[])),
            Err(ExecError::Relative(_))
        ));
        let missing = dir.path().join("none");
        assert!(matches!(exec_path(Some(&missing), MustExist::Yes, &env(&[])), Err(ExecError::NotAFile(_))));
        assert!(exec_path(Some(&missing), MustExist::No, &env(&[])).is_ok());
        let cellar = Path::new("/opt/homebrew/Cellar/parachute/1.2.3/bin/parachute");
        let e = exec_path(Some(cellar), MustExist::No, &env(&[])).unwrap();
        assert_eq!(e.path, cellar);
        assert!(e.warnings[0].contains("/opt/homebrew/opt/parachute/bin/parachute"), "{:?}", e.warnings);
        let plain = exec_path(Some(Path::new("/usr/local/bin/parachute")), MustExist::No, &env(&[])).unwrap();
        assert!(plain.warnings.is_empty());
        let tmp = exec_path(Some(Path::new("/tmp/x/parachute")), MustExist::No, &env(&[])).unwrap();
        assert!(tmp.warnings[0].contains("temporary"), "{:?}", tmp.warnings);
    }

    #[test]
    fn ephemeral_paths_are_named() {
        assert!(ephemeral(Path::new("/tmp/x/parachute"), None).unwrap().contains("temporary"));
        assert!(ephemeral(Path::new("/scratch/parachute"), Some(Path::new("/scratch"))).is_some());
        assert!(ephemeral(Path::new("/src/p/target/debug/parachute"), None).unwrap().contains("target/"));
        assert!(ephemeral(Path::new("/work/target-x/release/parachute"), None).is_some());
        assert_eq!(ephemeral(Path::new("/usr/local/bin/parachute"), None), None);
        assert_eq!(ephemeral(Path::new("/opt/targets/parachute"), None), None);
        assert_eq!(homebrew_cellar(Path::new("/usr/local/Cellar/parachute")), None);
    }
}
