//! Crash anywhere, lose no LLM work (issue 17): `fretflow run` on a file pipeline with the real local LLM
//! (the packaged SmolLM2) and its durable cache, killed with SIGKILL at seeded random moments and rerun,
//! ends with the same FRet set as an uninterrupted run, and the rerun asks the model only what the killed
//! run had not finished: rerun model calls = uninterrupted calls - entries the killed run committed.
//!
//! Batches of one request (LLM and encoder) make every request, and so every score, independent of what
//! else is in flight, so the comparison can be exact on ids; one generation attempt keeps sampling out.
use fretflow::llm::cache::LlmCache;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASSAGES: usize = 10;

fn pipeline(dir: &Path, cache: &Path, out: &str) -> PathBuf {
    let sample = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/sample/passages.jsonl")).unwrap();
    let corpus = dir.join("corpus.jsonl");
    if !corpus.exists() {
        let lines: Vec<&str> = sample.lines().take(PASSAGES).collect();
        std::fs::write(&corpus, lines.join("\n") + "\n").unwrap();
    }
    let toml = format!(
        r#"workers = 1
cache = "{cache}"
[source]
path = "corpus.jsonl"
epoch_records = 3
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
snapshot = ["{out}/fret.jsonl"]
dead_letters = "{out}/dead.jsonl"
summary = "{out}/summary.json"
"#,
        cache = cache.display()
    );
    let path = dir.join(format!("{out}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

fn command(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fretflow"));
    c.args(["run", "--no-progress"]).arg(config).env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn run_to_end(config: &Path) -> Duration {
    let started = Instant::now();
    let out = command(config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    started.elapsed()
}

/// Each example by query id: its query, positive and negatives (ids), the parts the judge decides.
fn fret_set(path: &Path) -> BTreeMap<String, (String, String, Vec<String>)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            let ids = |v: &serde_json::Value| {
                v.as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap().to_owned()).collect()
            };
            let key = e["query_id"].as_str().unwrap().to_owned();
            (
                key,
                (
                    e["query"].as_str().unwrap().to_owned(),
                    e["positive"]["id"].as_str().unwrap().to_owned(),
                    ids(&e["negatives"]),
                ),
            )
        })
        .collect()
}

fn summary(path: &Path) -> (u64, u64) {
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    (s["llm_calls"].as_u64().unwrap(), s["llm_cache_hits"].as_u64().unwrap())
}

#[test]
fn a_run_killed_anywhere_loses_no_finished_llm_call_and_ends_with_the_same_fret_set() {
    let dir = tempfile::tempdir().unwrap();
    let reference_config = pipeline(dir.path(), &dir.path().join("reference.redb"), "reference");
    let full = run_to_end(&reference_config);
    let reference = fret_set(&dir.path().join("reference/fret.jsonl"));
    let (calls, _) = summary(&dir.path().join("reference/summary.json"));
    assert!(
        reference.len() >= PASSAGES / 2 && calls as usize >= reference.len(),
        "{} examples, {calls} calls",
        reference.len()
    );

    // Kill points spread over the run (seeded, recorded in the assertion messages).
    let mut state = 17u64;
    let mut mid_run = 0;
    for trial in 0..2 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let fraction = 0.2 + 0.6 * ((state >> 40) as f64 / (1u64 << 24) as f64);
        let cache = dir.path().join(format!("trial{trial}.redb"));
        let out = format!("trial{trial}");
        let config = pipeline(dir.path(), &cache, &out);
        let mut child = command(&config).spawn().unwrap();
        std::thread::sleep(full.mul_f64(fraction));
        let killed = child.try_wait().unwrap().is_none();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let committed = LlmCache::open(&cache).unwrap().len().unwrap();
        run_to_end(&config);
        let (rerun_calls, hits) = summary(&dir.path().join(format!("{out}/summary.json")));
        let what = format!(
            "trial {trial}: killed at {:.0}% of {full:?} (still running: {killed}), {committed} entries committed",
            100.0 * fraction
        );
        assert_eq!(fret_set(&dir.path().join(format!("{out}/fret.jsonl"))), reference, "{what}: the same FRet set");
        assert_eq!(rerun_calls, calls - committed, "{what}: the rerun asks the model only what was not finished");
        assert!(hits >= committed, "{what}: every committed answer is read from the cache ({hits} hits)");
        eprintln!("{what}: the rerun made {rerun_calls} of {calls} model calls, {hits} cache hits");
        mid_run += usize::from(killed && committed > 0 && committed < calls);
    }
    assert!(mid_run > 0, "no kill landed while LLM calls were being made: the test exercised nothing");
}
