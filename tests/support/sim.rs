//! The Superset simulator lives in the `rollcall-sim` workspace crate; this re-export keeps
//! `support::sim::…` paths short.
pub use rollcall_sim::superset::*;
