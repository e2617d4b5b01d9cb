//! The migration offer: `parachute start|stop|restart` on a box that still runs the legacy
//! detached daemons offers to move it under the service manager instead of only saying
//! "no hub" (upstream `migrate-offer.ts`, design §7.5).
//!
//! The offer is made only on evidence that holds now, not on leftovers: a legacy pidfile
//! (`<home>/<short>/run/<short>.pid` or `hub/run/hub.pid`) naming a live process whose
//! identity [`legacy::inspect`] verifies (upstream counted stale pidfiles too), no hub unit
//! known to the service manager, and no hub of this home answering (nothing on the port,
//! or only the legacy hub itself, which answers `/health` but is not a supervised hub).
//!
//! On a terminal (stdin and stderr both) it asks `[y/N]` and runs the same cutover as
//! `parachute migrate --to-supervised --home <home>`; after a successful cutover the verb
//! goes on against the new hub. Anywhere else (scripts, `--json`, CI) it never changes
//! anything: it prints one line naming the command on stderr and the verb exits 3 (no
//! supervised hub), also when the legacy hub itself answers on the port: it is this box's
//! own hub, not a stranger to stop by hand.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use parachute_manager::{ServiceManager, UnitId};

use super::HostEnv;
use super::exit::Code;
use crate::client::{ClientError, Op};
use crate::cutover::explain::shell_quote;
use crate::cutover::legacy::{self, Attribution, Known, LegacyProcess, PidfileState};
use crate::model::home::Home;
use crate::model::services::ServicesFile;

/// How long the manager gets to say whether a hub unit exists.
const MANAGER_TIMEOUT: Duration = Duration::from_secs(3);

/// What the offer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// The hint was printed, or the operator declined: nothing was changed.
    Hinted,
    /// The operator accepted and the cutover migrated the box: retry the verb.
    Migrated,
    /// The operator accepted and the cutover failed (it printed why); exit with this code.
    Failed(Code),
}

/// The live, identity-verified legacy daemons of `home` (hub first, then modules in
/// services.json order).
pub fn live_legacy(home: &Home) -> Vec<LegacyProcess> {
    let services = ServicesFile::read_lenient(&home.services_json()).file;
    let (targets, _) = legacy::targets(home, 0, &services);
    targets
        .iter()
        .filter_map(|t| match legacy::inspect(t) {
            PidfileState::Running(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// Whether the error means "no hub of this home answers": nothing on the port, or only
/// the verified legacy hub (or a process of its group) listening there, whatever it
/// answered (a legacy hub is not a supervised hub: no instance record, another protocol).
fn no_supervised_hub(err: &ClientError, home: &Home, live: &[LegacyProcess]) -> bool {
    match err {
        ClientError::NoHub { .. } => true,
        ClientError::Foreign { port, .. }
        | ClientError::Protocol { port, .. }
        | ClientError::Timeout { port, .. } => {
            let services = ServicesFile::read_lenient(&home.services_json()).file;
            let (targets, _) = legacy::targets(home, *port, &services);
            let Some(hub) = targets.into_iter().find(|t| t.is_hub()) else { return false };
            let known = Known { legacy: live.to_vec(), ..Known::default() };
            let holders = legacy::holders(&hub, &known);
            !holders.is_empty()
                && holders.iter().all(|h| {
                    matches!(&h.attribution, Attribution::Legacy { name } | Attribution::LegacyGroup { name } if name == "hub")
                })
        }
        _ => false,
    }
}

/// Whether the service manager knows a hub unit (a file, or a loaded/running unit). An
/// unreachable manager counts as "no unit": the offer then leads to the cutover, which
/// explains that there is no manager and what to do instead.
async fn hub_unit_known(env: &HostEnv) -> bool {
    let facts = super::host::facts(env);
    let scope = super::host::default_scope(facts.euid);
    let backend = crate::detect::backend(&facts, scope, MANAGER_TIMEOUT).await;
    match backend.status(&UnitId::hub()).await {
        Ok(st) => st.file.is_some() || st.active || st.loaded,
        Err(_) => false,
    }
}

/// The command that migrates `home`.
pub fn migrate_command(home: &Home) -> String {
    format!("parachute migrate --to-supervised --home {}", shell_quote(&home.root().to_string_lossy()))
}

fn describe(live: &[LegacyProcess]) -> String {
    live.iter().map(|p| format!("{} pid {}", p.name, p.identity.pid)).collect::<Vec<_>>().join(", ")
}

/// Whether `home` is a legacy box, given that connecting to its hub failed with `err`: live,
/// identity-verified legacy daemons, no supervised hub answering (nothing on the port, or
/// only the legacy hub), and no hub unit known to the service manager. The one detection
/// `start`, `stop`, `restart` and `status` share; `Some` holds the live daemons.
pub fn legacy_box(
    err: &ClientError,
    home: &Home,
    env: &HostEnv,
    rt: &tokio::runtime::Runtime,
) -> Option<Vec<LegacyProcess>> {
    let live = legacy_hub_on_port(err, home)?;
    (!rt.block_on(hub_unit_known(env))).then_some(live)
}

/// The line for a box whose hub unit exists while legacy daemons still hold the ground
/// (a migration that did not finish): re-running it resumes from its journal.
pub fn unfinished_migration_hint(home: &Home, live: &[LegacyProcess]) -> String {
    format!(
        "a hub unit is installed, but the legacy detached daemons still run ({}); the migration did not finish: re-run `{}` (it resumes).",
        describe(live),
        migrate_command(home)
    )
}

/// The live legacy daemons when the connection failed because this box's legacy hub (or
/// nothing) is on the hub's port, whether or not a hub unit exists: a half-finished
/// migration (unit installed, legacy hub still on the port) must not be told to stop its
/// own hub by hand either. [`legacy_box`] is this plus "no hub unit".
pub fn legacy_hub_on_port(err: &ClientError, home: &Home) -> Option<Vec<LegacyProcess>> {
    let live = live_legacy(home);
    (!live.is_empty() && no_supervised_hub(err, home, &live)).then_some(live)
}

/// The sentence for a failed connection on a legacy box, instead of the client's own: when
/// the legacy hub itself answers on the port, "something else answers … stop whatever holds
/// the port" would tell the operator to kill their own hub by hand.
pub fn no_supervised_hub_message(err: &ClientError, home: &Home) -> String {
    match err {
        ClientError::Foreign { port, .. }
        | ClientError::Protocol { port, .. }
        | ClientError::Timeout { port, .. } => {
            format!(
                "no supervised hub is running for {}: 127.0.0.1:{port} is held by this box's legacy hub (one of the 0.6 detached daemons), which does not speak the control API.",
                crate::text::field(&home.root().to_string_lossy())
            )
        }
        other => other.to_string(),
    }
}

/// Called after `parachute start|stop|restart` found no hub on a box [`legacy_box`]
/// recognised (`live`: its daemons; the caller has already printed the error). Offers the
/// migration; see the module doc. `json` suppresses the prompt.
pub fn offer(op: Op, live: &[LegacyProcess], home: &Home, env: &HostEnv, json: bool) -> Offer {
    let cmd = migrate_command(home);
    let interactive = !json && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if !interactive {
        eprintln!(
            "parachute: this box still runs the legacy detached daemons ({}) and has no supervised hub; move them under the service manager with `{cmd}`.",
            describe(live)
        );
        return Offer::Hinted;
    }
    {
        let mut e = std::io::stderr().lock();
        let _ = writeln!(e);
        let _ = writeln!(e, "This box still runs the legacy detached daemons: {}.", describe(live));
        let _ = writeln!(
            e,
            "`parachute {}` drives a supervised hub. The migration stops these daemons and starts one hub",
            op.as_str()
        );
        let _ = writeln!(e, "under the service manager that supervises every module (`{cmd}`).");
        let _ = write!(e, "Migrate to the supervised model now? [y/N] ");
        let _ = e.flush();
    }
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if !matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
        eprintln!("Skipped. Run `{cmd}` when you are ready.");
        return Offer::Hinted;
    }
    let args = super::migrate::Args {
        to_supervised: true,
        teardown: false,
        home: super::host::HomeArg { home: Some(home.root().to_path_buf()) },
        port: None,
        exec: None,
        dry_run: false,
        json: false,
        scope: None,
        user: None,
        lock_wait: crate::cutover::lock::DEFAULT_WAIT.as_secs(),
    };
    match super::migrate::run(args, env) {
        Code::Success => Offer::Migrated,
        code => Offer::Failed(code),
    }
}
