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
//! The facts come from [`PortHolder`]; the command-line rule is the crate's one
//! [`names_any`].

use std::path::Path;

use parachute_process::ProcessIdentity;

use crate::port_holder::{PortHolder, names_any};

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
    h: &PortHolder,
    own_group: &[ProcessIdentity],
    siblings: &[u32],
    marker: Option<&str>,
) -> Attribution {
    if h.identity().is_some_and(|id| own_group.contains(&id)) {
        return Attribution::OwnGroup;
    }
    if h.in_any_group(siblings) {
        return Attribution::Sibling;
    }
    if let (Some(cmd), Some(marker)) = (&h.cmdline, marker)
        && names_any(cmd, [marker])
    {
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

    fn holder(pid: u32, pgid: u32, cmd: Option<&str>) -> PortHolder {
        PortHolder {
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
        let worker = PortHolder { start_ticks: Some(99_999), ..holder(4001, 4000, Some("nginx: worker")) };
        assert_eq!(attribute(&worker, &own_group(), &[], Some("parachute-vault")), Attribution::Foreign);
        // Facts without a start time cannot be matched to a member: never ours.
        let unread = PortHolder { start_ticks: None, ..holder(4001, 4000, None) };
        assert_eq!(attribute(&unread, &own_group(), &[], None), Attribution::Foreign);
    }

    #[test]
    fn a_holder_in_the_dead_childs_group_is_ours() {
        let gc = holder(4001, 4000, None);
        assert_eq!(attribute(&gc, &own_group(), &[], None), Attribution::OwnGroup);
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
        let sib = PortHolder { ancestors: vec![700, 1], ..holder(701, 701, Some("parachute-vault")) };
        assert_eq!(attribute(&sib, &[], &[700], Some("parachute-vault")), Attribution::Sibling);
    }

    #[test]
    fn an_unreadable_cmdline_is_never_attributable() {
        // Scenarios 16/91.
        let h = holder(1921, 1921, None);
        assert_eq!(attribute(&h, &[], &[], Some("parachute-vault")), Attribution::Foreign);
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
        let h = holder(9, 9, Some("anything parachute"));
        assert_eq!(attribute(&h, &[], &[], None), Attribution::Foreign);
        assert_eq!(attribute(&h, &[], &[], Some("")), Attribution::Foreign);
    }
}
