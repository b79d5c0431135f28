//! The sink's producing thread: it hands each batch to librdkafka, message by message, while
//! the delivery task reads and encodes the next ones on another core.
//!
//! Handing a message over is most of what a Kafka message costs its sender (librdkafka copies
//! the key, the value and every header, each in an allocation of its own), about as much as
//! reading and encoding the event does; on one thread the two add up, on two they overlap (see
//! docs/performance.md, "Kafka sink"). Owns that hand-over only: what Kafka answers is awaited
//! by the batch's future. It must keep the order in which batches were given to it (one
//! thread, one queue), and never wait for Kafka: a message librdkafka refuses to queue ends its
//! batch there.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use rdkafka::error::KafkaError as RdError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio::sync::oneshot;

use super::headers;
use crate::sink::Message;

/// A batch on its way to librdkafka.
struct Job {
    /// The sink's producer when the batch was sent (a fatal error replaces it).
    producer: FutureProducer,
    batch: Vec<Arc<Message>>,
    handed: oneshot::Sender<Handed>,
}

/// A batch as librdkafka took it.
pub(super) struct Handed {
    pub(super) batch: Vec<Arc<Message>>,
    /// One per message queued, in the batch's order.
    pub(super) deliveries: Vec<DeliveryFuture>,
    /// The first message librdkafka would not queue, and why; none after it was queued.
    pub(super) refused: Option<(usize, RdError)>,
}

/// The producing thread of one sink, and the queue of batches it works through.
pub(super) struct Producing {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Producing {
    pub(super) fn start(sink: &str, topic: String) -> std::io::Result<Producing> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name(format!("kafka-{sink}"))
            .spawn(move || {
                for job in queue {
                    // The batch's future may be gone (a pass abandoned at shutdown): the
                    // messages were queued all the same, and librdkafka still delivers them.
                    let _ = job.handed.send(hand_over(&job.producer, &topic, job.batch));
                }
            })?;
        Ok(Producing {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queue `batch` behind the batches given before it; the answer says what librdkafka took.
    /// It never comes if the thread is gone (only a panic in librdkafka's bindings could end it).
    pub(super) fn hand(
        &self,
        producer: FutureProducer,
        batch: Vec<Arc<Message>>,
    ) -> oneshot::Receiver<Handed> {
        let (handed, answer) = oneshot::channel();
        if let Some(jobs) = &self.jobs {
            // A send fails only when the thread is gone; the dropped job then drops `handed`.
            let _ = jobs.send(Job {
                producer,
                batch,
                handed,
            });
        }
        answer
    }

    /// Hand over what was given, then let the thread end.
    pub(super) fn finish(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            // A panic there has already been reported by the panic hook.
            let _ = thread.join();
        }
    }
}

impl Drop for Producing {
    fn drop(&mut self) {
        self.finish();
    }
}

fn hand_over(producer: &FutureProducer, topic: &str, batch: Vec<Arc<Message>>) -> Handed {
    let mut deliveries = Vec::with_capacity(batch.len());
    let mut refused = None;
    for (i, m) in batch.iter().enumerate() {
        let mut record = FutureRecord::to(topic).key(&*m.key).headers(headers(m));
        // A tombstone has no value at all: an empty one would be a row.
        if !m.tombstone {
            record = record.payload(&m.body[..]);
        }
        match producer.send_result(record) {
            Ok(delivery) => deliveries.push(delivery),
            Err((e, _)) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    Handed {
        batch,
        deliveries,
        refused,
    }
}
