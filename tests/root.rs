//! What root does to a home an unprivileged user owns (issue: "Root never acts on a user's
//! say-so"), proven on a booted system-mode systemd: each test boots its own container
//! (`support::system_box`), creates a real user inside it, and plays the attack that user
//! could play against the package hooks, `migrate` and `unit install --scope system`. Every
//! "root file" named here lives in the container's throw-away overlay.

use std::time::Duration;

use parachute_systemd::connect::{SYSTEM_UNIT_DIR, USER_UNIT_DIR_IN_HOME};

use crate::support::system_box::{BoxUser, SystemBox};
use crate::support::{show, wait_for};

/// A Parachute home owned by `u` (`~/ph`, an empty services.json), as `u` would make it.
fn user_home(b: &SystemBox, u: &BoxUser) -> String {
    let home = format!("{}/ph", u.home.display());
    b.sh_as(u, &format!("mkdir -p {home} && echo '{{\"services\":[]}}' > {home}/services.json"));
    home
}

/// `systemctl show -p KEY --value parachute-hub.service` inside the box.
fn hub_prop(b: &SystemBox, key: &str) -> String {
    b.sh(&format!("systemctl show -p {key} --value parachute-hub.service")).trim().to_owned()
}

fn wait_hub_running(b: &SystemBox, what: &str, min_restarts: u32) -> u32 {
    wait_for(what, Duration::from_secs(30), || {
        let pid: u32 = hub_prop(b, "MainPID").parse().ok()?;
        let restarts: u32 = hub_prop(b, "NRestarts").parse().ok()?;
        (pid > 0 && restarts >= min_restarts && hub_prop(b, "ActiveState") == "active").then_some(pid)
    })
}

/// Attack 1 (critical): the system unit used to say `StandardOutput=append:<home>/hub/logs/
/// hub.log`, which systemd opens as root before dropping to `User=`. The owner swaps the log
/// (and the log directory) for symlinks into root's files and kills their own hub; the
/// restart must create or change nothing outside the home.
#[test]
fn the_log_symlink_swap_and_a_hub_kill_change_nothing_outside_the_home() {
    let Some(b) = SystemBox::start("root_log_symlink") else { return };
    let u = b.new_user("logswap");
    let home = user_home(&b, &u);
    // A root shell (no SUDO_USER): the hub must run as the home's owner, logging to the journal.
    let out = b.run(&[
        &b.parachute(),
        "unit",
        "install",
        "--scope",
        "system",
        "--home",
        &home,
        "--exec",
        &b.parachute(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let unit = b.sh(&format!("cat {SYSTEM_UNIT_DIR}/parachute-hub.service"));
    assert!(unit.contains(&format!("User={}\n", u.name)), "{unit}");
    assert!(unit.contains("StandardOutput=journal\n") && !unit.contains("append:"), "{unit}");
    let first = wait_hub_running(&b, "the hub running", 0);
    assert_eq!(
        b.sh(&format!("stat -c %u /proc/{first}")).trim(),
        u.uid.to_string(),
        "the hub runs as its owner"
    );

    b.sh_as(
        &u,
        &format!(
            "mkdir -p {home}/hub/logs && ln -sfn /root/pwned {home}/hub/logs/hub.log && \
             mv {home}/hub/logs {home}/hub/logs.old && ln -s /etc {home}/hub/logs && kill -9 {first}"
        ),
    );
    let second = wait_hub_running(&b, "the hub restarted after the kill", 1);
    assert_ne!(first, second);
    for p in ["/root/pwned", "/etc/hub.log"] {
        let out = b.run(&["test", "-e", p]);
        assert!(!out.status.success(), "{p} was created by the restart");
    }
    b.sh("systemctl stop parachute-hub.service");
}

/// Attack 2: `migrate.lock` as a symlink to a root file. `preremove --purge` and `migrate`
/// run as root used to truncate the target; it must stay byte for byte.
#[test]
fn a_migrate_lock_symlink_to_a_root_file_leaves_that_file_unchanged() {
    let Some(b) = SystemBox::start("root_lock_symlink") else { return };
    let u = b.new_user("locklink");
    let home = user_home(&b, &u);
    b.sh("printf 'root:secret-hash:19000:0:99999:7:::\\n' > /root/decoy-shadow && chmod 600 /root/decoy-shadow");
    b.sh_as(&u, &format!("mkdir -p {home}/hub/run && ln -s /root/decoy-shadow {home}/hub/run/migrate.lock"));

    let purge = b.run(&[&b.parachute(), "preremove", "--purge", "--home", &home]);
    assert_eq!(b.sh("cat /root/decoy-shadow"), "root:secret-hash:19000:0:99999:7:::\n", "{}", show(&purge));
    // The purge may delete the link itself (it is the owner's); plant it again for migrate.
    b.sh_as(&u, &format!("ln -sfn /root/decoy-shadow {home}/hub/run/migrate.lock"));
    let migrate = b.run(&[
        "env",
        &format!("SUDO_USER={}", u.name),
        &format!("SUDO_UID={}", u.uid),
        &b.parachute(),
        "migrate",
        "--to-supervised",
        "--home",
        &home,
        "--exec",
        &b.parachute(),
    ]);
    let decoy = b.sh("cat /root/decoy-shadow");
    assert_eq!(decoy, "root:secret-hash:19000:0:99999:7:::\n", "{}", show(&migrate));
    assert!(!migrate.status.success(), "migrate must refuse the symlinked lock:\n{}", show(&migrate));
    assert!(
        String::from_utf8_lossy(&migrate.stdout).contains("symlink")
            || String::from_utf8_lossy(&migrate.stderr).contains("symlink"),
        "{}",
        show(&migrate)
    );
    // Nothing root-owned was left in the home either.
    let root_owned = b.sh(&format!("find {home} -uid 0"));
    assert_eq!(root_owned, "", "root-owned files in the home");
}

/// Attack 4: from a root shell (no SUDO_USER) `unit install --scope system` wrote no `User=`,
/// so the hub ran the user's services.json commands as root. Now `User=` is the home's
/// owner, and a root hub on that home needs an explicit `--user root`.
#[test]
fn unit_install_from_a_root_shell_runs_the_hub_as_the_home_owner() {
    let Some(b) = SystemBox::start("root_unit_user") else { return };
    let u = b.new_user("rootshell");
    let home = user_home(&b, &u);
    let render = |extra: &[&str]| {
        let mut argv = vec![b.parachute(), "unit".into(), "render".into(), "--scope".into(), "system".into()];
        argv.extend(["--home".into(), home.clone(), "--exec".into(), b.parachute()]);
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        b.run(&argv.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = render(&[]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("User={}\n", u.name)), "{text}");
    assert!(!text.contains("=/root/") && !text.contains(":/root/"), "no root home in the unit: {text}");
    let out = render(&["--user", "root"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("User=") && text.contains("--allow-root"),
        "{}",
        show(&out)
    );
    // And serve itself, started by root on that home, refuses.
    let out = b.run(&[&b.parachute(), "serve", "--home", &home, "--port", "19391"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to run as root"), "{}", show(&out));
}

/// Attack 5: a FIFO in place of services.json (and of a pidfile) made the package's prerm
/// hang forever, holding the dpkg lock. It must finish within its bound, saying why.
#[test]
fn a_fifo_services_json_lets_preremove_finish_with_a_clear_message() {
    let Some(b) = SystemBox::start("root_fifo") else { return };
    let u = b.new_user("fifo");
    let home = user_home(&b, &u);
    let out = b.run(&[
        &b.parachute(),
        "unit",
        "install",
        "--scope",
        "system",
        "--no-start",
        "--home",
        &home,
        "--exec",
        &b.parachute(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    b.sh_as(&u, &format!("rm {home}/services.json && mkfifo {home}/services.json && mkdir -p {home}/hub/run && mkfifo {home}/hub/run/hub.pid"));
    let started = std::time::Instant::now();
    let out = b.run(&["timeout", "30", &b.parachute(), "preremove", "--purge"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "preremove took {:?}:\n{}",
        started.elapsed(),
        show(&out)
    );
    assert_ne!(out.status.code(), Some(124), "preremove hung:\n{}", show(&out));
    assert!(
        !b.sh(&format!("ls {SYSTEM_UNIT_DIR}")).contains("parachute-hub.service"),
        "the unit is removed:\n{}",
        show(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("services.json") && text.contains("a FIFO"),
        "says why services.json was skipped:\n{}",
        show(&out)
    );
}

/// Attack 3: services.json rows named after root daemons, with pidfiles holding their pids
/// (and one holding `1`), made `sudo parachute migrate` SIGTERM/SIGKILL them — and `killpg(1)`
/// is `kill(-1)`. Root may signal only the home owner's processes: those rows are refused by
/// name and every process survives.
#[test]
fn rows_naming_root_daemons_or_init_are_refused_and_every_process_survives() {
    let Some(b) = SystemBox::start("root_legacy_rows") else { return };
    let u = b.new_user("rows");
    let home = user_home(&b, &u);
    // A root daemon whose argv[0] carries the row's name, as a real postgres would.
    b.sh(
        "systemd-run --unit=fake-postgres.service --property=Type=exec bash -c 'exec -a postgres sleep 600'",
    );
    let pg = wait_for("the root daemon running", Duration::from_secs(10), || {
        b.sh("systemctl show -p MainPID --value fake-postgres.service")
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|p| *p > 0)
    });
    let journald = b.sh("systemctl show -p MainPID --value systemd-journald.service").trim().to_owned();
    b.sh_as(
        &u,
        &format!(
            r#"cat > {home}/services.json <<'JSON'
{{"services":[
 {{"name":"postgres","port":19778,"paths":["/postgres"],"health":"/health","version":"1.0.0"}},
 {{"name":"systemd","port":19779,"paths":["/systemd"],"health":"/health","version":"1.0.0"}},
 {{"name":"systemd-journald","port":19780,"paths":["/j"],"health":"/health","version":"1.0.0"}}
]}}
JSON
for m in postgres systemd systemd-journald; do mkdir -p {home}/$m/run; done
echo {pg} > {home}/postgres/run/postgres.pid
echo 1 > {home}/systemd/run/systemd.pid
echo {journald} > {home}/systemd-journald/run/systemd-journald.pid"#
        ),
    );
    let before = b.sh("ps -e -o pid= | sort -n");
    let out = b.run(&[
        "env",
        &format!("SUDO_USER={}", u.name),
        &format!("SUDO_UID={}", u.uid),
        &b.parachute(),
        "migrate",
        "--to-supervised",
        "--home",
        &home,
        "--exec",
        &b.parachute(),
    ]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for (row, pid) in
        [("postgres", pg.to_string()), ("systemd", "1".to_owned()), ("systemd-journald", journald.clone())]
    {
        assert!(
            text.contains(&format!("{row}: pidfile named pid {pid}")) && text.contains("did not signal"),
            "row {row} (pid {pid}) must be refused by name:\n{}",
            show(&out)
        );
    }
    assert_eq!(
        b.sh("systemctl show -p MainPID --value fake-postgres.service").trim(),
        pg.to_string(),
        "{}",
        show(&out)
    );
    assert_eq!(
        b.sh("systemctl show -p MainPID --value systemd-journald.service").trim(),
        journald,
        "{}",
        show(&out)
    );
    // Every process that ran before still runs (the hub and its helpers may have been added).
    let after = b.sh("ps -e -o pid= | sort -n");
    let gone: Vec<&str> = before
        .lines()
        .filter(|p| !after.lines().any(|a| a == *p))
        .filter(|p| b.run(&["test", "-e", &format!("/proc/{}", p.trim())]).status.success())
        .collect();
    assert!(gone.is_empty(), "processes killed: {gone:?}\n{}", show(&out));
    assert!(b.sh("systemctl is-system-running || true").trim() != "stopping", "the container is going down");
}

/// Identity under sudo: `sudo parachute migrate --to-supervised` for the invoking user's
/// home puts the hub in the system scope running as that user, with no root-owned file left
/// in the home and no /root in the unit's PATH.
#[test]
fn sudo_migrate_runs_the_hub_as_the_invoking_user_and_leaves_no_root_file_in_the_home() {
    let Some(b) = SystemBox::start("root_sudo_migrate") else { return };
    let u = b.new_user("sudoer");
    // The invoking user's default home, found from SUDO_UID's password entry (no --home).
    let home = format!("{}/.parachute", u.home.display());
    b.sh_as(&u, &format!("mkdir -p {home} && echo '{{\"services\":[]}}' > {home}/services.json"));
    let out = b.run(&[
        "env",
        "HOME=/root",
        &format!("SUDO_USER={}", u.name),
        &format!("SUDO_UID={}", u.uid),
        &format!("SUDO_GID={}", u.uid),
        &b.parachute(),
        "migrate",
        "--to-supervised",
        "--exec",
        &b.parachute(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let pid = wait_hub_running(&b, "the supervised hub", 0);
    assert_eq!(
        b.sh(&format!("stat -c %u /proc/{pid}")).trim(),
        u.uid.to_string(),
        "the hub runs as the user"
    );
    let unit = b.sh(&format!("cat {SYSTEM_UNIT_DIR}/parachute-hub.service"));
    assert!(
        unit.contains(&format!("User={}\n", u.name)) && unit.contains(&format!("\"--home\" \"{home}\"")),
        "{unit}"
    );
    let path = unit.lines().find(|l| l.contains("\"PATH=")).unwrap_or_default();
    assert!(!path.contains("/root/") && path.contains(&format!("{}/.bun/bin", u.home.display())), "{unit}");
    assert_eq!(b.sh(&format!("find {home} -uid 0")), "", "root-owned files in the home:\n{}", show(&out));
    b.sh("systemctl stop parachute-hub.service");
}

/// The package hooks run as root with no user bus, so they could not see user-scope hub
/// units: `dpkg -r` left each user's hub running a deleted binary and upgrades never
/// refreshed them. As root, `postinstall --upgrade` refreshes another user's unit through
/// that user's running manager, and `preremove` removes it and its hub stops.
#[test]
fn root_hooks_refresh_and_remove_another_users_user_scope_hub() {
    let Some(b) = SystemBox::start("root_user_units") else { return };
    let u = b.new_user("userscope");
    let home = user_home(&b, &u);
    let bus = format!("DBUS_SESSION_BUS_ADDRESS={}", b.start_user_manager(&u));
    let out = b.run_as(
        &u,
        &[
            "env",
            &bus,
            &b.parachute(),
            "unit",
            "install",
            "--scope",
            "user",
            "--home",
            &home,
            "--exec",
            &b.parachute(),
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    let user_prop = |key: &str| {
        b.sh_as(&u, &format!("env {bus} systemctl --user show -p {key} --value parachute-hub.service"))
            .trim()
            .to_owned()
    };
    let first = wait_for("the user's hub running", Duration::from_secs(30), || {
        let pid: u32 = user_prop("MainPID").parse().ok()?;
        (pid > 0 && user_prop("ActiveState") == "active").then_some(pid)
    });
    let unit_file = format!("{}/{USER_UNIT_DIR_IN_HOME}/parachute-hub.service", u.home.display());

    // An out-of-date definition (as an older package version would have left it).
    b.sh_as(&u, &format!("sed -i 's/^Description=.*/Description=old hub/' {unit_file}"));
    let out = b.run(&[&b.parachute(), "postinstall", "--upgrade", "--exec", &b.parachute(), "--wait", "20"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains(&u.name), "{}", show(&out));
    let refreshed = b.sh(&format!("cat {unit_file}"));
    assert!(
        !refreshed.contains("Description=old hub"),
        "the upgrade refreshed the unit:\n{refreshed}\n{}",
        show(&out)
    );

    let out = b.run(&[&b.parachute(), "preremove"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains(&u.name), "{}", show(&out));
    assert!(!b.run(&["test", "-e", &unit_file]).status.success(), "the unit file is gone:\n{}", show(&out));
    wait_for("the user's hub stopped", Duration::from_secs(20), || {
        (!b.run(&["test", "-e", &format!("/proc/{first}")]).status.success()).then_some(())
    });
    assert_ne!(user_prop("ActiveState"), "active", "{}", show(&out));
    // Nothing of it is root's now.
    assert_eq!(b.sh(&format!("find {} -uid 0", u.home.display())), "");
}

/// With no manager running for that user, removal still deletes the unit file, and says
/// what happens at the next login.
#[test]
fn root_preremove_removes_a_user_unit_without_a_running_manager_and_says_so() {
    let Some(b) = SystemBox::start("root_user_units_offline") else { return };
    let u = b.new_user("offline");
    let dir = format!("{}/{USER_UNIT_DIR_IN_HOME}", u.home.display());
    b.sh_as(&u, &format!("mkdir -p {dir}/default.target.wants && printf '[Service]\\nExecStart=/bin/true\\n' > {dir}/parachute-hub.service && ln -s ../parachute-hub.service {dir}/default.target.wants/parachute-hub.service"));
    let out = b.run(&[&b.parachute(), "preremove"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && text.contains(&u.name) && text.contains("next login"), "{}", show(&out));
    assert_eq!(
        b.sh(&format!("ls -A {dir} {dir}/default.target.wants"))
            .lines()
            .filter(|l| l.contains("parachute"))
            .count(),
        0
    );
}
