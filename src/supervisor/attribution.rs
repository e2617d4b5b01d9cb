//! Whose process is holding a port: pure decisions over facts read from `/proc`.
//!
//! Two questions, answered separately:
//!
//! 1. **Is it ours?** A holder is ours when it is in the process group of one of our live
//!    children, or descends from one. Upstream only compared the holder with direct child
//!    pids (R6: wrappers and forking servers listen from another pid) and, on the crash
//!    path, accepted "holder == the dead child's recorded pid", which can only be true for a
//!    recycled pid, i.e. a stranger (R5). That arm does not exist here.
//! 2. **Can it be attributed to this module?** (crash path, adopt policy) The module's
//!    marker — `argv[0]` unless it is a generic runtime (`bun`, `node`, `sh`, …), else the
//!    cwd (install dir) — must be a substring of the holder's lowercased command line.
//!    The bare short name is never a needle (a sibling's `parachute-scribe` must not match
//!    `vault`), and an unreadable command line is never attributable: a process that cannot
//!    be proven ours is never signalled.
//!
//! The broad mode (`"parachute"` as the needle) is for `migrate --to-supervised`'s sweep.

use std::path::Path;

use parachute_process::ProcessIdentity;

/// `argv[0]` basenames that say nothing about which module runs (hub#601).
pub const GENERIC_RUNTIMES: &[&str] = &[
    "bun", "node", "nodejs", "deno", "python", "python2", "python3", "ruby", "sh", "bash", "zsh", "dash",
    "env",
];

/// Whether `argv0`'s basename (lowercased, `.exe` removed) is a generic runtime.
pub fn is_generic_runtime(argv0: &str) -> bool {
    let base = argv0.rsplit(['/', '\\']).next().unwrap_or(argv0).to_lowercase();
    let base = base.strip_suffix(".exe").unwrap_or(&base);
    GENERIC_RUNTIMES.contains(&base)
}

/// The module's marker: `argv[0]` in full unless it is a generic runtime, else the cwd.
pub fn module_marker(argv: &[String], cwd: Option<&Path>) -> Option<String> {
    match argv.first() {
        Some(a0) if !a0.is_empty() && !is_generic_runtime(a0) => Some(a0.clone()),
        _ => cwd.map(|c| c.to_string_lossy().into_owned()).filter(|c| !c.is_empty()),
    }
}

/// Which needle to look for in a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needle<'a> {
    /// Anything mentioning `parachute` (the migrate sweep).
    Broad,
    /// This module's marker; `None` matches nothing.
    Module(Option<&'a str>),
}

/// Whether `cmdline` names the module. `hint` is an extra needle (e.g. a start command).
/// An unreadable command line (`None`) never matches.
pub fn cmdline_attributable(cmdline: Option<&str>, needle: Needle<'_>, hint: Option<&str>) -> bool {
    let Some(cmdline) = cmdline else { return false };
    let hay = cmdline.to_lowercase();
    let base = match needle {
        Needle::Broad => Some("parachute"),
        Needle::Module(m) => m,
    };
    [base, hint]
        .into_iter()
        .flatten()
        .map(str::to_lowercase)
        .filter(|n| !n.is_empty())
        .any(|n| hay.contains(&n))
}

/// What `/proc` says about a port holder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HolderFacts {
    /// The holder's pid.
    pub pid: u32,
    /// Its process group, if `/proc/<pid>/stat` was readable.
    pub pgid: Option<u32>,
    /// Its start time in clock ticks, from the same `/proc/<pid>/stat` read as `pgid`: the
    /// identity the facts belong to, so a signal can never reach a later owner of the pid.
    pub start_ticks: Option<u64>,
    /// Its parent chain (parent first), as far as it could be read.
    pub ancestors: Vec<u32>,
    /// Its command line (arguments joined by spaces), if readable and non-empty.
    pub cmdline: Option<String>,
}

impl HolderFacts {
    /// The identity these facts were read from (`None` when the stat was unreadable).
    pub fn identity(&self) -> Option<ProcessIdentity> {
        self.start_ticks.map(|start_ticks| ProcessIdentity { pid: self.pid, start_ticks })
    }
}

/// Whether the holder belongs to one of `leaders` (live children; each leads its own
/// group, so its pid is also its pgid): same group, or a descendant.
pub fn in_any_group(h: &HolderFacts, leaders: &[u32]) -> bool {
    leaders.iter().any(|&l| l == h.pid || h.pgid == Some(l) || h.ancestors.contains(&l))
}

/// The crash-path verdict on one holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribution {
    /// In the (dead) child's own group: left over from this module's child.
    OwnGroup,
    /// Another live supervised child (a sibling): never ours to kill.
    Sibling,
    /// The command line carries this module's marker.
    Marker,
    /// Cannot be proven ours: surface it, never signal it.
    Foreign,
}

/// Attributes a holder found after this module's child exited and was reaped. `own_group`
/// are the identities of the child's group members, read while the leader was still
/// unreaped (so its pgid was pinned); `siblings` are the other modules' live leaders.
///
/// Group membership is judged by identity, not by `pgid == dead pid`: once the leader is
/// reaped its pid may be recycled by a stranger that leads its own group, whose pgid then
/// equals the dead child's pid (R5 again, one level up).
pub fn attribute(
    h: &HolderFacts,
    own_group: &[ProcessIdentity],
    siblings: &[u32],
    marker: Option<&str>,
) -> Attribution {
    if h.identity().is_some_and(|id| own_group.contains(&id)) {
        return Attribution::OwnGroup;
    }
    if in_any_group(h, siblings) {
        return Attribution::Sibling;
    }
    if cmdline_attributable(h.cmdline.as_deref(), Needle::Module(marker), None) {
        return Attribution::Marker;
    }
    Attribution::Foreign
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn holder(pid: u32, pgid: u32, cmd: Option<&str>) -> HolderFacts {
        HolderFacts {
            pid,
            pgid: Some(pgid),
            start_ticks: Some(u64::from(pid) * 10),
            ancestors: vec![1],
            cmdline: cmd.map(str::to_owned),
        }
    }

    #[test]
    fn generic_runtimes() {
        for (a0, generic) in [
            ("bun", true),
            ("/usr/bin/node", true),
            ("PYTHON3.EXE", true),
            ("C:\\bin\\deno.exe", true),
            ("env", true),
            ("parachute-vault", false),
            ("/opt/x/bunx", false),
            ("", false),
        ] {
            assert_eq!(is_generic_runtime(a0), generic, "{a0:?}");
        }
    }

    #[test]
    fn marker_is_argv0_unless_generic_then_cwd() {
        let cwd = Path::new("/x/.parachute/vault");
        assert_eq!(
            module_marker(&argv(&["parachute-vault", "serve"]), Some(cwd)).as_deref(),
            Some("parachute-vault")
        );
        assert_eq!(
            module_marker(&argv(&["bun", "server.ts"]), Some(cwd)).as_deref(),
            Some("/x/.parachute/vault")
        );
        assert_eq!(module_marker(&argv(&["sh", "-c", "x"]), None), None);
        assert_eq!(module_marker(&[], Some(cwd)).as_deref(), Some("/x/.parachute/vault"));
    }

    /// The dead child's group as read while its leader was unreaped: one grandchild.
    fn own_group() -> Vec<ProcessIdentity> {
        vec![holder(4001, 4000, None).identity().unwrap()]
    }

    #[test]
    fn a_holder_with_the_dead_childs_pid_but_another_group_is_not_ours() {
        // Scenario 87 turned around (R5): upstream's "recorded pid == holder" arm matched
        // exactly when the pid had been recycled by a stranger.
        let stranger = holder(4242, 4242, Some("/usr/sbin/nginx"));
        assert_eq!(attribute(&stranger, &own_group(), &[], Some("parachute-vault")), Attribution::Foreign);
        // Even when the pid equals the dead leader's, only the group counts.
        let recycled = holder(4000, 4100, Some("/usr/sbin/nginx"));
        assert_eq!(attribute(&recycled, &own_group(), &[], Some("parachute-vault")), Attribution::Foreign);
    }

    #[test]
    fn a_stranger_that_recycled_the_dead_leaders_pid_and_leads_its_own_group_is_not_ours() {
        // Once the leader is reaped its pid is free; a daemon that gets it and calls setsid
        // has pgid == the dead child's pid. Matching on the pgid number would signal it.
        let recycled_leader = holder(4000, 4000, Some("/usr/sbin/nginx"));
        assert_eq!(
            attribute(&recycled_leader, &own_group(), &[], Some("parachute-vault")),
            Attribution::Foreign
        );
        // Its worker in that recycled group: same pgid number, still a stranger.
        let worker = HolderFacts { start_ticks: Some(99_999), ..holder(4001, 4000, Some("nginx: worker")) };
        assert_eq!(attribute(&worker, &own_group(), &[], Some("parachute-vault")), Attribution::Foreign);
        // Facts without a start time cannot be matched to a member: never ours.
        let unread = HolderFacts { start_ticks: None, ..holder(4001, 4000, None) };
        assert_eq!(attribute(&unread, &own_group(), &[], None), Attribution::Foreign);
    }

    #[test]
    fn a_holder_in_the_dead_childs_group_is_ours() {
        let gc = holder(4001, 4000, None);
        assert_eq!(attribute(&gc, &own_group(), &[], None), Attribution::OwnGroup);
    }

    #[test]
    fn broad_mode_matches_any_parachute_cmdline() {
        // Scenario 88.
        assert!(cmdline_attributable(Some("/usr/bin/Parachute-Scribe serve"), Needle::Broad, None));
        assert!(!cmdline_attributable(Some("nginx: master"), Needle::Broad, None));
    }

    #[test]
    fn per_module_marker_matches_its_own_process() {
        // Scenario 89.
        let h = holder(1921, 1921, Some("parachute-vault serve"));
        assert_eq!(attribute(&h, &[], &[], Some("parachute-vault")), Attribution::Marker);
    }

    #[test]
    fn a_siblings_process_is_not_attributable() {
        // Scenarios 19/90: the cmdline is still known for the message.
        let h = holder(1921, 1921, Some("parachute-scribe serve"));
        assert_eq!(attribute(&h, &[], &[], Some("parachute-vault")), Attribution::Foreign);
        // A live supervised sibling is never a candidate, even if the marker matched.
        let sib = HolderFacts { ancestors: vec![700, 1], ..holder(701, 701, Some("parachute-vault")) };
        assert_eq!(attribute(&sib, &[], &[700], Some("parachute-vault")), Attribution::Sibling);
    }

    #[test]
    fn an_unreadable_cmdline_is_never_attributable() {
        // Scenarios 16/91.
        let h = holder(1921, 1921, None);
        assert_eq!(attribute(&h, &[], &[], Some("parachute-vault")), Attribution::Foreign);
        assert!(!cmdline_attributable(None, Needle::Broad, Some("x")));
    }

    #[test]
    fn generic_runtime_modules_match_on_their_install_dir_only() {
        // Scenarios 20/21.
        let m = module_marker(&argv(&["bun", "server.ts"]), Some(Path::new("/x/.parachute/vault")));
        let foreign = holder(9, 9, Some("bun /home/op/other-project/server.ts"));
        let own = holder(9, 9, Some("bun /x/.parachute/vault/server.ts"));
        assert_eq!(attribute(&foreign, &[], &[], m.as_deref()), Attribution::Foreign);
        assert_eq!(attribute(&own, &[], &[], m.as_deref()), Attribution::Marker);
    }

    #[test]
    fn no_marker_matches_nothing() {
        assert!(!cmdline_attributable(Some("anything parachute"), Needle::Module(None), None));
        assert!(!cmdline_attributable(Some("anything"), Needle::Module(Some("")), None));
    }

    #[test]
    fn the_hint_is_an_extra_needle() {
        // Scenario 92.
        let cmd = Some("node /srv/custom-entry.js");
        assert!(!cmdline_attributable(cmd, Needle::Module(Some("parachute-vault")), None));
        assert!(cmdline_attributable(cmd, Needle::Module(Some("parachute-vault")), Some("CUSTOM-ENTRY")));
    }

    #[test]
    fn group_membership_and_descent() {
        let leaders = [100, 200];
        assert!(in_any_group(&holder(100, 100, None), &leaders));
        assert!(in_any_group(&holder(150, 200, None), &leaders), "same group");
        let escaped = HolderFacts {
            pid: 300,
            pgid: Some(300),
            start_ticks: None,
            ancestors: vec![250, 200, 1],
            cmdline: None,
        };
        assert!(in_any_group(&escaped, &leaders), "descendant that left the group");
        assert!(!in_any_group(&holder(300, 300, None), &leaders));
        assert!(!in_any_group(&HolderFacts { pid: 5, ..Default::default() }, &leaders));
    }
}
