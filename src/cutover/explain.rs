//! The words for each outcome: what happened, the true state of the box (from
//! [`FinalState`], read after the fact), and the one command that continues from there.

use super::Config;
use super::plan::Outcome;
use super::report::FinalState;

/// Messages and the continuation command for `outcome`.
pub fn explain(
    outcome: Outcome,
    cfg: &Config,
    failure: &[String],
    state: &FinalState,
) -> (Vec<String>, Option<String>) {
    let mut lines: Vec<String> = Vec::new();
    let rerun = cfg.rerun.clone();
    if cfg.dry_run {
        lines.push(format!(
            "Dry run: nothing was changed. A real run would end {}.",
            match outcome {
                Outcome::Migrated => "migrated".to_owned(),
                o => format!("with outcome {}", o.as_str()),
            }
        ));
        lines.extend(failure.iter().cloned());
        let next = match outcome {
            Outcome::Migrated => rerun.replace(" --dry-run", ""),
            Outcome::AlreadyMigrated => return (lines, None),
            _ => {
                lines.push("Fix the cause above, then check again with:".to_owned());
                lines.push(format!("  {rerun}"));
                rerun
            }
        };
        return (lines, Some(next));
    }
    match outcome {
        Outcome::AlreadyMigrated => {
            lines.push(format!(
                "Already migrated: the hub unit runs under {} and /health answers from its main pid{}. Nothing was changed.",
                state.unit.manager,
                state.unit.main_pid.map(|p| format!(" {p}")).unwrap_or_default()
            ));
            return (lines, None);
        }
        Outcome::Migrated => {
            lines.push("✓ Migrated to the supervised model.".to_owned());
            lines.push(format!(
                "The hub now runs under the service manager ({}): the unit is enabled and restarted if it fails.",
                state.unit.manager
            ));
            lines.push("Modules are the hub's supervised children, started from services.json.".to_owned());
            lines.push(
                "Per-module verbs (`parachute start|stop|restart <svc>`) now drive the running hub."
                    .to_owned(),
            );
            for m in state.modules.iter().filter(|m| m.status != "running" || m.start_error.is_some()) {
                lines.push(format!(
                    "Note: module {} is {}{}.",
                    m.short,
                    m.status,
                    m.start_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
                ));
            }
            return (lines, None);
        }
        _ => {}
    }
    lines.push(match outcome {
        Outcome::NoManager => "The cutover stopped: no service manager is available.".to_owned(),
        Outcome::WriteFailed => "The cutover stopped: the hub unit could not be written.".to_owned(),
        Outcome::PortStuck => {
            "The cutover stopped: a declared port is held by a process it may not stop.".to_owned()
        }
        Outcome::StartFailed => {
            "The cutover stopped: the service manager could not start the hub unit.".to_owned()
        }
        Outcome::VerifyTimeout => {
            "The cutover stopped: the hub unit started but was not verified in time.".to_owned()
        }
        Outcome::ModuleFailed => {
            "The cutover stopped: the hub unit runs, but not every module came up under it.".to_owned()
        }
        Outcome::Locked => "The cutover did not start: another cutover or teardown is running.".to_owned(),
        Outcome::Unverifiable => {
            "The cutover stopped: it could not verify the processes and ports it would act on.".to_owned()
        }
        Outcome::AlreadyMigrated | Outcome::Migrated => unreachable!(),
    });
    lines.extend(failure.iter().cloned());
    lines.push("State of the box now:".to_owned());
    lines.extend(state.lines().into_iter().map(|l| format!("  {l}")));
    let nothing_runs_hub = !state.legacy_stopped.is_empty()
        && !state.unit.active
        && !state.legacy_running.iter().any(|n| n == "hub");
    if nothing_runs_hub {
        lines.push("Nothing runs the hub at the moment.".to_owned());
    }
    let next = match outcome {
        Outcome::NoManager if nothing_runs_hub => {
            lines.push("Run the hub in the foreground until a service manager is available:".to_owned());
            format!(
                "parachute serve --home {} --port {}",
                shell_quote(&cfg.home.root().to_string_lossy()),
                cfg.port
            )
        }
        Outcome::NoManager => {
            lines.push("Once a service manager (systemd, launchd) is reachable, run:".to_owned());
            rerun
        }
        Outcome::WriteFailed => {
            lines.push("Fix the cause above, then continue with:".to_owned());
            rerun
        }
        Outcome::PortStuck => {
            lines.push("Stop the process(es) named above yourself (the cutover never stops what it cannot attribute), then continue with:".to_owned());
            rerun
        }
        Outcome::StartFailed | Outcome::VerifyTimeout | Outcome::ModuleFailed => {
            lines.push(format!(
                "See the hub's log ({}), fix the cause, then continue with (it stops the unit and starts it again):",
                cfg.spec.log_path.display()
            ));
            rerun
        }
        Outcome::Locked => {
            lines.push("When it has finished, run:".to_owned());
            rerun
        }
        Outcome::Unverifiable => {
            lines.push(
                "Run it as a user who can see those processes (their owner, or root), then continue with:"
                    .to_owned(),
            );
            rerun
        }
        Outcome::AlreadyMigrated | Outcome::Migrated => unreachable!(),
    };
    lines.push(format!("  {next}"));
    (lines, Some(next))
}

/// Quotes `s` for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:@=,".contains(&b)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_cases() {
        assert_eq!(shell_quote("/home/op/.parachute"), "/home/op/.parachute");
        assert_eq!(shell_quote("/a b"), "'/a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
