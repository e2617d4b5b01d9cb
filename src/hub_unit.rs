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

use std::path::Path;

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
    }
}

/// Who a system-scope hub unit runs as: the human behind `sudo`, never root by accident
/// (W7). User units run as their manager's user.
pub fn run_as_user(scope: Scope, sudo_user: Option<&str>) -> Option<&str> {
    match scope {
        Scope::System => sudo_user.filter(|u| !u.is_empty() && *u != "root"),
        Scope::User => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_units_run_as_the_sudo_user_but_never_root() {
        assert_eq!(run_as_user(Scope::System, Some("op")), Some("op"));
        assert_eq!(run_as_user(Scope::System, Some("root")), None);
        assert_eq!(run_as_user(Scope::System, Some("")), None);
        assert_eq!(run_as_user(Scope::User, Some("op")), None);
    }
}
