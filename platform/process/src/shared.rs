//! [`SharedScan`]: one scan of the host (`/proc`) for every caller that needs one at about the
//! same time.
//!
//! Why: at shutdown every module's leader exits within a few milliseconds, and each one's
//! drain needs the process table as it is after that exit. One scan per caller made a
//! 50-module stop read `/proc` 50 times (one `stat` per process on the machine each time);
//! a scan that started after a caller's moment answers that caller just as well.

use std::sync::Arc;
use std::time::Instant;

/// The newest result of a scan and when it started. Callers queue on a fair async mutex
/// while a scan runs; the first of them to get it starts the next scan, which then answers
/// everyone who queued before it started.
pub struct SharedScan<T> {
    last: tokio::sync::Mutex<Option<(Instant, Arc<T>)>>,
    scan: fn() -> T,
}

impl<T: Send + Sync + 'static> SharedScan<T> {
    /// A scanner running `scan` (blocking: it runs on the blocking pool).
    pub const fn new(scan: fn() -> T) -> SharedScan<T> {
        SharedScan { last: tokio::sync::Mutex::const_new(None), scan }
    }

    /// The result of a scan that started at `since` or later (this call's own, or one that
    /// another caller started meanwhile).
    pub async fn since(&self, since: Instant) -> Arc<T> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref()
            && *at >= since
        {
            return Arc::clone(result);
        }
        let at = Instant::now();
        // Off the runtime's workers (milliseconds on a busy host); inline if the runtime is
        // going away.
        let scan = self.scan;
        let result = Arc::new(match tokio::task::spawn_blocking(scan).await {
            Ok(r) => r,
            Err(_) => scan(),
        });
        *last = Some((at, Arc::clone(&result)));
        result
    }
}

impl<T> std::fmt::Debug for SharedScan<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedScan").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static SCANS: AtomicUsize = AtomicUsize::new(0);

    fn counted() -> usize {
        std::thread::sleep(std::time::Duration::from_millis(20));
        SCANS.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Callers that queue while a scan runs share the next one; a caller whose moment is
    /// before a finished scan's start reuses it; a later moment gets a fresh scan.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_share_one_scan_and_a_later_moment_gets_a_new_one() {
        static SHARED: SharedScan<usize> = SharedScan::new(counted);
        let before = Instant::now();
        let first = SHARED.since(before).await;
        assert_eq!(*first, 1);
        assert_eq!(*SHARED.since(before).await, 1, "a moment before the scan started reuses it");
        let now = Instant::now();
        let calls: Vec<_> = (0..10).map(|_| tokio::spawn(async move { *SHARED.since(now).await })).collect();
        let mut seen = Vec::new();
        for c in calls {
            seen.push(c.await.unwrap());
        }
        assert!(
            seen.iter().all(|&n| n >= 2),
            "every caller got a scan that started after its moment: {seen:?}"
        );
        assert!(SCANS.load(Ordering::SeqCst) <= 3, "ten callers at once cost at most two scans: {seen:?}");
    }
}
