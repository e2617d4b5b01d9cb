//! The hardening profile of a `hardened` unit, per scope and manager version.
//!
//! Everything the hub's unit sets is inherited by the modules it spawns (node, bun,
//! python, shell scripts), so only directives those runtimes live with are here. Measured
//! on systemd 252 (docs/platforms.md, "Hardening"):
//!
//! * Left out on purpose: `MemoryDenyWriteExecute=yes` (crashes V8's and JSC's JIT),
//!   `RestrictNamespaces=` on user, mount, pid and net namespaces (bwrap, headless Chrome),
//!   `PrivateNetwork=yes` and `IPAddressDeny=` (modules talk to the network), `ProcSubset=pid`
//!   (node's `os.cpus()` reads /proc/cpuinfo), `DevicePolicy=` (a GPU-backed module), and
//!   `SystemCallFilter=~@privileged` (`cp -a`, rsync and tar chown their files),
//!   and `ProtectKernelTunables=yes`: 252 fails the unit with 226/NAMESPACE on a kernel
//!   without /proc/kallsyms (microVM kernels such as Firecracker's; measured).
//! * System scope only: under a non-root user manager `ProtectClock=`,
//!   `ProtectKernelModules=`, `ProtectKernelLogs=`, `PrivateDevices=` and an empty
//!   `CapabilityBoundingSet=` make the unit fail with 218/CAPABILITIES; `PrivateUsers=`
//!   failed with 226/NAMESPACE in the sandbox.
//! * `SystemCallFilter=~@resources` is in: `nice`, `taskset`, `ionice` and NUMA placement
//!   get EPERM, while raising `RLIMIT_NOFILE` still works (glibc's setrlimit is the
//!   `prlimit64` system call, which @resources does not hold).
//! * The namespacing keys (`ProtectSystem=`, `ProtectHome=`, `PrivateTmp=`,
//!   `PrivateMounts=`, `ProtectProc=`, `ProtectHostname=`) are rendered in both scopes: a non-root user manager
//!   on 252 accepts them but does not apply them without `PrivateUsers=` (systemd.exec(5));
//!   root's user manager and later versions do. `PrivateTmp=` is left out when the unit's
//!   working directory is under /tmp or /var/tmp, which it would hide.
//! * Each key carries the first systemd version that parses it; a manager older than that
//!   gets a unit without it instead of an "Unknown key" warning.

use parachute_manager::Scope;

/// A systemd version (the leading number of the manager's `Version` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ManagerVersion(pub u32);

impl ManagerVersion {
    /// The version the golden files and `parachute unit render` (no manager at hand) assume:
    /// Debian 12's, the oldest the project supports and measures on.
    pub const BASELINE: ManagerVersion = ManagerVersion(252);

    /// Parses the `Version` property (`252.38-1~deb12u1`, `v255`, `256.7-arch1`); `None`
    /// when it does not start with a number.
    pub fn parse(text: &str) -> Option<ManagerVersion> {
        let t = text.trim().trim_start_matches('v');
        let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok().map(ManagerVersion)
    }
}

/// Where a directive applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scopes {
    Both,
    SystemOnly,
}

/// One directive: key, value, first version that parses it, scopes.
struct Directive {
    key: &'static str,
    value: &'static str,
    since: u32,
    scopes: Scopes,
}

const fn d(key: &'static str, value: &'static str, since: u32, scopes: Scopes) -> Directive {
    Directive { key, value, since, scopes }
}

/// The profile, in the order it is rendered.
const PROFILE: &[Directive] = &[
    d("NoNewPrivileges", "yes", 187, Scopes::Both),
    d("RestrictSUIDSGID", "yes", 242, Scopes::Both),
    d("LockPersonality", "yes", 235, Scopes::Both),
    d("RestrictRealtime", "yes", 231, Scopes::Both),
    d("SystemCallArchitectures", "native", 209, Scopes::Both),
    d("SystemCallFilter", "@system-service", 236, Scopes::Both),
    d("SystemCallFilter", "~@resources", 236, Scopes::Both),
    d("SystemCallErrorNumber", "EPERM", 209, Scopes::Both),
    d("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK", 211, Scopes::Both),
    d("UMask", "0077", 204, Scopes::Both),
    d("KeyringMode", "private", 235, Scopes::Both),
    d("ProtectControlGroups", "yes", 232, Scopes::Both),
    d("RestrictNamespaces", "~cgroup ipc uts", 233, Scopes::Both),
    d("ProtectSystem", "strict", 232, Scopes::Both),
    d("ProtectHome", "read-only", 214, Scopes::Both),
    d("PrivateMounts", "yes", 239, Scopes::Both),
    d("ProtectProc", "invisible", 247, Scopes::Both),
    d("RemoveIPC", "yes", 232, Scopes::SystemOnly),
    d("CapabilityBoundingSet", "", 209, Scopes::SystemOnly),
    d("AmbientCapabilities", "", 229, Scopes::SystemOnly),
    d("PrivateDevices", "yes", 209, Scopes::SystemOnly),
    d("PrivateUsers", "yes", 232, Scopes::SystemOnly),
    d("ProtectClock", "yes", 245, Scopes::SystemOnly),
    d("ProtectKernelModules", "yes", 232, Scopes::SystemOnly),
    d("ProtectKernelLogs", "yes", 244, Scopes::SystemOnly),
    d("ProtectHostname", "yes", 242, Scopes::Both),
];

/// The `Key=value` lines of the profile for `scope` on `version`, in render order;
/// `private_tmp` adds `PrivateTmp=yes` (false when it would hide the working directory).
pub fn directives(scope: Scope, version: ManagerVersion, private_tmp: bool) -> impl Iterator<Item = String> {
    let tmp = private_tmp.then(|| "PrivateTmp=yes".to_owned());
    PROFILE
        .iter()
        .filter(move |d| d.since <= version.0 && (d.scopes == Scopes::Both || scope == Scope::System))
        .map(|d| format!("{}={}", d.key, d.value))
        .chain(tmp)
}

/// Whether `key` is part of the profile for `scope` (any version).
pub fn renders(scope: Scope, key: &str) -> bool {
    PROFILE.iter().any(|d| d.key == key && (d.scopes == Scopes::Both || scope == Scope::System))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_what_managers_report() {
        assert_eq!(ManagerVersion::parse("252.38-1~deb12u1"), Some(ManagerVersion(252)));
        assert_eq!(ManagerVersion::parse("v255"), Some(ManagerVersion(255)));
        assert_eq!(ManagerVersion::parse("256.7-arch1-1"), Some(ManagerVersion(256)));
        assert_eq!(ManagerVersion::parse("unknown"), None);
    }

    #[test]
    fn a_user_unit_never_gets_a_directive_that_fails_a_non_root_user_manager() {
        // 218/CAPABILITIES under a non-root user manager on 252 (measured).
        for key in [
            "ProtectClock",
            "ProtectKernelModules",
            "ProtectKernelLogs",
            "PrivateDevices",
            "CapabilityBoundingSet",
        ] {
            assert!(!renders(Scope::User, key), "{key}");
            assert!(renders(Scope::System, key), "{key}");
        }
        let user: Vec<String> = directives(Scope::User, ManagerVersion::BASELINE, true).collect();
        assert!(user.iter().all(|l| !l.starts_with("PrivateUsers=")));
    }

    #[test]
    fn no_directive_that_breaks_a_module_runtime() {
        for key in ["MemoryDenyWriteExecute", "PrivateNetwork", "IPAddressDeny", "ProcSubset", "DevicePolicy"]
        {
            assert!(!renders(Scope::System, key), "{key}");
        }
        let ns: Vec<String> = directives(Scope::System, ManagerVersion::BASELINE, true)
            .filter(|l| l.starts_with("RestrictNamespaces="))
            .collect();
        assert_eq!(ns, ["RestrictNamespaces=~cgroup ipc uts"], "user, mnt, pid and net stay allowed");
    }

    #[test]
    fn an_older_manager_gets_only_keys_it_parses() {
        let old: Vec<String> = directives(Scope::System, ManagerVersion(241), true).collect();
        assert!(old.iter().all(|l| !l.starts_with("ProtectClock=") && !l.starts_with("RestrictSUIDSGID=")));
        assert!(old.iter().any(|l| l == "NoNewPrivileges=yes"));
    }
}
