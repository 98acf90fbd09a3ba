//! The trainer's Kafka edges: the FRet topic in ([`FretTopicSource`], a [`ChangeSource`]) and checkpoint
//! events out ([`CheckpointPublisher`], a checkpoint listener for [`super::Trainer::on_checkpoint`]). The
//! trainer's own types know nothing of Kafka.
//!
//! # Reading the FRet topic
//!
//! - **Records.** Key = query id, value = the example as JSON (the shape the pipeline's sink writes and a
//!   FRet JSONL line holds; parsed by [`Change::from_slice`], so change records are accepted too), null
//!   value (tombstone) = retraction of the key.
//! - **No consumer group.** Every partition is assigned and read from its beginning; no offsets are
//!   committed. The trainer's checkpoints are its state: a restarted trainer rebuilds its replay buffer by
//!   re-reading the compacted topic, which holds exactly the live FRet set (one record per query id).
//!   Partitions added while the trainer runs are not picked up until it restarts.
//! - **Backlog first.** The first poll returns only once every partition has been read to the end it had
//!   when the source started, so the first optimizer step already sees the whole current FRet set (as a
//!   file source would). Later polls hand over whatever arrived since.
//! - **Bad records are skipped, never fatal.** A value that is not JSON, lacks a field, or whose query id
//!   differs from its key is logged (topic, partition, offset, reason) and counted in [`TopicStats`].
//! - **Ending.** A followed topic never finishes; with an idle limit the source reports itself finished
//!   once it has caught up and nothing new arrived for that long, so a run over a finite topic can end.
//!
//! # Checkpoint events
//!
//! [`CheckpointPublisher`] writes each [`CheckpointEvent`] (the `checkpoints.jsonl` line: step, path,
//! examples seen, metrics, whether and why it was promoted to `latest`, and whether it is the base model's
//! baseline evaluation, key `checkpoint-00000000`) to an events topic through an idempotent producer
//! (`acks=all`), key = the checkpoint's directory name, all to partition 0 so consumers see them in step
//! order, and waits for the broker's acknowledgement before training goes on. An event is published after
//! `latest` moved to a promoted checkpoint, so a consumer that sees `promoted: true` finds `latest` there.
use super::checkpoint::checkpoint_name;
use super::source::ChangeSource;
use super::trainer::CheckpointListener;
use super::TrainError;
use crate::connectors::kafka::admin::{ensure_topic, TopicKind};
use crate::connectors::kafka::topic::{Polled, StartAt, TopicReader, TopicWriter};
use crate::connectors::kafka::{ConnectionConfig, KafkaError};
use crate::records::CheckpointEvent;
use crate::records::{Change, ChangeOp};
use rdkafka::message::{BorrowedMessage, Message};
use std::time::{Duration, Instant};

/// Changes handed over by one poll at most, once the backlog is read.
const MAX_POLL_RECORDS: usize = 10_000;
/// How long the source waits for a missing topic to appear at start.
const TOPIC_WAIT: Duration = Duration::from_secs(30);

/// What a [`FretTopicSource`] has read so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicStats {
    /// Messages read (skipped ones included).
    pub records: u64,
    /// Upserts handed to the trainer.
    pub upserts: u64,
    /// Retractions (tombstones) handed to the trainer.
    pub retractions: u64,
    /// Messages skipped as malformed (each logged with topic, partition and offset).
    pub skipped: u64,
}

/// The FRet Kafka topic as a [`ChangeSource`]; see the module docs for the contract.
pub struct FretTopicSource {
    reader: TopicReader,
    bootstrap: String,
    idle_exit: Option<Duration>,
    /// When the last record arrived, or the backlog was read, whichever is later.
    last_activity: Instant,
    finished: bool,
    stats: TopicStats,
}

impl std::fmt::Debug for FretTopicSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FretTopicSource").field("topic", &self.reader.topic()).field("stats", &self.stats).finish()
    }
}

impl FretTopicSource {
    /// Assigns every partition of `topic` from its beginning (waiting up to 30 s for the topic to exist).
    /// With `idle_exit`, the source finishes once caught up and idle for that long.
    pub fn start(connection: &ConnectionConfig, topic: &str, idle_exit: Option<Duration>) -> Result<Self, TrainError> {
        let reader = TopicReader::open(connection, topic, StartAt::Beginning, "train", TOPIC_WAIT).map_err(|e| {
            TrainError::Source { source_name: format!("kafka topic '{topic}'"), message: e.to_string() }
        })?;
        tracing::info!(
            topic,
            partitions = reader.partitions(),
            idle_exit_s = idle_exit.map(|d| d.as_secs_f64()),
            "Reading the FRet topic from the beginning."
        );
        Ok(Self {
            reader,
            bootstrap: connection.bootstrap_servers.clone(),
            idle_exit,
            last_activity: Instant::now(),
            finished: false,
            stats: TopicStats::default(),
        })
    }

    /// What has been read so far.
    pub fn stats(&self) -> TopicStats {
        self.stats
    }

    /// Whether every partition has been read to its end once (the backlog at start).
    pub fn caught_up(&self) -> bool {
        self.reader.caught_up()
    }

    /// Decodes one message into `out`, or logs and counts it as skipped.
    fn take(stats: &mut TopicStats, topic: &str, message: &BorrowedMessage<'_>, out: &mut Vec<Change>) {
        stats.records += 1;
        match decode(message.key(), message.payload()) {
            Ok(change) => {
                match change.op {
                    ChangeOp::Upsert => stats.upserts += 1,
                    ChangeOp::Retract => stats.retractions += 1,
                }
                out.push(change);
            }
            Err(reason) => {
                stats.skipped += 1;
                tracing::warn!(topic, partition = message.partition(), offset = message.offset(), reason = %reason,
                    "Skipped a malformed FRet record.");
            }
        }
    }
}

impl ChangeSource for FretTopicSource {
    fn poll(&mut self, wait: Duration) -> Result<Vec<Change>, TrainError> {
        let mut out = Vec::new();
        if self.finished {
            return Ok(out);
        }
        let deadline = Instant::now() + wait;
        // Owned once per poll: a message borrows the reader while it is taken.
        let topic = self.reader.topic().to_owned();
        let mut backlog_log = Instant::now();
        loop {
            let caught_up = self.caught_up();
            let timeout = if !caught_up {
                Duration::from_millis(100)
            } else if out.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            match self.reader.poll(timeout) {
                Polled::Message(message) => {
                    Self::take(&mut self.stats, &topic, &message, &mut out);
                    self.last_activity = Instant::now();
                    if caught_up && out.len() >= MAX_POLL_RECORDS {
                        break;
                    }
                }
                Polled::PartitionEnd(_) => {
                    if !caught_up && self.reader.caught_up() {
                        self.last_activity = Instant::now();
                        tracing::info!(
                            topic,
                            records = self.stats.records,
                            skipped = self.stats.skipped,
                            "Read the FRet topic's backlog; following it."
                        );
                    }
                }
                Polled::Nothing if caught_up && (!out.is_empty() || Instant::now() >= deadline) => break,
                Polled::Nothing => {
                    if !caught_up && backlog_log.elapsed() > Duration::from_secs(30) {
                        tracing::info!(
                            topic,
                            records = self.stats.records,
                            partitions_done = self.reader.partitions_at_end(),
                            partitions = self.reader.partitions(),
                            "Still reading the FRet topic's backlog."
                        );
                        backlog_log = Instant::now();
                    }
                }
            }
        }
        if out.is_empty() && self.idle_exit.is_some_and(|idle| self.last_activity.elapsed() >= idle) {
            tracing::info!(topic = %self.reader.topic(), idle_s = self.last_activity.elapsed().as_secs_f64(),
                "Nothing new on the FRet topic within the idle limit; the source is finished.");
            self.finished = true;
        }
        Ok(out)
    }

    fn is_finished(&self) -> bool {
        self.finished
    }

    fn describe(&self) -> String {
        format!("kafka:{}/{}", self.bootstrap, self.reader.topic())
    }
}

/// One FRet topic message as a change: a tombstone retracts its key; a value is an example (or change
/// record) whose query id must equal the key. The error says why the message is unusable.
pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Change, String> {
    let key = match key {
        Some(bytes) => Some(std::str::from_utf8(bytes).map_err(|_| "key is not UTF-8".to_owned())?),
        None => None,
    };
    let Some(value) = value else {
        return match key {
            Some(key) if !key.is_empty() => Ok(Change::retract(key, 0)),
            _ => Err("tombstone (null value) without a key".to_owned()),
        };
    };
    let change = Change::from_slice(value)?;
    match key {
        Some(key) if key != change.key() => {
            Err(format!("key '{key}' differs from the record's query id '{}'", change.key()))
        }
        _ => Ok(change),
    }
}

/// Publishes checkpoint events to a Kafka topic; see the module docs.
#[derive(Debug)]
pub struct CheckpointPublisher {
    writer: TopicWriter,
}

impl CheckpointPublisher {
    /// Creates the idempotent producer, and `topic` (one partition, time-retained log) when missing; an
    /// existing topic is used as it is.
    pub fn start(connection: &ConnectionConfig, topic: &str) -> Result<Self, KafkaError> {
        connection.validate()?;
        ensure_topic(connection, topic, 1, 1, TopicKind::Log)?;
        let writer = TopicWriter::open(connection, topic, "train-events", false)?;
        tracing::info!(topic, "Publishing checkpoint events.");
        Ok(Self { writer })
    }

    /// The events topic.
    pub fn topic(&self) -> &str {
        self.writer.topic()
    }

    /// Sends `event` (key = checkpoint name, value = its manifest line) and waits for the acknowledgement.
    pub fn publish(&self, event: &CheckpointEvent) -> Result<(), KafkaError> {
        let key = checkpoint_name(event.step);
        let value = serde_json::to_vec(event).expect("checkpoint events serialize. This is a bug.");
        self.writer.send_and_wait(&key, Some(&value), Some(0))?;
        tracing::info!(topic = %self.writer.topic(), step = event.step, key, "Published checkpoint event.");
        Ok(())
    }

    /// This publisher as a trainer listener ([`super::Trainer::on_checkpoint`]). A failed delivery is logged
    /// as an error naming the checkpoint and the topic, and training goes on: the checkpoint is on disk and
    /// in `checkpoints.jsonl` either way, and a broker outage should not stop the trainer.
    pub fn into_listener(self) -> CheckpointListener {
        Box::new(move |event| {
            if let Err(error) = self.publish(event) {
                tracing::error!(
                    topic = %self.topic(), step = event.step, path = %event.path.display(), %error,
                    "Could not publish the checkpoint event; training goes on (the manifest has the checkpoint)."
                );
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"query_id":"q1","task":"t","query":"q","positive":{"id":"p","text":"x"}}"#;

    #[test]
    fn value_is_an_upsert_and_tombstone_retracts_the_key() {
        let change = decode(Some(b"q1"), Some(EXAMPLE.as_bytes())).unwrap();
        assert!(matches!(change.upserted(), Some(e) if e.query_id == "q1"));
        assert_eq!(decode(Some(b"q1"), None).unwrap(), Change::retract("q1", 0));
        assert!(decode(None, Some(EXAMPLE.as_bytes())).is_ok(), "a keyless value carries its query id");
    }

    #[test]
    fn malformed_messages_say_why() {
        assert!(decode(Some(b"q1"), Some(b"not json")).unwrap_err().contains("expected"));
        let missing = decode(Some(b"q1"), Some(br#"{"query_id":"q1","task":"t"}"#)).unwrap_err();
        assert!(missing.contains("missing field"), "{missing}");
        let other = decode(Some(b"q2"), Some(EXAMPLE.as_bytes())).unwrap_err();
        assert!(other.contains("'q2'") && other.contains("'q1'"), "{other}");
        assert!(decode(None, None).unwrap_err().contains("without a key"));
        assert!(decode(Some(&[0xff]), None).unwrap_err().contains("UTF-8"));
    }
}
