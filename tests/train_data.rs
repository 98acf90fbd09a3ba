//! The data feed: FRet change records parse (errors name file, line and field), the replay buffer follows
//! upserts and retractions, batches hold no duplicate query or positive, sampling is a function of the
//! step, and the pair mix ratio is honoured.
use fretflow::train::buffer::{sample_batch, ReplayBuffer, SamplerConfig};
use fretflow::train::data::{read_fret_jsonl, read_pairs_jsonl, Change, FretExample};
use fretflow::records::Passage;
use std::collections::HashSet;
use std::path::Path;

fn fixture() -> Vec<Change> {
    read_fret_jsonl(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/train/fret_small.jsonl"))).unwrap()
}

fn example(q: &str, pos: &str) -> FretExample {
    FretExample {
        query_id: q.into(),
        task: "search".into(),
        query: format!("query {q}"),
        seed_id: pos.into(),
        positive: Passage { id: pos.into(), title: "T".into(), text: format!("text {pos}") },
        negatives: vec![Passage { id: format!("n-{q}"), title: String::new(), text: "neg".into() }],
        ranking: serde_json::Value::Null,
        provenance: serde_json::Value::Null,
    }
}

fn config(batch_size: usize) -> SamplerConfig {
    SamplerConfig { batch_size, hard_negatives: 1, pair_mix_ratio: 0.0, seed: 3 }
}

#[test]
fn buffer_follows_upserts_and_retractions_of_the_stream() {
    let mut buffer = ReplayBuffer::new();
    for c in fixture() {
        buffer.apply(&c);
    }
    assert_eq!(buffer.len(), 15, "16 upserts, q3 replaced, q5 retracted");
    assert!(buffer.get("q5").is_none());
    assert!(buffer.get("q3").unwrap().query.contains("replaced query"), "the later upsert wins");
    let q0 = buffer.get("q0").unwrap();
    assert!(q0.query.starts_with("task: Given a query, find a passage that has the answer to the query | query: "));
    assert!(!buffer.apply(&Change::Retract("absent".into())), "retracting an absent key changes nothing");
    // Retracted examples are never sampled again.
    for step in 1..50 {
        assert!(!sample_batch(&buffer, &[], &config(8), step).keys.contains(&"q5".to_string()));
    }
}

#[test]
fn batches_have_no_duplicate_queries_or_positives() {
    let mut buffer = ReplayBuffer::new();
    // Ten queries share two positives, five share query text: at most 2 + distinct ones fit.
    for i in 0..10 {
        buffer.apply(&Change::Upsert(example(&format!("a{i}"), if i % 2 == 0 { "P0" } else { "P1" })));
    }
    for i in 0..5 {
        let mut e = example(&format!("b{i}"), &format!("B{i}"));
        e.query = "same text".into();
        buffer.apply(&Change::Upsert(e));
    }
    for step in 1..30 {
        let batch = sample_batch(&buffer, &[], &config(8), step);
        assert_eq!(batch.len(), 3, "P0, P1 and one 'same text' query are all that can coexist");
        assert_eq!(batch.positive_ids.iter().collect::<HashSet<_>>().len(), batch.len());
        assert_eq!(batch.queries.iter().collect::<HashSet<_>>().len(), batch.len());
        assert_eq!(batch.negatives.len(), batch.len(), "one hard negative each");
    }
}

#[test]
fn the_batch_is_a_function_of_buffer_and_step() {
    let mut buffer = ReplayBuffer::new();
    fixture().iter().for_each(|c| {
        buffer.apply(c);
    });
    let a = sample_batch(&buffer, &[], &config(4), 7);
    assert_eq!(a, sample_batch(&buffer, &[], &config(4), 7));
    let differs = (8..20).any(|s| sample_batch(&buffer, &[], &config(4), s).keys != a.keys);
    assert!(differs, "different steps draw different batches");
}

#[test]
fn pair_mix_ratio_sets_the_share_of_pair_examples() {
    let dir = tempfile::tempdir().unwrap();
    let pairs_path = dir.path().join("pairs.jsonl");
    let lines: String = (0..20).map(|i| format!("{{\"query\": \"pq{i}\", \"positive\": \"pp{i}\"}}\n")).collect();
    std::fs::write(&pairs_path, lines).unwrap();
    let pairs = read_pairs_jsonl(&pairs_path).unwrap();
    let mut buffer = ReplayBuffer::new();
    fixture().iter().for_each(|c| {
        buffer.apply(c);
    });
    let cfg = SamplerConfig { pair_mix_ratio: 0.25, ..config(8) };
    let batch = sample_batch(&buffer, &pairs, &cfg, 1);
    assert_eq!(batch.len(), 8);
    assert_eq!(batch.keys.iter().filter(|k| k.starts_with("pair:")).count(), 2);
    assert_eq!(batch.negatives.len(), 6, "pairs bring no hard negatives");
}

#[test]
fn malformed_records_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fret.jsonl");
    let good = serde_json::to_string(&example("q1", "p1")).unwrap();
    std::fs::write(&path, format!("{good}\n{{\"op\": \"upsert\", \"key\": \"q2\"}}\n")).unwrap();
    let err = read_fret_jsonl(&path).unwrap_err().to_string();
    assert!(err.contains("fret.jsonl:2") && err.contains("example"), "{err}");

    std::fs::write(&path, "{\"query_id\": \"q1\", \"task\": \"t\", \"query\": \"q\"}\n").unwrap();
    let err = read_fret_jsonl(&path).unwrap_err().to_string();
    assert!(err.contains(":1:") && err.contains("positive"), "{err}");

    let mismatch = format!("{{\"op\": \"upsert\", \"key\": \"other\", \"example\": {good}}}\n");
    std::fs::write(&path, mismatch).unwrap();
    let err = read_fret_jsonl(&path).unwrap_err().to_string();
    assert!(err.contains("other") && err.contains("q1"), "{err}");
}
