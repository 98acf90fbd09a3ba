//! Checkpoints: a trained checkpoint loads in Python `sentence_transformers.SentenceTransformer(path)` and
//! gives fretflow's embeddings (cosine >= 0.99999); a trainer killed after its step-2 checkpoint resumes
//! with its optimizer state and ends at the same weights as an uninterrupted 4-step run (max abs
//! difference <= 1e-6); a stop flag (Ctrl-C) ends a run at the next step; retention keeps the last K and the
//! best; the manifest and plot are written; a run with the distillation term adds it to the loss and records
//! its settings in `fretflow.json`.
use fretflow::embed::{EncoderOptions, SentenceEncoder, TextEmbedder};
use fretflow::records::Metrics;
use fretflow::train::buffer::SamplerConfig;
use fretflow::train::checkpoint::{read_state, LATEST};
use fretflow::train::data::QueryFormat;
use fretflow::train::gradcache::BackwardConfig;
use fretflow::train::manifest::{read_manifest, CheckpointEvaluator, PLOT};
use fretflow::train::optim::OptimConfig;
use fretflow::train::promotion::PromotionConfig;
use fretflow::train::source::{ChangeSource, FileSource};
use fretflow::train::{DistillTeacher, GeckoLoss, TrainError, Trainer, TrainerConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tch::Tensor;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn fret() -> PathBuf {
    Path::new(ROOT).join("tests/fixtures/train/fret_small.jsonl")
}

fn config(out: &Path, max_steps: u64, every: u64) -> TrainerConfig {
    TrainerConfig {
        model: "all-MiniLM-L6-v2".into(),
        out_dir: out.to_path_buf(),
        max_steps: Some(max_steps),
        loss: GeckoLoss { matryoshka_dims: vec![384, 128], ..GeckoLoss::default() },
        optimizer: OptimConfig { lr: 5e-4, warmup_steps: 1, ..OptimConfig::default() },
        sampler: SamplerConfig { batch_size: 4, hard_negatives: 1, pair_mix_ratio: 0.0, seed: 11 },
        backward: BackwardConfig::default(),
        checkpoint_every_steps: Some(every),
        checkpoint_every_minutes: None,
        keep_last: 10,
        best_metric: "ndcg@10".into(),
        min_examples: 1,
        pair_datasets: vec![],
        resume: true,
        promotion: PromotionConfig::default(),
        query_format: QueryFormat::Task,
        examples: Default::default(),
    }
}

fn options() -> EncoderOptions {
    EncoderOptions { max_seq_length: Some(64), ..EncoderOptions::default() }
}

fn weights(dir: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("model.safetensors")).unwrap().into_iter().collect()
}

fn max_weight_diff(a: &Path, b: &Path) -> f64 {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    wa.iter()
        .filter(|(_, t)| t.is_floating_point())
        .map(|(n, t)| (t - &wb[n]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

const TEXTS: [&str; 4] = [
    "task: Given a query, find a passage | query: boundary layer transition at supersonic speeds",
    "the pressure distribution over a cone at incidence",
    "Über die Stabilität dünner Schalen — ein Überblick 🚀",
    "",
];

#[test]
fn trained_checkpoint_loads_in_sentence_transformers_with_the_same_embeddings() {
    let out = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(config(out.path(), 2, 2), options()).unwrap();
    trainer.run(&mut FileSource::new(&fret())).unwrap();
    let ckpt = out.path().join(LATEST).canonicalize().unwrap();
    assert!(ckpt.ends_with("checkpoint-00000002"), "{}", ckpt.display());
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "modules.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "fretflow.json",
        "optimizer.safetensors",
    ] {
        assert!(ckpt.join(f).is_file(), "checkpoint lacks {f}");
    }
    // The model card: Hugging Face's own parser reads its front matter; it shows the data's provenance.
    let card = std::fs::read_to_string(ckpt.join("README.md")).expect("the checkpoint has a model card");
    assert!(card.contains("generator `fixture`") && card.contains("## Evaluation"), "{card}");
    let parsed = Command::new(Path::new(ROOT).join(".venv/bin/python"))
        .args([
            "-c",
            "import sys\nfrom huggingface_hub import ModelCard\nd = ModelCard.load(sys.argv[1]).data\n\
            print(d.base_model, d.library_name, d.pipeline_tag, 'fretflow' in d.tags)",
        ])
        .arg(ckpt.join("README.md"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&parsed.stdout).trim(),
        "sentence-transformers/all-MiniLM-L6-v2 sentence-transformers sentence-similarity True",
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );

    let base = SentenceEncoder::from_name("all-MiniLM-L6-v2", options()).unwrap();
    let base_names: Vec<String> = weights(base.model_dir()).into_keys().collect();
    assert_eq!(weights(&ckpt).into_keys().collect::<Vec<_>>(), base_names, "same tensor names as the base file");

    let ours = SentenceEncoder::load(&ckpt, options()).unwrap().embed(&TEXTS).unwrap();
    let before = base.embed(&TEXTS).unwrap();
    let moved = (&ours - &before).abs().max().double_value(&[]);
    assert!(moved > 1e-3, "training did not change the saved embeddings (max change {moved})");

    let script = "import json, sys\nfrom sentence_transformers import SentenceTransformer\n\
        m = SentenceTransformer(sys.argv[1], device='cpu')\nm.max_seq_length = 64\n\
        texts = json.loads(sys.stdin.read())\n\
        print(json.dumps(m.encode(texts, convert_to_tensor=True, normalize_embeddings=False).tolist()))";
    let mut child = Command::new(Path::new(ROOT).join(".venv/bin/python"))
        .args(["-c", script, ckpt.to_str().unwrap()])
        .env("HF_HUB_OFFLINE", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the project's .venv python runs (make test sets it up)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(serde_json::to_string(&TEXTS).unwrap().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "sentence-transformers could not load the checkpoint");
    let theirs: Vec<Vec<f32>> = serde_json::from_slice(&output.stdout).unwrap();
    for (i, row) in theirs.iter().enumerate() {
        let t = Tensor::from_slice(row);
        let o = ours.get(i as i64);
        let cos = (&t * &o).sum(tch::Kind::Float).double_value(&[])
            / (t.norm().double_value(&[]) * o.norm().double_value(&[]));
        assert!(cos >= 0.99999, "text {i}: cosine {cos} between sentence-transformers and fretflow");
    }
}

#[test]
fn killed_trainer_resumes_from_latest_checkpoint_without_losing_steps() {
    let straight = tempfile::tempdir().unwrap();
    Trainer::new(config(straight.path(), 4, 2), options()).unwrap().run(&mut FileSource::new(&fret())).unwrap();

    // The interrupted run: checkpoint at step 2, one more step, then the process dies (dropped).
    let killed = tempfile::tempdir().unwrap();
    {
        let mut trainer = Trainer::new(config(killed.path(), 4, 2), options()).unwrap();
        trainer.apply(&FileSource::new(&fret()).poll(Duration::ZERO).unwrap());
        for _ in 0..3 {
            let report = trainer.train_step().unwrap();
            if report.step == 2 {
                trainer.checkpoint().unwrap();
            }
        }
    }
    let mut resumed = Trainer::new(config(killed.path(), 4, 2), options()).unwrap();
    assert_eq!(resumed.step(), 2, "restarts from the newest checkpoint, not from scratch");
    assert_eq!(resumed.run(&mut FileSource::new(&fret())).unwrap().steps, 2, "redoes steps 3 and 4 only");

    let a = straight.path().join("checkpoint-00000004");
    let b = killed.path().join("checkpoint-00000004");
    let diff = max_weight_diff(&a, &b);
    assert!(diff <= 1e-6, "resumed weights differ from the uninterrupted run by {diff}");
    let (sa, sb) = (read_state(&a).unwrap(), read_state(&b).unwrap());
    assert_eq!((sa.step, sa.examples_seen), (sb.step, sb.examples_seen));
    let (oa, ob): (BTreeMap<_, _>, BTreeMap<_, _>) = (
        Tensor::read_safetensors(a.join("optimizer.safetensors")).unwrap().into_iter().collect(),
        Tensor::read_safetensors(b.join("optimizer.safetensors")).unwrap().into_iter().collect(),
    );
    let moment_diff = oa.iter().map(|(n, t)| (t - &ob[n]).abs().max().double_value(&[])).fold(0.0, f64::max);
    assert!(moment_diff <= 1e-6, "optimizer moments differ by {moment_diff}");
}

/// Scores checkpoints by a fixed table: step 2 is the best.
struct TableEvaluator;

impl CheckpointEvaluator for TableEvaluator {
    fn evaluate(&mut self, model_dir: &Path, step: u64) -> Result<BTreeMap<String, Metrics>, TrainError> {
        if step > 0 {
            assert_eq!(read_state(model_dir).unwrap().step, step, "evaluates the checkpoint just written");
        }
        let score = [0.30, 0.31, 0.40, 0.33, 0.35][step as usize % 5];
        Ok(BTreeMap::from([("fake".to_string(), Metrics::from([("ndcg@10".to_string(), score)]))]))
    }
}

#[test]
fn retention_keeps_the_last_and_the_best_and_the_manifest_records_every_checkpoint() {
    let out = tempfile::tempdir().unwrap();
    let cfg = TrainerConfig { keep_last: 1, ..config(out.path(), 4, 1) };
    let mut trainer = Trainer::new(cfg, options()).unwrap();
    trainer.set_evaluator(Box::new(TableEvaluator));
    trainer.run(&mut FileSource::new(&fret())).unwrap();
    let events = read_manifest(out.path()).unwrap();
    assert_eq!(events.iter().map(|e| e.step).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4], "base + 4 checkpoints");
    let kept: Vec<bool> = (1..=4).map(|s| out.path().join(format!("checkpoint-{s:08}")).is_dir()).collect();
    assert_eq!(kept, vec![false, true, false, true], "best (step 2) and last (step 4) kept");
    let png = std::fs::read(out.path().join(PLOT)).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(!out.path().read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp")));
}

#[test]
fn a_stop_flag_ends_training_at_the_next_step_with_its_checkpoint_kept() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let out = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(config(out.path(), 10, 2), options()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    trainer.stop_when(Arc::clone(&stop));
    // As Ctrl-C would: the flag is set while training runs (here, when the step-2 checkpoint lands).
    let setter = Arc::clone(&stop);
    trainer.on_checkpoint(Box::new(move |_| {
        setter.store(true, Ordering::Relaxed);
        Ok(())
    }));
    let summary = trainer.run(&mut FileSource::new(&fret())).unwrap();
    assert_eq!((summary.steps, trainer.step()), (2, 2), "stopped at the step after the flag, not at 10");
    assert_eq!(read_state(&out.path().join(LATEST)).unwrap().step, 2, "the latest checkpoint is the last step");
    assert_eq!(read_manifest(out.path()).unwrap().len(), 1, "no second checkpoint of the same step");
}

/// fret_small.jsonl with a judge's ranking on every upsert: the positive first, an unjudged-text candidate,
/// the hard negative last (QL and RC agree with the order; QL prefers the positive by only 1 nat).
fn fret_with_rankings(dir: &Path) -> PathBuf {
    let lines: Vec<String> = std::fs::read_to_string(fret())
        .unwrap()
        .lines()
        .map(|line| {
            let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(example) = record.get_mut("example") {
                let entry = |id: &serde_json::Value, cosine: f64, ql: f64, rc: f64, rank: usize| {
                    let rrf = 2.0 / (60.0 + rank as f64);
                    serde_json::json!({"id": id, "cosine": cosine, "ql": ql, "rc": rc, "ql_rank": rank,
                        "rc_rank": rank, "rrf": rrf})
                };
                let ranking = serde_json::json!([
                    entry(&example["positive"]["id"], 0.6, -40.0, 0.9, 1),
                    entry(&serde_json::json!("elsewhere"), 0.7, -45.0, 0.6, 2),
                    entry(&example["negatives"][0]["id"], 0.65, -41.0, 0.3, 3),
                ]);
                example["ranking"] = ranking;
            }
            record.to_string()
        })
        .collect();
    let path = dir.join("fret_ranked.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn a_distillation_run_trains_and_records_its_settings_in_fretflow_json() {
    let data_dir = tempfile::tempdir().unwrap();
    let data = fret_with_rankings(data_dir.path());
    let (plain_out, distill_out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let plain = config(plain_out.path(), 2, 2);
    let (distill_teacher, distill_temperature) = (DistillTeacher::Ql, 1.0);
    let loss = GeckoLoss { distill_weight: 0.5, distill_teacher, distill_temperature, ..plain.loss.clone() };
    let distill = TrainerConfig { loss, ..config(distill_out.path(), 2, 2) };

    // The same first batch with and without the term: KL >= 0, and > 0 unless the student already agrees.
    let first_loss = |cfg: TrainerConfig| {
        let mut trainer = Trainer::new(cfg, options()).unwrap();
        trainer.apply(&FileSource::new(&data).poll(Duration::ZERO).unwrap());
        (trainer.train_step().unwrap().loss, trainer)
    };
    let (without, _) = first_loss(plain);
    let (with, mut trainer) = first_loss(distill);
    assert!(with > without + 1e-4, "the distillation term reaches the loss: {with} vs {without}");

    assert_eq!(trainer.run(&mut FileSource::new(&data)).unwrap().steps, 1, "one more step, to step 2");
    let ckpt = distill_out.path().join(LATEST);
    let state = read_state(&ckpt).unwrap();
    assert_eq!(state.step, 2);
    let recorded = (state.loss.distill_weight, state.loss.distill_teacher, state.loss.distill_temperature);
    assert_eq!(recorded, (0.5, DistillTeacher::Ql, 1.0));
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("fretflow.json")).unwrap()).unwrap();
    let raw = &raw["loss"];
    assert_eq!((raw["distill_weight"].as_f64(), raw["distill_teacher"].as_str()), (Some(0.5), Some("ql")));
}
