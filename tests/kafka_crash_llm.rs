//! Crash anywhere, lose no LLM work, on a Kafka pipeline (issue 17, item 2): `fretflow run` with the real
//! local LLM (the packaged SmolLM2) and its durable cache, reading a topic and writing the compacted FRet
//! topic, is SIGKILLed at seeded random moments and restarted. After the restart:
//! - the FRet topic holds exactly the keys of an uninterrupted run, each with the same query, positive and
//!   negatives (nothing lost, nothing extra);
//! - the group's committed offsets never moved back and end at the topic's end (each trial's topic is
//!   filled one passage at a time while the run goes, so offsets are committed before the kill; what was
//!   not produced by then arrives while the pipeline is down);
//! - no LLM request answered before the kill is asked again: every model call of the restarted run adds a
//!   new cache entry (calls = entries after - entries at the kill), and answers the killed run committed
//!   are read from the cache.
//!
//! The restarted run replays the topic in other epochs than the killed one read it, so its intermediate
//! top-N lists (and so a few judged pairs) may differ from the uninterrupted run's: the call count is
//! checked against the cache, not against the uninterrupted run. Batches of one request (LLM and encoder)
//! make every answer independent of what else is in flight; one generation attempt keeps sampling out.
//!
//! Run with the broker: `scripts/with-kafka.sh cargo test --test kafka_crash_llm`.
mod kafka_support;

use fretflow::llm::cache::LlmCache;
use kafka_support::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSAGES: usize = 10;

/// Writes a pipeline reading `input` into `output` (group `group`) with its own cache and summary.
fn pipeline(dir: &Path, bootstrap: &str, input: &str, name: &str) -> PathBuf {
    let group = format!("{input}-{name}");
    let output = format!("{input}-{name}-fret");
    let text = format!(
        r#"workers = 1
cache = "{name}.redb"

[kafka]
bootstrap_servers = "{bootstrap}"

[kafka.source]
topic = "{input}"
group_id = "{group}"

[kafka.sink]
topic = "{output}"
partitions = 1

[llm]
backend = "local"
model = "SmolLM2-135M-Instruct"
device = "cpu"
precision = "bf16"

[embedder]
model = "all-MiniLM-L6-v2"
device = "cpu"

[fret]
neighbours = 3
weights = {{ ql = 1.0, rc = 0.0 }}
generation_attempts = 1

[batching]
llm = {{ max_batch = 1, max_wait_ms = 0, max_in_flight = 1 }}
embed = {{ max_batch = 1, max_wait_ms = 0, max_in_flight = 1 }}

[sinks]
summary = "{name}-summary.json"
"#
    );
    write(dir, &format!("{name}.toml"), &text)
}

/// `fretflow run` on `config`, ending once the topic has been quiet for 3 s.
fn fretflow(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fretflow"));
    command
        .args(["run", "--no-progress", "--idle-exit", "3"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn run_to_end(config: &Path) -> Duration {
    let started = Instant::now();
    let out = fretflow(config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    started.elapsed()
}

/// (model calls, cache hits) from a run's summary.
fn summary(dir: &Path, name: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(dir.join(format!("{name}-summary.json"))).unwrap();
    let s: serde_json::Value = serde_json::from_str(&text).unwrap();
    (s["llm_calls"].as_u64().unwrap(), s["llm_cache_hits"].as_u64().unwrap())
}

/// The live FRet set of `topic` by key: query, positive and negatives (ids), the parts the LLM decides.
fn fret_topic(bootstrap: &str, topic: &str) -> BTreeMap<String, (String, String, Vec<String>)> {
    latest_by_key(&read_all(bootstrap, topic))
        .into_iter()
        .filter_map(|(key, value)| {
            let e = value?;
            let ids = |v: &serde_json::Value| {
                v.as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_owned()).collect()
            };
            Some((
                key,
                (
                    e["query"].as_str().unwrap().to_owned(),
                    e["positive"]["id"].as_str().unwrap().to_owned(),
                    ids(&e["negatives"]),
                ),
            ))
        })
        .collect()
}

fn end_offset(bootstrap: &str, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)).unwrap().1
}

#[test]
fn a_kafka_run_killed_anywhere_loses_no_key_no_offset_and_no_finished_llm_call() {
    let Some(bootstrap) = broker() else { return };
    let reference_input = unique("crash-llm");
    create_topic(&bootstrap, &reference_input, 1);
    let sample = std::fs::read_to_string(repo().join("data/sample/passages.jsonl")).unwrap();
    // The sample passages as they are (id, title, text), keyed by id.
    let messages: Vec<Raw> = sample
        .lines()
        .take(PASSAGES)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (Some(v["id"].as_str().unwrap().as_bytes().to_vec()), Some(l.as_bytes().to_vec()))
        })
        .collect();
    produce(&bootstrap, &reference_input, &messages);
    let dir = tempfile::tempdir().unwrap();

    let full = run_to_end(&pipeline(dir.path(), &bootstrap, &reference_input, "reference"));
    let reference = fret_topic(&bootstrap, &format!("{reference_input}-reference-fret"));
    let (calls, _) = summary(dir.path(), "reference");
    assert!(
        reference.len() >= PASSAGES / 2 && calls as usize >= reference.len(),
        "{} examples, {calls} calls",
        reference.len()
    );

    // Kill points (seeded, recorded in the assertion messages): trial 0 at a fraction of the uninterrupted
    // run's time, trial 1 between 1.5 and 5.5 s after the first half of the corpus was committed and the
    // second half began to arrive.
    let mut state = 23u64;
    let mut mid_run = 0;
    let mut committed_mid_run = 0;
    for trial in 0..2 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let fraction = 0.25 + 0.6 * ((state >> 40) as f64 / (1u64 << 24) as f64);
        // Each trial reads its own topic, filled one passage at a time while the run goes, so that the run
        // commits offsets along the way and is killed between commits.
        let name = format!("trial{trial}");
        let input = unique(&format!("crash-llm-{trial}"));
        create_topic(&bootstrap, &input, 1);
        let (stop, resume) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let producer = {
            let (bootstrap, input, messages) = (bootstrap.clone(), input.clone(), messages.clone());
            let (stop, resume) = (Arc::clone(&stop), Arc::clone(&resume));
            std::thread::spawn(move || {
                let mut produced = 0;
                for message in &messages {
                    while produced == PASSAGES / 2 && !resume.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    produce(&bootstrap, &input, std::slice::from_ref(message));
                    produced += 1;
                    std::thread::sleep(Duration::from_millis(1500));
                }
                produced
            })
        };
        let config = pipeline(dir.path(), &bootstrap, &input, &name);
        // The run that gets killed follows the topic (no idle exit), so it is still running at the kill.
        let mut child = Command::new(env!("CARGO_BIN_EXE_fretflow"))
            .args(["run", "--no-progress"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let group = format!("{input}-{name}");
        if trial == 1 {
            // This trial is killed after the run's first offset commit (the producer pauses after half the
            // corpus until the run has committed it, then goes on), so the offset check always has a
            // commit to hold to.
            let deadline = Instant::now() + Duration::from_secs(240);
            while committed(&bootstrap, &group, &input, 1).get(&0).is_none_or(|o| *o < (PASSAGES / 2) as i64) {
                assert!(Instant::now() < deadline, "trial {trial}: the first half was not committed within 240 s");
                assert!(child.try_wait().unwrap().is_none(), "trial {trial}: the run ended on its own");
                std::thread::sleep(Duration::from_millis(200));
            }
            resume.store(true, Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(4).mul_f64(fraction) + Duration::from_millis(1500));
        } else {
            resume.store(true, Ordering::Relaxed);
            std::thread::sleep(full.mul_f64(fraction));
        }
        let killed = child.try_wait().unwrap().is_none();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        let produced = producer.join().unwrap();
        let cache = dir.path().join(format!("{name}.redb"));
        let at_kill = LlmCache::open(&cache).unwrap().len().unwrap();
        let offset_at_kill = committed(&bootstrap, &group, &input, 1).get(&0).copied();
        committed_mid_run += usize::from(offset_at_kill.is_some_and(|o| o > 0));

        // The rest of the corpus arrives while the pipeline is down; the restart reads it all.
        produce(&bootstrap, &input, &messages[produced..]);
        run_to_end(&config);
        let what = format!(
            "trial {trial}: killed (seeded fraction {fraction:.2}; still running: {killed}) with {produced} of \
             {PASSAGES} passages produced, {at_kill} cache entries and offset {offset_at_kill:?} committed"
        );
        let got = fret_topic(&bootstrap, &format!("{input}-{name}-fret"));
        assert_eq!(got.keys().collect::<Vec<_>>(), reference.keys().collect::<Vec<_>>(), "{what}: keys lost or added");
        assert_eq!(got, reference, "{what}: the same FRet set");
        let offset = committed(&bootstrap, &group, &input, 1).get(&0).copied();
        assert_eq!(offset, Some(end_offset(&bootstrap, &input)), "{what}: the restart commits through the end");
        assert!(offset >= offset_at_kill, "{what}: the committed offset moved back to {offset:?}");
        let (rerun_calls, hits) = summary(dir.path(), &name);
        let after = LlmCache::open(&cache).unwrap().len().unwrap();
        assert_eq!(
            rerun_calls,
            after - at_kill,
            "{what}: a model call of the restart asked something already answered"
        );
        if at_kill > 0 {
            assert!(hits > 0, "{what}: the committed answers were not read from the cache");
        }
        eprintln!("{what}: the restart made {rerun_calls} model calls ({calls} uninterrupted), {hits} cache hits");
        mid_run += usize::from(killed && at_kill > 0 && at_kill < calls);
    }
    assert!(mid_run > 0, "no kill landed while LLM calls were being made: the test exercised nothing");
    assert!(committed_mid_run > 0, "no kill landed after an offset commit: the offset check exercised nothing");
}
