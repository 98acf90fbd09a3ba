//! Topic administration through librdkafka's AdminClient: create a topic when missing, read a topic's
//! configuration and partition count.
use super::{ConnectionConfig, KafkaError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

/// What a topic is for, which decides its configuration when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// Keyed upserts and tombstones: `cleanup.policy=compact`, so the topic converges to one live record
    /// per key (the FRet output).
    Compacted,
    /// An append-only log with time-based retention (dead letters, passages).
    Log,
}

/// Creates `topic` with `partitions` partitions when it does not exist. Returns whether it was created.
/// An existing topic is left as it is (a warning is logged when a compacted one is not compacted).
pub fn ensure_topic(
    connection: &ConnectionConfig,
    topic: &str,
    partitions: i32,
    replication_factor: i32,
    kind: TopicKind,
) -> Result<bool, KafkaError> {
    let admin = admin_client(connection)?;
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication_factor));
    if kind == TopicKind::Compacted {
        // Compact soon after records arrive, so consumers reading the topic see few superseded values.
        new_topic = new_topic
            .set("cleanup.policy", "compact")
            .set("min.cleanable.dirty.ratio", "0.1")
            .set("segment.ms", "60000");
    }
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let results = futures::executor::block_on(admin.create_topics([&new_topic], &options))
        .map_err(|e| KafkaError::client(format!("creating topic '{topic}'"), e))?;
    match results.into_iter().next() {
        Some(Ok(_)) => {
            tracing::info!(topic, partitions, ?kind, "Created Kafka topic.");
            Ok(true)
        }
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {
            if kind == TopicKind::Compacted {
                let policy = topic_config(connection, topic, "cleanup.policy")?;
                if policy.as_deref().is_none_or(|p| !p.contains("compact")) {
                    tracing::warn!(
                        topic,
                        ?policy,
                        "Output topic exists but is not compacted; it will keep \
                        every superseded record. Set cleanup.policy=compact on it."
                    );
                }
            }
            Ok(false)
        }
        Some(Err((_, code))) => {
            Err(KafkaError::Topic { topic: topic.into(), message: format!("cannot create it: {code}") })
        }
        None => Err(KafkaError::Topic { topic: topic.into(), message: "the broker returned no result".into() }),
    }
}

/// The value of one configuration entry of `topic` (e.g. `cleanup.policy`), `None` when unset.
pub fn topic_config(connection: &ConnectionConfig, topic: &str, key: &str) -> Result<Option<String>, KafkaError> {
    let admin = admin_client(connection)?;
    let options = AdminOptions::new().request_timeout(Some(TIMEOUT));
    let results = futures::executor::block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options))
        .map_err(|e| KafkaError::client(format!("describing topic '{topic}'"), e))?;
    let resource = results
        .into_iter()
        .next()
        .ok_or_else(|| KafkaError::Topic { topic: topic.into(), message: "the broker returned no config".into() })?
        .map_err(|code| KafkaError::Topic { topic: topic.into(), message: format!("cannot describe it: {code}") })?;
    Ok(resource.get(key).and_then(|entry| entry.value.clone()))
}

/// The number of partitions of `topic`, or `None` when it does not exist.
pub fn partition_count(connection: &ConnectionConfig, topic: &str) -> Result<Option<usize>, KafkaError> {
    let consumer: BaseConsumer =
        connection.client_config().create().map_err(|e| KafkaError::client("creating a metadata client", e))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| KafkaError::client(format!("reading metadata of topic '{topic}'"), e))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|&n| n > 0))
}

fn admin_client(connection: &ConnectionConfig) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    connection.validate()?;
    connection.client_config().create().map_err(|e| KafkaError::client("creating the admin client", e))
}
