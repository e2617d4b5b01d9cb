//! The hub's own log file, rotated by size: `serve --log-file PATH` (launchd's hub plist
//! passes it; a container or a plain `serve` may).
//!
//! A service manager that appends the hub's output to a file (launchd's `StandardOutPath`)
//! never rotates it, so a chatty module would fill the disk. Instead the hub writes the file
//! itself: [`RotatingLog`] keeps `PATH` below `max_bytes` and, when the next line would not
//! fit, renames `PATH` → `PATH.1` → … → `PATH.<backups>` (the oldest is replaced) and starts
//! a new `PATH`. Rotation happens only between lines, so no line is split or lost; a file is
//! larger than `max_bytes` only when it holds a single line longer than that, and the
//! directory never holds more than `max_bytes × (backups + 1)` plus one line.
//!
//! Everything the hub process writes goes there, not only the supervisor's combined output:
//! with [`Redirect::StdStreams`] every new file is also put on descriptors 1 and 2, so `[hub]`
//! lines, warnings and even a panic message land in the current file. The manager's own
//! redirection to the same path (launchd opens `StandardOutPath` when it spawns the job)
//! then only catches what is written before the hub opened its log — the same file, so it
//! is counted and rotated like the rest. The file's size is read from the descriptor before
//! each write, so those lines count.
//!
//! Writes are blocking file writes; [`AsyncLog`] runs each one on tokio's blocking pool so
//! the supervisor's output writer (`supervisor::output`) can use it as any other sink.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// Default size at which the log is rotated: 10 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// Default number of rotated files kept beside the current one (so at most 50 MiB).
pub const DEFAULT_BACKUPS: u32 = 4;

/// The smallest `max_bytes` accepted: below a few lines per file rotation is all it does.
pub const MIN_MAX_BYTES: u64 = 4096;

/// The most backups accepted.
pub const MAX_BACKUPS: u32 = 1000;

/// How the log is bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFileConfig {
    /// The current file; rotated files are `<path>.1` (newest) to `<path>.<backups>`.
    pub path: PathBuf,
    /// Rotate before the file would grow past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (0: the file is emptied instead of renamed).
    pub backups: u32,
}

impl LogFileConfig {
    /// The most the log's files can hold together: `max_bytes × (backups + 1)`, plus at most
    /// one line (a line is never split).
    pub fn bound(&self) -> u64 {
        self.max_bytes.saturating_mul(u64::from(self.backups) + 1)
    }

    /// The `i`-th rotated file (`<path>.<i>`).
    pub fn backup(&self, i: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{i}"));
        PathBuf::from(name)
    }
}

/// Whether each new file also becomes the process's stdout and stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirect {
    /// Only what is written through the [`RotatingLog`] goes to the file (tests).
    None,
    /// Descriptors 1 and 2 follow the current file (`serve --log-file`).
    StdStreams,
}

/// A size-rotated log file (see the module docs). Writes must be whole lines for the
/// bound to hold; a line split across writes is finished in the file it started in.
#[derive(Debug)]
pub struct RotatingLog {
    cfg: LogFileConfig,
    redirect: Redirect,
    file: File,
    /// Whether the last byte this writer put in the file ended a line (or the file is new):
    /// only then may it rotate.
    at_line_start: bool,
}

/// Opens `path` for appending: created 0600 (a log holds whatever the modules print), never
/// through a symlink.
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path)
}

impl RotatingLog {
    /// Opens (or creates, with its directory) the log for appending, and removes rotated
    /// files beyond `backups` left by a configuration that kept more.
    pub fn open(cfg: LogFileConfig, redirect: Redirect) -> io::Result<RotatingLog> {
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(&cfg.path)?;
        let log = RotatingLog { cfg, redirect, file, at_line_start: true };
        log.redirect_std()?;
        log.remove_extra_backups();
        Ok(log)
    }

    /// The configuration.
    pub fn config(&self) -> &LogFileConfig {
        &self.cfg
    }

    fn remove_extra_backups(&self) {
        let (Some(dir), Some(name)) = (self.cfg.path.parent(), self.cfg.path.file_name()) else { return };
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let prefix = format!("{}.", name.to_string_lossy());
        for e in entries.flatten() {
            let n = e.file_name();
            let Some(i) =
                n.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|i| i.parse::<u32>().ok())
            else {
                continue;
            };
            if i > self.cfg.backups {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn redirect_std(&self) -> io::Result<()> {
        if self.redirect == Redirect::StdStreams {
            use std::os::fd::AsRawFd;
            for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
                // SAFETY: dup2 onto the standard descriptors; both stay open (they now
                // share the log's open file description).
                if unsafe { libc::dup2(self.file.as_raw_fd(), target) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }

    /// Moves the current file to `.1` (and each `.i` to `.i+1`, the oldest replaced) and
    /// starts an empty one; with no backups, empties the file.
    pub fn rotate(&mut self) -> io::Result<()> {
        if self.cfg.backups == 0 {
            self.file.set_len(0)?;
        } else {
            for i in (1..self.cfg.backups).rev() {
                match std::fs::rename(self.cfg.backup(i), self.cfg.backup(i + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.cfg.path, self.cfg.backup(1))?;
            self.file = open_append(&self.cfg.path)?;
            self.redirect_std()?;
        }
        self.at_line_start = true;
        Ok(())
    }

    /// The current file's size, including what others wrote to the shared descriptors.
    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Writes all of `buf` (whole lines), rotating between lines as needed. On an error,
    /// returns how much was written before it (an error only when nothing was).
    fn write_lines(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        let mut size = self.size()?;
        while done < buf.len() {
            let rest = &buf[done..];
            let room = usize::try_from(self.cfg.max_bytes.saturating_sub(size)).unwrap_or(usize::MAX);
            let take = if rest.len() <= room {
                rest.len()
            } else if let Some(i) = memchr::memrchr(b'\n', &rest[..room]) {
                // The whole lines that still fit.
                i + 1
            } else if size > 0 && self.at_line_start {
                // The next line does not fit: it starts the next file.
                if let Err(e) = self.rotate() {
                    return if done > 0 { Ok(done) } else { Err(e) };
                }
                size = 0;
                continue;
            } else {
                // A line longer than a whole file, or one that began in an earlier write:
                // it is finished here, never split across files.
                memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1)
            };
            match self.file.write(&rest[..take]) {
                Ok(0) => {
                    let e = io::Error::from(io::ErrorKind::WriteZero);
                    return if done > 0 { Ok(done) } else { Err(e) };
                }
                Ok(n) => {
                    size += n as u64;
                    self.at_line_start = rest[n - 1] == b'\n';
                    done += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return if done > 0 { Ok(done) } else { Err(e) },
            }
        }
        Ok(done)
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_lines(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Written straight to the file: nothing is buffered here.
        Ok(())
    }
}

/// [`RotatingLog`] as a tokio writer: each write runs on the blocking pool, and the call
/// completes when the bytes are in the file (so a failed write is reported on the write
/// that failed, and the caller keeps what was not taken).
pub struct AsyncLog {
    state: State,
}

enum State {
    Idle(Option<RotatingLog>),
    Busy(tokio::task::JoinHandle<(RotatingLog, io::Result<usize>)>),
}

impl AsyncLog {
    /// Wraps `log`.
    pub fn new(log: RotatingLog) -> AsyncLog {
        AsyncLog { state: State::Idle(Some(log)) }
    }
}

impl tokio::io::AsyncWrite for AsyncLog {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Idle(log) => {
                    let Some(mut log) = log.take() else {
                        return Poll::Ready(Err(io::Error::other("the log writer was lost")));
                    };
                    let bytes = buf.to_vec();
                    this.state = State::Busy(tokio::task::spawn_blocking(move || {
                        let r = log.write(&bytes);
                        (log, r)
                    }));
                }
                State::Busy(task) => {
                    let joined = ready!(Pin::new(task).poll(cx));
                    let (log, r) = joined.map_err(io::Error::other)?;
                    this.state = State::Idle(Some(log));
                    return Poll::Ready(r);
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A write completes only once it is in the file.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, max_bytes: u64, backups: u32) -> LogFileConfig {
        LogFileConfig { path: dir.join("hub.log"), max_bytes, backups }
    }

    /// The kept files, oldest first.
    fn files(c: &LogFileConfig) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out: Vec<_> = (1..=c.backups)
            .rev()
            .filter_map(|i| Some((c.backup(i), std::fs::read(c.backup(i)).ok()?)))
            .collect();
        out.push((c.path.clone(), std::fs::read(&c.path).unwrap_or_default()));
        out
    }

    #[test]
    fn rotates_between_lines_within_the_bound_and_keeps_every_kept_line() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 1000, 3);
        let mut log = RotatingLog::open(c.clone(), Redirect::None).unwrap();
        // Writes of several lines at once, of varying length, as the output writer makes.
        let mut seq = 0u64;
        for round in 0..500 {
            let mut chunk = Vec::new();
            for _ in 0..(round % 7 + 1) {
                chunk.extend_from_slice(
                    format!("line {seq:08} {}\n", "x".repeat((seq % 40) as usize)).as_bytes(),
                );
                seq += 1;
            }
            log.write_all(&chunk).unwrap();
            let total: u64 = files(&c).iter().map(|(_, b)| b.len() as u64).sum();
            assert!(total <= c.bound(), "{total} > {}", c.bound());
        }
        let kept = files(&c);
        assert!(std::fs::metadata(c.backup(4)).is_err(), "only 3 backups");
        let mut expect = None;
        for (path, bytes) in &kept {
            assert!(bytes.len() as u64 <= c.max_bytes, "{} holds {}", path.display(), bytes.len());
            assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "{} ends mid-line", path.display());
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let n: u64 = std::str::from_utf8(&line[5..13]).unwrap().parse().unwrap();
                if let Some(e) = expect {
                    assert_eq!(n, e, "gap before line {n} in {}", path.display());
                }
                expect = Some(n + 1);
            }
        }
        assert_eq!(expect, Some(seq), "the newest line is the last one written");
    }

    #[test]
    fn a_line_longer_than_a_file_gets_a_file_of_its_own_and_is_never_split() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 100, 2);
        let mut log = RotatingLog::open(c.clone(), Redirect::None).unwrap();
        log.write_all(b"short one\n").unwrap();
        let long = format!("{}\n", "L".repeat(250));
        log.write_all(long.as_bytes()).unwrap();
        log.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read(c.backup(2)).unwrap(), b"short one\n");
        assert_eq!(std::fs::read(c.backup(1)).unwrap(), long.as_bytes());
        assert_eq!(std::fs::read(&c.path).unwrap(), b"after\n");
        // A line that began in an earlier write is finished in the file it started in.
        log.write_all(&[b'p'; 90]).unwrap();
        log.write_all(b"qqqqqqqqqqqqqqqqqqqq\nnext\n").unwrap();
        assert_eq!(std::fs::read(&c.path).unwrap(), b"next\n");
        let prev = String::from_utf8(std::fs::read(c.backup(1)).unwrap()).unwrap();
        assert_eq!(prev, format!("after\n{}{}\n", "p".repeat(90), "q".repeat(20)));
    }

    #[test]
    fn no_backups_empties_the_file_and_extra_backups_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 50, 5);
        for i in 1..=5 {
            std::fs::write(c.backup(i), b"old\n").unwrap();
        }
        std::fs::write(dir.path().join("hub.log.keepme"), b"x").unwrap();
        let c0 = LogFileConfig { backups: 0, ..c.clone() };
        let mut log = RotatingLog::open(c0, Redirect::None).unwrap();
        for i in 1..=5 {
            assert!(!c.backup(i).exists(), "{} survived", c.backup(i).display());
        }
        assert!(dir.path().join("hub.log.keepme").exists(), "not a backup: left alone");
        for i in 0..20 {
            log.write_all(format!("line {i:03}\n").as_bytes()).unwrap();
            assert!(std::fs::metadata(&c.path).unwrap().len() <= 50);
        }
        assert!(String::from_utf8(std::fs::read(&c.path).unwrap()).unwrap().ends_with("line 019\n"));
    }

    #[test]
    fn an_existing_log_is_appended_to_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 64, 1);
        // What the manager's own redirection caught before the hub opened its log.
        std::fs::write(&c.path, b"early message from before the log was open\n").unwrap();
        let mut log = RotatingLog::open(c.clone(), Redirect::None).unwrap();
        log.write_all(b"first line of the hub's own writing\n").unwrap();
        assert_eq!(std::fs::read(c.backup(1)).unwrap(), b"early message from before the log was open\n");
        assert_eq!(std::fs::read(&c.path).unwrap(), b"first line of the hub's own writing\n");
    }

    #[test]
    fn a_symlink_in_place_of_the_log_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 64, 1);
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep\n").unwrap();
        std::os::unix::fs::symlink(&victim, &c.path).unwrap();
        assert!(RotatingLog::open(c, Redirect::None).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep\n");
    }

    #[tokio::test]
    async fn the_async_writer_writes_through_to_the_file() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 4096, 1);
        let mut w = AsyncLog::new(RotatingLog::open(c.clone(), Redirect::None).unwrap());
        w.write_all(b"one\ntwo\n").await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(std::fs::read(&c.path).unwrap(), b"one\ntwo\n");
    }
}
