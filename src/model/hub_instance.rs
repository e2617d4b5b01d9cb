//! `hub-instance.json`: what a running `parachute serve` says about itself.
//!
//! `{ "pid", "port", "instance", "startedAt" }` (camelCase, as upstream writes it), written
//! atomically so the CLI can find the live hub and its port without trusting the stale
//! `hub.port` (W39). Mode 0600: only the hub's user (and root) drive the hub, and the
//! record is no business of the machine's other users (`docs/security.md`). Fields this version does not know (upstream
//! adds `selfProbe`) are kept on a read-modify-write.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The running hub's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubInstance {
    /// The `serve` process's pid.
    pub pid: u32,
    /// The port the control API listens on.
    pub port: u16,
    /// A per-boot nonce; a different value means a different boot.
    pub instance: String,
    /// When this boot started (RFC 3339 on disk).
    #[serde(with = "crate::rfc3339::serde")]
    pub started_at: OffsetDateTime,
    /// Fields written by other versions, preserved as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Why `hub-instance.json` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HubInstanceError {
    /// Reading failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The content is not a valid instance record.
    #[error("{} is not a valid hub instance record ({source}); it is rewritten when the hub next starts.", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The JSON error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] parachute_fsx::Error),
}

impl HubInstance {
    /// A record for a boot starting now-ish.
    pub fn new(pid: u32, port: u16, instance: String, started_at: OffsetDateTime) -> HubInstance {
        HubInstance { pid, port, instance, started_at, extra: serde_json::Map::new() }
    }

    /// Reads the record. `Ok(None)` when no hub has written one (or it was cleared).
    pub fn read(path: &Path) -> Result<Option<HubInstance>, HubInstanceError> {
        let bytes = match parachute_fsx::read_capped(path, 1 << 20) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(HubInstanceError::Read { path: path.to_path_buf(), source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| HubInstanceError::Malformed { path: path.to_path_buf(), source })
    }

    /// Writes the record atomically, mode 0600, as pretty JSON with a trailing newline.
    pub fn write(&self, path: &Path) -> Result<parachute_fsx::Written, HubInstanceError> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a HubInstance always serializes");
        bytes.push(b'\n');
        let opts = parachute_fsx::WriteOptions { mode: 0o600, ..Default::default() };
        Ok(parachute_fsx::write_atomic_with(path, &bytes, opts)?)
    }

    /// Removes the record (clean stop). A missing file is fine.
    pub fn clear(path: &Path) -> Result<(), HubInstanceError> {
        parachute_fsx::remove_file(path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use time::macros::datetime;

    #[test]
    fn round_trip_is_camel_case_0600_and_keeps_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hub-instance.json");
        let mut rec = HubInstance::new(123, 1939, "abc".into(), datetime!(2025-01-02 03:04:05.5 UTC));
        rec.write(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"startedAt\": \"2025-01-02T03:04:05.5Z\""), "{text}");
        assert!(text.ends_with("}\n"));
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(HubInstance::read(&p).unwrap().unwrap(), rec);

        std::fs::write(
            &p,
            r#"{"instance":"n","pid":9,"port":1939,"startedAt":"2025-01-02T03:04:05.123Z","selfProbe":{"ok":true}}"#,
        )
        .unwrap();
        rec = HubInstance::read(&p).unwrap().unwrap();
        assert_eq!(rec.extra["selfProbe"]["ok"], serde_json::Value::Bool(true));
        rec.pid = 10;
        rec.write(&p).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().contains("selfProbe"));
    }

    #[test]
    fn missing_is_none_malformed_names_file_and_clear_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hub-instance.json");
        assert!(HubInstance::read(&p).unwrap().is_none());
        std::fs::write(&p, "{\"pid\": 1,").unwrap();
        let e = HubInstance::read(&p).unwrap_err();
        assert!(e.to_string().contains("hub-instance.json") && e.to_string().contains("line 1"), "{e}");
        std::fs::write(&p, r#"{"pid":1,"port":0,"instance":"x","startedAt":"nope"}"#).unwrap();
        assert!(HubInstance::read(&p).is_err());
        HubInstance::clear(&p).unwrap();
        HubInstance::clear(&p).unwrap();
        assert!(!p.exists());
    }
}
