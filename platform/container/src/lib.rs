//! parachute-container (being built).
