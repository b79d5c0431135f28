//! A store whose log is chained and signed, and the copies of it the sinks write: for the tests
//! of `rollcall verify` and of what the chain looks like on the wire.

use std::path::{Path, PathBuf};

use rollcall::chain::checkpoint::Signer;
use rollcall::config::Config;
use rollcall::event::Event;
use rollcall::store::{Checkpoints, Store};

use super::events::every_kind_of_event;

/// The key checkpoints are signed with in the tests: one `openssl genpkey -algorithm ed25519`
/// wrote.
pub const KEY: &str = include_str!("../fixtures/chain/signing.pem");

/// Writes [`KEY`] to `dir/signing.pem`; returns its path.
pub fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("signing.pem");
    std::fs::write(&path, KEY).unwrap();
    path
}

/// `n` `user.created` events, each a schema-valid one for a user of its own.
pub fn created(n: usize) -> Vec<Event> {
    let template = every_kind_of_event()
        .into_iter()
        .find(|e| e["type"] == "user.created")
        .unwrap();
    (0..n)
        .map(|i| {
            let mut e = template.clone();
            e["id"] = serde_json::json!(uuid::Uuid::now_v7());
            e["dataschema"] = serde_json::json!("urn:rollcall:schema:user.created");
            e["data"]["user"]["id"] = serde_json::json!(100 + i);
            e["subject"] = serde_json::json!((100 + i).to_string());
            serde_json::from_value(e).unwrap()
        })
        .collect()
}

/// A store in a directory of its own, signing a checkpoint every `every` events, holding
/// `2 * every + 1` chained `user.created` events and their checkpoints.
pub fn signed_store(every: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    store.sign_checkpoints(Checkpoints {
        signer: Signer::load(&key_file(dir.path())).unwrap(),
        every,
        interval: std::time::Duration::from_secs(3600),
        shard: None,
    });
    super::log::append(&store, created(2 * every as usize + 1));
    (dir, store)
}

/// A store with one sink and a checkpoint every `every` events, as `run` would have it: its
/// config file (`rollcall.toml`) and key (`signing.pem`) in `dir`.
pub struct Written {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub jsonl: PathBuf,
}

impl Written {
    /// With a JSONL sink `audit` writing `events.jsonl`.
    pub fn new(every: u64) -> Written {
        Written::with_sink(every, |jsonl| {
            format!(
                "[[sinks]]\nkind = \"jsonl\"\nname = \"audit\"\npath = {:?}\n",
                jsonl.display().to_string()
            )
        })
    }

    /// With the one sink `sink` makes of the JSONL path.
    pub fn with_sink(every: u64, sink: impl Fn(&Path) -> String) -> Written {
        let dir = tempfile::tempdir().unwrap();
        let key = key_file(dir.path());
        let jsonl = dir.path().join("events.jsonl");
        let text = super::config::offline(
            dir.path(),
            &format!(
                "signing_key_file = {:?}\ncheckpoint_every = {every}",
                key.display().to_string()
            ),
            &sink(&jsonl),
        );
        let config_path = dir.path().join("rollcall.toml");
        std::fs::write(&config_path, text).unwrap();
        Written {
            dir,
            config_path,
            jsonl,
        }
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap()
    }

    /// The store of this config, signing with its key as `run` and `once` do.
    pub fn store(&self) -> Store {
        let config = self.config();
        let store = Store::open(&config.store.path).unwrap();
        store.sign_checkpoints(config.store.checkpoints().unwrap().unwrap());
        store
    }

    /// Commit `events` and deliver them to the sink, then close the store.
    pub async fn commit_and_deliver(&self, events: Vec<Event>) {
        let store = self.store();
        super::log::append(&store, events);
        let sink = self.config().sinks[0].build().unwrap();
        rollcall::deliver::drain(&store, sink.as_ref())
            .await
            .unwrap();
    }

    /// The JSONL file's lines, each with its newline.
    pub fn lines(&self) -> Vec<Vec<u8>> {
        std::fs::read(&self.jsonl)
            .unwrap()
            .split_inclusive(|b| *b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// The public key the checkpoints are signed with.
    pub fn public_key(&self) -> String {
        Signer::load(&self.dir.path().join("signing.pem"))
            .unwrap()
            .public()
    }
}
