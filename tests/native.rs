//! The hub as a native citizen of systemd, against a private `systemd --user` (real
//! manager, real hub, real fixture modules): `Type=notify` readiness that waits for every
//! module, the status line, the watchdog, and the hardened unit still running modules.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use parachute::hub_unit::hub_unit_spec;
use parachute::model::home::Home;
use parachute_manager::{AfterInstall, CrashLoop, Readiness, Scope, ServiceManager, UnitSpec};
use parachute_systemd::SystemdManager;
use parachute_systemd::connect::SYSTEM_UNIT_DIR;
use serde_json::json;

use crate::support::sandbox::Sandbox;
use crate::support::{fixture_bin, free_port, parachute_bin, wait_for};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd-sandbox.sh")
}

/// A command inside the sandbox's namespace and environment.
fn in_sandbox(sb: &Sandbox, cmd: &[&str]) -> Output {
    crate::support::isolated("bash")
        .arg(script())
        .arg("exec")
        .arg(sb.dir())
        .arg("--")
        .args(cmd)
        .output()
        .expect("run a command in the sandbox")
}

fn show_prop(sb: &Sandbox, prop: &str) -> String {
    let out =
        in_sandbox(sb, &["systemctl", "--user", "show", "-p", prop, "--value", "parachute-hub.service"]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The sandbox's Parachute home with `modules` (name, port, start command) in services.json.
fn home_with(sb: &Sandbox, modules: &[(&str, u16, Vec<String>)]) -> Home {
    let root = sb.dir().join("home/.parachute");
    let mut rows = Vec::new();
    for (name, port, cmd) in modules {
        let install = sb.dir().join("home/modules").join(name);
        std::fs::create_dir_all(install.join(".parachute")).unwrap();
        std::fs::write(
            install.join(".parachute/module.json"),
            json!({"name": name, "startCmd": cmd}).to_string(),
        )
        .unwrap();
        rows.push(json!({
            "name": name, "port": port, "paths": [format!("/{name}")], "health": "/health",
            "version": "1.0.0", "installDir": install.to_str().unwrap(),
        }));
    }
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("services.json"), json!({ "services": rows }).to_string()).unwrap();
    Home::new(root).unwrap()
}

fn fixture(port: u16, flags: &[&str]) -> Vec<String> {
    let mut v = vec![fixture_bin().to_string_lossy().into_owned(), "--port".into(), port.to_string()];
    v.extend(flags.iter().map(|s| s.to_string()));
    v
}

fn hub_spec(sb: &Sandbox, home: &Home, port: u16) -> UnitSpec {
    hub_unit_spec(home, port, &parachute_bin(), Some(Path::new(sb.var("HOME"))), None, None)
}

async fn manager(sb: &Sandbox) -> SystemdManager {
    SystemdManager::new(sb.connect().await, Scope::User, sb.unit_dir())
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The start job of the hardened, `Type=notify` hub unit completes only once every module
/// answers; a module that tries to report READY=1 itself has no notify socket to do it
/// with; the status line counts the modules.
#[tokio::test]
async fn the_start_job_waits_for_every_module_and_a_module_cannot_report_ready() {
    let Some(sb) = Sandbox::start("notify_ready") else { return };
    let (slow, eager, hub_port) = (free_port(), free_port(), free_port());
    let env_dump = sb.dir().join("home/eager-env.txt");
    // `eager` dumps its environment and tries systemd-notify --ready before it binds.
    let eager_cmd = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        format!(
            "env > {}; systemd-notify --ready 2>/dev/null; exec {} --port {eager}",
            env_dump.display(),
            fixture_bin().display()
        ),
    ];
    let home = home_with(
        &sb,
        &[("slow", slow, fixture(slow, &["--listen-delay-ms", "1500"])), ("eager", eager, eager_cmd)],
    );
    let spec = hub_spec(&sb, &home, hub_port);
    assert!(matches!(spec.readiness, Readiness::Notify { .. }) && spec.hardened);

    let mgr = manager(&sb).await;
    let started = Instant::now();
    mgr.install(&spec, AfterInstall::Start).await.expect("install and start the hub unit");
    let took = started.elapsed();
    assert!(answers(slow), "the start job returned before the slow module's port answered");
    assert!(answers(eager));
    assert!(took >= Duration::from_millis(1500), "the start job took only {took:?}");

    assert_eq!(show_prop(&sb, "StatusText"), "2/2 modules up");
    let env = std::fs::read_to_string(&env_dump).unwrap();
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"] {
        assert!(!env.lines().any(|l| l.starts_with(&format!("{var}="))), "{var} reached a module:\n{env}");
    }
    // The hardened unit runs modules that bind 127.0.0.1 and write inside the home.
    assert!(env.contains("PARACHUTE_HOME="), "{env}");
    mgr.teardown(&spec.id).await.unwrap();
}

/// `kill -STOP` of the hub: its loop stops pinging, systemd kills it for the watchdog and
/// restarts it, and the stopped instance's modules go with its cgroup.
#[tokio::test]
async fn a_stopped_hub_is_restarted_for_the_watchdog_and_its_modules_die() {
    let Some(sb) = Sandbox::start("notify_watchdog") else { return };
    let (module_port, hub_port) = (free_port(), free_port());
    let home = home_with(&sb, &[("alpha", module_port, fixture(module_port, &[]))]);
    let watchdog = 2;
    let spec = UnitSpec {
        readiness: Readiness::Notify { start_timeout_sec: 30, watchdog_sec: Some(watchdog) },
        // Restart at once, so the restart itself is what is timed.
        crash_loop: Some(CrashLoop { interval_sec: 60, burst: 5, throttle_sec: 0 }),
        ..hub_spec(&sb, &home, hub_port)
    };
    let mgr = manager(&sb).await;
    mgr.install(&spec, AfterInstall::Start).await.expect("install and start the hub unit");
    let hub_pid: u32 = show_prop(&sb, "MainPID").parse().unwrap();
    assert!(hub_pid > 0);
    let module_pid = wait_for("the module's pid", Duration::from_secs(10), || {
        let state = std::fs::read_to_string(home.supervised_state()).ok()?;
        let v: serde_json::Value = serde_json::from_str(&state).ok()?;
        v.to_string().split("\"pid\":").nth(1)?.split([',', '}']).next()?.trim().parse::<u32>().ok()
    });
    // Several pings went out, so the watchdog is armed and fed.
    std::thread::sleep(Duration::from_millis(1500));

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(hub_pid as i32), nix::sys::signal::Signal::SIGSTOP)
        .unwrap();
    let stopped = Instant::now();
    let new_pid = wait_for("a new hub", Duration::from_secs(u64::from(watchdog) + 10), || {
        let pid: u32 = show_prop(&sb, "MainPID").parse().ok()?;
        (pid != 0 && pid != hub_pid).then_some(pid)
    });
    let took = stopped.elapsed();
    assert!(
        took <= Duration::from_secs(u64::from(watchdog) + 1),
        "systemd took {took:?} to replace the stopped hub (WatchdogSec={watchdog})"
    );
    assert_eq!(show_prop(&sb, "NRestarts"), "1");
    let journal = in_sandbox(
        &sb,
        &[
            "journalctl",
            "-D",
            sb.var("SYSTEMD_SANDBOX_JOURNAL_DIR"),
            "--user-unit",
            "parachute-hub.service",
            "--no-pager",
        ],
    );
    let journal = String::from_utf8_lossy(&journal.stdout);
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    assert!(!Path::new(&format!("/proc/{hub_pid}")).exists(), "the stopped hub survived");
    assert!(
        !Path::new(&format!("/proc/{module_pid}")).exists(),
        "module pid {module_pid} of the stopped instance survived"
    );
    // The new instance brings the module back.
    wait_for("the module again", Duration::from_secs(15), || answers(module_port).then_some(()));
    assert_ne!(new_pid, hub_pid);
    mgr.teardown(&spec.id).await.unwrap();
}

/// `systemd-analyze` on the units `parachute unit render` writes: the exposure score stays
/// within the profile's promise (system ≤ 2.5, user ≤ 6.0) and this systemd knows every key.
#[test]
fn rendered_units_score_within_bounds_and_have_no_unknown_keys() {
    let tmp = tempfile::tempdir().unwrap();
    for (scope, threshold, extra) in [("system", "25", None), ("user", "60", Some("--user"))] {
        let dir = tmp.path().join(scope);
        std::fs::create_dir_all(&dir).unwrap();
        // The binary is a stand-in outside /tmp: a unit whose binary lies under /tmp gets no
        // `PrivateTmp=` (it would hide the binary) and scores worse, and where this checkout
        // happens to live must not change the score. `verify` only needs it executable.
        let out = crate::support::parachute()
            .args(["unit", "render", "--scope", scope, "--home", "/home/op/.parachute", "--port", "1939"])
            .arg("--exec")
            .arg("/usr/bin/env")
            .env("HOME", "/home/op")
            .env("SUDO_USER", "op")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", crate::support::show(&out));
        let unit = dir.join("parachute-hub.service");
        std::fs::write(&unit, &out.stdout).unwrap();
        let mut cmd = std::process::Command::new("systemd-analyze");
        cmd.current_dir(&dir).env("XDG_RUNTIME_DIR", &dir);
        cmd.args(extra).args(["security", "--offline=true", &format!("--threshold={threshold}")]).arg(&unit);
        let score = cmd.output().expect("systemd-analyze (package systemd)");
        let text = String::from_utf8_lossy(&score.stdout);
        let overall = text.lines().find(|l| l.contains("Overall exposure")).unwrap_or("").to_owned();
        assert!(score.status.success(), "{scope} unit scores above {threshold}/10: {overall}");

        let verify = std::process::Command::new("systemd-analyze")
            .env("XDG_RUNTIME_DIR", &dir)
            .args(extra)
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap();
        let said =
            String::from_utf8_lossy(&verify.stderr).into_owned() + &String::from_utf8_lossy(&verify.stdout);
        assert!(!said.contains("Unknown key") && !said.contains("Unknown lvalue"), "{scope}: {said}");
        assert!(
            !said.contains("parachute-hub.service:"),
            "{scope}: systemd-analyze verify complained: {said}"
        );
    }
}

/// The container probes of a real hub: `/readyz` is 503 with reasons until every module's
/// port answers, then 200; `/api/ready` has upstream's shape; a crashed module shows in
/// both; `/livez` stays 200 throughout (liveness is not module health). All open.
#[test]
fn probes_follow_the_modules_and_liveness_does_not() {
    use crate::support::hub::{Serve, TestHome};
    let home = TestHome::new();
    let (slow, quick, hub_port) = (free_port(), free_port(), free_port());
    home.fixture("slow", slow, &["--listen-delay-ms", "1500"]).fixture("quick", quick, &[]);
    let hub = Serve::ready(&home, hub_port, &[]);
    let (code, body) = hub.http("GET", "/readyz", None);
    assert_eq!(code, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(!v["reasons"].as_array().unwrap().is_empty(), "{body}");

    wait_for("/readyz 200", Duration::from_secs(15), || {
        (hub.http("GET", "/readyz", None).0 == 200).then_some(())
    });
    assert!(answers(slow) && answers(quick));
    let (code, body) = hub.http("GET", "/api/ready", None);
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true, "{body}");
    let mut up: Vec<&str> =
        v["ready_modules"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    up.sort();
    assert_eq!(up, ["quick", "slow"]);
    assert_eq!(v["transient_modules"], json!([]));
    assert_eq!(v["persistent_modules"], json!([]));
    assert_eq!(hub.http("HEAD", "/api/ready", None).0, 200);
    assert_eq!(hub.http("POST", "/api/ready", None).0, 405);

    // Stopping a module (as an operator would): persistent, and /readyz says which.
    let token = home.token();
    assert_eq!(hub.http("POST", "/api/modules/quick/stop", Some(&token)).0, 200);
    let (code, body) = hub.http("GET", "/readyz", None);
    assert_eq!(code, 503);
    assert!(body.contains("quick stopped"), "{body}");
    let v: serde_json::Value = serde_json::from_str(&hub.http("GET", "/api/ready", None).1).unwrap();
    assert_eq!(v["persistent_modules"], json!(["quick"]));
    assert_eq!(v["ready"], false);
    let (code, body) = hub.http("GET", "/livez", None);
    assert_eq!(code, 200, "{body}");
}

fn journal(sb: &Sandbox, filter: &[&str]) -> String {
    let mut args = vec![
        "journalctl",
        "-D",
        sb.var("SYSTEMD_SANDBOX_JOURNAL_DIR"),
        "--user-unit",
        "parachute-hub.service",
        "--no-pager",
    ];
    args.extend(filter);
    String::from_utf8_lossy(&in_sandbox(sb, &args).stdout).into_owned()
}

/// Under a user unit every module's lines reach the sandbox's journal under the module's
/// own identifier (`journalctl -u parachute-hub -t alpha` shows alpha alone, stderr at
/// priority err), supervisor events carry PARACHUTE_MODULE/PARACHUTE_EVENT, and the ring
/// buffer behind `parachute logs` still has every line.
#[tokio::test]
async fn each_module_has_its_own_identifier_in_the_journal() {
    let Some(sb) = Sandbox::start("journal_identity") else { return };
    let (alpha, beta, flaky, hub_port) = (free_port(), free_port(), free_port(), free_port());
    let home = home_with(
        &sb,
        &[
            (
                "alpha",
                alpha,
                fixture(alpha, &["--lines", "50", "--line-text", "alpha-says", "--stderr-lines", "3"]),
            ),
            ("beta", beta, fixture(beta, &["--lines", "40", "--line-text", "beta-says"])),
            ("flaky", flaky, fixture(flaky, &["--exit-after-ms", "2500", "--exit-code", "1"])),
        ],
    );
    let spec = hub_spec(&sb, &home, hub_port);
    assert!(spec.log_to_journal);
    let mgr = manager(&sb).await;
    mgr.install(&spec, AfterInstall::Start).await.expect("install and start the hub unit");

    let deadline = Instant::now() + Duration::from_secs(15);
    let alpha_lines = loop {
        let text = journal(&sb, &["-t", "alpha", "-o", "cat"]);
        if text.lines().filter(|l| l.starts_with("alpha-says")).count() == 50 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "alpha's 50 lines never reached the journal:\n{}",
            journal(&sb, &["-o", "short"])
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!alpha_lines.contains("beta-says"), "{alpha_lines}");
    assert!(!alpha_lines.contains("[alpha]"), "journal entries are named, not prefixed: {alpha_lines}");
    let beta_lines = journal(&sb, &["-t", "beta", "-o", "cat"]);
    assert_eq!(beta_lines.lines().filter(|l| l.starts_with("beta-says")).count(), 40, "{beta_lines}");
    assert!(!beta_lines.contains("alpha-says"));
    let errs = journal(&sb, &["-t", "alpha", "-p", "err", "-o", "cat"]);
    assert!(
        errs.lines().count() == 3 && errs.lines().all(|l| l.starts_with("err alpha-says")),
        "only the 3 stderr lines at priority err: {errs}"
    );

    // A supervisor event about a module (flaky crashes) is an entry with structured fields.
    let event = wait_for("flaky's crash event", Duration::from_secs(15), || {
        let text = journal(&sb, &["PARACHUTE_MODULE=flaky", "-o", "json"]);
        text.lines().find(|l| l.contains("PARACHUTE_EVENT")).map(str::to_owned)
    });
    let event: serde_json::Value = serde_json::from_str(&event).unwrap();
    // The kind of event, not just "supervisor": flaky exited and a restart is scheduled.
    assert_eq!(event["PARACHUTE_EVENT"], "restarting", "{event}");
    assert_eq!(event["SYSLOG_IDENTIFIER"], "parachute", "{event}");
    assert!(event["MESSAGE"].as_str().unwrap().contains("flaky"), "{event}");
    // Past its crash budget the hub gives up on it: an event of that kind, findable by field.
    let gave_up = wait_for("flaky's gave-up event", Duration::from_secs(30), || {
        let text = journal(&sb, &["PARACHUTE_EVENT=gave-up", "-o", "json"]);
        text.lines().next().map(str::to_owned)
    });
    let gave_up: serde_json::Value = serde_json::from_str(&gave_up).unwrap();
    assert_eq!(gave_up["PARACHUTE_MODULE"], "flaky", "{gave_up}");
    assert!(gave_up["MESSAGE"].as_str().unwrap().contains("giving up"), "{gave_up}");

    let token = std::fs::read_to_string(home.operator_token()).unwrap();
    let (code, body) =
        crate::support::hub::http(hub_port, "GET", "/api/modules/alpha/logs", Some(token.trim()));
    assert_eq!(code, 200);
    assert_eq!(body.matches("[alpha] alpha-says").count(), 50, "the ring buffer keeps every line: {body}");
    mgr.teardown(&spec.id).await.unwrap();
}

/// A python module: writes `path` (inside the home), then answers `python-ok` on
/// 127.0.0.1:`port`.
const PY_MODULE: &str = "import socket, sys\n\
port, path = int(sys.argv[1]), sys.argv[2]\n\
open(path, 'w').write('python wrote this')\n\
s = socket.socket()\n\
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
s.bind(('127.0.0.1', port))\n\
s.listen()\n\
while True:\n    c, _ = s.accept()\n    c.sendall(b'python-ok\\n')\n    c.close()\n";

/// A node module (V8's JIT needs writable+executable memory, which the profile leaves
/// alone): writes `path`, then answers `node-ok` on 127.0.0.1:`port`.
const JS_MODULE: &str = "const [port, path] = process.argv.slice(-2);\
require('fs').writeFileSync(path, 'node wrote this');\
require('net').createServer(s => s.end('node-ok\\n')).listen(+port, '127.0.0.1');";

/// The start commands of the python and node modules (node only when it is installed).
fn runtime_modules(home: &Path, py: u16, js: u16) -> Vec<(&'static str, u16, Vec<String>)> {
    let file = |name: &str| home.join(name).to_string_lossy().into_owned();
    let mut v = vec![(
        "py",
        py,
        vec!["/usr/bin/python3".into(), "-c".into(), PY_MODULE.into(), py.to_string(), file("py-wrote.txt")],
    )];
    if Path::new("/usr/bin/node").exists() {
        v.push((
            "js",
            js,
            vec!["/usr/bin/node".into(), "-e".into(), JS_MODULE.into(), js.to_string(), file("js-wrote.txt")],
        ));
    }
    v
}

fn greeting(port: u16) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = c.read_to_string(&mut s);
    }
    s
}

/// The hardened user unit runs real interpreters: a python and a node module each write a
/// file inside the home and answer on 127.0.0.1, and the start job waits for both.
#[tokio::test]
async fn a_hardened_user_unit_runs_python_and_node_modules_that_bind_loopback_and_write_the_home() {
    let Some(sb) = Sandbox::start("hardened_runtimes") else { return };
    let (py, js, hub_port) = (free_port(), free_port(), free_port());
    let root = sb.dir().join("home/.parachute");
    let modules = runtime_modules(&root, py, js);
    let home = home_with(&sb, &modules);
    let spec = hub_spec(&sb, &home, hub_port);
    assert!(spec.hardened);
    let mgr = manager(&sb).await;
    mgr.install(&spec, AfterInstall::Start).await.expect("install and start the hardened hub unit");
    assert_eq!(show_prop(&sb, "ProtectSystem"), "strict", "the unit is the hardened one");
    assert_eq!(greeting(py), "python-ok\n");
    assert_eq!(std::fs::read_to_string(root.join("py-wrote.txt")).unwrap(), "python wrote this");
    if modules.len() == 2 {
        assert_eq!(greeting(js), "node-ok\n");
        assert_eq!(std::fs::read_to_string(root.join("js-wrote.txt")).unwrap(), "node wrote this");
    }
    assert_eq!(show_prop(&sb, "StatusText"), format!("{0}/{0} modules up", modules.len()));
    mgr.teardown(&spec.id).await.unwrap();
}

/// The same in a booted system-mode systemd, where the profile is the strict one (no
/// capabilities, private devices, protected kernel): root installs the system unit for a
/// user's home, the hub runs as that user, and its python and node modules bind 127.0.0.1
/// and write inside the home, as that user.
#[test]
fn a_hardened_system_unit_runs_python_and_node_modules_as_the_home_owner() {
    use crate::support::system_box::SystemBox;
    let Some(b) = SystemBox::start("hardened_system_runtimes") else { return };
    let u = b.new_user("runtimes");
    let home = u.home.join("ph");
    let (py, js) = (free_port(), free_port());
    let modules = runtime_modules(&home, py, js);
    let mut rows = Vec::new();
    // Written from the host into the box's file system, then handed to the user.
    let write = |inner: &Path, text: &str| {
        let host = b.host_path(inner);
        std::fs::create_dir_all(host.parent().unwrap()).unwrap();
        std::fs::write(host, text).unwrap();
    };
    for (name, port, cmd) in &modules {
        let install = u.home.join("modules").join(name);
        write(&install.join(".parachute/module.json"), &json!({"name": name, "startCmd": cmd}).to_string());
        rows.push(json!({
            "name": name, "port": port, "paths": [format!("/{name}")], "health": "/health",
            "version": "1.0.0", "installDir": install.to_str().unwrap(),
        }));
    }
    write(&home.join("services.json"), &json!({ "services": rows }).to_string());
    b.sh(&format!("chown -R {0}:{0} {1}", u.name, u.home.display()));

    let out = b.run(&[
        &b.parachute(),
        "unit",
        "install",
        "--scope",
        "system",
        "--home",
        home.to_str().unwrap(),
        "--exec",
        &b.parachute(),
    ]);
    assert!(out.status.success(), "{}", crate::support::show(&out));
    let unit = b.sh(&format!("cat {SYSTEM_UNIT_DIR}/parachute-hub.service"));
    assert!(unit.contains(&format!("User={}\n", u.name)), "{unit}");
    for key in ["ProtectSystem=strict", "PrivateDevices=yes", "CapabilityBoundingSet=\n"] {
        assert!(unit.contains(key), "the strict system profile ({key}):\n{unit}");
    }
    // The box has its own network namespace: ask from inside it.
    let ask = |port: u16| {
        let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && timeout 2 cat <&3");
        String::from_utf8_lossy(&b.run(&["bash", "-c", &script]).stdout).into_owned()
    };
    assert_eq!(ask(py), "python-ok\n", "the start job returned before python answered");
    let owner = |file: &str| b.sh(&format!("stat -c '%u %s' {}/{file}", home.display())).trim().to_owned();
    assert_eq!(owner("py-wrote.txt"), format!("{} 17", u.uid), "written inside the home, as the user");
    if modules.len() == 2 {
        assert_eq!(ask(js), "node-ok\n");
        assert_eq!(owner("js-wrote.txt"), format!("{} 15", u.uid));
    }
    b.sh("systemctl stop parachute-hub.service");
}
