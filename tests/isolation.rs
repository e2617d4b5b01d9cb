//! Tests cannot reach the host's service manager, home or bus by construction: every test
//! runs `parachute` through `support::parachute()` (or a wrapper built by
//! `support::isolated`), which starts from an empty environment with the system bus
//! pointed at nothing. This test keeps it that way: it fails when any test file starts the
//! binary another way or clears the environment of an isolated command (which would drop
//! the safe defaults).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_test_runs_parachute_through_the_isolated_builder() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files = Vec::new();
    rust_files(&tests, &mut files);
    assert!(files.len() > 5, "found only {files:?}");
    let me = Path::new(file!()).file_name().unwrap();
    let mut offences = Vec::new();
    for f in &files {
        if f.file_name() == Some(me) || f.ends_with("support/mod.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let raw_start = line.contains("Command::new(") && line.contains("parachute_bin");
            if raw_start {
                offences.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
        // A file that runs parachute (directly or through a script naming it in
        // PARACHUTE) must build its commands with support::isolated(): an environment
        // cleared by hand has no NO_SYSTEM_BUS, and a root test on a systemd host would
        // then reach the real system manager.
        let runs_parachute = text.contains("parachute_bin") || text.contains("\"PARACHUTE\"");
        if runs_parachute && !f.ends_with("support/hub.rs") {
            for (i, line) in text.lines().enumerate() {
                if line.contains(".env_clear()") {
                    offences.push(format!("{}:{}: env_clear() by hand: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
        // An isolated command whose environment is cleared again loses NO_SYSTEM_BUS.
        let chained =
            text.split("support::parachute()").skip(1).chain(text.split("support::isolated(").skip(1));
        for rest in chained {
            let stmt = rest.split(';').next().unwrap_or("");
            if stmt.contains("env_clear") {
                offences.push(format!("{}: env_clear() on an isolated command", f.display()));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "run parachute through support::parachute() / support::isolated():\n{}",
        offences.join("\n")
    );
}
