//! Shared helpers: deadlines for every wait, line readers that never wait for EOF (a
//! grandchild may hold the pipe), and kill-on-drop guards for processes that are not owned by
//! a `GroupChild` (which kills its group on drop by itself).

use std::future::Future;
use std::time::Duration;

use parachute_process::procfs::{self, ProcessIdentity};
use parachute_process::{Signal, SpawnSpec, Spawned, Spawner, signal_identity};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};

/// The upper bound for any single wait in these tests (generous: the machine may be loaded).
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The PATH every test child gets (the child's environment is explicit and complete).
pub const PATH: &str = "/usr/bin:/bin";

pub fn spawner() -> Spawner {
    Spawner::new().expect("start the spawner thread")
}

/// `sh -c script` with only PATH set.
pub fn sh(script: &str) -> SpawnSpec {
    SpawnSpec::new("sh").arg("-c").arg(script).env("PATH", PATH)
}

/// Await `fut`, failing the test with `what` after [`DEADLINE`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {DEADLINE:?} waiting for {what}"))
}

/// Poll a condition that has no event to await (another process's fate) until it holds.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Line reader over a child pipe.
pub struct LineReader<R>(Lines<BufReader<R>>);

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(r: R) -> Self {
        Self(BufReader::new(r).lines())
    }

    /// The next line, within the deadline; panics on EOF.
    pub async fn next(&mut self) -> String {
        within("a line of output", self.0.next_line()).await.expect("read a line").expect("a line, not EOF")
    }

    /// Skip lines until one contains `marker`; returns what follows it on that line. (The
    /// test harness may print its own text before ours on the same line.)
    pub async fn after(&mut self, marker: &str) -> String {
        loop {
            let line = self.next().await;
            if let Some(i) = line.find(marker) {
                return line[i + marker.len()..].to_owned();
            }
        }
    }
}

pub async fn spawn(spawner: &Spawner, spec: SpawnSpec) -> Spawned {
    within("spawn", spawner.spawn(spec)).await.expect("spawn succeeds")
}

/// SIGKILLs a process (and its group if it leads one) on drop, if it is still that process.
pub struct KillOnDrop(pub ProcessIdentity);

impl KillOnDrop {
    pub fn pid(pid: u32) -> Self {
        Self(procfs::identity(pid).unwrap_or_else(|| panic!("process {pid} should be alive")))
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = signal_identity(&self.0, Signal::Kill, true);
    }
}
