//! What every read of one cycle shares: the [`Reader`] (the client, the config, the requests
//! made and what became of each user read), the [`Out`] that hands users over to the cycle,
//! and the guards every paged read applies to each page.
//!
//! Owns the bookkeeping of a cycle's reads: a user is settled (read, or confirmed gone) or
//! failed (unreadable, with why), and the cursor keeps the failed ones for `status`. It never
//! chooses what to read (the files of each way of reading do) and never writes the store.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use super::api::{self, USERS};
use super::client::Client;
use super::config::SupersetConfig;
use super::cursor::Cursor;
use super::error::SupersetError;
use super::user::User;
use crate::source::bounds::page_limit;
use crate::source::{note_unreadable, Fresh, Mode};

/// A set of user ids. Superset numbers its users densely, so a compressed bitmap holds a
/// million of them in kilobytes, where a hash set took tens of megabytes (docs/performance.md,
/// Memory).
pub type Ids = roaring::RoaringTreemap;

/// A row of a users page: its id, and its record or why it could not be read.
pub type Row = (u64, Result<User, String>);

/// Role and group rows the last membership read could not read, by kind and id, with why: a
/// warning is for a new one. Kept by the source from one cycle to the next.
pub type UnreadableLists = BTreeMap<(&'static str, Option<u64>), String>;

/// One cycle's reads of Superset: what they read with, and what they came to.
pub struct Reader<'a> {
    pub client: &'a Client,
    pub config: &'a SupersetConfig,
    /// Requests made, for logs and metrics.
    pub requests: usize,
    pub reads: Reads,
    pub unreadable_lists: &'a mut UnreadableLists,
}

/// What one cycle's reads of single users came to.
#[derive(Default)]
pub struct Reads {
    /// Ids read and understood, or confirmed gone.
    pub settled: Ids,
    /// Ids whose record could not be understood, with why.
    pub failed: BTreeMap<u64, String>,
}

impl Reads {
    /// Say, once per new problem, which users could not be read, and keep the list in the
    /// cursor for `status`. A full read replaces the list; an incremental one only updates the
    /// users it read.
    pub fn report(self, source: &str, cursor: &mut Cursor, mode: Mode) {
        // The list as it was tells a new problem from one already said.
        let before = std::mem::take(&mut cursor.unreadable_users);
        let mut list = match mode {
            Mode::Full => BTreeMap::new(),
            Mode::Incremental => before.clone(),
        };
        list.retain(|id, _| !self.settled.contains(*id));
        for (id, reason) in self.failed {
            note_unreadable(source, &before, &id, &reason);
            list.insert(id, reason);
        }
        cursor.unreadable_users = list;
    }
}

/// Hands the users a cycle reads to the cycle, noting on the way what the cursor keeps of
/// them: the high-water marks and the service account's id.
pub struct Out<'a> {
    pub fresh: &'a mut dyn Fresh<User>,
    pub service_account: &'a str,
    pub service_account_id: Option<u64>,
    pub hwm_changed_on: Option<DateTime<Utc>>,
    pub hwm_last_login: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

impl Out<'_> {
    pub fn hand(&mut self, users: Vec<User>) -> Result<(), SupersetError> {
        for u in &users {
            if u.username == self.service_account {
                // Its own logins move its marks at every start of a `once`: counted, they
                // would change the cursor of a cycle that found nothing (docs/performance.md,
                // Idle cycles); the next poll reads it again instead, one row.
                self.service_account_id = Some(u.id);
                continue;
            }
            // The marks are lower bounds of the next incremental poll; one from the future (a
            // record dated 9999) would hide every later change from it until a full reconcile.
            self.hwm_changed_on = self.hwm_changed_on.max(Some(u.changed_on.min(self.now)));
            if let Some(t) = u.last_login {
                self.hwm_last_login = self.hwm_last_login.max(Some(t.min(self.now)));
            }
        }
        self.fresh.users(users)?;
        Ok(())
    }
}

/// Note the rows of a users page as read (or failed) and hand over their users.
pub fn take(rows: Vec<Row>, reads: &mut Reads, out: &mut Out<'_>) -> Result<(), SupersetError> {
    let mut users = Vec::with_capacity(rows.len());
    for (id, row) in rows {
        match row {
            Ok(user) => {
                reads.settled.insert(id);
                users.push(user);
            }
            Err(reason) => {
                reads.failed.insert(id, reason);
            }
        }
    }
    out.hand(users)
}

/// The pages of one read of a list, counted against what the total its first page announced
/// allows ([`page_limit`]): a server whose pages never end fails the read instead of holding
/// the cycle for ever.
pub struct Pages<'a> {
    path: &'a str,
    /// Rows a page holds (the source's `page_size`): the bound follows from it.
    size: u32,
    read: u64,
    total: Option<u64>,
}

impl<'a> Pages<'a> {
    pub fn new(path: &'a str, size: u32) -> Pages<'a> {
        Pages {
            path,
            size,
            read: 0,
            total: None,
        }
    }

    /// One more page read, whose answer announced `total` rows.
    pub fn count(&mut self, total: u64) -> Result<(), SupersetError> {
        self.read += 1;
        let total = *self.total.get_or_insert(total);
        if self.read > page_limit(total, self.size.into()) {
            return Err(SupersetError::EndlessPages {
                path: self.path.to_owned(),
                pages: self.read,
                total,
            });
        }
        Ok(())
    }
}

/// The id of row `i` of a users page: the row's own, or the answer's `ids` at its place when
/// the row is beyond reading (so an unreadable record is still known by its id).
pub fn user_row_id(raw: &RawValue, ids: &[u64], i: usize) -> Result<u64, SupersetError> {
    api::row_id(raw)
        .or_else(|| ids.get(i).copied())
        .ok_or_else(|| SupersetError::NoId {
            path: USERS.to_owned(),
            detail: crate::text::snippet(raw.get().as_bytes()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The warnings `f` logs.
    fn warnings(f: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let log = Buffer::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
        text.lines().map(str::to_owned).collect()
    }

    fn failed(id: u64, reason: &str) -> Reads {
        Reads {
            settled: Ids::new(),
            failed: BTreeMap::from([(id, reason.to_owned())]),
        }
    }

    #[test]
    fn a_user_still_unreadable_is_warned_about_once_across_incremental_and_full_reads() {
        let mut cursor = Cursor::default();
        let said = warnings(|| {
            failed(7, "bad email").report("prod", &mut cursor, Mode::Incremental);
            failed(7, "bad email").report("prod", &mut cursor, Mode::Incremental);
            failed(7, "bad email").report("prod", &mut cursor, Mode::Full);
        });
        assert_eq!(said.len(), 1, "{said:?}");
        assert_eq!(
            cursor.unreadable_users.get(&7).map(String::as_str),
            Some("bad email")
        );
        let said =
            warnings(|| failed(7, "no username").report("prod", &mut cursor, Mode::Incremental));
        assert_eq!(said.len(), 1, "a new reason is a new problem: {said:?}");
    }
}
