//! Redaction per sink: a subscriber that needs to know *that* a user changed, not who in clear,
//! gets each value of the fields its sink names (`redact_fields`) replaced by a keyed hash
//! (HMAC-SHA256 with the sink's `redact_key_env`/`redact_key_file`, `hmac-sha256:<hex>`: the
//! same value gives the same hash, so joins still work) or dropped when no key is set (the
//! same value elsewhere, where something must stand, masked as `redacted`).
//!
//! Owns how a stored event becomes its redacted copy: the named fields wherever they occur in
//! `data` (a user record, `before`, an action-log row's user, a `changes` entry of that field),
//! then every other string of the event equal to a value it replaced (a username that is the
//! email, a Kylin `subject`); the chain attributes go, since the content is no longer what was
//! hashed. The store keeps the truth: redaction happens as a sink encodes. It must never log,
//! return or keep a clear value, nor the key; redacting a copy again changes nothing.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::chain::{HASH, PREV, PREV_ID};
use crate::store::StoredEvent;

/// What every hashed value starts with.
const PREFIX: &str = "hmac-sha256:";
/// Without a key, what a value equal to a dropped one becomes where it is not a named field (a
/// `subject`, a username that was the first name): those places must hold something.
const MASK: &str = "redacted";
/// A shorter key makes the hashes of guessable values (emails, names) easy to test.
pub const MIN_KEY_BYTES: usize = 32;

/// The fields a sink redacts, and how.
pub struct Redactor {
    fields: HashSet<String>,
    /// `None`: values are dropped.
    key: Option<Hmac<Sha256>>,
}

// Written by hand so that no derive can ever print the key.
impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Redactor {{ fields: {:?}, keyed: {} }}",
            self.fields,
            self.key.is_some()
        )
    }
}

/// Why a sink's redaction key cannot be used. Never holds the key.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("sink '{sink}': cannot read the redaction key")]
    Key {
        sink: String,
        #[source]
        source: crate::settings::SecretError,
    },
    #[error("sink '{sink}': the redaction key is {bytes} bytes; it needs at least {MIN_KEY_BYTES}, or the hashes of guessable values (emails, names) can be tested. Create one with `openssl rand -base64 32`")]
    ShortKey { sink: String, bytes: usize },
}

impl Redactor {
    /// Redacts `fields`, hashing with `key` (the secret as written), or dropping without one.
    pub fn new(
        sink: &str,
        fields: &[String],
        key: Option<secrecy::SecretString>,
    ) -> Result<Redactor, RedactError> {
        let key = match key {
            None => None,
            Some(key) => {
                let bytes = key.expose_secret().as_bytes();
                if bytes.len() < MIN_KEY_BYTES {
                    return Err(RedactError::ShortKey {
                        sink: sink.to_owned(),
                        bytes: bytes.len(),
                    });
                }
                Some(Hmac::<Sha256>::new_from_slice(bytes).expect("HMAC takes a key of any length"))
            }
        };
        Ok(Redactor {
            fields: fields.iter().cloned().collect(),
            key,
        })
    }

    /// The stored event as this sink may see it. Fails only on bytes that are no JSON object
    /// (a damaged store).
    pub fn redact(&self, stored: &StoredEvent) -> Result<StoredEvent, serde_json::Error> {
        let mut event: Map<String, Value> = serde_json::from_slice(&stored.bytes)?;
        let mut clear = BTreeSet::new();
        if let Some(data) = event.get_mut("data") {
            self.fields_in(data, &mut clear);
            self.sweep(data, &clear);
        }
        if let Some(subject) = event.get_mut("subject") {
            self.sweep(subject, &clear);
        }
        for attribute in [HASH, PREV, PREV_ID] {
            event.remove(attribute);
        }
        Ok(StoredEvent {
            offset: stored.offset,
            bytes: serde_json::to_vec(&event)?.into(),
        })
    }

    /// A user's `subject` and record (a table's row) as this sink may see them: redacted as
    /// the user's events are.
    pub fn redact_row(
        &self,
        subject: &str,
        record: &[u8],
    ) -> Result<(String, Vec<u8>), serde_json::Error> {
        let record: Value = serde_json::from_slice(record)?;
        let mut event = serde_json::json!({"subject": subject, "data": {"user": record}});
        let mut clear = BTreeSet::new();
        self.fields_in(&mut event["data"], &mut clear);
        self.sweep(&mut event, &clear);
        let subject = event["subject"].as_str().unwrap_or(MASK).to_owned();
        Ok((subject, serde_json::to_vec(&event["data"]["user"])?))
    }

    /// Replace (or drop) the named fields at any depth of `value`, and the `before`/`after` of
    /// a `changes` entry of a named field; their clear string values go to `clear`.
    fn fields_in(&self, value: &mut Value, clear: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                let changed_field = map
                    .get("field")
                    .and_then(Value::as_str)
                    .is_some_and(|f| self.fields.contains(f));
                let names: Vec<String> = map
                    .keys()
                    .filter(|k| {
                        self.fields.contains(*k)
                            || (changed_field && (*k == "before" || *k == "after"))
                    })
                    .cloned()
                    .collect();
                for name in names {
                    self.replace(map, &name, clear);
                }
                map.values_mut().for_each(|v| self.fields_in(v, clear));
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.fields_in(v, clear)),
            _ => {}
        }
    }

    fn replace(&self, map: &mut Map<String, Value>, name: &str, clear: &mut BTreeSet<String>) {
        let Some(value) = map.get_mut(name) else {
            return;
        };
        if value.is_null() || is_hash(value) {
            return;
        }
        if let Value::String(s) = value {
            if !s.is_empty() {
                clear.insert(s.clone());
            }
        }
        match &self.key {
            Some(_) => {
                let text = match &*value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                *value = Value::String(self.hash(&text));
            }
            None => {
                map.remove(name);
            }
        }
    }

    /// Every other string of `value` equal to a value replaced: hashed alike, or masked.
    fn sweep(&self, value: &mut Value, clear: &BTreeSet<String>) {
        match value {
            Value::String(s) if clear.contains(s.as_str()) => *s = self.hash(s),
            Value::Object(map) => map.values_mut().for_each(|v| self.sweep(v, clear)),
            Value::Array(items) => items.iter_mut().for_each(|v| self.sweep(v, clear)),
            _ => {}
        }
    }

    /// `hmac-sha256:<hex>` of `text`, or the mask without a key.
    fn hash(&self, text: &str) -> String {
        let Some(key) = &self.key else {
            return MASK.to_owned();
        };
        let mut mac = key.clone();
        mac.update(text.as_bytes());
        let digest: [u8; 32] = mac.finalize().into_bytes().into();
        format!("{PREFIX}{}", crate::chain::hex(&digest))
    }
}

/// A value this redaction wrote already (a dead letter's redacted copy, sent again).
fn is_hash(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        s.strip_prefix(PREFIX)
            .is_some_and(|h| crate::chain::unhex(h).is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(event: Value) -> StoredEvent {
        StoredEvent {
            offset: 7,
            bytes: serde_json::to_vec(&event).unwrap().into(),
        }
    }

    fn redactor(key: Option<&str>) -> Redactor {
        let fields: Vec<String> = ["email", "first_name", "last_name", "username"]
            .map(String::from)
            .to_vec();
        Redactor::new("s", &fields, key.map(|k| k.to_owned().into())).unwrap()
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn updated() -> Value {
        serde_json::json!({
            "specversion": "1.0", "id": "01900000-0000-7000-8000-000000000000",
            "source": "kylin://bi", "type": "user.updated", "subject": "alice",
            "chainhash": "00", "chainprev": "00",
            "data": {
                "user": {"username": "alice", "email": "alice@example.com", "first_name": "Alice", "id": 3},
                "before": {"username": "alice", "email": "old@example.com"},
                "changes": [{"field": "email", "before": "old@example.com", "after": "alice@example.com"}],
                "note": "alice"
            }
        })
    }

    #[test]
    fn every_clear_value_is_hashed_alike_wherever_it_occurs_and_again_changes_nothing() {
        let r = redactor(Some(KEY));
        let once = r.redact(&stored(updated())).unwrap();
        let text = String::from_utf8(once.bytes.to_vec()).unwrap();
        for clear in ["alice", "Alice", "old@example.com", "alice@example.com"] {
            assert!(!text.contains(&format!("\"{clear}\"")), "{clear} in {text}");
        }
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["subject"], v["data"]["user"]["username"],
            "one value, one hash"
        );
        assert_eq!(v["data"]["note"], v["subject"]);
        assert_eq!(v["data"]["changes"][0]["after"], v["data"]["user"]["email"]);
        assert_eq!(v["data"]["changes"][0]["field"], "email");
        assert_eq!(v["data"]["user"]["id"], 3);
        assert!(v.get("chainhash").is_none());
        assert!(v["subject"].as_str().unwrap().starts_with("hmac-sha256:"));
        assert_eq!(r.redact(&once).unwrap().bytes, once.bytes, "idempotent");
        let other = redactor(Some("another key, also 32 bytes long!!"));
        assert_ne!(other.redact(&stored(updated())).unwrap().bytes, once.bytes);
    }

    #[test]
    fn without_a_key_the_named_fields_are_dropped_and_their_values_elsewhere_masked() {
        let v: Value =
            serde_json::from_slice(&redactor(None).redact(&stored(updated())).unwrap().bytes)
                .unwrap();
        assert_eq!(v["subject"], "redacted", "an event must have one");
        assert_eq!(v["data"]["user"], serde_json::json!({"id": 3}));
        assert_eq!(
            v["data"]["changes"][0],
            serde_json::json!({"field": "email"})
        );
        assert_eq!(
            v["data"]["note"], "redacted",
            "the same value elsewhere is masked"
        );
    }

    #[test]
    fn a_short_key_is_refused_without_being_shown() {
        let err = Redactor::new("s", &[], Some("hunter2".to_owned().into())).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(format!("{:?}", redactor(Some(KEY))).contains("keyed: true"));
        assert!(!format!("{:?}", redactor(Some(KEY))).contains(KEY));
    }
}
