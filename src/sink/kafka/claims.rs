//! The claims topic of a Kafka sink: where the rollcall processes writing to one cluster claim
//! the sources they poll (docs/scaling.md, Claims), one message per store and URL, keyed
//! `<url> <store id>`, a claim as JSON or a tombstone for a claim withdrawn. The topic is
//! compacted, so it keeps each store's latest word on each URL; it has one partition, created
//! when missing.
//!
//! Owns reading the topic from its start and then following it (a consumer of its own in a
//! task, no group joined and no offset committed), knowing when everything published before a
//! moment has been read (each partition's high watermark then, reached), and publishing. It
//! never judges a claim (`claim::verdict` does) and never touches the events' topic.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::read::Reading;
use super::{metadata, KafkaConfig, KafkaError, BROKER_TIMEOUT};
use crate::claim::Claim;
use crate::sink::{Board, SinkError};

/// How long a catch-up may wait for the messages before the high watermarks it asked for.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(30);
/// After a failed read, the follower waits this long before the next: a broker that is down
/// answers every read at once with the same error.
const PAUSE_AFTER_ERROR: Duration = Duration::from_secs(1);
/// After a failed catch-up, the next one within this long fails at once with its error: every
/// source asks before its poll, and each attempt may wait for the brokers' timeouts.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The claims read, and how far each partition has been read.
#[derive(Default)]
struct Seen {
    /// By message key: one per store and URL.
    claims: BTreeMap<String, Claim>,
    /// Per partition, the offset of the next message to read.
    read_to: HashMap<i32, i64>,
}

/// The consumer following the topic, and the task that reads it.
struct Follower {
    consumer: Arc<StreamConsumer<Reading>>,
    partitions: Vec<i32>,
    task: tokio::task::JoinHandle<()>,
}

pub struct KafkaBoard {
    sink: String,
    topic: String,
    place: String,
    config: ClientConfig,
    producer: FutureProducer,
    seen: Arc<Mutex<Seen>>,
    /// Bumped whenever the follower has read something (or reached a partition's end).
    progress: watch::Sender<u64>,
    follower: tokio::sync::Mutex<Option<Follower>>,
    caught_up: AtomicBool,
    /// The last catch-up that failed, and why, until one succeeds.
    failed: Mutex<Option<(Instant, String)>>,
}

impl KafkaConfig {
    /// The board of this sink's claims topic. Connects to nothing yet.
    pub(super) fn claims(&self) -> Result<Box<dyn Board>, KafkaError> {
        let topic = self.claims_topic();
        let config = self.client(
            format!("rollcall-claims-{}", self.name),
            &[("message.timeout.ms", "10000")],
        )?;
        let producer: FutureProducer = config.create().map_err(|e| self.option_error(e))?;
        Ok(Box::new(KafkaBoard {
            sink: self.name.clone(),
            place: format!("the claims topic `{topic}` of sink '{}'", self.name),
            topic,
            config,
            producer,
            seen: Arc::default(),
            progress: watch::channel(0).0,
            follower: tokio::sync::Mutex::new(None),
            caught_up: AtomicBool::new(false),
            failed: Mutex::default(),
        }))
    }
}

impl Drop for KafkaBoard {
    fn drop(&mut self) {
        if let Some(f) = self.follower.get_mut() {
            f.task.abort();
        }
    }
}

/// A claim's message key: one per store and URL, so that compaction keeps the latest word of
/// each store on each URL.
fn key(url: &str, store: &str) -> String {
    format!("{url} {store}")
}

impl KafkaBoard {
    fn fail(&self, detail: impl std::fmt::Display) -> SinkError {
        KafkaError::Claims {
            sink: self.sink.clone(),
            topic: self.topic.clone(),
            detail: detail.to_string(),
        }
        .into()
    }

    /// The topic's partitions, the topic created (compacted, one partition) when missing.
    async fn partitions(&self) -> Result<Vec<i32>, String> {
        for attempt in 0..2 {
            let metadata = metadata(self.producer.clone(), &self.topic)
                .await
                .map_err(|e| e.to_string())?;
            let found = metadata.topics().iter().find(|t| t.name() == self.topic);
            if let Some(t) = found.filter(|t| t.error().is_none() && !t.partitions().is_empty()) {
                return Ok(t.partitions().iter().map(|p| p.id()).collect());
            }
            if attempt == 0 {
                self.create().await?;
            }
        }
        Err("created, but its metadata does not show it yet; trying again".into())
    }

    async fn create(&self) -> Result<(), String> {
        let admin: AdminClient<DefaultClientContext> =
            self.config.create().map_err(|e| e.to_string())?;
        let topic = NewTopic::new(&self.topic, 1, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact");
        let options = AdminOptions::new()
            .operation_timeout(Some(BROKER_TIMEOUT))
            .request_timeout(Some(BROKER_TIMEOUT));
        let results = admin
            .create_topics([&topic], &options)
            .await
            .map_err(|e| e.to_string())?;
        for r in results {
            match r {
                Ok(_) => {
                    tracing::info!(sink = %self.sink, topic = %self.topic, "created the claims topic")
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(format!("cannot create it: {code}")),
            }
        }
        Ok(())
    }

    /// Start following the topic from its first message, once.
    async fn follow(&self) -> Result<(), String> {
        let mut follower = self.follower.lock().await;
        if follower.is_some() {
            return Ok(());
        }
        let partitions = self.partitions().await?;
        let mut config = self.config.clone();
        config
            .remove("message.timeout.ms")
            .set(
                "group.id",
                format!("rollcall-claims-{}", uuid::Uuid::now_v7()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("allow.auto.create.topics", "false");
        let consumer: Arc<StreamConsumer<Reading>> = Arc::new(
            config
                .create_with_context(Reading::loud())
                .map_err(|e| e.to_string())?,
        );
        let mut assignment = TopicPartitionList::new();
        for p in &partitions {
            assignment
                .add_partition_offset(&self.topic, *p, Offset::Beginning)
                .map_err(|e| e.to_string())?;
        }
        consumer.assign(&assignment).map_err(|e| e.to_string())?;
        let task = tokio::spawn(read(
            consumer.clone(),
            self.topic.clone(),
            self.sink.clone(),
            self.seen.clone(),
            self.progress.clone(),
        ));
        *follower = Some(Follower {
            consumer,
            partitions,
            task,
        });
        Ok(())
    }

    /// Each partition's high watermark now: what a catch-up must have read.
    async fn ends(&self) -> Result<Vec<(i32, i64)>, String> {
        let (consumer, partitions) = {
            let f = self.follower.lock().await;
            let f = f.as_ref().expect("followed before its ends are asked");
            (f.consumer.clone(), f.partitions.clone())
        };
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            partitions
                .into_iter()
                .map(|p| {
                    let (_, high) = consumer.fetch_watermarks(&topic, p, BROKER_TIMEOUT)?;
                    Ok((p, high))
                })
                .collect::<Result<Vec<_>, RdError>>()
        })
        .await
        .expect("a watermark request does not panic")
        .map_err(|e| e.to_string())
    }

    /// What librdkafka last said went wrong while following the topic, if anything.
    async fn last_said(&self) -> String {
        let f = self.follower.lock().await;
        f.as_ref()
            .map(|f| f.consumer.context().last_said())
            .unwrap_or_default()
    }

    fn reached(&self, ends: &[(i32, i64)]) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        ends.iter()
            .all(|(p, high)| seen.read_to.get(p).copied().unwrap_or(0) >= *high)
    }

    /// Follow the topic (from the first call on) and read it up to its ends as they are now.
    async fn read_to_end(&self) -> Result<(), String> {
        self.follow().await?;
        let ends = match self.ends().await {
            Ok(ends) => ends,
            Err(e) => return Err(format!("{e}{}", self.last_said().await)),
        };
        let mut progress = self.progress.subscribe();
        let waited = tokio::time::timeout(CATCH_UP_WITHIN, async {
            while !self.reached(&ends) {
                if progress.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        if waited.is_err() || !self.reached(&ends) {
            return Err(format!(
                "its messages up to {ends:?} (partition, end) were not read within {CATCH_UP_WITHIN:?}{}",
                self.last_said().await
            ));
        }
        Ok(())
    }

    async fn send(&self, key: String, payload: Option<Vec<u8>>) -> Result<(), SinkError> {
        let mut record = FutureRecord::<String, Vec<u8>>::to(&self.topic).key(&key);
        if let Some(payload) = &payload {
            record = record.payload(payload);
        }
        self.producer
            .send(record, BROKER_TIMEOUT)
            .await
            .map(drop)
            .map_err(|(e, _)| self.fail(e))
    }
}

/// Whether every text of `claim` is printable on one line as it is: a claim comes from another
/// process, and `status` and the log show it (`crate::text::one_line`).
fn plain(claim: &Claim) -> bool {
    let texts = [&claim.url, &claim.store, &claim.source, &claim.host];
    texts
        .into_iter()
        .chain(&claim.shard)
        .all(|t| crate::text::one_line(t) == *t)
}

/// Follow the topic until the board goes: each claim kept by its key, a tombstone removing one,
/// each partition's end noted as reached.
async fn read(
    consumer: Arc<StreamConsumer<Reading>>,
    topic: String,
    sink: String,
    seen: Arc<Mutex<Seen>>,
    progress: watch::Sender<u64>,
) {
    loop {
        let read = consumer.recv().await;
        let failed = {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            match read {
                Ok(m) => {
                    seen.read_to.insert(m.partition(), m.offset() + 1);
                    let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
                    match m.payload().map(serde_json::from_slice::<Claim>) {
                        None => {
                            seen.claims.remove(key.as_ref());
                        }
                        Some(Ok(claim)) if plain(&claim) => {
                            seen.claims.insert(key.into_owned(), claim);
                        }
                        Some(read) => {
                            let error = read.err().map_or_else(
                                || "a field holds what no rollcall writes".to_owned(),
                                |e| e.to_string(),
                            );
                            tracing::warn!(sink = %sink, topic = %topic, partition = m.partition(), offset = m.offset(), error = %error, "a message of the claims topic is no claim rollcall wrote; it is ignored")
                        }
                    }
                    None
                }
                Err(RdError::PartitionEOF(p)) => {
                    let at = consumer
                        .position()
                        .ok()
                        .and_then(|list| list.find_partition(&topic, p)?.offset().to_raw());
                    if let Some(at) = at {
                        seen.read_to.insert(p, at);
                    }
                    None
                }
                Err(e) => Some(e),
            }
        };
        match failed {
            None => progress.send_modify(|n| *n += 1),
            Some(e) => {
                tracing::warn!(sink = %sink, topic = %topic, error = %e, "cannot read the claims topic; the claims read so far stand, reading goes on");
                tokio::time::sleep(PAUSE_AFTER_ERROR).await;
            }
        }
    }
}

impl Board for KafkaBoard {
    fn place(&self) -> &str {
        &self.place
    }

    fn catch_up(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let last = self
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some((at, why)) = last.filter(|(at, _)| at.elapsed() < RETRY_AFTER) {
                return Err(self.fail(format!(
                    "{why} ({}s ago; tried again {}s after a failure)",
                    at.elapsed().as_secs(),
                    RETRY_AFTER.as_secs()
                )));
            }
            let result = self.read_to_end().await;
            let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(()) => {
                    *failed = None;
                    self.caught_up.store(true, Relaxed);
                    Ok(())
                }
                Err(why) => {
                    *failed = Some((Instant::now(), why.clone()));
                    Err(self.fail(why))
                }
            }
        })
    }

    fn caught_up(&self) -> bool {
        self.caught_up.load(Relaxed)
    }

    fn claims(&self) -> Vec<Claim> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.claims.values().cloned().collect()
    }

    fn publish<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<(), SinkError>> {
        let payload = serde_json::to_vec(claim).expect("a claim serialises");
        Box::pin(self.send(key(&claim.url, &claim.store), Some(payload)))
    }

    fn withdraw<'a>(
        &'a self,
        url: &'a str,
        store: &'a str,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.send(key(url, store), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_whose_text_would_not_print_on_one_line_is_no_claim_rollcall_wrote() {
        let at = chrono::DateTime::from_timestamp(0, 0).unwrap();
        let claim = Claim {
            url: "https://bi.example".into(),
            store: "0190".into(),
            shard: Some("eu-1".into()),
            source: "finance".into(),
            host: "rollcall-0".into(),
            since: at,
            renewed: at,
        };
        assert!(plain(&claim));
        for bad in ["\u{1b}[2J", "a\nb", "\u{202e}evil"] {
            let mut c = claim.clone();
            c.host = bad.into();
            assert!(!plain(&c), "{bad:?}");
            let mut c = claim.clone();
            c.shard = Some(bad.into());
            assert!(!plain(&c), "{bad:?}");
        }
    }
}
