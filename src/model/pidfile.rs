//! Legacy pidfiles (`<home>/<short>/run/<short>.pid`, `hub/run/hub.pid`) and the hub port
//! file (`hub/run/hub.port`).
//!
//! Nothing in the supervised model writes these any more; they are read to detect (and
//! migrate) a box still running the legacy detached daemons. Because a pid read from a file
//! may be signalled later, the reader is strict where upstream was lenient: upstream parsed
//! the leading digits (`123abc` → 123) and turned garbage into "no pid". Here the trimmed
//! content must be a positive decimal number and nothing else; anything else is
//! [`PidfileError::Malformed`], naming the file, so the caller can say so instead of
//! silently acting on a wrong pid.
//!
//! The pidfile's mtime is returned with the pid: a process whose start time is *later*
//! than the pidfile's mtime cannot be the one that wrote it (pid reuse), which the
//! attribution code checks.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A pid read from a pidfile, with the file's modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidRecord {
    /// The recorded pid (always > 0).
    pub pid: i32,
    /// When the pidfile was last written.
    pub mtime: SystemTime,
}

/// Why a pid or port file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PidfileError {
    /// The file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The content is not what the format requires.
    #[error("{} is malformed: expected {expected}, found {found:?}. Remove it if nothing is running.", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What the format requires.
        expected: &'static str,
        /// What was found (trimmed, clipped to 40 characters).
        found: String,
    },
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] parachute_fsx::Error),
}

/// Reads the file and its mtime from one open handle. `None` if it does not exist.
fn read_with_mtime(path: &Path) -> Result<Option<(String, SystemTime)>, PidfileError> {
    let err = |source| PidfileError::Read { path: path.to_path_buf(), source };
    // Not blocking on a FIFO, not reading a device: the pidfile is the home owner's.
    let mut f = match parachute_fsx::open_regular(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let mtime = f.metadata().and_then(|m| m.modified()).map_err(err)?;
    let mut bytes = Vec::new();
    // A pidfile is a few bytes; cap the read so a huge file at that path costs nothing.
    f.by_ref().take(4096).read_to_end(&mut bytes).map_err(err)?;
    Ok(Some((String::from_utf8_lossy(&bytes).into_owned(), mtime)))
}

fn malformed(path: &Path, expected: &'static str, found: &str) -> PidfileError {
    PidfileError::Malformed { path: path.to_path_buf(), expected, found: found.chars().take(40).collect() }
}

/// Parses a trimmed decimal number consisting only of ASCII digits.
fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Reads a pidfile (`<pid>\n`). `Ok(None)` when the file does not exist.
pub fn read_pidfile(path: &Path) -> Result<Option<PidRecord>, PidfileError> {
    let Some((text, mtime)) = read_with_mtime(path)? else { return Ok(None) };
    let t = text.trim();
    match digits::<i32>(t) {
        Some(pid) if pid > 0 => Ok(Some(PidRecord { pid, mtime })),
        _ => Err(malformed(path, "a positive decimal pid", t)),
    }
}

/// Writes `<pid>\n` atomically, creating parent directories (tests: a legacy box's file).
#[cfg(test)]
pub fn write_pidfile(path: &Path, pid: i32) -> Result<(), PidfileError> {
    parachute_fsx::write_atomic(path, format!("{pid}\n").as_bytes())?;
    Ok(())
}

/// Reads the hub port file (`<port>\n`, 1..65535). `Ok(None)` when it does not exist.
///
/// Only the legacy detached hub wrote this file, so a present one is probably stale (W39):
/// callers should prefer `hub-instance.json` and use this only to find a legacy hub.
pub fn read_port_file(path: &Path) -> Result<Option<u16>, PidfileError> {
    let Some((text, _)) = read_with_mtime(path)? else { return Ok(None) };
    let t = text.trim();
    match digits::<u16>(t) {
        Some(port) if port > 0 => Ok(Some(port)),
        _ => Err(malformed(path, "a port number 1..65535", t)),
    }
}

/// Writes `<port>\n` atomically (tests: a legacy box's file).
#[cfg(test)]
pub fn write_port_file(path: &Path, port: u16) -> Result<(), PidfileError> {
    parachute_fsx::write_atomic(path, format!("{port}\n").as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn round_trip_with_mtime_and_parents_created() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vault/run/vault.pid");
        let before = SystemTime::now() - Duration::from_secs(2);
        write_pidfile(&p, 4242).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "4242\n");
        let rec = read_pidfile(&p).unwrap().unwrap();
        assert_eq!(rec.pid, 4242);
        assert!(rec.mtime >= before && rec.mtime <= SystemTime::now() + Duration::from_secs(2));
    }

    #[test]
    fn missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_pidfile(&dir.path().join("x.pid")).unwrap().is_none());
        assert!(read_port_file(&dir.path().join("hub.port")).unwrap().is_none());
    }

    #[test]
    fn whitespace_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        std::fs::write(&p, "  77 \r\n").unwrap();
        assert_eq!(read_pidfile(&p).unwrap().unwrap().pid, 77);
    }

    #[test]
    fn garbage_is_malformed_not_a_pid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        for bad in ["123abc", "", "0", "-5", "+5", "1 2", "99999999999", "abc"] {
            std::fs::write(&p, bad).unwrap();
            let e = read_pidfile(&p).unwrap_err();
            assert!(matches!(e, PidfileError::Malformed { .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains(&p.display().to_string()), "{e}");
        }
    }

    #[test]
    fn port_file_accepts_1_to_65535_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hub/run/hub.port");
        write_port_file(&p, 1939).unwrap();
        assert_eq!(read_port_file(&p).unwrap(), Some(1939));
        for bad in ["0", "65536", "19x", "", "-1"] {
            std::fs::write(&p, bad).unwrap();
            let e = read_port_file(&p).unwrap_err();
            assert!(e.to_string().contains("hub.port") && e.to_string().contains("1..65535"), "{e}");
        }
        std::fs::write(&p, "65535\n").unwrap();
        assert_eq!(read_port_file(&p).unwrap(), Some(65535));
    }
}
