//! `parachute status [--json] [--check | --watch [--interval SECS]]`: the hub and, per
//! module, what operators of pm2 and process-compose expect to read — state, pid, uptime,
//! restarts (total, and crashes in the window), CPU and memory of the module's whole process
//! tree, the ports that tree really listens on (the kernel's listen table, not
//! services.json), the last exit (code or signal, and when), the next retry and the last
//! stderr line. The measurements are the hub's (`resources` in the control API's module
//! state); this file only shows them, and every string from outside goes through
//! `crate::text`.
//!
//! `--check` judges instead: exit 0 when every module is running and bound, 1 otherwise,
//! naming each module that is not. `--watch` refreshes in place on a terminal and prints
//! one plain frame per refresh (NDJSON with `--json`) anywhere else.
//!
//! On a legacy box (the 0.6 detached daemons, found by the cutover's own detection in
//! [`super::offer::legacy_box`]) it shows the pidfiles, the daemons and their ports, exits
//! 11 and names `parachute migrate --to-supervised`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use crate::api::wire::{Health, ModuleList};
use crate::client::{ClientError, Hub};
use crate::cutover::legacy::{self, Attribution, Known, PidfileState};
use crate::model::home::Home;
use crate::model::services::ServicesFile;
use crate::supervisor::{ModuleState, ModuleStatus, StartErrorKind};
use crate::text::field;

use super::HostEnv;
use super::exit::Code;
use super::host::{HomeArg, resolve_home};

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Per module: status, pid, uptime, restarts (all since the hub started) and crashes in the \
crash window, CPU (percent of one core) and resident memory of its whole process tree, the \
TCP ports that tree listens on as the kernel reports them, and a note (start error, last \
exit, next retry). `-` is \"none\", `?` is \"could not be read\".

Exit codes: 0 the hub answered (with --check: every module is running and bound); 1 with \
--check: a module is not running and bound (each is named on stderr); 3 no hub running; \
6 timed out; 7 not this home's hub; 11 this home still runs the legacy detached daemons \
(`parachute migrate --to-supervised` moves it).")]
pub struct StatusArgs {
    /// Where the Parachute home is.
    #[command(flatten)]
    pub home: HomeArg,
    /// Print `{"hub", "modules", "installed", "unhealthy"}` (with --watch: one such object per
    /// line, per refresh).
    #[arg(long)]
    pub json: bool,
    /// Exit 0 only when every module is running, ready and listening on its declared port;
    /// otherwise exit 1 and name each module that is not (for monitoring and scripts).
    #[arg(long, conflicts_with = "watch")]
    pub check: bool,
    /// Refresh until interrupted: in place on a terminal, one plain frame per refresh
    /// otherwise.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between refreshes of --watch (at least 0.1).
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_interval, requires = "watch")]
    pub interval: Duration,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    if !secs.is_finite() || !(0.1..=86_400.0).contains(&secs) {
        return Err(format!("{s} is outside 0.1..86400 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A module that is not running and bound, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unhealthy {
    /// The module.
    pub short: String,
    /// Why, in a few words (raw: show it through `crate::text`).
    pub reason: String,
}

/// Every module that is not running and bound: supervised modules that are not `running`,
/// have a start error, have not passed their readiness gate, or whose process tree does not
/// listen on the declared port; and services.json modules the hub does not supervise (those
/// it skips on purpose, with a `skipReason`, are not counted).
pub fn unhealthy(list: &ModuleList) -> Vec<Unhealthy> {
    let mut out = Vec::new();
    let declared = |short: &str| list.installed.iter().find(|i| i.short == short).and_then(|i| i.port);
    for m in &list.modules {
        let reason = match (m.status, &m.start_error) {
            (ModuleStatus::Running, None) => match (declared(&m.short), m.ready_at.is_some()) {
                (Some(port), false) => Some(format!("running, but port {port} has not answered yet")),
                (None, false) => Some("running, not ready yet".to_owned()),
                (Some(port), true) => match m.resources.as_ref().and_then(|r| r.ports.as_ref()) {
                    Some(ports) if !ports.contains(&port) => Some(format!(
                        "running, but its process tree does not listen on port {port} (it listens on {})",
                        list_ports(ports)
                    )),
                    _ => None,
                },
                (None, true) => None,
            },
            (ModuleStatus::Running, Some(_)) => Some(format!("running, but {}", note(m))),
            (status, _) => {
                let n = note(m);
                Some(if n.is_empty() {
                    status.as_str().to_owned()
                } else {
                    format!("{}: {n}", status.as_str())
                })
            }
        };
        if let Some(reason) = reason {
            out.push(Unhealthy { short: m.short.clone(), reason });
        }
    }
    for i in &list.installed {
        if i.skip_reason.is_none() && !list.modules.iter().any(|m| m.short == i.short) {
            out.push(Unhealthy {
                short: i.short.clone(),
                reason: format!("in services.json, not supervised (`parachute start {}`)", i.short),
            });
        }
    }
    out
}

fn list_ports(ports: &[u16]) -> String {
    if ports.is_empty() {
        "no port".to_owned()
    } else {
        ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
    }
}

/// How long ago (or until) `at` (RFC 3339) is from now, in words: `5s ago`, `in 3s`.
fn relative(at: &str) -> Option<String> {
    let t = crate::rfc3339::parse(at)?;
    let now = time::OffsetDateTime::now_utc();
    let secs = (t - now).whole_seconds();
    Some(if secs > 0 {
        format!("in {}", duration(secs.unsigned_abs()))
    } else {
        format!("{} ago", duration(secs.unsigned_abs()))
    })
}

/// `42s`, `3m12s`, `2h05m`, `4d03h`.
pub fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// `812K`, `51.2M`, `1.4G` (powers of 1024).
pub fn bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f < K * K {
        format!("{}K", n.div_ceil(1024))
    } else if f < K * K * K {
        format!("{:.1}M", f / (K * K))
    } else {
        format!("{:.1}G", f / (K * K * K))
    }
}

/// The short note of the status table (terminal-safe): the start error, else the last exit
/// and the next retry.
pub fn note(state: &ModuleState) -> String {
    if let Some(e) = &state.start_error {
        return match &e.kind {
            StartErrorKind::PortSquatter { port, holder_pid, holder_cmdline } => format!(
                "port {port} held by pid {holder_pid} ({})",
                holder_cmdline.as_deref().map_or("?".into(), field)
            ),
            StartErrorKind::MissingDependency { binary } => format!("missing dependency: {}", field(binary)),
            StartErrorKind::NonExecutable { path, .. } => format!("not executable: {}", field(path)),
            StartErrorKind::SpawnFailed { os_error } => format!("spawn failed: {}", field(os_error)),
            StartErrorKind::StartedButUnbound { port } => format!("port {port} not bound yet"),
            StartErrorKind::Other { .. } => field(&e.to_string()).into_owned(),
        };
    }
    let when = state.last_exit_at.as_deref().and_then(relative).map(|r| format!(" {r}")).unwrap_or_default();
    let retry = state
        .next_restart_at
        .as_deref()
        .and_then(relative)
        .map(|r| format!(", next try {r}"))
        .unwrap_or_default();
    match (state.status, state.last_exit()) {
        (ModuleStatus::Crashed, Some(e)) => format!("gave up; last child {e}{when}"),
        (ModuleStatus::Restarting, Some(e)) => format!("waiting to restart{retry}; last child {e}{when}"),
        (ModuleStatus::Restarting, None) => format!("waiting to restart after a crash{retry}"),
        (_, Some(e)) => format!("last child {e}{when}"),
        _ => String::new(),
    }
}

/// The human status table.
pub fn render_status(health: &Health, list: &ModuleList) -> String {
    let mut out = format!(
        "hub: running (pid {}, port {}, up since {}, {} of {} module(s) running)\n",
        health.pid,
        health.port,
        field(&health.started_at),
        health.modules.running,
        health.modules.total
    );
    let dash = || "-".to_owned();
    const HEAD: [&str; 10] =
        ["MODULE", "STATUS", "PID", "UPTIME", "RESTARTS", "CRASHES", "CPU", "RSS", "PORTS", "NOTE"];
    let mut rows: Vec<[String; 10]> = vec![HEAD.map(str::to_owned)];
    let mut extra: Vec<(usize, String)> = Vec::new();
    let bad = unhealthy(list);
    for m in &list.modules {
        let r = m.resources.as_ref();
        let known = |v: Option<String>| match (r, v) {
            (None, _) => dash(),
            (Some(_), Some(v)) => v,
            (Some(_), None) => "?".to_owned(),
        };
        let mut note = note(m);
        if let Some(b) = bad.iter().find(|b| b.short == m.short)
            && note.is_empty()
        {
            note = field(&b.reason).into_owned();
        }
        rows.push([
            field(&m.short).into_owned(),
            m.status.as_str().to_owned(),
            m.pid.map(|p| p.to_string()).unwrap_or_else(dash),
            r.and_then(|r| r.uptime_secs).map(duration).unwrap_or_else(dash),
            m.restarts_total.to_string(),
            m.restarts_in_window.to_string(),
            known(r.and_then(|r| r.cpu_percent).map(|c| format!("{c:.1}%"))),
            known(r.and_then(|r| r.rss_bytes).map(bytes)),
            known(
                r.and_then(|r| r.ports.as_deref()).map(|p| if p.is_empty() { dash() } else { list_ports(p) }),
            ),
            note,
        ]);
        if bad.iter().any(|b| b.short == m.short)
            && let Some(l) = &m.last_error_line
        {
            let when = relative(&l.at).map(|r| format!(" ({r})")).unwrap_or_default();
            extra.push((
                rows.len() - 1,
                format!("  last stderr{when}: {}", crate::text::field_clipped(&l.text, 160)),
            ));
        }
    }
    for i in list.installed.iter().filter(|i| !list.modules.iter().any(|m| m.short == i.short)) {
        let port = i.port.map(|p| format!(" (port {p})")).unwrap_or_default();
        rows.push([
            field(&i.short).into_owned(),
            "-".to_owned(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            match &i.skip_reason {
                Some(r) => format!("not started{port}: {}", field(r)),
                None => {
                    format!("in services.json{port}, not supervised (`parachute start {}`)", field(&i.short))
                }
            },
        ]);
    }
    if rows.len() == 1 {
        out.push_str("No modules: services.json lists none.\n");
        return out;
    }
    let last = HEAD.len() - 1;
    let widths: Vec<usize> =
        (0..last).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for (i, r) in rows.iter().enumerate() {
        let mut line = String::new();
        for (c, w) in widths.iter().enumerate() {
            line.push_str(&format!("{:<w$}  ", r[c], w = *w));
        }
        line.push_str(&r[last]);
        out.push_str(line.trim_end());
        out.push('\n');
        for (_, e) in extra.iter().filter(|(at, _)| *at == i) {
            out.push_str(e);
            out.push('\n');
        }
    }
    out
}

/// The `--json` object.
fn json_of(health: &Health, list: &ModuleList) -> serde_json::Value {
    serde_json::json!({
        "hub": health,
        "modules": list.modules,
        "installed": list.installed,
        "unhealthy": unhealthy(list),
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime can be built")
}

async fn fetch(home: &Home) -> Result<(Health, ModuleList), ClientError> {
    let hub = Hub::connect(home).await?;
    let list = hub.modules().await?;
    Ok((hub.health, list))
}

/// Runs `status`.
pub fn run_status(args: StatusArgs, env: &HostEnv) -> Code {
    let home = match resolve_home(&args.home, env) {
        Ok(h) => h,
        Err(c) => return c,
    };
    let rt = runtime();
    if args.watch {
        return watch(&args, &home, env, &rt);
    }
    match rt.block_on(fetch(&home)) {
        Ok((health, list)) => {
            let bad = unhealthy(&list);
            if args.json {
                println!("{:#}", json_of(&health, &list));
            } else {
                print!("{}", render_status(&health, &list));
            }
            if !args.check {
                return Code::Success;
            }
            if bad.is_empty() {
                if !args.json {
                    println!("ok: every module is running and bound.");
                }
                return Code::Success;
            }
            let mut err = std::io::stderr().lock();
            for b in &bad {
                let _ = writeln!(err, "✗ {}: {}", field(&b.short), field(&b.reason));
            }
            Code::Failure
        }
        Err(e) => {
            if let Some(code) = legacy(&e, &home, env, &rt, args.json) {
                return code;
            }
            if args.json {
                let v = serde_json::json!({"hub": null, "modules": [], "error": e.to_string()});
                println!("{v:#}");
            }
            eprintln!("parachute: {e}");
            super::modules::code_of(&e)
        }
    }
}

/// `--watch`: one frame per `interval` until interrupted (or stdout closes). A failed fetch
/// is shown as the frame (the hub may be restarting) and the watch goes on.
fn watch(args: &StatusArgs, home: &Home, env: &HostEnv, rt: &tokio::runtime::Runtime) -> Code {
    let terminal = std::io::stdout().is_terminal();
    let mut legacy_checked = false;
    loop {
        let frame = match rt.block_on(fetch(home)) {
            Ok((health, list)) if args.json => format!("{}\n", json_of(&health, &list)),
            Ok((health, list)) => render_status(&health, &list),
            Err(e) => {
                // The legacy box is told once, as `status` would, and not watched.
                if !legacy_checked {
                    legacy_checked = true;
                    if let Some(code) = legacy(&e, home, env, rt, args.json) {
                        return code;
                    }
                }
                if args.json {
                    format!("{}\n", serde_json::json!({"hub": null, "modules": [], "error": e.to_string()}))
                } else {
                    format!("parachute: {e}\n")
                }
            }
        };
        let mut out = std::io::stdout().lock();
        let written = if args.json {
            out.write_all(frame.as_bytes())
        } else if terminal {
            // Home, each line cleared to its end, then everything below: no flicker.
            let mut screen = String::from("\x1b[H");
            for l in format!("every {:?} — {}\n{frame}", args.interval, crate::rfc3339::now()).lines() {
                screen.push_str(l);
                screen.push_str("\x1b[K\n");
            }
            screen.push_str("\x1b[J");
            out.write_all(screen.as_bytes())
        } else {
            out.write_all(format!("--- {} ---\n{frame}", crate::rfc3339::now()).as_bytes())
        };
        if written.and_then(|()| out.flush()).is_err() {
            return Code::Success; // `| head`: the reader is done
        }
        drop(out);
        std::thread::sleep(args.interval);
    }
}

/// On a legacy box, prints what can be seen of it and returns [`Code::Legacy`]; `None`
/// when `home` is not one (see [`super::offer::legacy_box`]).
fn legacy(
    err: &ClientError,
    home: &Home,
    env: &HostEnv,
    rt: &tokio::runtime::Runtime,
    json: bool,
) -> Option<Code> {
    // A half-finished migration (a hub unit, but the legacy daemons still on the ground) is
    // reported the same way, with the re-run named.
    let (live, unfinished) = match super::offer::legacy_box(err, home, env, rt) {
        Some(live) => (live, None),
        None => {
            let live = super::offer::legacy_hub_on_port(err, home)?;
            let hint = super::offer::unfinished_migration_hint(home, &live);
            (live, Some(hint))
        }
    };
    let cmd = super::offer::migrate_command(home);
    let hub_port = crate::model::pidfile::read_port_file(&home.hub_port_file())
        .ok()
        .flatten()
        .or(match err {
            ClientError::NoHub { port, .. }
            | ClientError::Foreign { port, .. }
            | ClientError::Protocol { port, .. }
            | ClientError::Timeout { port, .. } => Some(*port),
            _ => None,
        })
        .unwrap_or(crate::model::names::HUB_PORT);
    let services = ServicesFile::read_lenient(&home.services_json()).file;
    let (targets, _) = legacy::targets(home, hub_port, &services);
    let known = Known { legacy: live, ..Known::default() };
    let rows: Vec<LegacyRow> = targets.iter().map(|t| LegacyRow::read(t, &known)).collect();
    if json {
        let v = serde_json::json!({
            "hub": null, "legacy": true, "daemons": rows, "migrate": cmd, "modules": [],
            "unfinishedMigration": unfinished,
        });
        println!("{v:#}");
    } else {
        print!("{}", render_legacy(&rows, &cmd));
        if let Some(hint) = unfinished {
            println!("Note: {hint}");
        }
    }
    Some(Code::Legacy)
}

/// One legacy daemon as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LegacyRow {
    /// `hub` or the module.
    pub name: String,
    /// The declared port.
    pub port: u16,
    /// The pidfile's path.
    pub pidfile: String,
    /// The pid it names, if any.
    pub pid: Option<u32>,
    /// Whether that pid is the live, verified daemon.
    pub alive: bool,
    /// What the pidfile amounts to, in words.
    pub state: String,
    /// Whether the daemon (or its group) listens on its port.
    pub listening: bool,
    /// Who else holds its port (`pid N (command line)`, sanitized).
    pub other_holders: Vec<String>,
}

impl LegacyRow {
    fn read(t: &legacy::Target, known: &Known) -> LegacyRow {
        let (pid, alive, state) = match legacy::inspect(t) {
            PidfileState::Absent => (None, false, "no pidfile".to_owned()),
            PidfileState::Malformed(e) => (None, false, format!("unreadable pidfile: {e}")),
            PidfileState::Stale { pid } => (Some(pid), false, format!("stale pidfile (pid {pid} is gone)")),
            PidfileState::Running(p) => (Some(p.identity.pid), true, "running".to_owned()),
            PidfileState::Reused { pid, reason, .. } => {
                (Some(pid), false, format!("pid {pid} is not the daemon ({reason})"))
            }
        };
        let holders = legacy::holders(t, known);
        let ours = |a: &Attribution| matches!(a, Attribution::Legacy { name } | Attribution::LegacyGroup { name } if *name == t.name);
        LegacyRow {
            name: t.name.clone(),
            port: t.port,
            pidfile: t.pidfile.to_string_lossy().into_owned(),
            pid,
            alive,
            state,
            listening: holders.iter().any(|h| ours(&h.attribution)),
            other_holders: holders
                .iter()
                .filter(|h| !ours(&h.attribution))
                .map(|h| {
                    format!("pid {} ({})", h.pid, h.cmdline.as_deref().unwrap_or("command line unreadable"))
                })
                .collect(),
        }
    }
}

/// The legacy box report.
pub fn render_legacy(rows: &[LegacyRow], cmd: &str) -> String {
    let mut out = String::from(
        "This home still runs the legacy detached daemons (the 0.6 layout: pidfiles, no supervised hub).\n",
    );
    let mut table: Vec<[String; 5]> = vec![["NAME", "PID", "PORT", "STATE", "PIDFILE"].map(str::to_owned)];
    for r in rows {
        let mut state = field(&r.state).into_owned();
        if r.alive {
            state.push_str(if r.listening { ", listening" } else { ", not listening" });
        }
        if !r.other_holders.is_empty() {
            state.push_str(&format!("; port held by {}", field(&r.other_holders.join(", "))));
        }
        table.push([
            field(&r.name).into_owned(),
            r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".to_owned()),
            r.port.to_string(),
            state,
            field(&r.pidfile).into_owned(),
        ]);
    }
    let widths: Vec<usize> =
        (0..4).map(|c| table.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for r in &table {
        let mut line = String::new();
        for (c, w) in widths.iter().enumerate() {
            line.push_str(&format!("{:<w$}  ", r[c], w = *w));
        }
        line.push_str(&r[4]);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&format!("Move them under the service manager (one supervised hub): `{cmd}`.\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::{Installed, ModuleCounts};
    use crate::supervisor::{ErrorLine, Resources, StartError};

    fn state(short: &str, status: ModuleStatus) -> ModuleState {
        ModuleState::new(short, status)
    }

    fn health() -> Health {
        Health {
            status: "ok".into(),
            service: "parachute-hub".into(),
            instance: "i".into(),
            pid: 10,
            port: 1939,
            version: "0.1.0".into(),
            build_id: None,
            db: "unconfigured".into(),
            started_at: "2025-01-01T00:00:00Z".into(),
            generation: 0,
            modules: ModuleCounts { running: 1, total: 2 },
        }
    }

    fn res(ports: Option<Vec<u16>>) -> Resources {
        Resources {
            sampled_at: "2025-01-01T00:00:00Z".into(),
            uptime_secs: Some(192),
            pids: vec![4242, 4243],
            rss_bytes: Some(53_687_091),
            pss_bytes: Some(40 << 20),
            cpu_percent: Some(12.5),
            cpu_time_ms: Some(1500),
            ports,
            unknown: vec![],
        }
    }

    fn running(short: &str, ports: Option<Vec<u16>>) -> ModuleState {
        ModuleState {
            pid: Some(4242),
            ready_at: Some("2025-01-01T00:00:00Z".into()),
            resources: Some(res(ports)),
            ..state(short, ModuleStatus::Running)
        }
    }

    fn installed(short: &str, port: Option<u16>) -> Installed {
        Installed { short: short.into(), port, version: None, skip_reason: None }
    }

    fn err(kind: StartErrorKind) -> StartError {
        StartError { kind, description: "desc".into(), at: "2025-01-01T00:00:00Z".into() }
    }

    #[test]
    fn units_read_like_an_operator_expects() {
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(192), "3m12s");
        assert_eq!(duration(7500), "2h05m");
        assert_eq!(duration(3 * 86_400 + 7200), "3d02h");
        assert_eq!(bytes(1000), "1K");
        assert_eq!(bytes(53_687_091), "51.2M");
        assert_eq!(bytes(3 << 30), "3.0G");
        assert!(parse_interval("0.05").is_err() && parse_interval("x").is_err());
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn check_wants_every_module_running_ready_and_listening_on_its_port() {
        let ok = ModuleList {
            modules: vec![running("a", Some(vec![1940, 5000])), running("nopport", None)],
            installed: vec![installed("a", Some(1940)), installed("nopport", None)],
        };
        assert_eq!(unhealthy(&ok), vec![]);
        let cases: Vec<(ModuleState, &str)> = vec![
            (running("a", Some(vec![5000])), "does not listen on port 1940 (it listens on 5000)"),
            (running("a", Some(vec![])), "(it listens on no port)"),
            (ModuleState { ready_at: None, ..running("a", None) }, "port 1940 has not answered yet"),
            (state("a", ModuleStatus::Stopped), "stopped"),
            (
                ModuleState {
                    start_error: Some(err(StartErrorKind::MissingDependency { binary: "bun".into() })),
                    ..state("a", ModuleStatus::Crashed)
                },
                "crashed: missing dependency: bun",
            ),
            (
                ModuleState {
                    start_error: Some(err(StartErrorKind::StartedButUnbound { port: 1940 })),
                    ..running("a", Some(vec![]))
                },
                "running, but port 1940 not bound yet",
            ),
        ];
        for (m, want) in cases {
            let list = ModuleList { modules: vec![m.clone()], installed: vec![installed("a", Some(1940))] };
            let bad = unhealthy(&list);
            assert_eq!(bad.len(), 1, "{m:?}");
            assert!(bad[0].reason.contains(want), "{:?} lacks {want:?}", bad[0].reason);
        }
        // Listed in services.json but not supervised: unhealthy; skipped on purpose: not.
        let list = ModuleList {
            modules: vec![],
            installed: vec![
                installed("new", Some(1)),
                Installed {
                    short: "cli".into(),
                    port: None,
                    version: None,
                    skip_reason: Some("no startCmd".into()),
                },
            ],
        };
        let bad = unhealthy(&list);
        assert_eq!(bad.iter().map(|b| b.short.as_str()).collect::<Vec<_>>(), ["new"]);
    }

    #[test]
    fn the_table_shows_tree_resources_ports_and_the_last_stderr_of_an_unhealthy_module() {
        let mut crashed = ModuleState {
            restarts_total: 4,
            restarts_in_window: 3,
            last_error_line: Some(ErrorLine {
                text: "Error: \u{1b}[31mEADDRINUSE".into(),
                at: crate::rfc3339::now(),
            }),
            ..state("scribe", ModuleStatus::Crashed)
        };
        crashed.record_exit(None, Some(9));
        let list = ModuleList {
            modules: vec![running("vault", Some(vec![1940, 1941])), crashed],
            installed: vec![
                installed("vault", Some(1940)),
                installed("scribe", Some(1943)),
                installed("notes", Some(1942)),
            ],
        };
        let text = render_status(&health(), &list);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with(
                "MODULE  STATUS   PID   UPTIME  RESTARTS  CRASHES  CPU    RSS    PORTS      NOTE"
            ),
            "{text}"
        );
        assert!(
            lines[2].starts_with("vault   running  4242  3m12s   0         0        12.5%  51.2M  1940,1941"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("scribe  crashed  -     -       4         3        -      -      -"),
            "{text}"
        );
        assert!(lines[3].contains("gave up; last child killed by SIGKILL (signal 9) 0s ago"), "{text}");
        assert!(lines[4].starts_with("  last stderr (0s ago): Error: \\e[31mEADDRINUSE"), "{text}");
        assert!(lines[5].starts_with("notes") && lines[5].contains("(port 1942), not supervised"), "{text}");
        assert!(!text.chars().any(|c| c != '\n' && crate::text::is_unsafe_char(c)), "{text:?}");
        // What could not be read is `?`, not 0.
        let mut unknown = running("vault", None);
        if let Some(r) = unknown.resources.as_mut() {
            r.rss_bytes = None;
            r.cpu_percent = None;
        }
        let text = render_status(&health(), &ModuleList { modules: vec![unknown], installed: vec![] });
        let row: Vec<&str> = text.lines().nth(2).unwrap().split_whitespace().collect();
        assert_eq!(row[6..9], ["?", "?", "?"], "{text}");
    }

    #[test]
    fn the_status_table_escapes_names_and_command_lines_from_outside() {
        let squatted = err(StartErrorKind::PortSquatter {
            port: 1940,
            holder_pid: 77,
            holder_cmdline: Some("bun \u{1b}]52;c;eA==\u{7}".into()),
        });
        let list = ModuleList {
            modules: vec![ModuleState {
                start_error: Some(squatted),
                ..state("ev\u{1b}[2Jil", ModuleStatus::Crashed)
            }],
            installed: vec![Installed {
                short: "x\ry".into(),
                port: None,
                version: None,
                skip_reason: Some("bad\u{202e}".into()),
            }],
        };
        let table = render_status(&health(), &list);
        assert!(!table.chars().any(|c| c != '\n' && crate::text::is_unsafe_char(c)), "{table:?}");
        assert!(table.contains("ev\\e[2Jil") && table.contains("x\\ry"), "{table}");
        let empty = render_status(&health(), &ModuleList { modules: vec![], installed: vec![] });
        assert!(empty.contains("No modules"), "{empty}");
    }

    #[test]
    fn the_legacy_report_names_the_migration_and_escapes_what_it_read() {
        let rows = vec![
            LegacyRow {
                name: "hub".into(),
                port: 1939,
                pidfile: "/h/hub/run/hub.pid".into(),
                pid: Some(12),
                alive: true,
                state: "running".into(),
                listening: true,
                other_holders: vec![],
            },
            LegacyRow {
                name: "vault".into(),
                port: 1940,
                pidfile: "/h/vault/run/vault.pid".into(),
                pid: Some(13),
                alive: false,
                state: "stale pidfile (pid 13 is gone)".into(),
                listening: false,
                other_holders: vec!["pid 99 (evil\u{1b}[2J)".into()],
            },
        ];
        let text = render_legacy(&rows, "parachute migrate --to-supervised --home /h");
        assert!(text.contains("hub    12   1939  running, listening"), "{text}");
        assert!(text.contains("stale pidfile (pid 13 is gone); port held by pid 99 (evil\\e[2J)"), "{text}");
        assert!(text.contains("`parachute migrate --to-supervised --home /h`"), "{text}");
        assert!(!text.contains("Stop whatever holds the port"), "{text}");
        assert!(!text.chars().any(|c| c != '\n' && crate::text::is_unsafe_char(c)), "{text:?}");
    }
}
