//! The Parachute home (`PARACHUTE_HOME`, default `~/.parachute`) and every path in it.
//!
//! One method per path, so no other code joins path strings by hand and a layout change
//! happens in one place. Paths under a module's directory take a [`ModuleName`], which
//! cannot contain `/`, `..` or control characters, so a hostile services.json row cannot
//! point a pidfile or `.env` read outside the home.
//!
//! [`Home::resolve`] receives every input as a value: nothing here reads the environment or
//! guesses the user's home (only `main` does; see `clippy.toml`). Relative homes are
//! **rejected**, not made absolute: the same home is used by the CLI (in the user's cwd) and
//! by the service manager (cwd `/`), and a relative path would name two different
//! directories. The error says to pass an absolute path.

use std::path::{Path, PathBuf};

use super::names::ModuleName;

/// The root of a Parachute box. Always an absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

/// Why no home could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HomeError {
    /// The chosen value is a relative path.
    #[error(
        "the Parachute home from {origin} is a relative path ({path:?}); the service manager runs \
         with a different working directory, so give an absolute path (e.g. \"$PWD/{}\").",
        path.display()
    )]
    Relative {
        /// Where the value came from (`--home`, `PARACHUTE_HOME`, the user's home directory).
        origin: &'static str,
        /// The rejected path.
        path: PathBuf,
    },
    /// `--home` was given an empty value.
    #[error("--home was given an empty path; pass the Parachute home directory, or leave the flag out.")]
    EmptyFlag,
    /// Nothing to go on.
    #[error(
        "cannot find the Parachute home: no --home flag, PARACHUTE_HOME is unset or empty, and the \
         user's home directory is unknown (no password database entry). Pass --home /absolute/path."
    )]
    Unknown,
}

impl Home {
    /// A home at `root`, which must be absolute.
    pub fn new(root: impl Into<PathBuf>) -> Result<Home, HomeError> {
        Home::checked(root.into(), "the caller")
    }

    fn checked(root: PathBuf, origin: &'static str) -> Result<Home, HomeError> {
        if root.is_absolute() { Ok(Home { root }) } else { Err(HomeError::Relative { origin, path: root }) }
    }

    /// Picks the home: the `--home` flag, else a non-empty `PARACHUTE_HOME`, else
    /// `<user_home>/.parachute`. Relative values are rejected (see the module doc).
    pub fn resolve(
        flag: Option<&Path>,
        parachute_home_env: Option<&str>,
        user_home: Option<&Path>,
    ) -> Result<Home, HomeError> {
        if let Some(flag) = flag {
            if flag.as_os_str().is_empty() {
                return Err(HomeError::EmptyFlag);
            }
            return Home::checked(flag.to_path_buf(), "--home");
        }
        if let Some(env) = parachute_home_env.filter(|v| !v.is_empty()) {
            return Home::checked(PathBuf::from(env), "PARACHUTE_HOME");
        }
        match user_home.filter(|p| !p.as_os_str().is_empty()) {
            Some(h) => Home::checked(h.join(".parachute"), "the user's home directory"),
            None => Err(HomeError::Unknown),
        }
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<home>/services.json`: the module registry.
    pub fn services_json(&self) -> PathBuf {
        self.root.join("services.json")
    }

    /// `<home>/<short>/`: a module's own directory.
    pub fn module_dir(&self, short: &ModuleName) -> PathBuf {
        self.root.join(short.as_str())
    }

    /// `<home>/<short>/.env`: the module's environment file.
    pub fn env_file(&self, short: &ModuleName) -> PathBuf {
        self.module_dir(short).join(".env")
    }

    /// `<home>/<short>/run/<short>.pid`: written only by the legacy detached model.
    pub fn pidfile(&self, short: &ModuleName) -> PathBuf {
        self.module_dir(short).join("run").join(format!("{short}.pid"))
    }

    /// `<home>/<short>/logs/<short>.log`: the legacy detached module log.
    pub fn module_log(&self, short: &ModuleName) -> PathBuf {
        self.module_dir(short).join("logs").join(format!("{short}.log"))
    }

    /// `<home>/hub/run/hub.pid`: the legacy detached hub's pidfile.
    pub fn hub_pidfile(&self) -> PathBuf {
        self.root.join("hub/run/hub.pid")
    }

    /// `<home>/hub/run/hub.port`: the legacy detached hub's port (stale state, W39).
    pub fn hub_port_file(&self) -> PathBuf {
        self.root.join("hub/run/hub.port")
    }

    /// `<home>/hub/logs/hub.log`: where launchd appends the hub's output.
    pub fn hub_log(&self) -> PathBuf {
        self.root.join("hub/logs/hub.log")
    }

    /// `<home>/hub-instance.json`: written by a running `serve`.
    pub fn hub_instance(&self) -> PathBuf {
        self.root.join("hub-instance.json")
    }

    /// `<home>/operator.token`: the CLI's credential for the control API.
    pub fn operator_token(&self) -> PathBuf {
        self.root.join("operator.token")
    }

    /// `<home>/hub/run/supervised.json`: live children of the supervisor, for attribution
    /// after a supervisor restart.
    pub fn supervised_state(&self) -> PathBuf {
        self.root.join("hub/run/supervised.json")
    }

    /// `<home>/hub/run/migrate-journal.json`: the cutover's step journal.
    pub fn cutover_journal(&self) -> PathBuf {
        self.root.join("hub/run/migrate-journal.json")
    }

    /// `<home>/hub/run/migrate.lock`: held while a cutover runs.
    pub fn cutover_lock(&self) -> PathBuf {
        self.root.join("hub/run/migrate.lock")
    }

    /// `<home>/expose-state.json`: the public-exposure state (holds `hubOrigin`).
    pub fn expose_state(&self) -> PathBuf {
        self.root.join("expose-state.json")
    }
}

/// The home directory of user `uid` from the password database (for the CLI's default
/// home). `None` when there is no entry, the lookup fails, or the entry's directory is empty.
pub fn user_home_from_passwd(uid: nix::unistd::Uid) -> Option<PathBuf> {
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) if !user.dir.as_os_str().is_empty() => Some(user.dir),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ModuleName {
        ModuleName::parse(s).unwrap()
    }

    #[test]
    fn precedence_flag_then_env_then_user_home() {
        let flag = Path::new("/flag");
        let user = Path::new("/home/op");
        assert_eq!(Home::resolve(Some(flag), Some("/env"), Some(user)).unwrap().root(), flag);
        assert_eq!(Home::resolve(None, Some("/env"), Some(user)).unwrap().root(), Path::new("/env"));
        assert_eq!(
            Home::resolve(None, Some(""), Some(user)).unwrap().root(),
            Path::new("/home/op/.parachute")
        );
        assert_eq!(Home::resolve(None, None, Some(user)).unwrap().root(), Path::new("/home/op/.parachute"));
    }

    #[test]
    fn relative_and_missing_homes_are_rejected_with_the_origin_named() {
        let e = Home::resolve(Some(Path::new("rel")), None, None).unwrap_err();
        assert!(matches!(&e, HomeError::Relative { origin: "--home", .. }));
        assert!(e.to_string().contains("--home") && e.to_string().contains("\"rel\""), "{e}");
        let e = Home::resolve(None, Some("x/y"), Some(Path::new("/h"))).unwrap_err();
        assert!(e.to_string().contains("PARACHUTE_HOME"), "{e}");
        assert!(matches!(Home::resolve(None, None, Some(Path::new("h"))), Err(HomeError::Relative { .. })));
        assert_eq!(Home::resolve(Some(Path::new("")), None, None), Err(HomeError::EmptyFlag));
        assert_eq!(Home::resolve(None, None, None), Err(HomeError::Unknown));
        assert_eq!(Home::resolve(None, Some(""), Some(Path::new(""))), Err(HomeError::Unknown));
        assert!(Home::new("relative").is_err());
    }

    #[test]
    fn every_path() {
        let h = Home::new("/ph").unwrap();
        let v = name("vault");
        let cases: Vec<(PathBuf, &str)> = vec![
            (h.services_json(), "/ph/services.json"),
            (h.module_dir(&v), "/ph/vault"),
            (h.env_file(&v), "/ph/vault/.env"),
            (h.pidfile(&v), "/ph/vault/run/vault.pid"),
            (h.module_log(&v), "/ph/vault/logs/vault.log"),
            (h.hub_pidfile(), "/ph/hub/run/hub.pid"),
            (h.hub_port_file(), "/ph/hub/run/hub.port"),
            (h.hub_log(), "/ph/hub/logs/hub.log"),
            (h.hub_instance(), "/ph/hub-instance.json"),
            (h.operator_token(), "/ph/operator.token"),
            (h.supervised_state(), "/ph/hub/run/supervised.json"),
            (h.cutover_journal(), "/ph/hub/run/migrate-journal.json"),
            (h.cutover_lock(), "/ph/hub/run/migrate.lock"),
            (h.expose_state(), "/ph/expose-state.json"),
        ];
        for (got, want) in cases {
            assert_eq!(got, Path::new(want));
        }
    }

    #[test]
    fn hostile_but_valid_shorts_stay_one_component() {
        let h = Home::new("/ph").unwrap();
        let n = name("$x%'\"<&>");
        assert_eq!(h.env_file(&n), Path::new("/ph/$x%'\"<&>/.env"));
        assert_eq!(h.env_file(&n).parent().unwrap().parent().unwrap(), Path::new("/ph"));
    }

    #[test]
    fn passwd_lookup_of_root_finds_a_home() {
        // uid 0 always has a password database entry; a uid nobody has does not.
        assert!(user_home_from_passwd(nix::unistd::Uid::from_raw(0)).is_some());
        assert_eq!(user_home_from_passwd(nix::unistd::Uid::from_raw(3_999_999_999)), None);
    }
}
