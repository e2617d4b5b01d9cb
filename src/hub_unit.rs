//! The hub's unit spec: one builder for every caller (`parachute unit`, the migrate
//! cutover, the packaging hooks), so a unit written by one is never "drift" to another.
//!
//! The hub unit runs `<exec> serve --home <home> --port <port>`: home and port are in argv,
//! because `serve` acts on its flags and they are what `systemctl status` and `ps` show.
//! `PARACHUTE_HOME` is also set in the environment so the modules the hub spawns, and any
//! tool they run, agree on the home whatever the manager's environment is; `PORT` is not,
//! because modules would inherit it and each module has its own port. `PATH` is baked with
//! `/usr/sbin:/sbin` included (W17) and `~/.bun/bin` for bun-based modules. The crash-loop
//! ceiling goes in `[Unit]` (the systemd renderer puts it there; upstream W1 had it in
//! `[Service]`, where systemd ignores it).

use std::path::{Path, PathBuf};

use parachute_manager::{CrashLoop, Readiness, Scope, UnitId, UnitSpec};

use crate::model::home::Home;

/// The hub unit's crash-loop ceiling: at most 5 starts in 5 minutes, 5 s apart.
pub const HUB_CRASH_LOOP: CrashLoop = CrashLoop { interval_sec: 300, burst: 5, throttle_sec: 5 };

/// The hub tells its manager it is ready once every module passed its readiness gate or
/// reported why not (`serve::notify`), extending the 60 s start window while modules still
/// make progress; its supervision loop pings a 20 s watchdog.
pub const HUB_READINESS: Readiness = Readiness::Notify { start_timeout_sec: 60, watchdog_sec: Some(20) };

/// The hub unit's description.
pub const HUB_DESCRIPTION: &str = "Parachute hub (serve + supervisor)";

/// The `PATH` baked into the hub unit: `PARACHUTE_EXTRA_PATH` entries first, then bun's
/// and the system's directories (with `sbin`, W17), then `~/.local/bin`; duplicates dropped.
pub fn hub_path(user_home: Option<&Path>, extra_path: Option<&str>) -> String {
    let home = |sub: &str| user_home.map(|h| h.join(sub).to_string_lossy().into_owned());
    let mut dirs: Vec<String> =
        extra_path.unwrap_or("").split(':').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    dirs.extend(home(".bun/bin"));
    dirs.extend(
        ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(str::to_owned),
    );
    dirs.extend(home(".local/bin"));
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs.join(":")
}

/// The hub's unit spec for `home` on `port`, running `exec`.
pub fn hub_unit_spec(
    home: &Home,
    port: u16,
    exec: &Path,
    user_home: Option<&Path>,
    extra_path: Option<&str>,
    run_as_user: Option<&str>,
) -> UnitSpec {
    let root = home.root().to_string_lossy().into_owned();
    UnitSpec {
        id: UnitId::hub(),
        description: HUB_DESCRIPTION.to_owned(),
        argv: vec![
            exec.to_string_lossy().into_owned(),
            "serve".to_owned(),
            "--home".to_owned(),
            root.clone(),
            "--port".to_owned(),
            port.to_string(),
        ],
        env: vec![("PARACHUTE_HOME".to_owned(), root), ("PATH".to_owned(), hub_path(user_home, extra_path))],
        working_dir: Some(home.root().to_path_buf()),
        log_path: home.hub_log(),
        crash_loop: Some(HUB_CRASH_LOOP),
        run_as_user: run_as_user.map(str::to_owned),
        readiness: HUB_READINESS,
        hardened: true,
        // The hub names every module's lines in the journal (`journalctl -t <module>`).
        log_to_journal: true,
        // Where a manager would append to the log forever (launchd), the hub writes and
        // rotates it itself (`crate::logfile`, at the default size and backups).
        log_file_args: vec!["--log-file".to_owned(), home.hub_log().to_string_lossy().into_owned()],
    }
}

/// Who the hub unit runs as, and that account's home directory (for the unit's `PATH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubAccount {
    /// `User=` of a system unit; `None` runs it as the manager's user (root for the system
    /// manager, only when that is safe or asked for).
    pub user: Option<String>,
    /// The account's home directory (`~/.bun/bin`, `~/.local/bin` go into `PATH`).
    pub user_home: Option<PathBuf>,
    /// Root runs a hub on a home someone else owns or can write, because `--user root` said
    /// so: `serve` is then given `--allow-root`, since it refuses that on its own.
    pub allow_root: bool,
}

impl HubAccount {
    /// Adds what this account needs to the hub unit's `serve` command line.
    pub fn apply(&self, spec: &mut UnitSpec) {
        if self.allow_root {
            spec.argv.push("--allow-root".to_owned());
        }
    }
}

/// Who a hub unit for `home` runs as. User units run as their manager's user (`env_home` is
/// that user's home). A system unit runs as `explicit` (`--user`), else as the owner of the
/// home: never as root by accident (W7), and never as root on a home someone else owns or
/// can write (they would choose what root runs) unless `--user root` says so.
pub fn hub_account(
    scope: Scope,
    home: &Path,
    explicit: Option<&str>,
    env_home: Option<&Path>,
) -> Result<HubAccount, String> {
    if scope == Scope::User {
        return Ok(HubAccount { user: None, user_home: env_home.map(Path::to_path_buf), allow_root: false });
    }
    let passwd_home = |name: &str| nix::unistd::User::from_name(name).ok().flatten().map(|u| u.dir);
    match explicit.filter(|u| !u.is_empty()) {
        Some("root") => Ok(HubAccount {
            user: None,
            user_home: passwd_home("root"),
            allow_root: crate::privsep::root_hub_refusal(home).is_some(),
        }),
        Some(name) => {
            Ok(HubAccount { user: Some(name.to_owned()), user_home: passwd_home(name), allow_root: false })
        }
        None => {
            let owner = crate::privsep::owner_of(home).map_err(|e| e.to_string())?;
            if owner.uid != 0 {
                let Some(name) = owner.name() else {
                    return Err(format!(
                        "{} belongs to uid {}, which has no account in the password database; pass --user USER",
                        home.display(),
                        owner.uid
                    ));
                };
                let user_home = passwd_home(&name);
                return Ok(HubAccount { user: Some(name), user_home, allow_root: false });
            }
            if let Some(why) = crate::privsep::root_hub_refusal(home) {
                return Err(format!(
                    "refusing a hub that runs as root on {}: {why}, so that user would choose the commands root runs. \
                     Pass --user USER to run it as that user, or --user root if root really should run it.",
                    home.display()
                ));
            }
            Ok(HubAccount { user: None, user_home: passwd_home("root"), allow_root: false })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::home::Home;

    #[test]
    fn system_units_run_as_the_home_owner_or_an_explicit_user() {
        let dir = tempfile::tempdir().unwrap();
        let user = hub_account(Scope::User, dir.path(), Some("op"), Some(Path::new("/h"))).unwrap();
        assert_eq!(user, HubAccount { user: None, user_home: Some("/h".into()), allow_root: false });
        let named = hub_account(Scope::System, dir.path(), Some("op"), None).unwrap();
        assert_eq!(named.user.as_deref(), Some("op"));
        assert_eq!(hub_account(Scope::System, dir.path(), Some("root"), None).unwrap().user, None);
        if nix::unistd::geteuid().is_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
            // Root's own, private home: a root hub is fine.
            assert_eq!(hub_account(Scope::System, dir.path(), None, None).unwrap().user, None);
            // A home owned by a uid without an account: refused, with the way out.
            std::os::unix::fs::chown(dir.path(), Some(54_329), None).unwrap();
            let err = hub_account(Scope::System, dir.path(), None, None).unwrap_err();
            assert!(err.contains("uid 54329") && err.contains("--user"), "{err}");
        }
    }

    #[test]
    fn path_has_sbin_bun_and_extra_first_without_duplicates() {
        let p = hub_path(Some(Path::new("/home/op")), Some("/opt/x/bin::/usr/bin"));
        assert_eq!(
            p,
            "/opt/x/bin:/usr/bin:/home/op/.bun/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:/bin:/home/op/.local/bin"
        );
        assert_eq!(hub_path(None, None), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    }

    #[test]
    fn spec_puts_home_and_port_in_argv_and_home_in_env() {
        let home = Home::new("/srv/para chute").unwrap();
        let s = hub_unit_spec(
            &home,
            2939,
            Path::new("/usr/local/bin/parachute"),
            Some(Path::new("/home/op")),
            None,
            Some("op"),
        );
        assert_eq!(
            s.argv,
            ["/usr/local/bin/parachute", "serve", "--home", "/srv/para chute", "--port", "2939"]
        );
        assert_eq!(s.env[0], ("PARACHUTE_HOME".to_owned(), "/srv/para chute".to_owned()));
        assert!(!s.env.iter().any(|(k, _)| k == "PORT"));
        assert_eq!(s.log_path, Path::new("/srv/para chute/hub/logs/hub.log"));
        assert_eq!(s.crash_loop, Some(HUB_CRASH_LOOP));
        assert_eq!(s.description, HUB_DESCRIPTION);
    }
}
