//! "A process on a port": the one model ([`PortHolder`]), the one reader ([`on_port`]) and
//! the one command-line matcher ([`names_any`]) behind the supervisor's squatter checks,
//! `serve`'s bind failure, the client's hub check and the cutover's port sweep.
//!
//! Everything comes from the host's process facts (`parachute_process::procfs`: `/proc` on
//! Linux, libproc on macOS), never from `lsof`/`ps` (upstream W17). Whose a holder is (ours, a sibling's, a legacy daemon's)
//! is decided by the caller from these facts; a command line is outside text and is only
//! ever shown through [`PortHolder::describe`] (sanitized).

use parachute_process::{ProcessIdentity, procfs};

/// Parent hops followed when collecting a holder's ancestry.
const MAX_HOPS: usize = 64;

/// Characters of a command line shown in a message.
const CMDLINE_SHOWN: usize = 200;

/// A process holding a LISTEN socket on a port, as the host showed it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortHolder {
    /// The holder's pid.
    pub pid: u32,
    /// Its process group, if `/proc/<pid>/stat` was readable.
    pub pgid: Option<u32>,
    /// Its start time in clock ticks, from the same `/proc/<pid>/stat` read as `pgid`: the
    /// identity the facts belong to, so a signal can never reach a later owner of the pid.
    pub start_ticks: Option<u64>,
    /// Its parent chain (parent first), as far as it could be read.
    pub ancestors: Vec<u32>,
    /// Its command line (arguments joined by spaces), raw, if readable and non-empty.
    pub cmdline: Option<String>,
}

impl PortHolder {
    /// What the host says about `pid` now.
    pub fn read(pid: u32) -> PortHolder {
        let st = procfs::stat(pid);
        let mut ancestors = Vec::new();
        let mut cur = st.as_ref().map(|s| s.ppid);
        while let Some(p) = cur.filter(|&p| p > 1 && ancestors.len() < MAX_HOPS && !ancestors.contains(&p)) {
            ancestors.push(p);
            cur = procfs::stat(p).map(|s| s.ppid);
        }
        PortHolder {
            pid,
            pgid: st.as_ref().map(|s| s.pgid),
            start_ticks: st.as_ref().map(|s| s.start_ticks),
            ancestors,
            cmdline: procfs::cmdline(pid),
        }
    }

    /// The identity these facts were read from (`None` when the stat was unreadable).
    pub fn identity(&self) -> Option<ProcessIdentity> {
        self.start_ticks.map(|start_ticks| ProcessIdentity { pid: self.pid, start_ticks })
    }

    /// `pid N (command line)`, the command line made safe for a terminal and clipped.
    pub fn describe(&self) -> String {
        match &self.cmdline {
            Some(c) => format!("pid {} ({})", self.pid, crate::text::field_clipped(c, CMDLINE_SHOWN)),
            None => format!("pid {} (command line unreadable)", self.pid),
        }
    }

    /// Whether this holder belongs to one of `leaders` (live children; each leads its own
    /// group, so its pid is also its pgid): same group, or a descendant.
    pub fn in_any_group(&self, leaders: &[u32]) -> bool {
        leaders.iter().any(|&l| l == self.pid || self.pgid == Some(l) || self.ancestors.contains(&l))
    }
}

/// Every distinct process listening on `port`, lowest pid first (forking servers share one
/// socket; stable messages).
pub fn on_port(port: u16) -> Vec<PortHolder> {
    let mut pids: Vec<u32> = procfs::listeners(port).into_iter().map(|l| l.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter().map(PortHolder::read).collect()
}

/// [`on_port`] on the blocking pool, so a busy host cannot stall the runtime — unless
/// nothing listens on the port, which [`surely_unheld`] tells at once.
pub async fn on_port_async(port: u16) -> Vec<PortHolder> {
    if surely_unheld(port) {
        return Vec::new();
    }
    tokio::task::spawn_blocking(move || on_port(port)).await.unwrap_or_default()
}

/// `true` when nothing listens on `port` and that could be told in microseconds (Linux:
/// one `sock_diag` dump of the listen table, cheap enough for a runtime worker); `false`
/// when something listens, or when only a slower source could tell. The answer of most
/// port checks (a crashed module's port before the respawn, every readiness poll before
/// the bind), and the blocking pool's hand-off is what it saves: a thread wake-up per
/// check on the crash path, and a thread per module polling at once at boot.
pub fn surely_unheld(port: u16) -> bool {
    #[cfg(target_os = "linux")]
    {
        matches!(procfs::listening_sockets_diag(port), Ok(found) if found.is_empty())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = port;
        false
    }
}

/// Whether `cmdline` contains one of `needles`, case-insensitively; empty needles match
/// nothing. The one command-line attribution rule: callers choose the needles.
pub fn names_any<'a>(cmdline: &str, needles: impl IntoIterator<Item = &'a str>) -> bool {
    let hay = cmdline.to_lowercase();
    needles.into_iter().filter(|n| !n.is_empty()).any(|n| hay.contains(&n.to_lowercase()))
}

/// `pid A (…), pid B (…)` for a message; `None` when nothing can be seen.
pub fn describe_all(holders: &[PortHolder]) -> Option<String> {
    (!holders.is_empty()).then(|| holders.iter().map(PortHolder::describe).collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_of_this_process() {
        let me = std::process::id();
        let f = PortHolder::read(me);
        assert_eq!(f.pid, me);
        assert!(f.pgid.is_some() && f.identity().is_some());
        assert!(f.cmdline.is_some());
        assert!(!f.ancestors.contains(&me));
    }

    #[test]
    fn a_listener_in_this_process_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(on_port(port).iter().map(|h| h.pid).collect::<Vec<_>>(), [std::process::id()]);
        drop(l);
        assert!(on_port(port).is_empty());
    }

    #[test]
    fn names_any_is_case_insensitive_and_ignores_empty_needles() {
        assert!(names_any("/usr/bin/Parachute-Vault serve", ["parachute-vault"]));
        assert!(names_any("node /srv/custom-entry.js", ["x", "CUSTOM-ENTRY"]));
        assert!(!names_any("anything", [""]));
        assert!(!names_any("nginx: master", ["parachute"]));
    }

    #[test]
    fn describe_escapes_outside_text() {
        let h = PortHolder {
            pid: 7,
            cmdline: Some("evil\u{1b}]52;c;x\u{7}\r[hub] ok".into()),
            ..Default::default()
        };
        let d = h.describe();
        assert!(!d.chars().any(crate::text::is_unsafe_char), "{d:?}");
        assert!(d.starts_with("pid 7 (evil\\e]52"), "{d}");
        assert_eq!(PortHolder { pid: 8, ..Default::default() }.describe(), "pid 8 (command line unreadable)");
        assert_eq!(describe_all(&[]), None);
    }

    #[test]
    fn group_membership_and_descent() {
        let holder =
            |pid, pgid| PortHolder { pid, pgid: Some(pgid), ancestors: vec![1], ..Default::default() };
        let leaders = [100, 200];
        assert!(holder(100, 100).in_any_group(&leaders));
        assert!(holder(150, 200).in_any_group(&leaders), "same group");
        let escaped =
            PortHolder { pid: 300, pgid: Some(300), ancestors: vec![250, 200, 1], ..Default::default() };
        assert!(escaped.in_any_group(&leaders), "descendant that left the group");
        assert!(!holder(300, 300).in_any_group(&leaders));
        assert!(!PortHolder { pid: 5, ..Default::default() }.in_any_group(&leaders));
    }
}
