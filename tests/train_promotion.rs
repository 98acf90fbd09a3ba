//! The promotion gate: `latest` moves only to a checkpoint that beats the promoted model (at first the base
//! model, evaluated before the first step), so `latest` never gets worse than the base; every checkpoint is
//! still written, followed by `newest` and listed with whether and why it was promoted; a restart continues
//! from `newest` and keeps comparing with the promoted checkpoint read back from `checkpoints.jsonl`; a
//! real training run with a destructive learning rate, evaluated on a tiny BEIR dataset, leaves no `latest`,
//! and the same run with margin -1 promotes every checkpoint.
use fretflow::embed::EncoderOptions;
use fretflow::records::{CheckpointEvent, Metrics};
use fretflow::train::buffer::SamplerConfig;
use fretflow::train::checkpoint::{checkpoint_name, find_latest, point_latest, read_state, LATEST, NEWEST};
use fretflow::train::data::QueryFormat;
use fretflow::train::gradcache::BackwardConfig;
use fretflow::train::manifest::{read_manifest, CheckpointEvaluator};
use fretflow::train::optim::OptimConfig;
use fretflow::train::promotion::PromotionConfig;
use fretflow::train::source::FileSource;
use fretflow::train::{GeckoLoss, TrainError, Trainer, TrainerConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn fret() -> PathBuf {
    Path::new(ROOT).join("tests/fixtures/train/fret_small.jsonl")
}

fn config(out: &Path, max_steps: u64, promotion: PromotionConfig) -> TrainerConfig {
    TrainerConfig {
        model: "all-MiniLM-L6-v2".into(),
        out_dir: out.to_path_buf(),
        max_steps: Some(max_steps),
        loss: GeckoLoss::default(),
        optimizer: OptimConfig { lr: 5e-5, warmup_steps: 1, ..OptimConfig::default() },
        sampler: SamplerConfig { batch_size: 4, hard_negatives: 1, pair_mix_ratio: 0.0, seed: 11 },
        backward: BackwardConfig::default(),
        checkpoint_every_steps: Some(1),
        checkpoint_every_minutes: None,
        keep_last: 10,
        best_metric: "ndcg@10".into(),
        min_examples: 1,
        pair_datasets: vec![],
        resume: true,
        promotion,
        query_format: QueryFormat::Task,
        examples: Default::default(),
    }
}

fn options() -> EncoderOptions {
    EncoderOptions { max_seq_length: Some(64), ..EncoderOptions::default() }
}

/// The step of the checkpoint `link` points at, if the link exists.
fn linked_step(out: &Path, link: &str) -> Option<u64> {
    std::fs::symlink_metadata(out.join(link)).ok()?;
    Some(read_state(&out.join(link)).unwrap().step)
}

/// Scores each model by a fixed table indexed by step (0: the base model), on one dataset named `dataset`,
/// and records which steps it was asked to evaluate.
struct TableEvaluator {
    dataset: &'static str,
    scores: Vec<(f64, f64)>,
    calls: Arc<Mutex<Vec<u64>>>,
}

impl TableEvaluator {
    /// `scores[step]` = (ndcg@10, mrr@10).
    fn new(dataset: &'static str, scores: &[(f64, f64)]) -> (Box<Self>, Arc<Mutex<Vec<u64>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        (Box::new(Self { dataset, scores: scores.to_vec(), calls: Arc::clone(&calls) }), calls)
    }
}

impl CheckpointEvaluator for TableEvaluator {
    fn evaluate(&mut self, model_dir: &Path, step: u64) -> Result<BTreeMap<String, Metrics>, TrainError> {
        if step > 0 {
            assert_eq!(read_state(model_dir).unwrap().step, step, "evaluates the checkpoint of that step");
        }
        self.calls.lock().unwrap().push(step);
        let (ndcg, mrr) = self.scores[step as usize];
        let metrics = Metrics::from([("ndcg@10".to_string(), ndcg), ("mrr@10".to_string(), mrr)]);
        Ok(BTreeMap::from([(self.dataset.to_string(), metrics)]))
    }
}

/// (step, promoted, the step `latest` points at) as a listener sees each checkpoint event.
type Seen = (u64, bool, Option<u64>);

#[test]
fn latest_moves_only_to_a_checkpoint_that_beats_the_promoted_one_and_every_checkpoint_is_listed() {
    let out = tempfile::tempdir().unwrap();
    let out = out.path();
    // Promoted by mrr@10, the best by ndcg@10: base 0.50; step 2 beats it; step 3 is the best by ndcg@10 but
    // not by mrr@10; step 4 ties step 2 (a tie does not promote); step 5 is only the newest.
    let scores = [(0.35, 0.50), (0.30, 0.40), (0.33, 0.55), (0.45, 0.52), (0.31, 0.55), (0.32, 0.54)];
    let gate = PromotionConfig { metric: "mrr@10".into(), ..PromotionConfig::default() };
    let mut trainer = Trainer::new(TrainerConfig { keep_last: 1, ..config(out, 5, gate) }, options()).unwrap();
    let (evaluator, _) = TableEvaluator::new("fake", &scores);
    trainer.set_evaluator(evaluator);
    // What a user following `latest` has after each checkpoint event (listeners run after `latest` moved).
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (log, dir) = (Arc::clone(&seen), out.to_path_buf());
    trainer.on_checkpoint(Box::new(move |e: &CheckpointEvent| {
        assert!(e.baseline || e.path.join("model.safetensors").is_file(), "step {} was written", e.step);
        log.lock().unwrap().push((e.step, e.promoted, linked_step(&dir, LATEST)));
        Ok(())
    }));
    trainer.run(&mut FileSource::new(&fret())).unwrap();

    let seen = seen.lock().unwrap().clone();
    #[rustfmt::skip]
    let expected = vec![
        (0, true, None), (1, false, None), (2, true, Some(2)), (3, false, Some(2)), (4, false, Some(2)),
        (5, false, Some(2)),
    ];
    assert_eq!(seen, expected, "(step, promoted, latest's step) after each event");
    for (_, _, latest) in &seen {
        let promoted_mrr = latest.map_or(scores[0].1, |s| scores[s as usize].1);
        assert!(promoted_mrr >= scores[0].1, "latest never got worse than the base model");
    }

    let manifest = read_manifest(out).unwrap();
    assert_eq!(manifest.iter().map(|e| e.step).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5], "every checkpoint is listed");
    let base = &manifest[0];
    assert!(base.baseline && base.promoted && !base.path.starts_with(out), "the baseline entry: {base:?}");
    assert!(manifest[1..].iter().all(|e| !e.baseline));
    let reasons: Vec<&str> = manifest.iter().map(|e| e.promotion.as_str()).collect();
    assert_eq!(reasons[1], "not promoted: mrr@10 0.4000 <= promoted 0.5000 (base) + margin 0.0000");
    assert_eq!(reasons[2], "mrr@10 0.5500 > promoted 0.5000 (base) + margin 0.0000");
    assert_eq!(reasons[3], "not promoted: mrr@10 0.5200 <= promoted 0.5500 (step 2) + margin 0.0000");
    assert_eq!(reasons[4], "not promoted: mrr@10 0.5500 <= promoted 0.5500 (step 2) + margin 0.0000", "a tie");

    assert_eq!((linked_step(out, LATEST), linked_step(out, NEWEST)), (Some(2), Some(5)));
    // Retention (keep_last 1) keeps the newest (5), the best by ndcg@10 (3) and the promoted one (2).
    let kept: Vec<bool> = (1..=5).map(|s| out.join(checkpoint_name(s)).is_dir()).collect();
    assert_eq!(kept, [false, true, true, false, true]);
    let report = trainer.promotion_report().unwrap();
    assert!(report.starts_with("latest: checkpoint-00000002, promoted at step 2: mrr@10 0.5500 >"), "{report}");
}

#[test]
fn a_restart_continues_from_newest_and_keeps_comparing_with_the_promoted_checkpoint() {
    let out = tempfile::tempdir().unwrap();
    let out = out.path();
    // Step 1 is promoted, step 2 is not; step 3 beats the base (0.35) but not step 1 (0.40).
    let scores = [(0.35, 0.0), (0.40, 0.0), (0.38, 0.0), (0.39, 0.0), (0.41, 0.0)];
    let mut first = Trainer::new(config(out, 2, PromotionConfig::default()), options()).unwrap();
    first.set_evaluator(TableEvaluator::new("fake", &scores).0);
    first.run(&mut FileSource::new(&fret())).unwrap();
    assert_eq!((linked_step(out, LATEST), linked_step(out, NEWEST)), (Some(1), Some(2)));

    let mut second = Trainer::new(config(out, 3, PromotionConfig::default()), options()).unwrap();
    assert_eq!(second.step(), 2, "continues from newest (step 2), not from latest (step 1)");
    let (evaluator, calls) = TableEvaluator::new("fake", &scores);
    second.set_evaluator(evaluator);
    assert_eq!(second.run(&mut FileSource::new(&fret())).unwrap().steps, 1);
    assert_eq!(*calls.lock().unwrap(), [3], "neither the base model nor step 1 is evaluated again");
    let manifest = read_manifest(out).unwrap();
    assert_eq!(manifest.iter().map(|e| e.step).collect::<Vec<_>>(), [0, 1, 2, 3]);
    let last = manifest.last().unwrap();
    assert!(!last.promoted, "0.39 beats the base's 0.35 but not the promoted step 1");
    assert_eq!(last.promotion, "not promoted: ndcg@10 0.3900 <= promoted 0.4000 (step 1) + margin 0.0000");
    assert_eq!((linked_step(out, LATEST), linked_step(out, NEWEST)), (Some(1), Some(3)));

    // Other evaluation datasets after a restart: the promoted checkpoint is measured on them first.
    let mut third = Trainer::new(config(out, 4, PromotionConfig::default()), options()).unwrap();
    let (evaluator, calls) = TableEvaluator::new("other", &scores);
    third.set_evaluator(evaluator);
    third.run(&mut FileSource::new(&fret())).unwrap();
    assert_eq!(*calls.lock().unwrap(), [4, 1], "step 4, then the promoted step 1 on the new dataset");
    let last = read_manifest(out).unwrap().pop().unwrap();
    assert_eq!(last.promotion, "ndcg@10 0.4100 > promoted 0.4000 (step 1) + margin 0.0000");
    assert_eq!(linked_step(out, LATEST), Some(4));

    // An output directory from before `newest` existed: the restart point is `latest`.
    std::fs::remove_file(out.join(NEWEST)).unwrap();
    point_latest(out, &checkpoint_name(3)).unwrap();
    let cfg = config(out, 4, PromotionConfig::default());
    assert_eq!(Trainer::new(cfg, options()).unwrap().step(), 3, "no newest: continues from latest");
}

/// A BEIR dataset made of the FRet fixture: its positives and negatives as the corpus, its queries, and
/// each query's positive as its one relevant passage.
fn tiny_beir(dir: &Path) -> PathBuf {
    let beir = dir.join("beir");
    std::fs::create_dir_all(beir.join("qrels")).unwrap();
    // By id: the fixture upserts some queries twice (the later version wins, as in the trainer).
    let (mut corpus, mut queries) = (BTreeMap::new(), BTreeMap::new());
    for line in std::fs::read_to_string(fret()).unwrap().lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let Some(example) = record.get("example") else { continue };
        for p in std::iter::once(&example["positive"]).chain(example["negatives"].as_array().unwrap()) {
            corpus.insert(p["id"].as_str().unwrap().to_string(), p["text"].as_str().unwrap().to_string());
        }
        let positive = example["positive"]["id"].as_str().unwrap().to_string();
        queries.insert(example["query_id"].as_str().unwrap().to_string(), (example["query"].clone(), positive));
    }
    let jsonl = |lines: Vec<String>| lines.join("\n") + "\n";
    let corpus = corpus.iter().map(|(id, text)| serde_json::json!({"_id": id, "title": "", "text": text}).to_string());
    std::fs::write(beir.join("corpus.jsonl"), jsonl(corpus.collect())).unwrap();
    let lines = queries.iter().map(|(id, (text, _))| serde_json::json!({"_id": id, "text": text}).to_string());
    std::fs::write(beir.join("queries.jsonl"), jsonl(lines.collect())).unwrap();
    let qrels: String = queries.iter().map(|(id, (_, positive))| format!("{id}\t{positive}\t1\n")).collect();
    std::fs::write(beir.join("qrels/test.tsv"), format!("query-id\tcorpus-id\tscore\n{qrels}")).unwrap();
    beir
}

/// `fretflow train` on the FRet fixture with a destructive learning rate, evaluated on `beir`; its stdout.
fn train_destructively(out: &Path, beir: &Path, steps: u64, extra: &[&str]) -> String {
    let data = fret();
    #[rustfmt::skip]
    let args = [
        "train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(),
        "--eval-dataset", beir.to_str().unwrap(), "--steps", &steps.to_string(), "--checkpoint-every", "1",
        "--lr", "0.05", "--warmup-steps", "0", "--batch-size", "4", "--max-seq-length", "64", "--keep-last", "10",
        "--device", "cpu",
    ];
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fretflow")).args(args).args(extra).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[test]
fn a_real_run_that_ruins_the_model_leaves_latest_unwritten_and_margin_minus_one_promotes_it_anyway() {
    let dir = tempfile::tempdir().unwrap();
    let beir = tiny_beir(dir.path());

    let out = dir.path().join("ruined");
    let stdout = train_destructively(&out, &beir, 2, &[]);
    let manifest = read_manifest(&out).unwrap();
    assert_eq!(manifest.iter().map(|e| e.step).collect::<Vec<_>>(), [0, 1, 2]);
    let base = manifest[0].mean_metric("ndcg@10").unwrap();
    assert!(manifest[0].baseline && manifest[0].promoted, "{:?}", manifest[0]);
    for e in &manifest[1..] {
        let ndcg = e.mean_metric("ndcg@10").unwrap();
        assert!(ndcg < base, "lr 0.05 should ruin the model: step {} scored {ndcg} vs base {base}", e.step);
        assert!(!e.promoted && e.promotion.starts_with("not promoted: ndcg@10 "), "{e:?}");
        assert!(e.promotion.contains(&format!("<= promoted {base:.4} (base) + margin 0.0000")), "{}", e.promotion);
        assert!(out.join(checkpoint_name(e.step)).join("model.safetensors").is_file(), "every checkpoint is written");
    }
    assert!(std::fs::symlink_metadata(out.join(LATEST)).is_err(), "no latest: users keep the base model");
    assert!(find_latest(&out).unwrap().is_none());
    assert_eq!(linked_step(&out, NEWEST), Some(2));
    assert!(stdout.contains("no checkpoint beat the base model (best ndcg@10 "), "{stdout}");
    assert!(stdout.contains("latest not written: keep using the base model"), "{stdout}");

    let out = dir.path().join("accepted");
    let stdout = train_destructively(&out, &beir, 2, &["--promote-margin", "-1", "--eval-dims", "128,64"]);
    let manifest = read_manifest(&out).unwrap();
    // --eval-dims: every checkpoint (and the base) is also measured at the truncated dimensions, shown in
    // the model card; promotion still compares the full dimension.
    for e in &manifest {
        let m = &e.metrics[&beir.file_name().unwrap().to_string_lossy().to_string()];
        assert!(m.contains_key("ndcg@10") && m.contains_key("ndcg@10/128") && m.contains_key("recall@100/64"), "{m:?}");
    }
    let card = std::fs::read_to_string(out.join(checkpoint_name(2)).join("README.md")).unwrap();
    assert!(card.contains("| ndcg@10/128 |"), "{card}");
    assert_eq!(manifest.iter().map(|e| (e.step, e.promoted)).collect::<Vec<_>>(), [(0, true), (1, true), (2, true)]);
    assert!(manifest[1].promotion.ends_with("(base) + margin -1.0000"), "{}", manifest[1].promotion);
    assert!(manifest[2].promotion.ends_with("(step 1) + margin -1.0000"), "{}", manifest[2].promotion);
    assert!(manifest[1].promotion.starts_with("ndcg@10 "), "{}", manifest[1].promotion);
    assert_eq!((linked_step(&out, LATEST), linked_step(&out, NEWEST)), (Some(2), Some(2)));
    assert!(stdout.contains("latest: checkpoint-00000002, promoted at step 2: ndcg@10 "), "{stdout}");
}

#[test]
fn a_promotion_metric_the_evaluation_does_not_measure_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let beir = tiny_beir(dir.path());
    let out = dir.path().join("out");
    let data = fret();
    #[rustfmt::skip]
    let args = [
        "train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(),
        "--eval-dataset", beir.to_str().unwrap(), "--promote-metric", "ndcg@100", "--device", "cpu",
    ];
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fretflow")).args(args).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let named = ["--promote-metric", "ndcg@100", "mrr@10"].iter().all(|s| stderr.contains(s));
    assert!(named, "the option, the value and the measured metrics are named: {stderr}");
    assert!(!out.exists(), "nothing was trained");
}

/// The evaluator measures each model as it is used: the base model (step 0) with plain queries, checkpoints
/// with the task prompt they were trained with. On the sample dataset a long prompt changes the base
/// model's metrics, so evaluating the same directory as step 0 and as step 1 must differ, and agree without
/// a prompt.
#[test]
fn checkpoints_are_evaluated_with_their_prompt_and_the_base_model_with_plain_queries() {
    use fretflow::train::evaluate::BeirEvaluator;
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample-hard");
    let base = fretflow::assets::resolve_model("all-MiniLM-L6-v2").unwrap();
    let prompt = "task: Given a question about an unrelated topic such as cooking recipes and gardening, \
                  find any passage at all | query: ";
    let ndcg = |evaluator: &mut BeirEvaluator, step: u64| {
        let metrics = evaluator.evaluate(&base, step).unwrap();
        metrics.values().next().unwrap()["ndcg@10"]
    };
    let mut prompted = BeirEvaluator::new(std::slice::from_ref(&sample), options()).unwrap().with_query_prefix(prompt);
    let (as_base, as_checkpoint) = (ndcg(&mut prompted, 0), ndcg(&mut prompted, 1));
    let mut plain = BeirEvaluator::new(&[sample], options()).unwrap();
    assert_eq!(as_base, ndcg(&mut plain, 1), "step 0 (the base model) is evaluated without the prompt");
    assert_ne!(as_base, as_checkpoint, "checkpoints are evaluated with the prompt");
}
