//! `services.json`, the module registry: reading (strict and lenient), editing and writing.
//!
//! Shape: the file is kept as its top-level JSON object plus a list of entries, each either a
//! valid [`ServiceRow`] or a *held* raw value (a row the lenient reader could not use). Held
//! rows and unknown fields, at any level, are written back exactly where they were, so a
//! read → write of an untouched file is byte-identical (for files in the canonical
//! `JSON.stringify(v, null, 2)` + newline form) and the only bytes that change are the ones
//! an edit asked for.
//!
//! Read pipeline (both readers, on the raw rows, in order — upstream §7.2):
//! 1. drop stale `app`/`parachute-app` rows of the pre-rename UI host (first path
//!    `/surface…` or port 1946), never a row mounted at `/app`;
//! 2. drop retired modules (`agent`, `channel`, `parachute-agent`, `parachute-channel`, a
//!    `claw` row mounted at `/claw`);
//! 3. drop a short-named row (`vault`) when a `parachute-<same>` row shares its port;
//! 4. check every row; then, in file order, a row whose name repeats an earlier row's, or
//!    whose port is taken by an earlier row (unless both are vault rows), is a collision.
//!
//! The strict reader collects every problem of steps 4 (each naming file, row index, row
//! name and field) and fails with all of them; dropped rows are reported as warnings. The
//! lenient reader never fails: invalid and colliding rows are held (not used, but kept on
//! write), a missing file is empty, an unparsable one is empty plus a warning with the line
//! and column — and such a file is then never overwritten. Neither reader writes: unlike
//! upstream, nothing is rewritten unless a write was asked for. Rows dropped in steps 1–3 are
//! gone from the next write (that is the clean-up).
//!
//! Nothing here prints; warnings go back to the caller.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::names::{self, is_vault_row};
pub use super::service_row::{FieldProblem, PublicExposure, ServiceRow};
use super::service_row::{check_row, show};

/// What kind of [`Issue`] this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueKind {
    /// A row removed by the read pipeline (steps 1–3); always a warning.
    Dropped,
    /// A row that fails the field rules.
    Invalid,
    /// A row whose port is already used by an earlier row.
    PortCollision,
    /// A row whose name repeats an earlier row's.
    DuplicateName,
    /// The file is not JSON, or not of the expected shape (lenient reader only).
    Unparsable,
    /// The file could not be read (lenient reader only).
    Unreadable,
}

/// One problem (strict) or warning (lenient), with everything needed to find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The kind.
    pub kind: IssueKind,
    /// The services.json file.
    pub file: PathBuf,
    /// The row's index in the file's `services` array.
    pub index: Option<usize>,
    /// The row's `name`, when it has a string one.
    pub name: Option<String>,
    /// The field, when one field is at fault.
    pub field: Option<String>,
    /// What is wrong (a sentence fragment).
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(i) = self.index {
            write!(f, ": services[{i}]")?;
        }
        if let Some(n) = &self.name {
            write!(f, " ({n:?})")?;
        }
        if let Some(field) = &self.field {
            write!(f, " field {field:?}")?;
        }
        write!(f, ": {}", self.message)
    }
}

struct IssueList<'a>(&'a [Issue]);

impl fmt::Display for IssueList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            write!(f, "\n  {}. {p}", i + 1)?;
        }
        Ok(())
    }
}

/// Why services.json could not be read, changed or written.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// The file exists but could not be read.
    #[error("cannot read {}: {source}. Check its permissions.", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is not valid JSON.
    #[error("{} is not valid JSON: {message} at line {line} column {column}. Fix or restore the file; nothing was changed.",
        file.display())]
    Malformed {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The file is JSON but breaks the rules; every problem is listed.
    #[error("{} has {} problem(s); nothing was changed. Fix them and retry:{}",
        file.display(), problems.len(), IssueList(problems))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem, in file order.
        problems: Vec<Issue>,
    },
    /// An upsert would put a row on a port another row holds.
    #[error(
        "cannot register {name:?} on port {port}: services.json row {holder:?} already uses it, and only vault \
             rows may share a port. Choose another port or remove {holder:?} first."
    )]
    PortCollision {
        /// The row being added.
        name: String,
        /// The contested port.
        port: u16,
        /// The row that holds it.
        holder: String,
    },
    /// The file was unparsable when read leniently; overwriting it would lose its content.
    #[error("refusing to overwrite {}: it could not be parsed when it was read, and writing now would lose its \
             content. Fix or move the file first.", file.display())]
    RefuseOverwrite {
        /// The file.
        file: PathBuf,
    },
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] parachute_fsx::Error),
}

#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Row(ServiceRow),
    /// A row the lenient reader could not use: kept verbatim for the next write.
    Held(Value),
}

impl Entry {
    fn name(&self) -> Option<&str> {
        match self {
            Entry::Row(r) => Some(r.name()),
            Entry::Held(v) => v.get("name").and_then(Value::as_str),
        }
    }
}

/// The registry as read, ready to be queried, edited and written.
#[derive(Debug, Clone, PartialEq)]
pub struct ServicesFile {
    top: Map<String, Value>,
    entries: Vec<Entry>,
    /// Set when the lenient reader found an unparsable file: `write` refuses.
    unparsable: Option<PathBuf>,
}

impl Default for ServicesFile {
    fn default() -> Self {
        ServicesFile::empty()
    }
}

/// A successful read: the file and what the caller should log.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The registry.
    pub file: ServicesFile,
    /// Dropped rows (both readers) and skipped rows / unreadable file (lenient reader).
    pub warnings: Vec<Issue>,
}

/// What [`ServicesFile::upsert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    /// A new row was appended.
    Inserted,
    /// The row with that name was replaced in place.
    Replaced,
    /// The row with that name already held exactly this content.
    Unchanged,
}

struct Ctx<'a> {
    file: &'a Path,
    issues: Vec<Issue>,
}

impl Ctx<'_> {
    fn push(&mut self, kind: IssueKind, index: usize, row: &Value, field: Option<String>, message: String) {
        let name = row.get("name").and_then(Value::as_str).map(str::to_owned);
        self.issues.push(Issue {
            kind,
            file: self.file.to_path_buf(),
            index: Some(index),
            name,
            field,
            message,
        });
    }
}

/// Why the pipeline drops a raw row (steps 1–3), if it does.
fn drop_reason(long_names: &HashMap<&str, Vec<Option<&Value>>>, row: &Value) -> Option<String> {
    let name = row.get("name").and_then(Value::as_str)?;
    let paths: Vec<&str> = row
        .get("paths")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mounted_at = |p: &str| paths.iter().any(|x| *x == p || x.starts_with(&format!("{p}/")));
    let port = row.get("port");
    if (name == "app" || name == "parachute-app")
        && !mounted_at("/app")
        && (paths.first().is_some_and(|p| p.starts_with("/surface"))
            || port.and_then(Value::as_u64) == Some(1946))
    {
        return Some("a stale pre-rename UI-host row (now surface); dropped".to_owned());
    }
    if ["agent", "channel", "parachute-agent", "parachute-channel"].contains(&name)
        || (name == "claw" && mounted_at("/claw"))
    {
        return Some("a retired module's row; dropped".to_owned());
    }
    if !name.starts_with("parachute-") {
        let long = format!("parachute-{name}");
        if long_names.get(long.as_str()).is_some_and(|ports| ports.contains(&port)) {
            return Some(format!("a short-named duplicate of {long:?} on the same port; dropped"));
        }
    }
    None
}

/// A UTF-8 byte-order mark (written by some Windows editors) is not JSON, but it is
/// unambiguous: it is dropped rather than making the whole registry unreadable.
fn without_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

impl ServicesFile {
    /// An empty registry (`{"services": []}`).
    pub fn empty() -> ServicesFile {
        let mut top = Map::new();
        top.insert("services".to_owned(), Value::Array(Vec::new()));
        ServicesFile { top, entries: Vec::new(), unparsable: None }
    }

    /// Reads `path` strictly: every problem is collected and returned as one error. A missing
    /// file is an empty registry. The file is never written.
    pub fn read_strict(path: &Path) -> Result<Loaded, ServicesError> {
        match parachute_fsx::read_capped(path, parachute_fsx::MAX_STATE_FILE) {
            Ok(bytes) => ServicesFile::parse_strict(&bytes, path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Ok(Loaded { file: ServicesFile::empty(), warnings: vec![] })
            }
            Err(source) => Err(ServicesError::Read { file: path.to_path_buf(), source }),
        }
    }

    /// Reads `path` leniently: never fails (see the module doc). The file is never written.
    pub fn read_lenient(path: &Path) -> Loaded {
        match parachute_fsx::read_capped(path, parachute_fsx::MAX_STATE_FILE) {
            Ok(bytes) => ServicesFile::parse_lenient(&bytes, path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Loaded { file: ServicesFile::empty(), warnings: vec![] }
            }
            Err(e) => {
                let issue = Issue {
                    kind: IssueKind::Unreadable,
                    file: path.to_path_buf(),
                    index: None,
                    name: None,
                    field: None,
                    message: format!("cannot be read ({e}); treated as empty"),
                };
                let mut file = ServicesFile::empty();
                file.unparsable = Some(path.to_path_buf());
                Loaded { file, warnings: vec![issue] }
            }
        }
    }

    /// [`read_strict`](Self::read_strict) on bytes; `path` names the file in messages.
    pub fn parse_strict(bytes: &[u8], path: &Path) -> Result<Loaded, ServicesError> {
        let bytes = without_bom(bytes);
        let value: Value = serde_json::from_slice(bytes).map_err(|e| ServicesError::Malformed {
            file: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: strip_position(&e),
        })?;
        let (file, warnings, problems) = ServicesFile::build(value, path, false);
        if problems.is_empty() {
            Ok(Loaded { file, warnings })
        } else {
            Err(ServicesError::Invalid { file: path.to_path_buf(), problems })
        }
    }

    /// [`read_lenient`](Self::read_lenient) on bytes.
    pub fn parse_lenient(bytes: &[u8], path: &Path) -> Loaded {
        let bytes = without_bom(bytes);
        let value: Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                let issue = Issue {
                    kind: IssueKind::Unparsable,
                    file: path.to_path_buf(),
                    index: None,
                    name: None,
                    field: None,
                    message: format!(
                        "is not valid JSON ({} at line {} column {}); treated as empty and will not be overwritten: \
                         fix that line, then start the modules (`parachute start`) or restart the hub",
                        strip_position(&e),
                        e.line(),
                        e.column()
                    ),
                };
                let mut file = ServicesFile::empty();
                file.unparsable = Some(path.to_path_buf());
                return Loaded { file, warnings: vec![issue] };
            }
        };
        let (file, mut warnings, problems) = ServicesFile::build(value, path, true);
        warnings.extend(problems);
        Loaded { file, warnings }
    }

    /// The shared pipeline. Returns (file, warnings, problems); in lenient mode problem rows
    /// are held and the problems are meant as warnings.
    fn build(value: Value, path: &Path, lenient: bool) -> (ServicesFile, Vec<Issue>, Vec<Issue>) {
        let mut warn = Ctx { file: path, issues: vec![] };
        let mut bad = Ctx { file: path, issues: vec![] };
        let top_issue = |message: String| Issue {
            kind: if lenient { IssueKind::Unparsable } else { IssueKind::Invalid },
            file: path.to_path_buf(),
            index: None,
            name: None,
            field: Some("services".to_owned()),
            message,
        };
        let Value::Object(mut top) = value else {
            let mut file = ServicesFile::empty();
            file.unparsable = Some(path.to_path_buf());
            let msg =
                format!("the top level must be an object with a \"services\" array, got {}", show(&value));
            return (file, vec![], vec![top_issue(msg)]);
        };
        let rows = match top.get_mut("services") {
            None => {
                top.insert("services".to_owned(), Value::Array(vec![]));
                vec![]
            }
            Some(Value::Array(a)) => std::mem::take(a),
            Some(other) => {
                let msg = format!("must be an array of rows, got {}", show(other));
                let mut file = ServicesFile::empty();
                file.unparsable = Some(path.to_path_buf());
                return (file, vec![], vec![top_issue(msg)]);
            }
        };
        let mut entries: Vec<Entry> = Vec::with_capacity(rows.len());
        // Lookups by name and port instead of scans of every earlier row: a 10,000-row file
        // must not cost 10^8 comparisons (each a JSON map lookup).
        let mut long_names: HashMap<&str, Vec<Option<&Value>>> = HashMap::new();
        for r in &rows {
            if let Some(n) = r.get("name").and_then(Value::as_str).filter(|n| n.starts_with("parachute-")) {
                long_names.entry(n).or_default().push(r.get("port"));
            }
        }
        // Accepted rows so far: name → position, port → (position, name) in order.
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut by_port: HashMap<u16, Vec<(usize, String)>> = HashMap::new();
        for (index, raw) in rows.iter().enumerate() {
            if let Some(reason) = drop_reason(&long_names, raw) {
                warn.push(IssueKind::Dropped, index, raw, None, reason);
                continue;
            }
            let problems = check_row(raw);
            if !problems.is_empty() {
                for p in problems {
                    let msg = if lenient { format!("{}; row skipped", p.message) } else { p.message };
                    bad.push(IssueKind::Invalid, index, raw, p.field, msg);
                }
                entries.push(Entry::Held(raw.clone()));
                continue;
            }
            let row = ServiceRow::from_value(raw.clone()).expect("checked above");
            // The earliest accepted row that repeats the name, or shares the port (vault rows
            // may share one), decides which collision is reported.
            let same_name = by_name.get(row.name()).copied();
            let same_port = by_port.get(&row.port()).and_then(|v| {
                v.iter().find(|(_, n)| !(is_vault_row(n) && is_vault_row(row.name()))).cloned()
            });
            let mut collided = true;
            match (same_name, same_port) {
                (Some(n), p) if p.as_ref().is_none_or(|(pi, _)| n < *pi) => {
                    bad.push(
                        IssueKind::DuplicateName,
                        index,
                        raw,
                        Some("name".into()),
                        format!(
                            "repeats the name of an earlier row{}",
                            if lenient { "; row skipped" } else { "" }
                        ),
                    );
                }
                (_, Some((_, earlier))) => {
                    bad.push(
                        IssueKind::PortCollision,
                        index,
                        raw,
                        Some("port".into()),
                        format!(
                            "port {} is already used by {:?}; only vault rows may share a port{}",
                            row.port(),
                            earlier,
                            if lenient { "; row skipped" } else { "" }
                        ),
                    );
                }
                _ => collided = false,
            }
            if !collided {
                by_name.insert(row.name().to_owned(), entries.len());
                by_port.entry(row.port()).or_default().push((entries.len(), row.name().to_owned()));
            }
            entries.push(if collided { Entry::Held(raw.clone()) } else { Entry::Row(row) });
        }
        (ServicesFile { top, entries, unparsable: None }, warn.issues, bad.issues)
    }

    /// The usable rows, in file order.
    pub fn rows(&self) -> impl Iterator<Item = &ServiceRow> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Row(r) => Some(r),
            Entry::Held(_) => None,
        })
    }

    /// The usable row named `name`.
    pub fn get(&self, name: &str) -> Option<&ServiceRow> {
        self.rows().find(|r| r.name() == name)
    }

    /// The usable row supervised under `short` (`vault` finds `parachute-vault`).
    pub fn get_by_short(&self, short: &str) -> Option<&ServiceRow> {
        self.rows().find(|r| names::short_name_for(r.name()) == short)
    }

    /// Adds `row`, or replaces the entry with its name in place. Refuses a port another row
    /// holds (unless both are vault rows).
    pub fn upsert(&mut self, row: ServiceRow) -> Result<Upserted, ServicesError> {
        if let Some(holder) = self.rows().find(|r| {
            r.name() != row.name()
                && r.port() == row.port()
                && !(is_vault_row(r.name()) && is_vault_row(row.name()))
        }) {
            return Err(ServicesError::PortCollision {
                name: row.name().to_owned(),
                port: row.port(),
                holder: holder.name().to_owned(),
            });
        }
        let name = row.name().to_owned();
        let Some(at) = self.entries.iter().position(|e| e.name() == Some(&name)) else {
            self.entries.push(Entry::Row(row));
            return Ok(Upserted::Inserted);
        };
        let unchanged = self.entries[at] == Entry::Row(row.clone());
        self.entries[at] = Entry::Row(row);
        // Later entries with the same name (held duplicates) are superseded by this row.
        let mut position = 0;
        self.entries.retain(|e| {
            let keep = position <= at || e.name() != Some(&name);
            position += 1;
            keep
        });
        Ok(if unchanged { Upserted::Unchanged } else { Upserted::Replaced })
    }

    /// Removes every entry named `name`; returns whether one existed.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.name() != Some(name));
        self.entries.len() != before
    }

    /// The file's bytes: 2-space pretty JSON and a trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut top = self.top.clone();
        let rows = self
            .entries
            .iter()
            .map(|e| match e {
                Entry::Row(r) => r.to_value(),
                Entry::Held(v) => v.clone(),
            })
            .collect();
        top.insert("services".to_owned(), Value::Array(rows));
        let mut out = serde_json::to_vec_pretty(&Value::Object(top)).expect("a JSON value always serializes");
        out.push(b'\n');
        out
    }

    /// Writes the file atomically (unchanged content is not rewritten).
    pub fn write(&self, path: &Path) -> Result<parachute_fsx::Written, ServicesError> {
        if let Some(file) = &self.unparsable {
            return Err(ServicesError::RefuseOverwrite { file: file.clone() });
        }
        Ok(parachute_fsx::write_atomic(path, &self.to_bytes())?)
    }

    /// Moves every fixed-port first-party row that drifted off its canonical port back onto
    /// it, in memory and in file order (upstream channel#41). Returns one decision per row
    /// that has a canonical port; the caller logs them and writes the file if any is
    /// [`PortDecision::Reconciled`]. When the write fails the in-memory ports still stand,
    /// so the module is spawned on its canonical port anyway.
    pub fn reconcile_ports(&mut self) -> Vec<PortDecision> {
        let mut out = Vec::new();
        for i in 0..self.entries.len() {
            let Entry::Row(row) = &self.entries[i] else { continue };
            let decision = reconcile_port(self, row);
            if let PortDecision::Reconciled { to, .. } = &decision
                && let Entry::Row(row) = &mut self.entries[i]
            {
                row.set_port(*to).expect("a canonical port is a valid port");
            }
            if !matches!(decision, PortDecision::NotFixedPort) {
                out.push(decision);
            }
        }
        out
    }
}

/// The outcome of checking one row against its canonical port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortDecision {
    /// Not a fixed-port first-party module (third-party, multi-vault, the hub): left alone.
    NotFixedPort,
    /// Already on its canonical port.
    Canonical {
        /// The row.
        name: String,
        /// The port.
        port: u16,
    },
    /// Drifted, and the canonical port is free: move it.
    Reconciled {
        /// The row.
        name: String,
        /// The drifted port.
        from: u16,
        /// The canonical port.
        to: u16,
        /// The line to log.
        log: String,
    },
    /// Drifted, but another row holds the canonical port: keep the drift and surface it.
    HeldByOther {
        /// The row.
        name: String,
        /// The drifted port, which stays.
        port: u16,
        /// The canonical port.
        canonical: u16,
        /// The row holding the canonical port.
        holder: String,
        /// The line to log.
        log: String,
    },
}

/// Decides, without changing anything, whether `row` should move to its canonical port.
pub fn reconcile_port(file: &ServicesFile, row: &ServiceRow) -> PortDecision {
    let short = names::short_name_for(row.name());
    let Some(canonical) = names::canonical_port(&short).filter(|_| short != "hub") else {
        return PortDecision::NotFixedPort;
    };
    let name = row.name().to_owned();
    let from = row.port();
    if from == canonical {
        return PortDecision::Canonical { name, port: from };
    }
    if let Some(holder) = file.rows().find(|r| r.name() != name && r.port() == canonical) {
        let holder = holder.name().to_owned();
        let log = format!(
            "{name}: services.json port {from} ≠ canonical {canonical}, but {canonical} is held by \
             another row ({holder:?}) — not reconciling; surfacing the drift."
        );
        return PortDecision::HeldByOther { name, port: from, canonical, holder, log };
    }
    let log =
        format!("{name}: reconciled drifted services.json port {from} → canonical {canonical} (channel#41).");
    PortDecision::Reconciled { name, from, to: canonical, log }
}

/// serde_json's message without its own " at line L column C" suffix (we add ours).
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

#[cfg(test)]
#[path = "services_tests.rs"]
mod tests;
