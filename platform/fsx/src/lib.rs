//! Atomic, compare-before-write file helpers.
//!
//! Every file Parachute writes for a service manager, and every state file it keeps under
//! the home, goes through [`write_atomic`]: the bytes go to a temporary file in the same
//! directory, are fsynced, and are renamed over the target, and the directory is fsynced
//! so the rename itself is durable. A reader therefore sees either the old or the new
//! file, never a torn one, even across a crash or power loss. Before writing,
//! the current content is compared, so an unchanged file is not rewritten (its mtime and
//! inode stay, and a manager watching it sees no change).
//!
//! It also holds [`tail_lines`], the one reader of a log's last lines that every backend
//! and hook uses to show why a unit did not come up, and [`read_bounded`], the reader for
//! files someone else controls (a FIFO or `/dev/zero` in their place must not hang or
//! exhaust the reader). [`fsid`] lets root do a user's file work with that user's rights.
#![warn(missing_docs)]

pub mod fsid;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
#[cfg(unix)]
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// An I/O error that names the path it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct Error {
    /// What was being done ("write", "rename", "create directory", …).
    pub op: &'static str,
    /// The path involved.
    pub path: PathBuf,
    /// The underlying OS error.
    #[source]
    pub source: io::Error,
}

impl Error {
    fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        Error { op, path: path.to_path_buf(), source }
    }
}

/// Whether a write changed anything on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The file was created or its content replaced.
    Changed,
    /// The file already held exactly these bytes; nothing was written.
    Unchanged,
}

/// Options for [`write_atomic_with`].
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Permission bits of the new file (Unix). Default `0o644`.
    pub mode: u32,
    /// Create missing parent directories (mode `0o755`). Default `true`.
    pub create_parents: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { mode: 0o644, create_parents: true }
    }
}

/// The most any state or config file of ours may hold (64 MiB): far above a real one, far
/// below what would hurt the reader.
pub const MAX_STATE_FILE: u64 = 64 << 20;

/// Reads a file, returning `None` when it does not exist. A regular file only, at most
/// [`MAX_STATE_FILE`] bytes (see [`read_bounded`]).
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    read_bounded(path, MAX_STATE_FILE)
}

/// [`read_bounded`] with the plain `io::Error` of `std::fs::read` (`NotFound` included), for
/// callers that map the error themselves.
pub fn read_capped(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    match read_bounded(path, cap) {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(io::Error::from(io::ErrorKind::NotFound)),
        Err(e) => Err(e.source),
    }
}

/// Opens `path` for reading without blocking on a FIFO or a device, and checks that it is
/// a regular file. `O_NONBLOCK` makes the open of a FIFO return at once (a plain open would
/// wait for a writer forever); the `fstat` then refuses it, like a device (`/dev/zero`).
#[cfg(unix)]
pub fn open_regular(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file (it is {})", path.display(), kind_of(&meta.file_type())),
        ));
    }
    Ok(f)
}

/// Opens `path` for reading (see the Unix variant).
#[cfg(not(unix))]
pub fn open_regular(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// What kind of file this is, in words, for an error message.
pub fn kind_of(t: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symlink"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Reads a file someone else controls: a regular file only (see [`open_regular`]), at most
/// `cap` bytes (a larger one is an error, not a truncated read). `None` when it does not
/// exist.
pub fn read_bounded(path: &Path, cap: u64) -> Result<Option<Vec<u8>>, Error> {
    use std::io::Read;
    let f = match open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::new("read", path, e)),
    };
    let mut buf = Vec::new();
    f.take(cap.saturating_add(1)).read_to_end(&mut buf).map_err(|e| Error::new("read", path, e))?;
    if buf.len() as u64 > cap {
        return Err(Error::new(
            "read",
            path,
            io::Error::new(io::ErrorKind::InvalidData, format!("the file is larger than {cap} bytes")),
        ));
    }
    Ok(Some(buf))
}

/// Writes `bytes` to `path` atomically with default options, unless it already holds them.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<Written, Error> {
    write_atomic_with(path, bytes, WriteOptions::default())
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of the directory),
/// unless the file already holds exactly these bytes and has the requested mode.
pub fn write_atomic_with(path: &Path, bytes: &[u8], opts: WriteOptions) -> Result<Written, Error> {
    write_atomic_impl(path, bytes, opts, true)
}

/// [`write_atomic_with`] without the two `fsync`s: still atomic for every reader (the
/// rename), but not durable across a crash of the machine. For a file whose content means
/// nothing after a reboot (a record of this boot's processes, stamped with its boot id),
/// where the fsyncs cost milliseconds on every write and bought nothing.
pub fn write_atomic_unsynced(path: &Path, bytes: &[u8], opts: WriteOptions) -> Result<Written, Error> {
    write_atomic_impl(path, bytes, opts, false)
}

fn write_atomic_impl(path: &Path, bytes: &[u8], opts: WriteOptions, durable: bool) -> Result<Written, Error> {
    if let Some(current) = read_optional(path)?
        && current == bytes
        && mode_matches(path, opts.mode)
    {
        return Ok(Written::Unchanged);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if opts.create_parents {
        fs::create_dir_all(&dir).map_err(|e| Error::new("create directory", &dir, e))?;
    }
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}-{}", std::process::id(), unique()));
    let result = (|| {
        let mut open = OpenOptions::new();
        open.write(true).create_new(true);
        #[cfg(unix)]
        open.mode(opts.mode);
        let mut f = open.open(&tmp).map_err(|e| Error::new("create", &tmp, e))?;
        #[cfg(unix)]
        f.set_permissions(fs::Permissions::from_mode(opts.mode)).map_err(|e| Error::new("chmod", &tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::new("write", &tmp, e))?;
        if durable {
            f.sync_all().map_err(|e| Error::new("fsync", &tmp, e))?;
        }
        fs::rename(&tmp, path).map_err(|e| Error::new("rename", path, e))?;
        if durable { sync_dir(&dir) } else { Ok(()) }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| Written::Changed)
}

/// Removes a file; a file that is already gone is success (`Unchanged`).
pub fn remove_file(path: &Path) -> Result<Written, Error> {
    match fs::remove_file(path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                let _ = sync_dir(dir);
            }
            Ok(Written::Changed)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Written::Unchanged),
        Err(e) => Err(Error::new("remove", path, e)),
    }
}

/// The last `n` lines of a (log) file, read from at most its last 64 KiB so a huge log
/// costs nothing; a first line cut by that window is dropped. Empty when the file is
/// missing or unreadable: a tail is a courtesy in an error message, never the error.
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    const WINDOW: u64 = 64 * 1024;
    let Ok(mut f) = open_regular(path) else { return Vec::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(WINDOW);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).and_then(|_| f.read_to_end(&mut buf)).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let from = lines.len().saturating_sub(n);
    lines[from..].iter().map(|l| (*l).to_owned()).collect()
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    // fsync of the directory makes the rename durable; some filesystems refuse it, which
    // is not worth failing a write over.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(unix)]
fn mode_matches(path: &Path, mode: u32) -> bool {
    fs::metadata(path).map(|m| m.permissions().mode() & 0o7777 == mode).unwrap_or(false)
}

#[cfg(not(unix))]
fn mode_matches(_path: &Path, _mode: u32) -> bool {
    true
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (COUNTER.fetch_add(1, Ordering::Relaxed) << 32) ^ nanos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_then_skips_identical_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/unit.service");
        assert_eq!(write_atomic(&p, b"one").unwrap(), Written::Changed);
        let ino1 = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).unwrap());
        assert_eq!(write_atomic(&p, b"one").unwrap(), Written::Unchanged);
        let ino2 = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).unwrap());
        assert_eq!(ino1, ino2, "an unchanged file must not be replaced");
        assert_eq!(write_atomic(&p, b"two").unwrap(), Written::Changed);
        assert_eq!(fs::read(&p).unwrap(), b"two");
        // no temp files left behind
        let names: Vec<_> =
            fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn mode_is_applied_and_a_mode_change_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        let opts = WriteOptions { mode: 0o600, ..Default::default() };
        write_atomic_with(&p, b"x", opts).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(write_atomic_with(&p, b"x", opts).unwrap(), Written::Changed);
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn tail_keeps_the_last_lines_and_drops_a_cut_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        assert!(tail_lines(&p, 3).is_empty(), "a missing file has no tail");
        fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(tail_lines(&p, 2), ["b", "c"]);
        assert_eq!(tail_lines(&p, 10), ["a", "b", "c"]);
        // Larger than the window: the line cut at the window's start is not shown.
        let big: String = (0..20_000).map(|i| format!("line {i:05}\n")).collect();
        fs::write(&p, &big).unwrap();
        let t = tail_lines(&p, 100_000);
        assert_eq!(t.last().unwrap(), "line 19999");
        assert!(t.iter().all(|l| l.len() == 10), "no partial line: {:?}", &t[..2]);
    }

    #[test]
    fn bounded_reads_refuse_fifos_devices_and_oversized_files_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("services.json");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let started = std::time::Instant::now();
        let err = read_bounded(&fifo, 1024).unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
        assert!(tail_lines(&fifo, 5).is_empty());
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "a FIFO must not block the reader");
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(read_bounded(&zero, 1024).unwrap_err().to_string().contains("a device"));
        let big = dir.path().join("big");
        fs::write(&big, vec![b'x'; 2048]).unwrap();
        assert!(read_bounded(&big, 1024).unwrap_err().to_string().contains("larger than 1024"));
        assert_eq!(read_bounded(&big, 2048).unwrap().unwrap().len(), 2048);
        assert_eq!(read_bounded(&dir.path().join("missing"), 1).unwrap(), None);
    }

    #[test]
    fn remove_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, "x").unwrap();
        assert_eq!(remove_file(&p).unwrap(), Written::Changed);
        assert_eq!(remove_file(&p).unwrap(), Written::Unchanged);
    }

    #[test]
    fn error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "x").unwrap();
        let err = write_atomic(&blocker.join("child"), b"x").unwrap_err();
        assert!(err.to_string().contains("file"), "{err}");
    }
}
