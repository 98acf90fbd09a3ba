//! Kafka source and sink (rdkafka, bundled librdkafka).
//!
//! - [`source::KafkaSource`]: passages in. A consumer on its own thread reads a topic (key = passage id,
//!   JSON value `{id, title?, text}`, null value = delete) into a bounded channel; the pipeline drains it
//!   with [`source::KafkaSource::poll_batch`], tagging the records with an epoch (its timely time), and
//!   calls [`source::KafkaSource::commit_through`] once every output derived from those epochs has been
//!   acknowledged by the sink. A crash therefore replays uncommitted records and loses none.
//! - [`sink::KafkaSink`]: the FRet stream out. An idempotent producer (`acks=all`) writes upserts
//!   (key = query id, value = example JSON) and tombstones (retractions) to a compacted topic it creates
//!   when missing, and undecodable input records to a dead-letter topic with the reason in a header.
//! - [`admin`]: topic creation and inspection; [`config`]: the connection settings (`[kafka]`, environment).
//!
//! The timely operators that drive these clients (the sink holding each epoch until the broker acknowledged
//! it, so that offsets are committed only then) belong to the pipeline, which uses this module.
//!
//! Delivery is at-least-once: after a crash the records since the last commit are read again and their
//! outputs written again; on a compacted topic keyed by query id that converges to the same state.
pub mod admin;
pub mod config;
pub mod replay;
pub mod sink;
pub mod source;
pub mod topic;

pub use config::ConnectionConfig;
pub use sink::{KafkaSink, SinkConfig, SinkRecord};
pub use source::{KafkaRecord, KafkaSource, PartitionProgress, SourceConfig, Undecodable};

/// Header names written by the sink.
pub mod headers {
    /// Dead letters: the stable reason code (`not_json`, `missing_id`, `empty_text`, `oversize`, ...).
    pub const ERROR: &str = "fretflow.error";
    /// Dead letters: the human-readable reason, naming the passage or field where there is one.
    pub const ERROR_MESSAGE: &str = "fretflow.error.message";
    /// Topic, partition and offset of the input record an output or dead letter comes from
    /// (`topic/partition/offset`).
    pub const SOURCE: &str = "fretflow.source";
    /// The fretflow version that wrote the record.
    pub const PRODUCER: &str = "fretflow.producer";
}

/// Errors of the Kafka connectors; each names the topic, field or setting involved.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A setting is missing or invalid.
    #[error("kafka config `{field}`: {message}")]
    Config {
        /// The setting (e.g. `kafka.sink.partitions`, `FRETFLOW_KAFKA_SECURITY_PROTOCOL`, a file path).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// librdkafka refused an operation.
    #[error("kafka {operation}: {source}")]
    Client {
        /// What was being done (e.g. `creating the consumer for topic 'passages'`).
        operation: String,
        /// The cause.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A topic could not be created or inspected.
    #[error("kafka topic '{topic}': {message}")]
    Topic {
        /// The topic.
        topic: String,
        /// What failed.
        message: String,
    },
    /// The broker did not acknowledge records (after librdkafka's own retries).
    #[error("kafka delivery to '{topic}' failed for {failed} record(s): {message}")]
    Delivery {
        /// The topic of the first failed record.
        topic: String,
        /// How many records failed since the last check.
        failed: usize,
        /// The first error.
        message: String,
    },
    /// The source's consumer thread is gone (it logged why).
    #[error("kafka source for topic '{topic}' stopped: {message}")]
    SourceStopped {
        /// The source topic.
        topic: String,
        /// Why.
        message: String,
    },
    /// An operation did not finish in time.
    #[error("kafka {operation}: timed out after {seconds} s")]
    Timeout {
        /// What was being done.
        operation: String,
        /// The limit.
        seconds: u64,
    },
}

impl KafkaError {
    /// Wraps an rdkafka error with what was being done.
    pub fn client(operation: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Self::Client { operation: operation.into(), source }
    }
}
