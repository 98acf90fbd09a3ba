//! A broker restart in the middle of a pass-through run is survived: the producer and the consumer
//! reconnect, failed commits are retried, and every passage comes out. Uses a private broker on port
//! 19092 (started and wiped by this test) so the shared one on 9092 stays up for the other tests.
mod kafka_support;

use fretflow::connectors::kafka::{SinkConfig, SourceConfig};
use fretflow::pipeline::kafka::passthrough::{self, Identity, RunOptions};
use kafka_support::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

const PORT: u16 = 19092;

fn broker_script(script: &str, extra: &[&str]) {
    let status = Command::new(repo().join("deploy/kafka").join(script))
        .args(["--port", &PORT.to_string()])
        .args(extra)
        .status()
        .unwrap();
    assert!(status.success(), "{script} --port {PORT} failed");
}

#[test]
fn pass_through_survives_a_broker_restart_mid_run_and_loses_nothing() {
    let Some(bootstrap) = start_broker(PORT) else { return };
    let (input, output) = (unique("in"), unique("out"));
    create_topic(&bootstrap, &input, 3);
    produce(&bootstrap, &input, &(0..1000).map(|i| passage(&format!("p{i}"), "text")).collect::<Vec<_>>());

    let mut source = SourceConfig::new(&input);
    source.group_id = unique("group");
    let sink = SinkConfig::new(&output);
    // ~100 batches of 10 records, 100 ms apart: about 10 s of work, restarted in the middle. The idle
    // limit outlasts the broker's downtime.
    let options = RunOptions {
        workers: 2,
        batch: 10,
        throttle: Some(Duration::from_millis(100)),
        idle_exit: Some(Duration::from_secs(40)),
        ..RunOptions::default()
    };
    let run = {
        let (bootstrap, input, source) = (bootstrap.clone(), input.clone(), source.clone());
        std::thread::spawn(move || {
            passthrough::run(&connection(&bootstrap), &source, &sink, &options, Identity { source_topic: input })
        })
    };
    // Restart once the run has committed something, well before it is done.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mid_run = loop {
        let done: i64 = committed(&bootstrap, &source.group_id, &input, 3).values().sum();
        if done > 0 {
            break done;
        }
        if run.is_finished() {
            panic!("the run ended before committing anything: {:?}", run.join().unwrap());
        }
        assert!(Instant::now() < deadline, "nothing committed in 180 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    broker_script("stop.sh", &[]);
    std::thread::sleep(Duration::from_secs(1));
    broker_script("start.sh", &[]);
    // Bounded: a run that never finishes after the restart fails here with what the group committed,
    // instead of holding the whole test suite (seen twice on an overloaded 2-core machine: the consumer
    // never rejoined the group after the restart, so no commit succeeded and the run never drained).
    let deadline = Instant::now() + Duration::from_secs(300);
    while !run.is_finished() {
        if Instant::now() > deadline {
            let committed = committed(&bootstrap, &source.group_id, &input, 3);
            panic!("the run did not finish within 300 s of the broker restart; committed offsets: {committed:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let reports = run.join().unwrap().unwrap();

    assert!(mid_run < 1000, "the restart happened mid-run ({mid_run} records committed before it)");
    assert!(reports.iter().map(|r| r.records).sum::<u64>() >= 1000, "{reports:?}");
    let latest = latest_by_key(&read_all(&bootstrap, &output));
    let want: BTreeSet<String> = (0..1000).map(|i| format!("p{i}")).collect();
    assert_eq!(latest.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(committed(&bootstrap, &source.group_id, &input, 3).values().sum::<i64>(), 1000);
    broker_script("stop.sh", &["--wipe"]);
}
