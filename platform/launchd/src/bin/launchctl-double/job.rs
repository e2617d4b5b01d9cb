//! The per-service supervisor: the double's stand-in for launchd running one job.
//!
//! `bootstrap` starts one of these (`launchctl-double __job <target>`) in its own session.
//! It spawns the job's `ProgramArguments` as a real process (own session, so the job's
//! process group can be signalled as launchd does; `PR_SET_PDEATHSIG` so the job cannot
//! outlive its supervisor), applies `RunAtLoad`, `KeepAlive` and `ThrottleInterval`,
//! honours `kickstart` requests, and on bootout sends SIGTERM, waits `ExitTimeOut`, then
//! SIGKILLs the group and unlists the service (after the configured delay, which is how the
//! double makes bootout asynchronous).
//!
//! It ends with its service, when the state directory disappears, or when the test
//! process that owns the state is gone, so no test can leak a job.

use std::fs::OpenOptions;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::state::{Store, now_ms};

const TICK: Duration = Duration::from_millis(20);

enum Next {
    Continue,
    Exit,
}

pub fn supervise(store: &Store, target: &str) -> i32 {
    let me = std::process::id() as i32;
    let mut child: Option<Child> = None;
    let mut last_spawn: Option<Instant> = None;
    let mut next_spawn: Option<Instant> = None;
    let mut term_sent: Option<Instant> = None;
    let mut exited_at: Option<Instant> = None;
    let mut respawn_after_exit = false;
    let mut handled_kick: Option<u64> = None;
    loop {
        let step = store.with(|st| {
            if st.owner_pid > 0 && !alive(st.owner_pid) {
                return Next::Exit;
            }
            let ghost_ms = st.config.ghost_ms;
            let delay = Duration::from_millis(st.config.bootout_delay_ms);
            let Some(svc) = st.services.get_mut(target) else { return Next::Exit };
            if svc.supervisor != me {
                return Next::Exit;
            }
            let now = Instant::now();
            if handled_kick.is_none() {
                handled_kick = Some(svc.kick);
                if svc.run_at_load || svc.keep_alive {
                    next_spawn = Some(now);
                }
            }
            // Reap.
            if let Some(c) = child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let pgid = Pid::from_raw(c.id() as i32);
                // launchd kills what is left of the job's process group.
                let _ = killpg(pgid, Signal::SIGKILL);
                child = None;
                svc.pid = None;
                svc.state = "not running".into();
                svc.last_exit_code = status.code();
                svc.last_signal = status.signal();
                if svc.booting_out {
                    exited_at = Some(now);
                } else if respawn_after_exit {
                    respawn_after_exit = false;
                    next_spawn = Some(now);
                } else if svc.keep_alive && (svc.restart_on_success || status.code() != Some(0)) {
                    let throttle = Duration::from_millis(svc.throttle_ms);
                    let at = last_spawn.map_or(now, |t| (t + throttle).max(now));
                    next_spawn = Some(at);
                    if at > now {
                        svc.state = "spawn scheduled".into();
                    }
                }
            }
            if svc.booting_out {
                next_spawn = None;
                match child.as_ref() {
                    Some(c) => {
                        let pgid = Pid::from_raw(c.id() as i32);
                        match term_sent {
                            None => {
                                let _ = killpg(pgid, Signal::SIGTERM);
                                term_sent = Some(now);
                            }
                            Some(t) if now - t >= Duration::from_millis(svc.exit_timeout_ms) => {
                                let _ = killpg(pgid, Signal::SIGKILL);
                            }
                            Some(_) => {}
                        }
                    }
                    None => {
                        let since = *exited_at.get_or_insert(now);
                        if now - since >= delay {
                            st.services.remove(target);
                            if ghost_ms > 0 {
                                st.ghosts.insert(target.to_owned(), now_ms() + ghost_ms);
                            }
                            return Next::Exit;
                        }
                    }
                }
                return Next::Continue;
            }
            if handled_kick != Some(svc.kick) {
                handled_kick = Some(svc.kick);
                match child.as_ref() {
                    Some(c) if svc.kick_kill => {
                        let _ = killpg(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
                        respawn_after_exit = true;
                    }
                    Some(_) => {}
                    None => next_spawn = Some(now),
                }
            }
            if child.is_none() && next_spawn.is_some_and(|t| t <= now) {
                next_spawn = None;
                last_spawn = Some(now);
                svc.runs += 1;
                match spawn(svc) {
                    Ok(c) => {
                        svc.pid = Some(c.id() as i32);
                        svc.state = "running".into();
                        child = Some(c);
                    }
                    Err(e) => {
                        // launchd reports a job it could not exec as exited with EX_CONFIG.
                        eprintln!("launchctl-double: could not spawn {}: {e}", svc.label);
                        svc.last_exit_code = Some(78);
                        svc.state = "not running".into();
                        if svc.keep_alive {
                            next_spawn = Some(now + Duration::from_millis(svc.throttle_ms));
                            svc.state = "spawn scheduled".into();
                        }
                    }
                }
            }
            Next::Continue
        });
        match step {
            Ok(Next::Continue) => {}
            Ok(Next::Exit) | Err(_) => {
                kill_job(&mut child);
                return 0;
            }
        }
        std::thread::sleep(TICK);
    }
}

fn spawn(svc: &crate::state::Service) -> std::io::Result<Child> {
    let (program, args) =
        svc.program_args.split_first().ok_or_else(|| std::io::Error::other("empty ProgramArguments"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        // launchd's default job environment, plus the plist's variables.
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .env("XPC_SERVICE_NAME", &svc.label)
        .envs(svc.env.iter().map(|(k, v)| (k, v)))
        .current_dir(svc.working_dir.as_deref().unwrap_or("/"))
        .stdin(Stdio::null())
        .stdout(output(svc.stdout.as_deref())?)
        .stderr(output(svc.stderr.as_deref())?);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The double's jobs die with it (Linux only; on other systems the double's
            // `kill_job` on exit is the only cleanup, which is all a test run needs).
            #[cfg(target_os = "linux")]
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

fn output(path: Option<&str>) -> std::io::Result<Stdio> {
    match path {
        Some(p) => Ok(OpenOptions::new().create(true).append(true).open(p)?.into()),
        None => Ok(Stdio::null()),
    }
}

fn kill_job(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = killpg(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err_and(|e| e == nix::errno::Errno::ESRCH) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat.rsplit_once(") ").is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}
