//! Capture tests of the near-duplicate stage: which query keeps its example, when the other comes back, and
//! that the answer depends on the set of queries only (not on arrival order or the number of workers).
mod dataflow_support;

use dataflow_support::{delete, shape, upsert, Captured, Run};
use fretflow::dataflow::instant::OverlapLabeler;
use fretflow::dataflow::params::FretParams;
use fretflow::dataflow::params::{DedupParams, DuplicateAction};
use fretflow::records::SourceRecord;
use fretflow::records::Stage;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Queries are the first eight words. With the task's words and the 64-dimension word embedder, P1's and
/// P2's queries (seven of eight words shared) have cosine 0.9623, and both are at 0.73 of P3's. The overlap
/// judge ties p1 and p2 for q:p3 (no shared word), so the passage id orders them: p1, then p2.
const P1: &str = "alpha beta gamma delta epsilon zeta eta theta";
const P2: &str = "alpha beta gamma delta epsilon zeta eta iota";
const P3: &str = "omega psi chi phi upsilon tau sigma rho";

type Shape = ((String, String, Vec<String>, Vec<String>), u64, isize);

fn shapes(captured: &Captured) -> Vec<Shape> {
    captured.changes.iter().map(|((_, e), t, r)| (shape(e), *t, *r)).collect()
}

fn s(key: &str, positive: &str, negatives: &[&str], ranking: &[&str], time: u64, diff: isize) -> Shape {
    let strings = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
    ((key.into(), positive.into(), strings(negatives), strings(ranking)), time, diff)
}

fn run(action: DuplicateAction, workers: usize, epochs: Vec<Vec<SourceRecord>>) -> Captured {
    let duplicate_queries = Some(DedupParams { threshold: 0.9, action });
    let params = FretParams { neighbours: 3, duplicate_queries, ..FretParams::default() };
    Run { workers, params, ..Run::default() }.go(epochs, Arc::new(OverlapLabeler::new(8)))
}

/// `(stage, input, reason)` of every dead letter.
fn letters(captured: &Captured) -> Vec<(Stage, String, String)> {
    captured.dead_letters.iter().map(|d| (d.stage, d.input.clone(), d.reason.clone())).collect()
}

fn duplicate(query: &str, kept: &str) -> (Stage, String, String) {
    (Stage::Dedup, format!("query {query}"), format!("duplicate_query: cosine 0.9623 >= 0.9 with kept query {kept}"))
}

#[test]
fn of_two_near_duplicate_queries_the_smaller_id_keeps_its_example_and_the_other_is_dead_lettered() {
    // p2 first: arrival order does not decide.
    let epochs = vec![vec![upsert("p2", P2, 1), upsert("p1", P1, 2), upsert("p3", P3, 3)]];
    let captured = run(DuplicateAction::DeadLetter, 1, epochs);
    assert_eq!(
        shapes(&captured),
        vec![s("q:p1", "p1", &["p3"], &["p1", "p2", "p3"], 0, 1), s("q:p3", "p3", &["p2"], &["p3", "p1", "p2"], 0, 1)]
    );
    // p2 is still a passage (a candidate of the other queries); only its query is dropped.
    assert_eq!(letters(&captured), vec![duplicate("q:p2", "q:p1")]);
    assert_eq!(captured.metrics.duplicate_queries.load(Ordering::Relaxed), 1);
}

#[test]
fn retracting_the_kept_querys_passage_brings_the_duplicate_back_with_its_example_at_that_time() {
    let epochs = vec![vec![upsert("p1", P1, 1), upsert("p2", P2, 2), upsert("p3", P3, 3)], vec![delete("p1", 4)]];
    let captured = run(DuplicateAction::DeadLetter, 1, epochs);
    assert_eq!(
        shapes(&captured),
        vec![
            s("q:p1", "p1", &["p3"], &["p1", "p2", "p3"], 0, 1),
            s("q:p3", "p3", &["p2"], &["p3", "p1", "p2"], 0, 1),
            // p1 and its query leave; q:p2 is no longer anyone's duplicate: retrieved, judged, an example.
            s("q:p1", "p1", &["p3"], &["p1", "p2", "p3"], 1, -1),
            s("q:p2", "p2", &["p3"], &["p2", "p3"], 1, 1),
            s("q:p3", "p3", &["p2"], &["p3", "p1", "p2"], 1, -1),
            s("q:p3", "p3", &["p2"], &["p3", "p2"], 1, 1),
        ]
    );
    // The dead letter of time 0 stays written; nothing new.
    assert_eq!(letters(&captured), vec![duplicate("q:p2", "q:p1")]);
    assert_eq!(captured.metrics.duplicate_queries.load(Ordering::Relaxed), 0);
}

#[test]
fn a_later_smaller_id_near_duplicate_displaces_the_kept_query_and_retracts_its_example() {
    let epochs = vec![vec![upsert("p2", P2, 1), upsert("p3", P3, 2)], vec![upsert("p1", P1, 3)]];
    let captured = run(DuplicateAction::DeadLetter, 1, epochs);
    assert_eq!(
        shapes(&captured),
        vec![
            s("q:p2", "p2", &["p3"], &["p2", "p3"], 0, 1),
            s("q:p3", "p3", &["p2"], &["p3", "p2"], 0, 1),
            // q:p1 wins: q:p2's example is retracted, q:p1's inserted, at the time p1 arrives (and p1 enters
            // q:p3's candidates).
            s("q:p1", "p1", &["p3"], &["p1", "p2", "p3"], 1, 1),
            s("q:p2", "p2", &["p3"], &["p2", "p3"], 1, -1),
            s("q:p3", "p3", &["p2"], &["p3", "p1", "p2"], 1, 1),
            s("q:p3", "p3", &["p2"], &["p3", "p2"], 1, -1),
        ]
    );
    assert_eq!(letters(&captured), vec![duplicate("q:p2", "q:p1")]);
}

#[test]
fn with_action_keep_both_near_duplicates_keep_their_examples_and_are_counted() {
    let epochs = vec![vec![upsert("p1", P1, 1), upsert("p2", P2, 2), upsert("p3", P3, 3)]];
    let captured = run(DuplicateAction::Keep, 1, epochs);
    let keys: Vec<String> = captured.final_set().into_keys().collect();
    assert_eq!(keys, ["q:p1", "q:p2", "q:p3"]);
    assert!(captured.dead_letters.is_empty(), "{:?}", captured.dead_letters);
    assert_eq!(captured.metrics.duplicate_queries.load(Ordering::Relaxed), 1);
}

/// 30 passages whose queries (first eight words) draw their first five words from seven: many exact and
/// near duplicates, chains of them, then 8 changes and 6 deletes. `(id, Some(text))` upserts, `(id, None)`
/// deletes.
fn crowded_changes() -> Vec<Vec<(String, Option<String>)>> {
    const COMMON: [&str; 7] = ["wing", "flow", "shock", "layer", "heat", "plate", "drag"];
    const RARE: [&str; 12] =
        ["mach", "nozzle", "jet", "cone", "body", "skin", "laminar", "edge", "slot", "wave", "lift", "vortex"];
    let mut state: u64 = 0x2545F4914F6CDD1D;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut text = || {
        let mut words: Vec<&str> = (0..5).map(|_| COMMON[next(COMMON.len())]).collect();
        words.extend((0..3).map(|_| RARE[next(RARE.len())]));
        Some(words.join(" "))
    };
    let mut epochs: Vec<Vec<(String, Option<String>)>> =
        (0..3).map(|e| (0..10).map(|i| (format!("p{:02}", e * 10 + i), text())).collect()).collect();
    epochs.push((0..8).map(|i| (format!("p{:02}", i * 3), text())).collect());
    epochs.push([1, 4, 10, 13, 22, 29].iter().map(|i| (format!("p{i:02}"), None)).collect());
    epochs
}

fn records(epochs: &[Vec<(String, Option<String>)>]) -> Vec<Vec<SourceRecord>> {
    let mut seq = 0;
    let mut record = |(id, text): &(String, Option<String>)| {
        seq += 1;
        match text {
            Some(text) => upsert(id, text, seq),
            None => delete(id, seq),
        }
    };
    epochs.iter().map(|epoch| epoch.iter().map(&mut record).collect()).collect()
}

#[test]
fn one_two_and_four_workers_give_identical_examples_and_dead_letters_as_duplicates_come_and_go() {
    let changes = crowded_changes();
    let one = run(DuplicateAction::DeadLetter, 1, records(&changes));
    // Not a trivial case: duplicates were dead-lettered, and some of them came back later.
    let dedup = one.dead_letters.iter().filter(|d| d.stage == Stage::Dedup);
    let dead: Vec<&str> = dedup.map(|d| d.input.trim_start_matches("query ")).collect();
    assert!(dead.len() >= 10, "{dead:?}");
    let inserted_later = |q: &str| one.changes.iter().any(|((k, _), t, r)| k == q && *t > 0 && *r > 0);
    let came_back = dead.iter().filter(|q| inserted_later(q)).count();
    assert!(came_back >= 3, "{came_back} duplicates came back: {dead:?}");
    for workers in [2, 4] {
        let other = run(DuplicateAction::DeadLetter, workers, records(&changes));
        assert_eq!(other.changes, one.changes, "{workers} workers");
        assert_eq!(other.dead_letters, one.dead_letters, "{workers} workers");
    }
    // After all the changes, the set is the one a fresh run on the final corpus gives: the same queries kept.
    let mut last: std::collections::BTreeMap<String, Option<String>> = Default::default();
    for (id, text) in changes.iter().flatten() {
        last.insert(id.clone(), text.clone());
    }
    let final_corpus: Vec<(String, Option<String>)> = last.into_iter().filter(|(_, t)| t.is_some()).collect();
    let fresh = run(DuplicateAction::DeadLetter, 1, records(&[final_corpus]));
    assert_eq!(fresh.final_set(), one.final_set());
}

#[test]
fn a_pipeline_config_dead_letters_duplicates_by_default_and_keeps_them_with_action_keep() {
    use fretflow::pipeline::config::PipelineConfig;
    use fretflow::pipeline::file::run_pipeline;
    let dir = tempfile::tempdir().unwrap();
    // p1 and p2 start with the same four words, so their queries coincide; the others are at most 0.89 apart.
    let texts = [
        "Wing flutter couples bending and torsion modes.",
        "Wing flutter couples bending with aileron rotation.",
        "Nozzle flow expands to supersonic speed past the throat.",
        "Heat transfer rises sharply in hypersonic boundary layers.",
        "Laminar flow over a flat plate becomes turbulent.",
    ];
    let line = |(i, t): (usize, &&str)| serde_json::json!({"id": format!("p{}", i + 1), "text": t}).to_string();
    let lines: Vec<String> = texts.iter().enumerate().map(line).collect();
    std::fs::write(dir.path().join("corpus.jsonl"), lines.join("\n") + "\n").unwrap();
    let run = |fret: &str| {
        let toml = format!(
            "[source]\npath = \"corpus.jsonl\"\n[llm]\nbackend = \"instant\"\nquery_words = 4\n[embedder]\n\
             model = \"hashing:64\"\n[fret]\nneighbours = 3\n{fret}\n[sinks]\nsnapshot = [\"out/fret.jsonl\"]\n\
             dead_letters = \"out/dead.jsonl\"\n"
        );
        std::fs::write(dir.path().join("p.toml"), toml).unwrap();
        let config = PipelineConfig::load(&dir.path().join("p.toml")).unwrap();
        let snapshot = run_pipeline(&config, timely::Config::process(2), 0, Vec::new(), None).unwrap();
        let dead = std::fs::read_to_string(dir.path().join("out/dead.jsonl")).unwrap();
        let dead: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (snapshot, dead)
    };

    let (snapshot, dead) = run("");
    assert_eq!((snapshot.examples_live, snapshot.duplicate_queries), (4, 1));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0]["stage"].as_str(), dead[0]["input"].as_str()), (Some("dedup"), Some("query q:p2")));
    let reason = dead[0]["reason"].as_str().unwrap();
    let named = reason.starts_with("duplicate_query: cosine ") && reason.ends_with(">= 0.97 with kept query q:p1");
    assert!(named, "{reason}");

    let (snapshot, dead) = run("duplicate_queries = { action = \"keep\" }");
    assert_eq!((snapshot.examples_live, snapshot.duplicate_queries), (5, 1));
    assert!(dead.is_empty(), "{dead:?}");
}

#[test]
fn a_passages_first_query_is_kept_over_a_later_query_of_it_that_repeats_it() {
    // Two queries per passage; the overlap labeler's second query is the same eight words rotated by one,
    // the same bag of words, so a duplicate of the first whatever the order of the ids' seeds.
    let duplicate_queries = Some(DedupParams { threshold: 0.9, action: DuplicateAction::DeadLetter });
    let params = FretParams { neighbours: 3, queries_per_passage: 2, duplicate_queries, ..FretParams::default() };
    let epochs = vec![vec![upsert("p3", P3, 1), upsert("p1", P1, 2)]];
    let captured = Run { params, ..Run::default() }.go(epochs, Arc::new(OverlapLabeler::new(8)));
    assert_eq!(
        shapes(&captured),
        vec![s("q:p1", "p1", &["p3"], &["p1", "p3"], 0, 1), s("q:p3", "p3", &["p1"], &["p3", "p1"], 0, 1)]
    );
    let dead: Vec<(Stage, String, bool)> = captured
        .dead_letters
        .iter()
        .map(|d| {
            let kept = format!("with kept query q:{}", d.input.trim_start_matches("query q_1:"));
            (d.stage, d.input.clone(), d.reason.starts_with("duplicate_query: cosine") && d.reason.ends_with(&kept))
        })
        .collect();
    assert_eq!(dead, vec![(Stage::Dedup, "query q_1:p1".into(), true), (Stage::Dedup, "query q_1:p3".into(), true)]);
}
