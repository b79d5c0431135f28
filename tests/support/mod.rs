//! Helpers the test modules share: what each builds, starts or waits for in more than one place
//! lives here once. Nothing here asserts a behaviour of rollcall on its own; the tests do.
pub mod chain;
pub mod config;
pub mod damage;
pub mod events;
pub mod generated;
pub mod golden;
pub mod harness;
pub mod kafka;
pub mod log;
pub mod login;
pub mod ocsf;
pub mod running;
pub mod schema;
pub mod sim;
pub mod ssf;
pub mod wait;
