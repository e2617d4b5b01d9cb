//! parachute-launchd (being built).
