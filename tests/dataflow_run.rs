//! End to end through the file connectors: JSONL in, change stream + snapshots (JSONL and Parquet) and
//! dead letters out, with the instant labeler and the hashing encoder.
use fretflow::pipeline::config::PipelineConfig;
use fretflow::pipeline::file::run_pipeline;
use parquet::file::reader::{FileReader, SerializedFileReader};
use std::path::Path;

fn write_corpus(path: &Path) {
    let mut lines: Vec<String> = (0..30)
        .map(|i| {
            let words: Vec<String> = (0..8).map(|k| format!("w{}", (i * 7 + k * 3) % 23)).collect();
            serde_json::json!({"id": format!("p{i}"), "text": words.join(" ")}).to_string()
        })
        .collect();
    lines.insert(5, "{broken".into());
    lines.insert(9, r#"{"id": "no-text"}"#.into());
    lines.push(r#"{"id": "p3", "op": "delete"}"#.into());
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn a_jsonl_corpus_runs_to_change_stream_snapshots_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(&dir.path().join("corpus.jsonl"));
    let toml = r#"
        workers = 2
        [source]
        path = "corpus.jsonl"
        epoch_records = 7
        [llm]
        backend = "instant"
        query_words = 4
        [embedder]
        model = "hashing:32"
        [fret]
        neighbours = 4
        # p0 and p23 (and six more pairs) start with the same four words: no near-duplicate check here.
        duplicate_queries = { threshold = 1.0 }
        [batching]
        llm = { max_batch = 4, max_wait_ms = 0, max_in_flight = 2 }
        [sinks]
        changes = ["out/changes.jsonl", "out/changes.parquet"]
        snapshot = ["out/fret.jsonl", "out/fret.parquet"]
        dead_letters = "out/dead.jsonl"
    "#;
    std::fs::write(dir.path().join("p.toml"), toml).unwrap();
    let config = PipelineConfig::load(&dir.path().join("p.toml")).unwrap();
    let snapshot = run_pipeline(&config, timely::Config::process(2), 0, Vec::new(), None).unwrap();
    assert_eq!((snapshot.records_in, snapshot.passages_in, snapshot.passages_deleted), (33, 30, 1));
    assert_eq!(snapshot.examples_live, 29);

    let out = dir.path().join("out");
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    let snapshot_lines: Vec<serde_json::Value> =
        read("fret.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(snapshot_lines.len(), 29);
    assert!(snapshot_lines.iter().all(|e| e["seed_id"] != "p3" && e["ranking"].as_array().unwrap().len() == 4));
    // Replaying the change stream gives the snapshot.
    let mut live = std::collections::BTreeMap::new();
    for line in read("changes.jsonl").lines() {
        let change: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = change["key"].as_str().unwrap().to_string();
        match change["op"].as_str().unwrap() {
            "upsert" => live.insert(key, change["example"].clone()),
            "retract" => live.remove(&key),
            other => panic!("op {other}"),
        };
    }
    assert_eq!(live.into_values().collect::<Vec<_>>(), snapshot_lines);
    let dead: Vec<serde_json::Value> = read("dead.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().any(|d| d["input"].as_str().unwrap().ends_with("corpus.jsonl:6")));
    assert!(dead.iter().any(|d| d["reason"] == "missing field `text`"));
    let rows = |name: &str| {
        SerializedFileReader::new(std::fs::File::open(out.join(name)).unwrap())
            .unwrap()
            .metadata()
            .file_metadata()
            .num_rows()
    };
    assert_eq!(rows("fret.parquet"), 29);
    assert_eq!(rows("changes.parquet") as usize, read("changes.jsonl").lines().count());
}

#[test]
fn a_pipeline_with_an_instant_generator_and_a_local_judge_uses_each_for_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let texts = [
        "Shock waves form ahead of a blunt body in supersonic flow.",
        "The boundary layer thickens downstream as friction slows the flow.",
        "A swept wing delays the drag rise near the speed of sound.",
        "Heat transfer at the stagnation point grows with the pressure gradient.",
    ];
    let line = |(i, text): (usize, &&str)| serde_json::json!({"id": format!("p{i}"), "text": text}).to_string();
    let lines: Vec<String> = texts.iter().enumerate().map(line).collect();
    std::fs::write(dir.path().join("corpus.jsonl"), lines.join("\n") + "\n").unwrap();
    let toml = r#"
        [source]
        path = "corpus.jsonl"
        [llm.generator]
        backend = "instant"
        query_words = 3
        [llm.judge]
        backend = "local"
        model = "SmolLM2-135M-Instruct"
        device = "cpu"
        precision = "bf16"
        [embedder]
        model = "hashing:32"
        [fret]
        neighbours = 2
        weights = { ql = 1.0, rc = 0.0 }
        [sinks]
        snapshot = ["out/fret.jsonl"]
        dead_letters = "out/dead.jsonl"
    "#;
    std::fs::write(dir.path().join("p.toml"), toml).unwrap();
    let config = PipelineConfig::load(&dir.path().join("p.toml")).unwrap();
    let snapshot = run_pipeline(&config, timely::Config::process(1), 0, Vec::new(), None).unwrap();
    assert_eq!(snapshot.examples_live, 4);
    let examples: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("out/fret.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(examples.len(), 4);
    for example in &examples {
        // Written by the instant generator: the passage's first three words.
        assert_eq!(example["query"].as_str().unwrap().split_whitespace().count(), 3, "{example}");
        assert_eq!(example["provenance"]["generator"]["model"], "instant:overlap");
        let judge = example["provenance"]["judge"]["model"].as_str().unwrap();
        assert!(judge.starts_with("local:") && judge.contains("SmolLM2"), "{judge}");
        // Judged by the local model: log-probabilities, not the instant judge's word counts (≥ 0).
        for candidate in example["ranking"].as_array().unwrap() {
            assert!(candidate["ql"].as_f64().unwrap() < 0.0, "{candidate}");
        }
    }
    // Four generations by the instant labeler and one QL request per judged pair by the model.
    assert_eq!(snapshot.llm_calls, 4 + snapshot.judged_pairs);
}
