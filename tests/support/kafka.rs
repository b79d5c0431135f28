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
    let (consumer, _) = assigned(brokers, topic);
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

/// Every message of `topic` up to each partition's end as it is now: all a sink has had
/// acknowledged, however the reads of its partitions are spread out in time (a table is read
/// whole, not until a pause that a loaded machine can make anywhere).
pub async fn read_to_end(brokers: &str, topic: &str) -> Vec<OwnedMessage> {
    let (consumer, ends) = assigned(brokers, topic);
    let mut read: BTreeMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + super::wait::DEADLINE;
    while read.iter().any(|(p, at)| *at < ends[p]) {
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(m) => {
                let m = m.unwrap().detach();
                read.insert(m.partition(), m.offset() + 1);
                out.push(m);
            }
            Err(_) => panic!("{topic} was not read to its ends {ends:?}: only to {read:?}"),
        }
    }
    out
}

/// A consumer of every partition of `topic` from its start, and each partition's end now.
/// Assigned, not joined to a group, whose rebalance is the slow part of a first read on a
/// loaded machine.
fn assigned(brokers: &str, topic: &str) -> (StreamConsumer, BTreeMap<i32, i64>) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-{}", uuid::Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let timeout = super::wait::DEADLINE;
    let metadata = consumer.fetch_metadata(Some(topic), timeout).unwrap();
    let mut partitions = rdkafka::TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in metadata.topics()[0].partitions() {
        partitions
            .add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
            .unwrap();
        let (_, high) = consumer.fetch_watermarks(topic, p.id(), timeout).unwrap();
        ends.insert(p.id(), high);
    }
    assert!(partitions.count() > 0, "{topic} has partitions");
    consumer.assign(&partitions).unwrap();
    (consumer, ends)
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
