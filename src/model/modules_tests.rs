//! Unit tests of `modules.rs`: command resolution, env layering, the boot plan.

use super::*;
use crate::model::services::ServicesFile;
use serde_json::json;

struct Box_ {
    _dir: tempfile::TempDir,
    home: Home,
    user: PathBuf,
    pkg: PathBuf,
}

fn a_box() -> Box_ {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("ph")).unwrap();
    let user = dir.path().join("user");
    let pkg = dir.path().join("pkg");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::create_dir_all(&pkg).unwrap();
    Box_ { _dir: dir, home, user, pkg }
}

fn row(name: &str, port: u16, install_dir: Option<&Path>) -> ServiceRow {
    let mut r = ServiceRow::new(name, port, &["/x"], "/health", "1.0.0").unwrap();
    if let Some(d) = install_dir {
        r.set("installDir", json!(d.to_str().unwrap())).unwrap();
    }
    r
}

fn ctx(b: &Box_) -> HubContext {
    HubContext {
        hub_port: 1939,
        hub_origin: None,
        inherited_path: "/usr/bin:/bin".into(),
        user_home: Some(b.user.clone()),
        extra_path: None,
        base_env: vec![("HOME".into(), b.user.to_str().unwrap().into()), ("LANG".into(), "C.UTF-8".into())],
    }
}

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn manifest(pkg: &Path) -> PathBuf {
    pkg.join(".parachute/module.json")
}

fn env_of(req: &SpawnRequest, key: &str) -> Option<String> {
    req.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

#[test]
fn first_party_default_without_install_dir() {
    let b = a_box();
    let req = spawn_request(&b.home, &row("parachute-vault", 1940, None), &ctx(&b)).unwrap();
    assert_eq!(req.short, "vault");
    assert_eq!(req.argv, ["parachute-vault", "serve"]);
    assert_eq!((req.cwd, req.port), (None, Some(1940)));
    for (short, bin) in [("parachute-scribe", "parachute-scribe"), ("parachute-surface", "parachute-surface")]
    {
        assert_eq!(spawn_request(&b.home, &row(short, 2000, None), &ctx(&b)).unwrap().argv[0], bin);
    }
}

#[test]
fn module_json_start_cmd_wins_and_cwd_is_install_dir() {
    let b = a_box();
    write(&manifest(&b.pkg), r#"{"name": "vault", "startCmd": ["./bin/vault", "serve", "--flag"]}"#);
    let r = row("parachute-vault", 1940, Some(&b.pkg));
    let Resolution::Spawn { request, source } = resolve(&b.home, &r, &ctx(&b)).unwrap() else { panic!() };
    assert_eq!(request.argv, ["./bin/vault", "serve", "--flag"]);
    assert_eq!(source, CommandSource::ModuleJson(manifest(&b.pkg)));
    assert_eq!(request.cwd.as_deref(), Some(b.pkg.as_path()));
}

#[test]
fn install_dir_without_module_json_falls_back_or_skips() {
    let b = a_box();
    let vault = start_command(&row("parachute-vault", 1940, Some(&b.pkg))).unwrap();
    assert!(matches!(vault, StartCommand::Found { source: CommandSource::FirstPartyDefault, .. }));
    let third = resolve(&b.home, &row("acme", 2000, Some(&b.pkg)), &ctx(&b)).unwrap();
    assert!(matches!(third, Resolution::Skipped { reason: SkipReason::NoSpec, .. }), "{third:?}");
    let bare = resolve(&b.home, &row("parachute-notes", 1942, None), &ctx(&b)).unwrap();
    assert!(matches!(bare, Resolution::Skipped { reason: SkipReason::NoSpec, .. }), "{bare:?}");
    let e = spawn_request(&b.home, &row("acme", 2000, None), &ctx(&b)).unwrap_err();
    assert!(matches!(e, ModelError::NothingToStart { .. }));
    assert!(e.to_string().starts_with("acme has nothing to start: no startCmd"), "{e}");
}

#[test]
fn module_json_without_start_cmd() {
    let b = a_box();
    write(&manifest(&b.pkg), r#"{"name": "x", "startCmd": []}"#);
    let third = resolve(&b.home, &row("acme", 2000, Some(&b.pkg)), &ctx(&b)).unwrap();
    let Resolution::Skipped { reason: SkipReason::NoStartCmd { manifest: m }, .. } = third else {
        panic!("{third:?}")
    };
    assert_eq!(m, manifest(&b.pkg));
    let vault = start_command(&row("parachute-vault", 1940, Some(&b.pkg))).unwrap();
    assert!(matches!(vault, StartCommand::Found { source: CommandSource::FirstPartyDefault, .. }));
}

#[test]
fn malformed_module_json_is_an_error_naming_the_file() {
    let b = a_box();
    let r = row("acme", 2000, Some(&b.pkg));
    write(&manifest(&b.pkg), "{\n  \"startCmd\": [\"x\",]\n}");
    let e = resolve(&b.home, &r, &ctx(&b)).unwrap_err();
    assert!(matches!(e, ModelError::ModuleJsonMalformed { line: 2, .. }), "{e}");
    assert!(e.to_string().contains(&manifest(&b.pkg).display().to_string()), "{e}");
    for (text, frag) in [
        (r#"{"startCmd": "x serve"}"#, "must be an array"),
        (r#"{"startCmd": ["x", 1]}"#, "non-empty strings"),
        (r#"{"startCmd": ["x", ""]}"#, "non-empty strings"),
        ("[]", "must be an object"),
    ] {
        write(&manifest(&b.pkg), text);
        let e = resolve(&b.home, &r, &ctx(&b)).unwrap_err();
        assert!(
            matches!(e, ModelError::ModuleJsonInvalid { .. }) && e.to_string().contains(frag),
            "{text}: {e}"
        );
    }
}

#[test]
fn relative_install_dir_and_hostile_names_are_errors() {
    let b = a_box();
    let e = resolve(&b.home, &row("acme", 2000, Some(Path::new("rel/pkg"))), &ctx(&b)).unwrap_err();
    assert!(matches!(e, ModelError::RelativeInstallDir { .. }), "{e}");
    let e = resolve(&b.home, &row("../../etc", 2000, None), &ctx(&b)).unwrap_err();
    assert!(matches!(e, ModelError::Name(_)), "{e}");
}

#[test]
fn env_layers_denylist_port_dotenv_and_home() {
    let b = a_box();
    let mut c = ctx(&b);
    c.base_env.extend(
        [
            ("PARACHUTE_INITIAL_ADMIN_PASSWORD", "hunter2"),
            ("PARACHUTE_INITIAL_ADMIN_USERNAME", "root"),
            ("PARACHUTE_OPERATOR_TOKEN", "tok"),
            ("NOTIFY_SOCKET", "/run/systemd/notify"),
            ("PORT", "1939"),
            ("PARACHUTE_HUB_ORIGIN", "https://leaked.example"),
            ("GITHUB_TOKEN", "not allow-listed"),
            ("PARACHUTE_EXTRA_PATH", "/opt/x"),
            ("SUDO_USER", "op"),
            ("SUDO_COMMAND", "/bin/sh"),
            ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/0/bus"),
            ("AWS_SECRET_ACCESS_KEY", "hunter2"),
            ("INVOCATION_ID", "abc"),
            ("LISTEN_FDS", "1"),
            ("WATCHDOG_USEC", "1"),
            ("LC_TIME", "C"),
            ("TZ", "UTC"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let short = ModuleName::parse("vault").unwrap();
    write(&b.home.env_file(&short), "PORT=9999\nFOO=\"bar baz\" # note\nLANG=en_US.UTF-8\n");
    let req = spawn_request(&b.home, &row("parachute-vault", 1940, None), &c).unwrap();
    for hidden in [
        "PARACHUTE_INITIAL_ADMIN_PASSWORD",
        "PARACHUTE_INITIAL_ADMIN_USERNAME",
        "PARACHUTE_OPERATOR_TOKEN",
        "NOTIFY_SOCKET",
        "PARACHUTE_HUB_ORIGIN",
        "PARACHUTE_HUB_ORIGINS",
        "GITHUB_TOKEN",
        "PARACHUTE_EXTRA_PATH",
        "SUDO_USER",
        "SUDO_COMMAND",
        "DBUS_SESSION_BUS_ADDRESS",
        "AWS_SECRET_ACCESS_KEY",
        "INVOCATION_ID",
        "LISTEN_FDS",
        "WATCHDOG_USEC",
    ] {
        assert_eq!(env_of(&req, hidden), None, "{hidden}");
    }
    assert_eq!(env_of(&req, "LC_TIME").as_deref(), Some("C"));
    assert_eq!(env_of(&req, "TZ").as_deref(), Some("UTC"));
    assert_eq!(env_of(&req, "PORT").as_deref(), Some("1940"), "services.json wins over .env PORT");
    assert_eq!(env_of(&req, "FOO").as_deref(), Some("bar baz"));
    assert_eq!(env_of(&req, "LANG").as_deref(), Some("en_US.UTF-8"), ".env overrides the hub's env");
    assert_eq!(env_of(&req, "HOME").as_deref(), b.user.to_str());
    assert_eq!(env_of(&req, "PARACHUTE_HOME").as_deref(), b.home.root().to_str());
    assert_eq!(env_of(&req, "PATH").as_deref(), Some("/usr/bin:/bin"));
    let keys: Vec<&str> = req.env.iter().map(|(k, _)| k.as_str()).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted and unique: {keys:?}");
}

#[test]
fn dotenv_path_overrides_the_enriched_path() {
    let b = a_box();
    let short = ModuleName::parse("vault").unwrap();
    write(&b.home.env_file(&short), "PATH=/only/here\n");
    let req = spawn_request(&b.home, &row("parachute-vault", 1940, None), &ctx(&b)).unwrap();
    assert_eq!(env_of(&req, "PATH").as_deref(), Some("/only/here"));
}

#[test]
fn malformed_dotenv_fails_the_request_naming_file_and_line() {
    let b = a_box();
    let short = ModuleName::parse("vault").unwrap();
    write(&b.home.env_file(&short), "OK=1\nbroken line\n");
    let e = spawn_request(&b.home, &row("parachute-vault", 1940, None), &ctx(&b)).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&b.home.env_file(&short).display().to_string()) && msg.contains("line 2"), "{msg}");
}

#[test]
fn hub_origin_sets_both_variables_and_overrides_dotenv() {
    let b = a_box();
    let short = ModuleName::parse("vault").unwrap();
    write(&b.home.env_file(&short), "PARACHUTE_HUB_ORIGIN=https://from-env-file.example\n");
    let r = row("parachute-vault", 1940, None);
    let without = spawn_request(&b.home, &r, &ctx(&b)).unwrap();
    assert_eq!(env_of(&without, "PARACHUTE_HUB_ORIGIN").as_deref(), Some("https://from-env-file.example"));
    assert_eq!(env_of(&without, "PARACHUTE_HUB_ORIGINS"), None);
    let mut c = ctx(&b);
    c.hub_origin = Some("https://hub.example.com/".into());
    c.hub_port = 2939;
    let with = spawn_request(&b.home, &r, &c).unwrap();
    assert_eq!(env_of(&with, "PARACHUTE_HUB_ORIGIN").as_deref(), Some("https://hub.example.com"));
    assert_eq!(
        env_of(&with, "PARACHUTE_HUB_ORIGINS").as_deref(),
        Some("https://hub.example.com,http://127.0.0.1:2939,http://localhost:2939")
    );
    assert_eq!(hub_origins("http://localhost:1939", 1939), "http://localhost:1939,http://127.0.0.1:1939");
}

#[test]
fn enriched_path_order_existence_dedupe_and_idempotence() {
    let b = a_box();
    let user = Some(b.user.as_path());
    assert_eq!(enriched_path(Some("/x::/y"), "/usr/bin:/x:", user), "/x:/y:/usr/bin");
    std::fs::create_dir_all(b.user.join(".local/bin")).unwrap();
    std::fs::create_dir_all(b.user.join(".bun/bin")).unwrap();
    let local = b.user.join(".local/bin").display().to_string();
    let bun = b.user.join(".bun/bin").display().to_string();
    let once = enriched_path(Some("/x"), "/usr/bin", user);
    // (macOS adds its Homebrew bin between the two when it exists.)
    if !cfg!(target_os = "macos") {
        assert_eq!(once, format!("/x:/usr/bin:{local}:{bun}"));
    }
    assert_eq!(enriched_path(Some("/x"), &once, user), once, "idempotent");
    assert_eq!(enriched_path(None, "", None), "");
}

#[test]
fn is_hub_only_rules() {
    for k in [
        "PARACHUTE_INITIAL_ADMIN_PASSWORD",
        "PARACHUTE_X_TOKEN",
        "PARACHUTE_DB_SECRET",
        "NOTIFY_SOCKET",
        "PORT",
    ] {
        assert!(is_hub_only(k), "{k}");
    }
    for k in ["PATH", "HOME", "GITHUB_TOKEN", "PARACHUTE_HOME", "PARACHUTE_TOKENIZER", "LANG"] {
        assert!(!is_hub_only(k), "{k}");
    }
}

#[test]
fn boot_plan_one_process_per_port_and_per_short_r30() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model/services-duplicate-ports.json");
    let file = ServicesFile::read_lenient(&path).file;
    let plan = boot_plan(file.rows());
    assert_eq!(
        plan,
        [
            BootDecision::Start {
                index: 0,
                name: "parachute-vault".into(),
                short: ModuleName::parse("vault").unwrap()
            },
            BootDecision::Skip {
                index: 1,
                name: "parachute-vault-work".into(),
                reason: "port 1940 is already used by row \"parachute-vault\"; one process per port".into()
            },
            BootDecision::Start {
                index: 2,
                name: "parachute-scribe".into(),
                short: ModuleName::parse("scribe").unwrap()
            },
        ]
    );
}

#[test]
fn boot_plan_prefers_the_manifest_named_row_and_skips_bad_names() {
    let rows = [
        row("notes", 1952, None),
        row("parachute-notes", 1942, None),
        row("evil\nname", 3000, None),
        row("parachute-lens", 1962, None),
        row("acme", 3001, None),
    ];
    let plan = boot_plan(&rows);
    let summary: Vec<(usize, bool)> = plan
        .iter()
        .map(|d| match d {
            BootDecision::Start { index, .. } => (*index, true),
            BootDecision::Skip { index, .. } => (*index, false),
        })
        .collect();
    assert_eq!(summary, [(0, false), (1, true), (2, false), (3, false), (4, true)]);
    let BootDecision::Skip { reason, .. } = &plan[0] else { panic!() };
    assert!(reason.contains("\"parachute-notes\""), "{reason}");
    let BootDecision::Skip { reason, .. } = &plan[2] else { panic!() };
    assert!(reason.contains(r#""evil\nname""#), "{reason}");
}
