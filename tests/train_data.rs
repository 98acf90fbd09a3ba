//! The data feed: FRet change records parse (errors name file, line and field), the replay buffer follows
//! upserts and retractions, batches hold no duplicate query or positive, sampling is a function of the
//! step, and the pair mix ratio is honoured; teacher scores are read from each example's ranking by passage id
//! and travel in the batch aligned with their passages and queries.
use fretflow::connectors::file::fret::read_jsonl as read_fret_jsonl;
use fretflow::records::{Change, Example, Passage, RankedCandidate, Score};
use fretflow::train::buffer::{sample_batch, ReplayBuffer, SamplerConfig};
use fretflow::train::data::{read_pairs_jsonl, ExampleFilter, QueryFormat, TrainExample};
use std::collections::HashSet;
use std::path::Path;

fn fixture() -> Vec<Change> {
    read_fret_jsonl(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/train/fret_small.jsonl"))).unwrap()
}

fn example(q: &str, pos: &str) -> Example {
    Example {
        query_id: q.into(),
        task: "search".into(),
        query: format!("query {q}"),
        seed_id: pos.into(),
        positive: Passage { id: pos.into(), title: "T".into(), text: format!("text {pos}") },
        negatives: vec![Passage { id: format!("n-{q}"), title: String::new(), text: "neg".into() }],
        ranking: Vec::new(),
        provenance: Default::default(),
    }
}

fn config(batch_size: usize) -> SamplerConfig {
    SamplerConfig { batch_size, hard_negatives: 1, pair_mix_ratio: 0.0, seed: 3 }
}

/// False negatives kept out of a batch: a passage that is one row's seed is never another row's positive
/// (and so never an in-batch negative of the row it answers), and queries that differ only in case,
/// punctuation or spacing never share a batch.
#[test]
fn batches_keep_seeds_apart_from_other_rows_and_drop_near_duplicate_queries() {
    let mut buffer = ReplayBuffer::new();
    // s1's judge chose P9 over its seed S1; r1's positive is S1: they cannot share a batch.
    let mut s1 = example("s1", "P9");
    s1.seed_id = "S1".into();
    buffer.apply(&Change::upsert(s1, 0));
    buffer.apply(&Change::upsert(example("r1", "S1"), 0));
    // Two spellings of one query with different positives: only one of them per batch.
    let mut d1 = example("d1", "D1");
    d1.query = "What is the lift of a wing?".into();
    let mut d2 = example("d2", "D2");
    d2.query = "what  is the LIFT of a wing".into();
    buffer.apply(&Change::upsert(d1, 0));
    buffer.apply(&Change::upsert(d2, 0));
    buffer.apply(&Change::upsert(example("free", "F"), 0));
    let as_set = |b: &fretflow::train::buffer::Batch| b.keys.iter().cloned().collect::<HashSet<String>>();
    let mut seen_pairs = HashSet::new();
    for step in 1..40 {
        let batch = sample_batch(&buffer, &[], &config(8), step);
        let keys = as_set(&batch);
        assert_eq!(batch.len(), 3, "one of s1/r1, one of d1/d2, and free: {keys:?}");
        assert!(!(keys.contains("s1") && keys.contains("r1")), "{keys:?}");
        assert!(!(keys.contains("d1") && keys.contains("d2")), "{keys:?}");
        seen_pairs.insert((keys.contains("s1"), keys.contains("d1")));
    }
    assert_eq!(seen_pairs.len(), 4, "every compatible combination is drawn on some step");
    assert_eq!(buffer.get("d2").unwrap().normalized_query(), "what is the lift of a wing");
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
    assert!(!buffer.apply(&Change::retract("absent", 0)), "retracting an absent key changes nothing");
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
        buffer.apply(&Change::upsert(example(&format!("a{i}"), if i % 2 == 0 { "P0" } else { "P1" }), 0));
    }
    for i in 0..5 {
        let mut e = example(&format!("b{i}"), &format!("B{i}"));
        e.query = "same text".into();
        buffer.apply(&Change::upsert(e, 0));
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

    // A ranking that does not parse is an error naming the field's path, not an example trained without it.
    let mut bad = serde_json::to_value(example("q1", "p1")).unwrap();
    bad["ranking"] = serde_json::json!([{"id": "P", "cosine": 0.5, "ql": null, "rc": 0.1, "rrf": "high"}]);
    std::fs::write(&path, format!("{bad}\n")).unwrap();
    let err = read_fret_jsonl(&path).unwrap_err().to_string();
    assert!(err.contains("fret.jsonl:1") && err.contains("ranking[0].rrf"), "{err}");
}

fn ranked(id: &str, cosine: f64, ql: Option<f64>, rc: f64, rrf: f64) -> RankedCandidate {
    let (cosine, ql, rc, rrf) = (Score(cosine), ql.map(Score), Score(rc), Score(rrf));
    RankedCandidate { id: id.into(), cosine, ql, rc, ql_rank: None, rc_rank: 1, rrf }
}

#[test]
fn teacher_scores_come_from_the_ranking_by_passage_id() {
    let mut e = example("q", "P");
    e.negatives.push(Passage { id: "unranked".into(), title: String::new(), text: "not judged".into() });
    // Best first by rrf; by cosine the order is c, n-q, P, x.
    e.ranking = vec![
        ranked("P", 0.5, Some(-70.0), 0.9, 0.0328),
        ranked("x", 0.1, Some(-75.0), 0.6, 0.0320),
        ranked("c", 0.9, Some(-80.0), 0.4, 0.0310),
        ranked("n-q", 0.6, None, 0.2, 0.0300),
    ];
    let t = TrainExample::from_fret(&e, QueryFormat::Task);
    let rrf = |fused: f64, cosine: f64| 1.0 / (60.0 + fused) + 1.0 / (60.0 + cosine);
    let p = t.positive.teacher.expect("the positive is ranked");
    assert_eq!((p.rrf, p.ql, p.rc), (0.0328, Some(-70.0), 0.9));
    assert!((p.rrf_student - rrf(1.0, 3.0)).abs() < 1e-15, "fused rank 1, cosine rank 3 of all four");
    let n = t.negatives[0].teacher.expect("the negative is ranked");
    assert_eq!((n.rrf, n.ql, n.rc), (0.0300, None, 0.2));
    assert!((n.rrf_student - rrf(4.0, 2.0)).abs() < 1e-15);
    assert_eq!(t.negatives[1].teacher, None, "a passage missing from the ranking has no teacher score");

    e.ranking.clear();
    let t = TrainExample::from_fret(&e, QueryFormat::Task);
    assert_eq!(t.positive.teacher, None, "an example without a ranking trains without distillation");
    assert_eq!(t.negatives.len(), 2);
}

#[test]
fn batches_carry_teacher_scores_and_owners_aligned_with_their_passages() {
    let mut buffer = ReplayBuffer::new();
    for i in 0..6 {
        let mut e = example(&format!("q{i}"), &format!("P{i}"));
        // Query i has i % 3 hard negatives; every passage is ranked with rrf = 1 / (10 + its number).
        e.negatives = (0..i % 3)
            .map(|k| Passage { id: format!("N{i}-{k}"), title: String::new(), text: format!("neg {i} {k}") })
            .collect();
        let mut ranking = vec![ranked(&format!("P{i}"), 0.5, Some(-1.0), 0.5, 1.0 / (10.0 + i as f64))];
        ranking.extend((0..i % 3).map(|k| ranked(&format!("N{i}-{k}"), 0.1, None, 0.1, 1.0 / (20.0 + k as f64))));
        e.ranking = ranking;
        buffer.apply(&Change::upsert(e, 0));
    }
    let pairs_path = tempfile::tempdir().unwrap();
    let path = pairs_path.path().join("pairs.jsonl");
    std::fs::write(&path, "{\"query\": \"pq\", \"positive\": \"pp\"}\n").unwrap();
    let pairs = read_pairs_jsonl(&path).unwrap();
    let cfg = SamplerConfig { hard_negatives: 2, pair_mix_ratio: 0.2, ..config(7) };
    let batch = sample_batch(&buffer, &pairs, &cfg, 1);
    assert_eq!(batch.len(), 7);
    assert_eq!((batch.positive_teachers.len(), batch.negative_teachers.len()), (7, batch.negatives.len()));
    assert_eq!(batch.negative_owners.len(), batch.negatives.len());
    for (row, key) in batch.keys.iter().enumerate() {
        let teacher = batch.positive_teachers[row];
        match key.strip_prefix('q') {
            None => assert_eq!(teacher, None, "a pair has no teacher score"),
            Some(i) => assert_eq!(teacher.unwrap().rrf, 1.0 / (10.0 + i.parse::<f64>().unwrap())),
        }
    }
    for (k, id) in batch.negative_ids.iter().enumerate() {
        let (query, index) = id.trim_start_matches('N').split_once('-').unwrap();
        assert_eq!(batch.keys[batch.negative_owners[k]], format!("q{query}"), "negative {id} belongs to its query");
        assert_eq!(batch.negative_teachers[k].unwrap().rrf, 1.0 / (20.0 + index.parse::<f64>().unwrap()));
    }
}

#[test]
fn a_buffer_gives_fret_queries_with_their_task_or_plain_as_configured() {
    let mut e = example("q", "P");
    e.task = "Given a question, find a passage".into();
    e.query = "what thickens a boundary layer".into();
    let change = Change::upsert(e.clone(), 0);
    let mut task = ReplayBuffer::new();
    task.apply(&change);
    assert_eq!(
        task.examples()[0].query,
        "task: Given a question, find a passage | query: what thickens a boundary layer"
    );
    let mut plain = ReplayBuffer::with_format(QueryFormat::Plain);
    plain.apply(&change);
    assert_eq!(plain.examples()[0].query, "what thickens a boundary layer");
    assert_eq!(plain.examples()[0].positive.text, task.examples()[0].positive.text, "passages are the same");
}

/// `--examples consistent`: only examples whose judged positive is their seed passage are held; an update
/// that makes a held example inconsistent removes it (it is not trained on again), and a later consistent
/// update brings it back. `all` holds every example.
#[test]
fn a_consistent_buffer_holds_only_examples_whose_positive_is_their_seed_through_updates() {
    let inconsistent = |q: &str| {
        let mut e = example(q, "P9");
        e.seed_id = format!("seed-{q}");
        e
    };
    let mut buffer = ReplayBuffer::with_format(QueryFormat::Plain).with_filter(ExampleFilter::Consistent);
    assert!(buffer.apply(&Change::upsert(example("a", "A"), 0)));
    assert!(buffer.apply(&Change::upsert(example("b", "B"), 0)));
    assert!(!buffer.apply(&Change::upsert(inconsistent("c"), 0)), "an inconsistent new key changes nothing");
    let keys = |b: &ReplayBuffer| b.examples().iter().map(|e| e.key.clone()).collect::<HashSet<_>>();
    assert_eq!(keys(&buffer), HashSet::from(["a".to_string(), "b".to_string()]));
    assert!(buffer.apply(&Change::upsert(inconsistent("a"), 1)), "a's update is inconsistent: a leaves");
    assert_eq!(keys(&buffer), HashSet::from(["b".to_string()]));
    assert!(buffer.get("b").is_some() && buffer.get("a").is_none(), "the index follows the swap-remove");
    assert!(!buffer.apply(&Change::retract("a", 2)), "retracting the filtered key changes nothing");
    assert!(buffer.apply(&Change::upsert(example("a", "A"), 3)), "consistent again: a is back");
    assert_eq!(keys(&buffer), HashSet::from(["a".to_string(), "b".to_string()]));
    assert_eq!((buffer.change_counts(), buffer.filtered()), ((5, 0), 2));

    let mut all = ReplayBuffer::new();
    for c in [Change::upsert(example("a", "A"), 0), Change::upsert(inconsistent("c"), 0)] {
        all.apply(&c);
    }
    assert_eq!((all.len(), all.filtered()), (2, 0));
}

/// When `--examples consistent` leaves nothing to train on, the error says so (not "the FRet set is
/// empty") and names the option and how many upserts it left out.
#[test]
fn a_run_whose_examples_are_all_inconsistent_fails_naming_the_filter() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("inconsistent.jsonl");
    let mut lines = String::new();
    let n = fixture().len();
    for c in fixture() {
        let mut change = c;
        if let Some(e) = change.upserted() {
            let mut e = e.clone();
            e.seed_id = format!("not-{}", e.positive.id);
            change = Change::upsert(e, 0);
        }
        lines.push_str(&serde_json::to_string(&change).unwrap());
        lines.push('\n');
    }
    std::fs::write(&data, lines).unwrap();
    let out = dir.path().join("out");
    #[rustfmt::skip]
    let args = [
        "train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--examples", "consistent",
        "--device", "cpu", "--steps", "1",
    ];
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fretflow")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("--examples consistent left out all"), "{stderr}");
    let upserts = fixture().iter().filter(|c| c.upserted().is_some()).count();
    assert!(upserts > 0 && upserts <= n && stderr.contains(&format!("all {upserts} FRet upserts")), "{stderr}");
}
