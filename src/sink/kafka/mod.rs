//! The Kafka sink: every event to one topic, keyed `<source>:<subject>`, in the CloudEvents
//! Kafka protocol binding (binary: `ce_*` headers and `data` as the value; structured: the
//! stored event as the value).
//!
//! Owns the producer, the encoding, and its own delivery loop: many messages are in flight at
//! once, across batches, and the stored cursor only ever moves to the highest offset below
//! which every message is acknowledged. It must never skip an event: an event Kafka refuses for
//! good (too large, not authorized) stops the sink, naming the event's offset.
//!
//! Ordering per user comes from the key (one partition per key) and from the idempotent
//! producer (`enable.idempotence=true`, `acks=all`), which keeps order within a partition
//! through retries.

mod config;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::watch;
use tracing::{error, info, warn};

pub use config::{KafkaConfig, RESERVED_OPTIONS};

use super::{Serving, Sink, SinkError};
use crate::encode::{Binding, Encoder, Envelope, Unreadable};
use crate::store::{SinkHealth, Store, StoreError, StoredEvent};

/// How long a metadata or admin request may take before the brokers count as unreachable.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for in-flight messages when the sink is dropped at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// librdkafka's default is 5 minutes; a sink that fails a batch sooner reports itself
/// degraded sooner and retries from its cursor. Overridable in `[sinks.options]`.
const DEFAULT_MESSAGE_TIMEOUT_MS: &str = "30000";
/// Messages in flight at most: librdkafka's default queue (`queue.buffering.max.messages`).
/// A smaller queue set in options just makes the sink wait sooner.
const MAX_IN_FLIGHT: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("sink '{sink}': librdkafka rejected option `{key}`: {message}. Fix or remove it in [sinks.options]")]
    Option {
        sink: String,
        key: String,
        message: String,
    },
    #[error("sink '{sink}': {message}")]
    Secret { sink: String, message: String },
    #[error("sink '{sink}': cannot reach the Kafka brokers {brokers}: {detail}. Check `brokers`, the network and [sinks.options] (security.protocol, sasl.*); retrying from the stored cursor")]
    Unreachable {
        sink: String,
        brokers: String,
        detail: String,
    },
    #[error("sink '{sink}': topic `{topic}` does not exist on {brokers}. Create it (kafka-topics.sh --create --topic {topic}) or set `create_topic = true`; retrying")]
    TopicMissing {
        sink: String,
        topic: String,
        brokers: String,
    },
    #[error("sink '{sink}': cannot create topic `{topic}`: {detail}. Create it by hand, or grant CREATE on it; retrying")]
    CreateTopic {
        sink: String,
        topic: String,
        detail: String,
    },
    #[error("sink '{sink}': the event at offset {offset} ({bytes} bytes) is larger than Kafka accepts: {detail}. Raise `message.max.bytes` in [sinks.options] and the topic's `max.message.bytes`, then restart; the sink stopped and skipped nothing")]
    TooLarge {
        sink: String,
        offset: u64,
        bytes: usize,
        detail: String,
    },
    #[error("sink '{sink}': not authorized to write the event at offset {offset} to topic `{topic}`: {detail}. Grant the principal WRITE on the topic and IDEMPOTENT_WRITE on the cluster, then restart; the sink stopped and skipped nothing")]
    NotAuthorized {
        sink: String,
        offset: u64,
        topic: String,
        detail: String,
    },
    #[error("sink '{sink}': the event at offset {offset} was not delivered to topic `{topic}`: {detail}; retrying from the stored cursor")]
    Delivery {
        sink: String,
        offset: u64,
        topic: String,
        detail: String,
    },
    #[error("sink '{sink}': the stored event at offset {offset} is not a readable CloudEvent: {detail}. The store is damaged; the sink stopped and skipped nothing")]
    Corrupt {
        sink: String,
        offset: u64,
        detail: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl KafkaError {
    /// Retrying cannot help until an operator acts: the sink stops (and says why).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            KafkaError::Option { .. }
                | KafkaError::Secret { .. }
                | KafkaError::TooLarge { .. }
                | KafkaError::NotAuthorized { .. }
                | KafkaError::Corrupt { .. }
        )
    }
}

/// One event, encoded for Kafka.
pub struct Message<'a> {
    pub key: String,
    pub value: Cow<'a, [u8]>,
    pub headers: OwnedHeaders,
}

/// A message from an encoded event: the attribute headers, then `content-type`.
pub fn message<'a>(encoder: &Encoder, e: &'a Envelope<'a>) -> Result<Message<'a>, Unreadable> {
    let encoded = encoder.encode(e)?;
    let mut headers = OwnedHeaders::new_with_capacity(encoded.headers.len() + 1);
    for (key, value) in &encoded.headers {
        headers = headers.insert(Header {
            key,
            value: Some(*value),
        });
    }
    headers = headers.insert(Header {
        key: "content-type",
        value: Some(encoded.content_type),
    });
    Ok(Message {
        key: encoded.key,
        value: encoded.body,
        headers,
    })
}

pub struct KafkaSink {
    name: String,
    brokers: String,
    topic: String,
    encoder: Encoder,
    create_topic: bool,
    batch_size: usize,
    client_config: ClientConfig,
    producer: FutureProducer,
    /// The topic was seen on the brokers since the last failure.
    topic_ready: bool,
}

impl KafkaSink {
    /// Build the producer. Connects to nothing yet (brokers may be down at start), but every
    /// librdkafka option is checked here, so a bad one fails the start naming its key.
    fn new(config: &KafkaConfig) -> Result<KafkaSink, KafkaError> {
        let mut client_config = ClientConfig::new();
        client_config
            .set("bootstrap.servers", &config.brokers)
            .set("client.id", format!("rollcall-{}", config.name))
            .set("message.timeout.ms", DEFAULT_MESSAGE_TIMEOUT_MS);
        for (key, value) in config.librdkafka_options()? {
            client_config.set(key, value);
        }
        // Set last so no option can weaken them (config validation also rejects them).
        client_config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("allow.auto.create.topics", "false");
        let producer: FutureProducer = client_config.create().map_err(|e| match e {
            RdError::ClientConfig(_, message, key, _value) => KafkaError::Option {
                sink: config.name.clone(),
                key,
                message,
            },
            other => KafkaError::Option {
                sink: config.name.clone(),
                key: "(producer)".into(),
                message: other.to_string(),
            },
        })?;
        Ok(KafkaSink {
            name: config.name.clone(),
            brokers: config.brokers.clone(),
            topic: config.topic.clone(),
            encoder: Encoder {
                format: config.format,
                mode: config.mode,
                binding: Binding::Kafka,
            },
            create_topic: config.create_topic,
            batch_size: config.batch_size,
            client_config,
            producer,
            topic_ready: false,
        })
    }

    /// An idempotent producer that hit a fatal error (e.g. a broken sequence) refuses every
    /// later message; a fresh one resumes from the cursor.
    fn replace_producer_if_fatal(&mut self) {
        let Some((code, reason)) = self.producer.client().fatal_error() else {
            return;
        };
        warn!(sink = %self.name, %code, %reason, "producer failed for good; starting a new one");
        match self.client_config.create() {
            Ok(p) => self.producer = p,
            // The options were accepted at start, so this is not expected; the old producer
            // keeps failing, and the sink keeps reporting it.
            Err(e) => error!(sink = %self.name, error = %e, "cannot start a new producer"),
        }
    }

    /// Deliver from the stored cursor to the log head (as it was when each batch was read),
    /// or until `stop` turns true; returns how many events were acknowledged. Records the
    /// sink's health in the store either way.
    async fn drain(
        &mut self,
        store: &Store,
        stop: Option<&watch::Receiver<bool>>,
    ) -> Result<u64, KafkaError> {
        let result = self.drain_inner(store, stop).await;
        let (health, last_error) = match &result {
            Ok(_) => (SinkHealth::Ok, None),
            Err(e) if e.is_permanent() => (SinkHealth::Disabled, Some(e.to_string())),
            Err(e) => (SinkHealth::Degraded, Some(e.to_string())),
        };
        if result.is_err() {
            self.topic_ready = false;
            self.replace_producer_if_fatal();
        }
        store.set_sink_state(&self.name, health, last_error)?;
        result
    }

    async fn drain_inner(
        &mut self,
        store: &Store,
        stop: Option<&watch::Receiver<bool>>,
    ) -> Result<u64, KafkaError> {
        let start = store.cursor(&self.name)?;
        if store.head()? <= start {
            return Ok(0);
        }
        self.ensure_topic(start).await?;
        let mut window = Window {
            sink: self,
            store,
            pending: VecDeque::new(),
            acked: start,
            committed: start,
        };
        let mut next = start;
        let result = async {
            loop {
                if stop.is_some_and(|s| *s.borrow()) {
                    break;
                }
                let batch = store.events_from(next, window.sink.batch_size)?;
                let Some(last) = batch.last() else { break };
                next = last.offset + 1;
                for stored in &batch {
                    window.enqueue(stored).await?;
                }
                // Move past what is acknowledged already, without waiting: the pipeline
                // must never run dry between batches.
                window.settle_ready()?;
                while window.pending.len() > MAX_IN_FLIGHT {
                    window.settle_oldest().await?;
                }
                window.commit_if_due()?;
            }
            while !window.pending.is_empty() {
                window.settle_oldest().await?;
            }
            Ok(())
        }
        .await;
        // Whatever happened, keep the acknowledged prefix: it is never sent again.
        window.commit()?;
        result.map(|()| window.acked - start)
    }

    /// For `rollcall replay`: send exactly `events` (a range the operator chose) and return
    /// once every one is acknowledged. Never reads or moves the stored cursor.
    async fn send_range(
        &mut self,
        store: &Store,
        events: &[StoredEvent],
    ) -> Result<(), KafkaError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let result = async {
            self.ensure_topic(first.offset).await?;
            // A window that is never committed: its cursor bookkeeping is simply unused.
            let mut window = Window {
                sink: self,
                store,
                pending: VecDeque::new(),
                acked: first.offset,
                committed: first.offset,
            };
            for stored in events {
                window.enqueue(stored).await?;
                window.settle_ready()?;
            }
            while !window.pending.is_empty() {
                window.settle_oldest().await?;
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            self.topic_ready = false;
            self.replace_producer_if_fatal();
        }
        result
    }

    /// Check that the topic exists (creating it if allowed) before the first send after a
    /// start or a failure: a missing topic is a clear error now, not a timeout later.
    async fn ensure_topic(&mut self, offset: u64) -> Result<(), KafkaError> {
        if self.topic_ready {
            return Ok(());
        }
        match self.topic_exists(offset).await? {
            true => {}
            false if self.create_topic => self.create().await?,
            false => {
                return Err(KafkaError::TopicMissing {
                    sink: self.name.clone(),
                    topic: self.topic.clone(),
                    brokers: self.brokers.clone(),
                })
            }
        }
        self.topic_ready = true;
        Ok(())
    }

    /// `offset` is the first event waiting, named if writing turns out to be forbidden.
    async fn topic_exists(&self, offset: u64) -> Result<bool, KafkaError> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        // fetch_metadata blocks on the network: keep it off the async workers.
        let metadata = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), BROKER_TIMEOUT)
        })
        .await
        .expect("metadata request does not panic")
        .map_err(|e| self.unreachable(e))?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == self.topic) else {
            return Ok(false);
        };
        match t.error() {
            None => Ok(!t.partitions().is_empty()),
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Ok(false),
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) => {
                Err(KafkaError::NotAuthorized {
                    sink: self.name.clone(),
                    offset,
                    topic: self.topic.clone(),
                    detail: "topic metadata: not authorized".into(),
                })
            }
            Some(other) => Err(self.unreachable(RdError::MetadataFetch(other.into()))),
        }
    }

    async fn create(&self) -> Result<(), KafkaError> {
        let fail = |detail: String| KafkaError::CreateTopic {
            sink: self.name.clone(),
            topic: self.topic.clone(),
            detail,
        };
        let admin: AdminClient<DefaultClientContext> = self
            .client_config
            .create()
            .map_err(|e| fail(e.to_string()))?;
        // -1: the broker's default partition count and replication factor.
        let topic = NewTopic::new(&self.topic, -1, TopicReplication::Fixed(-1));
        let options = AdminOptions::new().operation_timeout(Some(BROKER_TIMEOUT));
        let results = admin
            .create_topics([&topic], &options)
            .await
            .map_err(|e| fail(e.to_string()))?;
        for r in results {
            match r {
                Ok(_) => info!(sink = %self.name, topic = %self.topic, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(fail(code.to_string())),
            }
        }
        Ok(())
    }

    fn unreachable(&self, e: RdError) -> KafkaError {
        KafkaError::Unreachable {
            sink: self.name.clone(),
            brokers: self.brokers.clone(),
            detail: e.to_string(),
        }
    }

    /// Map a produce failure of the event at `offset` to the error that says what to do.
    fn produce_error(&self, offset: u64, bytes: usize, e: RdError) -> KafkaError {
        let detail = e.to_string();
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::MessageSizeTooLarge) => KafkaError::TooLarge {
                sink: self.name.clone(),
                offset,
                bytes,
                detail,
            },
            Some(
                RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::Authentication,
            ) => KafkaError::NotAuthorized {
                sink: self.name.clone(),
                offset,
                topic: self.topic.clone(),
                detail,
            },
            _ => KafkaError::Delivery {
                sink: self.name.clone(),
                offset,
                topic: self.topic.clone(),
                detail,
            },
        }
    }
}

impl Drop for KafkaSink {
    /// Give messages still in flight (a drain abandoned at shutdown) a chance to land. Their
    /// cursor did not move, so they are sent again on the next start either way: flushing only
    /// spares the consumers some duplicates.
    fn drop(&mut self) {
        if self.producer.in_flight_count() > 0 {
            if let Err(e) = self.producer.flush(FLUSH_TIMEOUT) {
                warn!(sink = %self.name, error = %e, "messages still in flight at shutdown; they are re-sent on the next start");
            }
        }
    }
}

/// The messages in flight, oldest first, and how far the cursor may move.
struct Window<'a> {
    sink: &'a KafkaSink,
    store: &'a Store,
    pending: VecDeque<(u64, usize, DeliveryFuture)>,
    /// Every event below this offset is acknowledged.
    acked: u64,
    committed: u64,
}

impl Window<'_> {
    async fn enqueue(&mut self, stored: &StoredEvent) -> Result<(), KafkaError> {
        let sink = self.sink;
        let corrupt = |e: Unreadable| KafkaError::Corrupt {
            sink: sink.name.clone(),
            offset: stored.offset,
            detail: e.source.to_string(),
        };
        let envelope = Envelope::parse(stored).map_err(corrupt)?;
        let message = message(&sink.encoder, &envelope).map_err(corrupt)?;
        let bytes = message.value.len();
        let mut record = FutureRecord::to(&sink.topic)
            .key(&message.key)
            .payload(message.value.as_ref())
            .headers(message.headers);
        loop {
            match sink.producer.send_result(record) {
                Ok(delivery) => {
                    self.pending.push_back((stored.offset, bytes, delivery));
                    return Ok(());
                }
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if !self.pending.is_empty() =>
                {
                    record = r;
                    self.settle_oldest().await?;
                }
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Queued by others (a flush in progress): give librdkafka a moment.
                    record = r;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => {
                    // Settle what is ahead first, so the cursor keeps every acknowledged event.
                    while !self.pending.is_empty() {
                        self.settle_oldest().await?;
                    }
                    return Err(sink.produce_error(stored.offset, bytes, e));
                }
            }
        }
    }

    /// Wait for the oldest message in flight; on failure the cursor stays below it.
    async fn settle_oldest(&mut self) -> Result<(), KafkaError> {
        let Some((offset, bytes, delivery)) = self.pending.pop_front() else {
            return Ok(());
        };
        self.settled(offset, bytes, delivery.await)
    }

    /// Settle the oldest messages whose outcome is already known.
    fn settle_ready(&mut self) -> Result<(), KafkaError> {
        while let Some((offset, bytes, delivery)) = self.pending.front_mut() {
            let Some(outcome) = delivery.now_or_never() else {
                return Ok(());
            };
            let (offset, bytes) = (*offset, *bytes);
            self.pending.pop_front();
            self.settled(offset, bytes, outcome)?;
        }
        Ok(())
    }

    fn settled(
        &mut self,
        offset: u64,
        bytes: usize,
        outcome: <DeliveryFuture as std::future::Future>::Output,
    ) -> Result<(), KafkaError> {
        match outcome {
            Ok(Ok(_)) => {
                self.acked = offset + 1;
                Ok(())
            }
            Ok(Err((e, _))) => Err(self.sink.produce_error(offset, bytes, e)),
            Err(_canceled) => Err(self.sink.produce_error(offset, bytes, RdError::Canceled)),
        }
    }

    fn commit_if_due(&mut self) -> Result<(), StoreError> {
        if self.acked - self.committed >= self.sink.batch_size as u64 {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        if self.acked > self.committed {
            self.store.set_cursor(&self.sink.name, self.acked)?;
            self.committed = self.acked;
        }
        Ok(())
    }
}

impl KafkaConfig {
    /// Build the producer. Connects to nothing yet (brokers may be down at start), but every
    /// librdkafka option is checked here, so a bad one fails the start naming its key.
    pub fn build(&self) -> Result<Box<dyn Sink>, KafkaError> {
        Ok(Box::new(KafkaSink::new(self)?))
    }

    /// What `check-config` checks: the keys only (building a producer starts its threads).
    pub fn check(&self) -> Result<(), KafkaError> {
        Ok(())
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn drain<'a>(
        &'a mut self,
        store: &'a Store,
        stop: Option<&'a watch::Receiver<bool>>,
    ) -> BoxFuture<'a, Result<u64, SinkError>> {
        Box::pin(async move { Ok(KafkaSink::drain(self, store, stop).await?) })
    }

    fn serve(
        self: Box<Self>,
        _store: Store,
        _head: watch::Receiver<u64>,
        _shutdown: watch::Receiver<bool>,
    ) -> Serving {
        Serving::Drained(self)
    }

    fn send_range<'a>(
        &'a mut self,
        store: &'a Store,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<u64, SinkError>> {
        Box::pin(async move {
            KafkaSink::send_range(self, store, events).await?;
            Ok(events.len() as u64)
        })
    }
}
