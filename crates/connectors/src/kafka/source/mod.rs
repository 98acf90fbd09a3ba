//! The Kafka source: passages in, offsets committed only after the sink acknowledged their outputs.
//!
//! # Contract
//!
//! - **Records.** Key = passage id, value = JSON `{id, title?, text}`, null value = delete
//!   ([`decode::decode`]), decoded into a [`PassageEvent`] whose origin is `topic/partition/offset`. A
//!   message that breaks these rules is not an error of the source: it arrives as `Err(Undecodable)` in
//!   [`KafkaRecord::event`], with its original bytes, so the pipeline can route it to the dead-letter
//!   topic and go on.
//! - **Partitions over workers and processes.** Every timely worker (in every process) starts its own
//!   `KafkaSource` with its global index `i` and the total number of workers `n`. With
//!   [`Partitioning::Static`] (default) worker `i` reads the partitions `p` with `p % n == i`, fixed for
//!   the run (offsets are committed per partition, so a restart with another `n` only changes the
//!   split). With [`Partitioning::Group`] all workers join one
//!   consumer group and the broker balances the partitions (a worker may get none). Either way each
//!   partition has exactly one reader at a time, and offsets are committed under `group_id`.
//!   Records of one partition arrive in offset order; there is no order across partitions.
//! - **Epochs and commits.** [`KafkaSource::poll_batch`] tags what it returns with the caller's epoch (its
//!   timely time). [`KafkaSource::commit_through`]`(e)` commits, per partition, the offset after the last
//!   record of every epoch `<= e`. Call it only when every output derived from those epochs is
//!   acknowledged by the sink (in timely: a probe after the pipeline's Kafka sink operator has passed `e`).
//!   A crash before the commit replays those records: at-least-once, never lost.
pub mod config;
mod consumer;
pub use consumer::COMMIT_TIMEOUT;
pub mod decode;

pub use config::{Partitioning, SourceConfig, StartFrom};
pub use consumer::{commit, partition_count};
pub use decode::{origin, DecodeError};

use super::{ConnectionConfig, KafkaError};
use fretflow_records::PassageEvent;
use rdkafka::consumer::Consumer as _;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

/// One message of the source topic: where it was read, and the passage event it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaRecord {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// The event it carries, or the message itself when it could not be decoded.
    pub event: Result<PassageEvent, Undecodable>,
}

/// A message that could not be decoded, kept whole (its original bytes) for the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undecodable {
    /// Why.
    pub error: DecodeError,
    /// The original key bytes.
    pub key: Option<Vec<u8>>,
    /// The original value bytes.
    pub value: Option<Vec<u8>>,
}

/// Requests from the pipeline to the consumer thread.
enum Command {
    Commit { offsets: Vec<(i32, i64)>, reply: Sender<Result<(), KafkaError>> },
    Stop,
}

/// A Kafka consumer on its own thread; see the module docs for the contract.
pub struct KafkaSource {
    topic: String,
    records: Receiver<KafkaRecord>,
    commands: Sender<Command>,
    thread: Option<JoinHandle<()>>,
    /// epoch -> partition -> next offset to read (last offset + 1), for epochs not yet committed.
    pending: BTreeMap<u64, HashMap<i32, i64>>,
    /// partition -> next offset, as last committed by this source.
    committed: HashMap<i32, i64>,
    /// The partitions' offsets as librdkafka last reported them.
    watermarks: consumer::Watermarks,
}

/// Where one partition of a source stands: what is committed and how far the partition's end is ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionProgress {
    /// The partition.
    pub partition: i32,
    /// Next offset committed for the group: this source's last commit, else the group's as the consumer
    /// knows it; `None` when nothing is committed.
    pub committed: Option<i64>,
    /// The partition's end (its high watermark) at the last statistics report.
    pub high: i64,
    /// Records between the committed offset (or the partition's start) and the end.
    pub lag: i64,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("topic", &self.topic)
            .field("pending_epochs", &self.pending.len())
            .field("committed", &self.committed)
            .finish()
    }
}

impl KafkaSource {
    /// Connects worker `worker` of `peers` (global indices across processes) and starts its thread.
    pub fn start(
        connection: &ConnectionConfig,
        config: &SourceConfig,
        worker: usize,
        peers: usize,
    ) -> Result<Self, KafkaError> {
        connection.validate()?;
        config.validate()?;
        if worker >= peers {
            return Err(KafkaError::Config {
                field: "worker".into(),
                message: format!("worker index {worker} is not below the number of workers {peers}"),
            });
        }
        let setup = consumer::Setup { connection: connection.clone(), config: config.clone(), worker, peers };
        let consumer = consumer::connect(&setup)?;
        let watermarks = std::sync::Arc::clone(&consumer.context().watermarks);
        let (record_tx, records) = mpsc::sync_channel(config.buffer_records);
        let (commands, command_rx) = mpsc::channel();
        let topic = config.topic.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kafka-source-{worker}"))
            .spawn(move || consumer::run(consumer, setup, record_tx, command_rx))
            .map_err(|e| KafkaError::SourceStopped { topic: topic.clone(), message: e.to_string() })?;
        tracing::info!(topic = %topic, group = %config.group_id, worker, peers, "Kafka source started.");
        let (pending, committed) = (BTreeMap::new(), HashMap::new());
        Ok(Self { topic, records, commands, thread: Some(thread), pending, committed, watermarks })
    }

    /// The topic read.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Returns up to `max` records, waiting at most `wait` for the first one (never blocks longer), and
    /// remembers their offsets under `epoch`. Epochs must not decrease between calls.
    pub fn poll_batch(&mut self, epoch: u64, max: usize, wait: Duration) -> Result<Vec<KafkaRecord>, KafkaError> {
        let mut batch = Vec::new();
        if max == 0 {
            return Ok(batch);
        }
        match self.records.recv_timeout(wait) {
            Ok(record) => batch.push(record),
            Err(RecvTimeoutError::Timeout) => return Ok(batch),
            Err(RecvTimeoutError::Disconnected) => return Err(self.stopped()),
        }
        while batch.len() < max {
            match self.records.try_recv() {
                Ok(record) => batch.push(record),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => break,
            }
        }
        if let Some((&last, _)) = self.pending.last_key_value() {
            debug_assert!(epoch >= last, "epochs must not decrease. This is a bug.");
        }
        let offsets = self.pending.entry(epoch).or_default();
        for record in &batch {
            let next = offsets.entry(record.partition).or_insert(0);
            *next = (*next).max(record.offset + 1);
        }
        Ok(batch)
    }

    /// Commits the offsets of every epoch `<= epoch` to the consumer group and waits for the broker.
    /// On failure the offsets stay pending, so a later call retries them.
    pub fn commit_through(&mut self, epoch: u64) -> Result<(), KafkaError> {
        let later = self.pending.split_off(&(epoch.saturating_add(1)));
        let done = std::mem::replace(&mut self.pending, later);
        let mut merged: HashMap<i32, i64> = HashMap::new();
        for offsets in done.values() {
            for (&partition, &next) in offsets {
                let slot = merged.entry(partition).or_insert(next);
                *slot = (*slot).max(next);
            }
        }
        merged.retain(|p, next| self.committed.get(p).is_none_or(|c| *c < *next));
        if merged.is_empty() {
            return Ok(());
        }
        let offsets: Vec<(i32, i64)> = merged.iter().map(|(&p, &o)| (p, o)).collect();
        let (reply, answer) = mpsc::channel();
        let result = match self.commands.send(Command::Commit { offsets, reply }) {
            Err(_) => Err(self.stopped()),
            Ok(()) => match answer.recv_timeout(Duration::from_secs(60)) {
                Ok(result) => result,
                Err(RecvTimeoutError::Timeout) => Err(KafkaError::Timeout {
                    operation: format!("committing offsets of '{}'", self.topic),
                    seconds: 60,
                }),
                Err(RecvTimeoutError::Disconnected) => Err(self.stopped()),
            },
        };
        match result {
            Ok(()) => {
                self.committed.extend(merged);
                Ok(())
            }
            Err(e) => {
                self.pending.entry(epoch).or_default().extend(merged);
                Err(e)
            }
        }
    }

    /// Per partition, the next offset this source has committed (empty before the first commit).
    pub fn committed(&self) -> &HashMap<i32, i64> {
        &self.committed
    }

    /// Committed offset and lag of each partition this source reads, by partition, from librdkafka's last
    /// statistics report (about every second; empty before the first).
    pub fn progress(&self) -> Vec<PartitionProgress> {
        let watermarks = self.watermarks.lock().unwrap_or_else(|e| e.into_inner());
        let mut progress: Vec<PartitionProgress> = watermarks
            .iter()
            .map(|(&partition, w)| {
                let committed = self.committed.get(&partition).copied().or((w.committed >= 0).then_some(w.committed));
                PartitionProgress {
                    partition,
                    committed,
                    high: w.high,
                    lag: (w.high - committed.unwrap_or(w.low)).max(0),
                }
            })
            .collect();
        progress.sort_by_key(|p| p.partition);
        progress
    }

    /// Stops the consumer thread and leaves the group, without committing anything pending.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(topic = %self.topic, "Kafka source thread panicked.");
            }
        }
    }

    fn stopped(&self) -> KafkaError {
        KafkaError::SourceStopped { topic: self.topic.clone(), message: "its consumer thread has exited".into() }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop();
    }
}
