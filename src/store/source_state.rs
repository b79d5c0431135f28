//! What the store keeps of each source between cycles: its state (`source/<name>` in `meta`:
//! the runner's part, with this store's standing among the claims on the source's URL, and the
//! source's own cursor, opaque here), a login the upstream refused
//! (`login_refused/<name>`), and, in memory only, the states of cycles that found no change and
//! what this process's runner is doing with the source; which sources the store holds anything
//! of, and forgetting all of it (`rollcall source forget`), snapshot included.
//!
//! Owns the latest state of a source as this process sees it, and keeping a refused login
//! durably so that no process sends those credentials again. It never reads the source's
//! cursor (only the source knows its type) and never holds a password: only a hash of the
//! credentials, beside a refused login. Forgetting a source never touches the event log: the
//! events it produced are history, and stay.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{json_bytes, Store, StoreError};
use crate::claim::ClaimState;

/// A source's own cursor as the store keeps it: the fields of a JSON object, stored flat beside
/// the generic source state. Only the source knows its type.
pub type StoredCursor = serde_json::Map<String, serde_json::Value>;

/// What the store remembers about one source between cycles: the generic part the runner
/// keeps, and the source's own cursor, which only the source reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    /// The first full snapshot has been stored.
    pub initialized: bool,
    pub last_poll: Option<DateTime<Utc>>,
    pub last_full_reconcile: Option<DateTime<Utc>>,
    /// When the last `sync.completed` was written (docs/events.md, Completeness).
    #[serde(default)]
    pub last_sync: Option<DateTime<Utc>>,
    pub last_error: Option<ErrorRecord>,
    /// The source stopped itself and why (its login was refused); cleared by changed
    /// credentials, by `rollcall source retry-login`, and by a successful poll.
    #[serde(default)]
    pub stopped: Option<ErrorRecord>,
    pub users_known: usize,
    /// Deletions held back by the mass-delete guard.
    pub deletion_guard: Option<DeletionGuard>,
    /// This store's standing among the claims on the source's URL (docs/scaling.md, Claims):
    /// it holds the claim, or another store does and this one does not poll the source.
    /// `None` where no sink keeps claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<ClaimState>,
    /// The source's own cursor (high-water marks, how far a log was read), opaque here. Kept
    /// flat beside the fields above, where earlier releases stored Superset's.
    #[serde(flatten)]
    pub cursor: StoredCursor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub at: DateTime<Utc>,
    pub message: String,
}

/// What identifies the credentials a source logs in with, without holding them: a SHA-256 over
/// the URL, the username and the password (made by `source::Login::credentials`). The store
/// keeps it only beside a refused login, and never shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Credentials(pub String);

/// A login the upstream refused, and the credentials it refused. Each refused login counts
/// towards locking the account (Kylin locks it after three, for good after ten: docs/kylin.md
/// K30, K32), so no process sends these credentials again, whatever restarts it: only other
/// credentials, or an operator's `rollcall source retry-login`, lift it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginRefusal {
    pub at: DateTime<Utc>,
    /// The upstream's answer, as the source's error put it.
    pub message: String,
    pub credentials: Credentials,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletionGuard {
    pub since: DateTime<Utc>,
    /// The users that vanished together, by key (their event `subject`).
    #[serde(deserialize_with = "keys_as_strings")]
    pub user_ids: Vec<String>,
    /// How many users were known when they vanished.
    pub known: usize,
}

/// Guard records written before keys were generic hold numeric ids.
fn keys_as_strings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let values = Vec::<serde_json::Value>::deserialize(d)?;
    Ok(values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
        .collect())
}

/// What the runner of this process is doing with one source; kept in memory only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceActivity {
    /// A poll of the source is running, since then.
    pub polling_since: Option<DateTime<Utc>>,
    /// How long the last cycle took, whether it succeeded, failed or passed its deadline.
    pub last_cycle_seconds: Option<f64>,
    /// When the next poll is due; it may then wait for a turn among `max_concurrent_polls`.
    pub next_poll: Option<DateTime<Utc>>,
}

impl Store {
    /// Keep the state of a cycle that found no change in memory only (see `unsaved`).
    pub fn keep_unsaved(&self, source: &str, state: SourceState) {
        self.unsaved_states().insert(source.to_owned(), state);
    }

    pub(super) fn unsaved_states(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, SourceState>> {
        self.unsaved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Change what this process's runner says it is doing with `source`.
    pub fn note_activity(&self, source: &str, note: impl FnOnce(&mut SourceActivity)) {
        let mut all = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        note(all.entry(source.to_owned()).or_default());
    }

    /// What this process's runner is doing with `source`: all `None` in a process that does
    /// not poll it.
    pub fn activity(&self, source: &str) -> SourceActivity {
        let all = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        all.get(source).cloned().unwrap_or_default()
    }

    /// The latest state of a source: as this process last left it, or as stored.
    pub fn source_state(&self, source: &str) -> Result<SourceState, StoreError> {
        if let Some(state) = self.unsaved_states().get(source) {
            return Ok(state.clone());
        }
        Ok(self.stored_source_state(source)?.unwrap_or_default())
    }

    /// The source state as stored, without what cycles of this process kept unsaved.
    pub fn stored_source_state(&self, source: &str) -> Result<Option<SourceState>, StoreError> {
        self.meta
            .get(state_key(source))?
            .map(|v| {
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    what: format!("state of source {source}"),
                    detail: e.to_string(),
                })
            })
            .transpose()
    }

    /// Remember a failed poll without touching the snapshot.
    pub fn record_error(&self, source: &str, message: String) -> Result<(), StoreError> {
        self.update_source_state(source, |state| {
            state.last_error = Some(ErrorRecord {
                at: Utc::now(),
                message,
            })
        })
    }

    /// Record that a source stopped itself, keeping when it first did.
    pub fn record_stop(&self, source: &str, message: String) -> Result<(), StoreError> {
        self.update_source_state(source, |state| {
            let at = state.stopped.as_ref().map_or_else(Utc::now, |s| s.at);
            state.last_error = Some(ErrorRecord {
                at: Utc::now(),
                message: message.clone(),
            });
            state.stopped = Some(ErrorRecord { at, message });
        })
    }

    /// Keep this store's standing on the claims of `source`, writing only when it changed.
    pub fn record_claim(&self, source: &str, claim: Option<ClaimState>) -> Result<(), StoreError> {
        if self.source_state(source)?.claim == claim {
            return Ok(());
        }
        self.update_source_state(source, |state| state.claim = claim)
    }

    /// Every refused login of `source` remembered, oldest first.
    fn login_refusals(&self, source: &str) -> Result<Vec<LoginRefusal>, StoreError> {
        let Some(v) = self.meta.get(refusal_key(source))? else {
            return Ok(Vec::new());
        };
        serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
            what: format!("refused logins of source {source}"),
            detail: e.to_string(),
        })
    }

    /// The upstream's refusal of these credentials of `source`, if one is remembered.
    pub fn login_refusal(
        &self,
        source: &str,
        credentials: &Credentials,
    ) -> Result<Option<LoginRefusal>, StoreError> {
        Ok(self
            .login_refusals(source)?
            .into_iter()
            .find(|r| &r.credentials == credentials))
    }

    /// Remember a refused login (durably: no later process may try it again). Refusals of other
    /// credentials stay: a password changed back to one refused before is not tried again
    /// either. The newest [`REFUSALS_KEPT`] are kept.
    pub fn record_login_refusal(
        &self,
        source: &str,
        refusal: &LoginRefusal,
    ) -> Result<(), StoreError> {
        let mut refusals = self.login_refusals(source)?;
        refusals.retain(|r| r.credentials != refusal.credentials);
        refusals.push(refusal.clone());
        let extra = refusals.len().saturating_sub(REFUSALS_KEPT);
        refusals.drain(..extra);
        self.writing(|| {
            self.meta
                .insert(refusal_key(source), json_bytes(&refusals))?;
            self.db.flush()?;
            Ok(())
        })
    }

    /// Forget every refused login of `source`, and that the source stopped for one: its next
    /// poll logs in once. Returns how many were remembered.
    pub fn clear_login_refusals(&self, source: &str) -> Result<usize, StoreError> {
        let had = self.login_refusals(source)?.len();
        if had > 0 {
            self.writing(|| {
                self.meta.remove(refusal_key(source))?;
                self.db.flush()?;
                Ok(())
            })?;
        }
        if self.source_state(source)?.stopped.is_some() {
            self.update_source_state(source, |state| state.stopped = None)?;
        }
        Ok(had)
    }

    /// Every source the store holds anything of (a state, a refused login, a snapshot), by
    /// name, in name order: the configured ones and those removed from the config but not
    /// forgotten.
    pub fn stored_sources(&self) -> Result<Vec<String>, StoreError> {
        let mut names = std::collections::BTreeSet::new();
        for prefix in [STATE_PREFIX, REFUSAL_PREFIX] {
            for entry in self.meta.scan_prefix(prefix.as_bytes()) {
                let (key, _) = entry?;
                names.insert(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
            }
        }
        for tree in self.db.tree_names() {
            for prefix in [SNAPSHOT_PREFIX, MEMBERS_PREFIX] {
                if let Some(name) = tree.strip_prefix(prefix.as_bytes()) {
                    names.insert(String::from_utf8_lossy(name).into_owned());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Remove everything the store keeps of `source`: its state and cursor, its refused logins,
    /// its snapshot (the users as last seen), and what this process noted of it in memory. The
    /// events it produced stay in the log. The caller makes sure no poll of it runs. Returns
    /// whether there was anything to forget.
    ///
    /// The state goes first, in one write with the refused logins: should the process die
    /// before the snapshot is dropped, the source counts as never polled, and a source of that
    /// name added later starts with a full reconcile that reports no change for a user it
    /// finds as stored.
    pub fn forget_source(&self, source: &str) -> Result<bool, StoreError> {
        let trees = [
            format!("{SNAPSHOT_PREFIX}{source}"),
            format!("{MEMBERS_PREFIX}{source}"),
        ];
        let had_trees = self
            .db
            .tree_names()
            .iter()
            .any(|t| trees.iter().any(|n| t == n.as_bytes()));
        let had_meta = self.meta.contains_key(state_key(source))?
            || self.meta.contains_key(refusal_key(source))?;
        self.unsaved_states().remove(source);
        self.clear_activity(source);
        if !had_trees && !had_meta {
            return Ok(false);
        }
        // Held shared, as a commit holds it: an export copies the store before or after this,
        // never half-way.
        let _open = self.gate.read().unwrap_or_else(|e| e.into_inner());
        self.writing(|| {
            let mut batch = sled::Batch::default();
            batch.remove(state_key(source));
            batch.remove(refusal_key(source));
            self.meta.apply_batch(batch)?;
            self.db.flush()?;
            for tree in &trees {
                self.db.drop_tree(tree.as_bytes())?;
            }
            self.db.flush()?;
            Ok(())
        })?;
        Ok(true)
    }

    /// Forget what this process's runner noted of `source` doing: it polls it no more.
    pub fn clear_activity(&self, source: &str) {
        self.activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(source);
    }

    fn update_source_state(
        &self,
        source: &str,
        update: impl FnOnce(&mut SourceState),
    ) -> Result<(), StoreError> {
        let mut state = self.source_state(source)?;
        update(&mut state);
        self.writing(|| {
            self.meta.insert(state_key(source), json_bytes(&state))?;
            self.db.flush()?;
            Ok(())
        })?;
        self.unsaved_states().remove(source);
        Ok(())
    }
}

const STATE_PREFIX: &str = "source/";
const REFUSAL_PREFIX: &str = "login_refused/";
/// The trees `snapshot.rs` keeps each source's users and memberships in.
const SNAPSHOT_PREFIX: &str = "snapshot/";
const MEMBERS_PREFIX: &str = "members/";

pub(super) fn state_key(source: &str) -> Vec<u8> {
    format!("{STATE_PREFIX}{source}").into_bytes()
}

/// Refused logins kept per source: a password changed back to one of these is not sent again.
pub const REFUSALS_KEPT: usize = 16;

fn refusal_key(source: &str) -> Vec<u8> {
    format!("{REFUSAL_PREFIX}{source}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::super::{Commit, Record};
    use super::*;

    fn commit(store: &Store, source: &str) {
        let state = SourceState {
            initialized: true,
            users_known: 1,
            ..Default::default()
        };
        let event: crate::event::Event = serde_json::from_value(serde_json::json!({
            "specversion": "1.0", "id": uuid::Uuid::now_v7(), "source": format!("superset://{source}"),
            "type": "user.created", "subject": "1", "time": Utc::now(),
            "datacontenttype": "application/json", "sequence": "", "data": {}
        }))
        .unwrap();
        store
            .commit(Commit {
                source,
                upserts: vec![Record {
                    key: 1u64.to_be_bytes().to_vec(),
                    value: br#"{"id":1,"roles":[],"groups":[]}"#.to_vec(),
                }],
                removals: vec![],
                events: vec![event],
                state: Some(&state),
            })
            .unwrap();
    }

    #[test]
    fn forgetting_a_source_removes_its_snapshot_state_and_refusals_and_keeps_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        commit(&store, "gone");
        commit(&store, "kept");
        store
            .record_login_refusal(
                "gone",
                &LoginRefusal {
                    at: Utc::now(),
                    message: "401".into(),
                    credentials: Credentials("h".into()),
                },
            )
            .unwrap();
        store.note_activity("gone", |a| a.last_cycle_seconds = Some(1.0));
        assert_eq!(store.stored_sources().unwrap(), ["gone", "kept"]);

        assert!(store.forget_source("gone").unwrap());
        assert_eq!(store.stored_sources().unwrap(), ["kept"]);
        assert_eq!(store.stored_source_state("gone").unwrap(), None);
        assert_eq!(store.login_refusals("gone").unwrap(), []);
        assert_eq!(store.activity("gone"), SourceActivity::default());
        assert!(!store.db.tree_names().iter().any(|t| t.ends_with(b"/gone")));
        assert_eq!(store.head().unwrap(), 2, "its events stay in the log");
        assert_eq!(store.events_from(0, 10).unwrap().len(), 2);
        assert!(store.source_state("kept").unwrap().initialized);
        assert!(
            !store.forget_source("gone").unwrap(),
            "nothing left to forget"
        );
        assert!(!store.forget_source("never").unwrap());

        // What is forgotten stays forgotten when the store is opened again.
        drop(store);
        let store = Store::open(&dir.path().join("s")).unwrap();
        assert_eq!(store.stored_sources().unwrap(), ["kept"]);
    }

    #[test]
    fn a_claim_is_kept_beside_the_cursor_across_reopening_and_goes_with_a_forget() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let store = Store::open(&path).unwrap();
        commit(&store, "bi");
        store
            .update_source_state("bi", |s| {
                s.cursor
                    .insert("changed_on_hwm".into(), serde_json::json!("2026-01-01"));
            })
            .unwrap();
        let held = ClaimState::Held {
            url: "https://bi.example".into(),
            since: Utc::now(),
        };
        store.record_claim("bi", Some(held.clone())).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        let state = store.source_state("bi").unwrap();
        assert_eq!(state.claim, Some(held));
        assert_eq!(state.cursor["changed_on_hwm"], "2026-01-01");
        assert!(
            !state.cursor.contains_key("claim"),
            "not read as the cursor's"
        );
        assert!(store.forget_source("bi").unwrap());
        assert_eq!(store.source_state("bi").unwrap().claim, None);
    }
}
