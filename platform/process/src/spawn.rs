//! Starting children: [`Spawner`] (the one thread that forks), [`SpawnSpec`], typed
//! [`SpawnError`]s and [`resolve_program`].
//!
//! Why a dedicated thread: Linux `PR_SET_PDEATHSIG` fires when the *thread* that forked the
//! child exits, not the process. A child forked from a tokio worker or a `spawn_blocking`
//! thread would be SIGKILLed whenever the runtime retires that thread. So every fork happens
//! on one long-lived OS thread owned by the [`Spawner`]; requests arrive over a channel and
//! results go back over a oneshot.
//!
//! Why resolve the program ourselves: the child's `PATH` and cwd (not ours) decide which file
//! runs, and resolving before the fork lets "not found" and "not executable" come back as
//! precise, typed errors instead of an errno from inside the child.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use tokio::process::{ChildStderr, ChildStdout};
use tokio::sync::oneshot;

use crate::child::{self, GroupChild};

/// What to run. The environment is complete: the child gets exactly `env`, nothing inherited.
#[derive(Debug, Clone, Default)]
pub struct SpawnSpec {
    /// `argv[0]`: a bare name (looked up on the `PATH` in `env`), a path relative to `cwd`
    /// (`./bin/x`), or an absolute path. The child sees it unchanged as `argv[0]`.
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The child's whole environment, in order; a later duplicate key wins.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory; `None` inherits ours.
    pub cwd: Option<PathBuf>,
    /// Descriptors of ours the child (or, for [`Spawner::exec`], the new image) gets at the
    /// same numbers. Every other descriptor above stderr stays ours alone. They keep
    /// `FD_CLOEXEC` in this process: it is cleared in the forked child only, or by the
    /// spawner thread just before `execve` — so no other child started meanwhile gets them.
    pub keep_fds: Vec<std::os::fd::RawFd>,
}

impl SpawnSpec {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self { program: program.into(), ..Self::default() }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// The `PATH` the child will see (the last `PATH` entry of `env`), or empty.
    pub fn path_env(&self) -> &OsStr {
        self.env.iter().rev().find(|(k, _)| k == "PATH").map_or(OsStr::new(""), |(_, v)| v.as_os_str())
    }
}

/// A started child and its output pipes (stdin is `/dev/null`).
#[derive(Debug)]
pub struct Spawned {
    pub child: GroupChild,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// Why a child could not be started. Every message names the program or directory and says
/// what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    #[error(
        "cannot start `{}`: no such executable (searched PATH `{}` and working directory {}); \
         install it or fix the command or PATH",
        program.display(), path_env.to_string_lossy(), cwd_text(cwd.as_deref())
    )]
    NotFound { program: PathBuf, path_env: OsString, cwd: Option<PathBuf> },
    #[error(
        "cannot start `{}`: `{}` exists but is not an executable file (check its execute \
         permission with `chmod +x`, or that it is a program or a script with a `#!` line)",
        program.display(), path.display()
    )]
    NotExecutable { program: PathBuf, path: PathBuf },
    #[error(
        "cannot start `{}`: `{}` exists, but its `#!` interpreter or dynamic loader was not \
         found; install the interpreter named on its first line",
        program.display(), path.display()
    )]
    InterpreterNotFound { program: PathBuf, path: PathBuf },
    #[error(
        "cannot start `{}`: permission denied running `{}` ({source}); check the file's and its \
         directories' permissions and that the filesystem is not mounted noexec",
        program.display(), path.display()
    )]
    PermissionDenied { program: PathBuf, path: PathBuf, source: io::Error },
    #[error(
        "cannot start `{}`: its working directory `{}` does not exist; reinstall the module \
         or fix its install directory",
        program.display(), path.display()
    )]
    CwdMissing { program: PathBuf, path: PathBuf },
    #[error(
        "cannot start `{}`: its working directory `{}` is not a directory",
        program.display(), path.display()
    )]
    CwdNotDirectory { program: PathBuf, path: PathBuf },
    #[error("cannot start `{}`: {reason}", program.display())]
    InvalidSpec { program: PathBuf, reason: String },
    #[error(
        "cannot start `{}`: its arguments and environment are larger than the OS lets a program \
         start with ({source})",
        program.display()
    )]
    TooLarge { program: PathBuf, source: io::Error },
    #[error("cannot start `{}`: {source}", program.display())]
    Other { program: PathBuf, source: io::Error },
    #[error(
        "cannot start `{}`: the spawner thread has stopped, so this process can start no more \
         children",
        program.display()
    )]
    SpawnerGone { program: PathBuf },
}

impl SpawnError {
    /// The errno's name when the OS was short of a resource at the spawn — descriptors
    /// (`EMFILE`, `ENFILE`), processes or threads (`EAGAIN`), memory (`ENOMEM`): the same
    /// spawn can succeed once the shortage passes. `None` for every other failure.
    pub fn transient(&self) -> Option<&'static str> {
        let SpawnError::Other { source, .. } = self else { return None };
        match source.raw_os_error()? {
            libc::EMFILE => Some("EMFILE"),
            libc::ENFILE => Some("ENFILE"),
            libc::EAGAIN => Some("EAGAIN"),
            libc::ENOMEM => Some("ENOMEM"),
            _ => None,
        }
    }
}

fn cwd_text(cwd: Option<&Path>) -> String {
    cwd.map_or_else(|| "(inherited)".to_owned(), |c| format!("`{}`", c.display()))
}

/// The outcome of a failed [`resolve_program`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolve {
    /// Nothing by that name on the PATH, or no file at that path.
    Missing,
    /// A file is there, but it is not an executable regular file (no execute bit, or a
    /// directory). For a bare name: no executable was found and this was the first such file.
    NotExecutable { path: PathBuf },
}

/// Resolve `argv0` as the child would: against the CHILD's `PATH` (`path_env`) and cwd.
/// - an absolute path is checked as is;
/// - a path with a `/` (`./bin/x`, `bin/x`) is taken relative to `cwd` (or to ours if `None`);
/// - a bare name walks `path_env` in order (an empty or relative entry is relative to `cwd`);
///   the first executable regular file wins. An empty `PATH` finds nothing.
pub fn resolve_program(
    argv0: impl AsRef<Path>,
    path_env: impl AsRef<OsStr>,
    cwd: Option<&Path>,
) -> Result<PathBuf, Resolve> {
    let (argv0, path_env) = (argv0.as_ref(), path_env.as_ref());
    if argv0.as_os_str().is_empty() {
        return Err(Resolve::Missing);
    }
    let has_slash = argv0.as_os_str().as_bytes().contains(&b'/');
    if has_slash {
        let path = match cwd {
            Some(cwd) if argv0.is_relative() => cwd.join(argv0),
            _ => argv0.to_path_buf(),
        };
        return check_file(&path).map(|()| path);
    }
    if path_env.is_empty() {
        return Err(Resolve::Missing);
    }
    let here = cwd.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    if let Ok(found) = which::which_in(argv0, Some(path_env), &here) {
        return Ok(found);
    }
    // `which` only reports success; find the first non-executable candidate to say why.
    for dir in std::env::split_paths(path_env) {
        let dir = if dir.as_os_str().is_empty() || dir.is_relative() { here.join(dir) } else { dir };
        let candidate = dir.join(argv0);
        if let Err(e @ Resolve::NotExecutable { .. }) = check_file(&candidate) {
            return Err(e);
        }
    }
    Err(Resolve::Missing)
}

fn check_file(path: &Path) -> Result<(), Resolve> {
    let meta = std::fs::metadata(path).map_err(|_| Resolve::Missing)?;
    if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
        Ok(())
    } else {
        Err(Resolve::NotExecutable { path: path.to_path_buf() })
    }
}

/// A handle to the spawner thread. Clone it freely; the thread lives until the last clone is
/// dropped.
///
/// **Keep one for the life of the process.** When the thread ends, Linux sends SIGKILL to every
/// child it started (`PR_SET_PDEATHSIG`): that is how children die with a crashed or
/// SIGKILLed supervisor, and also what happens when the last `Spawner` clone is dropped.
#[derive(Debug, Clone)]
pub struct Spawner {
    tx: mpsc::Sender<Request>,
}

enum Request {
    Spawn {
        spec: SpawnSpec,
        reply: oneshot::Sender<Result<Forked, SpawnError>>,
    },
    /// Replace this process's image ([`Spawner::exec`]); answered only if `execve` failed.
    Exec {
        spec: SpawnSpec,
        reply: oneshot::Sender<io::Error>,
    },
    /// End [`SpawnerLoop::run`].
    Quit,
}

/// The request loop of a [`Spawner`] that runs on a thread of the caller's choosing
/// ([`Spawner::on_current_thread`]).
#[derive(Debug)]
pub struct SpawnerLoop {
    rx: mpsc::Receiver<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Request::Spawn { .. } => "Spawn",
            Request::Exec { .. } => "Exec",
            Request::Quit => "Quit",
        })
    }
}

impl SpawnerLoop {
    /// Serves spawn and exec requests on this thread until [`Spawner::quit`] (or every
    /// [`Spawner`] clone is gone). Children started here die when this thread ends.
    pub fn run(self) {
        serve_requests(self.rx);
    }
}

fn serve_requests(rx: mpsc::Receiver<Request>) {
    for req in rx {
        match req {
            // If the caller went away, the returned `Forked` is dropped: see its doc.
            Request::Spawn { spec, reply } => {
                let _ = reply.send(fork_child(&spec));
            }
            Request::Exec { spec, reply } => {
                let _ = reply.send(exec_self(&spec));
            }
            Request::Quit => return,
        }
    }
}

/// What the spawner thread hands back; turned into tokio types on the caller's runtime.
/// Dropped without being adopted (the caller's future was cancelled at any point), it kills
/// the child's group and reaps it in the background: nobody would ever watch that child.
struct Forked {
    child: Option<std::process::Child>,
    #[cfg(target_os = "linux")]
    pidfd: Option<std::os::fd::OwnedFd>,
}

impl Drop for Forked {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            child::abandon(child.id());
        }
    }
}

impl Spawner {
    /// Start the spawner thread.
    pub fn new() -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new().name("parachute-spawner".into()).spawn(move || serve_requests(rx))?;
        Ok(Self { tx })
    }

    /// A spawner whose requests are served by the caller's own thread, in
    /// [`SpawnerLoop::run`]. For a process that replaces its image more than once
    /// ([`Spawner::exec`]): a child's `PR_SET_PDEATHSIG` follows the *thread* that forked it,
    /// and an `execve` ends every thread but the one calling it. Children forked and the exec
    /// both on the main thread keep one parent thread across any number of execs — a
    /// separate spawner thread would be a new thread in each image, and the next exec would
    /// end the previous image's children's parent thread.
    pub fn on_current_thread() -> (Self, SpawnerLoop) {
        let (tx, rx) = mpsc::channel::<Request>();
        (Self { tx }, SpawnerLoop { rx })
    }

    /// Ends the [`SpawnerLoop`] serving this spawner, once the requests before it are served.
    pub fn quit(&self) {
        let _ = self.tx.send(Request::Quit);
    }

    /// Start `spec` in its own process group (`pgid == pid`), stdin `/dev/null`, stdout and
    /// stderr piped, exactly `spec.env`, in `spec.cwd`. Must be called inside a tokio runtime
    /// (the pipes and the exit watch register with it).
    pub async fn spawn(&self, spec: SpawnSpec) -> Result<Spawned, SpawnError> {
        let program = spec.program.clone();
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Spawn { spec, reply })
            .map_err(|_| SpawnError::SpawnerGone { program: program.clone() })?;
        let forked = rx.await.map_err(|_| SpawnError::SpawnerGone { program: program.clone() })??;
        adopt(forked).map_err(|source| SpawnError::Other { program, source })
    }

    /// Replace this whole process's image with `spec` (`execve`: same pid, every other thread
    /// ends), keeping every child. Returns only if the exec failed; this process then runs on
    /// unchanged.
    ///
    /// Why through the spawner thread: `execve` from any other thread ends the spawner thread
    /// first, and its ending fires every child's `PR_SET_PDEATHSIG` (SIGKILL) — the exec'ing
    /// thread itself survives the exec, so only an exec from the thread that forked keeps the
    /// children alive (`tests/it/reexec.rs` proves both halves).
    ///
    /// Descriptors the new image must get have to be cleared of `FD_CLOEXEC` by the caller
    /// (stdin, stdout and stderr are inherited as they are); `spec.env` is the new image's
    /// whole environment and `spec.cwd` its working directory. `spec.program` is run as
    /// given (no `PATH` lookup).
    pub async fn exec(&self, spec: SpawnSpec) -> io::Error {
        if let Err(SpawnError::InvalidSpec { reason, .. }) = validate(&spec) {
            return io::Error::new(io::ErrorKind::InvalidInput, reason);
        }
        let gone = || io::Error::other("the spawner thread has stopped; cannot exec");
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Request::Exec { spec, reply }).is_err() {
            return gone();
        }
        rx.await.unwrap_or_else(|_| gone())
    }
}

/// Lets `fd` survive an `execve` ([`Spawner::exec`]): clears its `FD_CLOEXEC`.
pub fn inherit_across_exec(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor the borrow proves open.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs on the spawner thread only; returns only on failure. `keep_fds` lose `FD_CLOEXEC`
/// here, right before the `execve` (no fork can come in between: forks run on this thread
/// too), and get it back if the exec failed.
fn exec_self(spec: &SpawnSpec) -> io::Error {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args).env_clear().envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    for (i, &fd) in spec.keep_fds.iter().enumerate() {
        if let Err(e) = set_cloexec(fd, false) {
            for &done in &spec.keep_fds[..i] {
                let _ = set_cloexec(done, true);
            }
            return io::Error::new(
                e.kind(),
                format!("descriptor {fd} cannot be handed to the new image: {e}"),
            );
        }
    }
    let err = cmd.exec();
    for &fd in &spec.keep_fds {
        let _ = set_cloexec(fd, true);
    }
    err
}

/// Sets or clears `FD_CLOEXEC` on `fd`. Async-signal-safe (two `fcntl`s).
fn set_cloexec(fd: std::os::fd::RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a plain number; EBADF is returned, not undefined.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let want = if on { flags | libc::FD_CLOEXEC } else { flags & !libc::FD_CLOEXEC };
    // SAFETY: as above.
    if want != flags && unsafe { libc::fcntl(fd, libc::F_SETFD, want) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Spawned {
    /// Takes back a child this process started before it replaced its own image
    /// ([`Spawner::exec`]): `leader` by identity, with its stdout and stderr pipe read ends
    /// and, if it still has one, its pidfd — all inherited across the exec.
    ///
    /// Refused (`InvalidInput`, nothing signalled, the descriptors closed) unless `leader`
    /// is still that very process (pid and start time), alive, and a child of this process:
    /// only then can its pid not be reused under us, since we have not reaped it. Must be
    /// called inside a tokio runtime.
    pub fn adopt_inherited(
        leader: crate::ProcessIdentity,
        stdout: std::os::fd::OwnedFd,
        stderr: std::os::fd::OwnedFd,
        pidfd: Option<std::os::fd::OwnedFd>,
    ) -> io::Result<Spawned> {
        // Registered before the check, so a zombie sweep never reaps it in between.
        let mut leaders = child::leaders();
        let fresh = leaders.insert(leader.pid);
        let refuse = |leaders: &mut std::collections::BTreeSet<u32>, why: String| {
            if fresh {
                leaders.remove(&leader.pid);
            }
            Err(io::Error::new(io::ErrorKind::InvalidInput, why))
        };
        let me = std::process::id();
        match crate::procfs::stat(leader.pid) {
            None => return refuse(&mut leaders, format!("process {} is gone", leader.pid)),
            Some(st) if st.start_ticks != leader.start_ticks => {
                return refuse(&mut leaders, format!("pid {} now names another process", leader.pid));
            }
            Some(st) if st.ppid != me => {
                return refuse(
                    &mut leaders,
                    format!("process {} is not a child of this process", leader.pid),
                );
            }
            // Alive, or a zombie that is still ours to reap (the exit watch sees it at once).
            Some(_) => {}
        }
        drop(leaders);
        #[cfg(target_os = "linux")]
        let child = {
            let pidfd = match pidfd {
                Some(fd) => Some(fd),
                // Our unreaped child: the pid cannot have been reused.
                None => crate::sys::pidfd_open(leader.pid).ok(),
            };
            GroupChild::from_forked(leader.pid, pidfd)?
        };
        #[cfg(not(target_os = "linux"))]
        let child = {
            drop(pidfd);
            GroupChild::from_forked(leader.pid)?
        };
        Ok(Spawned {
            child,
            stdout: ChildStdout::from_std(std::process::ChildStdout::from(stdout))?,
            stderr: ChildStderr::from_std(std::process::ChildStderr::from(stderr))?,
        })
    }
}

fn adopt(mut forked: Forked) -> io::Result<Spawned> {
    #[expect(clippy::zombie_processes, reason = "the GroupChild built from its pid reaps it")]
    let mut std_child = forked.child.take().expect("a Forked is adopted once");
    let stdout = std_child.stdout.take().expect("stdout is piped");
    let stderr = std_child.stderr.take().expect("stderr is piped");
    #[cfg(target_os = "linux")]
    let child = GroupChild::from_forked(std_child.id(), forked.pidfd.take());
    #[cfg(not(target_os = "linux"))]
    let child = GroupChild::from_forked(std_child.id());
    // From here the GroupChild owns the pid: dropping it kills and reaps the group.
    let child = child?;
    Ok(Spawned { child, stdout: ChildStdout::from_std(stdout)?, stderr: ChildStderr::from_std(stderr)? })
}

/// Runs on the spawner thread only.
fn fork_child(spec: &SpawnSpec) -> Result<Forked, SpawnError> {
    let program = spec.program.clone();
    validate(spec)?;
    if let Some(cwd) = &spec.cwd {
        match std::fs::metadata(cwd) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(SpawnError::CwdNotDirectory { program, path: cwd.clone() }),
            Err(_) => return Err(SpawnError::CwdMissing { program, path: cwd.clone() }),
        }
    }
    let path_env = spec.path_env();
    let resolved = resolve_program(&spec.program, path_env, spec.cwd.as_deref()).map_err(|e| match e {
        Resolve::Missing => SpawnError::NotFound {
            program: program.clone(),
            path_env: path_env.to_owned(),
            cwd: spec.cwd.clone(),
        },
        Resolve::NotExecutable { path } => SpawnError::NotExecutable { program: program.clone(), path },
    })?;

    let mut cmd = Command::new(&resolved);
    cmd.arg0(&spec.program)
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    #[cfg(target_os = "linux")]
    {
        let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
        // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
        // syscalls (prctl, getppid); everything it reads was prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect: then nobody will send the
                // signal, so do not start at all.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    // No descriptor of ours above stderr reaches the child: whatever our own launcher left
    // open (a shell's fd 10, a socket) is not the module's business. Marked close-on-exec
    // rather than closed, so std's exec-error pipe still reports a failed exec.
    let fd_limit = open_fd_limit();
    // SAFETY: between fork and exec; only close_range/fcntl (async-signal-safe), on a value
    // computed before the fork.
    unsafe {
        cmd.pre_exec(move || {
            cloexec_from(3, fd_limit);
            Ok(())
        });
    }
    if !spec.keep_fds.is_empty() {
        let keep = spec.keep_fds.clone();
        // SAFETY: between fork and exec; only fcntl (async-signal-safe), on a vector built
        // before the fork (the closure only reads it). Runs after the closure above.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &keep {
                    set_cloexec(fd, false)?;
                }
                Ok(())
            });
        }
    }

    // Hold the registry lock across the fork so that `reap_untracked_zombies` can never see
    // this child as an untracked zombie, however fast it exits.
    let mut leaders = child::leaders();
    let child = cmd.spawn().map_err(|e| classify(e, spec, &resolved))?;
    leaders.insert(child.id());
    drop(leaders);
    #[cfg(target_os = "linux")]
    {
        // The child is ours and unreaped, so its pid cannot have been reused yet. ENOSYS
        // (kernel < 5.3) falls back to a waiter thread.
        let pidfd = crate::sys::pidfd_open(child.id()).ok();
        Ok(Forked { child: Some(child), pidfd })
    }
    #[cfg(not(target_os = "linux"))]
    Ok(Forked { child: Some(child) })
}

/// The soft `RLIMIT_NOFILE`: no descriptor number reaches it. Read before the fork.
fn open_fd_limit() -> libc::c_int {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return 1 << 20;
    }
    libc::c_int::try_from(lim.rlim_cur).unwrap_or(libc::c_int::MAX)
}

/// Sets `FD_CLOEXEC` on every descriptor from `first` up (below `limit`). One syscall on
/// Linux ≥ 5.11 (`close_range` with `CLOSE_RANGE_CLOEXEC`); otherwise one `fcntl` per
/// number. Async-signal-safe: runs between fork and exec.
fn cloexec_from(first: libc::c_int, limit: libc::c_int) {
    #[cfg(target_os = "linux")]
    {
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        // SAFETY: a plain syscall with integer arguments.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            )
        };
        if r == 0 {
            return;
        }
    }
    for fd in first..limit {
        // SAFETY: fcntl on a number that may not be open: EBADF is harmless.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

fn validate(spec: &SpawnSpec) -> Result<(), SpawnError> {
    let invalid = |reason: String| SpawnError::InvalidSpec { program: spec.program.clone(), reason };
    let has_nul = |s: &OsStr| s.as_bytes().contains(&0);
    if spec.program.as_os_str().is_empty() {
        return Err(invalid("the command is empty".into()));
    }
    if has_nul(spec.program.as_os_str()) {
        return Err(invalid("the program name contains a NUL byte".into()));
    }
    if let Some(i) = spec.args.iter().position(|a| has_nul(a)) {
        return Err(invalid(format!("argument {} contains a NUL byte", i + 1)));
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.as_bytes().contains(&b'=') || has_nul(k) {
            return Err(invalid(format!(
                "environment variable name {:?} is empty or contains `=` or a NUL byte",
                k.to_string_lossy()
            )));
        }
        if has_nul(v) {
            return Err(invalid(format!(
                "the value of environment variable {} contains a NUL byte",
                k.to_string_lossy()
            )));
        }
    }
    if spec.cwd.as_deref().is_some_and(|c| has_nul(c.as_os_str())) {
        return Err(invalid("the working directory contains a NUL byte".into()));
    }
    Ok(())
}

/// Map an error from `Command::spawn` (errno from `chdir`/`execve` in the child).
fn classify(e: io::Error, spec: &SpawnSpec, resolved: &Path) -> SpawnError {
    let program = spec.program.clone();
    let path = resolved.to_path_buf();
    match e.raw_os_error() {
        Some(libc::ENOENT) => match &spec.cwd {
            // The directory vanished between our check and the child's chdir.
            Some(cwd) if !cwd.is_dir() => SpawnError::CwdMissing { program, path: cwd.clone() },
            // The resolved file exists (we checked), so the loader or `#!` interpreter is missing.
            _ if resolved.exists() => SpawnError::InterpreterNotFound { program, path },
            _ => {
                SpawnError::NotFound { program, path_env: spec.path_env().to_owned(), cwd: spec.cwd.clone() }
            }
        },
        Some(libc::ENOTDIR) if spec.cwd.as_deref().is_some_and(|c| !c.is_dir()) => {
            SpawnError::CwdNotDirectory { program, path: spec.cwd.clone().unwrap_or_default() }
        }
        Some(libc::ENOEXEC | libc::EISDIR) => SpawnError::NotExecutable { program, path },
        Some(libc::EACCES | libc::EPERM) => SpawnError::PermissionDenied { program, path, source: e },
        Some(libc::E2BIG) => SpawnError::TooLarge { program, source: e },
        _ => SpawnError::Other { program, source: e },
    }
}
