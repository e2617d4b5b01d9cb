//! Property test: whatever the renderer writes, the backend's own reader ([`read_unit`],
//! what `read_installed` uses) reads back to the same argv, environment, working directory,
//! log path and account. One escaping model, checked from both ends with hostile values
//! (quotes, backslashes, `%`, `$`, `;`, specifier look-alikes, unicode).

use std::path::{Path, PathBuf};

use parachute_manager::{CrashLoop, Readiness, Scope, UnitId, UnitSpec};
use parachute_systemd::{read_unit, render_unit};
use proptest::prelude::*;

const PLAIN: &[char] = &[
    ' ', '"', '\'', '\\', '%', '$', ';', '{', '}', '<', '>', '&', 'a', 'Z', '0', '_', '=', '#', '*', '~',
    '`', '!', '@', '-', ':', '+', '.', 'h', 'n', 'x', 'é', '€', '😀', '\u{200b}',
];

fn word() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PLAIN), 0..12).prop_map(|v| v.into_iter().collect())
}

/// A path component without `/`, quotes or backslashes in argv[0] (systemd refuses those).
fn component(exe: bool) -> impl Strategy<Value = String> {
    let safe: Vec<char> =
        PLAIN.iter().copied().filter(|c| !(exe && matches!(c, '"' | '\'' | '\\'))).collect();
    prop::collection::vec(prop::sample::select(safe), 1..8)
        .prop_map(|v| format!("p{}p", v.into_iter().collect::<String>()))
}

fn spec() -> impl Strategy<Value = UnitSpec> {
    (
        component(true),
        prop::collection::vec(word(), 0..6),
        prop::collection::vec(("[A-Z_][A-Z0-9_]{0,4}", word()), 0..5),
        component(false),
        component(false),
        prop::option::of("[a-z_][a-z0-9_.-]{0,8}"),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(exe, args, env, wd, log, user, notify, journal)| {
            let mut seen = std::collections::HashSet::new();
            UnitSpec {
                id: UnitId::new("rt").unwrap(),
                description: "round trip".into(),
                argv: std::iter::once(format!("/opt/{exe}")).chain(args).collect(),
                env: env.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect(),
                working_dir: Some(PathBuf::from(format!("/srv/{wd}"))),
                log_path: PathBuf::from(format!("/var/log/{log}/hub.log")),
                crash_loop: Some(CrashLoop { interval_sec: 300, burst: 5, throttle_sec: 5 }),
                run_as_user: user,
                readiness: if notify {
                    Readiness::Notify { start_timeout_sec: 90, watchdog_sec: Some(30) }
                } else {
                    Readiness::Exec
                },
                hardened: notify,
                log_to_journal: journal,
                log_file_args: Vec::new(),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rendered_units_read_back_equal(spec in spec()) {
        for scope in [Scope::User, Scope::System] {
            let text = match render_unit(&spec, scope) {
                Ok(t) => t,
                // Only what systemd would read differently is refused; the strategy avoids it
                // apart from the odd path or value with surrounding whitespace.
                Err(e) => {
                    prop_assert!(e.message.contains("whitespace") || e.message.contains("normal form"), "{}", e);
                    continue;
                }
            };
            let path = Path::new("/u/parachute-rt.service");
            let back = read_unit(path, text.as_bytes()).map_err(|e| TestCaseError::fail(e.message))?;
            prop_assert_eq!(&back.path, path);
            prop_assert_eq!(&back.bytes, text.as_bytes());
            prop_assert_eq!(&back.argv, &spec.argv);
            prop_assert_eq!(&back.env, &spec.env);
            prop_assert_eq!(&back.working_dir, &spec.working_dir);
            // A system unit, or one asking for it, logs to the journal: no file to read back.
            let log = (scope == Scope::User && !spec.log_to_journal).then_some(&spec.log_path);
            prop_assert_eq!(back.log_path.as_ref(), log);
            let user = if scope == Scope::System { spec.run_as_user.clone() } else { None };
            prop_assert_eq!(back.run_as_user, user);
        }
    }
}

#[test]
fn the_golden_units_read_back() {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../units");
    for name in ["parachute-hub.system.service", "parachute-hub.user.service"] {
        let bytes = std::fs::read(units.join(name)).unwrap();
        let u = read_unit(&units.join(name), &bytes).unwrap();
        assert_eq!(
            u.argv,
            ["/usr/local/bin/parachute", "serve", "--home", "/home/op/.parachute", "--port", "1939"],
            "{name}"
        );
        assert_eq!(u.env_var("PARACHUTE_HOME"), Some("/home/op/.parachute"));
        assert_eq!(u.log_path, None, "{name}: the hub logs to the journal");
        assert_eq!(u.run_as_user.is_some(), name.contains("system"), "{name}");
    }
}
