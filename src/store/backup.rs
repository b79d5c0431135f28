//! Export and import: the whole store as JSON lines (`rollcall store export`, `store import`),
//! each tree's entries as stored, in base64.
//!
//! Owns a copy that is consistent under `run` without holding commits for the whole of it, and
//! an import that only ever creates a new store. It never merges into a store that exists and
//! never changes the store it exports.

use std::path::Path;

use super::migrate::SCHEMA_VERSION;
use super::{Store, StoreError};

impl Store {
    /// Write every tree of the store (log, snapshots, source states, cursors, sink states,
    /// dead letters) as JSON lines: a line naming each tree, then one line per entry, keys and
    /// values in base64 as stored. The copy is consistent even under `run`, without holding
    /// commits for the whole of it: no commit lands while every tree but the log is copied,
    /// and the log is copied afterwards up to the head it had then (it only grows at the end,
    /// and compaction waits for the export). It streams: what it holds at once is one entry.
    /// Returns the entries written. sled's own `export` does the reading.
    pub fn export(&self, out: &mut dyn std::io::Write) -> Result<u64, StoreError> {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let write = |out: &mut dyn std::io::Write, line: serde_json::Value| {
            serde_json::to_writer(&mut *out, &line)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|source| StoreError::Export { source })
        };
        let _no_compaction = self.compacting.lock().unwrap_or_else(|e| e.into_inner());
        write(
            out,
            serde_json::json!({"rollcall_store_export": 1, "store_id": self.id, "schema": SCHEMA_VERSION}),
        )?;
        let mut entries = 0;
        let (log_kind, head) = {
            let _closed = self.gate.write().unwrap_or_else(|e| e.into_inner());
            let mut log_kind = None;
            for (kind, name, items) in self.db.export() {
                if *name == *self.events.name() {
                    log_kind = Some(kind);
                    continue;
                }
                write(
                    out,
                    serde_json::json!({"tree": b64(&name), "type": b64(&kind)}),
                )?;
                for item in items {
                    let kv: Vec<String> = item.iter().map(|b| b64(b)).collect();
                    write(out, serde_json::json!({"kv": kv}))?;
                    entries += 1;
                }
            }
            (log_kind, self.head()?)
        };
        if let Some(kind) = log_kind {
            write(
                out,
                serde_json::json!({"tree": b64(&self.events.name()), "type": b64(&kind)}),
            )?;
            for kv in self.events.range(..head.to_be_bytes()) {
                let (k, v) = kv?;
                write(out, serde_json::json!({"kv": [b64(&k), b64(&v)]}))?;
                entries += 1;
            }
        }
        Ok(entries)
    }

    /// Create the store at `path` from an [`export`](Store::export). The path must not hold a
    /// store already: an import never merges. Returns the entries read.
    pub fn import(path: &Path, input: impl std::io::BufRead) -> Result<u64, StoreError> {
        use base64::Engine;
        if path.exists() {
            return Err(StoreError::ImportTarget {
                path: path.to_owned(),
            });
        }
        let bad = |line: usize, what: String| StoreError::ImportFile { line, what };
        let decode = |line: usize, v: &serde_json::Value| {
            v.as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .ok_or_else(|| bad(line, "a key or value is not base64".into()))
        };
        let db = sled::Config::new().path(path).open()?;
        let mut tree: Option<sled::Tree> = None;
        let mut entries = 0;
        for (i, line) in input.lines().enumerate() {
            let n = i + 1;
            let line = line.map_err(|source| StoreError::Export { source })?;
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| bad(n, format!("not JSON: {e}")))?;
            if n == 1 {
                if v["rollcall_store_export"] != 1 {
                    return Err(bad(
                        n,
                        "not the first line of a `rollcall store export`".into(),
                    ));
                }
                continue;
            }
            if let Some(name) = v.get("tree") {
                tree = Some(db.open_tree(decode(n, name)?)?);
                continue;
            }
            let (Some(t), Some(kv)) = (&tree, v["kv"].as_array()) else {
                return Err(bad(
                    n,
                    "an entry before any tree, or neither a tree nor an entry".into(),
                ));
            };
            let [k, v] = kv.as_slice() else {
                return Err(bad(n, "an entry is not [key, value]".into()));
            };
            t.insert(decode(n, k)?, decode(n, v)?)?;
            entries += 1;
        }
        db.flush()?;
        Ok(entries)
    }
}
