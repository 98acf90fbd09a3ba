//! Fuzzing of every decoder of user input, on stable Rust with proptest: arbitrary bytes, and valid inputs
//! with bytes flipped, cut or inserted, must give a value or an error, never a panic, and quickly. A
//! failing case is shrunk and its seed saved under `proptest-regressions/` (committed), so it is rerun
//! first from then on. Cases per property: `PROPTEST_CASES` (default 256 here).
//!
//! Decoders: passage JSON lines (`records::decode_json_passage`), FRet change records and examples
//! (`records::Change::from_slice`), Kafka passage messages (`connectors::kafka::source::decode`), FRet
//! JSONL and Parquet files (`connectors::file::fret`), pipeline TOML (`pipeline::config`), GGUF headers
//! (`llm::local::gguf::GgufFile::from_bytes`), passage Parquet files (`connectors::file::source`), BEIR
//! datasets (`eval::beir`), safetensors checkpoints (`embed::weights::load_safetensors`), the checkpoint
//! manifest (`train::manifest::read_manifest`) and the LLM cache
//! (tests/llm_cache.rs covers it with truncated and bit-flipped files).
use fretflow::connectors::file::fret::{read_jsonl, read_parquet};
use fretflow::connectors::file::sink::change_sink;
use fretflow::connectors::file::source::{ParquetPassages, PassageReader};
use fretflow::connectors::kafka::source::decode::decode;
use fretflow::embed::weights::load_safetensors;
use fretflow::eval::beir::{BeirDataset, LoadOptions};
use fretflow::llm::local::gguf::GgufFile;
use fretflow::pipeline::config::PipelineConfig;
use fretflow::records::{decode_json_passage, Change, Example, Passage};
use fretflow::train::manifest::read_manifest;
use proptest::prelude::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Every case must finish within this (a decoder must not spin on bad input).
const CASE_LIMIT: Duration = Duration::from_secs(2);

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

/// A valid input damaged: a few bytes flipped, then cut at one point, with bytes inserted.
fn damaged(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = valid.len().max(1);
    (prop::collection::vec((0..n, any::<u8>()), 0..4), prop::option::of(0..n), prop::collection::vec(any::<u8>(), 0..8))
        .prop_map(move |(flips, cut, insert)| {
            let mut bytes = valid.clone();
            for (at, mask) in flips {
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= mask;
                }
            }
            if let Some(cut) = cut {
                bytes.truncate(cut);
                bytes.extend(insert);
            }
            bytes
        })
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    assert!(started.elapsed() < CASE_LIMIT, "{what} took {:?}", started.elapsed());
    out
}

fn example() -> Example {
    let passage = |id: &str| Passage { id: id.into(), title: "T".into(), text: format!("text of {id}") };
    Example {
        query_id: "q1".into(),
        task: "task".into(),
        query: "query".into(),
        seed_id: "p1".into(),
        positive: passage("p1"),
        negatives: vec![passage("p2")],
        ranking: Vec::new(),
        provenance: Default::default(),
    }
}

const QUICKSTART: &str = include_str!("../pipelines/quickstart.toml");

proptest! {
    #![proptest_config(config())]

    #[test]
    fn passage_lines_never_panic(line in ".{0,200}", damaged in damaged(br#"{"_id":"7","title":"T","text":"some text here","op":"upsert"}"#.to_vec())) {
        timed("decode_json_passage", || decode_json_passage(&line, 1, "f:1")).ok();
        let text = String::from_utf8_lossy(&damaged);
        timed("decode_json_passage", || decode_json_passage(&text, 1, "f:1")).ok();
    }

    #[test]
    fn change_records_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300),
                                  damaged in damaged(serde_json::to_vec(&Change::upsert(example(), 3)).unwrap())) {
        timed("Change::from_slice", || Change::from_slice(&bytes)).ok();
        if let Ok(change) = timed("Change::from_slice", || Change::from_slice(&damaged)) {
            // Whatever parses is a well-formed change: an upsert carries its own key.
            if let Some(e) = change.upserted() {
                prop_assert_eq!(&e.query_id, &change.key);
            }
        }
    }

    #[test]
    fn kafka_passage_messages_never_panic(key in prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
                                          value in prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
                                          damaged in damaged(br#"{"id":"p1","title":"T","text":"x y z"}"#.to_vec())) {
        timed("kafka decode", || decode(key.as_deref(), value.as_deref(), 128, 0, "t/0/0")).ok();
        timed("kafka decode", || decode(Some(b"p1"), Some(&damaged), 128, 0, "t/0/0")).ok();
    }

    #[test]
    fn pipeline_configs_never_panic(text in ".{0,300}", damaged in damaged(QUICKSTART.as_bytes().to_vec())) {
        timed("PipelineConfig::parse", || PipelineConfig::parse(&text, Path::new("p.toml"))).ok();
        let damaged = String::from_utf8_lossy(&damaged);
        timed("PipelineConfig::parse", || PipelineConfig::parse(&damaged, Path::new("p.toml"))).ok();
    }
}

/// FRet files as the sinks write them (JSONL and Parquet), damaged: read errors name the file, never panic.
#[test]
fn damaged_fret_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut valid = Vec::new();
    for name in ["fret.jsonl", "fret.parquet"] {
        let path = dir.path().join(name);
        let mut sink = change_sink(&path).unwrap();
        let changes: Vec<Change> = (0..20)
            .map(|i| {
                let mut e = example();
                e.query_id = format!("q{i}");
                Change::upsert(e, i)
            })
            .collect();
        sink.write(&changes).unwrap();
        sink.finish(&Default::default()).unwrap();
        valid.push((name, std::fs::read(&path).unwrap()));
    }
    let mut runner = proptest::test_runner::TestRunner::new(config());
    for (name, bytes) in valid {
        let path = dir.path().join(format!("damaged-{name}"));
        runner
            .run(&damaged(bytes), |damaged| {
                std::fs::write(&path, &damaged).unwrap();
                let read =
                    timed(name, || if name.ends_with(".parquet") { read_parquet(&path) } else { read_jsonl(&path) });
                if let Err(e) = read {
                    prop_assert!(e.to_string().contains("damaged-fret"), "{e}");
                }
                Ok(())
            })
            .unwrap();
    }
}

/// The packaged GGUF's header (metadata and tensor table), damaged: `from_bytes` gives an error naming the
/// file, never a panic or an allocation the header asks for but the bytes cannot hold.
#[test]
fn damaged_gguf_headers_never_panic() {
    let resolved = fretflow::assets::resolve_model(fretflow::llm::local::DEFAULT_MODEL)
        .expect("the packaged SmolLM2 GGUF is installed by `make setup`");
    let path = if resolved.is_dir() {
        std::fs::read_dir(&resolved)
            .unwrap()
            .filter_map(|e| Some(e.ok()?.path()))
            .find(|p| p.extension().is_some_and(|e| e == "gguf"))
            .expect("a .gguf file in the model package")
    } else {
        resolved
    };
    let bytes = std::fs::read(&path).unwrap();
    // The header and tensor table come first; 4 MiB holds them for SmolLM2 (its vocabulary included).
    let head = bytes[..bytes.len().min(4 << 20)].to_vec();
    assert!(GgufFile::from_bytes(Path::new("head.gguf"), head.clone()).is_ok(), "the intact header parses");
    // 64 cases in `make test` (each parses 4 MiB); `make fuzz` sets PROPTEST_CASES.
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { config().cases } else { 64 };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases, ..config() });
    runner
        .run(&damaged(head), |damaged| {
            let read = timed("gguf", || GgufFile::from_bytes(Path::new("head.gguf"), damaged));
            if let Err(e) = read {
                prop_assert!(e.to_string().contains("head.gguf"), "{e}");
            }
            Ok(())
        })
        .unwrap();
}

/// Runs `check` on `valid` damaged, `cases` times (the file-based targets write each case to disk).
fn run_damaged(valid: Vec<u8>, check: impl Fn(Vec<u8>) -> Result<(), TestCaseError>) {
    let mut runner = proptest::test_runner::TestRunner::new(config());
    runner.run(&damaged(valid), check).unwrap();
}

/// A passage Parquet file (the source format), damaged: opening and reading it gives passages, dead
/// letters or an error naming the file, never a panic.
#[test]
fn damaged_passage_parquet_files_never_panic() {
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passages.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, true),
        Field::new("text", DataType::Utf8, false),
    ]));
    let ids: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
    let texts: Vec<String> = (0..20).map(|i| format!("text of passage {i}")).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(StringArray::from(vec![Some("Title"); 20])),
            Arc::new(StringArray::from(texts)),
        ],
    )
    .unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let valid = std::fs::read(&path).unwrap();
    let target = dir.path().join("damaged-passages.parquet");
    run_damaged(valid, |damaged| {
        std::fs::write(&target, &damaged).unwrap();
        let read = timed("passage parquet", || -> Result<usize, String> {
            let mut reader = ParquetPassages::open(&target).map_err(|e| e.to_string())?;
            let mut records = 0;
            loop {
                let polled = reader.poll(8).map_err(|e| e.to_string())?;
                records += polled.records.len();
                if polled.finished {
                    return Ok(records);
                }
            }
        });
        if let Err(e) = read {
            prop_assert!(e.contains("damaged-passages.parquet"), "{e}");
        }
        Ok(())
    });
}

/// A BEIR dataset (corpus, queries, qrels) with one of its files damaged: loading gives the dataset or an
/// error naming the file, never a panic.
#[test]
fn damaged_beir_datasets_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("qrels")).unwrap();
    let corpus: String =
        (0..10).map(|i| format!("{{\"_id\": \"d{i}\", \"title\": \"T\", \"text\": \"text {i}\"}}\n")).collect();
    let queries: String = (0..5).map(|i| format!("{{\"_id\": \"q{i}\", \"text\": \"query {i}\"}}\n")).collect();
    let qrels: String = "query-id\tcorpus-id\tscore\n".to_string()
        + &(0..5).map(|i| format!("q{i}\td{}\t{}\n", i * 2, i % 3)).collect::<String>();
    let files = [("corpus.jsonl", corpus), ("queries.jsonl", queries), ("qrels/test.tsv", qrels)];
    for (name, text) in &files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    assert!(BeirDataset::load(dir.path(), &LoadOptions::default()).is_ok(), "the intact dataset loads");
    for (name, text) in &files {
        let path = dir.path().join(name);
        run_damaged(text.as_bytes().to_vec(), |damaged| {
            std::fs::write(&path, &damaged).unwrap();
            let loaded = timed(name, || BeirDataset::load(dir.path(), &LoadOptions::default()));
            if let Err(e) = loaded {
                let file = Path::new(name).file_name().unwrap().to_str().unwrap();
                prop_assert!(e.to_string().contains(file), "{name}: {e}");
            }
            Ok(())
        });
        std::fs::write(&path, text).unwrap();
    }
}

/// A safetensors checkpoint, damaged (header length, JSON header, offsets, data): loading it into a model's
/// variables copies every tensor or gives an error naming the file, never a panic.
#[test]
fn damaged_safetensors_checkpoints_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let a = tch::Tensor::arange(6, (tch::Kind::Float, tch::Device::Cpu)).view([2, 3]);
    let b = tch::Tensor::ones([4], (tch::Kind::Float, tch::Device::Cpu));
    tch::Tensor::write_safetensors(&[("encoder.a", &a), ("encoder.b", &b)], &path).unwrap();
    let model = || {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let root = vs.root() / "encoder";
        let _ = root.zeros("a", &[2, 3]);
        let _ = root.zeros("b", &[4]);
        vs
    };
    assert!(load_safetensors(&model(), &path).is_ok(), "the intact checkpoint loads");
    let valid = std::fs::read(&path).unwrap();
    let target = dir.path().join("damaged-model.safetensors");
    run_damaged(valid, |damaged| {
        std::fs::write(&target, &damaged).unwrap();
        let vs = model();
        if let Err(e) = timed("safetensors", || load_safetensors(&vs, &target)) {
            prop_assert!(e.to_string().contains("damaged-model.safetensors"), "{e}");
        }
        Ok(())
    });
}

/// The checkpoint manifest (`checkpoints.jsonl`, read on every restart and by the promotion gate), damaged:
/// its records, or an error naming the file, never a panic.
#[test]
fn damaged_checkpoint_manifests_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let records: String = (1..=4)
        .map(|step| {
            serde_json::json!({
                "step": step * 10, "examples_seen": step * 160, "path": format!("out/checkpoint-{:06}", step * 10),
                "metrics": {"cranfield": {"ndcg@10": 0.38 + step as f64 / 100.0}}, "mean_loss": 0.5,
                "created": 1.7e9, "promoted": step % 2 == 0, "promotion": "promoted: better", "baseline": false,
            })
            .to_string()
                + "\n"
        })
        .collect();
    let path = dir.path().join("checkpoints.jsonl");
    std::fs::write(&path, &records).unwrap();
    assert_eq!(read_manifest(dir.path()).unwrap().len(), 4, "the intact manifest reads");
    run_damaged(records.into_bytes(), |damaged| {
        std::fs::write(&path, &damaged).unwrap();
        if let Err(e) = timed("manifest", || read_manifest(dir.path())) {
            prop_assert!(e.to_string().contains("checkpoints.jsonl"), "{e}");
        }
        Ok(())
    });
}
