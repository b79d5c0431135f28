//! The snapshot of each source: `snapshot/<source>` (user key → the user's JSON, as written)
//! and, beside it, `members/<source>` (the same keys → only the record's `roles` and `groups`),
//! so that comparing membership walks a tenth of the bytes (docs/performance.md, Memory).
//!
//! Owns reading them: whole for tests and tools, record by record for a cycle ([`Known`]), and
//! what a record's membership entry holds. It never writes a snapshot itself: only a commit
//! does (`commit.rs`), with the events the change produced, and the schema migration builds
//! the membership trees of an older store (`migrate.rs`).

use serde::{Deserialize, Serialize};

use super::{json_bytes, Store, StoreError};
use crate::user::{Account, Key, Snapshot};

/// A user record ready to store: its key's bytes and its JSON.
pub struct Record {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Record {
    pub fn of<U: Account>(user: &U) -> Record {
        Record {
            key: user.key().to_bytes(),
            value: json_bytes(user),
        }
    }
}

/// What `members/<source>` holds of a record: its top-level `roles` and `groups` as stored,
/// whatever the source's shape of them (`{}` for a record that is not a JSON object).
pub(super) fn members_of(record: &[u8]) -> Vec<u8> {
    #[derive(Deserialize, Serialize)]
    struct Members<'a> {
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        roles: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        groups: Option<&'a serde_json::value::RawValue>,
    }
    match serde_json::from_slice::<Members>(record) {
        Ok(m) => json_bytes(&m),
        Err(_) => b"{}".to_vec(),
    }
}

/// What the store holds of one source's users, read record by record in key order: a cycle
/// never loads them all (docs/performance.md, Memory). Reads see every commit made before.
pub struct Known<U> {
    source: String,
    tree: sled::Tree,
    members: sled::Tree,
    user: std::marker::PhantomData<fn() -> U>,
}

impl<U: Account> Known<U> {
    /// The stored JSON of a key, as written.
    pub fn raw(&self, key: &U::Key) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.tree.get(key.to_bytes())?)
    }

    /// The record stored under `key`, which may (after a bug of an earlier version) be the
    /// record of another key.
    pub fn get(&self, key: &U::Key) -> Result<Option<U>, StoreError> {
        self.raw(key)?.map(|v| self.parse(key, &v)).transpose()
    }

    /// Parse a stored record (or the part of it `T` reads) of `key`.
    pub fn parse<T: serde::de::DeserializeOwned>(
        &self,
        key: &U::Key,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            what: format!("snapshot record of user {key} in source {}", self.source),
            detail: e.to_string(),
        })
    }

    /// How many users are stored (a walk over the keys).
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Every stored key, in key order.
    pub fn keys(&self) -> impl Iterator<Item = Result<U::Key, StoreError>> + '_ {
        self.tree.iter().keys().map(|k| self.key(&k?))
    }

    /// Every stored record in key order, each parsed as `T` (a whole record, or only the
    /// fields a caller compares).
    pub fn records<T: serde::de::DeserializeOwned>(
        &self,
    ) -> impl Iterator<Item = Result<(U::Key, T), StoreError>> + '_ {
        self.walk(&self.tree)
    }

    /// Every stored user's `roles` and `groups` in key order, each parsed as `T`: what
    /// comparing membership reads, from a tree a tenth the size of the records.
    pub fn memberships<T: serde::de::DeserializeOwned>(
        &self,
    ) -> impl Iterator<Item = Result<(U::Key, T), StoreError>> + '_ {
        self.walk(&self.members)
    }

    fn walk<'a, T: serde::de::DeserializeOwned>(
        &'a self,
        tree: &'a sled::Tree,
    ) -> impl Iterator<Item = Result<(U::Key, T), StoreError>> + 'a {
        tree.iter().map(|kv| {
            let (k, v) = kv?;
            let key = self.key(&k)?;
            let value = self.parse(&key, &v)?;
            Ok((key, value))
        })
    }

    fn key(&self, bytes: &[u8]) -> Result<U::Key, StoreError> {
        U::Key::from_bytes(bytes).ok_or_else(|| StoreError::Corrupt {
            what: format!("snapshot key in source {}", self.source),
            detail: format!("{} bytes that are no key of this source", bytes.len()),
        })
    }
}

impl Store {
    pub(super) fn snapshot_tree(&self, source: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(format!("snapshot/{source}"))?)
    }

    pub(super) fn members_tree(&self, source: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(format!("members/{source}"))?)
    }

    /// The whole stored snapshot of a source, in memory: for tests and tools. A cycle reads
    /// it through [`Known`], record by record.
    pub fn snapshot<U: Account>(&self, source: &str) -> Result<Snapshot<U>, StoreError> {
        let known = self.known::<U>(source)?;
        let all = known.records::<U>().collect();
        all
    }

    /// What the store holds of a source's users, read on demand.
    pub fn known<U: Account>(&self, source: &str) -> Result<Known<U>, StoreError> {
        Ok(Known {
            source: source.to_owned(),
            tree: self.snapshot_tree(source)?,
            members: self.members_tree(source)?,
            user: std::marker::PhantomData,
        })
    }
}
