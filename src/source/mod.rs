//! Sources: where user data comes from. Each source returns a complete, fresh snapshot of its
//! users; it never writes to the store and never derives events.

pub mod superset;
