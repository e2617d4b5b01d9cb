//! Plist rendering: golden files (byte for byte) and a round-trip property checked by two
//! independent readers, the `plist` crate and Python's `plistlib`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use parachute_launchd::{parse_plist, render_plist};
use parachute_manager::{CrashLoop, ErrorKind, Scope, UnitId, UnitSpec};
use proptest::prelude::*;

fn hub_spec() -> UnitSpec {
    let home = "/Users/op/.parachute";
    UnitSpec {
        id: UnitId::hub(),
        description: "Parachute hub (serve + supervisor)".into(),
        argv: vec!["/Users/op/.local/bin/parachute".into(), "serve".into(), "--home".into(), home.into()],
        env: vec![
            ("PARACHUTE_BIND_HOST".into(), "127.0.0.1".into()),
            ("PARACHUTE_HOME".into(), home.into()),
            ("PORT".into(), "1939".into()),
            (
                "PATH".into(),
                // The shape `parachute::hub_unit::hub_path` gives every backend (~/.local/bin last).
                "/Users/op/.bun/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/Users/op/.local/bin"
                    .into(),
            ),
        ],
        working_dir: Some(PathBuf::from(home)),
        log_path: PathBuf::from(format!("{home}/hub/logs/hub.log")),
        crash_loop: Some(CrashLoop { interval_sec: 300, burst: 5, throttle_sec: 10 }),
        run_as_user: Some("op".into()),
        readiness: parachute_manager::Readiness::Exec,
        hardened: false,
        log_to_journal: false,
        // As `parachute::hub_unit` gives it: the hub writes and rotates its log itself.
        log_file_args: vec!["--log-file".into(), format!("{home}/hub/logs/hub.log")],
    }
}

fn bare_spec() -> UnitSpec {
    UnitSpec {
        id: UnitId::new("vault").unwrap(),
        description: "minimal".into(),
        argv: vec!["/usr/local/bin/vault".into()],
        env: vec![],
        working_dir: None,
        log_path: PathBuf::from("/Users/op/.parachute/vault/vault.log"),
        crash_loop: None,
        run_as_user: None,
        readiness: parachute_manager::Readiness::Exec,
        hardened: false,
        log_to_journal: false,
        log_file_args: Vec::new(),
    }
}

/// Compares with `units/<name>`; never writes it. On a mismatch the rendered bytes are left
/// next to the test binary's temp dir for review, and the diff is in the message.
fn assert_golden(name: &str, rendered: &[u8]) {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../units").join(name);
    let actual_copy = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.actual"));
    let Ok(expected) = std::fs::read(&golden) else {
        std::fs::write(&actual_copy, rendered).unwrap();
        panic!(
            "golden file {} is missing; review {} and copy it there if it is right",
            golden.display(),
            actual_copy.display()
        );
    };
    if expected != rendered {
        std::fs::write(&actual_copy, rendered).unwrap();
        let (e, r) = (String::from_utf8_lossy(&expected), String::from_utf8_lossy(rendered));
        let diff = similar::TextDiff::from_lines(e.as_ref(), r.as_ref())
            .unified_diff()
            .header(&golden.display().to_string(), "rendered")
            .to_string();
        panic!(
            "rendered plist differs from {} (rendered copy: {}):\n{diff}",
            golden.display(),
            actual_copy.display()
        );
    }
}

#[test]
fn golden_hub_agent_and_daemon_and_bare_agent() {
    assert_golden("computer.parachute.hub.agent.plist", &render_plist(&hub_spec(), Scope::User).unwrap());
    assert_golden("computer.parachute.hub.daemon.plist", &render_plist(&hub_spec(), Scope::System).unwrap());
    assert_golden("computer.parachute.vault.agent.plist", &render_plist(&bare_spec(), Scope::User).unwrap());
}

#[test]
fn goldens_are_what_plistlib_reads() {
    // The golden files themselves must parse as the spec says, independently of our code.
    let mut py = Plistlib::start();
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../units/computer.parachute.hub.daemon.plist");
    let parsed = py.parse(&std::fs::read(golden).unwrap());
    assert_eq!(parsed, expected_json(&hub_spec(), Scope::System));
}

#[test]
fn every_hostile_but_legal_value_round_trips() {
    // Deterministic companion of the property: all the nasty-but-legal strings at once.
    let nasty = [
        " lead",
        "trail ",
        "\"q\"",
        "'s'",
        "back\\slash",
        "100%",
        "%h",
        "$HOME",
        "${X}",
        "a;b",
        "<tag>",
        "a&b",
        "&amp;",
        "]]>",
        "-->",
        "<!-- c -->",
        "<![CDATA[x]]>",
        "é日本🪂",
        "\u{85}\u{2028}",
        "",
    ];
    let mut spec = bare_spec();
    spec.argv.extend(nasty.iter().map(|s| s.to_string()));
    spec.env = nasty.iter().enumerate().map(|(i, v)| (format!("K{i}"), v.to_string())).collect();
    spec.working_dir = Some(PathBuf::from("/srv/a dir/<&>"));
    let bytes = render_plist(&spec, Scope::User).unwrap();
    let mut py = Plistlib::start();
    assert_eq!(py.parse(&bytes), expected_json(&spec, Scope::User));
    assert_eq!(
        serde_json::to_value(parse_plist(&bytes).unwrap()).unwrap(),
        expected_json(&spec, Scope::User)
    );
}

/// One long-lived `python3` running `plistlib.loads` on length-prefixed documents and
/// answering with one JSON line each (one process for all proptest cases, not 256).
struct Plistlib {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

const PY: &str = r#"
import json, plistlib, sys
inp, out = sys.stdin.buffer, sys.stdout
while True:
    line = inp.readline()
    if not line:
        break
    data = inp.read(int(line))
    try:
        out.write(json.dumps(plistlib.loads(data)) + "\n")
    except Exception as e:
        out.write(json.dumps({"__error__": repr(e)}) + "\n")
    out.flush()
"#;

impl Plistlib {
    fn start() -> Plistlib {
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", PY])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 at /usr/bin/python3");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Plistlib { child, stdin, stdout }
    }

    fn parse(&mut self, doc: &[u8]) -> serde_json::Value {
        writeln!(self.stdin, "{}", doc.len()).unwrap();
        self.stdin.write_all(doc).unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("python answered {line:?}: {e}"))
    }
}

impl Drop for Plistlib {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a correct reader must see, built from the spec without the renderer.
fn expected_json(spec: &UnitSpec, scope: Scope) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("Label".into(), format!("computer.parachute.{}", spec.id).into());
    let argv: Vec<String> = spec.argv.iter().chain(&spec.log_file_args).cloned().collect();
    m.insert("ProgramArguments".into(), argv.into());
    let mut env: serde_json::Map<String, serde_json::Value> =
        spec.env.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    if let Some(c) = spec.crash_loop {
        env.entry("PARACHUTE_BOOT_BUDGET").or_insert(format!("{}/{}", c.burst, c.interval_sec).into());
    }
    if !env.is_empty() {
        m.insert("EnvironmentVariables".into(), env.into());
    }
    if let Some(d) = &spec.working_dir {
        m.insert("WorkingDirectory".into(), d.to_str().unwrap().into());
    }
    m.insert("RunAtLoad".into(), true.into());
    m.insert(
        "KeepAlive".into(),
        if spec.crash_loop.is_some() { serde_json::json!({ "SuccessfulExit": false }) } else { true.into() },
    );
    if let Some(c) = spec.crash_loop {
        m.insert("ThrottleInterval".into(), c.throttle_sec.into());
    }
    let log = spec.log_path.to_str().unwrap();
    m.insert("StandardOutPath".into(), log.into());
    m.insert("StandardErrorPath".into(), log.into());
    if scope == Scope::System
        && let Some(u) = &spec.run_as_user
    {
        m.insert("UserName".into(), u.clone().into());
    }
    m.into()
}

/// Characters the renderer must refuse (see the `render` module doc).
fn forbidden(c: char) -> bool {
    c < ' ' || c == '\u{7f}' || c == '\u{fffe}' || c == '\u{ffff}'
}

fn hostile_string() -> impl Strategy<Value = String> {
    let specials = prop::sample::select(vec![
        " ",
        "\"",
        "'",
        "\\",
        "%",
        "%h",
        "$",
        "${X}",
        ";",
        "<",
        ">",
        "&",
        "&amp;",
        "]]>",
        "-->",
        "<!--",
        "<![CDATA[",
        "é",
        "日本",
        "🪂",
        "\u{85}",
        "\u{2028}",
        "\t",
        "\n",
        "\r",
        "\0",
        "\u{fffe}",
        "  ",
    ]);
    prop::collection::vec(
        prop_oneof![4 => specials.prop_map(str::to_owned), 1 => any::<char>().prop_map(String::from)],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

fn arb_spec() -> impl Strategy<Value = UnitSpec> {
    (
        prop::collection::vec(hostile_string(), 0..4),
        prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,8}", hostile_string(), 0..4),
        hostile_string(),
        proptest::option::of(hostile_string()),
        any::<bool>(),
    )
        .prop_map(|(args, env, log_leaf, dir_leaf, clean)| {
            // Half the specs are scrubbed of forbidden characters, so both outcomes
            // (rendered and rejected) are exercised often.
            let scrub = |s: String| if clean { s.chars().filter(|&c| !forbidden(c)).collect() } else { s };
            let mut argv = vec!["/opt/my app/bin/x".to_owned()];
            argv.extend(args.into_iter().map(scrub));
            let env = env.into_iter().map(|(k, v)| (k, scrub(v)));
            let (log_leaf, dir_leaf) = (scrub(log_leaf), dir_leaf.map(scrub));
            UnitSpec {
                id: UnitId::new("prop").unwrap(),
                description: String::new(),
                argv,
                env: env.collect(),
                working_dir: dir_leaf.map(|l| PathBuf::from(format!("/srv/{l}"))),
                log_path: PathBuf::from(format!("/var/log/{log_leaf}")),
                crash_loop: Some(CrashLoop { interval_sec: 1, burst: 1, throttle_sec: 7 }),
                run_as_user: Some("_parachute".into()),
                readiness: parachute_manager::Readiness::Exec,
                hardened: false,
                log_to_journal: false,
                log_file_args: Vec::new(),
            }
        })
}

fn strings_of(spec: &UnitSpec) -> Vec<String> {
    let mut all: Vec<String> = spec.argv.clone();
    all.extend(spec.env.iter().map(|(_, v)| v.clone()));
    all.push(spec.log_path.to_str().unwrap().to_owned());
    all.extend(spec.working_dir.iter().map(|d| d.to_str().unwrap().to_owned()));
    all
}

static PY_READER: Mutex<Option<Plistlib>> = Mutex::new(None);

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_value_round_trips_through_two_readers_or_is_rejected(spec in arb_spec(), system in any::<bool>()) {
        let scope = if system { Scope::System } else { Scope::User };
        let must_reject = strings_of(&spec).iter().any(|s| s.chars().any(forbidden));
        match render_plist(&spec, scope) {
            Err(e) => {
                prop_assert_eq!(e.kind, ErrorKind::InvalidSpec);
                prop_assert!(must_reject, "rejected a representable spec: {}", e);
            }
            Ok(bytes) => {
                prop_assert!(!must_reject, "rendered a spec with a forbidden character");
                let expected = expected_json(&spec, scope);
                // Reader 1: the plist crate, compared field by field via JSON.
                let value = parse_plist(&bytes).expect("our own output parses");
                let via_crate = serde_json::to_value(&value).unwrap();
                prop_assert_eq!(&via_crate, &expected);
                // Reader 2: Python's plistlib (expat), independent of our dependencies.
                let mut guard = PY_READER.lock().unwrap();
                let py = guard.get_or_insert_with(Plistlib::start);
                let via_python = py.parse(&bytes);
                prop_assert_eq!(&via_python, &expected, "plistlib read {}", String::from_utf8_lossy(&bytes));
            }
        }
    }
}
