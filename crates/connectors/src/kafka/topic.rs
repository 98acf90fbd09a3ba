//! Whole-topic clients without a consumer group: [`TopicReader`] assigns every partition of a topic (from
//! its beginning or its end) and reports when each partition's backlog has been read; [`TopicWriter`] is
//! an idempotent producer (`acks=all`) into one topic. The trainer reads the FRet topic and publishes
//! checkpoint events with them; `fretflow kafka consume` and `produce` are the same clients on the command
//! line.
use super::admin::partition_count;
use super::{headers, ConnectionConfig, KafkaError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Where a [`TopicReader`] starts in every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest retained record.
    Beginning,
    /// Only records written after the reader started.
    End,
}

/// What one [`TopicReader::poll`] gave.
#[derive(Debug)]
pub enum Polled<'a> {
    /// A record.
    Message(BorrowedMessage<'a>),
    /// A partition was read to its current end (once per partition and time it catches up).
    PartitionEnd(i32),
    /// Nothing within the timeout (transport errors are logged, at most every 10 s, and retried by
    /// librdkafka).
    Nothing,
}

/// Every partition of one topic, assigned to this reader alone (no consumer group; nothing is committed).
pub struct TopicReader {
    consumer: BaseConsumer,
    topic: String,
    partitions: usize,
    at_end: BTreeSet<i32>,
    last_error_log: Option<Instant>,
}

impl std::fmt::Debug for TopicReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicReader").field("topic", &self.topic).field("partitions", &self.partitions).finish()
    }
}

impl TopicReader {
    /// Assigns every partition of `topic` at `start`, waiting up to `wait` for the topic to exist (it may be
    /// created by a pipeline that starts later). `role` names the client (`train`, `consume`).
    pub fn open(
        connection: &ConnectionConfig,
        topic: &str,
        start: StartAt,
        role: &str,
        wait: Duration,
    ) -> Result<Self, KafkaError> {
        connection.validate()?;
        let partitions = wait_for_topic(connection, topic, wait)?;
        let mut client = connection.client_config();
        // librdkafka wants a group id even for assigned partitions; nothing is ever committed under it.
        client
            .set("group.id", format!("fretflow-{role}-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("client.id", format!("{}-{role}", connection.client_id));
        let consumer: BaseConsumer =
            client.create().map_err(|e| KafkaError::client(format!("creating the consumer for topic '{topic}'"), e))?;
        {
            let offset = match start {
                StartAt::Beginning => Offset::Beginning,
                StartAt::End => Offset::End,
            };
            let mut list = TopicPartitionList::new();
            for p in 0..partitions as i32 {
                list.add_partition_offset(topic, p, offset)
                    .map_err(|e| KafkaError::client(format!("assigning partition {p} of '{topic}'"), e))?;
            }
            consumer
                .assign(&list)
                .map_err(|e| KafkaError::client(format!("assigning the partitions of '{topic}'"), e))?;
            // `list` is dropped here, before the consumer can be (a librdkafka pitfall, see the source module).
        }
        Ok(Self { consumer, topic: topic.to_owned(), partitions, at_end: BTreeSet::new(), last_error_log: None })
    }

    /// The topic read.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Number of partitions assigned.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// Partitions read to their end at least once.
    pub fn partitions_at_end(&self) -> usize {
        self.at_end.len()
    }

    /// Whether every partition has been read to its end at least once (the backlog at start).
    pub fn caught_up(&self) -> bool {
        self.at_end.len() >= self.partitions
    }

    /// Waits up to `timeout` for the next record or partition end.
    pub fn poll(&mut self, timeout: Duration) -> Polled<'_> {
        match self.consumer.poll(timeout) {
            Some(Ok(message)) => Polled::Message(message),
            Some(Err(RdKafkaError::PartitionEOF(partition))) => {
                self.at_end.insert(partition);
                Polled::PartitionEnd(partition)
            }
            Some(Err(error)) => {
                if self.last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(topic = %self.topic, error = %error, "Kafka consumer error (librdkafka retries).");
                    self.last_error_log = Some(Instant::now());
                }
                Polled::Nothing
            }
            None => Polled::Nothing,
        }
    }
}

/// Partitions of `topic`, waiting up to `wait` for it to exist.
fn wait_for_topic(connection: &ConnectionConfig, topic: &str, wait: Duration) -> Result<usize, KafkaError> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(n) = partition_count(connection, topic)? {
            return Ok(n);
        }
        if Instant::now() >= deadline {
            let message = match wait.as_secs() {
                0 => "does not exist".to_owned(),
                s => format!("does not exist (waited {s} s)"),
            };
            return Err(KafkaError::Topic { topic: topic.into(), message });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// An idempotent producer (`acks=all`) into one topic; every record carries the `fretflow.producer` header.
pub struct TopicWriter {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for TopicWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicWriter").field("topic", &self.topic).finish()
    }
}

impl TopicWriter {
    /// A producer into `topic` (which must exist; see [`super::admin::ensure_topic`]). `role` names the
    /// client; `bulk` batches and compresses for throughput (a corpus load) rather than latency.
    pub fn open(connection: &ConnectionConfig, topic: &str, role: &str, bulk: bool) -> Result<Self, KafkaError> {
        connection.validate()?;
        let mut client = connection.client_config();
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("client.id", format!("{}-{role}", connection.client_id));
        if bulk {
            client.set("linger.ms", "20").set("compression.type", "lz4");
        } else {
            // A single event should be acknowledged within a minute, or reported as failed.
            client.set("message.timeout.ms", "60000");
        }
        let producer: FutureProducer =
            client.create().map_err(|e| KafkaError::client(format!("creating the producer for topic '{topic}'"), e))?;
        Ok(Self { producer, topic: topic.to_owned() })
    }

    /// The topic written.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Queues one record (`value` `None`: a tombstone) for `partition` (`None`: by key) and returns its
    /// delivery, to be awaited with [`TopicWriter::delivered`].
    pub fn send(&self, key: &str, value: Option<&[u8]>, partition: Option<i32>) -> Result<DeliveryFuture, KafkaError> {
        let producer_header =
            Header { key: headers::PRODUCER, value: Some(concat!("fretflow/", env!("CARGO_PKG_VERSION"))) };
        let mut record =
            FutureRecord::<str, [u8]>::to(&self.topic).key(key).headers(OwnedHeaders::new().insert(producer_header));
        if let Some(value) = value {
            record = record.payload(value);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        self.producer
            .send_result(record)
            .map_err(|(e, _)| KafkaError::client(format!("sending '{key}' to '{}'", self.topic), e))
    }

    /// Waits for one record's acknowledgement (`what` names it in the error).
    pub fn delivered(&self, delivery: DeliveryFuture, what: &str) -> Result<(), KafkaError> {
        let failed = |message: String| KafkaError::Delivery { topic: self.topic.clone(), failed: 1, message };
        match futures::executor::block_on(delivery) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) => Err(failed(format!("{what}: {error}"))),
            Err(_) => Err(failed(format!("{what}: the producer was dropped before delivery"))),
        }
    }

    /// Sends one record and waits for its acknowledgement.
    pub fn send_and_wait(&self, key: &str, value: Option<&[u8]>, partition: Option<i32>) -> Result<(), KafkaError> {
        let delivery = self.send(key, value, partition)?;
        self.delivered(delivery, &format!("record '{key}'"))
    }

    /// Waits up to `timeout` for every queued record.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer
            .flush(timeout)
            .map_err(|e| KafkaError::client(format!("flushing the producer of '{}'", self.topic), e))
    }
}
