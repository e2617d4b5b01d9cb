//! Spawning: own group, exact env, stdin /dev/null, typed errors, program resolution.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use parachute_process::{Resolve, SpawnError, SpawnSpec, procfs, resolve_program};

use crate::support::{LineReader, PATH, sh, spawn, spawner, within};

fn write_file(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn child_leads_its_own_group_with_exactly_the_given_env() {
    let spawner = spawner();
    let hostile = "a b $HOME '\"%s`x`";
    let spec = SpawnSpec::new("env").env("PATH", PATH).env("HOSTILE", hostile).env("EMPTY", "");
    let s = spawn(&spawner, spec).await;
    let pid = s.child.pid();
    let mut out = LineReader::new(s.stdout);
    let mut lines = BTreeSet::new();
    for _ in 0..3 {
        lines.insert(out.next().await);
    }
    let expected: BTreeSet<String> =
        [format!("PATH={PATH}"), format!("HOSTILE={hostile}"), "EMPTY=".to_owned()].into_iter().collect();
    assert_eq!(lines, expected, "the child sees exactly the env we passed, nothing inherited");

    within("exit", s.child.exited()).await;
    let st = procfs::stat(pid).expect("an exited, unreaped child still has a stat");
    assert_eq!(st.pgid, pid, "the child leads its own process group");
    assert_eq!(st.ppid, std::process::id());
    assert_eq!(st.sid, procfs::stat(std::process::id()).unwrap().sid, "same session: a group, not setsid");
    assert!(within("reap", s.child.reap(crate::support::DEADLINE)).await.success());
}

#[tokio::test]
async fn stdin_is_dev_null_and_stderr_is_piped() {
    let spawner = spawner();
    let s = spawn(&spawner, sh("readlink /proc/self/fd/0; echo to-stderr >&2")).await;
    assert_eq!(LineReader::new(s.stdout).next().await, "/dev/null");
    assert_eq!(LineReader::new(s.stderr).next().await, "to-stderr");
    s.child.signal_group(parachute_process::Signal::Kill).unwrap();
}

#[tokio::test]
async fn relative_program_runs_from_the_childs_cwd() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("bin/x"), "#!/bin/sh\necho \"x:$0:$1:$(pwd)\"\n", 0o755);
    let spawner = spawner();
    let spec = SpawnSpec::new("./bin/x").arg("arg 1").env("PATH", PATH).cwd(dir.path());
    let s = spawn(&spawner, spec).await;
    let line = LineReader::new(s.stdout).next().await;
    // A `#!` script sees the path the kernel executed as `$0`: resolved against the cwd.
    assert_eq!(line, format!("x:{}:arg 1:{}", dir.path().join("./bin/x").display(), dir.path().display()));
    assert_eq!(within("reap", s.child.reap(crate::support::DEADLINE)).await.code, Some(0));
}

#[tokio::test]
async fn argv0_is_passed_as_given_while_the_resolved_file_runs() {
    let spawner = spawner();
    let child = spawn(&spawner, SpawnSpec::new("sleep").arg("1000").env("PATH", PATH)).await.child;
    assert_eq!(procfs::cmdline(child.pid()).as_deref(), Some("sleep 1000"));
    child.signal(parachute_process::Signal::Kill).unwrap();
    within("exit", child.exited()).await;
}

async fn spawn_err(spec: SpawnSpec) -> SpawnError {
    let spawner = spawner();
    match within("spawn", spawner.spawn(spec)).await {
        Ok(s) => panic!(
            "spawn of an invalid command succeeded (pid {}): {:?}",
            s.child.pid(),
            procfs::cmdline(s.child.pid())
        ),
        Err(e) => e,
    }
}

#[tokio::test]
async fn spawn_errors_are_classified() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let e = spawn_err(SpawnSpec::new("no-such-binary-xyz").env("PATH", PATH)).await;
    assert!(matches!(e, SpawnError::NotFound { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("no-such-binary-xyz") && msg.contains(PATH),
        "message names program and PATH: {msg}"
    );

    let e = spawn_err(SpawnSpec::new(d.join("absent")).env("PATH", PATH)).await;
    assert!(matches!(e, SpawnError::NotFound { .. }), "{e:?}");

    let gone = d.join("deleted-install-dir");
    let e = spawn_err(SpawnSpec::new("sh").env("PATH", PATH).cwd(&gone)).await;
    assert!(matches!(&e, SpawnError::CwdMissing { path, .. } if *path == gone), "{e:?}");
    assert!(e.to_string().contains("deleted-install-dir"), "{e}");

    write_file(&d.join("file"), "", 0o644);
    let e = spawn_err(SpawnSpec::new("sh").env("PATH", PATH).cwd(d.join("file"))).await;
    assert!(matches!(e, SpawnError::CwdNotDirectory { .. }), "{e:?}");

    write_file(&d.join("noexec"), "#!/bin/sh\n", 0o644);
    let e = spawn_err(SpawnSpec::new(d.join("noexec")).env("PATH", PATH)).await;
    assert!(matches!(&e, SpawnError::NotExecutable { path, .. } if *path == d.join("noexec")), "{e:?}");

    write_file(&d.join("pathdir/tool"), "#!/bin/sh\n", 0o644);
    let path_env = format!("{}:{PATH}", d.join("pathdir").display());
    let e = spawn_err(SpawnSpec::new("tool").env("PATH", &path_env)).await;
    assert!(matches!(e, SpawnError::NotExecutable { .. }), "non-executable file on the child's PATH: {e:?}");

    write_file(&d.join("badinterp"), "#!/nonexistent/interpreter\n", 0o755);
    let e = spawn_err(SpawnSpec::new(d.join("badinterp")).env("PATH", PATH)).await;
    assert!(matches!(e, SpawnError::InterpreterNotFound { .. }), "{e:?}");

    // (An executable text file without `#!` is not an error: like a shell, execvp runs it
    // with /bin/sh.)

    let e = spawn_err(SpawnSpec::new("sh").arg("a\0b").env("PATH", PATH)).await;
    assert!(matches!(e, SpawnError::InvalidSpec { .. }), "{e:?}");
    let e = spawn_err(SpawnSpec::new("sh").env("PATH", PATH).env("A=B", "x")).await;
    assert!(matches!(e, SpawnError::InvalidSpec { .. }), "{e:?}");
    let e = spawn_err(SpawnSpec::new("")).await;
    assert!(matches!(e, SpawnError::InvalidSpec { .. }), "{e:?}");
}

#[test]
fn resolve_program_uses_the_childs_path_and_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |s: &str| OsStr::new(s).to_owned();
    let a = d.join("a");
    let b = d.join("b");
    write_file(&a.join("tool"), "#!/bin/sh\n", 0o644);
    write_file(&b.join("tool"), "#!/bin/sh\n", 0o755);
    write_file(&d.join("bin/x"), "#!/bin/sh\n", 0o755);
    std::fs::create_dir_all(a.join("dirtool")).unwrap();

    let path_ab = p(&format!("{}:{}", a.display(), b.display()));
    let path_a = p(&a.display().to_string());

    assert_eq!(resolve_program(Path::new("nope"), &path_ab, None), Err(Resolve::Missing));
    assert_eq!(
        resolve_program(Path::new("tool"), &path_ab, None),
        Ok(b.join("tool")),
        "first EXECUTABLE wins"
    );
    assert_eq!(
        resolve_program(Path::new("tool"), &path_a, None),
        Err(Resolve::NotExecutable { path: a.join("tool") }),
        "a regular file without exec bit"
    );
    assert_eq!(
        resolve_program(Path::new("dirtool"), &path_a, None),
        Err(Resolve::NotExecutable { path: a.join("dirtool") }),
        "a directory is not a program"
    );
    assert_eq!(resolve_program(Path::new("sh"), OsStr::new(""), None), Err(Resolve::Missing), "empty PATH");
    assert_eq!(resolve_program(Path::new("./bin/x"), OsStr::new(""), Some(d)), Ok(d.join("./bin/x")));
    assert_eq!(resolve_program(Path::new("bin/x"), OsStr::new(""), Some(d)), Ok(d.join("bin/x")));
    assert_eq!(resolve_program(Path::new("./bin/y"), &path_ab, Some(d)), Err(Resolve::Missing));
    // A relative PATH entry is relative to the child's cwd.
    assert_eq!(
        resolve_program(Path::new("x"), OsStr::new("bin"), Some(d)).map(canon),
        Ok(canon(d.join("bin/x")))
    );
    assert_eq!(resolve_program(b.join("tool"), "", Some(d)), Ok(b.join("tool")));
    assert_eq!(resolve_program(Path::new(""), &path_ab, None), Err(Resolve::Missing));
}

fn canon(p: PathBuf) -> PathBuf {
    p.canonicalize().unwrap()
}
