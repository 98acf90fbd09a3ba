//! `fretflow run --metrics`: a Prometheus scrape of a real run (issue 16, item 4). The run is the sample
//! corpus with the instant labeler slowed to 100 ms per batch (4 requests), so it lasts long enough to be scraped several
//! times; the counters must be there, move, and never pass the run's own summary. One malformed line in
//! the corpus gives a dead letter, counted by stage.
mod prometheus_support;

use prometheus_support::{endpoint, scrape};
use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `fretflow ARGS` in `dir` (with `--metrics 127.0.0.1:0`: the endpoint is named on the first line of
/// stdout), scrapes it every `every` until the process exits (at most 300 s) and checks that it succeeded;
/// returns the scrapes that have `key`.
fn scrape_while_running(dir: &Path, args: &[&str], key: &str, every: Duration) -> Vec<BTreeMap<String, f64>> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fretflow"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let addr = endpoint(&mut stdout);
    let mut scrapes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        if let Some(samples) = scrape(&addr).filter(|s| s.contains_key(key)) {
            scrapes.push(samples);
        }
        std::thread::sleep(every);
    }
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{rest}\n{}", String::from_utf8_lossy(&output.stderr));
    scrapes
}

#[test]
fn a_scrape_during_a_run_shows_counters_that_move_and_agree_with_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/passages.jsonl");
    let passages = dir.path().join("passages.jsonl");
    let corpus = std::fs::read_to_string(&sample).unwrap();
    let live_passages = corpus.lines().filter(|l| !l.trim().is_empty()).count();
    std::fs::write(&passages, format!("{{\"_id\": \"broken\", \"text\": \n{corpus}")).unwrap();
    let pipeline = format!(
        "[source]\npath = {passages:?}\nepoch_records = 8\n[llm]\nbackend = \"instant\"\nlatency_ms = 100\n\
         [embedder]\nmodel = \"all-MiniLM-L6-v2\"\ndevice = \"cpu\"\n[batching]\nllm = {{ max_batch = 4, max_wait_ms = 20, max_in_flight = 1 }}\n\
         [sinks]\nsnapshot = [\"out/fret.jsonl\"]\nsummary = \"out/summary.json\"\ndead_letters = \"out/dead.jsonl\"\n"
    );
    std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
    let args = ["run", "p.toml", "--no-progress", "--metrics", "127.0.0.1:0"];
    let scrapes = scrape_while_running(dir.path(), &args, "fretflow_records_in_total", Duration::from_millis(200));
    assert!(scrapes.len() >= 3, "only {} scrapes with samples during the run", scrapes.len());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/summary.json")).unwrap()).unwrap();
    let names = [
        ("fretflow_records_in_total", "records_in"),
        ("fretflow_queries_total", "queries"),
        ("fretflow_judged_pairs_total", "judged_pairs"),
        ("fretflow_example_changes_total", "example_changes"),
    ];
    for (metric, field) in names {
        let values: Vec<f64> = scrapes.iter().map(|s| s[metric]).collect();
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "{metric} went down: {values:?}");
        let last = summary[field].as_f64().unwrap();
        assert!(values.iter().all(|v| *v <= last), "{metric} passed the summary's {field} = {last}: {values:?}");
    }
    let judged: Vec<f64> = scrapes.iter().map(|s| s["fretflow_judged_pairs_total"]).collect();
    assert!(judged.first() < judged.last(), "judged pairs did not move while scraped: {judged:?}");
    assert!(scrapes.last().unwrap().keys().any(|k| k.starts_with("fretflow_stage_seconds_total{stage=")));
    let last = scrapes.last().unwrap();
    assert!(last.contains_key("fretflow_llm_busy_ratio"));
    // Every passage is in one shard of the index once the run is near its end; the malformed line is one
    // dead letter of the source stage, in the scrape and the summary.
    let indexed: Vec<f64> = scrapes.iter().map(|s| s["fretflow_index_passages"]).collect();
    assert!(indexed.iter().all(|v| *v <= live_passages as f64), "{indexed:?} vs {live_passages} passages");
    assert!(*indexed.last().unwrap() > 0.0, "{indexed:?}");
    assert_eq!(summary["dead_letters_by_stage"]["source"].as_u64(), Some(1), "{summary}");
    assert_eq!(last.get("fretflow_dead_letters_by_stage_total{stage=\"source\"}"), Some(&1.0), "{last:?}");
    assert!(last.keys().any(|k| k.starts_with("fretflow_in_flight_batches{stage=\"judge\"}")), "{last:?}");
}

/// `fretflow train --metrics`: step, examples and loss move while it trains, and the checkpoint metric
/// scraped is the manifest's for the checkpoint the scrape names.
#[test]
fn a_scrape_during_training_shows_steps_and_the_newest_checkpoints_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = repo.join("tests/fixtures/train/fret_small.jsonl");
    let sample = repo.join("data/sample");
    #[rustfmt::skip]
    let args = [
        "train", "--data", data.to_str().unwrap(), "--out", "ck", "--eval-dataset", sample.to_str().unwrap(),
        "--steps", "8", "--checkpoint-every", "4", "--batch-size", "4", "--max-seq-length", "64",
        "--device", "cpu", "--metrics", "127.0.0.1:0",
    ];
    let scrapes = scrape_while_running(dir.path(), &args, "fretflow_checkpoint_step", Duration::from_millis(50));
    assert!(!scrapes.is_empty(), "no scrape with trainer samples");
    let steps: Vec<f64> = scrapes.iter().map(|s| s.get("fretflow_train_steps_total").copied().unwrap_or(0.0)).collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]) && steps.iter().all(|s| *s <= 8.0), "{steps:?}");
    assert!(steps.last() > steps.first() || *steps.last().unwrap() >= 1.0, "steps never moved: {steps:?}");
    let manifest = std::fs::read_to_string(dir.path().join("ck/checkpoints.jsonl")).unwrap();
    let ndcg_by_step: BTreeMap<u64, f64> = manifest
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|e| (e["step"].as_u64().unwrap(), e["metrics"]["sample"]["ndcg@10"].as_f64().unwrap()))
        .collect();
    let mut checked = 0;
    for s in &scrapes {
        let step = s["fretflow_checkpoint_step"] as u64;
        let scraped = s["fretflow_checkpoint_metric{dataset=\"sample\",metric=\"ndcg@10\"}"];
        assert_eq!(
            Some(&scraped),
            ndcg_by_step.get(&step),
            "checkpoint {step}: scraped {scraped}, manifest {ndcg_by_step:?}"
        );
        if let Some(loss) = s.get("fretflow_train_loss").filter(|_| s.get("fretflow_train_steps_total") > Some(&0.0)) {
            assert!(loss.is_finite() && *loss > 0.0, "loss {loss}");
        }
        checked += 1;
    }
    assert!(checked > 0);
}
