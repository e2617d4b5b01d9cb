//! The Debian package, end to end with the real tools: `cargo deb` builds it (twice, the
//! second with a bumped version), and the real `dpkg` installs, upgrades, removes and purges
//! it, each maintainer script calling the real `parachute postinstall`/`preremove`.
//!
//! dpkg never touches this host's package database or filesystem: every step runs in a
//! fresh mount and pid namespace (`unshare --mount --pid --fork`, private propagation) over
//! an overlayfs whose lower layer is `/` and whose upper and work directories are in a temp
//! dir, `chroot`ed into. The upper directory carries the state from one step to the next;
//! the test checks afterwards that the host's own database and files did not change. There
//! is no service manager in that root (PID 1 of the host is not systemd and the chroot's
//! `/run/systemd/system` does not exist), so every hook must say so and exit 0.
//!
//! The package is assembled with `cargo deb --no-build` from the test build of `parachute`
//! placed where cargo-deb expects the release binary (a temporary `CARGO_TARGET_DIR`), so
//! the test costs no release build; the package metadata, assets and maintainer scripts are
//! exactly the ones a release uses.
//!
//! Prerequisites (root, cargo-deb, dpkg, unshare, chroot, overlayfs) are checked first; a
//! missing one fails the test with what to install. CI's `.ci/run` installs cargo-deb.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::hub::wait_output;
use crate::support::parachute_bin;
use crate::support::show;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn output(mut cmd: Command, deadline: Duration) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    wait_output(cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}")), deadline)
}

fn prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tests/deb.rs needs root: it mounts an overlay and runs dpkg in a private namespace"
    );
    for tool in ["dpkg", "dpkg-deb", "dpkg-query", "unshare", "chroot", "mount"] {
        assert!(
            which::which(tool).is_ok(),
            "tests/deb.rs needs `{tool}` on PATH (apt-get install dpkg util-linux)"
        );
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    assert!(
        fs.lines().any(|l| l.split_whitespace().last() == Some("overlay")),
        "tests/deb.rs needs overlayfs (`modprobe overlay`); /proc/filesystems does not list it"
    );
    let mut v = Command::new(env!("CARGO"));
    v.args(["deb", "--version"]);
    let out = output(v, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "tests/deb.rs needs cargo-deb: run `cargo install cargo-deb --locked` (CI's .ci/run does).\n{}",
        show(&out)
    );
}

/// Builds the package at `version` (None: the manifest's) into `out`, from the test build.
fn cargo_deb(target: &Path, out: &Path, version: Option<&str>) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target)
        .args(["deb", "--no-build", "--no-strip", "--fast", "--output"])
        .arg(out);
    if let Some(v) = version {
        cmd.args(["--deb-version", v]);
    }
    let o = output(cmd, Duration::from_secs(300));
    assert!(o.status.success(), "cargo deb failed:\n{}", show(&o));
    let path = String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or_default().trim().to_owned();
    let path = PathBuf::from(path);
    assert!(
        path.extension().is_some_and(|e| e == "deb") && path.is_file(),
        "cargo deb printed no package:\n{}",
        show(&o)
    );
    path
}

/// An isolated copy-on-write view of `/`: each [`Root::run`] mounts it afresh in a new
/// mount+pid namespace and runs one command chrooted into it.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        let dir = tempfile::Builder::new().prefix("parachute-deb-root-").tempdir().unwrap();
        for d in ["upper", "work", "merged"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        Root { dir }
    }

    /// Runs `argv` as root in the isolated root with a clean environment plus `env`.
    fn run(&self, env: &[(&str, &str)], argv: &[&str]) -> Output {
        const SETUP: &str = r#"set -eu
d=$1; shift
mount -t overlay overlay -o "lowerdir=/,upperdir=$d/upper,workdir=$d/work" "$d/merged"
mount -t proc proc "$d/merged/proc"
mount --bind /dev "$d/merged/dev"
exec chroot "$d/merged" "$@""#;
        let mut cmd = crate::support::isolated("unshare");
        cmd.args(["--mount", "--pid", "--fork", "--kill-child", "--propagation", "private", "--"])
            .args(["bash", "-c", SETUP, "bash"])
            .arg(self.dir.path())
            .args([
                "env",
                "-i",
                &format!("PATH={PATH}"),
                "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent/bus",
            ]);
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.args(argv).env("PATH", PATH);
        output(cmd, Duration::from_secs(120))
    }

    /// Runs a shell snippet in the root and returns its stdout (it must succeed).
    fn sh(&self, script: &str) -> String {
        let out = self.run(&[], &["sh", "-c", script]);
        assert!(out.status.success(), "{script}:\n{}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn exists(&self, p: &Path) -> bool {
        self.sh(&format!("if [ -e '{}' ]; then echo yes; else echo no; fi", p.display())).trim() == "yes"
    }
}

fn host_has_package() -> bool {
    let mut q = Command::new("dpkg-query");
    q.args(["-W", "-f", "${Status}", "parachute"]);
    String::from_utf8_lossy(&output(q, Duration::from_secs(30)).stdout).contains("install ok installed")
}

fn step(root: &Root, env: &[(&str, &str)], argv: &[&str], want: &[&str]) -> String {
    let out = root.run(env, argv);
    assert_eq!(out.status.code(), Some(0), "{argv:?} must succeed:\n{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for w in want {
        assert!(text.contains(w), "{argv:?} must print {w:?}:\n{}", show(&out));
    }
    text
}

#[test]
fn the_deb_installs_upgrades_removes_and_purges_with_real_dpkg_in_an_isolated_root() {
    prerequisites();
    let scratch = tempfile::Builder::new().prefix("parachute-deb-").tempdir().unwrap();
    // cargo-deb takes the binary from <target>/release: put the test build there.
    let target = scratch.path().join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    let bin = target.join("release/parachute");
    if std::fs::hard_link(parachute_bin(), &bin).is_err() {
        std::fs::copy(parachute_bin(), &bin).unwrap();
    }
    let v1 = cargo_deb(&target, &scratch.path().join("v1"), None);
    let v2 = cargo_deb(&target, &scratch.path().join("v2"), Some("0.1.1-1"));
    let (v1s, v2s) = (v1.to_str().unwrap(), v2.to_str().unwrap());

    // A home with the cutover's state and the operator's data, visible through the lower layer.
    let home = scratch.path().join("home");
    std::fs::create_dir_all(home.join("hub/run")).unwrap();
    std::fs::create_dir_all(home.join("vault")).unwrap();
    std::fs::write(home.join("services.json"), "{\"services\":[]}\n").unwrap();
    std::fs::write(home.join("vault/.env"), "KEY=keep\n").unwrap();
    let journal = home.join("hub/run/migrate-journal.json");
    let lock = home.join("hub/run/migrate.lock");
    std::fs::write(&journal, "{}\n").unwrap();
    std::fs::write(&lock, "").unwrap();
    let env = [("PARACHUTE_HOME", home.to_str().unwrap())];

    let host_before = host_has_package();
    let host_bin_before = Path::new("/usr/bin/parachute").exists();
    let root = Root::new();

    step(
        &root,
        &env,
        &["dpkg", "-i", v1s],
        &["parachute postinstall: no service manager here", "nothing to do on a fresh install"],
    );
    assert_eq!(root.sh("dpkg-query -W -f '${Version}' parachute"), "0.1.0-1");
    assert!(root.sh("/usr/bin/parachute --version").starts_with("parachute "));

    step(
        &root,
        &env,
        &["dpkg", "-i", v2s],
        &["parachute preremove: upgrading: the hub unit stays installed", "no hub unit to refresh"],
    );
    assert_eq!(root.sh("dpkg-query -W -f '${Version}' parachute"), "0.1.1-1");

    step(
        &root,
        &env,
        &["dpkg", "-r", "parachute"],
        &["parachute preremove: no service manager here", "no hub unit to stop or remove"],
    );
    assert!(!root.exists(Path::new("/usr/bin/parachute")), "remove deletes the binary");
    let list = root.sh("cat /var/lib/parachute/purge.list");
    assert!(
        list.contains(&format!("{}\n", journal.display())) && list.contains(&format!("{}\n", lock.display())),
        "{list}"
    );

    step(
        &root,
        &env,
        &["dpkg", "-P", "parachute"],
        &[&format!("parachute postrm: deleted {}", journal.display())],
    );
    assert!(!root.exists(&journal) && !root.exists(&lock), "purge deletes the journal and the lock");
    assert!(
        root.exists(&home.join("services.json")) && root.exists(&home.join("vault/.env")),
        "purge keeps the data"
    );
    assert!(!root.exists(Path::new("/var/lib/parachute")));
    let gone = root.run(&[], &["dpkg-query", "-W", "-f", "${Status}", "parachute"]);
    assert!(!String::from_utf8_lossy(&gone.stdout).contains("installed"), "{}", show(&gone));

    // Nothing of this reached the host.
    assert_eq!(host_has_package(), host_before, "the host's package database is unchanged");
    assert_eq!(Path::new("/usr/bin/parachute").exists(), host_bin_before, "the host's /usr/bin is unchanged");
    assert!(journal.exists() && lock.exists(), "the host's files were only deleted in the overlay");
    assert!(root.dir.path().join("upper/var/lib/dpkg").is_dir(), "dpkg wrote into the upper layer");
}
