//! `parachute upgrade --in-place` (issue 17): the verb's edges that need no hub.

use crate::support::hub::TestHome;
use crate::support::{free_port, json, show};

#[test]
fn upgrade_needs_in_place_and_a_running_hub() {
    let h = TestHome::new();
    h.fixture("alpha", free_port(), &[]);
    let out = h.cli(&["upgrade"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--in-place"), "{}", show(&out));

    // No hub: exit 3, as every verb that talks to one; --json says so in one object.
    let out = h.cli(&["upgrade", "--in-place"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no hub is running"), "{}", show(&out));
    let out = h.cli(&["upgrade", "--in-place", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let v = json(&out);
    assert_eq!((v["ok"].as_bool(), v["exit_code"].as_u64()), (Some(false), Some(3)), "{v:#}");
    assert!(v["error_description"].as_str().unwrap().contains("no hub is running"), "{v:#}");
}
