//! The `[kafka.source]` table.
use crate::kafka::KafkaError;
use serde::Deserialize;

/// Where a source starts in a partition that its consumer group has no committed offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest retained record (a new pipeline reads the whole topic).
    #[default]
    Earliest,
    /// Only records produced after the source starts.
    Latest,
}

/// How partitions are spread over the workers of all processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioning {
    /// Worker `index` of `peers` reads exactly the partitions `p` with `p % peers == index`, fixed for the
    /// run; offsets are committed under the group id. The default: a timely cluster has a fixed set of
    /// workers (it stops as a whole when a process dies), so a fixed assignment loses nothing and every
    /// worker has its share from the first record. Partitions added while running are not picked up.
    #[default]
    Static,
    /// Every worker's consumer joins the consumer group and the group coordinator balances partitions
    /// (and rebalances when members join or leave). Workers that join late may find the work done, and
    /// a rebalance replays uncommitted records on their new owner (at-least-once, nothing lost).
    Group,
}

/// The `[kafka.source]` table: passages in.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The topic of passages: key = passage id, value = JSON `{id, title?, text}`, null value = delete.
    pub topic: String,
    /// Consumer group whose committed offsets say where a restarted pipeline resumes.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Where to start without a committed offset.
    #[serde(default)]
    pub start_from: StartFrom,
    /// How partitions are spread over workers.
    #[serde(default)]
    pub partitioning: Partitioning,
    /// Larger values go to the dead-letter topic as `oversize` (bytes).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Records buffered between the consumer thread and the pipeline; the consumer pauses its
    /// partitions when the buffer is full (backpressure) and keeps its group membership alive.
    #[serde(default = "default_buffer")]
    pub buffer_records: usize,
    /// Most records of one epoch per worker (a FRet run's epochs are otherwise ticks of 20 ms): a backlog
    /// read at once becomes epochs that finish, and are committed, one after another. Smaller commits
    /// sooner; larger carries less per-epoch work (with an instant LLM, 64 ran at a fifth of 1,024's rate).
    #[serde(default = "default_epoch_records")]
    pub epoch_records: usize,
}

fn default_group() -> String {
    "fretflow".to_owned()
}

fn default_max_message_bytes() -> usize {
    256 * 1024
}

fn default_buffer() -> usize {
    10_000
}

fn default_epoch_records() -> usize {
    1024
}

impl SourceConfig {
    /// A source of `topic` with every other field at its default.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            group_id: default_group(),
            start_from: StartFrom::default(),
            partitioning: Partitioning::default(),
            max_message_bytes: default_max_message_bytes(),
            buffer_records: default_buffer(),
            epoch_records: default_epoch_records(),
        }
    }

    /// Checks values, naming the field.
    pub fn validate(&self) -> Result<(), KafkaError> {
        let bad = |field: &str, message: &str| {
            Err(KafkaError::Config { field: format!("kafka.source.{field}"), message: message.into() })
        };
        if self.topic.is_empty() {
            return bad("topic", "is empty");
        }
        if self.group_id.is_empty() {
            return bad("group_id", "is empty");
        }
        if self.buffer_records == 0 {
            return bad("buffer_records", "must be at least 1");
        }
        if self.epoch_records == 0 {
            return bad("epoch_records", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_records_defaults_to_1024_and_zero_is_an_error_naming_the_field() {
        let config: SourceConfig = toml::from_str("topic = \"passages\"").expect("minimal table");
        assert_eq!(config.epoch_records, 1024);
        let zero: SourceConfig = toml::from_str("topic = \"passages\"\nepoch_records = 0").expect("parses");
        let message = zero.validate().expect_err("zero records per epoch").to_string();
        assert!(message.contains("kafka.source.epoch_records") && message.contains("at least 1"), "{message}");
    }
}
