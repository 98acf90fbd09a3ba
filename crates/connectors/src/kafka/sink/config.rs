//! The `[kafka.sink]` table.
use crate::kafka::KafkaError;
use serde::Deserialize;

/// The `[kafka.sink]` table: the FRet stream out.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The output topic: key = query id, value = example JSON, null value = retraction. Created with
    /// `cleanup.policy=compact` when missing.
    pub topic: String,
    /// Where records that cannot be decoded go, with the reason in the `fretflow.error` header.
    /// Default: `<topic>.dead-letter`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Partitions of topics the sink creates.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of topics the sink creates (1 for a single broker).
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// How long a producer may batch records before sending (`linger.ms`).
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
}

fn default_partitions() -> i32 {
    3
}

fn default_replication() -> i32 {
    1
}

fn default_linger_ms() -> u64 {
    5
}

impl SinkConfig {
    /// A sink into `topic` with every other field at its default.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            dead_letter_topic: None,
            partitions: default_partitions(),
            replication_factor: default_replication(),
            linger_ms: default_linger_ms(),
        }
    }

    /// The dead-letter topic: the configured one or `<topic>.dead-letter`.
    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic.clone().unwrap_or_else(|| format!("{}.dead-letter", self.topic))
    }

    /// Checks values, naming the field.
    pub fn validate(&self) -> Result<(), KafkaError> {
        let bad = |field: &str, message: &str| {
            Err(KafkaError::Config { field: format!("kafka.sink.{field}"), message: message.into() })
        };
        if self.topic.is_empty() {
            return bad("topic", "is empty");
        }
        if self.partitions < 1 {
            return bad("partitions", "must be at least 1");
        }
        if self.replication_factor < 1 {
            return bad("replication_factor", "must be at least 1");
        }
        if self.dead_letter_topic.as_deref() == Some(self.topic.as_str()) {
            return bad("dead_letter_topic", "must differ from the output topic");
        }
        Ok(())
    }
}
