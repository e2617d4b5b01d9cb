//! Harness for tests that run the real `parachute serve`: a temp home with fixture modules,
//! the serve process (its own process group, output collected line by line, killed with
//! every descendant on drop), a small blocking HTTP client, and the CLI.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{fixture_bin, wait_for};

/// A temporary Parachute home plus module install dirs.
pub struct TestHome {
    dir: tempfile::TempDir,
    rows: Mutex<Vec<Value>>,
}

impl TestHome {
    pub fn new() -> TestHome {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let h = TestHome { dir, rows: Mutex::new(Vec::new()) };
        h.flush();
        h
    }

    /// The home directory.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A scratch path outside the home.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Adds a services.json row `name` on `port` whose `module.json` has `start_cmd`.
    pub fn module(&self, name: &str, port: u16, start_cmd: &[String]) -> &TestHome {
        let install = self.dir.path().join("modules").join(name);
        std::fs::create_dir_all(install.join(".parachute")).unwrap();
        let manifest = json!({"name": name, "startCmd": start_cmd});
        std::fs::write(install.join(".parachute/module.json"), manifest.to_string()).unwrap();
        self.row(json!({
            "name": name, "port": port, "paths": [format!("/{name}")], "health": "/health",
            "version": "1.0.0", "installDir": install.to_str().unwrap(),
        }))
    }

    /// Adds a fixture module listening on `port` with extra fixture flags.
    pub fn fixture(&self, name: &str, port: u16, flags: &[&str]) -> &TestHome {
        let mut cmd = vec![fixture_bin().to_str().unwrap().to_owned(), "--port".into(), port.to_string()];
        cmd.extend(flags.iter().map(|s| s.to_string()));
        self.module(name, port, &cmd)
    }

    /// Adds a raw row.
    pub fn row(&self, row: Value) -> &TestHome {
        self.rows.lock().unwrap().push(row);
        self.flush();
        self
    }

    /// Adds a raw row without rewriting services.json (many rows: call
    /// [`TestHome::flush_rows`] once at the end).
    pub fn row_unflushed(&self, row: Value) -> &TestHome {
        self.rows.lock().unwrap().push(row);
        self
    }

    /// Writes services.json from the rows added so far.
    pub fn flush_rows(&self) {
        self.flush();
    }

    fn flush(&self) {
        let v = json!({"services": *self.rows.lock().unwrap()});
        std::fs::write(self.home().join("services.json"), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    }

    /// The operator token (after a serve created it).
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.home().join("operator.token")).unwrap().trim().to_owned()
    }

    /// `hub-instance.json`, if present.
    pub fn instance(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.home().join("hub-instance.json")).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }

    /// Runs the CLI against this home with a controlled environment.
    pub fn cli(&self, args: &[&str]) -> Output {
        let child = self.cli_command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        wait_output(child, Duration::from_secs(40))
    }

    /// The CLI command [`TestHome::cli`] runs, not started (for verbs that run until
    /// killed, such as `status --watch`).
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = crate::support::parachute();
        cmd.args(args).arg("--home").arg(self.home());
        clean_env(&mut cmd, self.dir.path());
        cmd
    }
}

/// Waits for a child's output with a deadline (SIGKILL and panic when it passes).
pub fn wait_output(mut child: Child, deadline: Duration) -> Output {
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: t_out.join().unwrap(), stderr: t_err.join().unwrap() }
}

/// Makes `cmd` (built by `support::parachute`/`isolated`, or a wrapper such as `unshare`)
/// run with nothing from the developer's environment but a temp `HOME`.
fn clean_env(cmd: &mut Command, home_dir: &Path) {
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("DBUS_SYSTEM_BUS_ADDRESS", crate::support::NO_SYSTEM_BUS)
        .env("HOME", home_dir);
}

#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    cv: Condvar,
    /// The pipe reached end of file: every line is in `lines`.
    closed: std::sync::atomic::AtomicBool,
}

impl Lines {
    /// Waits (at most `within`) for the pipe's end of file; a process's descendants may
    /// still hold it open, hence the bound.
    fn wait_closed(&self, within: Duration) {
        let until = Instant::now() + within;
        while !self.closed.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn collect(r: impl Read + Send + 'static, sink: Arc<Lines>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            sink.lines.lock().unwrap().push(line);
            sink.cv.notify_all();
        }
        sink.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        sink.cv.notify_all();
    });
}

/// A running `parachute serve`.
pub struct Serve {
    child: Child,
    pub port: u16,
    out: Arc<Lines>,
    err: Arc<Lines>,
    seen: Mutex<HashSet<u32>>,
}

impl Serve {
    /// Starts `parachute serve --home <home> --port <port> <extra…>`.
    pub fn start(home: &TestHome, port: u16, extra: &[&str]) -> Serve {
        let mut cmd = crate::support::parachute();
        cmd.arg("serve").arg("--home").arg(home.home()).arg("--port").arg(port.to_string()).args(extra);
        Serve::spawn(cmd, home, port)
    }

    /// Spawns a prepared command (e.g. wrapped in `unshare`).
    pub fn spawn(mut cmd: Command, home: &TestHome, port: u16) -> Serve {
        clean_env(&mut cmd, home.dir.path());
        cmd.process_group(0).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let (out, err) = (Arc::new(Lines::default()), Arc::new(Lines::default()));
        collect(child.stdout.take().unwrap(), Arc::clone(&out));
        collect(child.stderr.take().unwrap(), Arc::clone(&err));
        Serve { child, port, out, err, seen: Mutex::new(HashSet::new()) }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts and waits for the listening line.
    pub fn ready(home: &TestHome, port: u16, extra: &[&str]) -> Serve {
        let s = Serve::start(home, port, extra);
        s.wait_err("the listening line", |l| l.contains("[hub] listening on"));
        s
    }

    fn wait_in(&self, which: &Lines, what: &str, deadline: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        let mut lines = which.lines.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| pred(l)) {
                return l.clone();
            }
            let left = deadline.checked_sub(start.elapsed()).unwrap_or_else(|| {
                panic!(
                    "timed out waiting for {what}; stderr so far:\n{}\nstdout:\n{}",
                    self.stderr(),
                    self.stdout()
                )
            });
            lines = which.cv.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Waits for a stderr (`[hub] …`) line.
    pub fn wait_err(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_in(&self.err, what, Duration::from_secs(20), pred)
    }

    /// Waits for a stdout (module output) line.
    pub fn wait_out(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_in(&self.out, what, Duration::from_secs(20), pred)
    }

    pub fn stderr(&self) -> String {
        self.err.lines.try_lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        self.out.lines.try_lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// One HTTP/1.1 exchange; returns (status, body).
    pub fn http(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        http(self.port, method, path, token)
    }

    /// `GET /api/modules/<short>` → the state object.
    pub fn state(&self, home: &TestHome, short: &str) -> Value {
        let (st, body) = self.http("GET", &format!("/api/modules/{short}"), Some(&home.token()));
        assert_eq!(st, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if let Some(pid) = v["state"]["pid"].as_u64() {
            self.seen.lock().unwrap().insert(pid as u32);
        }
        v["state"].clone()
    }

    /// Waits until the module's state satisfies `pred`.
    pub fn wait_state(
        &self,
        home: &TestHome,
        short: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(what, Duration::from_secs(20), || {
            let (st, body) = self.http("GET", &format!("/api/modules/{short}"), Some(&home.token()));
            if st != 200 {
                return None;
            }
            let v: Value = serde_json::from_str(&body).unwrap();
            if let Some(pid) = v["state"]["pid"].as_u64() {
                self.seen.lock().unwrap().insert(pid as u32);
            }
            pred(&v["state"]).then(|| v["state"].clone())
        })
    }

    /// Records a pid to be checked/killed at the end.
    pub fn track(&self, pid: u32) {
        self.seen.lock().unwrap().insert(pid);
    }

    /// Every module pid seen so far.
    pub fn seen_pids(&self) -> Vec<u32> {
        self.seen.lock().unwrap().iter().copied().collect()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the serve process this harness started and has not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for serve to exit.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // The last lines may still be in the pipe: read them before anyone looks.
                self.out.wait_closed(Duration::from_secs(2));
                self.err.wait_closed(Duration::from_secs(2));
                return st;
            }
            if start.elapsed() > deadline {
                panic!("serve did not exit within {deadline:?}; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Every descendant of `pid` (children first found, recursively).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in parachute_process::procfs::children_of(p) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

/// Whether `pid` exists and has not exited (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    parachute_process::procfs::stat(pid).is_some_and(|s| !s.is_exited())
}

impl Drop for Serve {
    fn drop(&mut self) {
        // Kill serve, every descendant and every module group we saw, so a failed test
        // leaves nothing behind (module grandchildren do not get PDEATHSIG).
        let mut pids = descendants(self.child.id());
        pids.extend(self.seen.lock().unwrap().iter().copied());
        // SAFETY: kill(2)/killpg(2) with SIGKILL on processes this test started.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            for p in &pids {
                if parachute_process::procfs::stat(*p).is_some_and(|s| s.pgid == *p) {
                    libc::kill(-(*p as i32), libc::SIGKILL);
                }
                libc::kill(*p as i32, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// One blocking HTTP/1.1 request to 127.0.0.1 (`Connection: close`); (status, body).
pub fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

/// Reads `http` response headers of a streaming request and returns the stream for
/// line-by-line reading (chunk-size lines included; callers pick the JSON lines).
pub fn http_stream(port: u16, path: &str, token: &str) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    assert!(status.contains(" 200 "), "{status}");
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h == "\r\n" || h.is_empty() {
            break;
        }
    }
    r
}

/// A fixture started by the test itself (a squatter, a port holder), killed on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn fixture(args: &[&str]) -> Proc {
        let mut c = Command::new(fixture_bin())
            .args(args)
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait for its ready line (reading lines; a grandchild may keep the pipe open).
        let mut line = String::new();
        BufReader::new(c.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("ready "), "{line}");
        Proc(c)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: SIGKILL to the group of a process this test started.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}
