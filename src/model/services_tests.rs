//! Unit tests of `services.rs`, against the fixture files in `tests/fixtures/model/`.

use super::*;
use serde_json::json;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model").join(name)
}

fn names(f: &ServicesFile) -> Vec<&str> {
    f.rows().map(ServiceRow::name).collect()
}

fn row(name: &str, port: u16) -> ServiceRow {
    ServiceRow::new(name, port, &["/x"], "/health", "1.0.0").unwrap()
}

#[test]
fn valid_file_reads_strictly_and_round_trips_byte_for_byte() {
    let path = fixture("services-valid.json");
    let original = std::fs::read(&path).unwrap();
    let loaded = ServicesFile::read_strict(&path).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(names(&loaded.file), ["parachute-vault", "parachute-scribe", "acme-widget"]);
    let scribe = loaded.file.get_by_short("scribe").unwrap();
    assert_eq!(scribe.strip_prefix(), Some(true));
    assert_eq!(scribe.public_exposure(), Some(PublicExposure::AuthRequired));
    assert_eq!(loaded.file.get("acme-widget").unwrap().websocket(), Some(false));
    assert_eq!(String::from_utf8(loaded.file.to_bytes()).unwrap(), String::from_utf8(original).unwrap());
}

#[test]
fn an_edit_changes_only_the_bytes_it_asked_for() {
    let path = fixture("services-valid.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let mut file = ServicesFile::read_strict(&path).unwrap().file;
    let mut vault = file.get("parachute-vault").unwrap().clone();
    vault.set("version", json!("0.6.0")).unwrap();
    assert_eq!(file.upsert(vault).unwrap(), Upserted::Replaced);
    let after = String::from_utf8(file.to_bytes()).unwrap();
    let diff: Vec<(&str, &str)> = original.lines().zip(after.lines()).filter(|(a, b)| a != b).collect();
    assert_eq!(diff, [(r#"      "version": "0.5.3","#, r#"      "version": "0.6.0","#)]);
    assert_eq!(original.lines().count(), after.lines().count());
}

#[test]
fn write_is_atomic_pretty_with_newline_and_skips_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("services.json");
    let mut f = ServicesFile::empty();
    f.upsert(row("parachute-vault", 1940)).unwrap();
    assert_eq!(f.write(&p).unwrap(), parachute_fsx::Written::Changed);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.starts_with("{\n  \"services\": [\n    {\n      \"name\": \"parachute-vault\""), "{text}");
    assert!(text.ends_with("}\n"));
    assert_eq!(f.write(&p).unwrap(), parachute_fsx::Written::Unchanged);
    assert_eq!(ServicesFile::read_strict(&p).unwrap().file, f);
}

#[test]
fn malformed_json_strict_names_file_line_and_column() {
    let path = fixture("services-malformed.json");
    let e = ServicesFile::read_strict(&path).unwrap_err();
    let ServicesError::Malformed { line, column, .. } = &e else { panic!("{e}") };
    assert_eq!((*line, *column), (9, 5));
    let msg = e.to_string();
    assert!(msg.contains("services-malformed.json") && msg.contains("line 9 column 5"), "{msg}");
}

#[test]
fn malformed_json_lenient_is_empty_with_a_warning_and_never_overwritten() {
    let path = fixture("services-malformed.json");
    let loaded = ServicesFile::read_lenient(&path);
    assert_eq!(loaded.file.rows().count(), 0);
    assert_eq!(loaded.warnings.len(), 1);
    let w = &loaded.warnings[0];
    assert_eq!(w.kind, IssueKind::Unparsable);
    assert!(
        w.to_string().contains("services-malformed.json") && w.to_string().contains("line 9 column 5"),
        "{w}"
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("services.json");
    std::fs::copy(&path, &copy).unwrap();
    let mut file = ServicesFile::read_lenient(&copy).file;
    file.upsert(row("acme", 2000)).unwrap();
    assert!(matches!(file.write(&copy), Err(ServicesError::RefuseOverwrite { .. })));
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&path).unwrap());
}

#[test]
fn missing_file_is_empty_for_both_readers() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("services.json");
    assert_eq!(ServicesFile::read_strict(&p).unwrap().file.rows().count(), 0);
    let l = ServicesFile::read_lenient(&p);
    assert!(l.warnings.is_empty() && l.file.rows().count() == 0);
    l.file.write(&p).unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\n  \"services\": []\n}\n");
}

#[test]
fn wrong_top_level_shapes() {
    let p = Path::new("/ph/services.json");
    for (text, frag) in [("[]", "top level"), ("{\"services\": {}}", "array of rows"), ("3", "top level")] {
        let e = ServicesFile::parse_strict(text.as_bytes(), p).unwrap_err();
        assert!(e.to_string().contains(frag), "{e}");
        let l = ServicesFile::parse_lenient(text.as_bytes(), p);
        assert_eq!(l.warnings.len(), 1, "{text}");
        assert!(matches!(
            l.file.write(Path::new("/nonexistent/x")),
            Err(ServicesError::RefuseOverwrite { .. })
        ));
    }
    let l = ServicesFile::parse_strict(b"{\"other\": 1}", p).unwrap();
    assert_eq!(String::from_utf8(l.file.to_bytes()).unwrap(), "{\n  \"other\": 1,\n  \"services\": []\n}\n");
}

#[test]
fn strict_reader_lists_every_problem_with_file_index_name_and_field() {
    let path = fixture("services-invalid.json");
    let e = ServicesFile::read_strict(&path).unwrap_err();
    let ServicesError::Invalid { problems, .. } = &e else { panic!("{e}") };
    let got: Vec<(Option<usize>, Option<&str>, Option<&str>)> =
        problems.iter().map(|p| (p.index, p.name.as_deref(), p.field.as_deref())).collect();
    assert_eq!(
        got,
        [
            (Some(1), Some(""), Some("name")),
            (Some(1), Some(""), Some("port")),
            (Some(1), Some(""), Some("paths")),
            (Some(1), Some(""), Some("health")),
            (Some(1), Some(""), Some("version")),
            (Some(2), None, None),
            (Some(3), Some("acme"), Some("port")),
            (Some(3), Some("acme"), Some("publicExposure")),
        ]
    );
    let msg = e.to_string();
    assert!(msg.contains("8 problem(s)"), "{msg}");
    assert!(msg.contains(r#"services-invalid.json: services[3] ("acme") field "port": must be an integer 1..65535, got 70000"#), "{msg}");
}

#[test]
fn lenient_reader_skips_bad_rows_but_keeps_them_on_write() {
    let path = fixture("services-invalid.json");
    let loaded = ServicesFile::read_lenient(&path);
    assert_eq!(names(&loaded.file), ["parachute-vault"]);
    assert_eq!(loaded.warnings.len(), 8);
    assert!(
        loaded.warnings.iter().all(|w| w.kind == IssueKind::Invalid && w.message.ends_with("row skipped"))
    );
    let before: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let after: Value = serde_json::from_slice(&loaded.file.to_bytes()).unwrap();
    assert_eq!(before, after, "held rows are written back as they were");
}

#[test]
fn duplicate_ports_vault_exception_strict_and_lenient() {
    let path = fixture("services-duplicate-ports.json");
    let e = ServicesFile::read_strict(&path).unwrap_err();
    let ServicesError::Invalid { problems, .. } = &e else { panic!("{e}") };
    let got: Vec<(IssueKind, Option<usize>)> = problems.iter().map(|p| (p.kind, p.index)).collect();
    assert_eq!(got, [(IssueKind::PortCollision, Some(3)), (IssueKind::DuplicateName, Some(4))]);
    assert!(
        problems[0].message.contains("port 1943 is already used by \"parachute-scribe\""),
        "{}",
        problems[0]
    );

    let loaded = ServicesFile::read_lenient(&path);
    assert_eq!(names(&loaded.file), ["parachute-vault", "parachute-vault-work", "parachute-scribe"]);
    assert_eq!(loaded.warnings.len(), 2);
    assert_eq!(loaded.file.get("parachute-scribe").unwrap().port(), 1943, "the first row of a name wins");
    assert_eq!(loaded.file.to_bytes(), std::fs::read(&path).unwrap(), "held rows survive a rewrite verbatim");
}

#[test]
fn pipeline_drops_retired_stale_and_short_duplicate_rows_with_warnings() {
    let path = fixture("services-retired.json");
    let loaded = ServicesFile::read_strict(&path).unwrap();
    assert_eq!(names(&loaded.file), ["claw", "parachute-app", "parachute-vault", "notes", "parachute-notes"]);
    assert_eq!(loaded.file.get("claw").unwrap().port(), 2049, "only the claw mounted at /claw is retired");
    let dropped: Vec<(usize, &str)> =
        loaded.warnings.iter().map(|w| (w.index.unwrap(), w.name.as_deref().unwrap())).collect();
    assert_eq!(
        dropped,
        [
            (0, "agent"),
            (1, "parachute-channel"),
            (2, "parachute-agent"),
            (3, "channel"),
            (4, "claw"),
            (6, "app"),
            (7, "parachute-app"),
            (9, "vault"),
        ]
    );
    assert!(loaded.warnings.iter().all(|w| w.kind == IssueKind::Dropped));
    assert!(loaded.warnings[7].message.contains("\"parachute-vault\""), "{}", loaded.warnings[7]);
    let lenient = ServicesFile::read_lenient(&path);
    assert_eq!(lenient.warnings.len(), 8);
}

#[test]
fn reading_never_writes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("services.json");
    std::fs::copy(fixture("services-retired.json"), &p).unwrap();
    let before = (std::fs::read(&p).unwrap(), std::fs::metadata(&p).unwrap().modified().unwrap());
    let _ = ServicesFile::read_strict(&p).unwrap();
    let _ = ServicesFile::read_lenient(&p);
    assert_eq!(before, (std::fs::read(&p).unwrap(), std::fs::metadata(&p).unwrap().modified().unwrap()));
}

#[test]
fn hostile_values_round_trip_exactly() {
    let path = fixture("services-hostile.json");
    let loaded = ServicesFile::read_strict(&path).unwrap();
    assert_eq!(loaded.file.rows().count(), 4);
    let odd = loaded.file.get("100%$HOME\"'<a&b>").unwrap();
    assert_eq!(odd.install_dir(), Some(Path::new("/opt/we ird/$dir/%s/\"quoted\"/<x>&")));
    assert_eq!(odd.paths(), ["/p%20$(rm -rf ~)/<script>&amp;"]);
    assert!(loaded.file.get("evil\nname").is_some());
    assert_eq!(loaded.file.to_bytes(), std::fs::read(&path).unwrap());
}

#[test]
fn problem_messages_escape_hostile_names() {
    let text = r#"{"services":[{"name":"a\nFAKE LINE","port":0,"paths":[],"health":"/h","version":"1"}]}"#;
    let e = ServicesFile::parse_strict(text.as_bytes(), Path::new("/ph/services.json")).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(r#"("a\nFAKE LINE")"#), "{msg}");
    assert!(!msg.lines().any(|l| l.starts_with("FAKE LINE")), "{msg}");
}

#[test]
fn upsert_inserts_replaces_and_rejects_port_collisions() {
    let mut f = ServicesFile::empty();
    assert_eq!(f.upsert(row("parachute-vault", 1940)).unwrap(), Upserted::Inserted);
    assert_eq!(
        f.upsert(row("parachute-vault-work", 1940)).unwrap(),
        Upserted::Inserted,
        "vault rows may share"
    );
    let e = f.upsert(row("acme", 1940)).unwrap_err();
    assert!(matches!(&e, ServicesError::PortCollision { port: 1940, .. }), "{e}");
    assert!(e.to_string().contains("\"acme\"") && e.to_string().contains("\"parachute-vault\""), "{e}");
    assert_eq!(f.upsert(row("parachute-vault", 1940)).unwrap(), Upserted::Unchanged);
    assert_eq!(f.upsert(row("parachute-vault", 1941)).unwrap(), Upserted::Replaced);
    assert_eq!(names(&f), ["parachute-vault", "parachute-vault-work"]);
    assert!(f.remove("parachute-vault-work"));
    assert!(!f.remove("parachute-vault-work"));
}

#[test]
fn upsert_replaces_a_held_row_of_the_same_name() {
    let text = r#"{"services":[{"name":"acme","port":"bad","paths":[],"health":"/h","version":"1"}]}"#;
    let mut f = ServicesFile::parse_lenient(text.as_bytes(), Path::new("/s")).file;
    assert_eq!(f.rows().count(), 0);
    assert_eq!(f.upsert(row("acme", 2000)).unwrap(), Upserted::Replaced);
    let v: Value = serde_json::from_slice(&f.to_bytes()).unwrap();
    assert_eq!(v["services"].as_array().unwrap().len(), 1);
    assert_eq!(v["services"][0]["port"], json!(2000));
}

#[test]
fn reconcile_moves_drifted_fixed_port_rows_only() {
    let mut f = ServicesFile::empty();
    f.upsert(row("parachute-vault", 1940)).unwrap();
    f.upsert(row("parachute-scribe", 2943)).unwrap();
    f.upsert(row("parachute-notes", 2942)).unwrap();
    f.upsert(row("acme", 1942)).unwrap();
    f.upsert(row("parachute-vault-work", 1950)).unwrap();
    f.upsert(row("hub", 4000)).unwrap();
    let scribe = f.get("parachute-scribe").unwrap().clone();
    let d = reconcile_port(&f, &scribe);
    assert_eq!(
        d,
        PortDecision::Reconciled {
            name: "parachute-scribe".into(),
            from: 2943,
            to: 1943,
            log:
                "parachute-scribe: reconciled drifted services.json port 2943 → canonical 1943 (channel#41)."
                    .into()
        }
    );
    assert_eq!(f.get("parachute-scribe").unwrap().port(), 2943, "deciding changes nothing");
    let all = f.reconcile_ports();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(matches!(&all[0], PortDecision::Canonical { port: 1940, .. }));
    assert!(matches!(&all[1], PortDecision::Reconciled { to: 1943, .. }));
    let PortDecision::HeldByOther { holder, log, port: 2942, .. } = &all[2] else { panic!("{all:?}") };
    assert_eq!(holder, "acme");
    assert!(log.contains("not reconciling; surfacing the drift"), "{log}");
    assert_eq!(f.get("parachute-scribe").unwrap().port(), 1943);
    assert_eq!(
        f.get("parachute-vault-work").unwrap().port(),
        1950,
        "multi-vault rows have no canonical port"
    );
    assert_eq!(f.get("hub").unwrap().port(), 4000, "a row named hub is never moved onto the hub's port");
}
