//! Reading a Kafka sink's topic back, for `rollcall verify --topic`: every partition from its
//! first message to its end as the read begins, merged into log order by each event's
//! `sequence`, with the sink's own brokers and options (security, SASL). Where shards share the
//! topic, only one shard's events are read (those whose `source` names it), before merging:
//! each shard's store has a log, offsets and a hash chain of its own.
//!
//! Owns the consumer side: a consumer of its own (no group is joined, no offset committed), one
//! queue per partition, and which message comes next. Memory holds one message per partition
//! (and librdkafka's bounded prefetch): a partition is read only when its message is the next
//! in log order. It never writes to the topic.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::config::KafkaConfig;
use super::KafkaError;
use crate::chain::attested::{self, Form};
use crate::chain::record::{read, Delivered, Place, Record, Unreadable, Wire};
use crate::encode::ocsf::Version;
use crate::sink::{ReadBack, SinkError};

/// How long a partition may stay silent before its end, before the read counts as failed.
const SILENCE: Duration = Duration::from_secs(60);
/// librdkafka's prefetch per partition, at most: a bound on memory while other partitions are
/// read.
const PREFETCH_KBYTES: &str = "4096";

type Queue = rdkafka::consumer::base_consumer::PartitionQueue<Reading>;

/// The consumer's context. librdkafka reports trouble as it happens, transient trouble too: a
/// broker slow to answer on a loaded machine, or the coordinator of the group id it requires
/// (which these reads never join, so a principal without group rights is refused there). A
/// one-off read ([`Reading::quiet`], `verify --topic`) that succeeds needed none of it, so none
/// is printed; one that fails names the last ([`Reading::last_said`]). A long-lived one
/// ([`Reading::loud`], the claims follower of `run`) logs it as it comes, as every other
/// client does, and names the last too. Each partition's end, reported here too, is no trouble.
#[derive(Default)]
pub(super) struct Reading {
    loud: bool,
    trouble: Mutex<Option<String>>,
}

impl Reading {
    pub(super) fn quiet() -> Reading {
        Reading::default()
    }

    pub(super) fn loud() -> Reading {
        Reading {
            loud: true,
            ..Reading::default()
        }
    }

    fn note(&self, what: String) {
        if self.loud {
            tracing::warn!("librdkafka: {what}");
        } else {
            tracing::debug!("librdkafka: {what}");
        }
        *self.trouble.lock().unwrap_or_else(|e| e.into_inner()) = Some(what);
    }

    /// What librdkafka last said went wrong, as the end of a failed read's detail.
    pub(super) fn last_said(&self) -> String {
        match &*self.trouble.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(what) => format!(" (librdkafka last said: {what})"),
            None => String::new(),
        }
    }
}

impl ClientContext for Reading {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => self.note(format!("{facility}: {message}")),
            _ => tracing::debug!("librdkafka: {facility}: {message}"),
        }
    }

    fn error(&self, error: RdError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            self.note(format!("{error}: {reason}"));
        }
    }
}

impl ConsumerContext for Reading {}

/// One partition: its queue and the message read from it but not handed on yet.
struct Partition {
    id: i32,
    queue: Queue,
    next: Option<(u64, Place, Result<Record, Unreadable>)>,
    done: bool,
}

struct Topic {
    sink: String,
    topic: String,
    /// The shard whose events are read; the others' are passed over.
    shard: Option<String>,
    consumer: Arc<BaseConsumer<Reading>>,
    partitions: Vec<Partition>,
}

impl KafkaConfig {
    /// Every event of the topic that `shard` wrote (see [`crate::event::shard_of`]), in log
    /// order.
    pub(super) fn read_topic(&self, shard: Option<&str>) -> Result<ReadBack, SinkError> {
        let fail = |detail: String| KafkaError::ReadBack {
            sink: self.name.clone(),
            topic: self.topic.clone(),
            detail,
        };
        let group = format!("rollcall-verify-{}", uuid::Uuid::now_v7());
        let mut config = self.client(
            format!("rollcall-verify-{}", self.name),
            &[("group.id", &group)],
        )?;
        config
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("queued.max.messages.kbytes", PREFETCH_KBYTES);
        let consumer: Arc<BaseConsumer<Reading>> = Arc::new(
            config
                .create_with_context(Reading::quiet())
                .map_err(|e| fail(e.to_string()))?,
        );
        let metadata = consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
            .map_err(|e| fail(format!("{e}{}", consumer.context().last_said())))?;
        let ids: Vec<i32> = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        if ids.is_empty() {
            return Err(fail("the topic does not exist, or has no partition".into()).into());
        }
        let mut assignment = TopicPartitionList::new();
        for id in &ids {
            assignment
                .add_partition_offset(&self.topic, *id, Offset::Beginning)
                .map_err(|e| fail(e.to_string()))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| fail(e.to_string()))?;
        let partitions = ids
            .into_iter()
            .map(|id| {
                let queue = consumer
                    .split_partition_queue(&self.topic, id)
                    .ok_or_else(|| fail(format!("no queue for partition {id}")))?;
                Ok(Partition {
                    id,
                    queue,
                    next: None,
                    done: false,
                })
            })
            .collect::<Result<Vec<_>, KafkaError>>()?;
        let mut topic = Topic {
            sink: self.name.clone(),
            topic: self.topic.clone(),
            shard: shard.map(str::to_owned),
            consumer,
            partitions,
        };
        for i in 0..topic.partitions.len() {
            topic.refill(i)?;
        }
        Ok(Box::new(std::iter::from_fn(move || topic.next_event())))
    }
}

impl Topic {
    /// Read partition `i`'s next message, unless it has one waiting or has ended.
    fn fill(&mut self, i: usize) -> Result<(), RdError> {
        let consumer = self.consumer.clone();
        let p = &mut self.partitions[i];
        if p.next.is_some() || p.done {
            return Ok(());
        }
        let silent_since = Instant::now();
        loop {
            // The consumer's own queue serves librdkafka's callbacks; messages come per partition.
            let _ = consumer.poll(Duration::ZERO);
            match p.queue.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let (place, record) = message(&m);
                    let theirs = |r: &Record| {
                        r.source.as_deref().and_then(crate::event::shard_of)
                            != self.shard.as_deref()
                    };
                    if record.as_ref().is_ok_and(theirs) {
                        continue;
                    }
                    let key = record.as_ref().map_or(0, |r| r.offset);
                    p.next = Some((key, place, record));
                    return Ok(());
                }
                Some(Err(RdError::PartitionEOF(_))) => {
                    p.done = true;
                    return Ok(());
                }
                Some(Err(e)) => return Err(e),
                None if silent_since.elapsed() > SILENCE => {
                    return Err(RdError::MessageConsumption(
                        RDKafkaErrorCode::RequestTimedOut,
                    ))
                }
                None => {}
            }
        }
    }

    /// [`Topic::fill`], its failure naming the partition and what librdkafka last said.
    fn refill(&mut self, i: usize) -> Result<(), KafkaError> {
        self.fill(i).map_err(|e| KafkaError::ReadBack {
            sink: self.sink.clone(),
            topic: self.topic.clone(),
            detail: format!(
                "partition {}: {e}{}",
                self.partitions[i].id,
                self.consumer.context().last_said()
            ),
        })
    }

    /// The waiting message of lowest `sequence` across partitions (an unreadable one first).
    fn next_event(&mut self) -> Option<Result<Delivered, SinkError>> {
        let i = self
            .partitions
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.next.as_ref().map(|(key, _, _)| (*key, i)))
            .min()?
            .1;
        let (_, place, record) = self.partitions[i].next.take()?;
        if let Err(e) = self.refill(i) {
            return Some(Err(e.into()));
        }
        Some(Ok((place, record)))
    }
}

/// A message as the verifier reads it: binary mode when it has `ce_specversion`, else the
/// value is the whole event, a CloudEvent or (from a sink with `format = "ocsf"`) an OCSF
/// record.
fn message(m: &BorrowedMessage<'_>) -> Delivered {
    let place = Place::Message {
        partition: m.partition(),
        offset: m.offset(),
    };
    let payload = m.payload().unwrap_or_default();
    let mut attributes = Vec::new();
    let mut binary = false;
    if let Some(headers) = m.headers() {
        for h in headers.iter() {
            let Some(value) = h.value.and_then(|v| std::str::from_utf8(v).ok()) else {
                continue;
            };
            if let Some(name) = h.key.strip_prefix("ce_") {
                binary |= name == "specversion";
                attributes.push((name, value));
            } else if h.key == "content-type" {
                attributes.push(("datacontenttype", value));
            }
        }
    }
    let record = if binary {
        read(Wire::Binary {
            attributes,
            data: payload,
        })
    } else {
        match attested::form(payload) {
            Ok(Form::CloudEvent) => read(Wire::Structured(payload)),
            // An OCSF sink's record: alone, its attestation is its link (1.8.0 has none).
            Ok(Form::Ocsf { version, record }) => Version::declared(&version)
                .map_err(Unreadable)
                .and_then(|v| attested::read(record, v == Version::V1_8_0)),
            Err(e) => Err(e),
        }
    };
    (place, record)
}
