//! What every source's user has in common: the [`Account`] trait the diff works on, the key
//! that identifies a user within its source, memberships and field changes.
//!
//! Owns the generic vocabulary only; each source defines its own user record (with the exact
//! shape its events publish) in its folder and implements [`Account`] for it. This module must
//! never import other rollcall modules than `event` (the list of event types), nor do I/O: the
//! diff, the store and every source build on it.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::EventType;

/// A user's identity within its source, as it orders and stores them. Its `Display` is the
/// event's `subject`.
pub trait Key: Ord + Clone + fmt::Display + fmt::Debug + Send + Sync + 'static {
    /// The store's key: its byte order must be the key's order (the store reads a snapshot in
    /// key order and compares it with pages the source returns in that order).
    fn to_bytes(&self) -> Vec<u8>;
    fn from_bytes(bytes: &[u8]) -> Option<Self>;
}

/// Superset's numeric id, stored big-endian so that byte order is numeric order.
impl Key for u64 {
    fn to_bytes(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
}

/// A name (Kylin's username), stored as its UTF-8 bytes.
impl Key for String {
    fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn from_bytes(bytes: &[u8]) -> Option<String> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

/// Every known user of one source, by key.
pub type Snapshot<U> = BTreeMap<<U as Account>::Key, U>;

/// One user record of some source, as the diff sees it. The record's own serialisation is what
/// events publish as `data.user`, so each source keeps its published shape.
pub trait Account:
    Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + 'static
{
    type Key: Key;

    fn key(&self) -> Self::Key;

    /// Whether `other` is the same person and not a new account under a reused key (Superset
    /// reuses ids on SQLite; Kylin re-creates a deleted username with a new uuid).
    fn same_incarnation(&self, other: &Self) -> bool;

    fn username(&self) -> &str;

    fn active(&self) -> bool;

    fn roles(&self) -> &[Member];

    fn groups(&self) -> &[Member];

    /// The profile fields whose change is a `user.updated`, in a stable order.
    fn profile_changes(before: &Self, after: &Self) -> Vec<FieldChange>;

    /// What else the source shows between two records of the same user (logins, failed logins,
    /// locks, password changes), as event types and their data, in a stable order.
    /// `service_account` is true for the account rollcall itself uses.
    fn activity(before: &Self, after: &Self, service_account: bool) -> Vec<(EventType, Value)>;
}

/// A role or a group. Equality of memberships is by `id`: names can be renamed without the
/// membership changing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: MemberId,
    pub name: String,
}

/// Superset numbers its roles and groups; Kylin names its authorities.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MemberId {
    Number(u64),
    Name(String),
}

impl From<u64> for MemberId {
    fn from(id: u64) -> MemberId {
        MemberId::Number(id)
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemberId::Number(n) => write!(f, "{n}"),
            MemberId::Name(s) => f.write_str(s),
        }
    }
}

/// Sort memberships by id and drop duplicates, so that equal sets compare equal (Superset
/// returns roles in an unstable order).
pub fn normalise_members(list: &mut Vec<Member>) {
    list.sort_by(|a, b| a.id.cmp(&b.id));
    list.dedup_by(|a, b| a.id == b.id);
}

/// One field of a `user.updated` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    pub before: Value,
    pub after: Value,
}

impl FieldChange {
    /// The change of one field, if it changed.
    pub fn of<T: PartialEq + Serialize>(
        field: &'static str,
        before: &T,
        after: &T,
    ) -> Option<FieldChange> {
        (before != after).then(|| FieldChange {
            field,
            before: serde_json::json!(before),
            after: serde_json::json!(after),
        })
    }
}
