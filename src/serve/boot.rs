//! Booting the modules of services.json, and the resolver the control API shares with it.
//!
//! Both paths go through [`ModelResolver`], which reads services.json leniently, moves
//! drifted first-party ports back to canonical, applies the model's boot plan (one process
//! per module and per port) and builds the request with the model's single builder and the
//! hub context fixed at boot (R16, R17). Boot starts modules concurrently, with at most
//! `concurrency` starts (each of which may wait out the readiness window) in flight, and
//! logs every module that came up (upstream R15 logged "started" for crashes too); each
//! one that did not was already reported by the supervisor, once, with its reason, and
//! the closing summary names them.

use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::api::wire::Installed;
use crate::api::{Phase, ResolveError, ResolveSpawn};
use crate::model::home::Home;
use crate::model::modules::{self, BootDecision, HubContext, Resolution};
use crate::model::names;
use crate::model::services::{PortDecision, ServicesFile};
use crate::supervisor::{ModuleState, ModuleStatus, SpawnRequest, Supervisor};

use super::say;

/// Resolves modules from the home's current services.json.
///
/// The file is parsed (and its ports reconciled, and its boot plan made) once per version:
/// the result is cached under the file's identity (device, inode, size, mtime), which any
/// rewrite (in place or by rename) changes. A 10,000-row file then costs one `stat` per
/// API call instead of a parse.
#[derive(Debug, Clone)]
pub struct ModelResolver {
    /// The home.
    pub home: Home,
    /// What every child is given (hub port, boot-resolved origin, base environment).
    pub ctx: HubContext,
    cache: Arc<Cache>,
}

/// The last parse and the file version it was made from.
type Cache = Mutex<Option<(FileKey, Arc<Parsed>)>>;

/// What identifies one version of services.json on disk (`None`: no file).
type FileKey = Option<(u64, u64, u64, i64, i64)>;

/// One parse of services.json, with what every caller derives from it.
#[derive(Debug)]
struct Parsed {
    file: ServicesFile,
    notes: Vec<String>,
    reconciled: bool,
    plan: Vec<BootDecision>,
}

fn file_key(path: &std::path::Path) -> FileKey {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// One row's fate at boot.
#[derive(Debug, Clone)]
pub enum Booted {
    /// `start` was called; this is the state it returned.
    Started(Box<ModuleState>),
    /// Not started (the reason is in the hub's log).
    Skipped,
}

impl ModelResolver {
    /// A resolver for `home` with an empty cache.
    pub fn new(home: Home, ctx: HubContext) -> ModelResolver {
        ModelResolver { home, ctx, cache: Arc::new(Mutex::new(None)) }
    }

    /// [`Self::load`], from the cache while the file is unchanged.
    fn parsed(&self) -> Arc<Parsed> {
        let path = self.home.services_json();
        let key = file_key(&path);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, parsed)) = cache.as_ref()
            && *k == key
            && key.is_some()
        {
            return Arc::clone(parsed);
        }
        let (file, notes, reconciled) = self.load();
        let plan = modules::boot_plan(file.rows());
        let parsed = Arc::new(Parsed { file, notes, reconciled, plan });
        *cache = Some((key, Arc::clone(&parsed)));
        parsed
    }

    /// services.json as the hub would use it now: leniently read, ports reconciled in memory.
    fn load(&self) -> (ServicesFile, Vec<String>, bool) {
        let loaded = ServicesFile::read_lenient(&self.home.services_json());
        let mut file = loaded.file;
        let mut notes: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
        let mut reconciled = false;
        for d in file.reconcile_ports() {
            match d {
                PortDecision::Reconciled { log, .. } => {
                    reconciled = true;
                    notes.push(log);
                }
                PortDecision::HeldByOther { log, .. } => notes.push(log),
                _ => {}
            }
        }
        (file, notes, reconciled)
    }
}

impl ResolveSpawn for ModelResolver {
    fn resolve(&self, short: &str) -> Result<SpawnRequest, ResolveError> {
        let parsed = self.parsed();
        let rows: Vec<_> = parsed.file.rows().collect();
        let mut skipped = None;
        for d in parsed.plan.iter().cloned() {
            match d {
                BootDecision::Start { index, short: s, .. } if s.as_str() == short => {
                    return match modules::resolve(&self.home, rows[index], &self.ctx) {
                        Ok(Resolution::Spawn { request, .. }) => Ok(request),
                        Ok(Resolution::Skipped { reason, .. }) => Err(ResolveError::NoStartCmd {
                            short: short.to_owned(),
                            detail: reason.to_string(),
                        }),
                        Err(e) => {
                            Err(ResolveError::Invalid { short: short.to_owned(), detail: e.to_string() })
                        }
                    };
                }
                BootDecision::Skip { name, reason, .. }
                    if name == short || names::short_name_for(&name) == short =>
                {
                    skipped = Some(format!("services.json row {name:?} {reason}."));
                }
                _ => {}
            }
        }
        match skipped {
            Some(detail) => Err(ResolveError::Invalid { short: short.to_owned(), detail }),
            None => Err(ResolveError::NotInstalled { short: short.to_owned() }),
        }
    }

    fn installed(&self) -> Vec<Installed> {
        let parsed = self.parsed();
        let rows: Vec<_> = parsed.file.rows().collect();
        parsed
            .plan
            .iter()
            .cloned()
            .map(|d| match d {
                BootDecision::Start { index, short, .. } => {
                    let skip_reason = match modules::start_command(rows[index]) {
                        Ok(modules::StartCommand::Found { .. }) => None,
                        Ok(modules::StartCommand::Skipped(reason)) => Some(reason.to_string()),
                        Err(e) => Some(e.to_string()),
                    };
                    Installed {
                        short: short.to_string(),
                        port: Some(rows[index].port()),
                        version: Some(rows[index].version().to_owned()),
                        skip_reason,
                    }
                }
                BootDecision::Skip { index, name, reason } => Installed {
                    short: names::short_name_for(&name),
                    port: Some(rows[index].port()),
                    version: Some(rows[index].version().to_owned()),
                    skip_reason: Some(reason),
                },
            })
            .collect()
    }
}

/// Came up: running, no start error (the one boot outcome the supervisor does not log).
fn is_clean(state: &ModuleState) -> bool {
    state.status == ModuleStatus::Running && state.start_error.is_none()
}

/// One line describing a module's state after `start` (R15: the real outcome).
pub fn describe(state: &ModuleState) -> String {
    let short = &state.short;
    let status = state.status.as_str();
    let pid = state.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    match (&state.start_error, state.status) {
        (Some(e), _) => format!("{short}: {status}{pid} — {e}"),
        (None, ModuleStatus::Crashed) => match state.last_exit() {
            Some(e) => format!("{short}: crashed (last child {e}); see `parachute logs {short}`"),
            None => format!("{short}: crashed"),
        },
        (None, _) => format!("{short}: {status}{pid}"),
    }
}

/// Starts every module of services.json (see the module doc) and logs each outcome.
///
/// When `phase` leaves `Running` every start not yet made is abandoned and this returns
/// promptly: once it has returned, every module it started is registered with the
/// supervisor, so a shutdown that follows covers it (no orphan from a SIGTERM during boot).
pub async fn boot(
    supervisor: Supervisor,
    resolver: Arc<ModelResolver>,
    concurrency: usize,
    phase: watch::Receiver<Phase>,
) -> Vec<Booted> {
    let parsed = resolver.parsed();
    let (file, notes, reconciled) = (&parsed.file, &parsed.notes, parsed.reconciled);
    for n in notes {
        say(n);
    }
    if reconciled && let Err(e) = file.write(&resolver.home.services_json()) {
        say(&format!(
            "could not write the reconciled ports back ({e}); the modules start on their canonical ports anyway."
        ));
    }
    let rows: Vec<_> = file.rows().collect();
    if rows.is_empty() {
        say(&format!("{} lists no modules; nothing to start.", resolver.home.services_json().display()));
        return Vec::new();
    }
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut out = Vec::new();
    for d in parsed.plan.iter().cloned() {
        let (index, short) = match d {
            BootDecision::Start { index, short, .. } => (index, short),
            BootDecision::Skip { name, reason, .. } => {
                // Sanitized and clipped: a hostile row name can neither forge a log line
                // nor flood the log (a 12 MB name was once echoed on every boot).
                say(&format!(
                    "\"{}\": skipped — {}",
                    crate::text::field_clipped(&name, 64),
                    crate::text::field_clipped(&reason, 400)
                ));
                out.push(Booted::Skipped);
                continue;
            }
        };
        // Handed over by the image this hub replaced (an in-place upgrade): kept as it is.
        if let Some(state) = supervisor.get(short.as_str()) {
            out.push(Booted::Started(Box::new(state)));
            continue;
        }
        let request = match modules::resolve(&resolver.home, rows[index], &resolver.ctx) {
            Ok(Resolution::Spawn { request, .. }) => request,
            Ok(Resolution::Skipped { reason, .. }) => {
                say(&format!("{short}: skipped — {reason}"));
                out.push(Booted::Skipped);
                continue;
            }
            Err(e) => {
                say(&format!("{short}: not started — {e}"));
                out.push(Booted::Skipped);
                continue;
            }
        };
        let (sup, gate, mut phase) = (supervisor.clone(), Arc::clone(&gate), phase.clone());
        tasks.spawn(async move {
            let started = async {
                let _permit = gate.acquire_owned().await.expect("the boot semaphore is never closed");
                sup.start(request).await
            };
            tokio::select! {
                state = started => {
                    // One line per event: a module that did not come up cleanly was
                    // already reported by the supervisor, once, with its reason (start
                    // failure, exit and restart, give-up, unbound port); saying it again
                    // here doubled every failure. The summary below names them.
                    if is_clean(&state) {
                        say(&describe(&state));
                    }
                    Some(state)
                }
                _ = phase.wait_for(|p| *p != Phase::Running) => None,
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok(Some(state)) = done {
            out.push(Booted::Started(Box::new(state)));
        }
    }
    let count = |f: &dyn Fn(&ModuleState) -> bool| {
        out.iter().filter(|b| matches!(b, Booted::Started(s) if f(s))).count()
    };
    let running = count(&|s| is_clean(s));
    let failed: Vec<String> = resolver
        .installed()
        .into_iter()
        .map(|i| i.short)
        .filter(|short| {
            out.iter().any(|b| matches!(b, Booted::Started(s) if &s.short == short && !is_clean(s)))
        })
        .collect();
    let skipped = out.iter().filter(|b| matches!(b, Booted::Skipped)).count();
    if *phase.borrow() == Phase::Running {
        let names = if failed.is_empty() {
            String::new()
        } else {
            let shown: Vec<_> = failed.iter().take(10).map(|s| crate::text::field(s)).collect();
            let more =
                if failed.len() > 10 { format!(" and {} more", failed.len() - 10) } else { String::new() };
            format!(" ({}{more})", shown.join(", "))
        };
        say(&format!(
            "boot done: {running} running, {} with problems{names}, {skipped} skipped.",
            failed.len()
        ));
    } else {
        say("boot abandoned: the hub is shutting down.");
    }
    out
}
