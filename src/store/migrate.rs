//! The store's schema version, and bringing an older store up to it when it is opened.
//!
//! Owns what each version means and the steps between them; a step is written so that a crash
//! half-way leaves the old version, and the next open runs it again. It never opens a store a
//! newer rollcall wrote.

use std::path::Path;

use super::snapshot::members_of;
use super::{be_u64, StoreError};

/// 2: `members/<source>` beside each snapshot (a version 1 store gains them when opened).
/// 3: the hash chain (events carry `chainhash`; `meta` holds its head and start). A store of
/// version 2 or 1 has no chained event: its chain begins at its next event, and an older
/// rollcall, which would append unchained events after chained ones, is refused.
pub(super) const SCHEMA_VERSION: u64 = 3;
pub(super) const KEY_SCHEMA: &[u8] = b"schema_version";

/// Bring the store at `path` to [`SCHEMA_VERSION`], `schema` being the version stored: a new
/// store is stamped with it, a store of version 1 gains its membership trees, one of version 2
/// only its new number (its chain begins at its next commit), and a version this rollcall does
/// not know is refused.
pub(super) fn upgrade(
    db: &sled::Db,
    meta: &sled::Tree,
    path: &Path,
    schema: Option<sled::IVec>,
) -> Result<(), StoreError> {
    match schema {
        None => {
            meta.insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
        }
        Some(v) => match be_u64(&v, "schema version")? {
            SCHEMA_VERSION => {}
            1 => add_members(db, meta)?,
            2 => {
                meta.insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                db.flush()?;
            }
            found => {
                return Err(StoreError::Schema {
                    path: path.to_owned(),
                    found,
                })
            }
        },
    }
    Ok(())
}

/// Schema 1 → 3: a `members/<source>` tree for each snapshot, written in one batch per source
/// (a crash leaves schema 1, and the next open builds it again), then the new version.
fn add_members(db: &sled::Db, meta: &sled::Tree) -> Result<(), StoreError> {
    for name in db.tree_names() {
        let Some(source) = name.strip_prefix(b"snapshot/") else {
            continue;
        };
        let snapshot = db.open_tree(&name)?;
        let members = db.open_tree([b"members/".as_slice(), source].concat())?;
        // What an interrupted migration left may be stale by now (an older rollcall may have
        // written the snapshot since): built again from nothing.
        members.clear()?;
        let mut batch = sled::Batch::default();
        for kv in snapshot.iter() {
            let (k, v) = kv?;
            batch.insert(k, members_of(&v));
        }
        members.apply_batch(batch)?;
    }
    meta.insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
    db.flush()?;
    Ok(())
}
