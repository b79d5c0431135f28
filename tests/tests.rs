//! rollcall's integration tests, in one test binary: each module below was its own binary
//! once, and linking rdkafka, the simulators and rollcall into each one took most of the build
//! (docs/performance.md, Test build time). A test's path is `<module>::<test>`, the file name
//! without `.rs`, so `cargo test --test tests http::` runs what `tests/http.rs` holds.
//!
//! A new file `tests/<name>.rs` is a module here: add `mod <name>;` below, and reach the
//! helpers as `crate::support` (`use crate::support;` at its top). Nothing here may change
//! process-wide state (environment variables, the current directory, rlimits or signal
//! dispositions of the test process, a global allocator or metrics recorder): every test of
//! every module shares this process. Limits and signals belong on the child `rollcall` a test
//! starts, as `disk` does.

mod support;

mod action_log;
mod agent_calls;
mod cli;
mod crash;
mod credentials;
mod deploy;
mod disk;
mod faults;
mod fleet;
mod golden;
mod hostile;
mod http;
mod integrity;
mod interleave;
mod isolation;
mod kafka;
mod kylin;
mod ocsf;
mod ocsf_1_9;
mod ocsf_golden;
mod ocsf_integrity;
mod pipeline;
mod real_superset;
mod releases;
mod replay;
mod retention;
mod scale;
mod schemas;
mod shard;
mod ssf;
mod subscribers;
mod webhook;
