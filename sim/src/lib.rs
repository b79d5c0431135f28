//! Simulators of the APIs rollcall polls, as real HTTP servers on 127.0.0.1.
//!
//! One library target, so the simulators compile once and every test binary, benchmark and
//! example links the same code. They import nothing of rollcall: they model the upstream
//! servers as documented in `docs/superset.md` (and `docs/kylin.md`), never rollcall's view
//! of them, so a test against them checks rollcall against the documented behaviour.

pub mod kylin;
pub mod superset;
