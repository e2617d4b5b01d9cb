//! Shared test harness: temp homes, the fixture module, waiting on conditions.
#![allow(dead_code)]

pub mod hub;
pub mod legacy_box;
pub mod sandbox;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The fixture module binary built by this workspace.
pub fn fixture_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_parachute-fixture"))
}

/// The `parachute` binary built by this workspace.
pub fn parachute_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_parachute"))
}

/// Polls `cond` until it returns `Some`, or panics with `what` after `deadline`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests that then bind it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
