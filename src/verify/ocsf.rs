//! An OCSF sink's file, record by record. Alone, a 1.9.0 record's attestation is its link
//! (`chain::attested`), and a 1.8.0 record carries none. Against the store, each record must be
//! what rollcall makes of the store's event it names (`metadata.sequence`, `metadata.uid`),
//! encoded afresh in the record's version; the verifier is then fed that stored event, and the
//! events between the records that no OCSF copy holds (checkpoints), so the chain, the
//! checkpoints' signatures and the copy's completeness are checked in the store.
//!
//! Owns telling an OCSF record's version and what a record that differs from its fresh encoding
//! is named by. It only reads the store.

use serde_json::Value;

use super::VerifyError;
use crate::chain::attested;
use crate::chain::record::{read, Place, Unreadable, Wire};
use crate::chain::verify::{Break, Verifier};
use crate::encode::ocsf::Version;
use crate::encode::{Binding, Encoder, Envelope, Format, Mode};
use crate::store::{Store, StoreError};

/// Events read from the store at once, between two records.
const CHUNK: usize = 1024;

type Fed = Result<Result<(), Break>, VerifyError>;

/// The sink encoder of OCSF `version`.
fn encoder(version: Version) -> Encoder {
    Encoder {
        format: Format::Ocsf,
        mode: Mode::Structured,
        binding: Binding::Http,
        ocsf: version,
    }
}

/// The OCSF records of one file, and the store they are compared with, if any.
pub(super) struct Copy<'s> {
    store: Option<&'s Store>,
    /// A record was read: the file is an OCSF copy.
    seen: bool,
}

impl<'s> Copy<'s> {
    pub(super) fn new(store: Option<&'s Store>) -> Copy<'s> {
        Copy { store, seen: false }
    }

    /// Check the record `record`, found at `place`, which declares OCSF `version`.
    pub(super) fn feed(
        &mut self,
        verifier: &mut Verifier<'_>,
        place: Place,
        version: &str,
        record: Value,
    ) -> Fed {
        self.seen = true;
        let version = match Version::declared(version) {
            Ok(version) => version,
            Err(what) => return Ok(verifier.feed(place, Err(Unreadable(what)))?),
        };
        let unchainable = version == Version::V1_8_0;
        let Some(store) = self.store else {
            return Ok(verifier.feed(place, attested::read(record, unchainable))?);
        };
        let named = match attested::named(&record) {
            Ok(named) => named,
            Err(e) => return Ok(verifier.feed(place, Err(e))?),
        };
        let offset = named.offset;
        let stored = store.events_from(offset, 1)?.into_iter().next();
        let Some(stored) = stored.filter(|e| e.offset == offset) else {
            // Compacted away, or past the log's head: the verifier asks the store which, and
            // says so.
            return Ok(verifier.feed(place, attested::read(record, unchainable))?);
        };
        let broken = |what: String| {
            Ok(Err(Break {
                place,
                offset: Some(offset),
                what,
            }))
        };
        let mut envelope = Envelope::parse(&stored).map_err(StoreError::from)?;
        // A record `rollcall replay` re-sent is labelled so; encoded afresh the same way.
        envelope.replayed = record["metadata"]["labels"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l == "replayed"));
        if envelope.id != named.id {
            return broken(format!(
                "its `metadata.uid` is {}, but the store's event at this offset is {}: it is not a record of this store's event",
                crate::text::one_line(&named.id),
                envelope.id
            ));
        }
        let fresh = encoder(version)
            .encode(&envelope, store.id())
            .map_err(StoreError::from)?;
        let fresh: Value = serde_json::from_slice(&fresh.body).expect("a record is JSON");
        if let Some(at) = first_difference(&fresh, &record) {
            return broken(format!(
                "it is not the store's event encoded afresh in OCSF {}: `{at}` differs, so a value in it was changed (unless another rollcall version wrote it: see `metadata.product.version`)",
                version.as_str()
            ));
        }
        if let Err(b) = self.left_out(verifier, place, offset)? {
            return Ok(Err(b));
        }
        Ok(verifier.feed(place, read(Wire::Structured(&stored.bytes)))?)
    }

    /// Feed the verifier, as found at `place`, the store's events after the last one it took
    /// and before `until` that no OCSF copy holds (checkpoints): their signatures are checked,
    /// and they are no gap. Does nothing without the store, or for a file of CloudEvents.
    pub(super) fn left_out(&self, verifier: &mut Verifier<'_>, place: Place, until: u64) -> Fed {
        let (Some(store), true) = (self.store, self.seen) else {
            return Ok(Ok(()));
        };
        let Some(mut from) = verifier.report().last.map(|l| l + 1) else {
            return Ok(Ok(()));
        };
        let ocsf = encoder(Version::default());
        while from < until {
            let chunk = store.events_from(from, CHUNK.min((until - from) as usize))?;
            let Some(last) = chunk.last().map(|e| e.offset) else {
                break;
            };
            for e in chunk.iter().filter(|e| e.offset < until) {
                let envelope = Envelope::parse(e).map_err(StoreError::from)?;
                if !ocsf.carries(&envelope.event_type) {
                    if let Err(b) = verifier.feed(place, read(Wire::Structured(&e.bytes)))? {
                        return Ok(Err(b));
                    }
                }
            }
            from = last + 1;
        }
        Ok(Ok(()))
    }
}

/// Where `b` first differs from `a`, as a path (`metadata.uid`, `users[0].name`); `None` when
/// they are equal.
fn first_difference(a: &Value, b: &Value) -> Option<String> {
    fn walk(a: &Value, b: &Value, path: &str) -> Option<String> {
        let join = |key: &str| match path {
            "" => key.to_owned(),
            _ => format!("{path}.{key}"),
        };
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => x
                .iter()
                .find_map(|(k, v)| match y.get(k) {
                    Some(w) => walk(v, w, &join(k)),
                    None => Some(join(k)),
                })
                .or_else(|| y.keys().find(|k| !x.contains_key(*k)).map(|k| join(k))),
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
                .iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (v, w))| walk(v, w, &format!("{path}[{i}]"))),
            _ => (a != b).then(|| path.to_owned()),
        }
    }
    walk(a, b, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_difference_is_named_by_its_path() {
        let a = serde_json::json!({"m": {"uid": "x", "n": [1, {"k": 2}]}, "z": 1});
        assert_eq!(first_difference(&a, &a), None);
        let mut b = a.clone();
        b["m"]["n"][1]["k"] = serde_json::json!(3);
        assert_eq!(first_difference(&a, &b).as_deref(), Some("m.n[1].k"));
        let mut c = a.clone();
        c["extra"] = serde_json::json!(true);
        assert_eq!(first_difference(&a, &c).as_deref(), Some("extra"));
        let mut d = a.clone();
        d["m"]["n"] = serde_json::json!([1]);
        assert_eq!(first_difference(&a, &d).as_deref(), Some("m.n"));
    }
}
