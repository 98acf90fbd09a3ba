//! Replaying a source topic from the beginning on every start, with the consumer group's offsets as
//! progress markers: the Kafka side of a stateful pipeline's restarts (the pipeline's `kafka::run`
//! explains why).
//!
//! - [`ReplayStart::prepare`] rewinds a scratch group, `<group_id>.replay`, to the start of a worker's
//!   partitions (so a [`super::KafkaSource`] started under it reads from the beginning), and reads the real
//!   group's committed offsets.
//! - [`ProgressMarker::advance`] commits a partition's offset under the real `group_id` only once it is
//!   beyond what the group had committed, so lag tools show true progress and the marker never moves
//!   backwards during a replay.
use super::source::{commit, partition_count};
use super::{ConnectionConfig, KafkaError, SourceConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::types::RDKafkaErrorCode as Code;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);

/// What a worker needs to replay its partitions: the source config to read them from the beginning,
/// and the marker that commits progress under the real group.
#[derive(Debug)]
pub struct ReplayStart {
    /// The source config to start the `KafkaSource` with: the scratch group `<group_id>.replay`,
    /// rewound to the beginning of this worker's partitions.
    pub reader: SourceConfig,
    /// Progress under the real `group_id`.
    pub marker: ProgressMarker,
}

impl ReplayStart {
    /// Reads the real group's committed offsets of worker `worker`'s partitions (static assignment:
    /// `p % peers == worker`) and rewinds the scratch group to the start of those partitions.
    pub fn prepare(
        connection: &ConnectionConfig,
        source: &SourceConfig,
        worker: usize,
        peers: usize,
    ) -> Result<Self, KafkaError> {
        let topic = source.topic.as_str();
        let marker_consumer = group_consumer(connection, &source.group_id, worker)?;
        let partitions: Vec<i32> =
            (0..partition_count(&marker_consumer, topic)?).filter(|p| (*p as usize) % peers == worker).collect();
        let committed = committed_offsets(&marker_consumer, topic, &partitions)?;
        let reader = SourceConfig { group_id: format!("{}.replay", source.group_id), ..source.clone() };
        let rewind = group_consumer(connection, &reader.group_id, worker)?;
        let mut starts = Vec::new();
        for &p in &partitions {
            let (low, _) = rewind
                .fetch_watermarks(topic, p, TIMEOUT)
                .map_err(|e| KafkaError::client(format!("reading the start of partition {p} of '{topic}'"), e))?;
            starts.push((p, low));
        }
        commit(&rewind, topic, &starts)?;
        drop(rewind);
        tracing::info!(topic, worker, partitions = ?partitions, progress = ?committed,
            "Replaying this worker's partitions from the beginning to rebuild the dataflow's state.");
        Ok(Self { reader, marker: ProgressMarker { consumer: marker_consumer, topic: topic.to_owned(), committed } })
    }
}

/// Commits progress under the real consumer group, never moving an offset backwards.
pub struct ProgressMarker {
    consumer: BaseConsumer,
    topic: String,
    /// partition -> next offset committed under the group (at start, or by this marker since).
    committed: HashMap<i32, i64>,
}

impl std::fmt::Debug for ProgressMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressMarker").field("topic", &self.topic).field("committed", &self.committed).finish()
    }
}

impl ProgressMarker {
    /// Commits, per partition, `reached` (the source's committed next offsets: outputs of everything
    /// before them are acknowledged) where it is beyond the group's offset. A failure is logged and
    /// retried by the next call: the marker is for monitoring, not for correctness.
    pub fn advance(&mut self, reached: &HashMap<i32, i64>) {
        let ahead: Vec<(i32, i64)> = reached
            .iter()
            .filter(|(p, next)| self.committed.get(p).is_none_or(|c| *c < **next))
            .map(|(&p, &next)| (p, next))
            .collect();
        if ahead.is_empty() {
            return;
        }
        match commit(&self.consumer, &self.topic, &ahead) {
            Ok(()) => self.committed.extend(ahead),
            Err(error) => tracing::warn!(topic = %self.topic, %error, "Progress commit failed; will retry."),
        }
    }

    /// Per partition, the next offset committed under the group.
    pub fn committed(&self) -> &HashMap<i32, i64> {
        &self.committed
    }
}

/// A consumer in `group` that never subscribes: for reading and committing a group's offsets.
fn group_consumer(connection: &ConnectionConfig, group: &str, worker: usize) -> Result<BaseConsumer, KafkaError> {
    let mut client = connection.client_config();
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("client.id", format!("{}-progress-{worker}", connection.client_id));
    client.create().map_err(|e| KafkaError::client(format!("creating a consumer for group '{group}'"), e))
}

/// The group's committed next offset of each of `partitions` that has one, retrying for up to 60 s while
/// the group coordinator loads (a fresh broker answers `NotCoordinator` for a while).
fn committed_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>, KafkaError> {
    if partitions.is_empty() {
        // A worker without partitions (more workers than partitions): librdkafka would wait for nothing.
        return Ok(HashMap::new());
    }
    let mut list = TopicPartitionList::new();
    for &p in partitions {
        list.add_partition(topic, p);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The returned list is dropped inside this block, before the consumer (librdkafka pitfall).
        match consumer.committed_offsets(list.clone(), TIMEOUT) {
            Ok(committed) => {
                return Ok(committed
                    .elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some((e.partition(), o)),
                        _ => None,
                    })
                    .collect())
            }
            Err(e) if Instant::now() < deadline && is_transient(&e) => std::thread::sleep(Duration::from_millis(250)),
            Err(e) => return Err(KafkaError::client(format!("reading the committed offsets of '{topic}'"), e)),
        }
    }
}

fn is_transient(error: &RdKafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::NotCoordinator
                | Code::CoordinatorLoadInProgress
                | Code::CoordinatorNotAvailable
                | Code::RequestTimedOut
        )
    )
}
