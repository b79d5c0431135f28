//! Exit codes, one per kind of trouble, so scripts and orchestrators can tell them apart
//! (docs/operations.md, Commands). 2 is clap's own, for a command line it cannot parse. A
//! vocabulary both the command line and the admin socket's replies speak; it imports nothing.

/// The command ran, and something it checked or sent failed (see its output).
pub const FAILED: u8 = 1;
/// The config file is missing, unreadable or invalid, or names what is not there.
pub const CONFIG: u8 = 3;
/// A source could not be read (down, refusing the login, answering nonsense).
pub const SOURCE: u8 = 4;
/// Events were not all delivered: a sink failed or stopped (they stay in the log).
pub const DELIVERY: u8 = 5;
/// The store cannot be opened, read or written, or is held by another process.
pub const STORE: u8 = 6;
/// `rollcall verify`: the hash chain is broken; the output names the first broken place.
pub const BROKEN: u8 = 7;
/// `rollcall verify`: nothing could be checked (no chained event; or, with a pinned key, no
/// checkpoint it signed).
pub const UNVERIFIABLE: u8 = 8;
