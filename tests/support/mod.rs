#![allow(dead_code)] // each test binary uses a different subset of the helpers
pub mod events;
pub mod harness;
pub mod ocsf;
pub mod running;
pub mod schema;
pub mod sim;
pub mod wait;
