//! The model's spawn request reaches a real child: a real services.json, `.env` and
//! `module.json` on disk, resolved by `model::modules::spawn_request`, run as the fixture
//! module, which reports the environment and port it actually got.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parachute::model::home::Home;
use parachute::model::modules::{HubContext, spawn_request};
use parachute::model::names::ModuleName;
use parachute::model::services::ServicesFile;

use crate::support::{fixture_bin, free_port};

/// Kills and reaps the child however the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn spawn_request_env_and_port_reach_a_real_child() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::new(tmp.path().join("ph")).unwrap();
    let pkg = tmp.path().join("pkg dir with $pace & 'quotes'");
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // argv[0] is a bare name, found only through PARACHUTE_EXTRA_PATH in the child's PATH.
    std::os::unix::fs::symlink(fixture_bin(), bin.join("parachute-acme")).unwrap();
    write(
        &pkg.join(".parachute/module.json"),
        r#"{"name": "acme", "startCmd": ["parachute-acme", "serve",
            "--print-env", "PORT", "--print-env", "FOO", "--print-env", "WEIRD",
            "--print-env", "PARACHUTE_INITIAL_ADMIN_PASSWORD", "--print-env", "PARACHUTE_HUB_ORIGINS"]}"#,
    );
    let port = free_port();
    let services = serde_json::json!({"services": [{
        "name": "acme", "port": port, "paths": ["/acme"], "health": "/health", "version": "1.0.0",
        "installDir": pkg.to_str().unwrap(),
    }]});
    write(&home.services_json(), &serde_json::to_string_pretty(&services).unwrap());
    let short = ModuleName::parse("acme").unwrap();
    write(
        &home.env_file(&short),
        "# module settings\nPORT=1\nexport FOO=\"bar baz\" # the answer\nWEIRD='$HOME %s \"q\" <x>&'\n",
    );

    let file = ServicesFile::read_strict(&home.services_json()).unwrap().file;
    let ctx = HubContext {
        hub_port: 1939,
        hub_origin: Some("https://hub.example".into()),
        inherited_path: "/usr/bin:/bin".into(),
        user_home: None,
        extra_path: Some(bin.to_str().unwrap().into()),
        base_env: vec![("PARACHUTE_INITIAL_ADMIN_PASSWORD".into(), "hunter2".into())],
    };
    let req = spawn_request(&home, file.get("acme").unwrap(), &ctx).unwrap();
    assert_eq!(req.port, Some(port));

    let mut cmd = Command::new(&req.argv[0]);
    cmd.args(&req.argv[1..]).env_clear().envs(req.env.iter().map(|(k, v)| (k, v))).stdout(Stdio::piped());
    if let Some(cwd) = &req.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = KillOnDrop(cmd.spawn().expect("argv[0] resolves through the request's own PATH"));
    let pid = child.0.id();
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.starts_with("ready ") => {
                lines.push(l);
                break;
            }
            Ok(l) => lines.push(l),
            Err(_) => panic!("no ready line within 10 s; got {lines:?}"),
        }
    }
    assert_eq!(
        lines,
        [
            format!("env PORT={port}"),
            "env FOO=bar baz".to_owned(),
            "env WEIRD=$HOME %s \"q\" <x>&".to_owned(),
            "env PARACHUTE_INITIAL_ADMIN_PASSWORD unset".to_owned(),
            "env PARACHUTE_HUB_ORIGINS=https://hub.example,http://127.0.0.1:1939,http://localhost:1939"
                .to_owned(),
            format!("ready pid={pid} port={port}"),
        ]
    );
    // The child bound the services.json port, in the row's installDir.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(), pkg);
}
