//! `parachute postinstall [--upgrade]` and `parachute preremove [--upgrade|--purge]`
//! against a real, private `systemd --user` (one sandbox per test) running the real hub
//! (`parachute serve` on a temp home with a fixture module).
//!
//! As in tests/systemd.rs, the binary runs inside the sandbox's mount namespace with a
//! cleared environment and a system bus address that does not exist, so only the sandbox
//! manager can be reached. The no-manager test runs outside the namespace, where this host
//! has no `/run/systemd/system`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use parachute::detect::SYSTEMD_BOOTED_MARKER;
use serde_json::Value;

use crate::support::hub::{TestHome, wait_output};
use crate::support::legacy_box::{LegacyBox, alive};
use crate::support::sandbox::Sandbox;
use crate::support::{free_port, parachute_bin, wait_for};
use crate::support::{json, show};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd-sandbox.sh")
}

/// `parachute <args>` inside the sandbox (or outside any manager when `sb` is `None`).
fn run(sb: Option<&Sandbox>, args: &[&str]) -> Output {
    let mut cmd = match sb {
        Some(s) => {
            let mut c = crate::support::isolated("bash");
            c.arg(script()).arg("exec").arg(s.dir()).arg("--").arg(parachute_bin());
            c
        }
        None => crate::support::parachute(),
    };
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    wait_output(cmd.spawn().unwrap(), Duration::from_secs(120))
}

/// The one unit report of a `postinstall --json` run.
fn unit_report(out: &Output) -> Value {
    let v = json(out);
    let units = v["units"].as_array().unwrap_or_else(|| panic!("no units: {v:#}"));
    assert_eq!(units.len(), 1, "{v:#}");
    units[0].clone()
}

/// A hub home with one fixture module, and its ports.
struct Hub {
    home: TestHome,
    port: u16,
    module_port: u16,
}

impl Hub {
    fn new() -> Hub {
        let home = TestHome::new();
        let module_port = free_port();
        home.fixture("alpha", module_port, &[]);
        Hub { home, port: free_port(), module_port }
    }

    fn home_str(&self) -> String {
        self.home.home().to_string_lossy().into_owned()
    }

    /// `parachute unit install` of the hub running `exec`, in the sandbox's user scope.
    fn install(&self, sb: &Sandbox, exec: &Path) {
        let out = run(
            Some(sb),
            &[
                "unit",
                "install",
                "--scope",
                "user",
                "--json",
                "--home",
                &self.home_str(),
                "--port",
                &self.port.to_string(),
                "--exec",
                exec.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", show(&out));
        self.wait_healthy(sb, None);
    }

    /// The manager's main pid of the hub unit (None when not running).
    fn main_pid(&self, sb: &Sandbox) -> Option<u32> {
        let out = run(Some(sb), &["unit", "status", "--scope", "user", "--json", "--home", &self.home_str()]);
        let v = json(&out);
        v["status"]["main_pid"].as_u64().map(|p| p as u32).filter(|_| v["status"]["active"] == true)
    }

    /// Waits until hub-instance.json names the main pid and /health answers from it (and,
    /// when `not` is given, that pid is a new one). Returns the pid.
    fn wait_healthy(&self, sb: &Sandbox, not: Option<u32>) -> u32 {
        wait_for("the hub unit to be healthy", Duration::from_secs(30), || {
            let pid = self.main_pid(sb)?;
            if Some(pid) == not {
                return None;
            }
            let inst = self.home.instance()?;
            if inst["pid"].as_u64() != Some(u64::from(pid)) {
                return None;
            }
            let (code, body) = crate::support::hub::http(self.port, "GET", "/health", None);
            let h: Value = serde_json::from_str(&body).ok()?;
            (code == 200 && h["pid"].as_u64() == Some(u64::from(pid)) && h["instance"] == inst["instance"])
                .then_some(pid)
        })
    }

    fn wait_module(&self) {
        wait_for("the fixture module to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", self.module_port)).ok()
        });
    }

    fn upgrade(&self, sb: &Sandbox, exec: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["postinstall", "--upgrade", "--json", "--exec", exec.to_str().unwrap()];
        args.extend_from_slice(extra);
        run(Some(sb), &args)
    }

    /// What `parachute unit render` gives for this hub running `exec` (the sandbox's HOME
    /// is the user home the unit was installed with).
    fn rendered(&self, sb: &Sandbox, exec: &Path) -> String {
        let out = run(
            Some(sb),
            &[
                "unit",
                "render",
                "--scope",
                "user",
                "--home",
                &self.home_str(),
                "--port",
                &self.port.to_string(),
                "--exec",
                exec.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", show(&out));
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A copy of the parachute binary at `dir/parachute` (a hard link when possible: the
/// binary is large and the name is what matters).
fn binary_at(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("parachute");
    if std::fs::hard_link(parachute_bin(), &p).is_err() {
        std::fs::copy(parachute_bin(), &p).unwrap();
    }
    p
}

fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap().to_string_lossy().into_owned()
}

#[test]
fn upgrade_repairs_drift_restarts_once_and_then_leaves_the_hub_alone() {
    let hub = Hub::new();
    let Some(sb) = Sandbox::start("hooks_upgrade") else { return };
    let old = binary_at(&sb.dir().join("old-bin"));
    let new = binary_at(&sb.dir().join("bin"));
    hub.install(&sb, &old);
    // An older definition: another binary and a stale variable (upstream's 0.0.0.0 bind).
    let unit = sb.unit_dir().join("parachute-hub.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let stale = text.replace("[Service]\n", "[Service]\nEnvironment=\"PARACHUTE_BIND_HOST=0.0.0.0\"\n");
    std::fs::write(&unit, &stale).unwrap();
    let pid1 = hub.wait_healthy(&sb, None);
    hub.wait_module();

    let out = hub.upgrade(&sb, &new, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let r = unit_report(&out);
    assert_eq!(r["outcome"], "restarted", "{r:#}");
    assert_eq!(r["healthy_before"], true, "{r:#}");
    assert_eq!(r["home"], hub.home_str());
    assert_eq!(r["port"], hub.port);
    assert!(r["diff"].as_str().unwrap().contains("-Environment=\"PARACHUTE_BIND_HOST=0.0.0.0\""), "{r:#}");
    let pid2 = hub.wait_healthy(&sb, Some(pid1));
    assert_eq!(r["pid_after"].as_u64(), Some(u64::from(pid2)), "{r:#}");
    assert_eq!(std::fs::read_to_string(&unit).unwrap(), hub.rendered(&sb, &new), "the unit is re-rendered");
    assert_eq!(exe_of(pid2), new.to_string_lossy(), "the hub now runs the new binary");
    hub.wait_module();

    // Again: nothing to do, no restart.
    let before = std::fs::metadata(&unit).unwrap().modified().unwrap();
    let out = hub.upgrade(&sb, &new, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let r = unit_report(&out);
    assert_eq!(r["outcome"], "in-sync", "{r:#}");
    assert_eq!(r["reasons"], serde_json::json!([]));
    assert_eq!(hub.main_pid(&sb), Some(pid2), "no restart when nothing changed");
    assert_eq!(std::fs::metadata(&unit).unwrap().modified().unwrap(), before, "the file is not rewritten");

    // A package upgrade replaces the binary under an unchanged unit (rename over it, as
    // dpkg does): the running hub's binary is deleted, and only the binary changed, so the
    // hub replaces its own image (issue 17): same main pid, now running the new file.
    let staged = sb.dir().join("bin/.parachute.dpkg-new");
    std::fs::copy(parachute_bin(), &staged).unwrap();
    std::fs::rename(&staged, &new).unwrap();
    assert!(exe_of(pid2).ends_with(" (deleted)"));
    let unit_bytes = std::fs::read(&unit).unwrap();
    let out = hub.upgrade(&sb, &new, &[]);
    let r = unit_report(&out);
    assert_eq!(
        (r["outcome"].as_str(), r["upgrade"].as_str()),
        (Some("upgraded-in-place"), Some("in_place")),
        "{r:#}"
    );
    assert!(r["reasons"].to_string().contains("has since been replaced"), "{r:#}");
    assert_eq!(r["pid_after"].as_u64(), Some(u64::from(pid2)), "{r:#}");
    assert_eq!(hub.wait_healthy(&sb, None), pid2, "the same main process");
    assert_eq!(exe_of(pid2), new.to_string_lossy());
    assert_eq!(std::fs::read(&unit).unwrap(), unit_bytes, "the definition itself was current");
    hub.wait_module();

    // A new build that answers `--version` but crashes as soon as it is asked to serve:
    // a restart onto it would take the hub down with its modules, so the hook leaves the
    // running hub (the previous build) alone and warns, saying why (exit 0, as for any
    // warning: the package operation goes on; the hub was not broken).
    let crashing =
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'parachute 9.9.9'; exit 0; fi\nkill -SEGV $$\n";
    crate::upgrade::replace_binary(&new, crashing.as_bytes());
    let out = hub.upgrade(&sb, &new, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let r = unit_report(&out);
    assert_eq!(r["outcome"], "exec-broken", "{r:#}");
    let msg = r["message"].as_str().unwrap();
    assert!(msg.contains("cannot serve") && msg.contains("keeps running the previous build"), "{r:#}");
    assert_eq!(hub.main_pid(&sb), Some(pid2), "the hub was not restarted onto the broken build");
    assert_eq!(hub.wait_healthy(&sb, None), pid2);
    hub.wait_module();

    // A new build that refuses the hand-over (its dry run fails) but serves: the hook says
    // why and falls back to the restart.
    // (A refusing `parachute` names the flag, as this build's own refusal does.)
    let refusing = "#!/bin/sh\ncase \"$*\" in *--check-handover*) echo 'parachute serve --check-handover: this build refuses the hand-over' >&2; exit 1;; esac\n";
    crate::upgrade::replace_binary(
        &new,
        format!("{refusing}exec {} \"$@\"\n", parachute_bin().display()).as_bytes(),
    );
    let out = hub.upgrade(&sb, &new, &[]);
    assert!(out.status.success(), "{}", show(&out));
    let r = unit_report(&out);
    assert_eq!((r["outcome"].as_str(), r["upgrade"].as_str()), (Some("restarted"), Some("restart")), "{r:#}");
    let why = r["in_place_error"].as_str().unwrap_or_default();
    assert!(why.contains("this build refuses the hand-over"), "{r:#}");
    assert!(r["message"].as_str().unwrap().contains("in-place upgrade was not possible"), "{r:#}");
    let pid3 = hub.wait_healthy(&sb, Some(pid2));
    assert_eq!(r["pid_after"].as_u64(), Some(u64::from(pid3)), "{r:#}");
    hub.wait_module();
}

#[test]
fn a_failing_upgrade_is_reported_with_the_log_tail_and_rolled_back() {
    let hub = Hub::new();
    let Some(sb) = Sandbox::start("hooks_rollback") else { return };
    hub.install(&sb, &parachute_bin());
    let pid1 = hub.wait_healthy(&sb, None);
    let unit = sb.unit_dir().join("parachute-hub.service");
    let previous = std::fs::read(&unit).unwrap();
    // A new build that runs (`--version` works) but cannot serve.
    let broken = sb.dir().join("broken/parachute");
    std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
    std::fs::write(
        &broken,
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'parachute 9.9.9'; exit 0; fi\n\
         echo \"broken build: cannot serve ($*)\" >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let out = hub.upgrade(&sb, &broken, &["--wait", "5"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "rolled back to a healthy hub: the package goes on\n{}",
        show(&out)
    );
    let r = unit_report(&out);
    assert_eq!(r["outcome"], "rolled-back", "{r:#}");
    assert!(r["log_tail"].to_string().contains("broken build: cannot serve"), "{r:#}");
    assert!(r["message"].as_str().unwrap().contains("previous definition was restored"), "{r:#}");
    assert_eq!(std::fs::read(&unit).unwrap(), previous, "the previous bytes are back");
    let pid2 = hub.wait_healthy(&sb, Some(pid1));
    assert_eq!(r["pid_after"].as_u64(), Some(u64::from(pid2)));
    assert_eq!(exe_of(pid2), parachute_bin().to_string_lossy());
    hub.wait_module();

    // Human output: the failure and the log tail go to stderr; still exit 0.
    let out =
        run(Some(&sb), &["postinstall", "--upgrade", "--wait", "5", "--exec", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not come back healthy") && err.contains("last lines of the hub log"), "{err}");
    assert!(err.contains("broken build"), "{err}");
    let pid3 = hub.wait_healthy(&sb, Some(pid2));

    // The worst case: the previous definition's binary is gone as well (the package
    // replaced it), so the rollback cannot bring the healthy hub back either. That is the
    // one postinstall failure that must stop the package operation: exit 1.
    let old = binary_at(&sb.dir().join("old-bin"));
    hub.install(&sb, &old);
    let pid4 = hub.wait_healthy(&sb, Some(pid3));
    std::fs::remove_file(&old).unwrap();
    let out = hub.upgrade(&sb, &broken, &["--wait", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r = unit_report(&out);
    assert_eq!(r["outcome"], "rollback-failed", "{r:#}");
    assert_eq!(r["healthy_before"], true, "{r:#}");
    assert_eq!(r["pid_before"].as_u64(), Some(u64::from(pid4)), "{r:#}");
    assert!(r["message"].as_str().unwrap().contains("did not come back on it either"), "{r:#}");
}

#[test]
fn preremove_keeps_the_unit_on_upgrade_removes_it_otherwise_and_purge_keeps_data() {
    let hub = Hub::new();
    let Some(sb) = Sandbox::start("hooks_remove") else { return };
    hub.install(&sb, &parachute_bin());
    let pid = hub.wait_healthy(&sb, None);
    let unit = sb.unit_dir().join("parachute-hub.service");
    let home = hub.home.home();
    let data = home.join("vault/.env");
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    std::fs::write(&data, "VAULT_KEY=keep-me\n").unwrap();

    let out = run(Some(&sb), &["preremove", "--upgrade"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stays installed"), "{}", show(&out));
    assert_eq!(hub.main_pid(&sb), Some(pid), "upgrade leaves the hub running");
    assert!(unit.exists());

    let list = hub.home.scratch("state/purge.list");
    let out = run(Some(&sb), &["preremove", "--json", "--purge-list", list.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["units"][0]["removed"], true, "{v:#}");
    assert!(!unit.exists(), "the unit file is gone");
    assert_eq!(hub.main_pid(&sb), None);
    wait_for("the hub port to be released", Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", hub.port)).err()
    });
    let listed = std::fs::read_to_string(&list).unwrap();
    assert!(
        listed.contains(&format!("{}/hub/run/migrate-journal.json\n", home.display()))
            && listed.contains(&format!("{}/hub/run/migrate.lock\n", home.display())),
        "the purge list names the unit's home: {listed}"
    );

    // State a cutover left, then the purge (binary still present: `--purge` does it all).
    std::fs::write(home.join("hub/run/migrate-journal.json"), "{}").unwrap();
    std::fs::write(home.join("hub/run/migrate.lock"), "").unwrap();
    let out = run(Some(&sb), &["preremove", "--purge", "--purge-list", list.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no parachute-hub.service installed"), "{text}");
    assert!(text.contains("deleted") && text.contains("migrate-journal.json"), "{text}");
    assert!(
        !home.join("hub/run/migrate-journal.json").exists() && !home.join("hub/run/migrate.lock").exists()
    );
    assert!(!list.exists(), "the purge list is used up");
    for kept in [home.join("services.json"), home.join("operator.token"), data.clone()] {
        assert!(kept.exists(), "purge must keep {}", kept.display());
    }
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "VAULT_KEY=keep-me\n");
}

#[test]
fn fresh_install_changes_nothing_and_says_how_to_migrate_a_legacy_box() {
    let mut b = LegacyBox::new();
    let hub = b.hub(free_port());
    let Some(sb) = Sandbox::start("hooks_fresh") else { return };
    let home = b.home();
    let out = run(Some(&sb), &["postinstall", "--home", home.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let hint: Vec<&str> = text.lines().filter(|l| l.contains("migrate --to-supervised")).collect();
    assert_eq!(hint.len(), 1, "one line: {text}");
    assert!(hint[0].contains("legacy Parachute daemons running (hub)"), "{text}");
    assert!(hint[0].contains(&format!("--home {}", home.display())), "{text}");
    assert!(text.contains("no hub unit installed"), "{text}");
    assert!(alive(&hub), "a fresh install stops nothing");
    assert!(!sb.unit_dir().join("parachute-hub.service").exists(), "and installs nothing");
}

#[test]
fn without_a_service_manager_every_hook_exits_0_with_one_line() {
    if Path::new("/").join(SYSTEMD_BOOTED_MARKER).exists() {
        // A host booted with systemd has a manager; this case cannot be built here.
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join("hub/run")).unwrap();
    std::fs::write(home.join("services.json"), "{\"services\":[]}").unwrap();
    std::fs::write(home.join("hub/run/migrate-journal.json"), "{}").unwrap();
    let h = home.to_str().unwrap();
    for args in [
        vec!["postinstall", "--home", h],
        vec!["postinstall", "--upgrade", "--home", h],
        vec!["preremove", "--home", h],
        vec!["preremove", "--upgrade", "--home", h],
    ] {
        let out = run(None, &args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", show(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().count(), 1, "{args:?}: one line: {text}");
        if args[1] != "--upgrade" || args[0] == "postinstall" {
            assert!(
                text.contains("no service manager here") && text.contains(SYSTEMD_BOOTED_MARKER),
                "{text}"
            );
        }
    }
    // Purging the cutover's state needs no manager.
    let out = run(None, &["preremove", "--purge", "--home", h]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(!home.join("hub/run/migrate-journal.json").exists());
    assert!(home.join("services.json").exists());
    // The generic wrappers only call the binary (PARACHUTE names it, as a package would).
    for (script, args, want) in [
        ("postinstall.sh", vec!["--upgrade", "--home", h], "no hub unit to refresh"),
        ("preremove.sh", vec!["--home", h], "no hub unit to stop or remove"),
    ] {
        let out = wait_output(
            crate::support::isolated("/bin/sh")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(script))
                .args(&args)
                .env("PATH", "/usr/bin:/bin")
                .env("PARACHUTE", parachute_bin())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
            Duration::from_secs(60),
        );
        assert_eq!(out.status.code(), Some(0), "{script}: {}", show(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains(want), "{script}: {}", show(&out));
    }
    let out = wait_output(
        crate::support::isolated("/bin/sh")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postinstall.sh"))
            .env("PATH", "/nonexistent")
            .env("PARACHUTE", "/nonexistent/parachute")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no parachute binary found"), "{}", show(&out));
    // Bad flags are a packaging bug: exit 2.
    assert_eq!(run(None, &["postinstall", "--exec", "relative/parachute"]).status.code(), Some(2));
    assert_eq!(run(None, &["preremove", "--upgrade", "--purge"]).status.code(), Some(2));
}

/// The hub's reading of installed units, read back through each backend's own reader.
mod readback {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use parachute::hooks::installed::InstalledHub;
    use parachute::hooks::{RefreshOptions, RefreshOutcome, refresh};
    use parachute::hub_unit::hub_unit_spec;
    use parachute::model::home::Home;
    use parachute_manager::{AfterInstall, ErrorKind, Scope, ServiceManager, UnitId, UnitSpec};
    use proptest::prelude::*;

    use crate::support::parachute_bin;

    fn systemd(text: &[u8]) -> InstalledHub {
        InstalledHub::new(parachute_systemd::read_unit(Path::new("/u/parachute-hub.service"), text).unwrap())
    }

    fn golden(name: &str) -> Vec<u8> {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("units").join(name)).unwrap()
    }

    #[test]
    fn golden_units_read_back_home_port_user_and_path() {
        let sys = systemd(&golden("parachute-hub.system.service"));
        assert_eq!(sys.run_as_user(), Some("op"));
        assert_eq!(sys.home().unwrap().root(), Path::new("/home/op/.parachute"));
        assert_eq!(sys.port().unwrap(), 1939);
        assert_eq!(sys.path_parts(), (Some(PathBuf::from("/home/op")), None));
        // Re-rendering it for the same binary gives the same bytes: no false drift.
        let spec = sys.respec(Path::new("/usr/local/bin/parachute"), Scope::System, None).unwrap();
        let text = parachute_systemd::render_unit(&spec, Scope::System).unwrap();
        assert_eq!(text.as_bytes(), golden("parachute-hub.system.service"));
    }

    #[test]
    fn upstream_units_are_read_from_their_environment() {
        let text = "[Unit]\nDescription=Parachute hub (serve + supervisor)\n[Service]\n\
            Environment=PARACHUTE_BIND_HOST=127.0.0.1\nEnvironment=PARACHUTE_HOME=/home/op/.parachute\n\
            Environment=PORT=2939\n\
            Environment=PATH=/opt/x:/home/op/.bun/bin:/usr/local/bin:/usr/bin:/bin:/home/op/.local/bin\n\
            ExecStart=/home/op/.bun/bin/bun /home/op/hub/src/cli.ts serve\n";
        let u = systemd(text.as_bytes());
        assert_eq!(u.home().unwrap().root(), Path::new("/home/op/.parachute"));
        assert_eq!(u.port().unwrap(), 2939);
        assert_eq!(u.path_parts(), (Some(PathBuf::from("/home/op")), Some("/opt/x".to_owned())));
        let spec = u.respec(Path::new("/usr/bin/parachute"), Scope::User, None).unwrap();
        assert_eq!(
            spec.argv,
            ["/usr/bin/parachute", "serve", "--home", "/home/op/.parachute", "--port", "2939"]
        );
        assert!(spec.env[1].1.starts_with("/opt/x:/home/op/.bun/bin:"), "{:?}", spec.env);
    }

    #[test]
    fn units_without_home_or_port_say_what_is_missing() {
        assert!(
            systemd(b"[Service]\nExecStart=/bin/hub serve\n").home().unwrap_err().contains("PARACHUTE_HOME")
        );
        assert!(
            systemd(b"[Service]\nExecStart=/p serve --home rel\n").home().unwrap_err().contains("relative")
        );
        assert!(systemd(b"[Service]\nExecStart=/p serve --port x\n").port().unwrap_err().contains("\"x\""));
        let e = parachute_launchd::read_plist(Path::new("/p.plist"), b"not a plist").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unreadable);
    }

    #[test]
    fn launchd_plists_read_back() {
        let home = Home::new("/Users/op/.parachute").unwrap();
        let spec = hub_unit_spec(
            &home,
            1940,
            Path::new("/opt/homebrew/opt/parachute/bin/parachute"),
            Some(Path::new("/Users/op")),
            Some("/opt/homebrew/bin"),
            Some("op"),
        );
        let bytes = parachute_launchd::render_plist(&spec, Scope::System).unwrap();
        let u = InstalledHub::new(parachute_launchd::read_plist(Path::new("/p.plist"), &bytes).unwrap());
        assert_eq!(u.respec(Path::new(&spec.argv[0]), Scope::System, None).unwrap(), spec);
    }

    proptest! {
        /// Whatever the systemd renderer writes for the hub, the hub reads back to the same spec.
        #[test]
        fn render_then_read_round_trips(home in "/[a-z%$\"' \\\\;]{1,10}", port in 1u16.., extra in "[ -~]{0,12}", user in "[a-z]{1,8}") {
            let Ok(home) = Home::new(home.trim_end()) else { return Ok(()) };
            let extra = extra.replace(':', "");
            let spec = hub_unit_spec(
                &home, port, Path::new("/usr/bin/parachute"), Some(Path::new("/home/op")),
                Some(&format!("/opt/{extra}")), Some(&user),
            );
            for scope in [Scope::User, Scope::System] {
                let Ok(text) = parachute_systemd::render_unit(&spec, scope) else { continue };
                let back = systemd(text.as_bytes()).respec(Path::new("/usr/bin/parachute"), scope, None).unwrap();
                let want = if scope == Scope::User { UnitSpec { run_as_user: None, ..spec.clone() } } else { spec.clone() };
                prop_assert_eq!(back, want);
            }
        }
    }

    /// The launchctl double of platform/launchd (launchctl cannot run here), built on demand
    /// next to this test's parachute binary.
    fn launchctl_double() -> PathBuf {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "parachute-launchd", "--bin", "launchctl-double"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "building launchctl-double failed");
        parachute_bin().with_file_name("launchctl-double")
    }

    struct Double {
        dir: tempfile::TempDir,
        bin: PathBuf,
    }

    impl Drop for Double {
        fn drop(&mut self) {
            let _ = std::process::Command::new(&self.bin)
                .arg("__shutdown")
                .env("LAUNCHCTL_DOUBLE_STATE", self.dir.path().join("state"))
                .output();
        }
    }

    /// An upgrade refresh of a LaunchAgent: the plist is read back, re-rendered for the new
    /// binary with the same home, port and PATH, and rewritten (the agent is not running, so
    /// it stays down); a second refresh finds it current.
    #[tokio::test]
    async fn a_launchd_upgrade_refresh_round_trips_the_installed_plist() {
        let d = Double { dir: tempfile::tempdir().unwrap(), bin: launchctl_double() };
        let launchctl = parachute_launchd::Launchctl::new(&d.bin)
            .with_env("LAUNCHCTL_DOUBLE_STATE", d.dir.path().join("state"))
            .with_timeout(Duration::from_secs(20));
        let dirs = parachute_launchd::LaunchdDirs {
            agents: d.dir.path().join("LaunchAgents"),
            daemons: d.dir.path().join("LaunchDaemons"),
        };
        let m = parachute_launchd::LaunchdManager::new(Scope::User, dirs, 501, launchctl);
        assert_eq!(m.kind(), "launchd-agent");
        let home = Home::new(d.dir.path().join("Users/op/.parachute")).unwrap();
        let user_home = d.dir.path().join("Users/op");
        let old = hub_unit_spec(
            &home,
            2940,
            Path::new("/opt/homebrew/Cellar/parachute/0.9/bin/parachute"),
            Some(&user_home),
            Some("/opt/homebrew/bin"),
            None,
        );
        m.install(&old, AfterInstall::DontStart).await.unwrap();

        let opts = RefreshOptions {
            exec: parachute_bin(),
            fallback_user_home: None,
            wait: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(10),
        };
        let r = refresh(&m, &opts).await;
        assert_eq!(r.outcome, RefreshOutcome::Rewritten, "{}", r.message);
        assert_eq!(r.backend, "launchd-agent");
        assert!(r.message.starts_with("computer.parachute.hub (user scope)"), "{}", r.message);
        assert_eq!((r.home.as_deref(), r.port), (Some(home.root()), Some(2940)));
        assert!(r.diff.as_deref().is_some_and(|d| d.contains("Cellar")), "{:?}", r.diff);

        let installed = m.read_installed(&UnitId::hub()).unwrap().expect("the plist is still there");
        let want =
            hub_unit_spec(&home, 2940, &parachute_bin(), Some(&user_home), Some("/opt/homebrew/bin"), None);
        assert_eq!(installed.bytes, m.render(&want).unwrap());
        let back = InstalledHub::new(installed).respec(&parachute_bin(), Scope::User, None).unwrap();
        assert_eq!(back, want);

        let again = refresh(&m, &opts).await;
        assert_eq!(again.outcome, RefreshOutcome::InSync, "{}", again.message);
    }
}
