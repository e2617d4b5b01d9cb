//! Property test: whatever the renderer accepts, systemd 252 reads back exactly.
//!
//! Random argv, environment, description and working directory, full of spaces, quotes,
//! backslashes, `%`, `$`, `;`, unicode and XML specials (and now and then a control
//! character), are installed into one sandbox manager and read back over D-Bus
//! (`ExecStart`, `Environment`, `Description`, `WorkingDirectory`), independently of the
//! backend's own readers. Each case must either round-trip byte for byte or be rejected by
//! the renderer, and it must be rejected exactly when it holds something unrepresentable.

#[path = "../../../tests/support/sandbox.rs"]
mod sandbox;

use std::collections::HashSet;
use std::time::Duration;

use parachute_manager::{AfterInstall, ErrorKind, Scope, ServiceManager, UnitId, UnitSpec};
use parachute_systemd::{SystemdManager, Timeouts, render_unit};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sandbox::Sandbox;

type ExecCommand = (String, Vec<String>, bool, u64, u64, u64, u64, u32, i32, i32);

const PLAIN: &[char] = &[
    ' ', '"', '\'', '\\', '%', '$', ';', '{', '}', '<', '>', '&', 'a', 'Z', '0', '_', '=', '#', '*', '~',
    '`', '!', '@', '-', ':', '+', '.', 'é', '€', '😀', '\u{200b}', '\u{feff}',
];
const CONTROL: &[char] = &['\n', '\t', '\r', '\u{1b}', '\u{7f}', '\u{85}', '\0'];

/// Mostly printable hostile characters; about one in 200 is a control character.
fn word() -> impl Strategy<Value = String> {
    let ch = prop_oneof![200 => prop::sample::select(PLAIN), 1 => prop::sample::select(CONTROL)];
    prop::collection::vec(ch, 0..10).prop_map(|v| v.into_iter().collect())
}

/// A file name systemd accepts in an executable path (it refuses quotes and backslashes).
fn exe_name() -> impl Strategy<Value = String> {
    let safe: Vec<char> = PLAIN.iter().copied().filter(|c| !matches!(c, '"' | '\'' | '\\')).collect();
    prop::collection::vec(prop::sample::select(safe), 1..8).prop_map(|v| v.into_iter().collect())
}

fn case() -> impl Strategy<Value = (String, Vec<String>, Vec<(String, String)>, String, String)> {
    (
        exe_name(),
        prop::collection::vec(word(), 0..5),
        prop::collection::vec(("[A-Z_][A-Z0-9_]{0,3}", word()), 0..4),
        word().prop_map(|w| format!("d{w}d")),
        word().prop_map(|w| format!("w{w}w")),
    )
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

async fn property<T>(
    conn: &zbus::Connection,
    path: &zbus::OwnedObjectPath,
    iface: &'static str,
    name: &str,
) -> T
where
    T: serde::de::DeserializeOwned + zbus::Type,
{
    let p: zbus::Proxy<'_> = zbus::proxy::Builder::new(conn)
        .destination("org.freedesktop.systemd1")
        .path(path.clone())
        .interface(iface)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap();
    p.get_property::<T>(name).await.unwrap()
}

#[test]
fn rendered_values_round_trip_through_systemd() {
    let Some(sb) = Sandbox::start("roundtrip") else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (conn, m) = rt.block_on(async {
        let conn = sb.connect().await;
        let t =
            Timeouts { call: Duration::from_secs(10), job: Duration::from_secs(20), settle: Duration::ZERO };
        let m = SystemdManager::new(conn.clone(), Scope::User, sb.unit_dir()).with_timeouts(t);
        (conn, m)
    });
    let log_path = sb.dir().join("logs/roundtrip.log");
    let accepted = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(Config { cases: 32, failure_persistence: None, ..Config::default() });
    runner
        .run(&case(), |(exe, args, env, description, wd)| {
            let argv0 = format!("/opt/{exe}");
            let argv: Vec<String> = std::iter::once(argv0.clone()).chain(args).collect();
            let work = format!("/tmp/{wd}");
            let spec = UnitSpec {
                id: UnitId::new("roundtrip").unwrap(),
                description: description.clone(),
                argv: argv.clone(),
                env: env.clone(),
                working_dir: Some(work.clone().into()),
                log_path: log_path.clone(),
                crash_loop: None,
                run_as_user: None,
                readiness: parachute_manager::Readiness::Exec,
                hardened: false,
                log_to_journal: false,
                log_file_args: Vec::new(),
            };
            let mut keys = HashSet::new();
            let representable = !argv.iter().any(|a| has_control(a))
                && !env.iter().any(|(_, v)| has_control(v))
                && env.iter().all(|(k, _)| keys.insert(k.clone()))
                && !has_control(&description)
                && !description.is_empty()
                && description.trim() == description
                && !description.ends_with('\\')
                && !exe.is_empty()
                && !exe.contains(['/', '"', '\'', '\\'])
                && exe != "."
                && exe != ".."
                && !has_control(&wd)
                && !wd.is_empty()
                && wd != "."
                && wd != ".."
                && wd.trim_end() == wd
                && !wd.ends_with('\\');
            match render_unit(&spec, Scope::User) {
                Err(e) => {
                    prop_assert_eq!(e.kind, ErrorKind::InvalidSpec);
                    prop_assert!(!representable, "rejected a representable spec: {}", e.message);
                    return Ok(());
                }
                Ok(_) => prop_assert!(representable, "accepted an unrepresentable spec: {spec:?}"),
            }
            accepted.set(accepted.get() + 1);
            rt.block_on(async {
                if let Err(e) = m.install(&spec, AfterInstall::DontStart).await {
                    prop_assert!(false, "systemd refused a rendered spec: {}\n{spec:?}", e.message);
                }
                let path: zbus::OwnedObjectPath = conn
                    .call_method(
                        Some("org.freedesktop.systemd1"),
                        "/org/freedesktop/systemd1",
                        Some("org.freedesktop.systemd1.Manager"),
                        "LoadUnit",
                        &("parachute-roundtrip.service",),
                    )
                    .await
                    .unwrap()
                    .body()
                    .deserialize()
                    .unwrap();
                let svc = "org.freedesktop.systemd1.Service";
                let exec: Vec<ExecCommand> = property(&conn, &path, svc, "ExecStart").await;
                let loaded_env: Vec<String> = property(&conn, &path, svc, "Environment").await;
                let loaded_wd: String = property(&conn, &path, svc, "WorkingDirectory").await;
                let loaded_desc: String =
                    property(&conn, &path, "org.freedesktop.systemd1.Unit", "Description").await;
                prop_assert_eq!(exec.len(), 1);
                prop_assert_eq!(&exec[0].0, &argv0);
                prop_assert_eq!(&exec[0].1, &argv);
                let want_env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                prop_assert_eq!(loaded_env, want_env);
                prop_assert_eq!(loaded_wd, work);
                prop_assert_eq!(loaded_desc, description);
                Ok(())
            })
        })
        .unwrap();
    let accepted = accepted.get();
    assert!(accepted >= 8, "only {accepted} of 32 cases were representable; the generator is too hostile");
}
