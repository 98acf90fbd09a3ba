//! The FRet dataflow between the Kafka source and sink (connectors::kafka::fret), against the real
//! broker, with the instant word-overlap labeler and a bag-of-words embedder: passages in over 3
//! partitions and 2 workers, one live example per query key out, provenance headers, and a passage
//! deleted in the same run gives tombstones for the examples it seeded.
#[path = "dataflow_support/mod.rs"]
mod dataflow_support;
mod kafka_support;

use fretflow::connectors::kafka::{SinkConfig, SourceConfig};
use fretflow::dataflow::async_op::BatchPolicy;
use fretflow::dataflow::embedder::SharedEmbedder;
use fretflow::dataflow::instant::OverlapLabeler;
use fretflow::dataflow::params::FretParams;
use fretflow::dataflow::params::Limits;
use fretflow::dataflow::progress::Metrics;
use fretflow::dataflow::stages::Stages;
use fretflow::pipeline::kafka::fret::FretTransform;
use fretflow::pipeline::kafka::passthrough::{self, RunOptions};
use kafka_support::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The topic's messages, or none while it does not exist yet.
fn read_all_if_exists(bootstrap: &str, topic: &str) -> Vec<Read> {
    match fretflow::connectors::kafka::admin::partition_count(&connection(bootstrap), topic) {
        Ok(Some(_)) => read_all(bootstrap, topic),
        _ => Vec::new(),
    }
}

const TOPICS: [&str; 6] = ["wing", "boundary", "shock", "heat", "flutter", "nozzle"];

#[test]
fn fret_over_kafka_gives_one_live_example_per_query_and_tombstones_for_a_deleted_seed() {
    let Some(bootstrap) = broker() else { return };
    let (input, output, group) = (unique("in"), unique("fret"), unique("group"));
    create_topic(&bootstrap, &input, 3);
    let messages: Vec<_> = (0..30)
        .map(|i| {
            let topic = TOPICS[i % TOPICS.len()];
            passage(&format!("p{i}"), &format!("{topic} layer study number {i} of the {topic} problem"))
        })
        .collect();
    produce(&bootstrap, &input, &messages);

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
    let stages = Stages {
        labeler: Arc::new(OverlapLabeler::new(4)),
        embedder: SharedEmbedder::new("test:words", dataflow_support::WordEmbedder),
        runtime: runtime.handle().clone(),
        generate_batch: BatchPolicy { max_batch: 8, max_wait: Duration::ZERO, max_in_flight: 2 },
        judge_batch: BatchPolicy { max_batch: 8, max_wait: Duration::ZERO, max_in_flight: 2 },
        embed_batch: BatchPolicy { max_batch: 16, max_wait: Duration::ZERO, max_in_flight: 1 },
        // Near-duplicate queries off: the 30 passages share their first words by topic, so their queries coincide.
        fret: FretParams { neighbours: 3, duplicate_queries: None, ..FretParams::default() },
        limits: Limits::default(),
        metrics: Arc::new(Metrics::default()),
    };
    let mut source = SourceConfig::new(&input);
    source.group_id = group.clone();
    let options = RunOptions { workers: 2, idle_exit: Some(Duration::from_secs(8)), ..RunOptions::default() };
    let transform = FretTransform { source_topic: input.clone(), stages };
    let run = {
        let (bootstrap, output) = (bootstrap.clone(), output.clone());
        std::thread::spawn(move || {
            passthrough::run(&connection(&bootstrap), &source, &SinkConfig::new(&output), &options, transform)
        })
    };
    // Once p7's example is out, delete p7 while the pipeline runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    let seeds =
        |out: &[Read]| -> Vec<String> { out.iter().filter_map(|m| m.headers.get("fretflow.seed").cloned()).collect() };
    while !seeds(&read_all_if_exists(&bootstrap, &output)).contains(&"p7".to_owned()) {
        assert!(Instant::now() < deadline, "no example seeded by p7 within 60 s");
        std::thread::sleep(Duration::from_millis(300));
    }
    produce(&bootstrap, &input, &[tombstone("p7")]);
    let reports = run.join().unwrap().unwrap();
    assert_eq!(reports.iter().map(|r| r.records).sum::<u64>(), 31);

    let out = read_all(&bootstrap, &output);
    let latest = latest_by_key(&out);
    let live: Vec<_> = latest.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k, v))).collect();
    assert!(live.len() >= 20, "most passages seed a live example: {} of 29", live.len());
    for (key, example) in &live {
        assert_eq!(example["query_id"], key.as_str());
        assert_ne!(example["seed_id"], "p7", "the deleted passage seeds no live example");
        assert!(example["positive"]["id"].is_string());
    }
    // What p7 seeded is retracted by a tombstone.
    let seeded_by_p7: Vec<&String> = out
        .iter()
        .filter(|m| m.headers.get("fretflow.seed").map(String::as_str) == Some("p7"))
        .filter_map(|m| m.key.as_ref())
        .collect();
    assert!(!seeded_by_p7.is_empty());
    for key in seeded_by_p7 {
        assert_eq!(latest[key], None, "example {key} of the deleted passage p7 ends in a tombstone");
    }
    let upsert = out.iter().find(|m| m.value.is_some()).unwrap();
    for header in ["fretflow.seed", "fretflow.generator", "fretflow.judge", "fretflow.embedder", "fretflow.producer"] {
        assert!(upsert.headers.contains_key(header), "{header} missing: {:?}", upsert.headers);
    }
    drop(runtime);
}
