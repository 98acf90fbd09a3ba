//! The consumer thread of a [`super::KafkaSource`]: polls librdkafka, decodes messages, hands records to
//! the bounded channel (pausing its partitions while the channel is full, so its group membership stays
//! alive), and commits offsets when the pipeline asks.
//!
//! librdkafka pitfall: a `TopicPartitionList` returned by `assignment()`, `committed()` or `position()`
//! must be dropped before the consumer, or dropping the consumer hangs. Every such list here lives in a
//! block that ends before the consumer does.
use super::decode::{decode, origin};
use super::{Command, KafkaRecord, Partitioning, SourceConfig, Undecodable};
use crate::kafka::{ConnectionConfig, KafkaError};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Logs rebalances with the topic's partitions, and keeps the offsets librdkafka's statistics report for
/// them (`statistics.interval.ms`).
pub(super) struct SourceContext {
    pub(super) topic: String,
    pub(super) worker: usize,
    pub(super) watermarks: Watermarks,
}

/// What librdkafka last reported of each partition this consumer reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionWatermarks {
    /// The partition's first offset.
    pub low: i64,
    /// The partition's end: the offset its next record will get.
    pub high: i64,
    /// The group's committed offset as the consumer knows it (-1: none).
    pub committed: i64,
}

/// Partition -> its last reported offsets, shared by the consumer's context and the source.
pub(super) type Watermarks = Arc<Mutex<HashMap<i32, PartitionWatermarks>>>;

/// How often librdkafka reports statistics (the high watermarks behind the consumer-lag metric).
const STATISTICS_INTERVAL_MS: &str = "1000";

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        let mut watermarks = self.watermarks.lock().unwrap_or_else(|e| e.into_inner());
        for p in topic.partitions.values().filter(|p| p.partition >= 0 && p.desired && p.hi_offset >= 0) {
            let entry =
                PartitionWatermarks { low: p.lo_offset.max(0), high: p.hi_offset, committed: p.committed_offset };
            watermarks.insert(p.partition, entry);
        }
    }
}

impl ConsumerContext for SourceContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let describe = |list: &TopicPartitionList| {
            list.elements().iter().map(|e| e.partition().to_string()).collect::<Vec<_>>().join(",")
        };
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(topic = %self.topic, worker = self.worker, partitions = %describe(list), "Partitions assigned.")
            }
            Rebalance::Revoke(list) => {
                tracing::info!(topic = %self.topic, worker = self.worker, partitions = %describe(list), "Partitions revoked.")
            }
            Rebalance::Error(e) => tracing::warn!(topic = %self.topic, error = %e, "Rebalance failed."),
        }
    }
}

/// What the thread was started with.
pub(super) struct Setup {
    pub connection: ConnectionConfig,
    pub config: SourceConfig,
    pub worker: usize,
    pub peers: usize,
}

/// Creates the consumer and subscribes or assigns; errors here are returned to `KafkaSource::start`.
pub(super) fn connect(setup: &Setup) -> Result<BaseConsumer<SourceContext>, KafkaError> {
    let Setup { connection, config, worker, peers } = setup;
    let topic = &config.topic;
    let mut client = connection.client_config();
    client
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            match config.start_from {
                super::StartFrom::Earliest => "earliest",
                super::StartFrom::Latest => "latest",
            },
        )
        .set("client.id", format!("{}-source-{worker}", connection.client_id))
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    let context = SourceContext { topic: topic.clone(), worker: *worker, watermarks: Watermarks::default() };
    let consumer: BaseConsumer<SourceContext> = client
        .create_with_context(context)
        .map_err(|e| KafkaError::client(format!("creating the consumer for topic '{topic}'"), e))?;
    match config.partitioning {
        Partitioning::Group => consumer
            .subscribe(&[topic])
            .map_err(|e| KafkaError::client(format!("subscribing to topic '{topic}'"), e))?,
        Partitioning::Static => {
            let partitions = partition_count(&consumer, topic)?;
            let mut list = TopicPartitionList::new();
            for p in (0..partitions).filter(|p| (*p as usize) % peers == *worker) {
                list.add_partition_offset(topic, p, Offset::Stored)
                    .map_err(|e| KafkaError::client(format!("assigning partition {p} of '{topic}'"), e))?;
            }
            tracing::info!(topic = %topic, worker, peers, partitions = list.count(), "Static partition assignment.");
            consumer.assign(&list).map_err(|e| KafkaError::client(format!("assigning partitions of '{topic}'"), e))?;
        }
    }
    Ok(consumer)
}

/// Partitions of `topic`, waiting up to 30 s for it to exist.
pub fn partition_count<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str) -> Result<i32, KafkaError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| KafkaError::client(format!("reading metadata of topic '{topic}'"), e))?;
        let count = metadata.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len());
        if count > 0 {
            return Ok(count as i32);
        }
        if Instant::now() > deadline {
            return Err(KafkaError::Topic { topic: topic.into(), message: "does not exist (waited 30 s)".into() });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The thread body: runs until `Command::Stop`, or until the pipeline drops its end of the channel.
pub(super) fn run(
    consumer: BaseConsumer<SourceContext>,
    setup: Setup,
    records: SyncSender<KafkaRecord>,
    commands: Receiver<Command>,
) {
    let topic = setup.config.topic.clone();
    let max_bytes = setup.config.max_message_bytes;
    let mut overflow: VecDeque<KafkaRecord> = VecDeque::new();
    let mut paused = false;
    let mut last_error_log = Instant::now() - Duration::from_secs(60);
    'outer: loop {
        loop {
            match commands.try_recv() {
                Ok(Command::Commit { offsets, reply }) => {
                    let _ = reply.send(commit(&consumer, &topic, &offsets));
                }
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => break 'outer,
                Err(TryRecvError::Empty) => break,
            }
        }
        // Hand over what is waiting; pause fetching while the pipeline is behind.
        while let Some(record) = overflow.pop_front() {
            match records.try_send(record) {
                Ok(()) => {}
                Err(TrySendError::Full(record)) => {
                    overflow.push_front(record);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => break 'outer,
            }
        }
        if overflow.is_empty() == paused {
            paused = !paused;
            set_paused(&consumer, &topic, paused);
        }
        match consumer.poll(Duration::from_millis(if paused { 20 } else { 100 })) {
            None => {}
            Some(Ok(message)) => {
                let (partition, offset) = (message.partition(), message.offset());
                let from = origin(&topic, partition, offset);
                let seq = offset.max(0) as u64;
                let event =
                    decode(message.key(), message.payload(), max_bytes, seq, &from).map_err(|error| Undecodable {
                        error,
                        key: message.key().map(<[u8]>::to_vec),
                        value: message.payload().map(<[u8]>::to_vec),
                    });
                if let Err(dead) = &event {
                    tracing::debug!(topic = %topic, partition, offset, reason = dead.error.reason(),
                        "Undecodable record goes to the dead-letter topic.");
                }
                overflow.push_back(KafkaRecord { partition, offset, event });
            }
            // Transport and broker errors are retried by librdkafka; say so at most every 10 s.
            Some(Err(error)) if last_error_log.elapsed() > Duration::from_secs(10) => {
                tracing::warn!(topic = %topic, error = %error, "Kafka consumer error (librdkafka retries).");
                last_error_log = Instant::now();
            }
            Some(Err(_)) => {}
        }
    }
    tracing::debug!(topic = %topic, worker = setup.worker, "Kafka source stopping.");
    // Dropping the consumer leaves the group; no TopicPartitionList from it is alive at this point.
    drop(consumer);
}

fn set_paused(consumer: &BaseConsumer<SourceContext>, topic: &str, paused: bool) {
    let result = {
        let assignment = match consumer.assignment() {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(topic = %topic, error = %e, "Cannot read the assignment to pause or resume.");
                return;
            }
        };
        if paused {
            consumer.pause(&assignment)
        } else {
            consumer.resume(&assignment)
        }
        // `assignment` is dropped here, before the consumer can be.
    };
    if let Err(e) = result {
        tracing::warn!(topic = %topic, paused, error = %e, "Cannot pause or resume partitions.");
    }
}

/// How long a commit waits for the broker's answer before it is reported as failed (callers keep the
/// offsets pending and retry them with the next commit).
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Commits `(partition, next offset)` pairs of `topic` and waits up to [`COMMIT_TIMEOUT`] for the answer;
/// nothing to commit is a no-op.
///
/// Not rdkafka's `commit(.., CommitMode::Sync)`: librdkafka's synchronous commit waits without limit, and
/// after a broker restart it was seen waiting forever for a group coordinator (the source thread then never
/// served another command and the pipeline could not stop). Here the commit goes on a private result queue
/// that is polled with a deadline.
pub fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Result<(), KafkaError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut list = TopicPartitionList::new();
    for &(partition, next) in offsets {
        list.add_partition_offset(topic, partition, Offset::Offset(next))
            .map_err(|e| KafkaError::client(format!("committing partition {partition} of '{topic}'"), e))?;
    }
    commit_within(consumer, &list, COMMIT_TIMEOUT).map_err(|failure| match failure {
        CommitFailure::Timeout => KafkaError::Timeout {
            operation: format!("committing offsets of topic '{topic}'"),
            seconds: COMMIT_TIMEOUT.as_secs(),
        },
        CommitFailure::Broker(code) => KafkaError::client(
            format!("committing offsets of topic '{topic}'"),
            rdkafka::error::KafkaError::ConsumerCommit(code.into()),
        ),
    })?;
    tracing::debug!(topic = %topic, partitions = offsets.len(), "Committed offsets.");
    Ok(())
}

/// Why [`commit_within`] failed.
enum CommitFailure {
    /// No answer in time.
    Timeout,
    /// The broker or librdkafka answered with an error.
    Broker(rdkafka::bindings::rd_kafka_resp_err_t),
}

/// Commits `list` through librdkafka's `rd_kafka_commit_queue` onto a private queue and polls that queue
/// for the commit's result event for at most `timeout`.
fn commit_within<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    list: &TopicPartitionList,
    timeout: Duration,
) -> Result<(), CommitFailure> {
    use rdkafka::bindings as rd;
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is the live client of `consumer`, borrowed for this call; `list` outlives the call
    // (librdkafka copies it into the commit op). The queue is ours: created here and destroyed on every
    // path. A result that arrives after the timeout goes to the destroyed queue, which librdkafka keeps
    // alive by reference count and drops the late event with it. The event is destroyed after reading.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        let queued = rd::rd_kafka_commit_queue(rk, list.ptr(), queue, None, std::ptr::null_mut());
        let result = if queued != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Err(CommitFailure::Broker(queued))
        } else {
            let event = rd::rd_kafka_queue_poll(queue, timeout_ms);
            if event.is_null() {
                Err(CommitFailure::Timeout)
            } else {
                let code = rd::rd_kafka_event_error(event);
                rd::rd_kafka_event_destroy(event);
                if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    Ok(())
                } else {
                    Err(CommitFailure::Broker(code))
                }
            }
        };
        rd::rd_kafka_queue_destroy(queue);
        result
    }
}
