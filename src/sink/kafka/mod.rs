//! The Kafka sink: every event to one topic, keyed `<source>:<subject>`, in the CloudEvents
//! Kafka protocol binding (binary: `ce_*` headers and `data` as the value; structured: the
//! stored event as the value).
//!
//! Owns the producer, the topic check and the mapping of Kafka's answers to errors that say
//! what to do; reading the topic back for `rollcall verify` is `read.rs`, the claims topic where
//! processes sharing the cluster claim their sources is `claims.rs`. Delivery (batches in
//! flight, the cursor, retries) is `deliver`'s. It must never
//! skip an event: an event Kafka refuses for good (too large, not authorized) stops the sink,
//! naming the event's offset.
//!
//! Ordering per user comes from the key (one partition per key) and from the idempotent
//! producer (`enable.idempotence=true`, `acks=all`), which keeps order within a partition
//! through retries.

mod claims;
mod config;
mod produce;
mod read;
mod table;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaRespErr;
use tracing::{error, info, warn};

pub use config::{KafkaConfig, RESERVED_OPTIONS};

use super::{Delivery, Message, Order, Refusal, Sink};
use crate::encode::{Binding, Encoder, Format};

/// How long a metadata or admin request may take before the brokers count as unreachable.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for in-flight messages when the sink is dropped at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// librdkafka's default is 5 minutes; a sink that fails a batch sooner reports itself
/// degraded sooner and retries from its cursor. Overridable in `[sinks.options]`.
const DEFAULT_MESSAGE_TIMEOUT_MS: &str = "30000";
/// Messages in flight at most: enough to keep batches on the wire while the previous ones are
/// acknowledged, and a bound on memory. Never more than half of librdkafka's queue
/// (`queue.buffering.max.messages`, 100,000 unless set in options): a full queue would refuse.
const MAX_IN_FLIGHT: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("sink '{sink}': librdkafka rejected option `{key}`: {message}. Fix or remove it in [sinks.options]")]
    Option {
        sink: String,
        key: String,
        message: String,
    },
    #[error("sink '{sink}': cannot read a secret option")]
    Secret {
        sink: String,
        #[source]
        source: crate::settings::SecretError,
    },
    #[error("sink '{sink}': cannot run its producing thread: {detail}. The system refused a thread: check the process's limits (ulimit -u, systemd TasksMax) and memory")]
    Thread { sink: String, detail: String },
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
    #[error("sink '{sink}': topic `{topic}` has `cleanup.policy={policy}`, but a table topic must be compacted, or it keeps every change and drops current users with age. Make it so (kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact), or name a new topic with `create_topic = true`; the sink stopped and skipped nothing")]
    NotCompacted {
        sink: String,
        topic: String,
        policy: String,
    },
    #[error("sink '{sink}': cannot read topic `{topic}` back: {detail}. Check `brokers`, [sinks.options] and that the principal may READ the topic")]
    ReadBack {
        sink: String,
        topic: String,
        detail: String,
    },
    #[error("sink '{sink}': cannot use the claims topic `{topic}`: {detail}. The rollcall processes writing to one Kafka cluster claim their sources there (docs/scaling.md, Claims): create it (kafka-topics.sh --create --topic {topic} --partitions 1 --config cleanup.policy=compact) and grant this principal READ, WRITE and DESCRIBE on it; or, if no other rollcall writes to this sink's topic, set `claim_sources = false`")]
    Claims {
        sink: String,
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
}

impl KafkaError {
    /// Retrying cannot help until an operator acts: the sink stops (and says why).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            KafkaError::Option { .. }
                | KafkaError::Secret { .. }
                | KafkaError::Thread { .. }
                | KafkaError::TooLarge { .. }
                | KafkaError::NotAuthorized { .. }
                | KafkaError::NotCompacted { .. }
        )
    }
}

/// The Kafka headers of a message: its attribute headers, then `content-type`.
pub fn headers(message: &Message) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(message.headers.len() + 1);
    for (key, value) in message.headers.iter() {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    headers.insert(Header {
        key: "content-type",
        value: Some(message.content_type.as_str()),
    })
}

pub struct KafkaSink {
    name: String,
    brokers: String,
    topic: String,
    encoder: Encoder,
    create_topic: bool,
    /// Rows of current users to a compacted topic (`table = true`), not events.
    table: bool,
    batch_size: usize,
    client_config: ClientConfig,
    /// Replaced after a fatal error (see [`KafkaSink::recover`]).
    producer: Mutex<FutureProducer>,
    /// The topic was seen on the brokers since the last failure.
    topic_ready: AtomicBool,
    producing: produce::Producing,
}

impl KafkaSink {
    /// Build the producer. Connects to nothing yet (brokers may be down at start), but every
    /// librdkafka option is checked here, so a bad one fails the start naming its key.
    fn new(config: &KafkaConfig) -> Result<KafkaSink, KafkaError> {
        let mut client_config = config.client(
            format!("rollcall-{}", config.name),
            &[("message.timeout.ms", DEFAULT_MESSAGE_TIMEOUT_MS)],
        )?;
        // Set last so no option can weaken them (config validation also rejects them).
        client_config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("allow.auto.create.topics", "false");
        let producer: FutureProducer =
            client_config.create().map_err(|e| config.option_error(e))?;
        Ok(KafkaSink {
            name: config.name.clone(),
            brokers: config.brokers.clone(),
            topic: config.topic.clone(),
            encoder: Encoder {
                format: if config.table {
                    Format::Table
                } else {
                    config.format
                },
                ocsf: config.ocsf_version,
                mode: config.mode,
                binding: Binding::Kafka,
            },
            create_topic: config.create_topic,
            table: config.table,
            batch_size: config.batch_size,
            client_config,
            producer: Mutex::new(producer),
            topic_ready: AtomicBool::new(false),
            producing: produce::Producing::start(&config.name, config.topic.clone()).map_err(
                |e| KafkaError::Thread {
                    sink: config.name.clone(),
                    detail: e.to_string(),
                },
            )?,
        })
    }

    fn producer(&self) -> FutureProducer {
        // A panic elsewhere while holding the lock leaves a usable producer: keep using it.
        self.producer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Check that the topic exists (creating it if allowed) before the first send after a
    /// start or a failure: a missing topic is a clear error now, not a timeout later.
    async fn ensure_topic(&self, offset: u64) -> Result<(), KafkaError> {
        if self.topic_ready.load(Relaxed) {
            return Ok(());
        }
        match self.topic_exists(offset).await? {
            true if self.table => self.check_compacted().await?,
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
        self.topic_ready.store(true, Relaxed);
        Ok(())
    }

    /// `offset` is the first event waiting, named if writing turns out to be forbidden.
    async fn topic_exists(&self, offset: u64) -> Result<bool, KafkaError> {
        let metadata = metadata(self.producer(), &self.topic)
            .await
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
        let topic = self.new_topic();
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

/// The brokers' metadata of `topic`, asked off the async workers: the request blocks on the
/// network.
async fn metadata(
    producer: FutureProducer,
    topic: &str,
) -> Result<rdkafka::metadata::Metadata, RdError> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(Some(&topic), BROKER_TIMEOUT)
    })
    .await
    .expect("a metadata request does not panic")
}

impl Drop for KafkaSink {
    /// Give messages still in flight (a drain abandoned at shutdown) a chance to land. Their
    /// cursor did not move, so they are sent again on the next start either way: flushing only
    /// spares the consumers some duplicates.
    fn drop(&mut self) {
        self.producing.finish();
        let producer = self.producer();
        if producer.in_flight_count() > 0 {
            if let Err(e) = producer.flush(FLUSH_TIMEOUT) {
                warn!(sink = %self.name, error = %e, "messages still in flight at shutdown; they are re-sent on the next start");
            }
        }
    }
}

impl KafkaConfig {
    /// A client of the sink's brokers as `client_id`: `defaults` first, then the sink's
    /// `options` (which may override them), with the `options_env` secrets read.
    fn client(
        &self,
        client_id: String,
        defaults: &[(&str, &str)],
    ) -> Result<ClientConfig, KafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in self.librdkafka_options()? {
            config.set(key, value);
        }
        Ok(config)
    }

    /// What librdkafka said when it refused to create a client of these options.
    fn option_error(&self, e: RdError) -> KafkaError {
        match e {
            RdError::ClientConfig(_, message, key, _value) => KafkaError::Option {
                sink: self.name.clone(),
                key,
                message,
            },
            other => KafkaError::Option {
                sink: self.name.clone(),
                key: "(client)".into(),
                message: other.to_string(),
            },
        }
    }

    /// Build the producer. Connects to nothing yet (brokers may be down at start), but every
    /// librdkafka option is checked here, so a bad one fails the start naming its key.
    pub fn build(&self) -> Result<Box<dyn Sink>, KafkaError> {
        Ok(Box::new(KafkaSink::new(self)?))
    }

    /// What `check-config` checks without building a producer (that starts its threads):
    /// every `options_env` variable is set.
    pub fn check(&self) -> Result<(), KafkaError> {
        self.librdkafka_options().map(drop)
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// Batches back to back: one partition per key and the idempotent producer keep each
    /// user's order, through librdkafka's own retries too.
    fn delivery(&self) -> Delivery {
        let queue = self
            .client_config
            .get("queue.buffering.max.messages")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(100_000)
            .max(1);
        // Half the queue: a delivery report resolves its future before librdkafka frees the
        // message's slot, so up to twice what the engine counts can still be queued.
        let max_in_flight = MAX_IN_FLIGHT.min(queue / 2).max(1);
        Delivery {
            order: Order::Pipelined,
            // Two batches in flight at least: the engine reads and encodes the next one while
            // Kafka acknowledges the one before, instead of one after the other.
            batch: self.batch_size.min(max_in_flight / 2).max(1),
            max_in_flight,
        }
    }

    fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    fn prepare(&self, offset: u64) -> BoxFuture<'_, Result<(), super::SinkError>> {
        Box::pin(async move { Ok(self.ensure_topic(offset).await?) })
    }

    /// The brokers answer, and the topic exists (or may be created) and may be described.
    /// Whether this principal may write it shows only at the first send.
    fn probe(&self) -> BoxFuture<'_, Result<String, super::SinkError>> {
        Box::pin(async move {
            let said = match self.topic_exists(0).await? {
                true => format!("topic `{}` found on {}", self.topic, self.brokers),
                false if self.create_topic => format!(
                    "topic `{}` missing on {}; `create_topic = true` creates it at the first send",
                    self.topic, self.brokers
                ),
                false => {
                    return Err(KafkaError::TopicMissing {
                        sink: self.name.clone(),
                        topic: self.topic.clone(),
                        brokers: self.brokers.clone(),
                    }
                    .into())
                }
            };
            Ok(said)
        })
    }

    fn send(&self, batch: Vec<Arc<Message>>) -> BoxFuture<'_, Result<(), Refusal>> {
        // Queued behind the batches sent before it, so batches keep order.
        let handed = self.producing.hand(self.producer(), batch);
        Box::pin(async move {
            let Ok(handed) = handed.await else {
                return Err(Refusal::new(KafkaError::Thread {
                    sink: self.name.clone(),
                    detail: "it stopped".into(),
                }));
            };
            let batch = &handed.batch;
            let refusal = |i: usize, e| {
                let m = &batch[i];
                Refusal::after(i, self.produce_error(m.offset, m.body.len(), e))
            };
            for (i, delivery) in handed.deliveries.into_iter().enumerate() {
                let error = match delivery.await {
                    Ok(Ok(_)) => continue,
                    Ok(Err((e, _))) => e,
                    Err(_canceled) => RdError::Canceled,
                };
                return Err(refusal(i, error));
            }
            match handed.refused {
                None => Ok(()),
                Some((i, e)) => Err(refusal(i, e)),
            }
        })
    }

    /// The topic is checked again, and an idempotent producer that hit a fatal error (e.g. a
    /// broken sequence), which refuses every later message, is replaced by a fresh one.
    fn recover(&self) {
        self.topic_ready.store(false, Relaxed);
        let mut producer = self.producer.lock().unwrap_or_else(|e| e.into_inner());
        let Some((code, reason)) = producer.client().fatal_error() else {
            return;
        };
        warn!(sink = %self.name, %code, %reason, "producer failed for good; starting a new one");
        match self.client_config.create() {
            Ok(p) => *producer = p,
            // The options were accepted at start, so this is not expected; the old producer
            // keeps failing, and the sink keeps reporting it.
            Err(e) => error!(sink = %self.name, error = %e, "cannot start a new producer"),
        }
    }
}

/// The Kafka sink exports only the metrics every sink does (librdkafka's own statistics are
/// the broker's side).
pub const METRICS: &[(&str, &str)] = &[];

/// A Kafka sink has nothing to reopen on SIGHUP.
pub fn on_hangup() {}
