//! The control API's contracts, against a real `parachute serve` (issue 15):
//!
//! * upstream's wire contract: every field the upstream hub's clients read
//!   (`supervisor_status`, `supervisor_start_error.error_type`, `supervised[]`,
//!   `supervisor_available`, `/api/ready`, `/health`'s `service`/`version`/`db`,
//!   `missing_dependency`'s install card) is there with the right value for a running, a
//!   crashed, an unbound and a missing-dependency module; before, upstream's CLI showed
//!   this hub's running modules as *inactive*;
//! * docs/api.schema.json: every real answer (each route, each error) validates against
//!   its documented definition, with no undocumented field, and docs/api.md names every
//!   route and field.

use std::io::BufRead;

use serde_json::Value;

use crate::support::free_port;
use crate::support::hub::{Serve, TestHome, http_stream};

/// The schema file's definitions, compiled once per call (cheap: one small file).
struct Schema {
    schemas: boon::Schemas,
    compiler: boon::Compiler,
}

const SCHEMA_URL: &str = "https://parachute.invalid/api.schema.json";

fn schema_json() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("docs/api.schema.json is JSON")
}

impl Schema {
    fn load() -> Schema {
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        compiler.add_resource(SCHEMA_URL, schema_json()).unwrap();
        Schema { schemas: boon::Schemas::new(), compiler }
    }

    fn validate(&mut self, def: &str, value: &Value) -> Result<(), String> {
        let idx = self
            .compiler
            .compile(&format!("{SCHEMA_URL}#/$defs/{def}"), &mut self.schemas)
            .unwrap_or_else(|e| panic!("docs/api.schema.json has no usable $defs/{def}: {e:#}"));
        self.schemas.validate(value, idx).map_err(|e| format!("{e:#}"))
    }

    /// Panics, naming the definition and every violation, unless `value` is a `def`.
    fn check(&mut self, def: &str, what: &str, value: &Value) {
        if let Err(e) = self.validate(def, value) {
            panic!(
                "{what} does not match docs/api.schema.json#/$defs/{def} (a new field must be documented \
                 there and in docs/api.md):\n{e}\n{value:#}"
            );
        }
    }
}

fn get(s: &Serve, path: &str, token: Option<&str>) -> (u16, Value) {
    let (st, body) = s.http("GET", path, token);
    (st, serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body:?}")))
}

fn send(s: &Serve, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let (st, body) = s.http(method, path, token);
    (st, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body:?}")))
}

/// A hub whose services.json lists, in this order: `mute` (runs, never binds its port),
/// `crashy` (exits at once, gives up), `alpha` (runs and listens), `nodep` (an unknown
/// binary) and `novault` (`parachute-vault`, which the install registry knows). Returns
/// once boot is done and `crashy` has given up.
fn every_kind_of_module() -> (TestHome, Serve) {
    let h = TestHome::new();
    h.fixture("mute", free_port(), &["--no-listen"]);
    h.fixture("crashy", free_port(), &["--exit-after-ms", "0", "--exit-code", "3", "--no-listen"]);
    h.fixture("alpha", free_port(), &[]);
    h.module("nodep", free_port(), &["parachute-definitely-missing".into()]);
    h.module("novault", free_port(), &["parachute-vault".into()]);
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("boot", |l| l.contains("boot done"));
    s.wait_state(&h, "crashy", "crashy to give up", |v| v["status"] == "crashed");
    (h, s)
}

/// How upstream's `parachute status` turns a module's supervisor status into its column
/// (docs/api.md, "Upstream clients"): it looks the module up in `modules[]`, then in
/// `supervised[]`, and reads `supervisor_status`; absent or unknown is `inactive`.
fn upstream_status_column(list: &Value, short: &str) -> &'static str {
    let find = |key: &str| list[key].as_array().and_then(|a| a.iter().find(|m| m["short"] == short).cloned());
    let status = find("modules").or_else(|| find("supervised")).map(|m| m["supervisor_status"].clone());
    match status.as_ref().and_then(Value::as_str) {
        Some("running") => "active",
        Some("crashed") => "failing",
        Some("starting" | "restarting") => "pending",
        _ => "inactive",
    }
}

#[test]
fn upstream_clients_read_running_crashed_unbound_and_missing_modules_right() {
    let (h, s) = every_kind_of_module();
    let token = h.token();

    let (st, list) = get(&s, "/api/modules", Some(&token));
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["supervisor_available"], true, "{list}");
    let shorts = |key: &str| -> Vec<String> {
        list[key].as_array().unwrap().iter().map(|m| m["short"].as_str().unwrap().to_owned()).collect()
    };
    let order = ["mute", "crashy", "alpha", "nodep", "novault"];
    assert_eq!(shorts("modules"), order, "modules[] in services.json order");
    assert_eq!(shorts("supervised"), order, "supervised[] in services.json order");
    let row = |short: &str| list["modules"].as_array().unwrap().iter().find(|m| m["short"] == short).unwrap();
    let sup =
        |short: &str| list["supervised"].as_array().unwrap().iter().find(|m| m["short"] == short).unwrap();

    // Running and listening.
    let alpha = row("alpha");
    assert_eq!(alpha["supervisor_status"], "running", "{alpha}");
    assert!(alpha["supervisor_start_error"].is_null(), "{alpha}");
    assert!(alpha["pid"].as_u64().is_some_and(|p| p > 1), "{alpha}");
    assert_eq!(
        (&alpha["installed"], &alpha["installed_version"]),
        (&Value::Bool(true), &Value::from("1.0.0"))
    );
    assert_eq!(upstream_status_column(&list, "alpha"), "active");

    // Crashed: the crash budget is spent; no child, no start error.
    let crashy = row("crashy");
    assert_eq!(crashy["supervisor_status"], "crashed", "{crashy}");
    assert!(crashy["supervisor_start_error"].is_null(), "{crashy}");
    assert!(crashy["pid"].is_null() && crashy.as_object().unwrap().contains_key("pid"), "pid: null {crashy}");
    assert_eq!(upstream_status_column(&list, "crashy"), "failing");

    // Unbound: alive (running) but its port never answered.
    let mute = row("mute");
    assert_eq!(mute["supervisor_status"], "running", "{mute}");
    assert_eq!(mute["supervisor_start_error"]["error_type"], "started_but_unbound", "{mute}");
    assert!(mute["pid"].as_u64().is_some(), "{mute}");
    assert_eq!(upstream_status_column(&list, "mute"), "active");

    // Missing dependency: crashed, with upstream's install card.
    let nodep = row("nodep");
    assert_eq!(nodep["supervisor_status"], "crashed", "{nodep}");
    let e = &nodep["supervisor_start_error"];
    assert_eq!(e["error_type"], "missing_dependency", "{nodep}");
    assert_eq!(e["binary"], "parachute-definitely-missing");
    assert!(e["why"].is_null() && e["docs_url"].is_null(), "unregistered: {e}");
    assert_eq!(e["install"], serde_json::json!({}), "{e}");
    assert_eq!(e["sysadmin_hint"], "Or ask your system administrator to install it for you.");
    assert!(e["error_description"].as_str().unwrap().contains("was not found on PATH"), "{e}");
    let e = &row("novault")["supervisor_start_error"];
    assert_eq!(e["error_type"], "missing_dependency", "{e}");
    assert_eq!(e["why"], "run the vault module", "{e}");
    assert_eq!(e["install"]["generic"], "bun add -g @openparachute/vault", "{e}");
    assert!(e["error_description"].as_str().unwrap().contains("Install it: bun add -g @openparachute/vault"));

    // supervised[] carries the same facts under the same names.
    for short in order {
        let (r, u) = (row(short), sup(short));
        for key in ["supervisor_status", "pid", "supervisor_start_error"] {
            assert_eq!(r[key], u[key], "{short}.{key}");
        }
        // And our own names still say the same (the CLI reads those).
        assert_eq!(r["status"], r["supervisor_status"], "{short}");
        assert_eq!(
            r.get("startError").cloned().unwrap_or(Value::Null),
            r["supervisor_start_error"],
            "{short}"
        );
    }

    // /api/ready: open, upstream's buckets.
    let (st, ready) = get(&s, "/api/ready", None);
    assert_eq!(st, 200, "{ready}");
    assert_eq!(ready["ready"], false, "{ready}");
    assert_eq!(ready["ready_modules"], serde_json::json!(["alpha"]), "{ready}");
    assert_eq!(ready["transient_modules"], serde_json::json!(["mute"]), "unbound is not ready yet: {ready}");
    assert_eq!(ready["persistent_modules"], serde_json::json!(["crashy", "nodep", "novault"]), "{ready}");
    let (st, _) = s.http("HEAD", "/api/ready", None);
    assert_eq!(st, 200, "HEAD is allowed");

    // /health: upstream's fields with upstream's meaning.
    let (st, health) = get(&s, "/health", None);
    assert_eq!(st, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["service"], "parachute-hub");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"), "this hub's own version");
    // The running image's build id (ours; not upstream's): what tells builds apart across an
    // in-place upgrade, which keeps pid and nonce.
    #[cfg(target_os = "linux")]
    assert!(health["buildId"].as_str().is_some_and(|id| id.len() >= 16), "{health}");
    assert_eq!(health["db"], "unconfigured", "no database, and not a fault: {health}");
    assert!(!health["db"].as_str().unwrap().starts_with("error:"));
    assert_eq!(health["instance"], h.instance().unwrap()["instance"], "the nonce of hub-instance.json");
}

/// The list stays in services.json order when a module is started later: a row added at
/// the top and started through the API is listed first (the supervisor's own order is
/// the order modules were first started, which put it last).
#[test]
fn modules_are_listed_in_services_json_order_whenever_they_started() {
    let h = TestHome::new();
    h.fixture("alpha", free_port(), &[]);
    let s = Serve::ready(&h, free_port(), &[]);
    s.wait_err("boot", |l| l.contains("boot done"));
    let path = h.home().join("services.json");
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut late = file["services"][0].clone();
    let install = h.scratch("late");
    std::fs::create_dir_all(install.join(".parachute")).unwrap();
    let port = free_port();
    let cmd = [crate::support::fixture_bin().to_str().unwrap().to_owned(), "--port".into(), port.to_string()];
    std::fs::write(
        install.join(".parachute/module.json"),
        serde_json::json!({"name": "late", "startCmd": cmd}).to_string(),
    )
    .unwrap();
    late["name"] = "late".into();
    late["port"] = port.into();
    late["paths"] = serde_json::json!(["/late"]);
    late["installDir"] = install.to_str().unwrap().into();
    file["services"].as_array_mut().unwrap().insert(0, late);
    std::fs::write(&path, serde_json::to_vec_pretty(&file).unwrap()).unwrap();

    let token = h.token();
    let (st, body) = send(&s, "POST", "/api/modules/late/start", Some(&token));
    assert_eq!(st, 200, "{body}");
    let (_, list) = get(&s, "/api/modules", Some(&token));
    let shorts: Vec<&str> =
        list["modules"].as_array().unwrap().iter().map(|m| m["short"].as_str().unwrap()).collect();
    assert_eq!(shorts, ["late", "alpha"], "{list}");
    let (_, ready) = get(&s, "/api/ready", None);
    let names = [&ready["ready_modules"], &ready["transient_modules"]];
    let all: Vec<&str> =
        names.iter().flat_map(|a| a.as_array().unwrap()).map(|v| v.as_str().unwrap()).collect();
    assert_eq!(all, ["late", "alpha"], "{ready}");
}

#[test]
fn every_answer_of_a_real_hub_matches_the_documented_schema() {
    let (h, s) = every_kind_of_module();
    let token = h.token();
    let mut schema = Schema::load();
    let t = Some(token.as_str());

    let (st, v) = get(&s, "/health", None);
    assert_eq!(st, 200);
    schema.check("health", "GET /health", &v);
    let (st, v) = get(&s, "/livez", None);
    assert_eq!(st, 200);
    schema.check("livez", "GET /livez", &v);
    let (st, v) = get(&s, "/readyz", None);
    assert_eq!(st, 503, "a crashed module: not ready");
    schema.check("readyz", "GET /readyz", &v);
    let (_, v) = get(&s, "/api/ready", None);
    schema.check("apiReady", "GET /api/ready", &v);

    // The list with a running, a crashed, an unbound and two missing-dependency modules.
    let (st, v) = get(&s, "/api/modules", t);
    assert_eq!(st, 200);
    schema.check("moduleList", "GET /api/modules", &v);
    // The check can fail: an undocumented field anywhere in a module, or a wrong type, is refused.
    for (pointer, bad) in [
        ("/modules/0", ("bogus", Value::from(1))),
        ("/modules/0/startError", ("bogus", Value::from(1))),
        ("/supervised/0", ("status", Value::from("running"))),
        ("/modules/1", ("supervisor_status", Value::from("fine"))),
    ] {
        let mut forged = v.clone();
        forged.pointer_mut(pointer).unwrap().as_object_mut().unwrap().insert(bad.0.into(), bad.1);
        assert!(schema.validate("moduleList", &forged).is_err(), "{pointer}.{} passed the schema", bad.0);
    }
    let kinds: Vec<&str> = v["modules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["startError"]["error_type"].as_str())
        .collect();
    assert!(kinds.contains(&"started_but_unbound") && kinds.contains(&"missing_dependency"), "{v}");
    for short in ["alpha", "crashy", "mute", "nodep"] {
        let (st, v) = get(&s, &format!("/api/modules/{short}"), t);
        assert_eq!(st, 200, "{v}");
        schema.check("moduleReply", &format!("GET /api/modules/{short}"), &v);
    }
    let (st, v) = get(&s, "/api/modules/alpha/logs", t);
    assert_eq!(st, 200);
    schema.check("logsReply", "GET …/logs", &v);
    assert!(!v["lines"].as_array().unwrap().is_empty(), "alpha printed its ready line: {v}");
    let mut r = http_stream(s.port, "/api/modules/alpha/logs?follow=1&since=0", &token);
    let event = loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "the follow stream ended");
        if line.trim_start().starts_with('{') {
            break serde_json::from_str::<Value>(line.trim()).unwrap();
        }
    };
    schema.check("followEvent", "a follow event", &event);
    drop(r);

    for (path, want) in [("stop", "stopped"), ("start", "running"), ("restart", "running")] {
        let (st, v) = send(&s, "POST", &format!("/api/modules/alpha/{path}"), t);
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["state"]["status"], want, "{v}");
        schema.check("moduleReply", &format!("POST …/{path}"), &v);
    }

    // Every error shape.
    let errors = [
        ("GET", "/api/modules", None, 401, "unauthenticated"),
        ("GET", "/nowhere", None, 404, "not_found"),
        ("DELETE", "/health", None, 405, "method_not_allowed"),
        ("POST", "/api/modules/ghost/start", t, 400, "not_installed"),
        ("GET", "/api/modules/ghost", t, 404, "not_supervised"),
        ("GET", "/api/modules/alpha/logs?since=x", t, 400, "bad_request"),
    ];
    for (method, path, tok, status, code) in errors {
        let (st, v) = send(&s, method, path, tok);
        assert_eq!((st, v["error"].as_str()), (status, Some(code)), "{method} {path}: {v}");
        schema.check("error", &format!("{method} {path}"), &v);
    }
}

/// docs/api.md describes what the schema defines: every route the router serves and every
/// field name in the schema appear in it.
#[test]
fn the_api_doc_names_every_route_and_field() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).unwrap();
    let router = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/mod.rs")).unwrap();
    let routes: Vec<&str> = router
        .split(".route(")
        .skip(1)
        .filter_map(|r| r.trim_start().strip_prefix('"')?.split('"').next())
        .collect();
    assert!(routes.len() >= 10, "{routes:?}");
    for route in routes {
        let shown = route.replace("{short}", "<short>");
        assert!(
            doc.contains(&format!("`{shown}`")) || doc.contains(&shown),
            "docs/api.md lacks the route {shown}"
        );
    }
    fn fields(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Object(props)) = m.get("properties") {
                    out.extend(props.keys().cloned());
                }
                m.values().for_each(|v| fields(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| fields(v, out)),
            _ => {}
        }
    }
    let mut names = Vec::new();
    fields(&schema_json(), &mut names);
    names.sort();
    names.dedup();
    assert!(names.len() > 30, "{names:?}");
    let missing: Vec<&String> = names.iter().filter(|n| !doc.contains(&format!("`{n}`"))).collect();
    assert!(missing.is_empty(), "docs/api.md does not describe these fields: {missing:?}");
}
