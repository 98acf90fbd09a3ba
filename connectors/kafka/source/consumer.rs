//! The consumer thread of a [`super::KafkaSource`]: polls librdkafka, decodes messages, hands records to
//! the bounded channel (pausing its partitions while the channel is full, so its group membership stays
//! alive), and commits offsets when the pipeline asks.
//!
//! librdkafka pitfall: a `TopicPartitionList` returned by `assignment()`, `committed()` or `position()`
//! must be dropped before the consumer, or dropping the consumer hangs. Every such list here lives in a
//! block that ends before the consumer does.
use super::decode::decode;
use super::{Command, DeadLetter, Partitioning, SourceConfig, SourceRecord};
use crate::connectors::kafka::{ConnectionConfig, KafkaError};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

/// Logs rebalances with the topic's partitions.
pub(super) struct SourceContext {
    pub(super) topic: String,
    pub(super) worker: usize,
}

impl ClientContext for SourceContext {}

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
        .set("auto.offset.reset", match config.start_from {
            super::StartFrom::Earliest => "earliest",
            super::StartFrom::Latest => "latest",
        })
        .set("client.id", format!("{}-source-{worker}", connection.client_id));
    let context = SourceContext { topic: topic.clone(), worker: *worker };
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
pub(crate) fn partition_count<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str) -> Result<i32, KafkaError> {
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
    records: SyncSender<SourceRecord>,
    commands: Receiver<Command>,
) {
    let topic = setup.config.topic.clone();
    let max_bytes = setup.config.max_message_bytes;
    let mut overflow: VecDeque<SourceRecord> = VecDeque::new();
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
                let change = decode(message.key(), message.payload(), max_bytes).map_err(|error| DeadLetter {
                    error,
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                });
                if let Err(dead) = &change {
                    tracing::debug!(topic = %topic, partition = message.partition(), offset = message.offset(),
                        reason = dead.error.reason(), "Undecodable record goes to the dead-letter topic.");
                }
                overflow.push_back(SourceRecord { partition: message.partition(), offset: message.offset(), change });
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
        if paused { consumer.pause(&assignment) } else { consumer.resume(&assignment) }
        // `assignment` is dropped here, before the consumer can be.
    };
    if let Err(e) = result {
        tracing::warn!(topic = %topic, paused, error = %e, "Cannot pause or resume partitions.");
    }
}

/// Commits `(partition, next offset)` pairs of `topic` synchronously; nothing to commit is a no-op.
pub(crate) fn commit<C: ConsumerContext>(
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
    consumer
        .commit(&list, CommitMode::Sync)
        .map_err(|e| KafkaError::client(format!("committing offsets of topic '{topic}'"), e))?;
    tracing::debug!(topic = %topic, partitions = offsets.len(), "Committed offsets.");
    Ok(())
}
