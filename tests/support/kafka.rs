//! rdkafka's in-process `MockCluster`, which speaks the real Kafka wire protocol on localhost,
//! and a consumer that reads back what a sink sent to it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::ClientConfig;

pub type Cluster = MockCluster<'static, DefaultProducerContext>;

/// One broker holding `topic` with `partitions` partitions, and the claims topic a Kafka sink
/// of `topic` keeps by default (docs/scaling.md, Claims): the mock broker answers no request
/// to create a topic, so rollcall could not create it there.
pub fn cluster(topic: &str, partitions: i32) -> Cluster {
    let c = MockCluster::new(1).unwrap();
    c.create_topic(topic, partitions, 1).unwrap();
    c.create_topic(&format!("{topic}.claims"), 1, 1).unwrap();
    c
}

/// Reads every partition of `topic` from its start: at least `n` messages, then
/// whatever else arrives before the topic is quiet for `quiet`. Fewer than `n` within
/// [`super::wait::DEADLINE`] fails the test.
pub async fn consume(brokers: &str, topic: &str, n: usize, quiet: Duration) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-{}", uuid::Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    // Every partition assigned from its start: no group to join, whose rebalance is the slow
    // part of a first read on a loaded machine.
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(60))
        .unwrap();
    let mut partitions = rdkafka::TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        partitions
            .add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
            .unwrap();
    }
    assert!(partitions.count() > 0, "{topic} has partitions");
    consumer.assign(&partitions).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + super::wait::DEADLINE;
    loop {
        let wait = if out.len() < n {
            deadline.saturating_duration_since(Instant::now())
        } else {
            quiet
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(m) => out.push(m.unwrap().detach()),
            Err(_) if out.len() >= n => return out,
            Err(_) => panic!("only {} of {n} messages arrived", out.len()),
        }
    }
}

/// A message's headers by name, their values as sent.
pub fn headers(m: &OwnedMessage) -> BTreeMap<String, Vec<u8>> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap().to_vec()))
                .collect()
        })
        .unwrap_or_default()
}
