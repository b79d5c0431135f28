#![allow(dead_code)] // each test binary uses a different subset of the helpers
pub mod harness;
pub mod schema;
pub mod sim;
pub mod wait;
