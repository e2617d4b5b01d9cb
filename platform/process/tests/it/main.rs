//! Integration tests for `parachute-process`, all against real processes (`sh`, `sleep`,
//! `python3`) and real sockets. One binary (one link) with a module per area. Tests that must
//! change process-wide state (subreaper) or kill the "supervisor" (PDEATHSIG) re-execute this
//! binary as a helper process; see `reexec`.

mod facts;
mod group;
mod procfs;
mod reexec;
mod spawn;
mod support;
