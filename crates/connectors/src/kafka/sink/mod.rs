//! The Kafka sink: upserts and tombstones keyed by query id into a compacted topic, undecodable input
//! into a dead-letter topic, through one idempotent producer (`enable.idempotence=true`, `acks=all`:
//! librdkafka's retries never duplicate or reorder records within a partition).
//!
//! Every record is sent under an epoch; [`KafkaSink::unacked_through`] says how many records of epochs
//! `<= e` the broker has not yet acknowledged. Offsets of those epochs may be committed at the source only
//! when that count is zero and [`KafkaSink::check`] reports no failed delivery.
pub mod config;
mod delivery;

pub use config::SinkConfig;

use super::admin::{ensure_topic, TopicKind};
use super::headers;
use super::source::{KafkaRecord, Undecodable};
use super::{ConnectionConfig, KafkaError};
use delivery::{DeliveryTracker, SinkContext};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which topic a [`SinkRecord`] goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Destination {
    /// The output topic.
    Output,
    /// The dead-letter topic.
    DeadLetter,
}

/// One record for the sink.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SinkRecord {
    /// Output or dead-letter topic.
    pub destination: Destination,
    /// The key (query id for outputs; the original key bytes for dead letters).
    pub key: Option<Vec<u8>>,
    /// The value; `None` is a tombstone (a retraction of `key`).
    pub value: Option<Vec<u8>>,
    /// Headers (provenance, error reasons).
    pub headers: Vec<(String, String)>,
}

impl SinkRecord {
    /// An upsert of `key` in the output topic with `value` as JSON.
    pub fn upsert<T: Serialize + ?Sized>(key: &str, value: &T) -> Self {
        let value = serde_json::to_vec(value).expect("records serialize to JSON. This is a bug.");
        Self {
            destination: Destination::Output,
            key: Some(key.as_bytes().to_vec()),
            value: Some(value),
            headers: Vec::new(),
        }
    }

    /// A tombstone for `key` in the output topic: the record it keyed is retracted.
    pub fn tombstone(key: &str) -> Self {
        Self { destination: Destination::Output, key: Some(key.as_bytes().to_vec()), value: None, headers: Vec::new() }
    }

    /// A dead letter for an input record that could not be decoded: its original key and value, with the
    /// reason (`fretflow.error`, `fretflow.error.message`) and origin (`fretflow.source`) in headers.
    pub fn dead_letter(source_topic: &str, record: &KafkaRecord, dead: &Undecodable) -> Self {
        Self {
            destination: Destination::DeadLetter,
            key: dead.key.clone(),
            value: dead.value.clone(),
            headers: vec![
                (headers::ERROR.to_owned(), dead.error.reason().to_owned()),
                (headers::ERROR_MESSAGE.to_owned(), dead.error.to_string()),
            ],
        }
        .with_source(source_topic, record.partition, record.offset)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds the `fretflow.source` provenance header (`topic/partition/offset`).
    pub fn with_source(self, topic: &str, partition: i32, offset: i64) -> Self {
        self.with_header(headers::SOURCE, format!("{topic}/{partition}/{offset}"))
    }

    /// The key as text, for logs (lossy for non-UTF-8 keys).
    pub fn key_text(&self) -> String {
        self.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default()
    }
}

/// An idempotent producer into the output and dead-letter topics, tracking acknowledgements per epoch.
pub struct KafkaSink {
    producer: ThreadedProducer<SinkContext>,
    tracker: Arc<DeliveryTracker>,
    topic: String,
    dead_letter_topic: String,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .finish()
    }
}

impl KafkaSink {
    /// Creates the producer, and the output (compacted) and dead-letter topics when missing.
    pub fn start(connection: &ConnectionConfig, config: &SinkConfig) -> Result<Self, KafkaError> {
        connection.validate()?;
        config.validate()?;
        let dead_letter_topic = config.dead_letter_topic();
        ensure_topic(connection, &config.topic, config.partitions, config.replication_factor, TopicKind::Compacted)?;
        ensure_topic(connection, &dead_letter_topic, 1, config.replication_factor, TopicKind::Log)?;
        let tracker = Arc::new(DeliveryTracker::default());
        let mut client = connection.client_config();
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", config.linger_ms.to_string())
            .set("compression.type", "lz4")
            .set("client.id", format!("{}-sink", connection.client_id));
        let producer: ThreadedProducer<SinkContext> = client
            .create_with_context(SinkContext { tracker: Arc::clone(&tracker) })
            .map_err(|e| KafkaError::client(format!("creating the producer for topic '{}'", config.topic), e))?;
        tracing::info!(topic = %config.topic, dead_letter_topic = %dead_letter_topic, "Kafka sink started.");
        Ok(Self { producer, tracker, topic: config.topic.clone(), dead_letter_topic })
    }

    /// The output topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }

    /// Queues `record` under `epoch`. Waits (up to 60 s) while librdkafka's queue is full.
    pub fn send(&self, epoch: u64, record: &SinkRecord) -> Result<(), KafkaError> {
        let topic = match record.destination {
            Destination::Output => &self.topic,
            Destination::DeadLetter => &self.dead_letter_topic,
        };
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 1)
            .insert(Header { key: headers::PRODUCER, value: Some(concat!("fretflow/", env!("CARGO_PKG_VERSION"))) });
        for (name, value) in &record.headers {
            headers = headers.insert(Header { key: name, value: Some(value) });
        }
        let mut base: BaseRecord<'_, [u8], [u8], Box<u64>> =
            BaseRecord::with_opaque_to(topic, Box::new(epoch)).headers(headers);
        if let Some(key) = &record.key {
            base = base.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            base = base.payload(value.as_slice());
        }
        self.tracker.sent(epoch);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                    if Instant::now() < deadline =>
                {
                    base = returned;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, _)) => {
                    // The record stays counted as in flight: its epoch must never look acknowledged.
                    self.tracker.failed(topic, error.to_string());
                    return Err(KafkaError::client(format!("sending key '{}' to '{topic}'", record.key_text()), error));
                }
            }
        }
    }

    /// Records of epochs `<= epoch` sent but not yet acknowledged by the broker.
    pub fn unacked_through(&self, epoch: u64) -> usize {
        self.tracker.unacked_through(epoch)
    }

    /// The first delivery failure since the sink started, if any. After one, no later epoch may be
    /// committed: the pipeline should stop and restart from its committed offsets.
    pub fn check(&self) -> Result<(), KafkaError> {
        self.tracker.check()
    }

    /// Calls `notify` (from librdkafka's thread) after each acknowledgement or failure; used to wake the
    /// timely operator that waits for acknowledgements.
    pub fn on_delivery(&self, notify: impl Fn() + Send + Sync + 'static) {
        self.tracker.set_notify(Box::new(notify));
    }

    /// Waits until every record sent so far is acknowledged, then reports any failure.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout).map_err(|e| match e {
            RdKafkaError::Flush(RDKafkaErrorCode::OperationTimedOut) => {
                KafkaError::Timeout { operation: format!("flushing to '{}'", self.topic), seconds: timeout.as_secs() }
            }
            other => KafkaError::client(format!("flushing to '{}'", self.topic), other),
        })?;
        self.check()
    }
}
