//! Streams: destinations that a sink's receivers create and delete while rollcall runs (an SSF
//! transmitter's streams), kept in the `streams` tree as `<sink>/<stream id>` → the sink's own
//! record of the stream, bytes the store does not read.
//!
//! Owns keeping a stream's record durably, and forgetting a stream whole: its record, and the
//! cursor, health, skipped count and dead letters it kept under its delivery name. It never
//! interprets a record, and never decides when a stream is made or dropped: the sink does.

use super::{Store, StoreError};

const TREE: &str = "streams";

impl Store {
    fn streams_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(TREE)?)
    }

    /// The records of `sink`'s streams, by stream id, in id order.
    pub fn streams(&self, sink: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = stream_key(sink, "");
        self.streams_tree()?
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                Ok((id, v.to_vec()))
            })
            .collect()
    }

    /// Store (or replace) the record of one stream. Durable when this returns.
    pub fn put_stream(&self, sink: &str, id: &str, record: &[u8]) -> Result<(), StoreError> {
        self.writing(|| {
            self.streams_tree()?.insert(stream_key(sink, id), record)?;
            self.db.flush()?;
            Ok(())
        })
    }

    /// Forget one stream: its record, and what its deliveries kept under `delivery` (cursor,
    /// health, skipped count, dead letters). Durable when this returns.
    pub fn delete_stream(&self, sink: &str, id: &str, delivery: &str) -> Result<(), StoreError> {
        self.writing(|| {
            self.streams_tree()?.remove(stream_key(sink, id))?;
            self.cursors.remove(delivery)?;
            self.meta.remove(format!("sink/{delivery}"))?;
            self.meta.remove(format!("skipped/{delivery}"))?;
            let dlq = format!("dlq/{delivery}");
            if self.db.tree_names().iter().any(|t| t == dlq.as_bytes()) {
                self.db.drop_tree(dlq)?;
            }
            self.db.flush()?;
            Ok(())
        })
    }
}

fn stream_key(sink: &str, id: &str) -> Vec<u8> {
    format!("{sink}/{id}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DeadLetter, SinkHealth};

    #[test]
    fn a_deleted_stream_leaves_nothing_behind_and_other_sinks_streams_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_stream("ssf", "a", b"{\"n\":1}").unwrap();
        store.put_stream("ssf", "b", b"{\"n\":2}").unwrap();
        store.put_stream("ssf2", "a", b"{\"n\":3}").unwrap();
        store.put_stream("ssf", "a", b"{\"n\":4}").unwrap();
        store.set_cursor("ssf/a", 7).unwrap();
        store
            .set_sink_state("ssf/a", SinkHealth::Degraded, Some("down".into()))
            .unwrap();
        let letter = DeadLetter {
            offset: 3,
            event: serde_json::json!({}),
            reason: "invalid_audience".into(),
            attempts: 1,
            at: chrono::Utc::now(),
        };
        store.dead_letter("ssf/a", &letter).unwrap();
        assert_eq!(
            store.streams("ssf").unwrap(),
            [
                ("a".to_owned(), b"{\"n\":4}".to_vec()),
                ("b".to_owned(), b"{\"n\":2}".to_vec())
            ]
        );

        store.delete_stream("ssf", "a", "ssf/a").unwrap();
        assert_eq!(store.streams("ssf").unwrap().len(), 1);
        assert_eq!(store.streams("ssf2").unwrap().len(), 1);
        assert_eq!(store.cursor("ssf/a").unwrap(), 0);
        assert_eq!(store.sink_state("ssf/a").unwrap().health, SinkHealth::Ok);
        assert_eq!(store.dead_letter_count("ssf/a").unwrap(), 0);
    }
}
