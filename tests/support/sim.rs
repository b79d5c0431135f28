//! The Superset simulator lives in the `rollcall-sim` workspace crate (compiled once for every
//! test binary); this re-export keeps `support::sim::…` paths short.
#[allow(unused_imports)] // each test binary uses a different subset
pub use rollcall_sim::superset::*;
