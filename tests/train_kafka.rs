//! `fretflow train --kafka-topic` against the real broker: the trainer reads the FRet topic from the
//! beginning (tombstones remove their examples from the replay buffer, malformed values are skipped and
//! counted, never fatal), checkpoints as configured, and publishes one event per checkpoint, equal to its
//! `checkpoints.jsonl` line, to the events topic; `--kafka-idle-exit` ends a run over a finite topic.
//!
//! Run with the broker up: `scripts/with-kafka.sh cargo test --test train_kafka`.
mod kafka_support;

use fretflow::records::CheckpointEvent;
use fretflow::records::Example;
use fretflow::records::Passage;
use fretflow::train::checkpoint::{checkpoint_name, read_state, LATEST};
use fretflow::train::manifest::read_manifest;
use kafka_support::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOPICS: [&str; 8] = ["wing", "shear", "heat", "plate", "shock", "vortex", "nozzle", "panel"];

/// A small FRet example whose query, positive and negative are distinct texts.
fn example(i: usize) -> Example {
    let (topic, other) = (TOPICS[i % TOPICS.len()], TOPICS[(i + 3) % TOPICS.len()]);
    let passage = |id: String, text: String| Passage { id, title: String::new(), text };
    Example {
        query_id: format!("q{i}"),
        task: "Given a query, find a passage that has the answer to the query".into(),
        query: format!("{topic} experiment number {i}"),
        seed_id: format!("p{i}"),
        positive: passage(format!("p{i}"), format!("measurements of the {topic} in experiment {i} at several speeds")),
        negatives: vec![passage(format!("n{i}"), format!("a theory of the {other} unrelated to experiment {i}"))],
        ranking: Vec::new(),
        provenance: Default::default(),
    }
}

fn upsert(e: &Example) -> Raw {
    (Some(e.query_id.as_bytes().to_vec()), Some(serde_json::to_vec(e).unwrap()))
}

/// Runs `fretflow train` with `args`, its output in `dir`, killing it after `limit`; returns
/// (success, stdout, stderr).
fn train(dir: &Path, args: &[&str], limit: Duration) -> (bool, String, String) {
    let (out_path, err_path) = (dir.join("stdout.txt"), dir.join("stderr.txt"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_fretflow"))
        .arg("train")
        .args(args)
        .args(["--max-seq-length", "64", "--device", "cpu", "--warmup-steps", "1", "--lr", "1e-4"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("fretflow train ran over {limit:?}:\n{}", std::fs::read_to_string(&err_path).unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = strip_ansi(&std::fs::read_to_string(err_path).unwrap());
    (status.success(), std::fs::read_to_string(out_path).unwrap(), stderr)
}

/// `text` without ANSI colour sequences (`ESC [ ... m`), as the log formatter may write them.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn trains_on_the_topic_without_retracted_or_malformed_records_and_publishes_one_event_per_checkpoint() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (topic, events) = (unique("fret"), unique("ckpt-events"));
    create_topic(&bootstrap, &topic, 2);
    let mut messages: Vec<Raw> = (0..40).map(|i| upsert(&example(i))).collect();
    messages.extend((0..5).map(|i| tombstone(&format!("q{i}"))));
    messages.push((Some(b"q-garbage".to_vec()), Some(b"{not json".to_vec())));
    messages.push((Some(b"q-partial".to_vec()), Some(br#"{"query_id": "q-partial", "task": "t"}"#.to_vec())));
    produce(&bootstrap, &topic, &messages);

    let out = dir.path().join("out");
    let out_arg = out.display().to_string();
    #[rustfmt::skip]
    let args = [
        "--kafka-topic", &topic, "--bootstrap", &bootstrap, "--kafka-idle-exit", "5", "--steps", "4",
        "--batch-size", "8", "--checkpoint-every", "2", "--events-topic", &events, "--out", &out_arg,
    ];
    let (ok, stdout, stderr) = train(dir.path(), &args, Duration::from_secs(240));
    assert!(ok, "fretflow train failed:\n{stderr}");

    // The replay buffer holds the 35 live examples: the 5 tombstoned ones were removed.
    assert!(stdout.contains("replay buffer: 35 examples (40 upserts and 5 retractions applied)"), "{stdout}");
    assert!(stdout.contains(&format!("kafka topic '{topic}': 47 records read, 2 malformed skipped")), "{stdout}");
    let skipped: Vec<&str> = stderr.lines().filter(|l| l.contains("Skipped a malformed FRet record")).collect();
    assert_eq!(skipped.len(), 2, "{stderr}");
    for line in skipped {
        assert!(line.contains(&topic) && line.contains("partition=") && line.contains("offset="), "{line}");
    }

    // Checkpoints at steps 2 and 4, whose provenance records the buffer without the retracted examples.
    let manifest = read_manifest(&out).unwrap();
    assert_eq!(manifest.iter().map(|e| e.step).collect::<Vec<_>>(), [2, 4]);
    assert_eq!(std::fs::read_link(out.join(LATEST)).unwrap(), Path::new(&checkpoint_name(4)));
    let state = read_state(&out.join(checkpoint_name(4))).unwrap();
    assert_eq!(state.step, 4);
    assert_eq!(state.examples_seen, 32, "4 full batches of 8");
    assert_eq!(state.data["buffer_examples"], 35);
    assert_eq!(state.data["retractions"], 5);
    assert!(state.data["source"].as_str().unwrap().ends_with(&topic), "{}", state.data);

    // The events topic holds exactly the manifest's records, keyed by checkpoint name, in step order.
    let published = read_all(&bootstrap, &events);
    let keys: Vec<_> = published.iter().map(|m| m.key.clone().unwrap()).collect();
    assert_eq!(keys, [checkpoint_name(2), checkpoint_name(4)]);
    let values: Vec<CheckpointEvent> =
        published.iter().map(|m| serde_json::from_slice(m.value.as_deref().unwrap()).unwrap()).collect();
    assert_eq!(values, manifest);
    assert!(published.iter().all(|m| m.headers.contains_key("fretflow.producer")));
}

#[test]
fn idle_exit_ends_a_run_over_a_finite_topic_after_one_pass() {
    let Some(bootstrap) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("fret-idle");
    create_topic(&bootstrap, &topic, 1);
    produce(&bootstrap, &topic, &(0..6).map(|i| upsert(&example(i))).collect::<Vec<_>>());

    // No --steps: once the topic is read and idle for 2 s, one pass over its 6 examples (one batch of 8)
    // is due; steps already taken while waiting count towards it.
    let out = dir.path().join("out");
    let out_arg = out.display().to_string();
    let args = ["--kafka-topic", &topic, "--bootstrap", &bootstrap, "--kafka-idle-exit", "2", "--batch-size", "8"];
    let (ok, stdout, stderr) = train(dir.path(), &[&args[..], &["--out", &out_arg]].concat(), Duration::from_secs(180));
    assert!(ok, "fretflow train failed:\n{stderr}");
    assert!(stderr.contains("Nothing new on the FRet topic within the idle limit"), "{stderr}");
    assert!(stdout.contains("replay buffer: 6 examples"), "{stdout}");
    let manifest = read_manifest(&out).unwrap();
    let last = manifest.last().expect("a final checkpoint");
    assert!(last.step >= 1, "{manifest:?}");
    assert_eq!(read_state(&out.join(checkpoint_name(last.step))).unwrap().step, last.step);
}
