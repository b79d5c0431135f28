//! rollcall: turns identity changes in Apache Superset (and Apache Kylin 5) into a reliable
//! stream of events.
//!
//! The flow is `source → diff → store → sinks`, one module per step:
//!
//! - [`source`] is the one interface every kind of source implements and the registry that
//!   lists them; [`source::superset`] polls Superset's REST API (users, membership, and the
//!   action log) and [`source::kylin`] Kylin's, each handing its users over a page at a time;
//! - [`diff`] is a pure function from (stored snapshot, fresh snapshot) to events, for any
//!   source's [`user::Account`];
//! - [`store`] keeps the snapshot, the append-only event log and one cursor per sink in sled,
//!   committing a snapshot change and the events it produced in one transaction (a cycle,
//!   in `cycle`, commits in chunks of bounded size);
//! - [`deliver`] moves events from the log to each [`sink`] from that sink's cursor, each sink
//!   putting on the wire what its [`encode`] encoder makes of a stored event;
//!   [`replay`] re-sends a chosen range to one sink, and [`retention`] compacts old events;
//!   [`fleet`] serves a sink whose destinations come and go (an SSF transmitter's streams)
//!   through the same engine;
//! - [`runner`] schedules every source's polls, each source on its own schedule and a bounded
//!   number at once, and drives the sinks; [`cli`], [`config`] (with [`settings`], the machinery
//!   every config table is read with), [`http`] (health, metrics) and [`admin`] (the socket
//!   commands reach a running process on) are the operator's side.
//!
//! [`chain`] is the hash chain over the log: the rule the store links each event by, signed
//! checkpoints, and the verifier; [`verify`] runs it over a file, a topic or the store for
//! `rollcall verify`.
//!
//! [`claim`] is what processes sharing a Kafka cluster tell each other about the sources they
//! poll, so that none is polled twice (the runner acts on it, a sink kind publishes it).
//!
//! [`event`] and [`user`] are the shared vocabulary and import nothing else of ours (`user`
//! imports only `event`); [`text`] (outside text made safe to print) and [`retry_after`] are
//! shared by every HTTP client.
//! Each source kind also supplies its `rollcall demo` ([`source::demo`]), which writes demo
//! changes to a test instance; the pipeline never uses it.

pub mod admin;
pub mod chain;
pub mod claim;
pub mod cli;
pub mod config;
mod cycle;
pub mod deliver;
pub mod diff;
pub mod encode;
pub mod event;
pub mod exit;
pub mod fleet;
#[cfg(test)]
mod fuzz;
pub mod http;
pub mod replay;
pub mod retention;
pub mod retry_after;
pub mod runner;
pub mod settings;
pub mod sink;
pub mod source;
pub mod store;
pub mod table;
pub mod text;
pub mod user;
pub mod verify;
