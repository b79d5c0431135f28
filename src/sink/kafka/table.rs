//! The Kafka sink as a table of current users (`table = true`): its topic compacted (asked for
//! when it is created, checked when it exists), and `rollcall table rebuild` publishing every
//! current user through it.
//!
//! Owns the topic's `cleanup.policy` and the rebuild's rows on the wire. What a row holds is
//! `encode::table`'s; which users, and redacted how, is the rebuild's (`crate::table`). It must
//! never let a table topic that is not compacted pass unsaid.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use futures::future::BoxFuture;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tokio::sync::mpsc;
use tracing::warn;

use super::{KafkaError, KafkaSink, BROKER_TIMEOUT};
use crate::encode::table::CONTENT_TYPE;
use crate::sink::{Row, SinkError, Table};

/// The topic config a table needs: the last message per key is kept, the rest compacted away.
pub const COMPACT: (&str, &str) = ("cleanup.policy", "compact");

/// A table topic whose policy could not be read was said so once per process.
static UNCHECKED_SAID: AtomicBool = AtomicBool::new(false);

impl KafkaSink {
    /// The topic as `create_topic` asks for it: the broker's default partition count and
    /// replication factor (-1), compacted for a table.
    pub(super) fn new_topic(&self) -> NewTopic<'_> {
        let topic = NewTopic::new(&self.topic, -1, TopicReplication::Fixed(-1));
        if self.table {
            topic.set(COMPACT.0, COMPACT.1)
        } else {
            topic
        }
    }

    /// A table's existing topic must be compacted. A broker that cannot describe its topics'
    /// configs (or a principal that may not) leaves it unchecked, said once in the log.
    pub(super) async fn check_compacted(&self) -> Result<(), KafkaError> {
        let unchecked = |detail: String| {
            if !UNCHECKED_SAID.swap(true, Relaxed) {
                warn!(sink = %self.name, topic = %self.topic, %detail, "cannot check that the table topic is compacted (cleanup.policy=compact); make sure it is");
            }
            Ok(())
        };
        let admin: AdminClient<DefaultClientContext> = match self.client_config.create() {
            Ok(admin) => admin,
            Err(e) => return unchecked(e.to_string()),
        };
        let options = AdminOptions::new().request_timeout(Some(BROKER_TIMEOUT));
        let described = admin
            .describe_configs([&ResourceSpecifier::Topic(&self.topic)], &options)
            .await;
        let resource = match described.map(|mut r| r.pop()) {
            Ok(Some(Ok(resource))) => resource,
            Ok(Some(Err(code))) => return unchecked(code.to_string()),
            Ok(None) => return unchecked("no answer for the topic".into()),
            Err(e) => return unchecked(e.to_string()),
        };
        let policy = resource
            .get(COMPACT.0)
            .and_then(|entry| entry.value.clone())
            .unwrap_or_else(|| "delete".into());
        if policy.split(',').any(|p| p.trim() == COMPACT.1) {
            return Ok(());
        }
        Err(KafkaError::NotCompacted {
            sink: self.name.clone(),
            topic: self.topic.clone(),
            policy,
        })
    }
}

/// `rollcall table rebuild`: every current user as a row, to the compacted topic.
impl Table for KafkaSink {
    fn publish(&self, mut rows: mpsc::Receiver<Row>) -> BoxFuture<'_, Result<u64, SinkError>> {
        Box::pin(async move {
            self.ensure_topic(0).await?;
            let producer = self.producer();
            let mut deliveries = Vec::new();
            let mut sent = 0;
            while let Some(row) = rows.recv().await {
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "ce_source",
                        value: Some(row.source.as_str()),
                    })
                    .insert(Header {
                        key: "ce_subject",
                        value: Some(row.subject.as_str()),
                    })
                    .insert(Header {
                        key: "content-type",
                        value: Some(CONTENT_TYPE),
                    });
                let record = FutureRecord::to(&self.topic)
                    .key(&row.key)
                    .payload(&row.value)
                    .headers(headers);
                match producer.send_result(record) {
                    Ok(delivery) => deliveries.push(delivery),
                    Err((e, _)) => return Err(self.produce_error(0, row.value.len(), e).into()),
                }
                sent += 1;
                // Wait for what is in flight before the queue fills.
                if deliveries.len() >= super::MAX_IN_FLIGHT / 2 {
                    self.acknowledged(&mut deliveries).await?;
                }
            }
            self.acknowledged(&mut deliveries).await?;
            Ok(sent)
        })
    }
}

impl KafkaSink {
    async fn acknowledged(
        &self,
        deliveries: &mut Vec<rdkafka::producer::DeliveryFuture>,
    ) -> Result<(), KafkaError> {
        for delivery in deliveries.drain(..) {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(self.produce_error(0, 0, e)),
                Err(_) => {
                    return Err(self.produce_error(0, 0, rdkafka::error::KafkaError::Canceled))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(table: bool) -> KafkaSink {
        let raw = format!(
            "{}\n[[sinks]]\nkind = \"kafka\"\nname = \"people\"\nbrokers = \"127.0.0.1:9\"\ntopic = \"people\"\ntable = {table}\ncreate_topic = true\n",
            crate::config::tests::EXAMPLE
        );
        let config = crate::config::tests::parse(&raw).unwrap();
        let Some(crate::sink::SinkConfig::Kafka(k)) = config.sinks.last() else {
            panic!("the last sink is kafka")
        };
        KafkaSink::new(k).unwrap()
    }

    #[test]
    fn a_table_topic_is_created_compacted_and_an_event_topic_as_the_broker_likes() {
        let table = sink(true);
        assert_eq!(table.new_topic().config, [COMPACT]);
        assert!(sink(false).new_topic().config.is_empty());
    }
}
