//! `serve --log-file`: the hub writes and rotates its own log (launchd's plist passes it,
//! since launchd never rotates `StandardOutPath`), with real modules and real bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::hub::{Serve, TestHome};
use crate::support::{free_port, wait_for};

/// The log's files, oldest first: `hub.log.<backups>` … `hub.log.1`, `hub.log`.
fn kept(log: &Path, backups: u32) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = (1..=backups)
        .rev()
        .filter_map(|i| {
            let p = PathBuf::from(format!("{}.{i}", log.display()));
            Some((p.clone(), std::fs::read(&p).ok()?))
        })
        .collect();
    out.push((log.to_path_buf(), std::fs::read(log).unwrap_or_default()));
    out
}

/// Bytes in every file of `dir` right now.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| it.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// A module writes 200 MiB of numbered lines through `serve --log-file` with 1 MiB files
/// and 3 backups. While it writes, the log directory never holds more than 4 MiB plus one
/// line; afterwards the kept files are one run of consecutive line numbers (no line lost or
/// split at any of the ~200 rotations) that ends with the module's last line, and no file
/// is over 1 MiB plus one line.
#[test]
fn a_module_writing_200_mb_leaves_a_bounded_gap_free_log() {
    const TOTAL: u64 = 200 * 1024 * 1024;
    const MAX: u64 = 1024 * 1024;
    const BACKUPS: u32 = 3;
    // The longest line the hub writes here ("[hub] …" lines included).
    const ONE_LINE: u64 = 512;
    let home = TestHome::new();
    let (port, hub_port) = (free_port(), free_port());
    home.fixture("chatty", port, &["--chatty-bytes", &TOTAL.to_string(), "--chatty-seq"]);
    let dir = home.scratch("logs");
    let log = dir.join("hub.log");
    let hub = Serve::start(
        &home,
        hub_port,
        &["--log-file", log.to_str().unwrap(), "--log-max-bytes", &MAX.to_string(), "--log-backups", "3"],
    );
    // The hub says once, where its output went until then, where it goes from now on.
    hub.wait_err("the log-file line", |l| l.contains("output goes to") && l.contains("hub.log"));

    // Watch the directory the whole time the module writes.
    let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let watcher = {
        let (stop, peak, dir) = (Arc::clone(&stop), Arc::clone(&peak), dir.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(dir_bytes(&dir), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let done = wait_for("the module's last line in the log", Duration::from_secs(600), || {
        kept(&log, 1).iter().find_map(|(_, b)| {
            String::from_utf8_lossy(b).lines().find(|l| l.contains("chatty done bytes=")).map(str::to_owned)
        })
    });
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(done.ends_with(&format!("bytes={TOTAL}")), "{done}");

    let bound = MAX * (u64::from(BACKUPS) + 1);
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak <= bound + ONE_LINE, "the log directory held {peak} bytes (bound {bound} + one line)");
    let files = kept(&log, BACKUPS);
    assert_eq!(files.len(), 4, "the log and its 3 backups");
    assert!(!Path::new(&format!("{}.4", log.display())).exists(), "a 4th backup");
    let on_disk = dir_bytes(&dir);
    assert!(on_disk <= bound + ONE_LINE, "{on_disk} bytes left on disk (bound {bound} + one line)");

    let (mut first, mut next) = (None, None::<u64>);
    for (path, bytes) in &files {
        assert!(bytes.len() as u64 <= MAX + ONE_LINE, "{} holds {} bytes", path.display(), bytes.len());
        assert!(bytes.ends_with(b"\n"), "{} ends mid-line", path.display());
        for line in String::from_utf8_lossy(bytes).lines() {
            assert!(!line.contains("[supervisor] dropped"), "lines were dropped: {line}");
            let Some(rest) = line.strip_prefix("[chatty] chatty ").filter(|r| !r.starts_with("done")) else {
                continue;
            };
            let n: u64 =
                rest[..12].parse().unwrap_or_else(|_| panic!("a torn line in {}: {line:?}", path.display()));
            if let Some(want) = next {
                assert_eq!(n, want, "line {want} is missing ({} has {n} next)", path.display());
            }
            first.get_or_insert(n);
            next = Some(n + 1);
        }
    }
    assert_eq!(next, Some(TOTAL / 100), "the kept lines end with the module's last one");
    // Rotation really happened: the oldest lines are gone, the newest ~4 MiB are kept.
    let first = first.unwrap();
    assert!(first > 0 && (TOTAL / 100 - first) * 109 > bound - 2 * MAX, "kept from line {first}");
    drop(hub);
}
