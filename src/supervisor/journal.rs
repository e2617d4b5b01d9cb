//! Per-module identity in the systemd journal.
//!
//! Every module of a hub shares the hub's unit, so `_SYSTEMD_UNIT` alone cannot tell them
//! apart. When the hub's own output is the journal, each module gets two journald *stream*
//! connections of its own (`/run/systemd/journal/stdout`, the protocol of
//! `sd_journal_stream_fd(3)`): the header names the module as `SYSLOG_IDENTIFIER` and sets
//! the priority (info for stdout, err for stderr), then the pump writes the module's lines,
//! unprefixed, in large writes. `journalctl -u parachute-hub -t vault` then shows vault
//! alone, while the pump still fills the module's ring buffer for `parachute logs`.
//!
//! Why streams and not the native datagram protocol for module lines: a stream takes many
//! lines per `write`, a datagram one entry per `sendmsg`, and the measured throughput of
//! the stream sink is in docs/benchmarks.md. The supervisor's own events about a module
//! (restarting, gave-up, escalated …) go as native datagrams, because they carry
//! structured fields: `PARACHUTE_MODULE=<short>` and `PARACHUTE_EVENT=<kind>` ([`EventKind`]).
//!
//! Whether the hub's output is the journal is the manager's word: `JOURNAL_STREAM` names
//! the device and inode of the stream it connected to the hub's stderr (systemd.exec(5)),
//! compared with what fd 2 really is, so an inherited variable is not believed.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;

/// journald's stream socket (`StandardOutput=journal` uses it too).
pub const STREAM_SOCKET: &str = "/run/systemd/journal/stdout";

/// journald's native-protocol socket.
pub const NATIVE_SOCKET: &str = "/run/systemd/journal/socket";

/// syslog priorities used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// 3: a module's stderr.
    Err = 3,
    /// 5: supervisor events.
    Notice = 5,
    /// 6: a module's stdout.
    Info = 6,
}

/// Where journald listens (fixed by the protocol; a parameter so tests can point
/// elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSockets {
    /// The stream socket.
    pub stream: PathBuf,
    /// The native datagram socket.
    pub native: PathBuf,
}

impl Default for JournalSockets {
    fn default() -> Self {
        JournalSockets { stream: STREAM_SOCKET.into(), native: NATIVE_SOCKET.into() }
    }
}

/// Whether `journal_stream` (the `JOURNAL_STREAM` value, `<dev>:<ino>`) is the stream
/// connected to `fd`, which is how a service knows its output goes to the journal.
pub fn is_journal_stream(journal_stream: Option<&str>, fd: impl AsFd) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.trim().split_once(':')) else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    match nix::sys::stat::fstat(fd) {
        // `dev_t` is `u64` on Linux and `i32` on macOS (where this is never true anyway).
        #[allow(clippy::unnecessary_cast, reason = "dev_t differs by platform")]
        Ok(st) => st.st_dev as u64 == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// The name journald shows for a module: its short name, with anything that would break
/// the one-line header (or look like another field) replaced.
fn identifier(short: &str) -> String {
    short.chars().map(|c| if c.is_control() || c == '=' { '_' } else { c }).collect()
}

/// Opens a journald stream connection for a module's stream: after the header every line
/// written is one journal entry with `SYSLOG_IDENTIFIER=<short>` at `priority`.
pub fn open_stream(sockets: &JournalSockets, short: &str, priority: Priority) -> io::Result<UnixStream> {
    let mut s = UnixStream::connect(&sockets.stream)?;
    s.shutdown(std::net::Shutdown::Read)?;
    // identifier, unit id (empty), priority, level prefix, forward to syslog/kmsg/console.
    let header = format!("{}\n\n{}\n0\n0\n0\n0\n", identifier(short), priority as u8);
    s.write_all(header.as_bytes())?;
    Ok(s)
}

/// What a supervisor event about a module says happened: the `PARACHUTE_EVENT` field, so
/// `journalctl PARACHUTE_EVENT=gave-up` finds every module the hub gave up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The module could not be started (`startError`: missing dependency, not executable,
    /// spawn failed, port squatter).
    StartFailed,
    /// It runs but did not bind its port within the readiness window.
    StartedButUnbound,
    /// It bound its port after the readiness window.
    Listening,
    /// It exited unasked; a restart is scheduled.
    Restarting,
    /// It exited too often within the crash window; it stays `crashed`.
    GaveUp,
    /// It did not exit within the grace after SIGTERM: SIGKILL.
    Escalated,
    /// It survived SIGKILL; it is reaped whenever it goes.
    Unkillable,
    /// Processes that had left its process group were stopped with it.
    EscapeesStopped,
    /// Its port is held by a process that is not its own; it is not started.
    PortHeld,
    /// Its port is held by an orphan of its own, which is stopped first.
    ReclaimingPort,
}

impl EventKind {
    /// The field's value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::StartFailed => "start-failed",
            EventKind::StartedButUnbound => "started-but-unbound",
            EventKind::Listening => "listening",
            EventKind::Restarting => "restarting",
            EventKind::GaveUp => "gave-up",
            EventKind::Escalated => "escalated",
            EventKind::Unkillable => "unkillable",
            EventKind::EscapeesStopped => "escapees-stopped",
            EventKind::PortHeld => "port-held",
            EventKind::ReclaimingPort => "reclaiming-port",
        }
    }
}

/// Sends the supervisor's events as native journal entries with structured fields.
#[derive(Debug)]
pub struct EventSender {
    sock: UnixDatagram,
    target: PathBuf,
}

impl EventSender {
    /// A sender to `sockets.native`.
    pub fn new(sockets: &JournalSockets) -> io::Result<EventSender> {
        Ok(EventSender { sock: UnixDatagram::unbound()?, target: sockets.native.clone() })
    }

    /// One entry: `MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER=parachute`, `PARACHUTE_MODULE`,
    /// `PARACHUTE_EVENT`. Best effort: a full or absent journal loses the entry, never
    /// blocks the supervisor.
    pub fn send(&self, short: &str, kind: EventKind, message: &str) {
        let entry = native_entry(&[
            ("MESSAGE", message.trim_end_matches('\n')),
            ("PRIORITY", &(Priority::Notice as u8).to_string()),
            ("SYSLOG_IDENTIFIER", "parachute"),
            ("PARACHUTE_MODULE", short),
            ("PARACHUTE_EVENT", kind.as_str()),
        ]);
        if let Err(e) = self.sock.send_to(&entry, &self.target) {
            tracing::debug!("journal event lost: {e}");
        }
    }
}

/// Encodes fields in journald's native format: `KEY=value\n`, or for a value holding a
/// newline `KEY\n<u64 le length><value>\n`.
pub fn native_entry(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in fields {
        out.extend_from_slice(k.as_bytes());
        if v.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        } else {
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_stream_connection_starts_with_the_sd_journal_stream_fd_header() {
        let dir = tempfile::tempdir().unwrap();
        let sockets = JournalSockets { stream: dir.path().join("stdout"), native: dir.path().join("socket") };
        let listener = std::os::unix::net::UnixListener::bind(&sockets.stream).unwrap();
        let mut s = open_stream(&sockets, "vault\nPRIORITY=0", Priority::Err).unwrap();
        s.write_all(b"hello\n").unwrap();
        drop(s);
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = String::new();
        conn.read_to_string(&mut got).unwrap();
        assert_eq!(got, "vault_PRIORITY_0\n\n3\n0\n0\n0\n0\nhello\n");
    }

    #[test]
    fn native_entries_carry_the_module_and_event_fields() {
        let dir = tempfile::tempdir().unwrap();
        let sockets = JournalSockets { stream: dir.path().join("stdout"), native: dir.path().join("socket") };
        let rx = UnixDatagram::bind(&sockets.native).unwrap();
        EventSender::new(&sockets).unwrap().send(
            "scribe",
            EventKind::Restarting,
            "[supervisor] scribe crashed\n",
        );
        let mut buf = [0u8; 512];
        let n = rx.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.contains("MESSAGE=[supervisor] scribe crashed\n"), "{text}");
        assert!(text.contains("PARACHUTE_MODULE=scribe\n") && text.contains("PARACHUTE_EVENT=restarting\n"));
        assert!(text.contains("SYSLOG_IDENTIFIER=parachute\n") && text.contains("PRIORITY=5\n"));
    }

    #[test]
    fn a_value_with_a_newline_is_length_prefixed() {
        let e = native_entry(&[("MESSAGE", "a\nb")]);
        assert_eq!(e, b"MESSAGE\n\x03\0\0\0\0\0\0\0a\nb\n");
    }

    #[test]
    fn journal_stream_must_name_the_real_descriptor() {
        let f = tempfile::tempfile().unwrap();
        let st = nix::sys::stat::fstat(&f).unwrap();
        assert!(is_journal_stream(Some(&format!("{}:{}", st.st_dev, st.st_ino)), &f));
        assert!(!is_journal_stream(Some(&format!("{}:{}", st.st_dev, st.st_ino + 1)), &f));
        assert!(!is_journal_stream(None, &f));
        assert!(!is_journal_stream(Some("garbage"), &f));
    }
}
