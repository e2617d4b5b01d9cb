//! `parachute postinstall [--upgrade]` and `parachute preremove [--upgrade|--purge]`: the
//! packaging hooks. Package scripts (Debian maintainer scripts, Homebrew's `post_install`,
//! `scripts/postinstall.sh`) only call these; the logic is in [`crate::hooks`].
//!
//! Both are safe to run any number of times and never ask anything. Exit status, chosen for
//! dpkg (which aborts the package operation on a non-zero maintainer script):
//!
//! - 0 whenever the package operation should go on: done, nothing to do, no service manager
//!   here (one line says why), an installed unit that cannot be read back (left alone, with
//!   a warning), a new binary that does not run (unit left alone), and a refreshed unit that
//!   did not come up but was rolled back to a healthy hub (warning with the log tail). As
//!   with Debian's own `deb-systemd-invoke … || true`, a service problem the hook has already
//!   undone does not leave the package half-configured.
//! - 1 only when the operator must act before the package operation may go on:
//!   `postinstall --upgrade` took down a hub that was healthy and could not bring it back
//!   (neither on the new nor on the restored definition); `preremove` could not remove the
//!   hub unit (removing the package would leave a unit pointing at a deleted binary).
//! - 2 bad flags (a packaging bug, so it should fail loudly in the packager's own tests).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use parachute_manager::{Scope, ServiceManager, UnitId};
use serde_json::{Value, json};

use super::HostEnv;
use super::exit::{self, Code};
use super::host::{self, ScopeArg};
use crate::detect::{self, Backend};
use crate::hooks::{self, RefreshOptions, RefreshOutcome};
use crate::model::home::Home;

const EXIT_HELP: &str = "\
Exit codes: 0 done, nothing to do, or no service manager here (the package operation goes on); \
1 the hub was healthy, the upgrade took it down and could not bring it back (postinstall), or \
the hub unit could not be removed (preremove); 2 bad flags.";

/// Flags of `postinstall`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_HELP)]
pub struct PostinstallArgs {
    /// This is an upgrade: re-render an installed hub unit for this binary and restart it
    /// when its definition or the running binary is out of date. When only the binary
    /// changed, the running hub is first asked to upgrade in place (same pid, every module
    /// kept running); the restart is the fallback, and the output says which happened.
    #[arg(long)]
    pub upgrade: bool,
    /// The Parachute home to look at for legacy daemons (default: $PARACHUTE_HOME and the
    /// invoking or sudo user's ~/.parachute from the password database).
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Only this manager scope (default: both).
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
    /// The stable installed path of the binary the unit should run (default: this
    /// executable), e.g. /usr/bin/parachute; never a versioned or temporary path.
    #[arg(long, value_name = "PATH")]
    pub exec: Option<PathBuf>,
    /// How long a restarted hub gets to answer healthy, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub wait: u64,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `preremove`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_HELP)]
pub struct PreremoveArgs {
    /// The package is being upgraded, not removed: leave the hub unit alone.
    #[arg(long, conflicts_with = "purge")]
    pub upgrade: bool,
    /// Also delete the cutover's journal and lock in each home (never services.json, tokens
    /// or module data), and the files named in --purge-list.
    #[arg(long)]
    pub purge: bool,
    /// Without --purge: record the journal and lock paths a later purge deletes in FILE (for
    /// package formats that purge after the binary is gone). With --purge: delete the files
    /// FILE names, then FILE.
    #[arg(long, value_name = "FILE")]
    pub purge_list: Option<PathBuf>,
    /// The Parachute home (default: $PARACHUTE_HOME and the invoking or sudo user's
    /// ~/.parachute, plus the home the installed unit serves).
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Only this manager scope (default: both).
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a hook waits for a running cutover (or `parachute unit` verb) of the home.
const LOCK_WAIT: Duration = crate::cutover::lock::DEFAULT_WAIT;

fn scopes(arg: Option<ScopeArg>) -> Vec<Scope> {
    match arg {
        Some(ScopeArg::User) => vec![Scope::User],
        Some(ScopeArg::System) => vec![Scope::System],
        None => vec![Scope::System, Scope::User],
    }
}

/// The reachable backends, and why each unreachable scope is not.
async fn managers(env: &HostEnv, scope: Option<ScopeArg>) -> (Vec<Backend>, Vec<(Scope, String)>) {
    let facts = host::facts(env);
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for s in scopes(scope) {
        let b = detect::backend(&facts, s, CONNECT_TIMEOUT).await;
        match b.why_unavailable() {
            Some(why) => down.push((s, why.to_owned())),
            None => up.push(b),
        }
    }
    (up, down)
}

fn homes(verb: &str, flag: Option<&Path>, env: &HostEnv) -> Result<Vec<Home>, Code> {
    if let Some(f) = flag
        && !f.is_absolute()
    {
        exit::print_error(verb, &format!("--home must be an absolute path, not {}.", f.display()), &[]);
        return Err(Code::Usage);
    }
    Ok(hooks::candidate_homes(flag, env.get("PARACHUTE_HOME"), host::user_home(env).as_deref()))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime can be built")
}

fn no_manager_line(down: &[(Scope, String)], what: &str) -> String {
    let mut why: Vec<String> = down.iter().map(|(s, w)| format!("{s} scope: {w}")).collect();
    if down.windows(2).all(|w| w[0].1 == w[1].1)
        && let Some((_, w)) = down.first()
    {
        why = vec![w.clone()];
    }
    format!("no service manager here ({}); {what}.", why.join("; "))
}

/// Prints the result once: the JSON object with `--json`, else the human lines.
/// As root, does `action` for every other user's user-scope hub unit, adding one line per
/// user; a user's failure is a warning, never a reason to abort the package operation.
/// Only where the system manager is reachable (user managers exist only under it; a box
/// without one has no user unit that could run) and not with `--scope system`.
fn other_users(
    scope: Option<ScopeArg>,
    system_manager: bool,
    action: &hooks::users::UserAction,
    lines: &mut Vec<(String, bool)>,
) -> Vec<hooks::users::UserReport> {
    if !nix::unistd::geteuid().is_root() || scope == Some(ScopeArg::System) || !system_manager {
        return Vec::new();
    }
    let Ok(me) = std::env::current_exe() else { return Vec::new() };
    let reports = hooks::users::act_on_user_units(action, &me);
    lines.extend(reports.iter().map(|r| (r.message.clone(), r.failed)));
    reports
}

/// Whether the system manager answers (whatever `--scope` limited the hook's own work to).
fn system_manager_reachable(env: &HostEnv) -> bool {
    let facts = host::facts(env);
    !matches!(runtime().block_on(detect::backend(&facts, Scope::System, CONNECT_TIMEOUT)), Backend::None(_))
}

fn report(verb: &str, json: bool, lines: &[(String, bool)], object: serde_json::Value) {
    if json {
        println!("{}", serde_json::to_string_pretty(&object).expect("a JSON value serializes"));
    } else {
        for (l, warn) in lines {
            say(verb, l, *warn);
        }
    }
}

/// Prints one line prefixed with the verb, to stdout (or stderr for warnings).
fn say(verb: &str, line: &str, warn: bool) {
    if warn {
        let _ = writeln!(std::io::stderr().lock(), "parachute {verb}: {line}");
    } else {
        println!("parachute {verb}: {line}");
    }
}

/// Runs `postinstall`.
pub fn postinstall(args: PostinstallArgs, env: &HostEnv) -> Code {
    let homes = match homes("postinstall", args.home.as_deref(), env) {
        Ok(h) => h,
        Err(c) => return c,
    };
    // Named only: a unit whose binary is missing is the refresh's `exec-broken` case.
    let exec = match host::exec_path(args.exec.as_deref(), host::MustExist::No, env) {
        Ok(e) => e.path,
        Err(e) => {
            exit::print_error("postinstall", &format!("{e}."), &[]);
            return Code::Usage;
        }
    };
    let verb = "postinstall";
    // One runtime for the whole run: bus connections live on the runtime that made them.
    let rt = runtime();
    let (up, down) = rt.block_on(managers(env, args.scope));
    let mut lines: Vec<(String, bool)> = Vec::new();
    let mut reports = Vec::new();
    // As root, other users' user-scope hubs are refreshed through their own managers.
    let user_reports = if args.upgrade {
        let action = hooks::users::UserAction::Refresh { exec: exec.clone(), wait: args.wait };
        other_users(args.scope, system_manager_reachable(env), &action, &mut lines)
    } else {
        Vec::new()
    };
    let mut installed_somewhere = !user_reports.is_empty();
    let mut locked_out = false;
    if up.is_empty() {
        let what = if args.upgrade { "no hub unit to refresh" } else { "nothing to do on a fresh install" };
        lines.push((no_manager_line(&down, what), false));
    } else {
        let opts = RefreshOptions {
            exec: exec.clone(),
            fallback_user_home: host::user_home(env),
            wait: Duration::from_secs(args.wait),
            probe_timeout: Duration::from_secs(5),
        };
        for b in &up {
            let path = b.unit_path(&UnitId::hub());
            if !args.upgrade {
                if path.exists() {
                    installed_somewhere = true;
                    lines.push((
                        format!(
                            "a hub unit is installed ({}, {} scope); a fresh install leaves it alone \
                             (`parachute postinstall --upgrade` refreshes it for this binary).",
                            path.display(),
                            b.scope()
                        ),
                        false,
                    ));
                }
                continue;
            }
            // One writer of the hub unit at a time: wait for a cutover of the home the
            // unit serves (or a `parachute unit` verb) to finish before touching the unit.
            let _lock = match crate::cutover::lock::served_home(b)
                .map(|h| crate::cutover::lock::for_unit_writer(&h, "postinstall --upgrade", LOCK_WAIT))
            {
                Some(Err(e)) => {
                    lines.push((format!("left the hub unit ({} scope) alone: {e}", b.scope()), true));
                    locked_out = true;
                    continue;
                }
                Some(Ok(l)) => l,
                None => None,
            };
            let r = rt.block_on(hooks::refresh(b, &opts));
            if r.outcome == RefreshOutcome::NotInstalled {
                continue;
            }
            installed_somewhere = true;
            let warn = matches!(
                r.outcome,
                RefreshOutcome::Unreadable
                    | RefreshOutcome::ExecBroken
                    | RefreshOutcome::ManagerError
                    | RefreshOutcome::RolledBack
                    | RefreshOutcome::RollbackFailed
            );
            let mut text = r.message.clone();
            if warn && !r.log_tail.is_empty() {
                text.push_str(&format!("\n  last lines of the hub log:\n    {}", r.log_tail.join("\n    ")));
            }
            lines.push((text, warn));
            reports.push(r);
        }
        if !installed_somewhere {
            let looked: Vec<String> = up.iter().map(|b| format!("{} ({})", b.scope(), b.kind())).collect();
            lines.push((
                format!("no hub unit installed (looked in: {}); nothing to refresh.", looked.join(", ")),
                false,
            ));
        }
    }
    let legacy: Vec<hooks::LegacyBox> = homes.iter().filter_map(hooks::legacy_box).collect();
    if !up.is_empty() {
        for b in &legacy {
            lines.push((b.hint(), false));
        }
    }
    let code = if locked_out || reports.iter().any(hooks::RefreshReport::broke_the_hub) {
        Code::Failure
    } else {
        Code::Success
    };
    report(
        verb,
        args.json,
        &lines,
        json!({
                "verb": verb,
                "mode": if args.upgrade { "upgrade" } else { "install" },
                "exec": exec,
                "managers": managers_json(&up, &down),
                "units": reports,
                "users": user_reports,
                "legacy": legacy,
                "exit_code": code as u8,
        }),
    );
    code
}

fn managers_json(up: &[Backend], down: &[(Scope, String)]) -> Value {
    let mut v: Vec<Value> = up.iter().map(|b| json!({"scope": b.scope(), "backend": b.kind()})).collect();
    v.extend(down.iter().map(|(s, w)| json!({"scope": s, "backend": "none", "why": w})));
    Value::Array(v)
}

/// Runs `preremove`.
pub fn preremove(args: PreremoveArgs, env: &HostEnv) -> Code {
    let verb = "preremove";
    if args.upgrade {
        let line = "upgrading: the hub unit stays installed; `parachute postinstall --upgrade` refreshes it.";
        if args.json {
            println!("{}", json!({"verb": verb, "mode": "upgrade", "units": [], "exit_code": 0}));
        } else {
            say(verb, line, false);
        }
        return Code::Success;
    }
    let mut homes = match homes("preremove", args.home.as_deref(), env) {
        Ok(h) => h,
        Err(c) => return c,
    };
    let rt = runtime();
    let (up, down) = rt.block_on(managers(env, args.scope));
    let mut lines: Vec<(String, bool)> = Vec::new();
    let mut reports = Vec::new();
    if up.is_empty() {
        lines.push((no_manager_line(&down, "no hub unit to stop or remove"), false));
    }
    for b in &up {
        let r = rt.block_on(hooks::remove::remove_unit(b));
        lines.push((r.message.clone(), r.failed));
        if args.home.is_none()
            && let Some(h) = r.home.as_ref().and_then(|h| Home::new(h).ok())
            && !homes.contains(&h)
        {
            homes.push(h);
        }
        reports.push(r);
    }
    // As root (dpkg's prerm), other users' user-scope hubs would keep running a deleted
    // binary: reach each through its own manager, as that user.
    let system_up = system_manager_reachable(env);
    let users = other_users(args.scope, system_up, &hooks::users::UserAction::Remove, &mut lines);
    let mut purged = Vec::new();
    let mut kept = Vec::new();
    if args.purge {
        for h in &homes {
            let p = hooks::purge_state(h);
            purged.extend(p.removed);
            kept.extend(p.kept);
        }
        if let Some(list) = &args.purge_list {
            match hooks::remove::read_purge_list(list) {
                Ok(paths) => {
                    let p = hooks::remove::purge_files(&paths);
                    purged.extend(p.removed);
                    kept.extend(p.kept);
                    if let Err(e) = parachute_fsx::remove_file(list) {
                        kept.push(format!("could not delete the purge list: {e}"));
                    }
                }
                Err(e) => kept.push(format!("could not read the purge list: {e}")),
            }
        }
        let what = if purged.is_empty() {
            "no cutover journal or lock to delete".to_owned()
        } else {
            let names: Vec<String> = purged.iter().map(|p| p.display().to_string()).collect();
            format!("deleted {}", names.join(", "))
        };
        lines.push((format!("purge: {what}; services.json, tokens and module data are kept."), false));
        lines.extend(kept.iter().map(|k| (format!("purge: {k}"), true)));
    } else if let Some(list) = &args.purge_list {
        if let Err(e) = hooks::remove::write_purge_list(list, &homes) {
            lines.push((format!("could not record what a purge should delete: {e}"), true));
        }
    }
    let code = if reports.iter().any(|r| r.failed) { Code::Failure } else { Code::Success };
    report(
        verb,
        args.json,
        &lines,
        json!({
                "verb": verb,
                "mode": if args.purge { "purge" } else { "remove" },
                "managers": managers_json(&up, &down),
                "units": reports,
                "users": users,
                "purged": purged,
                "kept": kept,
                "exit_code": code as u8,
        }),
    );
    code
}
