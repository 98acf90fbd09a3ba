//! The Kafka connectors against a real Apache Kafka broker (deploy/kafka/start.sh, started when not
//! running; skipped loudly when its jars are missing): the pass-through pipeline source → identity →
//! sink, with offsets committed only after the sink's acknowledgements.
mod kafka_support;

use fretflow::connectors::kafka::admin::topic_config;
use fretflow::connectors::kafka::sink::SinkRecord;
use fretflow::connectors::kafka::{KafkaSink, KafkaSource, SinkConfig, SourceConfig};
use fretflow::pipeline::kafka::passthrough::{self, Identity, RunOptions};
use kafka_support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

fn options(workers: usize) -> RunOptions {
    RunOptions { workers, idle_exit: Some(Duration::from_secs(3)), ..RunOptions::default() }
}

fn configs(input: &str, output: &str, group: &str) -> (SourceConfig, SinkConfig) {
    let mut source = SourceConfig::new(input);
    source.group_id = group.to_owned();
    (source, SinkConfig::new(output))
}

#[test]
fn thousand_passages_over_three_partitions_and_two_workers_give_one_live_record_per_key() {
    let Some(bootstrap) = broker() else { return };
    let (input, output, group) = (unique("in"), unique("out"), unique("group"));
    create_topic(&bootstrap, &input, 3);
    let mut messages: Vec<_> = (0..1000).map(|i| passage(&format!("p{i}"), &format!("first version {i}"))).collect();
    // A second version of every tenth passage: the live record must be the later one.
    messages.extend((0..1000).step_by(10).map(|i| passage(&format!("p{i}"), &format!("second version {i}"))));
    produce(&bootstrap, &input, &messages);

    let (source, sink) = configs(&input, &output, &group);
    let reports = passthrough::run(
        &connection(&bootstrap),
        &source,
        &sink,
        &options(2),
        Identity { source_topic: input.clone() },
    )
    .unwrap();
    assert_eq!(reports.iter().map(|r| r.records).sum::<u64>(), 1100, "{reports:?}");
    assert!(reports.iter().all(|r| r.records > 0), "both workers own partitions: {reports:?}");

    let out = read_all(&bootstrap, &output);
    let latest = latest_by_key(&out);
    assert_eq!(latest.len(), 1000);
    for i in 0..1000 {
        let value = latest[&format!("p{i}")].as_ref().expect("no tombstone");
        let version = if i % 10 == 0 { "second" } else { "first" };
        assert_eq!(value["text"], format!("{version} version {i}"));
        assert_eq!(value["id"], format!("p{i}"));
    }
    // Provenance and producer headers on every record.
    assert!(out.iter().all(|m| m.headers["fretflow.source"].starts_with(&format!("{input}/"))));
    assert!(out.iter().all(|m| m.headers["fretflow.producer"].starts_with("fretflow/")));
    assert_eq!(topic_config(&connection(&bootstrap), &output, "cleanup.policy").unwrap().as_deref(), Some("compact"));
    // Everything read was committed: a restart would read nothing again.
    let committed: i64 = committed(&bootstrap, &group, &input, 3).values().sum();
    assert_eq!(committed, 1100);
}

#[test]
fn tombstone_in_gives_tombstone_out() {
    let Some(bootstrap) = broker() else { return };
    let (input, output, group) = (unique("in"), unique("out"), unique("group"));
    create_topic(&bootstrap, &input, 1);
    produce(&bootstrap, &input, &[passage("a", "alpha"), passage("b", "beta"), tombstone("a")]);
    let (source, sink) = configs(&input, &output, &group);
    passthrough::run(&connection(&bootstrap), &source, &sink, &options(1), Identity { source_topic: input.clone() })
        .unwrap();
    let out = read_all(&bootstrap, &output);
    let latest = latest_by_key(&out);
    assert_eq!(latest["a"], None, "a's last record is a tombstone: {out:?}");
    assert_eq!(latest["b"].as_ref().unwrap()["text"], "beta");
    assert_eq!(out.iter().filter(|m| m.value.is_none()).count(), 1);
}

#[test]
fn malformed_messages_go_to_the_dead_letter_topic_with_their_reason_and_the_rest_flows_on() {
    let Some(bootstrap) = broker() else { return };
    let (input, output, group) = (unique("in"), unique("out"), unique("group"));
    create_topic(&bootstrap, &input, 2);
    let raw = |key: &str, value: &str| (Some(key.as_bytes().to_vec()), Some(value.as_bytes().to_vec()));
    let oversize = serde_json::json!({"id": "big", "text": "x".repeat(5000)}).to_string();
    let mut messages: Vec<_> = (0..10).map(|i| passage(&format!("ok{i}"), "fine")).collect();
    messages.insert(2, raw("bad1", "this is not json"));
    messages.insert(5, raw("bad2", r#"{"text":"no id here"}"#));
    messages.insert(7, raw("bad3", r#"{"id":"bad3","text":"   "}"#));
    messages.push(raw("big", &oversize));
    produce(&bootstrap, &input, &messages);

    let (mut source, sink) = configs(&input, &output, &group);
    source.max_message_bytes = 4096;
    passthrough::run(&connection(&bootstrap), &source, &sink, &options(1), Identity { source_topic: input.clone() })
        .unwrap();

    let latest = latest_by_key(&read_all(&bootstrap, &output));
    let expected: BTreeSet<String> = (0..10).map(|i| format!("ok{i}")).collect();
    assert_eq!(latest.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let dead = read_all(&bootstrap, &format!("{output}.dead-letter"));
    let reasons: BTreeMap<String, String> =
        dead.iter().map(|m| (m.key.clone().unwrap(), m.headers["fretflow.error"].clone())).collect();
    let want: BTreeMap<String, String> =
        [("bad1", "not_json"), ("bad2", "missing_id"), ("bad3", "empty_text"), ("big", "oversize")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    assert_eq!(reasons, want);
    let not_json = dead.iter().find(|m| m.key.as_deref() == Some("bad1")).unwrap();
    assert_eq!(not_json.value.as_deref(), Some(&b"this is not json"[..]), "the original value is kept");
    assert!(not_json.headers["fretflow.error.message"].contains("not a JSON object"));
    assert!(not_json.headers["fretflow.source"].starts_with(&format!("{input}/")));
}

#[test]
fn a_consumer_dropped_before_the_sink_acknowledged_resumes_from_committed_offsets_and_loses_nothing() {
    let Some(bootstrap) = broker() else { return };
    let (input, output, group) = (unique("in"), unique("out"), unique("group"));
    create_topic(&bootstrap, &input, 3);
    let messages: Vec<_> = (0..300).map(|i| passage(&format!("p{i}"), "text")).collect();
    produce(&bootstrap, &input, &messages);
    let conn = connection(&bootstrap);
    let (mut source_config, sink_config) = configs(&input, &output, &group);
    source_config.buffer_records = 50;
    // Consumer-group assignment here (the other tests use the default, static): a dropped consumer leaves
    // the group, and its successor is assigned the partitions and resumes from the group's commits.
    source_config.partitioning = fretflow::connectors::kafka::source::Partitioning::Group;

    let poll_until = |source: &mut KafkaSource, epoch: u64, want: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = Vec::new();
        while got.len() < want && Instant::now() < deadline {
            got.extend(source.poll_batch(epoch, want - got.len(), Duration::from_millis(100)).unwrap());
        }
        got
    };
    // First life: epoch 1 is written and acknowledged, then committed; epoch 2 is read and handed to the
    // sink, but the process "dies" before the acknowledgement and the commit.
    let first_committed = {
        let mut source = KafkaSource::start(&conn, &source_config, 0, 1).unwrap();
        let sink = KafkaSink::start(&conn, &sink_config).unwrap();
        let epoch1 = poll_until(&mut source, 1, 120);
        assert_eq!(epoch1.len(), 120);
        for r in &epoch1 {
            sink.send(1, &SinkRecord::upsert(&r.event.as_ref().unwrap().id, "v")).unwrap();
        }
        sink.flush(Duration::from_secs(30)).unwrap();
        assert_eq!(sink.unacked_through(1), 0);
        source.commit_through(1).unwrap();
        let epoch2 = poll_until(&mut source, 2, 100);
        assert_eq!(epoch2.len(), 100);
        let committed = source.committed().clone();
        drop(source); // no commit of epoch 2
        committed
    };
    assert_eq!(first_committed.values().sum::<i64>(), 120);

    // Second life: exactly the records at and after the committed offsets come again.
    let mut source = KafkaSource::start(&conn, &source_config, 0, 1).unwrap();
    let replay = poll_until(&mut source, 1, 180);
    assert_eq!(replay.len(), 180, "every uncommitted record is read again");
    for r in &replay {
        let from = first_committed.get(&r.partition).copied().unwrap_or(0);
        assert!(r.offset >= from, "partition {} offset {} is below the committed {from}", r.partition, r.offset);
    }
    assert!(source.poll_batch(1, 10, Duration::from_millis(1500)).unwrap().is_empty(), "nothing beyond the end");
    source.commit_through(1).unwrap();
    assert_eq!(committed(&bootstrap, &group, &input, 3).values().sum::<i64>(), 300);
}
