//! A box running the legacy detached daemons, built for real: fixture processes started
//! with `setsid --fork` (so, like upstream's daemons, they are reparented away from us),
//! each writing its own pidfile in the upstream layout (`<home>/<short>/run/<short>.pid`,
//! `<home>/hub/run/hub.pid` + `hub.port`), listening on its declared port.
//!
//! Every daemon runs the fixture binary through a symlink named like the real program
//! (`parachute-vault`, `parachute-hub`), so its command line carries the marker the cutover
//! verifies. services.json rows point the supervised hub at the same symlinks (through
//! `<installDir>/.parachute/module.json`), so after the cutover the same programs run as
//! the hub's children.
//!
//! Every process this builder starts is remembered by identity (pid + start ticks) and
//! SIGKILLed with its group on drop, whether or not the test got that far.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use parachute_process::{ProcessIdentity, Signal, procfs, signal_identity};
use serde_json::{Value, json};

use super::{fixture_bin, wait_for};

/// A legacy box in a temp dir.
pub struct LegacyBox {
    dir: tempfile::TempDir,
    rows: Vec<Value>,
    started: Vec<ProcessIdentity>,
}

impl LegacyBox {
    /// An empty box: a home with an empty services.json and a `bin/` of named symlinks.
    pub fn new() -> LegacyBox {
        let dir = tempfile::Builder::new().prefix("parachute-legacy-").tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        let b = LegacyBox { dir, rows: Vec::new(), started: Vec::new() };
        b.flush();
        b
    }

    /// The Parachute home.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The box's scratch directory (outside the home).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `bin/<name>`: a symlink to the fixture binary, so `<name>` is in the command line.
    pub fn bin(&self, name: &str) -> PathBuf {
        let link = self.dir.path().join("bin").join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(fixture_bin(), &link).unwrap();
        }
        link
    }

    /// Declares the services.json row `name` on `port`, startable by the supervised hub as
    /// `bin/<name> --port <port>`. Starts nothing.
    ///
    /// First-party names (`parachute-vault`) get their canonical port written back by the
    /// hub at boot; tests that run many boxes side by side use third-party names
    /// (`parachute-alpha`) so every box keeps its own free ports.
    pub fn declare(&mut self, name: &str, port: u16) -> &mut LegacyBox {
        let install = self.dir.path().join("modules").join(name);
        std::fs::create_dir_all(install.join(".parachute")).unwrap();
        let cmd = vec![self.bin(name).to_string_lossy().into_owned(), "--port".to_owned(), port.to_string()];
        std::fs::write(
            install.join(".parachute/module.json"),
            json!({"name": name, "startCmd": cmd}).to_string(),
        )
        .unwrap();
        self.rows.push(json!({
            "name": name, "port": port, "paths": [format!("/{name}")], "health": "/health",
            "version": "1.0.0", "installDir": install.to_str().unwrap(),
        }));
        self.flush();
        self
    }

    /// Declares a third-party module `name` the way upstream documents them: a generic
    /// runtime and a relative script (`python3 server.py`, startCmd in
    /// `<installDir>/.parachute/module.json`), run with cwd = installDir. Neither its row
    /// name nor its install dir is in its command line. Starts nothing.
    pub fn declare_python(&mut self, name: &str, port: u16) -> PathBuf {
        let install = self.dir.path().join("modules").join(name);
        std::fs::create_dir_all(install.join(".parachute")).unwrap();
        std::fs::write(install.join("server.py"), PY_SERVER).unwrap();
        std::fs::write(
            install.join(".parachute/module.json"),
            json!({"name": name, "startCmd": ["python3", "server.py"]}).to_string(),
        )
        .unwrap();
        self.rows.push(json!({
            "name": name, "port": port, "paths": [format!("/{name}")], "health": "/health",
            "version": "1.0.0", "installDir": install.to_str().unwrap(),
        }));
        self.flush();
        install
    }

    /// Declares a python module (see [`LegacyBox::declare_python`]) and starts it as the
    /// legacy hub 0.6.2 did: detached, cwd = installDir, `PORT` and `PARACHUTE_HUB_ORIGIN`
    /// in its environment, its pidfile written by its launcher.
    pub fn python_module(&mut self, name: &str, port: u16, hub_port: u16) -> ProcessIdentity {
        let install = self.declare_python(name, port);
        let pidfile = self.pidfile(name);
        std::fs::create_dir_all(pidfile.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&pidfile);
        let status = Command::new("setsid")
            .args(["--fork", "sh", "-c"])
            .arg(format!("echo $$ > '{}'; exec python3 server.py", pidfile.display()))
            .current_dir(&install)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("PORT", port.to_string())
            .env("PARACHUTE_HUB_ORIGIN", format!("http://127.0.0.1:{hub_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let pid: u32 = wait_for("the python module's pid", Duration::from_secs(10), || {
            let pid: u32 = std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()?;
            procfs::cmdline(pid).filter(|c| c.starts_with("python3")).map(|_| pid)
        });
        let id = procfs::identity(pid).unwrap();
        self.started.push(id);
        wait_for(&format!("python3 server.py to listen on {port}"), Duration::from_secs(10), || {
            (!procfs::listeners(port).is_empty()).then_some(())
        });
        id
    }

    /// Replaces row `name`'s startCmd for the supervised hub only (the legacy daemon keeps
    /// what it runs): `bin/<name> --port <port> <flags>`.
    pub fn supervised_flags(&mut self, name: &str, port: u16, flags: &[&str]) {
        let install = self.dir.path().join("modules").join(name);
        let mut cmd =
            vec![self.bin(name).to_string_lossy().into_owned(), "--port".to_owned(), port.to_string()];
        cmd.extend(flags.iter().map(|f| (*f).to_owned()));
        std::fs::write(
            install.join(".parachute/module.json"),
            json!({"name": name, "startCmd": cmd}).to_string(),
        )
        .unwrap();
    }

    /// The legacy pidfile of row `name` (`<home>/<short>/run/<short>.pid`).
    pub fn pidfile(&self, name: &str) -> PathBuf {
        let short = parachute::model::names::short_name_for(name);
        self.home().join(&short).join("run").join(format!("{short}.pid"))
    }

    /// Declares row `name` and starts it the legacy way (detached, with its pidfile).
    pub fn module(&mut self, name: &str, port: u16) -> ProcessIdentity {
        self.module_with(name, port, &[])
    }

    /// Like [`LegacyBox::module`], with extra fixture flags for the legacy daemon only (the
    /// supervised hub later starts the plain command).
    pub fn module_with(&mut self, name: &str, port: u16, flags: &[&str]) -> ProcessIdentity {
        self.declare(name, port);
        let pidfile = self.pidfile(name);
        let bin = self.bin(name);
        let port_s = port.to_string();
        let mut args = vec!["--port", port_s.as_str()];
        args.extend_from_slice(flags);
        self.daemon(&bin, &args, &pidfile, Some(port))
    }

    /// Starts the legacy hub (`bin/parachute-hub`) on `port`, with `hub.pid` and `hub.port`.
    pub fn hub(&mut self, port: u16) -> ProcessIdentity {
        let run = self.home().join("hub/run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("hub.port"), format!("{port}\n")).unwrap();
        let bin = self.bin("parachute-hub");
        self.daemon(&bin, &["--port", &port.to_string()], &run.join("hub.pid"), Some(port))
    }

    /// Starts `program args…` detached (new session, reparented away from the test), with
    /// `--pidfile pidfile`; waits for the pidfile and, if given, for `port` to listen.
    pub fn daemon(
        &mut self,
        program: &Path,
        args: &[&str],
        pidfile: &Path,
        port: Option<u16>,
    ) -> ProcessIdentity {
        std::fs::create_dir_all(pidfile.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(pidfile);
        let status = Command::new("setsid")
            .arg("--fork")
            .arg(program)
            .args(args)
            .arg("--pidfile")
            .arg(pidfile)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "setsid --fork {} failed: {status}", program.display());
        let pid: u32 =
            wait_for(&format!("{} to write its pidfile", pidfile.display()), Duration::from_secs(10), || {
                std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
            });
        let id = procfs::identity(pid).unwrap_or_else(|| {
            panic!(
                "{} {args:?} (pid {pid}) wrote its pidfile and exited at once (its port taken by another process?)",
                program.display()
            )
        });
        self.started.push(id);
        if let Some(port) = port {
            // The listener may be a child in the daemon's group (`--grandchild-holds-port`).
            wait_for(&format!("{} to listen on {port}", program.display()), Duration::from_secs(10), || {
                (!procfs::listeners(port).is_empty()).then_some(())
            });
        }
        id
    }

    /// Starts an unrelated long-running process (a `sleep`), tracked for cleanup.
    pub fn unrelated_sleeper(&mut self) -> ProcessIdentity {
        let pidfile = self.dir.path().join(format!("sleeper-{}.pid", self.started.len()));
        let status = Command::new("setsid")
            .args(["--fork", "sh", "-c"])
            .arg(format!("echo $$ > '{}'; exec sleep 600", pidfile.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let pid: u32 = wait_for("the sleeper's pid", Duration::from_secs(10), || {
            let pid: u32 = std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()?;
            // Wait for the exec, so the command line is `sleep 600`.
            procfs::cmdline(pid).filter(|c| c.starts_with("sleep")).map(|_| pid)
        });
        let id = procfs::identity(pid).unwrap();
        self.started.push(id);
        id
    }

    /// An unrelated listener on `port`: the fixture behind a name with no Parachute marker.
    pub fn squatter(&mut self, port: u16) -> ProcessIdentity {
        let bin = self.bin("unrelated-server");
        let pidfile = self.dir.path().join(format!("squatter-{port}.pid"));
        self.daemon(&bin, &["--port", &port.to_string()], &pidfile, Some(port))
    }

    fn flush(&self) {
        let v = json!({"services": self.rows});
        std::fs::write(self.home().join("services.json"), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    }
}

impl Drop for LegacyBox {
    fn drop(&mut self) {
        for id in &self.started {
            let _ = signal_identity(id, Signal::Kill, true);
        }
    }
}

/// A module server in the shape of a real third-party module: answers every GET on
/// `$PORT`, exits on SIGTERM.
const PY_SERVER: &str = r#"import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// Whether the very process `id` still runs.
pub fn alive(id: &ProcessIdentity) -> bool {
    procfs::is_same_process(id)
}

/// The distinct pids listening on `port`.
pub fn holders(port: u16) -> Vec<u32> {
    let mut v: Vec<u32> = procfs::listeners(port).into_iter().map(|l| l.pid).collect();
    v.sort_unstable();
    v.dedup();
    v
}
