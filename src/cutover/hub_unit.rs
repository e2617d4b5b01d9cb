//! The hub's unit spec: what the cutover installs, built from the home, the port and the
//! binary only, so the unit captures exactly the box it was made for.
//!
//! The unit runs `<exec> serve --home <home> --port <port>` with `PARACHUTE_HOME` set too,
//! so the hub and every module it spawns agree on the box whatever the manager's
//! environment is (upstream relied on inheritance). The crash-loop ceiling goes in `[Unit]`
//! (the backend's renderer puts it there; upstream W1 had it in `[Service]`, where systemd
//! ignores it).

use std::path::Path;

use parachute_manager::{CrashLoop, UnitId, UnitSpec};

use crate::model::home::Home;

/// The hub unit's crash-loop ceiling: at most 5 starts in 5 minutes, 5 s apart.
pub const HUB_CRASH_LOOP: CrashLoop = CrashLoop { interval_sec: 300, burst: 5, throttle_sec: 5 };

/// The hub unit for `home` on `port`, running `exec`.
pub fn hub_unit_spec(home: &Home, port: u16, exec: &Path) -> UnitSpec {
    let root = home.root().to_string_lossy().into_owned();
    UnitSpec {
        id: UnitId::hub(),
        description: "Parachute hub (parachute serve)".to_owned(),
        argv: vec![
            exec.to_string_lossy().into_owned(),
            "serve".to_owned(),
            "--home".to_owned(),
            root.clone(),
            "--port".to_owned(),
            port.to_string(),
        ],
        env: vec![("PARACHUTE_HOME".to_owned(), root)],
        working_dir: Some(home.root().to_path_buf()),
        log_path: home.hub_log(),
        crash_loop: Some(HUB_CRASH_LOOP),
        run_as_user: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_home_port_and_binary() {
        let home = Home::new("/srv/para chute").unwrap();
        let spec = hub_unit_spec(&home, 2939, Path::new("/usr/local/bin/parachute"));
        assert_eq!(spec.id, UnitId::hub());
        assert_eq!(
            spec.argv,
            ["/usr/local/bin/parachute", "serve", "--home", "/srv/para chute", "--port", "2939"]
        );
        assert_eq!(spec.env, [("PARACHUTE_HOME".to_owned(), "/srv/para chute".to_owned())]);
        assert_eq!(spec.log_path, Path::new("/srv/para chute/hub/logs/hub.log"));
    }
}
