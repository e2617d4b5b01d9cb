//! The hand-over document of an in-place upgrade (issue 17): what a running hub passes to
//! the image that replaces it (`execve` through [`parachute_process::Spawner::exec`], same
//! pid), so that the new image adopts every module instead of restarting it.
//!
//! The document is an anonymous memory file (Linux `memfd`, never on disk): an 8-byte
//! little-endian length, that many bytes of JSON, then every module's log lines back to
//! back (the JSON gives each line's length). The new image finds its descriptor number in
//! [`FD_ENV`]; the hub removes that variable from its environment snapshot before anything
//! reads it, so no module ever sees it. The other descriptors it names (the control
//! listener, each module's stdout and stderr pipe) are inherited across the exec: they lose
//! `FD_CLOEXEC` on the spawner thread right before the `execve`, and nowhere else. Pidfds
//! are not handed over: the new image opens its own for children that are provably its own
//! (unreaped, so their pids cannot have been reused).
//!
//! Versioned: [`FORMAT_VERSION`] is checked before anything else is parsed, and an image
//! that does not know the version refuses the whole document with a reason — the old
//! image asks the new binary `serve --check-handover <fd>` first (a dry run: parse and
//! validate, adopt nothing) and execs only on its exit 0, so a new binary that cannot read
//! the document, or cannot start at all, leaves the old hub running.
//!
//! Each module is adopted only when its identity still holds: the same boot, a leader with
//! the recorded pid *and* start time, whose parent is this very process (the exec kept the
//! pid). Anything else is restarted, with the reason logged ([`Verdict::Restart`]). See
//! docs/architecture.md, "In-place upgrade".
use std::io::Read;

use parachute_process::procfs::{self, ProcessIdentity};
use serde::{Deserialize, Serialize};

/// The version of the document this image writes and reads. Bump it on any change an
/// older image could misread; adding an optional field with a default is not one.
pub const FORMAT_VERSION: u32 = 1;

/// The environment variable naming the document's descriptor in the new image.
pub const FD_ENV: &str = "PARACHUTE_HANDOVER_FD";

/// The largest JSON part read: modules' requests (with their environments) and line
/// lengths, far below this.
pub const MAX_DOC_BYTES: u64 = 64 * 1024 * 1024;

/// The largest log part read: every module's ring buffer.
pub const MAX_LOG_BYTES: u64 = 256 * 1024 * 1024;

/// The whole document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handover {
    /// [`FORMAT_VERSION`] of the writer.
    pub version: u32,
    /// The hub's pid when it wrote this: the new image must have the same (it is an exec).
    pub hub_pid: u32,
    /// `/proc/sys/kernel/random/boot_id` when written: start ticks mean nothing across a
    /// reboot.
    pub boot_id: Option<String>,
    /// The instance nonce, kept by the new image: every module carries it in its
    /// environment (the supervisor's process tag), so a new one would disown their
    /// descendants. See docs/architecture.md for why `/health`'s `instance` stays too.
    pub instance: String,
    /// When this hub instance started (RFC 3339), kept: the hub did not restart.
    pub started_at: String,
    /// In-place upgrades this instance went through before this one.
    pub generation: u32,
    /// The control API's listening socket, inherited: a client connecting during the exec
    /// waits in its backlog instead of being refused.
    pub listener_fd: i32,
    /// The control API's port.
    pub port: u16,
    /// The descriptors holding the home's locks (the home directory's and `serve.lock`'s),
    /// inherited so no second hub can take the home while the image changes.
    #[serde(default)]
    pub lock_fds: (Option<i32>, Option<i32>),
    /// The build that wrote this (for the log line of the new image).
    pub from_build: String,
    /// Every supervised module.
    pub modules: Vec<HandedModule>,
}

/// One supervised module, as handed over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandedModule {
    /// The module.
    pub short: String,
    /// Its state as the API showed it.
    pub state: crate::supervisor::ModuleState,
    /// What it was started with (its respawns use it).
    pub request: Option<crate::supervisor::SpawnRequest>,
    /// Its leader, by identity (pid + start time), if it has a child.
    pub leader: Option<ProcessIdentity>,
    /// The read end of its stdout pipe, inherited (`None`: no child, or it closed it).
    pub stdout_fd: Option<i32>,
    /// The read end of its stderr pipe, inherited.
    pub stderr_fd: Option<i32>,
    /// An unfinished stdout line (bytes).
    #[serde(default)]
    pub partial_stdout: Vec<u8>,
    /// An unfinished stderr line (bytes).
    #[serde(default)]
    pub partial_stderr: Vec<u8>,
    /// The sequence number of its first buffered log line; the lines follow in the log
    /// part, `ring_lens` long each, so `logs --since` cursors stay valid.
    pub ring_first_seq: u64,
    /// The length of each buffered line, oldest first.
    pub ring_lens: Vec<u32>,
    /// How long ago (ms) each crash its budget counts was, so an upgrade does not reset
    /// a crash loop's budget.
    #[serde(default)]
    pub crash_ages_ms: Vec<u64>,
    /// Spawns so far.
    pub spawn_seq: u64,
    /// A crash respawn due in this many ms.
    pub respawn_in_ms: Option<u64>,
    /// How long (ms) its child has been up.
    pub uptime_ms: u64,
}

/// Why a document was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The descriptor could not be read.
    #[error("cannot read the hand-over document: {0}")]
    Read(#[source] std::io::Error),
    /// Not JSON, or not this shape.
    #[error("the hand-over document is malformed: {0}")]
    Malformed(#[source] serde_json::Error),
    /// Written by an image with a format this one does not know.
    #[error(
        "the hand-over document has format version {found}; this binary reads version {FORMAT_VERSION} \
         only, so it cannot adopt the running modules"
    )]
    Version {
        /// The writer's version.
        found: u32,
    },
    /// Not written by this process (the exec keeps the pid).
    #[error("the hand-over document was written by pid {written}, not by this process ({mine})")]
    NotOurs {
        /// The writer's pid.
        written: u32,
        /// Ours.
        mine: u32,
    },
}

/// What the new image does with one handed-over module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its identity holds (or it has no child): adopt it, its pipes and its log.
    Adopt,
    /// Its child cannot be proven to be the one that was handed over: start it afresh.
    Restart {
        /// Said in the hub's log.
        reason: String,
    },
}

impl Handover {
    /// Serializes the document.
    #[cfg_attr(
        not(target_os = "linux"),
        allow(dead_code, reason = "written into a Linux memory file only (and by tests)")
    )]
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Handover always serializes")
    }

    /// Parses a document: the version first, so a newer writer's shape is refused by its
    /// version, not by whatever field happens to fail.
    pub fn parse(bytes: &[u8]) -> Result<Handover, HandoverError> {
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(HandoverError::Malformed)?;
        if probe.version != FORMAT_VERSION {
            return Err(HandoverError::Version { found: probe.version });
        }
        serde_json::from_slice(bytes).map_err(HandoverError::Malformed)
    }

    /// Reads a whole memory file: its JSON part (at most [`MAX_DOC_BYTES`]) and its log
    /// part (at most [`MAX_LOG_BYTES`]): the descriptor is named on a command line or in the
    /// environment, so what it holds is not trusted to be small.
    pub fn read_from(mut r: impl Read) -> Result<(Handover, Vec<u8>), HandoverError> {
        let doc = Handover::read_doc(&mut r)?;
        let mut logs = Vec::new();
        r.take(MAX_LOG_BYTES + 1).read_to_end(&mut logs).map_err(HandoverError::Read)?;
        if logs.len() as u64 > MAX_LOG_BYTES {
            return Err(HandoverError::Read(std::io::Error::other(format!(
                "its log part is larger than {MAX_LOG_BYTES} bytes"
            ))));
        }
        let want: u64 = doc.modules.iter().flat_map(|m| &m.ring_lens).map(|&n| u64::from(n)).sum();
        if want != logs.len() as u64 {
            return Err(HandoverError::Read(std::io::Error::other(format!(
                "its log part holds {} bytes where the document names {want}",
                logs.len()
            ))));
        }
        Ok((doc, logs))
    }

    /// Reads the JSON part only (the dry run's check).
    pub fn read_doc(r: &mut impl Read) -> Result<Handover, HandoverError> {
        let mut len = [0u8; 8];
        r.read_exact(&mut len).map_err(HandoverError::Read)?;
        let len = u64::from_le_bytes(len);
        if len > MAX_DOC_BYTES {
            return Err(HandoverError::Read(std::io::Error::other(format!(
                "the document is larger than {MAX_DOC_BYTES} bytes"
            ))));
        }
        let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
        r.read_exact(&mut bytes).map_err(HandoverError::Read)?;
        Handover::parse(&bytes)
    }

    /// The memory file's bytes: length, JSON, then `logs`.
    #[cfg_attr(
        not(target_os = "linux"),
        allow(dead_code, reason = "written into a Linux memory file only (and by tests)")
    )]
    pub fn encode(&self, logs: &[u8]) -> Vec<u8> {
        let json = self.to_json();
        let mut out = Vec::with_capacity(8 + json.len() + logs.len());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(logs);
        out
    }

    /// Checks the document was written by process `mine` (after an exec: by ourselves).
    pub fn check_writer(&self, mine: u32) -> Result<(), HandoverError> {
        if self.hub_pid == mine {
            Ok(())
        } else {
            Err(HandoverError::NotOurs { written: self.hub_pid, mine })
        }
    }

    /// One verdict per module, in order. `boot_id` is the current boot's; `hub_pid` the
    /// process that must be every leader's parent.
    pub fn verdicts(&self, boot_id: Option<&str>, hub_pid: u32) -> Vec<(String, Verdict)> {
        let same_boot = self.boot_id.is_some() && self.boot_id.as_deref() == boot_id;
        self.modules
            .iter()
            .map(|m| {
                let verdict = match &m.leader {
                    None => Verdict::Adopt,
                    Some(_) if !same_boot => {
                        Verdict::Restart { reason: "the hand-over was written in another boot".into() }
                    }
                    Some(leader) => identity_verdict(leader, hub_pid),
                };
                (m.short.clone(), verdict)
            })
            .collect()
    }
}

fn identity_verdict(leader: &ProcessIdentity, hub_pid: u32) -> Verdict {
    let Some(stat) = procfs::stat(leader.pid) else {
        return Verdict::Restart { reason: format!("its process {} is gone", leader.pid) };
    };
    if stat.start_ticks != leader.start_ticks {
        return Verdict::Restart {
            reason: format!("pid {} now names another process (a different start time)", leader.pid),
        };
    }
    if stat.ppid != hub_pid {
        return Verdict::Restart {
            reason: format!(
                "process {} is no longer a child of the hub (its parent is {})",
                leader.pid, stat.ppid
            ),
        };
    }
    if stat.is_exited() {
        return Verdict::Restart {
            reason: format!("its process {} exited during the hand-over", leader.pid),
        };
    }
    Verdict::Adopt
}

/// Writes `doc` and `logs` into a new anonymous memory file, positioned at its start. It is
/// close-on-exec like every descriptor of the hub: name it in [`SpawnSpec::keep_fds`]
/// (`parachute_process`) for the one child or image that must get it.
#[cfg(target_os = "linux")]
pub fn to_memfd(doc: &Handover, logs: &[u8]) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::io::{Seek, Write};
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: memfd_create with a NUL-terminated name and a flag; the result is checked.
    let fd = unsafe { libc::memfd_create(c"parachute-handover".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just created and own.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(&doc.encode(logs))?;
    file.rewind()?;
    Ok(file.into())
}

/// Memory files are Linux's; elsewhere an in-place upgrade is refused at its first step.
#[cfg(not(target_os = "linux"))]
pub fn to_memfd(_doc: &Handover, _logs: &[u8]) -> std::io::Result<std::os::fd::OwnedFd> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "in-place upgrades need Linux (an anonymous memory file carries the hand-over); restart the hub instead",
    ))
}

/// `serve --check-handover <fd>`: the new binary's dry run. Reads the document the running
/// hub wrote (it is this process's parent: the check runs before the exec), and answers
/// whether this binary can take over. Adopts nothing, signals nothing.
pub fn check(fd: i32, writer: u32) -> Result<String, HandoverError> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        return Err(HandoverError::Read(std::io::Error::other(format!(
            "{fd} is not a hand-over descriptor"
        ))));
    }
    // SAFETY: F_GETFD on a plain number. An unopened one must not become a `File`: closing
    // it would be an I/O-safety violation (an abort), not an error.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(HandoverError::Read(std::io::Error::last_os_error()));
    }
    // SAFETY: the caller names a descriptor it was given for this purpose; this process
    // exits right after the check, so ownership ends with it.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let doc = Handover::read_doc(&mut file)?;
    doc.check_writer(writer)?;
    Ok(format!(
        "can take over hub {} (format {}, from build {}, {} module(s))",
        doc.hub_pid,
        doc.version,
        crate::text::field(&doc.from_build),
        doc.modules.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(modules: Vec<HandedModule>) -> Handover {
        Handover {
            version: FORMAT_VERSION,
            hub_pid: std::process::id(),
            boot_id: Some("b1".into()),
            instance: "nonce".into(),
            listener_fd: 3,
            port: 1939,
            from_build: "old".into(),
            started_at: "2026-12-04T17:00:00Z".into(),
            generation: 0,
            lock_fds: (None, None),
            modules,
        }
    }

    fn module(short: &str, leader: ProcessIdentity) -> HandedModule {
        HandedModule {
            short: short.into(),
            state: crate::supervisor::ModuleState::new(short, crate::supervisor::ModuleStatus::Running),
            request: None,
            leader: Some(leader),
            stdout_fd: Some(4),
            stderr_fd: Some(5),
            partial_stdout: b"half a li".to_vec(),
            partial_stderr: Vec::new(),
            ring_first_seq: 42,
            ring_lens: vec![3, 4],
            crash_ages_ms: vec![1, 2],
            spawn_seq: 3,
            respawn_in_ms: None,
            uptime_ms: 10,
        }
    }

    #[test]
    fn a_document_past_the_bound_is_refused_unread() {
        let mut huge = (MAX_DOC_BYTES + 10).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        let err = Handover::read_from(&huge[..]).unwrap_err();
        assert!(matches!(err, HandoverError::Read(_)), "{err}");
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    #[test]
    fn the_log_part_must_be_exactly_what_the_document_names() {
        let d = doc(vec![module("vault", ProcessIdentity { pid: 1, start_ticks: 2 })]);
        let (back, logs) = Handover::read_from(&d.encode(b"ab\nabc\n")[..]).unwrap();
        assert_eq!((back, &logs[..]), (d.clone(), &b"ab\nabc\n"[..]));
        let err = Handover::read_from(&d.encode(b"ab\n")[..]).unwrap_err();
        assert!(err.to_string().contains("names 7"), "{err}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_dry_run_summary_carries_no_raw_control_bytes() {
        use std::os::fd::IntoRawFd;
        let mut d = doc(vec![]);
        d.from_build = "old\u{1b}[2J\r".into();
        let fd = to_memfd(&d, b"").unwrap().into_raw_fd();
        let summary = check(fd, std::process::id()).unwrap();
        assert!(!summary.chars().any(|c| c.is_control()), "{summary:?}");
        assert!(summary.contains("from build old\\e[2J\\r"), "{summary:?}");
    }

    #[test]
    fn round_trips() {
        let d = doc(vec![module("vault", ProcessIdentity { pid: 1, start_ticks: 2 })]);
        assert_eq!(Handover::parse(&d.to_json()).unwrap(), d);
    }

    #[test]
    fn an_unknown_version_is_refused_by_its_version() {
        let mut v = serde_json::to_value(doc(vec![])).unwrap();
        v["version"] = 2.into();
        v["modules"] = "a shape this image does not know".into();
        let err = Handover::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(err, HandoverError::Version { found: 2 }), "{err}");
        assert!(err.to_string().contains("format version 2"), "{err}");
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(Handover::parse(b"not json"), Err(HandoverError::Malformed(_))));
    }

    #[test]
    fn a_document_of_another_process_is_refused() {
        let d = doc(vec![]);
        assert!(d.check_writer(std::process::id()).is_ok());
        assert!(matches!(d.check_writer(std::process::id() + 1), Err(HandoverError::NotOurs { .. })));
    }

    #[test]
    fn verdicts_adopt_only_a_provable_child() {
        let mut child = std::process::Command::new("sleep").arg("1000").spawn().unwrap();
        let me = std::process::id();
        let id = procfs::identity(child.id()).unwrap();
        let wrong_ticks = ProcessIdentity { pid: id.pid, start_ticks: id.start_ticks + 1 };
        // pid 1 runs, but is nobody's child of ours.
        let init = procfs::identity(1).unwrap();
        let d = doc(vec![module("a", id), module("b", wrong_ticks), module("c", init)]);

        let v = d.verdicts(Some("b1"), me);
        assert_eq!(v[0], ("a".into(), Verdict::Adopt));
        assert!(
            matches!(&v[1].1, Verdict::Restart { reason } if reason.contains("another process")),
            "{v:?}"
        );
        assert!(
            matches!(&v[2].1, Verdict::Restart { reason } if reason.contains("no longer a child")),
            "{v:?}"
        );

        let other_boot = d.verdicts(Some("b2"), me);
        assert!(other_boot.iter().all(|(_, v)| matches!(v, Verdict::Restart { .. })), "{other_boot:?}");

        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            matches!(&d.verdicts(Some("b1"), me)[0].1, Verdict::Restart { reason } if reason.contains("gone"))
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_memfd_carries_the_document_and_reaches_no_child_unasked() {
        use std::os::fd::{AsRawFd, IntoRawFd};
        let d = doc(vec![module("vault", ProcessIdentity { pid: 1, start_ticks: 2 })]);
        let fd = to_memfd(&d, b"ab\nabc\n").unwrap();
        // SAFETY: F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "only a child named in keep_fds may get it");
        let summary = check(fd.into_raw_fd(), std::process::id()).unwrap();
        assert!(summary.contains("1 module(s)"), "{summary}");
    }
}
