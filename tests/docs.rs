//! The generated documentation cannot drift from the binary: every subcommand (at any
//! depth) has help text and documented arguments, `parachute man --out DIR` writes one page
//! per subcommand, `parachute completions bash|zsh|fish` know every verb, and the hand-written
//! pages in docs/ name every verb, exit code, start error and migrate outcome.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use clap::CommandFactory;
use parachute::cli::Cli;
use parachute::cutover::Outcome;

use crate::support::hub::wait_output;

fn run(args: &[&str]) -> Output {
    let child = crate::support::parachute()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(30))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every visible subcommand as its path of names (`["unit", "install"]`).
fn subcommand_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_owned());
            out.push(path.clone());
            walk(sub, &path, out);
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), &[], &mut out);
    out
}

fn top_level() -> Vec<String> {
    subcommand_paths().into_iter().filter(|p| p.len() == 1).map(|p| p[0].clone()).collect()
}

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
}

fn doc(name: &str) -> String {
    let path = docs_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_subcommand_has_help_and_every_argument_is_documented() {
    let paths = subcommand_paths();
    assert!(paths.len() >= 18, "{paths:?}");
    let root = Cli::command();
    for path in &paths {
        let mut cmd = &root;
        for name in path {
            cmd = cmd.find_subcommand(name).unwrap();
        }
        let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
        assert!(about.trim().len() > 10, "`parachute {}` has no about text", path.join(" "));
        for arg in cmd.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "help" | "version")) {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                !help.trim().is_empty(),
                "`parachute {}`: argument {} has no help",
                path.join(" "),
                arg.get_id()
            );
        }
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = run(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
        let help = text(&out.stdout);
        assert!(help.contains(&format!("Usage: parachute {}", path.join(" "))), "{args:?}:\n{help}");
        assert!(help.contains("Exit codes"), "{args:?} documents its exit codes:\n{help}");
        let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            words(&help).contains(&words(about.trim_end_matches('.'))),
            "{args:?} shows its about:\n{help}"
        );
    }
    let out = run(&["--help"]);
    let help = text(&out.stdout);
    for name in top_level() {
        assert!(help.contains(&format!("\n  {name} ")), "--help lists {name}:\n{help}");
    }
    assert!(help.contains("Exit codes:"), "{help}");
}

#[test]
fn man_writes_one_page_per_subcommand_and_the_top_page_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let out = run(&["man", "--out", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let top = std::fs::read_to_string(out_dir.join("parachute.1")).unwrap();
    assert!(top.contains(".TH parachute 1"), "{top}");
    for name in top_level() {
        assert!(
            top.contains(&format!("parachute\\-{}(1)", name.replace('-', "\\-"))),
            "parachute.1 lists {name}"
        );
    }
    let mut expected = vec!["parachute.1".to_owned()];
    for path in subcommand_paths() {
        let file = format!("parachute-{}.1", path.join("-"));
        let page = std::fs::read_to_string(out_dir.join(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(page.contains(".SH NAME") && page.contains(".SH SYNOPSIS"), "{file}:\n{page}");
        expected.push(file);
    }
    let mut written: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    expected.sort();
    assert_eq!(written, expected, "exactly one page per subcommand, no help page, no temp files");

    // A second run rewrites nothing (compare before write).
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = mtime(&out_dir.join("parachute.1"));
    assert_eq!(run(&["man", "--out", out_dir.to_str().unwrap()]).status.code(), Some(0));
    assert_eq!(mtime(&out_dir.join("parachute.1")), before);

    // Without --out: the top page on stdout.
    let out = run(&["man"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), top);

    // An --out that cannot be created is named.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let bad = file.join("sub");
    let out = run(&["man", "--out", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&bad.display().to_string()), "{}", text(&out.stderr));
}

#[test]
fn completions_know_every_verb_in_every_shell() {
    let unit_verbs: Vec<String> = subcommand_paths()
        .into_iter()
        .filter(|p| p.len() == 2 && p[0] == "unit")
        .map(|p| p[1].clone())
        .collect();
    assert!(unit_verbs.len() >= 8, "{unit_verbs:?}");
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for name in top_level().iter().chain(&unit_verbs) {
            assert!(script.contains(name.as_str()), "{shell} completion names {name}");
        }
        for flag in ["--to-supervised", "--teardown", "--home", "--follow"] {
            assert!(script.contains(flag.trim_start_matches('-')), "{shell} completion knows {flag}");
        }
    }
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");
    assert!(text(&out.stderr).contains("bash"), "{}", text(&out.stderr));
}

/// Every outcome, by an exhaustive match: a new outcome fails to compile here until the
/// troubleshooting page is taught about it.
fn all_outcomes() -> Vec<Outcome> {
    let all = [
        Outcome::AlreadyMigrated,
        Outcome::Migrated,
        Outcome::NoManager,
        Outcome::WriteFailed,
        Outcome::PortStuck,
        Outcome::StartFailed,
        Outcome::VerifyTimeout,
        Outcome::ModuleFailed,
        Outcome::Locked,
        Outcome::Unverifiable,
    ];
    for o in all {
        match o {
            Outcome::AlreadyMigrated
            | Outcome::Migrated
            | Outcome::NoManager
            | Outcome::WriteFailed
            | Outcome::PortStuck
            | Outcome::StartFailed
            | Outcome::VerifyTimeout
            | Outcome::ModuleFailed
            | Outcome::Locked
            | Outcome::Unverifiable => {}
        }
    }
    all.to_vec()
}

#[test]
fn the_hand_written_pages_cover_every_verb_outcome_and_start_error() {
    for page in ["architecture.md", "platforms.md", "migrate.md", "troubleshooting.md", "cli.md"] {
        assert!(doc(page).len() > 1000, "docs/{page} exists and says something");
    }
    let cli = doc("cli.md");
    for path in subcommand_paths() {
        let verb = format!("parachute {}", path.join(" "));
        assert!(cli.contains(&verb), "docs/cli.md mentions `{verb}`");
    }
    for line in parachute::cli::exit::HELP_TABLE.lines().skip(1) {
        let code = line.split_whitespace().next().unwrap();
        assert!(cli.contains(&format!("| {code} |")), "docs/cli.md has a row for exit code {code}");
    }
    let trouble = doc("troubleshooting.md");
    let migrate = doc("migrate.md");
    for o in all_outcomes() {
        let name = o.as_str();
        assert!(trouble.contains(&format!("`{name}`")), "troubleshooting.md covers outcome {name}");
        assert!(migrate.contains(&format!("`{name}`")), "migrate.md covers outcome {name}");
        let code = parachute::cli::migrate::exit_code(o) as u8;
        assert!(migrate.contains(&format!("| `{name}` | {code} |")), "migrate.md gives {name} exit {code}");
    }
    for e in ["missing_dependency", "non_executable", "spawn_failed", "port_squatter", "started_but_unbound"]
    {
        assert!(trouble.contains(&format!("### `{e}`")), "troubleshooting.md has a section for {e}");
    }
}

/// The upstream codes (`R7`, `W39`, `hub#536`, `#43001`, `§8.1`) a comment line cites.
fn cited_codes(comment: &str) -> Vec<String> {
    let chars: Vec<char> = comment.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let digits_from = |i: usize| chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0 || !word(chars[i - 1]);
        let c = chars[i];
        let code = if boundary && (c == 'R' || c == 'W') {
            let n = digits_from(i + 1);
            let end = i + 1 + n;
            (n > 0 && chars.get(end).is_none_or(|&c| !word(c))).then(|| (end, chars[i..end].iter().collect()))
        } else if boundary && chars[i..].starts_with(&['h', 'u', 'b', '#']) {
            let n = digits_from(i + 4);
            (n > 0).then(|| (i + 4 + n, chars[i..i + 4 + n].iter().collect()))
        } else if c == '#' && (i == 0 || !word(chars[i - 1])) {
            let n = digits_from(i + 1);
            (n > 0).then(|| (i + 1 + n, chars[i..i + 1 + n].iter().collect()))
        } else if c == '§' {
            let mut end = i + 1 + digits_from(i + 1);
            while chars.get(end) == Some(&'.') && end + 1 < chars.len() && chars[end + 1].is_ascii_digit() {
                end += 1 + digits_from(end + 1);
            }
            (end > i + 1).then(|| (end, chars[i..end].iter().collect()))
        } else {
            None
        };
        match code {
            Some((end, text)) => {
                out.push(text);
                i = end;
            }
            None => i += 1,
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "target" || n.to_string_lossy().starts_with('.')) {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_code_scanner_finds_every_kind_of_code() {
    assert_eq!(
        cited_codes(" R1/R2, R7(d) and W9/W6; hub#536, systemd #43001, anchors §3.2 and §9.2)."),
        ["R1", "R2", "R7", "W9", "W6", "hub#536", "#43001", "§3.2", "§9.2"]
    );
    assert!(cited_codes(" RFC 3339, W3C, PR, 0x1F, R2D2, #[derive], issue#12 ").is_empty());
}

#[test]
fn every_code_cited_in_a_comment_is_explained_in_upstream_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let upstream = doc("upstream.md");
    let explained: std::collections::HashSet<&str> = upstream
        .lines()
        .filter_map(|l| l.strip_prefix("- **")?.split_once("**").map(|(code, _)| code))
        .collect();
    let mut files = Vec::new();
    for dir in ["src", "platform", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "{}", files.len());
    let mut missing = Vec::new();
    let mut cited = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let Some(at) = line.find("//") else { continue };
            for code in cited_codes(&line[at + 2..]) {
                cited += 1;
                if !explained.contains(code.as_str()) {
                    missing.push(format!("{}:{}: {code}", file.strip_prefix(root).unwrap().display(), n + 1));
                }
            }
        }
    }
    assert!(cited > 100, "the scan found only {cited} citations");
    assert!(missing.is_empty(), "codes cited but not explained in docs/upstream.md:\n{}", missing.join("\n"));
}
