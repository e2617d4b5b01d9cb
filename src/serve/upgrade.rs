//! The in-place upgrade, the hub's side (issue 17; docs/architecture.md, "In-place
//! upgrade"): the running hub replaces its own image with the binary at the path it was
//! started from, keeping its pid, its control listener and every module.
//!
//! The old image, asked through the API ([`Ask`]):
//! 1. checks that the binary is one the hub's user can trust ([`trusted_binary`]: owned by
//!    root or that user, on a path nobody else can write) — a root hub never runs what a
//!    local user could have put there;
//! 2. runs it as `serve --check-handover <fd>` on a document of the current state (a dry
//!    run: the new binary must start, read this format and recognise its writer) and only
//!    on its exit 0 answers the API "handing over";
//! 3. stops serving (new connections wait in the listener's backlog), freezes every module
//!    (`supervisor::handover`), flushes the output, writes the document and `execve`s from
//!    the spawner thread ([`exec`]). If the exec fails, everything resumes.
//!
//! The new image ([`receive`], [`adopt_all`]) reads the document, takes the listener back,
//! and adopts every module whose child it can prove is the one handed over; the rest are
//! started afresh by boot, each with its reason in the log.

use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use parachute_process::{SpawnSpec, Spawned, Spawner};
use tokio::sync::oneshot;

use super::handover::{HandedModule, Handover, HandoverError, Verdict};
use crate::supervisor::Supervisor;
use crate::supervisor::handover::{AdoptedChild, AdoptedModule, Freeze};

/// How long the new binary's dry run may take.
const DRY_RUN_TIMEOUT: Duration = Duration::from_secs(15);

/// The most of the dry run's output kept for the refusal message.
const DRY_RUN_OUTPUT: u64 = 16 * 1024;

/// How long every module gets to freeze (an actor in the middle of a stop finishes it first).
pub const FREEZE_WITHIN: Duration = Duration::from_secs(10);

/// How the hub was started, so that it can start itself again in place.
#[derive(Debug, Clone)]
pub struct Reexec {
    /// The binary's path as the hub was started (the unit's `ExecStart` path).
    pub program: PathBuf,
    /// Its arguments after `argv[0]`.
    pub args: Vec<OsString>,
    /// Its whole environment (without [`FD_ENV`]).
    pub env: Vec<(OsString, OsString)>,
}

/// What the API answers when the hub is about to exec (the dry run passed).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// Always `handing_over`.
    pub status: &'static str,
    /// The binary that will be exec'd.
    pub binary: String,
    /// The running build.
    pub from_build: Option<String>,
    /// The new binary's build.
    pub to_build: Option<String>,
    /// The hub's pid, which stays.
    pub pid: u32,
    /// The current generation; the new image reports one more.
    pub generation: u32,
}

/// Why an upgrade was not attempted.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The binary cannot serve at all (it did not start, crashed, hung, or answered the dry
    /// run as no `parachute` would): a restart onto it would take the hub down too. `false`
    /// when it is untrusted, or a `parachute` that refuses the hand-over (another format, or
    /// an older build without the dry run), which may well start afresh.
    pub unusable: bool,
    /// Why, for people.
    pub why: String,
}

impl Refusal {
    fn refused(why: String) -> Refusal {
        Refusal { unusable: false, why }
    }

    fn unusable(why: String) -> Refusal {
        Refusal { unusable: true, why }
    }
}

/// Whether a failed dry run came from a `parachute` that refuses the hand-over: it exits 1
/// (this build's `--check-handover` refusal) or 2 (an older build's unknown-flag error), and
/// says so naming the flag. Anything else — a crash, a hang, a shell's 126/127, a program
/// that does not know what it was asked — is a binary that cannot serve.
fn refused_by_parachute(code: Option<i32>, said: &str) -> bool {
    matches!(code, Some(1 | 2)) && said.contains("--check-handover")
}

/// An upgrade request from the API to the serve loop.
#[derive(Debug)]
pub struct Ask {
    /// The answer: sent before the exec.
    pub reply: oneshot::Sender<Result<Accepted, Refusal>>,
}

/// The binary at `path`, resolved, if the hub's user can trust it: a regular executable
/// file owned by root or `euid`, writable by nobody else, on a path none of whose
/// directories anyone else can write (a sticky directory counts as safe: nobody else can
/// replace what root owns in it). Otherwise why not.
pub fn trusted_binary(path: &Path, euid: u32) -> Result<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let shown = || crate::text::field(&path.to_string_lossy()).into_owned();
    let real =
        std::fs::canonicalize(path).map_err(|e| format!("the binary {} cannot be resolved: {e}", shown()))?;
    let meta = std::fs::metadata(&real).map_err(|e| format!("the binary {} cannot be read: {e}", shown()))?;
    if !meta.is_file() || meta.mode() & 0o111 == 0 {
        return Err(format!("{} is not an executable file", shown()));
    }
    let owned_ok = |uid: u32| uid == 0 || uid == euid;
    if !owned_ok(meta.uid()) || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is owned by uid {} with mode {:o}: the hub runs only a binary owned by root or itself that nobody \
             else can write",
            shown(),
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    for dir in real.ancestors().skip(1) {
        let m = std::fs::metadata(dir).map_err(|e| format!("{} cannot be read: {e}", dir.display()))?;
        let sticky = m.mode() & 0o1000 != 0;
        if !owned_ok(m.uid()) || (m.mode() & 0o022 != 0 && !sticky) {
            return Err(format!(
                "{} lies in {}, which another user can write: the binary could be swapped",
                shown(),
                crate::text::field(&dir.to_string_lossy())
            ));
        }
    }
    Ok(real)
}

/// Runs `binary serve --check-handover <fd>` on `doc`: `Ok` with its one-line summary when
/// it exits 0, else why not (its own words, escaped).
pub async fn dry_run(
    spawner: &Spawner,
    binary: &Path,
    env: &[(OsString, OsString)],
    doc: &Handover,
) -> Result<String, Refusal> {
    use std::os::fd::AsRawFd;
    use tokio::io::AsyncReadExt;
    let memfd = super::handover::to_memfd(doc, &[])
        .map_err(|e| Refusal::refused(format!("cannot write the hand-over document: {e}")))?;
    let fd = memfd.as_raw_fd();
    let spec = SpawnSpec {
        program: binary.to_owned(),
        args: vec!["serve".into(), "--check-handover".into(), fd.to_string().into()],
        env: env.to_vec(),
        cwd: None,
        keep_fds: vec![fd],
    };
    let shown = crate::text::field(&binary.to_string_lossy()).into_owned();
    let mut spawned = spawner
        .spawn(spec)
        .await
        .map_err(|e| Refusal::unusable(format!("the new binary {shown} cannot start: {e}")))?;
    drop(memfd);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let read = async {
        let mut o = (&mut spawned.stdout).take(DRY_RUN_OUTPUT);
        let mut e = (&mut spawned.stderr).take(DRY_RUN_OUTPUT);
        let _ = tokio::join!(o.read_to_end(&mut out), e.read_to_end(&mut err));
        spawned.child.exited().await;
    };
    if tokio::time::timeout(DRY_RUN_TIMEOUT, read).await.is_err() {
        let _ = spawned.child.signal_group(parachute_process::Signal::Kill);
        spawned.child.reap(Duration::ZERO).await;
        return Err(Refusal::unusable(format!(
            "the new binary {shown} did not finish its dry run within {DRY_RUN_TIMEOUT:?}"
        )));
    }
    let exit = spawned.child.reap(Duration::ZERO).await;
    let said = |b: &[u8]| crate::text::field(String::from_utf8_lossy(b).trim()).into_owned();
    if exit.code == Some(0) {
        Ok(said(&out))
    } else {
        let words = if err.iter().any(|b| !b.is_ascii_whitespace()) { said(&err) } else { said(&out) };
        if refused_by_parachute(exit.code, &words) {
            Err(Refusal::refused(format!("the new binary {shown} refused the hand-over ({exit}): {words}")))
        } else {
            Err(Refusal::unusable(format!(
                "the new binary {shown} cannot serve: its dry run {exit}, saying: {words}"
            )))
        }
    }
}

/// The document and log part for `freeze`.
pub fn document(base: &Handover, freeze: &Freeze) -> (Handover, Vec<u8>) {
    let mut doc = base.clone();
    let mut logs = Vec::new();
    doc.modules = freeze
        .modules
        .iter()
        .map(|m| {
            let mut lens = Vec::with_capacity(m.ring.len());
            for line in &m.ring {
                logs.extend_from_slice(line);
                lens.push(u32::try_from(line.len()).unwrap_or(u32::MAX));
            }
            let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            HandedModule {
                short: m.short.clone(),
                state: m.state.clone(),
                request: m.request.clone(),
                leader: m.child.as_ref().map(|c| c.leader),
                stdout_fd: m.child.as_ref().and_then(|c| c.stdout),
                stderr_fd: m.child.as_ref().and_then(|c| c.stderr),
                partial_stdout: m.child.as_ref().map(|c| c.partial_stdout.clone()).unwrap_or_default(),
                partial_stderr: m.child.as_ref().map(|c| c.partial_stderr.clone()).unwrap_or_default(),
                ring_first_seq: m.ring_first_seq,
                ring_lens: lens,
                crash_ages_ms: m.crash_ages.iter().map(|&d| ms(d)).collect(),
                spawn_seq: m.spawn_seq,
                respawn_in_ms: m.respawn_in.map(ms),
                uptime_ms: m.child.as_ref().map_or(0, |c| ms(c.uptime)),
            }
        })
        .collect();
    (doc, logs)
}

/// Replaces this process's image with `binary`, handing over `doc` + `logs`, the listener
/// and every frozen module's pipes. Returns only if that failed (nothing changed then).
pub async fn exec(
    spawner: &Spawner,
    reexec: &Reexec,
    binary: &Path,
    doc: &Handover,
    logs: &[u8],
) -> std::io::Error {
    use super::handover::FD_ENV;
    use std::os::fd::AsRawFd;
    let memfd = match super::handover::to_memfd(doc, logs) {
        Ok(fd) => fd,
        Err(e) => return e,
    };
    let mut keep = vec![memfd.as_raw_fd(), doc.listener_fd];
    keep.extend(doc.lock_fds.0);
    keep.extend(doc.lock_fds.1);
    for m in &doc.modules {
        keep.extend(m.stdout_fd);
        keep.extend(m.stderr_fd);
    }
    let mut env: Vec<(OsString, OsString)> =
        reexec.env.iter().filter(|(k, _)| k.as_os_str() != FD_ENV).cloned().collect();
    env.push((FD_ENV.into(), memfd.as_raw_fd().to_string().into()));
    let spec =
        SpawnSpec { program: binary.to_owned(), args: reexec.args.clone(), env, cwd: None, keep_fds: keep };
    let err = spawner.exec(spec).await;
    drop(memfd);
    err
}

/// The new image's first step: reads (and closes) the document on `fd`, which must have
/// been written by this very process (the exec kept the pid).
pub fn receive(fd: RawFd) -> Result<(Handover, Vec<u8>), HandoverError> {
    if fd < 3 {
        return Err(HandoverError::Read(std::io::Error::other(format!(
            "{fd} is not a hand-over descriptor"
        ))));
    }
    // SAFETY: F_GETFD on a plain number; an unopened one must not become a `File`.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(HandoverError::Read(std::io::Error::last_os_error()));
    }
    // SAFETY: the descriptor the old image named for us, open (checked), and taken once.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let (doc, logs) = Handover::read_from(file)?;
    doc.check_writer(std::process::id())?;
    Ok((doc, logs))
}

/// Takes an inherited descriptor named by the document: `None` unless it is open, above
/// stderr and not taken already (a document naming one twice cannot make us close it twice).
fn take_fd(fd: Option<i32>, taken: &mut Vec<i32>) -> Option<OwnedFd> {
    let fd = fd?;
    // SAFETY: F_GETFD on a plain number.
    if fd < 3 || taken.contains(&fd) || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    taken.push(fd);
    // SAFETY: open (checked), inherited for this purpose, and taken once (the list).
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The control listener the old image kept open, if `doc` names one that is a listening
/// TCP socket on 127.0.0.1 at its port.
pub fn inherited_listener(doc: &Handover, taken: &mut Vec<i32>) -> Option<std::net::TcpListener> {
    let fd = take_fd(Some(doc.listener_fd), taken)?;
    let listening = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::AcceptConn).unwrap_or(false);
    let listener = std::net::TcpListener::from(fd);
    let addr = listener.local_addr().ok()?;
    if !listening || !addr.ip().is_loopback() || addr.port() != doc.port {
        return None;
    }
    listener.set_nonblocking(true).ok()?;
    Some(listener)
}

/// The home's locks as the old image held them, if `doc` names them (see
/// [`HomeLock::inherited`](super::home_writes::HomeLock::inherited)).
pub fn inherited_lock(doc: &Handover, taken: &mut Vec<i32>) -> Option<super::home_writes::HomeLock> {
    let dir = take_fd(doc.lock_fds.0, taken).map(std::fs::File::from);
    let file = take_fd(doc.lock_fds.1, taken).map(std::fs::File::from);
    super::home_writes::HomeLock::inherited(dir, file)
}

/// An empty pipe's read end: the stand-in for a stream the child had closed.
fn closed_pipe() -> std::io::Result<OwnedFd> {
    #[cfg(target_os = "linux")]
    let (r, _w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    #[cfg(not(target_os = "linux"))]
    let (r, _w) = {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        let (r, w) = nix::unistd::pipe().map_err(std::io::Error::from)?;
        fcntl(&r, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(std::io::Error::from)?;
        (r, w)
    };
    Ok(r)
}

/// Adopts every module of `doc` this image can prove, in order; the others' descriptors
/// are closed and they are left to boot (a fresh start). Returns one log line per module
/// that was not adopted.
pub fn adopt_all(supervisor: &Supervisor, doc: &Handover, logs: &[u8], taken: &mut Vec<i32>) -> Vec<String> {
    let boot = crate::supervisor::statefile::boot_id();
    let verdicts = doc.verdicts(boot.as_deref(), std::process::id());
    let mut said = Vec::new();
    let mut at = 0usize;
    for (m, (_, verdict)) in doc.modules.iter().zip(verdicts) {
        let ring: Vec<Bytes> = m
            .ring_lens
            .iter()
            .map(|&n| {
                let end = (at + n as usize).min(logs.len());
                let line = Bytes::copy_from_slice(&logs[at..end]);
                at = end;
                line
            })
            .collect();
        let stdout = take_fd(m.stdout_fd, taken);
        let stderr = take_fd(m.stderr_fd, taken);
        let short = crate::text::field(&m.short);
        let child = match (verdict, m.leader) {
            (_, None) => None,
            (Verdict::Restart { reason }, Some(_)) => {
                said.push(format!("{short}: not adopted ({reason}); starting it afresh."));
                continue;
            }
            (Verdict::Adopt, Some(leader)) => {
                let (stdout_open, stderr_open) = (stdout.is_some(), stderr.is_some());
                let pipes = match (stdout.map_or_else(closed_pipe, Ok), stderr.map_or_else(closed_pipe, Ok)) {
                    (Ok(o), Ok(e)) => (o, e),
                    (Err(e), _) | (_, Err(e)) => {
                        said.push(format!("{short}: not adopted (no descriptor for a stand-in pipe: {e})."));
                        continue;
                    }
                };
                match Spawned::adopt_inherited(leader, pipes.0, pipes.1, None) {
                    Ok(spawned) => Some(AdoptedChild {
                        spawned,
                        start_ticks: leader.start_ticks,
                        stdout_open,
                        stderr_open,
                        partial_stdout: m.partial_stdout.clone(),
                        partial_stderr: m.partial_stderr.clone(),
                    }),
                    Err(e) => {
                        said.push(format!("{short}: not adopted ({e}); starting it afresh."));
                        continue;
                    }
                }
            }
        };
        let ms = Duration::from_millis;
        let adopted = AdoptedModule {
            short: m.short.clone(),
            state: m.state.clone(),
            request: m.request.clone(),
            child,
            ring_first_seq: m.ring_first_seq,
            ring,
            crash_ages: m.crash_ages_ms.iter().map(|&x| ms(x)).collect(),
            spawn_seq: m.spawn_seq,
            respawn_in: m.respawn_in_ms.map(ms),
            uptime: ms(m.uptime_ms),
        };
        if !supervisor.adopt(adopted) {
            said.push(format!("{short}: handed over twice; the second entry was dropped."));
        }
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A shell script `parachute` (0755) in a fresh directory (0755).
    fn script() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("parachute");
        std::fs::write(&bin, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, bin)
    }

    #[test]
    fn a_binary_another_user_could_swap_is_not_trusted() {
        let (dir, bin) = script();
        let me = nix::unistd::geteuid().as_raw();
        assert!(trusted_binary(&bin, me).is_ok(), "{:?}", trusted_binary(&bin, me));

        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o757)).unwrap();
        let err = trusted_binary(&bin, me).unwrap_err();
        assert!(err.contains("nobody") && err.contains("757"), "{err}");

        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = trusted_binary(&bin, me).unwrap_err();
        assert!(err.contains("another user can write"), "{err}");

        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(trusted_binary(&bin, me).is_ok(), "a sticky directory protects what we own");

        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(trusted_binary(&bin, me).unwrap_err().contains("not an executable"));
    }

    #[test]
    fn only_a_parachute_naming_the_flag_refuses_the_rest_cannot_serve() {
        let ours = "parachute serve --check-handover: the hand-over document has format version 2";
        assert!(refused_by_parachute(Some(1), ours));
        let older = "error: unexpected argument '--check-handover' found";
        assert!(refused_by_parachute(Some(2), older));
        assert!(!refused_by_parachute(Some(127), "sh: 1: parachute: not found"));
        assert!(!refused_by_parachute(None, ours), "killed by a signal");
        assert!(!refused_by_parachute(Some(1), "cannot start: libfoo.so missing"));
        assert!(!refused_by_parachute(Some(3), "broken build: cannot serve (serve --check-handover 7)"));
    }

    #[test]
    fn a_binary_owned_by_someone_else_is_not_trusted() {
        let (_dir, bin) = script();
        let me = nix::unistd::geteuid().as_raw();
        if me == 0 {
            // Root owns it: hand it to another user, as a local user's own file would be.
            std::os::unix::fs::chown(&bin, Some(4242), None).unwrap();
            let err = trusted_binary(&bin, 0).unwrap_err();
            assert!(err.contains("uid 4242"), "{err}");
        } else {
            // As a user: a hub running as some other uid does not trust our file.
            let err = trusted_binary(&bin, me + 1).unwrap_err();
            assert!(err.contains(&format!("uid {me}")), "{err}");
        }
    }
}
