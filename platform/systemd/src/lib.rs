//! parachute-systemd (being built).
