//! One services.json row: the JSON object exactly as read, plus typed accessors.
//!
//! A row is kept as its `serde_json::Map` (insertion order preserved) rather than as a
//! struct, so fields this version does not know — added by a newer hub or by hand — are
//! written back untouched, in their place (the file round-trips byte for byte). A
//! [`ServiceRow`] can only be built from a map that passed [`check_row`], and every setter
//! re-checks, so the typed accessors never meet a wrong type.
//!
//! Rules (upstream §7.2): `name` non-empty string, `port` integer 1..65535, `paths` array
//! of strings, `health` string starting with `/`, `version` string; optional
//! `displayName`/`tagline` strings, `publicExposure` one of `allowed|loopback|auth-required`,
//! `installDir` non-empty string, `stripPrefix`/`websocket` booleans, `uis` a map of UI
//! objects. `lastStartError` is status written by the hub and is kept as it is without
//! being checked (upstream silently drops a malformed one; a status field is no reason to
//! refuse a module).

use std::path::Path;

use serde_json::{Map, Value};

/// One problem with one field of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// The field (`port`, `uis.admin.path`); `None` when the row itself is wrong.
    pub field: Option<String>,
    /// What is wrong, as a sentence fragment.
    pub message: String,
}

/// A valid services.json row.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRow {
    map: Map<String, Value>,
}

/// `publicExposure` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicExposure {
    /// `allowed`
    Allowed,
    /// `loopback`
    Loopback,
    /// `auth-required`
    AuthRequired,
}

fn problem(field: &str, message: impl Into<String>) -> FieldProblem {
    FieldProblem { field: Some(field.to_owned()), message: message.into() }
}

/// A short, escaped rendering of a JSON value for messages.
pub(crate) fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 { format!("{}…", s.chars().take(60).collect::<String>()) } else { s }
}

fn want_string(
    m: &Map<String, Value>,
    f: &str,
    required: bool,
    out: &mut Vec<FieldProblem>,
) -> Option<String> {
    match m.get(f) {
        None if required => out.push(problem(f, "is required (a string)")),
        None => {}
        Some(Value::String(s)) => return Some(s.clone()),
        Some(v) => out.push(problem(f, format!("must be a string, got {}", show(v)))),
    }
    None
}

fn want_bool(m: &Map<String, Value>, f: &str, out: &mut Vec<FieldProblem>) {
    if let Some(v) = m.get(f).filter(|v| !v.is_boolean()) {
        out.push(problem(f, format!("must be true or false, got {}", show(v))));
    }
}

fn want_one_of(m: &Map<String, Value>, f: &str, allowed: &[&str], out: &mut Vec<FieldProblem>) {
    if let Some(s) = want_string(m, f, false, out)
        && !allowed.contains(&s.as_str())
    {
        out.push(problem(f, format!("must be one of {}, got {s:?}", allowed.join(", "))));
    }
}

/// Checks a row; returns every problem found (empty = valid).
pub fn check_row(v: &Value) -> Vec<FieldProblem> {
    let Value::Object(m) = v else {
        return vec![FieldProblem { field: None, message: format!("must be an object, got {}", show(v)) }];
    };
    let mut out = Vec::new();
    if let Some(name) = want_string(m, "name", true, &mut out)
        && name.is_empty()
    {
        out.push(problem("name", "must not be empty"));
    }
    match m.get("port") {
        None => out.push(problem("port", "is required (an integer 1..65535)")),
        Some(v) if v.as_u64().is_some_and(|p| (1..=65535).contains(&p)) => {}
        Some(v) => out.push(problem("port", format!("must be an integer 1..65535, got {}", show(v)))),
    }
    match m.get("paths") {
        None => out.push(problem("paths", "is required (an array of strings)")),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        Some(v) => out.push(problem("paths", format!("must be an array of strings, got {}", show(v)))),
    }
    if let Some(h) = want_string(m, "health", true, &mut out)
        && !h.starts_with('/')
    {
        out.push(problem("health", format!("must start with '/', got {h:?}")));
    }
    want_string(m, "version", true, &mut out);
    want_string(m, "displayName", false, &mut out);
    want_string(m, "tagline", false, &mut out);
    want_one_of(m, "publicExposure", &["allowed", "loopback", "auth-required"], &mut out);
    if let Some(d) = want_string(m, "installDir", false, &mut out)
        && d.is_empty()
    {
        out.push(problem("installDir", "must not be empty when present"));
    }
    want_bool(m, "stripPrefix", &mut out);
    want_bool(m, "websocket", &mut out);
    if let Some(uis) = m.get("uis") {
        check_uis(uis, &mut out);
    }
    out
}

fn check_uis(uis: &Value, out: &mut Vec<FieldProblem>) {
    let Value::Object(uis) = uis else {
        out.push(problem("uis", format!("must be an object of UIs, got {}", show(uis))));
        return;
    };
    for (slug, ui) in uis {
        let at = |f: &str| format!("uis.{slug}.{f}");
        let Value::Object(u) = ui else {
            out.push(problem(&format!("uis.{slug}"), format!("must be an object, got {}", show(ui))));
            continue;
        };
        let mut inner = Vec::new();
        want_string(u, "displayName", true, &mut inner);
        if let Some(p) = want_string(u, "path", true, &mut inner)
            && !p.starts_with('/')
        {
            inner.push(problem("path", format!("must start with '/', got {p:?}")));
        }
        for f in ["tagline", "iconUrl", "version", "oauthClientId"] {
            want_string(u, f, false, &mut inner);
        }
        want_one_of(
            u,
            "status",
            &["active", "pending", "inactive", "failing", "pending-oauth", "disabled"],
            &mut inner,
        );
        match u.get("audience") {
            None | Some(Value::Bool(_)) => {}
            Some(Value::String(s))
                if ["public", "hub-users", "operator", "surface"].contains(&s.as_str()) => {}
            Some(v) => inner.push(problem(
                "audience",
                format!("must be public, hub-users, operator, surface or a boolean, got {}", show(v)),
            )),
        }
        match u.get("scopes_required") {
            None => {}
            Some(Value::Array(a)) if a.iter().all(|s| s.as_str().is_some_and(|s| !s.is_empty())) => {}
            Some(v) => inner.push(problem(
                "scopes_required",
                format!("must be an array of non-empty strings, got {}", show(v)),
            )),
        }
        out.extend(
            inner.into_iter().map(|p| FieldProblem { field: p.field.map(|f| at(&f)), message: p.message }),
        );
    }
}

impl ServiceRow {
    /// Wraps a JSON value after checking it.
    pub fn from_value(v: Value) -> Result<ServiceRow, Vec<FieldProblem>> {
        let problems = check_row(&v);
        match v {
            Value::Object(map) if problems.is_empty() => Ok(ServiceRow { map }),
            _ => Err(problems),
        }
    }

    /// A row with the five required fields.
    pub fn new(
        name: &str,
        port: u16,
        paths: &[&str],
        health: &str,
        version: &str,
    ) -> Result<ServiceRow, Vec<FieldProblem>> {
        ServiceRow::from_value(serde_json::json!({
            "name": name, "port": port, "paths": paths, "health": health, "version": version,
        }))
    }

    /// Sets (or adds, at the end) a field, keeping the row valid: on a problem nothing changes.
    pub fn set(&mut self, field: &str, value: Value) -> Result<(), Vec<FieldProblem>> {
        let mut next = self.map.clone();
        next.insert(field.to_owned(), value);
        let next = Value::Object(next);
        let problems = check_row(&next);
        if !problems.is_empty() {
            return Err(problems);
        }
        let Value::Object(map) = next else { unreachable!("built as an object above") };
        self.map = map;
        Ok(())
    }

    /// Sets the port (0 is refused).
    pub fn set_port(&mut self, port: u16) -> Result<(), Vec<FieldProblem>> {
        self.set("port", Value::from(port))
    }

    /// Removes an optional field; required fields cannot be removed.
    pub fn remove(&mut self, field: &str) -> Result<Option<Value>, Vec<FieldProblem>> {
        if ["name", "port", "paths", "health", "version"].contains(&field) {
            return Err(vec![problem(field, "is required and cannot be removed")]);
        }
        Ok(self.map.shift_remove(field))
    }

    fn str_field(&self, f: &str) -> Option<&str> {
        self.map.get(f).and_then(Value::as_str)
    }

    /// `name`: the manifest name.
    pub fn name(&self) -> &str {
        self.str_field("name").unwrap_or_default()
    }

    /// `port`.
    pub fn port(&self) -> u16 {
        self.map.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()).unwrap_or_default()
    }

    /// `paths`: the mount paths.
    pub fn paths(&self) -> Vec<&str> {
        self.map
            .get("paths")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// `health`: the health path.
    pub fn health(&self) -> &str {
        self.str_field("health").unwrap_or_default()
    }

    /// `version`.
    pub fn version(&self) -> &str {
        self.str_field("version").unwrap_or_default()
    }

    /// `displayName`.
    pub fn display_name(&self) -> Option<&str> {
        self.str_field("displayName")
    }

    /// `tagline`.
    pub fn tagline(&self) -> Option<&str> {
        self.str_field("tagline")
    }

    /// `installDir`: the package directory (child cwd, home of `.parachute/module.json`).
    pub fn install_dir(&self) -> Option<&Path> {
        self.str_field("installDir").map(Path::new)
    }

    /// `publicExposure`.
    pub fn public_exposure(&self) -> Option<PublicExposure> {
        match self.str_field("publicExposure")? {
            "allowed" => Some(PublicExposure::Allowed),
            "loopback" => Some(PublicExposure::Loopback),
            "auth-required" => Some(PublicExposure::AuthRequired),
            _ => None,
        }
    }

    /// `stripPrefix`.
    pub fn strip_prefix(&self) -> Option<bool> {
        self.map.get("stripPrefix").and_then(Value::as_bool)
    }

    /// `websocket`.
    pub fn websocket(&self) -> Option<bool> {
        self.map.get("websocket").and_then(Value::as_bool)
    }

    /// Any field, raw (`uis`, `lastStartError`, unknown fields).
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field)
    }

    /// The whole row as read (and as it will be written).
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// The row as a JSON value.
    pub fn to_value(&self) -> Value {
        Value::Object(self.map.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Vec<String> {
        check_row(&v).into_iter().map(|p| p.field.unwrap_or_default()).collect()
    }

    #[test]
    fn a_minimal_row_is_valid_and_typed() {
        let r = ServiceRow::new("parachute-vault", 1940, &["/vault/default"], "/health", "0.5.3").unwrap();
        assert_eq!(
            (r.name(), r.port(), r.paths(), r.health(), r.version()),
            ("parachute-vault", 1940, vec!["/vault/default"], "/health", "0.5.3")
        );
        assert_eq!(r.install_dir(), None);
    }

    #[test]
    fn every_required_field_is_reported_at_once() {
        assert_eq!(fields(json!({})), ["name", "port", "paths", "health", "version"]);
        assert_eq!(
            fields(json!({"name": "", "port": 0, "paths": ["/a", 1], "health": "health", "version": 3})),
            ["name", "port", "paths", "health", "version"]
        );
        assert_eq!(fields(json!([1])), [""]);
    }

    #[test]
    fn port_bounds_and_types() {
        let base = |p: Value| json!({"name": "x", "port": p, "paths": [], "health": "/h", "version": "1"});
        assert!(check_row(&base(json!(1))).is_empty());
        assert!(check_row(&base(json!(65535))).is_empty());
        for bad in
            [json!(0), json!(65536), json!(-1), json!(1940.5), json!(1940.0), json!("1940"), json!(null)]
        {
            assert_eq!(fields(base(bad.clone())), ["port"], "{bad}");
        }
    }

    #[test]
    fn optional_fields_are_typed() {
        let v = json!({"name": "x", "port": 1, "paths": [], "health": "/h", "version": "1",
            "displayName": 1, "tagline": null, "publicExposure": "public", "installDir": "",
            "stripPrefix": "yes", "websocket": 0});
        assert_eq!(
            fields(v),
            ["displayName", "tagline", "publicExposure", "installDir", "stripPrefix", "websocket"]
        );
    }

    #[test]
    fn uis_are_checked_with_dotted_field_names_and_last_start_error_is_opaque() {
        let v = json!({"name": "x", "port": 1, "paths": [], "health": "/h", "version": "1",
            "uis": {"admin": {"displayName": "A", "path": "admin", "status": "weird", "audience": true,
                              "scopes_required": [""]},
                    "ok": {"displayName": "B", "path": "/b", "audience": "hub-users", "status": "pending-oauth"}},
            "lastStartError": "not even an object"});
        assert_eq!(fields(v), ["uis.admin.path", "uis.admin.status", "uis.admin.scopes_required"]);
    }

    #[test]
    fn setters_keep_the_row_valid_and_unknown_fields_in_place() {
        let mut r = ServiceRow::from_value(json!({"name": "x", "zeta": {"a": 1}, "port": 5, "paths": [],
            "health": "/h", "version": "1"}))
        .unwrap();
        r.set_port(6).unwrap();
        assert!(r.set_port(0).is_err());
        assert!(r.set("health", json!("nope")).is_err());
        assert_eq!(r.port(), 6);
        assert_eq!(
            r.as_map().keys().collect::<Vec<_>>(),
            ["name", "zeta", "port", "paths", "health", "version"]
        );
        assert!(r.remove("port").is_err());
        r.set("installDir", json!("/opt/x")).unwrap();
        assert_eq!(r.install_dir(), Some(Path::new("/opt/x")));
        assert_eq!(r.remove("installDir").unwrap(), Some(json!("/opt/x")));
    }
}
