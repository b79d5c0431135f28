//! The Superset user as rollcall stores and publishes it.
//!
//! Owns the normalised shape of one user (UTC times, roles and groups sorted by id) and the
//! snapshot type. It must never import other rollcall modules or do I/O: the diff, the store and
//! every source build on it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Every known user of one source, by Superset id.
pub type Snapshot = BTreeMap<u64, User>;

/// A role or a group reference. Equality of memberships is by `id`: names can be renamed
/// through the roles API without the membership changing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub name: String,
}

/// One user, normalised: times in UTC, `roles` and `groups` sorted by id (Superset returns roles
/// in an unstable order, so comparing raw lists would invent changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub active: bool,
    pub roles: Vec<Member>,
    pub groups: Vec<Member>,
    pub login_count: Option<i64>,
    pub fail_login_count: Option<i64>,
    pub last_login: Option<DateTime<Utc>>,
    pub created_on: DateTime<Utc>,
    pub changed_on: DateTime<Utc>,
    pub created_by: Option<u64>,
    pub changed_by: Option<u64>,
}

impl User {
    /// Sort memberships by id so that equal sets compare equal.
    pub fn normalise(mut self) -> Self {
        self.roles.sort_by_key(|m| m.id);
        self.roles.dedup_by_key(|m| m.id);
        self.groups.sort_by_key(|m| m.id);
        self.groups.dedup_by_key(|m| m.id);
        self
    }

    /// Superset (on SQLite) reuses the id of a deleted user, so the id alone does not identify
    /// a person: the pair (id, `created_on`) does.
    pub fn same_identity(&self, other: &User) -> bool {
        self.id == other.id && self.created_on == other.created_on
    }
}
