//! parachute-process (being built).
