//! `parachute-fixture`: a small, real module for tests, benchmarks and the demo.
//!
//! It behaves like a Parachute module as far as a supervisor can tell: it is a process,
//! it may bind a TCP port, print, crash, ignore signals and leave children behind. Every
//! behaviour is chosen by flags, so a test states exactly what it exercises:
//!
//! ```text
//! parachute-fixture [--port N] [--listen-delay-ms MS | --no-listen] [--bind v4|v6|both]
//!                   [--exit-after-ms MS] [--exit-code C] [--ignore-sigterm]
//!                   [--grandchild-holds-port] [--parent-exits]
//!                   [--lines N] [--stderr-lines N] [--line-text TEXT] [--long-line BYTES]
//!                   [--chatty-bytes BYTES [--chatty-seq]] [--print-env KEY]... [--pidfile PATH]
//!                   [--spawn-sleeper] [--fake-hub NONCE] [--hold-connections N]
//!                   [--setsid-holds-port] [--daemonize-holds-port]
//!                   [--child-holds-mb MB [--child-port N] [--child-setsid]] [--busy]
//!                   [--tick-ms MS]
//! ```
//!
//! `--tick-ms MS` prints `tick <n>` (n = 0, 1, 2, …) every MS milliseconds for as long as it
//! runs, so a reader of its log can tell whether any line went missing across an event
//! (issue 17: a hub upgrade must lose none).
//!
//! `--child-holds-mb MB` starts a child that allocates MB MiB, writes to every page (so it is
//! resident, not just reserved), prints `holder pid=<pid> mb=<MB>` and stays; with
//! `--child-port N` that child also listens on N, with `--child-setsid` it leaves the process
//! group first. `--busy` keeps one thread spinning on the CPU.
//!
//! `--fake-hub NONCE` plays another local user impersonating a hub: it answers `/health`
//! as a hub with that instance nonce, anything else with `200 {}`, and prints every
//! `Authorization` header it receives as `captured <header>`. `--hold-connections N` plays a
//! descriptor-exhaustion attack instead of listening: it opens N idle TCP connections to
//! `127.0.0.1:<port>`, prints `held N`, sends nothing, and keeps them until killed.
//!
//! `--chatty-bytes` writes that many bytes of 100-byte lines as fast as it can, then
//! `chatty done bytes=<n>`; with `--chatty-seq` each line carries its number
//! (`chatty 000000000042 yyy…`), so a reader can tell whether any line went missing.
//!
//! `--setsid-holds-port` leaves the port to a child that left the process group (`setsid`);
//! `--daemonize-holds-port` to a grandchild of a `setsid` child that exits at once (the
//! classic double fork: the holder's parent is gone, it is nobody's child in the tree).
//!
//! The port defaults to `$PORT`. Without `--exit-after-ms` it runs until signalled. It
//! prints `ready pid=<pid> port=<port>` on stdout once it listens, so a test can wait for
//! that line instead of sleeping.
// A test program: it reads its own environment (PORT, --print-env) and deliberately leaves
// children unwaited (a port-holding grandchild is the point of the exercise).
#![allow(clippy::disallowed_methods, clippy::zombie_processes)]

use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::thread;
use std::time::Duration;

/// `println!` that ignores a closed stdout: a fixture whose reader went away must keep
/// behaving as asked (holding its port, ignoring signals), not panic.
macro_rules! say {
    ($($t:tt)*) => {{
        let mut out = io::stdout().lock();
        let _ = writeln!(out, $($t)*);
        let _ = out.flush();
    }};
}

#[derive(Debug, Default)]
struct Opts {
    port: Option<u16>,
    listen_delay_ms: u64,
    no_listen: bool,
    bind: Bind,
    exit_after_ms: Option<u64>,
    exit_code: i32,
    ignore_sigterm: bool,
    grandchild_holds_port: bool,
    parent_exits: bool,
    lines: u64,
    stderr_lines: u64,
    line_text: Option<String>,
    long_line: Option<usize>,
    chatty_bytes: Option<u64>,
    chatty_seq: bool,
    tick_ms: Option<u64>,
    print_env: Vec<String>,
    pidfile: Option<String>,
    spawn_sleeper: bool,
    fake_hub: Option<String>,
    hold_connections: Option<u64>,
    setsid_holds_port: bool,
    daemonize_holds_port: bool,
    /// Internal: the short-lived middle of `--daemonize-holds-port`.
    daemon_stage: bool,
    child_holds_mb: Option<u64>,
    child_port: Option<u16>,
    child_setsid: bool,
    /// Internal: this process is the `--child-holds-mb` child and holds that many MiB.
    hold_mb: Option<u64>,
    /// Internal: the port the `--child-holds-mb` child listens on (not `--port`: the child
    /// inherits the module's `PORT`).
    hold_port: Option<u16>,
    busy: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Bind {
    #[default]
    V4,
    V6,
    Both,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--port" => o.port = Some(val("--port")?.parse().map_err(|e| format!("--port: {e}"))?),
            "--listen-delay-ms" => o.listen_delay_ms = num(&val(&a)?)?,
            "--no-listen" => o.no_listen = true,
            "--bind" => {
                o.bind = match val("--bind")?.as_str() {
                    "v4" => Bind::V4,
                    "v6" => Bind::V6,
                    "both" => Bind::Both,
                    other => return Err(format!("--bind: unknown {other}")),
                }
            }
            "--exit-after-ms" => o.exit_after_ms = Some(num(&val(&a)?)?),
            "--exit-code" => o.exit_code = val(&a)?.parse().map_err(|e| format!("--exit-code: {e}"))?,
            "--ignore-sigterm" => o.ignore_sigterm = true,
            "--grandchild-holds-port" => o.grandchild_holds_port = true,
            "--parent-exits" => o.parent_exits = true,
            "--lines" => o.lines = num(&val(&a)?)?,
            "--stderr-lines" => o.stderr_lines = num(&val(&a)?)?,
            "--line-text" => o.line_text = Some(val(&a)?),
            "--long-line" => o.long_line = Some(num(&val(&a)?)? as usize),
            "--chatty-bytes" => o.chatty_bytes = Some(num(&val(&a)?)?),
            "--chatty-seq" => o.chatty_seq = true,
            "--tick-ms" => o.tick_ms = Some(num(&val(&a)?)?),
            "--print-env" => o.print_env.push(val(&a)?),
            "--pidfile" => o.pidfile = Some(val(&a)?),
            "--spawn-sleeper" => o.spawn_sleeper = true,
            "--fake-hub" => o.fake_hub = Some(val(&a)?),
            "--hold-connections" => o.hold_connections = Some(num(&val(&a)?)?),
            "--setsid-holds-port" => o.setsid_holds_port = true,
            "--daemonize-holds-port" => o.daemonize_holds_port = true,
            "--daemon-stage" => o.daemon_stage = true,
            "--child-holds-mb" => o.child_holds_mb = Some(num(&val(&a)?)?),
            "--child-port" => {
                o.child_port = Some(val(&a)?.parse().map_err(|e| format!("--child-port: {e}"))?)
            }
            "--child-setsid" => o.child_setsid = true,
            "--hold-mb" => o.hold_mb = Some(num(&val(&a)?)?),
            "--hold-port" => o.hold_port = Some(val(&a)?.parse().map_err(|e| format!("--hold-port: {e}"))?),
            "--busy" => o.busy = true,
            // Extra words (e.g. `serve`) are accepted so a symlink named `parachute-vault`
            // can be started as `parachute-vault serve`, like the real module.
            _ if !a.starts_with("--") => {}
            _ => return Err(format!("unknown flag {a}")),
        }
    }
    if o.port.is_none() {
        if let Ok(p) = std::env::var("PORT") {
            o.port = Some(p.trim().parse().map_err(|e| format!("PORT={p:?}: {e}"))?);
        }
    }
    Ok(o)
}

fn num(s: &str) -> Result<u64, String> {
    s.parse().map_err(|e| format!("{s:?}: {e}"))
}

fn bind(port: u16, how: Bind) -> io::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    if matches!(how, Bind::V4 | Bind::Both) {
        out.push(TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?);
    }
    if matches!(how, Bind::V6 | Bind::Both) {
        out.push(TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port)))?);
    }
    Ok(out)
}

fn serve_forever(listeners: Vec<TcpListener>) {
    for l in listeners {
        thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                let _ = c.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
            }
        });
    }
}

/// See `--fake-hub` in the module doc.
fn fake_hub(listeners: Vec<TcpListener>, nonce: String, port: u16) {
    use std::io::{BufRead, BufReader};
    for l in listeners {
        let nonce = nonce.clone();
        thread::spawn(move || {
            for c in l.incoming().flatten() {
                let mut reader = BufReader::new(c);
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if h.to_ascii_lowercase().starts_with("authorization:") {
                        say!("captured {}", h.trim_end());
                    }
                }
                let body = if first.starts_with("GET /health ") {
                    format!(
                        r#"{{"status":"ok","service":"parachute-hub","instance":"{nonce}","pid":{},"port":{port},"version":"0","startedAt":"2020-01-01T00:00:00Z","modules":{{"running":0,"total":0}}}}"#,
                        std::process::id()
                    )
                } else {
                    r#"{"modules":[],"installed":[]}"#.to_owned()
                };
                let mut c = reader.into_inner();
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
    }
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("parachute-fixture: {e}");
            std::process::exit(2);
        }
    };
    let pid = std::process::id();
    if o.ignore_sigterm {
        // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
    }
    if let Some(path) = &o.pidfile {
        if let Err(e) = std::fs::write(path, format!("{pid}\n")) {
            eprintln!("parachute-fixture: pidfile {path}: {e}");
            std::process::exit(2);
        }
    }
    for key in &o.print_env {
        match std::env::var(key) {
            Ok(v) => say!("env {key}={v}"),
            Err(_) => say!("env {key} unset"),
        }
    }
    let text = o.line_text.clone().unwrap_or_else(|| "line".to_owned());
    {
        let mut out = io::stdout().lock();
        for i in 0..o.lines {
            let _ = writeln!(out, "{text} {i}");
        }
        let _ = out.flush();
    }
    {
        let mut err = io::stderr().lock();
        for i in 0..o.stderr_lines {
            let _ = writeln!(err, "err {text} {i}");
        }
    }
    if let Some(n) = o.long_line {
        let mut out = io::stdout().lock();
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len());
            let _ = out.write_all(&chunk[..k]);
            left -= k;
        }
        let _ = out.flush();
    }
    if let Some(ms) = o.tick_ms {
        std::thread::spawn(move || {
            for n in 0u64.. {
                say!("tick {n}");
                std::thread::sleep(Duration::from_millis(ms));
            }
        });
    }
    if let Some(total) = o.chatty_bytes {
        let line = [b"chatty ".as_slice(), &[b'y'; 92], b"\n"].concat();
        let mut out = io::BufWriter::with_capacity(64 * 1024, io::stdout().lock());
        let mut sent = 0u64;
        let mut numbered = line.clone();
        let mut seq = 0u64;
        while sent < total {
            let this = if o.chatty_seq {
                // Same length: the number replaces "yyyyyyyyyyyy ".
                let n = format!("{seq:012} ");
                numbered[7..7 + n.len()].copy_from_slice(n.as_bytes());
                seq += 1;
                &numbered
            } else {
                &line
            };
            if out.write_all(this).is_err() {
                break;
            }
            sent += this.len() as u64;
        }
        let _ = out.flush();
        drop(out);
        say!("chatty done bytes={sent}");
    }
    if let Some(mb) = o.hold_mb {
        // The `--child-holds-mb` child: touch every page so the memory is resident.
        let mut held = vec![0u8; (mb as usize) << 20];
        for (i, b) in held.iter_mut().enumerate().step_by(4096) {
            *b = (i / 4096) as u8 | 1;
        }
        let listeners = match o.hold_port {
            Some(port) => bind(port, Bind::V4).unwrap_or_else(|e| {
                eprintln!("parachute-fixture: bind {port}: {e}");
                std::process::exit(98)
            }),
            None => Vec::new(),
        };
        say!("holder pid={pid} mb={mb} sum={}", held.iter().map(|b| u64::from(*b)).sum::<u64>());
        serve_forever(listeners);
        loop {
            thread::park();
        }
    }
    if let Some(mb) = o.child_holds_mb {
        use std::os::unix::process::CommandExt;
        let me = std::env::current_exe().expect("current exe");
        let mut cmd = Command::new(me);
        cmd.arg("--hold-mb").arg(mb.to_string());
        if let Some(p) = o.child_port {
            cmd.arg("--hold-port").arg(p.to_string());
        }
        if o.child_setsid {
            // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
        }
        let c = cmd.spawn().expect("spawn memory holder");
        say!("memory child pid={}", c.id());
    }
    if o.busy {
        thread::spawn(|| {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        });
    }
    if o.spawn_sleeper {
        // A plain child in our process group that outlives nothing on its own: the
        // supervisor must reap it with the group.
        let me = std::env::current_exe().expect("current exe");
        let c = Command::new(me).arg("--no-listen").spawn().expect("spawn sleeper");
        say!("sleeper pid={}", c.id());
    }

    if let (Some(n), Some(port)) = (o.hold_connections, o.port) {
        let mut held = Vec::new();
        for _ in 0..n {
            match std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
                Ok(c) => held.push(c),
                Err(e) => {
                    eprintln!("parachute-fixture: connect {port}: {e}");
                    break;
                }
            }
        }
        say!("held {}", held.len());
        loop {
            thread::park();
        }
    }
    if let Some(port) = o.port.filter(|_| !o.no_listen) {
        if o.daemon_stage {
            // The middle of a double fork: start the holder, exit at once.
            let me = std::env::current_exe().expect("current exe");
            let mut cmd = Command::new(me);
            cmd.arg("--port").arg(port.to_string());
            if o.ignore_sigterm {
                cmd.arg("--ignore-sigterm");
            }
            let child = cmd.stdout(std::process::Stdio::null()).spawn().expect("spawn daemon");
            say!("daemon pid={}", child.id());
            std::process::exit(0);
        }
        if o.setsid_holds_port || o.daemonize_holds_port {
            use std::os::unix::process::CommandExt;
            let me = std::env::current_exe().expect("current exe");
            let mut cmd = Command::new(me);
            cmd.arg("--port").arg(port.to_string());
            if o.ignore_sigterm {
                cmd.arg("--ignore-sigterm");
            }
            if o.daemonize_holds_port {
                cmd.arg("--daemon-stage");
            }
            // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
            let mut child = cmd.spawn().expect("spawn setsid child");
            say!("setsid child pid={}", child.id());
            if o.daemonize_holds_port {
                let _ = child.wait();
            }
        } else if o.grandchild_holds_port {
            // Re-exec ourselves as the port holder: it stays in our process group, the way
            // `sh -c "server"` or `pnpm exec tsx` leave the real server one level down.
            let me = std::env::current_exe().expect("current exe");
            let mut cmd = Command::new(me);
            cmd.arg("--port").arg(port.to_string());
            if o.ignore_sigterm {
                cmd.arg("--ignore-sigterm");
            }
            cmd.arg("--listen-delay-ms").arg(o.listen_delay_ms.to_string());
            let child = cmd.spawn().expect("spawn grandchild");
            say!("grandchild pid={}", child.id());
            let _ = io::stdout().flush();
            if o.parent_exits {
                std::process::exit(o.exit_code);
            }
        } else {
            if o.listen_delay_ms > 0 {
                thread::sleep(Duration::from_millis(o.listen_delay_ms));
            }
            match bind(port, o.bind) {
                Ok(ls) => {
                    say!("ready pid={pid} port={port}");
                    let _ = io::stdout().flush();
                    match o.fake_hub.clone() {
                        Some(nonce) => fake_hub(ls, nonce, port),
                        None => serve_forever(ls),
                    }
                }
                Err(e) => {
                    eprintln!("parachute-fixture: bind {port}: {e}");
                    std::process::exit(98);
                }
            }
        }
    }

    if let Some(ms) = o.exit_after_ms {
        thread::sleep(Duration::from_millis(ms));
        let _ = io::stdout().flush();
        std::process::exit(o.exit_code);
    }
    loop {
        thread::park();
    }
}
