//! `parachute upgrade --in-place`: replace the running hub's image with the binary at the
//! path it was started from (the unit's `ExecStart` path), keeping its pid and every module
//! process (issue 17; the hub side is in docs/architecture.md, "In-place upgrade").
//!
//! The verb only asks: the hub checks the new binary (`serve --check-handover`, a dry run)
//! before it execs, so a broken build is refused and the old hub runs on. The verb then
//! waits until the same pid answers `/health` as the next generation, and compares the
//! module pids before and after.

use std::time::Duration;

use serde_json::json;

use crate::client::{Hub, InPlaceUpgrade, UpgradeError};

use super::HostEnv;
use super::exit::{self, Code};
use super::host::{HomeArg, resolve_home};

/// Arguments of `upgrade`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The hub re-executes the binary at the path it was started from (a package upgrade puts the \
new build there), with the same pid: the service manager does not see a restart, and every \
module keeps its process, its port and its output pipe. The new binary must first pass a dry \
run (`serve --check-handover`); if it does not, the hub keeps running as it was and this \
command prints why. A restart onto the new binary is `parachute unit restart` instead.

Exit codes: 0 the hub now runs the new build with the same pid; 1 the hub refused (the new \
binary is not trusted or failed its dry run; nothing changed), another upgrade is under way, \
the hub is shutting down or cannot upgrade in place, or it did not come back as the new \
build within --timeout; 2 bad usage; 3 no hub running; 7 something else answers on the \
hub's port.")]
pub struct Args {
    /// Replace the hub's image in place (execve, same pid), keeping every module running.
    /// Required: it is the only kind of upgrade this verb does.
    #[arg(long)]
    pub in_place: bool,
    /// Where the Parachute home is.
    #[command(flatten)]
    pub home: HomeArg,
    /// How long to wait for the hub to check the new binary and answer as the new build,
    /// in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    /// Print one JSON object instead of sentences.
    #[arg(long)]
    pub json: bool,
}

/// The exit code of a failed upgrade.
fn code_of(e: &UpgradeError) -> Code {
    match e {
        UpgradeError::Client(c) => super::modules::code_of(c),
        UpgradeError::Refused(_)
        | UpgradeError::BinaryUnusable(_)
        | UpgradeError::InProgress(_)
        | UpgradeError::ShuttingDown(_)
        | UpgradeError::Unsupported { .. }
        | UpgradeError::NoAnswer { .. }
        | UpgradeError::NotBack { .. }
        | UpgradeError::PidChanged { .. } => Code::Failure,
    }
}

/// Runs `upgrade`.
pub fn run(args: Args, env: &HostEnv) -> Code {
    let verb = "upgrade";
    if !args.in_place {
        let msg = "say --in-place: it is the only upgrade this verb does (a restart onto a new binary is `parachute unit restart`).";
        return fail(verb, args.json, "usage", msg, Code::Usage);
    }
    if args.timeout == 0 {
        return fail(verb, args.json, "usage", "--timeout must be at least 1 second.", Code::Usage);
    }
    let home = match resolve_home(&args.home, env) {
        Ok(h) => h,
        Err(c) => return c,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    let result = rt.block_on(async {
        let hub = Hub::connect(&home).await.map_err(UpgradeError::Client)?;
        hub.upgrade_in_place(Duration::from_secs(args.timeout)).await
    });
    match result {
        Ok(done) => {
            if args.json {
                let mut v = serde_json::to_value(&done).expect("the report serializes");
                v["verb"] = json!(verb);
                v["ok"] = json!(true);
                v["exit_code"] = json!(Code::Success as u8);
                println!("{v:#}");
            } else {
                println!("{}", summary(&done));
                for r in &done.restarted {
                    let pid = |p: Option<u32>| p.map_or_else(|| "none".to_owned(), |p| p.to_string());
                    println!(
                        "  {} runs a new process (pid {} → {}); the hub's log says why it was not kept.",
                        crate::text::field(&r.short),
                        pid(r.pid_before),
                        pid(r.pid_after)
                    );
                }
            }
            Code::Success
        }
        Err(e) => fail(verb, args.json, e.json_code(), &e.to_string(), code_of(&e)),
    }
}

/// The one line of a finished upgrade.
pub fn summary(done: &InPlaceUpgrade) -> String {
    let build = |b: &Option<String>| b.as_deref().map_or_else(|| "unknown".to_owned(), short_build);
    format!(
        "upgraded in place: build {} → {} ({}), pid {} kept, {} module{} kept running.",
        build(&done.from_build),
        build(&done.to_build),
        done.binary.display(),
        done.pid,
        done.kept.len(),
        if done.kept.len() == 1 { "" } else { "s" }
    )
}

/// The first 12 hex digits of a build id (as `git` shortens a commit), enough to tell
/// builds apart in a sentence; `--json` has the whole id.
fn short_build(id: &str) -> String {
    id.chars().take(12).collect()
}

fn fail(verb: &str, json: bool, code: &str, message: &str, exit_code: Code) -> Code {
    if json {
        let v = json!({
            "verb": verb,
            "ok": false,
            "error": code,
            "error_description": message,
            "exit_code": exit_code as u8,
        });
        println!("{v:#}");
    } else {
        exit::print_error(verb, message, &[]);
    }
    exit_code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{KeptModule, RestartedModule};

    #[test]
    fn the_summary_names_builds_pid_and_modules_kept() {
        let done = InPlaceUpgrade {
            pid: 42,
            binary: "/usr/bin/parachute".into(),
            from_build: Some("0123456789abcdef0123".into()),
            to_build: None,
            generation: 1,
            kept: vec![KeptModule { short: "vault".into(), pid: 7 }],
            restarted: vec![RestartedModule { short: "x".into(), pid_before: Some(8), pid_after: Some(9) }],
        };
        let s = summary(&done);
        assert_eq!(
            s,
            "upgraded in place: build 0123456789ab → unknown (/usr/bin/parachute), pid 42 kept, 1 module kept running."
        );
    }

    #[test]
    fn refusals_and_timeouts_exit_1_and_no_hub_exits_3() {
        assert_eq!(code_of(&UpgradeError::Refused("x".into())), Code::Failure);
        let t = UpgradeError::NotBack { after: Duration::from_secs(1), last: "x".into() };
        assert_eq!(code_of(&t), Code::Failure);
        let no_hub = UpgradeError::Client(crate::client::ClientError::NoHub {
            home: "/h".into(),
            port: 1,
            detail: String::new(),
        });
        assert_eq!(code_of(&no_hub), Code::NoHub);
    }
}
