//! Helpers for the Kafka tests: the local broker (started through deploy/kafka/start.sh), unique topic
//! names, raw producing and reading a whole topic.
#![allow(dead_code)]
#[path = "../prereq/mod.rs"]
pub mod prereq;

use fretflow::connectors::kafka::admin::{ensure_topic, TopicKind};
use fretflow::connectors::kafka::ConnectionConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Kafka jars fetched by deploy/kafka/fetch.sh, as a java classpath; `None` when missing.
pub fn kafka_classpath() -> Option<String> {
    let libs = repo().join("deploy/kafka/libs");
    libs.is_dir().then(|| format!("{}/*", libs.display()))
}

/// Starts the broker on `port` through deploy/kafka/start.sh (it reuses a running one) and returns its
/// bootstrap address; `None` when the jars are missing (`make test` fetches them): the calling test is
/// recorded as skipped, or fails under CI (see `prereq`).
pub fn start_broker(port: u16) -> Option<String> {
    launch_broker(port).map_err(|reason| prereq::missing(&reason)).ok()
}

/// The broker on `port`, or why it cannot be had.
fn launch_broker(port: u16) -> Result<String, String> {
    if kafka_classpath().is_none() {
        return Err("no Kafka jars in deploy/kafka/libs; run `make test` or deploy/kafka/fetch.sh to fetch them \
                    (these tests need a real broker)"
            .into());
    }
    let status = Command::new(repo().join("deploy/kafka/start.sh"))
        .args(["--port", &port.to_string()])
        .status()
        .expect("deploy/kafka/start.sh runs");
    assert!(
        status.success(),
        "deploy/kafka/start.sh --port {port} failed; see deploy/kafka/data/broker-{port}/kafka.log"
    );
    Ok(format!("127.0.0.1:{port}"))
}

/// The shared broker of the test run: FRETFLOW_TEST_KAFKA_BOOTSTRAP if set, else the local one on 9092.
/// `None` when it cannot be had; every calling test is then recorded as skipped (or fails under CI).
pub fn broker() -> Option<String> {
    static BROKER: OnceLock<Result<String, String>> = OnceLock::new();
    let got = BROKER.get_or_init(|| match std::env::var("FRETFLOW_TEST_KAFKA_BOOTSTRAP") {
        Ok(bootstrap) => Ok(bootstrap),
        Err(_) => launch_broker(9092),
    });
    got.as_ref().map_err(|reason| prereq::missing(reason)).ok().cloned()
}

/// A connection to `bootstrap`.
pub fn connection(bootstrap: &str) -> ConnectionConfig {
    ConnectionConfig { bootstrap_servers: bootstrap.to_owned(), ..ConnectionConfig::default() }
}

/// A topic or group name unique to this test run.
pub fn unique(name: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("test-{name}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// Creates an input topic with `partitions` partitions.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    assert!(ensure_topic(&connection(bootstrap), topic, partitions, 1, TopicKind::Log).unwrap());
}

/// A raw message: key and value bytes, `None` value = tombstone.
pub type Raw = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Produces `(key, value)` messages in order and waits for every acknowledgement.
pub fn produce(bootstrap: &str, topic: &str, messages: &[Raw]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    let deliveries: Vec<_> = messages
        .iter()
        .map(|(key, value)| {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic);
            if let Some(key) = key {
                record = record.key(key.as_slice());
            }
            if let Some(value) = value {
                record = record.payload(value.as_slice());
            }
            producer.send_result(record).map_err(|(e, _)| e).unwrap()
        })
        .collect();
    for delivery in deliveries {
        futures::executor::block_on(delivery).unwrap().map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// A passage message: key = id, value = `{id, text}`.
pub fn passage(id: &str, text: &str) -> Raw {
    let value = serde_json::json!({"id": id, "title": format!("title {id}"), "text": text});
    (Some(id.as_bytes().to_vec()), Some(value.to_string().into_bytes()))
}

/// A tombstone for `id`.
pub fn tombstone(id: &str) -> Raw {
    (Some(id.as_bytes().to_vec()), None)
}

/// One message read back.
#[derive(Debug, Clone)]
pub struct Read {
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
    pub partition: i32,
    pub offset: i64,
}

/// Every message of `topic` up to its current end, by partition and offset.
pub fn read_all(bootstrap: &str, topic: &str) -> Vec<Read> {
    // librdkafka needs a group id to assign partitions; this one never commits.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut ends = BTreeMap::new();
    {
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
            if high > low {
                ends.insert(p, high);
                list.add_partition_offset(topic, p, Offset::Beginning).unwrap();
            }
        }
        consumer.assign(&list).unwrap();
    }
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        assert!(Instant::now() < deadline, "reading '{topic}' took over 60 s; still waiting for {ends:?}");
        // Errors here are informational events of a group-less consumer; librdkafka carries on.
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) else { continue };
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Read {
            key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
            partition: message.partition(),
            offset: message.offset(),
        });
        if ends.get(&message.partition()).is_some_and(|end| message.offset() + 1 >= *end) {
            ends.remove(&message.partition());
        }
    }
    out
}

/// The last value per key (None = tombstone), in offset order per partition.
pub fn latest_by_key(messages: &[Read]) -> BTreeMap<String, Option<serde_json::Value>> {
    let mut latest = BTreeMap::new();
    for m in messages {
        let value = m.value.as_ref().map(|v| serde_json::from_slice(v).expect("output values are JSON"));
        latest.insert(m.key.clone().expect("output records have keys"), value);
    }
    latest
}

/// Per partition, the offset committed by `group` for `topic` (missing partitions have none).
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().unwrap();
    let mut out = BTreeMap::new();
    {
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(topic, p);
        }
        // A fresh broker answers NotCoordinator / CoordinatorLoadInProgress until the group-offsets topic
        // is loaded: retry those for up to 60 s, fail on anything else.
        let deadline = Instant::now() + Duration::from_secs(60);
        let committed = loop {
            match consumer.committed_offsets(list.clone(), Duration::from_secs(10)) {
                Ok(committed) => break committed,
                Err(e) if Instant::now() < deadline && is_transient(&e) => {
                    std::thread::sleep(Duration::from_millis(250))
                }
                Err(e) => panic!("committed offsets of group {group} on {topic}: {e}"),
            }
        };
        for e in committed.elements() {
            if let Offset::Offset(o) = e.offset() {
                out.insert(e.partition(), o);
            }
        }
        // `committed` (a TopicPartitionList from the consumer) is dropped here, before the consumer.
    }
    out
}

/// Errors a broker gives while its group coordinator is (re)loading or moving.
fn is_transient(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::NotCoordinator
                | Code::CoordinatorLoadInProgress
                | Code::CoordinatorNotAvailable
                | Code::RequestTimedOut
                | Code::OperationTimedOut
                | Code::AllBrokersDown
                | Code::BrokerTransportFailure
        )
    )
}

/// Runs a command and returns its stdout, failing with its stderr.
pub fn run(command: &mut Command) -> String {
    let output = command.output().expect("command starts");
    assert!(output.status.success(), "{command:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
