//! From a services.json row to a [`SpawnRequest`]: the ONE resolver used by boot, API start
//! and restart alike.
//!
//! Upstream had two request builders (boot vs install) and two command sources (vendored
//! vs `module.json`) that drifted apart (R16). Here [`resolve`] is the only path: it picks the
//! start command, builds the child's complete environment and sets the cwd, and every caller
//! goes through it, so a crash respawn after an install gets the same env as a boot.
//!
//! Start command: `startCmd` from `<installDir>/.parachute/module.json` when that file has
//! one; otherwise the first-party default for `vault`, `scribe` and `surface`; otherwise the
//! row is [`Resolution::Skipped`] (a CLI-only or unknown module — not an error). A present
//! but malformed `module.json` is an error naming the file, never silently "no spec".
//!
//! Child environment, later layers win ([`child_env`]):
//! 1. the allow-listed part of the hub's environment ([`is_passed_to_modules`]: locale,
//!    identity, temp dir, terminal, proxies; never hub-only secrets (R26), service-manager
//!    plumbing, `SUDO_*`, the session bus or anything else the hub happens to carry);
//! 2. `PARACHUTE_HOME` = the home the hub runs with (so a hub started with `--home` and its
//!    children agree on the box; upstream relied on inheritance);
//! 3. `PATH` = [`enriched_path`];
//! 4. `PORT` = the row's port (services.json is authoritative, hub#356);
//! 5. the module's `.env`, except `PORT` (hub#537); a `.env` `PATH` replaces the enriched one
//!    (operator intent wins);
//! 6. `PARACHUTE_HUB_ORIGIN` / `PARACHUTE_HUB_ORIGINS`, only when the hub knows its origin —
//!    the boot-resolved origin from [`HubContext`], never a request's (R17).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::env_file::{self, EnvFileError};
use super::home::Home;
use super::names::{self, ModuleName, NameError};
use super::services::ServiceRow;

/// What the hub knows that shapes every child: passed in, never read from the process.
#[derive(Debug, Clone, Default)]
pub struct HubContext {
    /// The hub's own port (for the loopback origins).
    pub hub_port: u16,
    /// The hub's canonical public origin, resolved once at boot (`None` = unknown).
    pub hub_origin: Option<String>,
    /// The hub's `PATH`.
    pub inherited_path: String,
    /// The user's home directory (for `~/.local/bin`, `~/.bun/bin`).
    pub user_home: Option<PathBuf>,
    /// `PARACHUTE_EXTRA_PATH` (colon-separated, searched first).
    pub extra_path: Option<String>,
    /// The hub's environment, the base layer of every child's.
    pub base_env: Vec<(String, String)>,
}

/// Where a start command came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSource {
    /// `startCmd` of this `module.json`.
    ModuleJson(PathBuf),
    /// The vendored default of a first-party module.
    FirstPartyDefault,
}

/// Why a row is not started. Not an error: a row may describe a CLI-only module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Not a first-party module with a default, and no `installDir` with a `module.json`.
    NoSpec,
    /// A `module.json` exists but has no (or an empty) `startCmd`.
    NoStartCmd {
        /// The `module.json`.
        manifest: PathBuf,
    },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::NoSpec => f.write_str(
                "no startCmd resolvable (services.json entry exists, no installDir/.parachute/module.json)",
            ),
            SkipReason::NoStartCmd { manifest } => {
                write!(f, "{} has no startCmd — skipping (CLI-only module)", manifest.display())
            }
        }
    }
}

/// What to run for one module: what [`resolve`] builds for every path (boot, API start,
/// restart) and the supervisor runs. Serializable: an in-place upgrade hands it to the new
/// image (`serve::handover`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpawnRequest {
    /// The module's key (`vault`, or a third-party row name).
    pub short: String,
    /// argv; `argv[0]` is resolved against the child's own PATH and cwd.
    pub argv: Vec<String>,
    /// Working directory (the row's `installDir`), if any.
    pub cwd: Option<PathBuf>,
    /// The child's complete environment (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// The declared port (from services.json); `None` skips squatter and readiness checks.
    pub port: Option<u16>,
    /// The module's `.env` and the variables of `env` it set, so an error about one of
    /// them (an environment too large to exec) can name the file to fix.
    pub env_file: Option<EnvFileOrigin>,
}

/// Which variables of a request's environment came from which `.env` file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnvFileOrigin {
    /// The file.
    pub path: PathBuf,
    /// The variables it set (after the layers above it), sorted.
    pub keys: Vec<String>,
}

/// The outcome of [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Start this.
    Spawn {
        /// The request.
        request: SpawnRequest,
        /// Where its argv came from.
        source: CommandSource,
    },
    /// Do not start this row.
    Skipped {
        /// The module's short.
        short: ModuleName,
        /// Why.
        reason: SkipReason,
    },
}

/// Why a row could not be turned into a spawn request.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The row's name cannot be a module key.
    #[error(transparent)]
    Name(#[from] NameError),
    /// `module.json` exists but could not be read.
    #[error("cannot read {}: {source}. Check the module's installDir.", path.display())]
    ModuleJsonRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `module.json` is not valid JSON.
    #[error("{} is not valid JSON: {message} at line {line} column {column}. Reinstall the module or fix the file.",
        path.display())]
    ModuleJsonMalformed {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// `module.json` is JSON but a field is wrong.
    #[error("{} field {field:?} {reason}. Reinstall the module or fix the file.", path.display())]
    ModuleJsonInvalid {
        /// The file.
        path: PathBuf,
        /// The field (`startCmd`, or `(top level)`).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The row's `installDir` is relative, so its meaning would depend on the hub's cwd.
    #[error("services.json row {name:?} has a relative installDir {dir:?}; it must be an absolute path.")]
    RelativeInstallDir {
        /// The row.
        name: String,
        /// The value.
        dir: String,
    },
    /// The home path cannot be passed in an environment (not UTF-8).
    #[error("the Parachute home {} is not valid UTF-8 and cannot be passed to a module as PARACHUTE_HOME.",
        path.display())]
    NonUtf8Home {
        /// The home.
        path: PathBuf,
    },
    /// The module's `.env` is unusable.
    #[error(transparent)]
    EnvFile(#[from] EnvFileError),
    /// [`spawn_request`] on a row that resolves to no command.
    #[error("{short} has nothing to start: {reason}.")]
    NothingToStart {
        /// The module's short.
        short: ModuleName,
        /// Why.
        reason: SkipReason,
    },
}

/// Vendored start commands of first-party modules (used when no `module.json` says otherwise).
pub fn first_party_default(short: &str) -> Option<Vec<String>> {
    let argv: &[&str] = match short {
        "vault" => &["parachute-vault", "serve"],
        "scribe" => &["parachute-scribe", "serve"],
        "surface" => &["parachute-surface", "serve"],
        _ => return None,
    };
    Some(argv.iter().map(|s| s.to_string()).collect())
}

/// `startCmd` of a `module.json`: `Ok(None)` when the file is absent or has no/empty startCmd.
fn module_json_start_cmd(path: &Path) -> Result<Option<Vec<String>>, ModelError> {
    let bytes = match parachute_fsx::read_capped(path, 1 << 20) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ModelError::ModuleJsonRead { path: path.to_path_buf(), source }),
    };
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        let full = e.to_string();
        let message = full.rfind(" at line ").map_or(full.clone(), |i| full[..i].to_owned());
        ModelError::ModuleJsonMalformed {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message,
        }
    })?;
    let invalid =
        |field, reason: String| ModelError::ModuleJsonInvalid { path: path.to_path_buf(), field, reason };
    let Value::Object(m) = v else {
        return Err(invalid("(top level)", "must be an object".into()));
    };
    match m.get("startCmd") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) if a.is_empty() => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| match x.as_str() {
                Some(s) if !s.is_empty() && !s.contains('\0') => Ok(s.to_owned()),
                _ => Err(invalid("startCmd", format!("must hold non-empty strings without NUL, found {x}"))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(invalid("startCmd", format!("must be an array of strings, found {other}"))),
    }
}

/// A row's start command, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartCommand {
    /// Run this argv.
    Found {
        /// The argv.
        argv: Vec<String>,
        /// Where it came from.
        source: CommandSource,
    },
    /// Nothing to run.
    Skipped(SkipReason),
}

/// The row's start command, or why there is none.
pub fn start_command(row: &ServiceRow) -> Result<StartCommand, ModelError> {
    let short = names::short_name_for(row.name());
    let mut manifest_without_cmd = None;
    if let Some(dir) = row.install_dir() {
        if !dir.is_absolute() {
            return Err(ModelError::RelativeInstallDir {
                name: row.name().to_owned(),
                dir: dir.display().to_string(),
            });
        }
        let manifest = dir.join(".parachute/module.json");
        match module_json_start_cmd(&manifest)? {
            Some(argv) => {
                return Ok(StartCommand::Found { argv, source: CommandSource::ModuleJson(manifest) });
            }
            None if manifest.exists() => manifest_without_cmd = Some(manifest),
            None => {}
        }
    }
    if let Some(argv) = first_party_default(&short) {
        return Ok(StartCommand::Found { argv, source: CommandSource::FirstPartyDefault });
    }
    Ok(StartCommand::Skipped(match manifest_without_cmd {
        Some(manifest) => SkipReason::NoStartCmd { manifest },
        None => SkipReason::NoSpec,
    }))
}

/// Resolves a row to a spawn request (or a skip). The single builder for every start path.
pub fn resolve(home: &Home, row: &ServiceRow, ctx: &HubContext) -> Result<Resolution, ModelError> {
    let short = ModuleName::for_row(row.name())?;
    let (argv, source) = match start_command(row)? {
        StartCommand::Found { argv, source } => (argv, source),
        StartCommand::Skipped(reason) => return Ok(Resolution::Skipped { short, reason }),
    };
    let (env, env_file) = child_env_with_origin(home, &short, row.port(), ctx)?;
    let request = SpawnRequest {
        short: short.as_str().to_owned(),
        argv,
        cwd: row.install_dir().map(Path::to_path_buf),
        env,
        port: Some(row.port()),
        env_file,
    };
    Ok(Resolution::Spawn { request, source })
}

/// [`resolve`] for callers that need a request (API start/restart): a skip is an error.
pub fn spawn_request(home: &Home, row: &ServiceRow, ctx: &HubContext) -> Result<SpawnRequest, ModelError> {
    match resolve(home, row, ctx)? {
        Resolution::Spawn { request, .. } => Ok(request),
        Resolution::Skipped { short, reason } => Err(ModelError::NothingToStart { short, reason }),
    }
}

/// Exact names of hub-only variables that never reach a child (R26). Children that need
/// one of these get it from their own `.env`.
pub const HUB_ONLY_ENV: &[&str] = &[
    // Secrets the hub consumes itself.
    "PARACHUTE_INITIAL_ADMIN_USERNAME",
    "PARACHUTE_INITIAL_ADMIN_PASSWORD",
    "TUNNEL_TOKEN",
    "CLOUDFLARE_TUNNEL_TOKEN",
    "CLOUDFLARE_API_TOKEN",
    // Service-manager plumbing addressed to the hub's pid: a child must not notify systemd
    // or take over the hub's sockets/watchdog in its name.
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    // Set per child below; the hub's own values must not leak when the hub has none to give.
    "PORT",
    "PARACHUTE_HUB_ORIGIN",
    "PARACHUTE_HUB_ORIGINS",
];

/// Whether the hub's variable `key` is withheld from children: the names in
/// [`HUB_ONLY_ENV`], plus every `PARACHUTE_*` name ending in `_TOKEN`, `_PASSWORD` or
/// `_SECRET` (hub credentials such as an operator token).
pub fn is_hub_only(key: &str) -> bool {
    HUB_ONLY_ENV.contains(&key)
        || (key.starts_with("PARACHUTE_")
            && ["_TOKEN", "_PASSWORD", "_SECRET"].iter().any(|s| key.ends_with(s)))
}

/// The child `PATH`: `PARACHUTE_EXTRA_PATH` entries, the inherited PATH, then (if they
/// exist) `~/.local/bin`, the Homebrew bin on macOS, and `~/.bun/bin`. Empty entries are
/// dropped and duplicates removed keeping the first, so applying it twice changes nothing.
pub fn enriched_path(extra: Option<&str>, inherited: &str, user_home: Option<&Path>) -> String {
    let mut dirs: Vec<String> = Vec::new();
    let mut add = |d: &str| {
        if !d.is_empty() && !dirs.iter().any(|x| x == d) {
            dirs.push(d.to_owned());
        }
    };
    extra.unwrap_or_default().split(':').for_each(&mut add);
    inherited.split(':').for_each(&mut add);
    let mut optional: Vec<PathBuf> = Vec::new();
    if let Some(h) = user_home {
        optional.push(h.join(".local/bin"));
    }
    if cfg!(target_os = "macos") {
        optional.push(PathBuf::from(if cfg!(target_arch = "aarch64") {
            "/opt/homebrew/bin"
        } else {
            "/usr/local/bin"
        }));
    }
    if let Some(h) = user_home {
        optional.push(h.join(".bun/bin"));
    }
    for d in optional {
        if d.is_dir()
            && let Some(s) = d.to_str()
        {
            add(s);
        }
    }
    dirs.join(":")
}

/// `PARACHUTE_HUB_ORIGINS` for `origin`: the origin and the two loopback origins of the hub
/// port, without duplicates.
pub fn hub_origins(origin: &str, hub_port: u16) -> String {
    let mut set: Vec<String> = vec![origin.to_owned()];
    for o in [format!("http://127.0.0.1:{hub_port}"), format!("http://localhost:{hub_port}")] {
        if !set.contains(&o) {
            set.push(o);
        }
    }
    set.join(",")
}

/// Names of the hub's environment that reach every module (besides [`child_env`]'s own
/// `PARACHUTE_HOME`, `PATH`, `PORT` and origins). Anything else a module needs goes in its
/// `.env`. `LC_*` is matched by prefix in [`is_passed_to_modules`]. Documented in
/// `docs/security.md`.
pub const MODULE_ENV_ALLOW: &[&str] = &[
    // Who and where.
    "HOME",
    "USER",
    "LOGNAME",
    "USERNAME",
    "SHELL",
    "TMPDIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "XDG_STATE_HOME",
    // Locale, time zone, terminal.
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    // Runtime choices upstream modules read (Bun install dir, loopback bind host).
    "NODE_ENV",
    "BUN_INSTALL",
    "PARACHUTE_BIND_HOST",
    // Network access on hosts that need a proxy or a private CA.
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
];

/// Whether the hub's variable `key` is passed to modules: [`MODULE_ENV_ALLOW`] and `LC_*`,
/// and never a hub-only name.
pub fn is_passed_to_modules(key: &str) -> bool {
    !is_hub_only(key) && (MODULE_ENV_ALLOW.contains(&key) || key.starts_with("LC_"))
}

/// A base-env key that can be set at all (non-empty, no `=` or NUL).
fn settable(key: &str, value: &str) -> bool {
    !key.is_empty() && !key.contains(['=', '\0']) && !value.contains('\0')
}

/// The child's complete environment, sorted by name (see the module doc for the layers).
pub fn child_env(
    home: &Home,
    short: &ModuleName,
    port: u16,
    ctx: &HubContext,
) -> Result<Vec<(String, String)>, ModelError> {
    child_env_with_origin(home, short, port, ctx).map(|(env, _)| env)
}

/// A child's complete environment, in order.
type ChildEnv = Vec<(String, String)>;

/// [`child_env`], and which of its variables the module's `.env` set.
fn child_env_with_origin(
    home: &Home,
    short: &ModuleName,
    port: u16,
    ctx: &HubContext,
) -> Result<(ChildEnv, Option<EnvFileOrigin>), ModelError> {
    let mut env: BTreeMap<String, String> = ctx
        .base_env
        .iter()
        .filter(|(k, v)| settable(k, v) && is_passed_to_modules(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let home_str =
        home.root().to_str().ok_or_else(|| ModelError::NonUtf8Home { path: home.root().to_path_buf() })?;
    env.insert("PARACHUTE_HOME".into(), home_str.to_owned());
    env.insert(
        "PATH".into(),
        enriched_path(ctx.extra_path.as_deref(), &ctx.inherited_path, ctx.user_home.as_deref()),
    );
    env.insert("PORT".into(), port.to_string());
    let env_path = home.env_file(short);
    let mut from_file = Vec::new();
    for (k, v) in env_file::read(&env_path)?.unwrap_or_default() {
        if k != "PORT" {
            from_file.push(k.clone());
            env.insert(k, v);
        }
    }
    if let Some(origin) = ctx.hub_origin.as_deref().map(|o| o.trim_end_matches('/')).filter(|o| !o.is_empty())
    {
        env.insert("PARACHUTE_HUB_ORIGIN".into(), origin.to_owned());
        env.insert("PARACHUTE_HUB_ORIGINS".into(), hub_origins(origin, ctx.hub_port));
    }
    from_file.sort();
    from_file.dedup();
    let origin = (!from_file.is_empty()).then_some(EnvFileOrigin { path: env_path, keys: from_file });
    Ok((env.into_iter().collect(), origin))
}

/// One row's place in the boot order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootDecision {
    /// Resolve and start this row.
    Start {
        /// Position in the rows given.
        index: usize,
        /// The row's name.
        name: String,
        /// Its short.
        short: ModuleName,
    },
    /// Do not start it.
    Skip {
        /// Position in the rows given.
        index: usize,
        /// The row's name.
        name: String,
        /// Why (a sentence fragment for the log).
        reason: String,
    },
}

/// Which rows to start at boot, in file order: at most one process per short and per port
/// (R30). Call after [`ServicesFile::reconcile_ports`](super::services::ServicesFile::reconcile_ports),
/// so the ports checked are the ones that will be used.
///
/// - A name that cannot be a [`ModuleName`] is skipped.
/// - Two rows with one short (`notes` and `parachute-notes` on different ports): the row with
///   the first-party manifest name wins over a legacy short-named row; otherwise the first.
/// - Two rows on one port (possible only for vault rows): the first to claim it wins.
pub fn boot_plan<'a>(rows: impl IntoIterator<Item = &'a ServiceRow>) -> Vec<BootDecision> {
    let rows: Vec<&ServiceRow> = rows.into_iter().collect();
    let shorts: Vec<Result<ModuleName, NameError>> =
        rows.iter().map(|r| ModuleName::for_row(r.name())).collect();
    // The winning row index per short.
    let mut winner: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in shorts.iter().enumerate() {
        let Ok(s) = s else { continue };
        let manifest_named = |j: usize| names::short_name_for(rows[j].name()) != rows[j].name();
        match winner.get(s.as_str()) {
            Some(&w) if manifest_named(w) || !manifest_named(i) => {}
            _ => {
                winner.insert(s.as_str(), i);
            }
        }
    }
    let mut ports: BTreeMap<u16, usize> = BTreeMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for (i, (row, short)) in rows.iter().zip(&shorts).enumerate() {
        let name = row.name().to_owned();
        let skip = |reason: String| BootDecision::Skip { index: i, name: name.clone(), reason };
        let short = match short {
            Ok(s) => s,
            Err(e) => {
                out.push(skip(format!("cannot be supervised: {e}")));
                continue;
            }
        };
        let w = winner[short.as_str()];
        if w != i {
            out.push(skip(format!(
                "short {:?} is taken by row {:?}; one process per module",
                short.as_str(),
                rows[w].name()
            )));
            continue;
        }
        if let Some(&p) = ports.get(&row.port()) {
            out.push(skip(format!(
                "port {} is already used by row {:?}; one process per port",
                row.port(),
                rows[p].name()
            )));
            continue;
        }
        ports.insert(row.port(), i);
        out.push(BootDecision::Start { index: i, name, short: short.clone() });
    }
    out
}

#[cfg(test)]
#[path = "modules_tests.rs"]
mod tests;
