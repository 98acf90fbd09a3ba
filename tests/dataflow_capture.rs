//! Capture tests of the FRet dataflow: exact changes of the example collection when passages arrive
//! late, are deleted, or are bad.
mod dataflow_support;

use dataflow_support::{delete, shape, upsert, Captured, Run};
use fretflow::dataflow::instant::OverlapLabeler;
use fretflow::dataflow::params::{FretParams, Limits};
use fretflow::records::decode_json_passage;
use fretflow::records::Stage;
use std::sync::Arc;

const SEED: &str = "alpha beta gamma delta epsilon zeta eta theta";
/// Only query words, repeated: the overlap labeler prefers it in QL and in RC.
const BETTER: &str = "alpha beta gamma delta epsilon zeta alpha beta";

type Shape = ((String, String, Vec<String>, Vec<String>), u64, isize);

fn shapes(captured: &Captured) -> Vec<Shape> {
    captured.changes.iter().map(|((_, e), t, r)| (shape(e), *t, *r)).collect()
}

fn s(key: &str, positive: &str, negatives: &[&str], ranking: &[&str], time: u64, diff: isize) -> Shape {
    let strings = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
    ((key.into(), positive.into(), strings(negatives), strings(ranking)), time, diff)
}

#[test]
fn a_later_passage_the_llm_prefers_becomes_the_positive_of_an_earlier_query() {
    let epochs = vec![vec![upsert("p1", SEED, 1)], vec![upsert("p2", BETTER, 2)]];
    let captured = Run::default().go(epochs, Arc::new(OverlapLabeler::new(6)));
    assert_eq!(
        shapes(&captured),
        vec![
            s("q:p1", "p1", &[], &["p1"], 0, 1),
            s("q:p1", "p1", &[], &["p1"], 1, -1),
            s("q:p1", "p2", &["p1"], &["p2", "p1"], 1, 1),
            s("q:p2", "p2", &["p1"], &["p2", "p1"], 1, 1),
        ]
    );
    let example = &captured.final_set()["q:p1"];
    assert_eq!((example.seed_id.as_str(), example.query.as_str()), ("p1", "alpha beta gamma delta epsilon zeta"));
    assert_eq!((example.ranking[0].ql_rank, example.ranking[0].rc_rank), (Some(1), 1));
    assert!(captured.dead_letters.is_empty());
}

#[test]
fn deleting_a_passage_retracts_the_examples_that_used_it() {
    let epochs = vec![vec![upsert("p1", SEED, 1), upsert("p2", BETTER, 2)], vec![delete("p2", 3)]];
    let captured = Run::default().go(epochs, Arc::new(OverlapLabeler::new(6)));
    assert_eq!(
        shapes(&captured),
        vec![
            s("q:p1", "p2", &["p1"], &["p2", "p1"], 0, 1),
            s("q:p2", "p2", &["p1"], &["p2", "p1"], 0, 1),
            s("q:p1", "p1", &[], &["p1"], 1, 1),
            s("q:p1", "p2", &["p1"], &["p2", "p1"], 1, -1),
            s("q:p2", "p2", &["p1"], &["p2", "p1"], 1, -1),
        ]
    );
}

#[test]
fn each_passage_seeds_queries_per_passage_examples_and_deleting_it_retracts_them_all() {
    let params = FretParams { queries_per_passage: 2, ..Run::default().params };
    let run = Run { params, ..Run::default() };
    let (p1, p2) = ("alpha beta gamma delta", "omega psi chi phi");
    let epochs = vec![vec![upsert("p1", p1, 1), upsert("p2", p2, 2)], vec![delete("p2", 3)]];
    let captured = run.go(epochs, Arc::new(OverlapLabeler::new(3)));
    assert_eq!(
        shapes(&captured),
        vec![
            s("q:p1", "p1", &["p2"], &["p1", "p2"], 0, 1),
            s("q:p2", "p2", &["p1"], &["p2", "p1"], 0, 1),
            s("q_1:p1", "p1", &["p2"], &["p1", "p2"], 0, 1),
            s("q_1:p2", "p2", &["p1"], &["p2", "p1"], 0, 1),
            s("q:p1", "p1", &[], &["p1"], 1, 1),
            s("q:p1", "p1", &["p2"], &["p1", "p2"], 1, -1),
            s("q:p2", "p2", &["p1"], &["p2", "p1"], 1, -1),
            s("q_1:p1", "p1", &[], &["p1"], 1, 1),
            s("q_1:p1", "p1", &["p2"], &["p1", "p2"], 1, -1),
            s("q_1:p2", "p2", &["p1"], &["p2", "p1"], 1, -1),
        ]
    );
    let set = captured.final_set();
    let queries: Vec<(&str, &str, &str)> =
        set.values().map(|e| (e.query_id.as_str(), e.seed_id.as_str(), e.query.as_str())).collect();
    assert_eq!(queries, [("q:p1", "p1", "alpha beta gamma"), ("q_1:p1", "p1", "beta gamma delta")]);
    assert!(captured.dead_letters.is_empty(), "{:?}", captured.dead_letters);
}

#[test]
fn changing_a_passage_replaces_its_query_and_the_examples_that_used_it() {
    let epochs = vec![
        vec![upsert("p1", SEED, 1), upsert("p2", BETTER, 2)],
        vec![upsert("p2", "omega psi chi phi upsilon tau", 3)],
    ];
    let captured = Run::default().go(epochs, Arc::new(OverlapLabeler::new(6)));
    let at_1: Vec<Shape> = shapes(&captured).into_iter().filter(|(_, t, _)| *t == 1).collect();
    assert_eq!(
        at_1,
        vec![
            s("q:p1", "p1", &["p2"], &["p1", "p2"], 1, 1),
            s("q:p1", "p2", &["p1"], &["p2", "p1"], 1, -1),
            s("q:p2", "p2", &["p1"], &["p2", "p1"], 1, -1),
            s("q:p2", "p2", &["p1"], &["p2", "p1"], 1, 1),
        ]
    );
    let q2 = &captured.final_set()["q:p2"];
    assert_eq!(q2.query, "omega psi chi phi upsilon tau");
    assert_eq!(q2.positive.text, "omega psi chi phi upsilon tau");
}

#[test]
fn every_kind_of_bad_record_is_a_dead_letter_with_its_reason_and_nothing_else_is_lost() {
    let limits = Limits { max_text_chars: 60, ..Limits::default() };
    let bad_line = |line: &str, seq: u64| decode_json_passage(line, seq, &format!("corpus.jsonl:{seq}"));
    let epochs = vec![vec![
        upsert("p1", SEED, 1),
        bad_line("{\"id\": \"x\", \"text\": ", 2),
        bad_line("{\"text\": \"no id here\"}", 3),
        bad_line("{\"id\": \"p9\"}", 4),
        upsert("long", &"word ".repeat(20), 5),
        upsert("garbled", "GARBLE this passage makes the model babble", 6),
        upsert("p2", BETTER, 7),
    ]];
    let run = Run { limits, ..Run::default() };
    let captured = run.go(epochs, Arc::new(OverlapLabeler::new(6).with_failure_marker("GARBLE")));
    let letters: Vec<(Stage, &str, &str)> =
        captured.dead_letters.iter().map(|d| (d.stage, d.input.as_str(), d.reason.as_str())).collect();
    assert_eq!(letters.len(), 5, "{letters:#?}");
    assert!(letters.contains(&(Stage::Source, "corpus.jsonl:3", "missing field `id`")));
    assert!(letters.contains(&(Stage::Source, "corpus.jsonl:4", "missing field `text`")));
    assert!(letters.contains(&(Stage::Validate, "test:5", "field `text` has 100 characters, over the limit of 60")));
    let malformed = letters.iter().find(|l| l.1 == "corpus.jsonl:2").expect("malformed line");
    assert!(malformed.0 == Stage::Source && malformed.2.starts_with("malformed JSON"), "{malformed:?}");
    let garbled = letters.iter().find(|l| l.0 == Stage::Generate).expect("unparsable answer");
    assert_eq!(garbled.1, "passage garbled");
    assert!(garbled.2.starts_with("unparsable LLM answer"), "{garbled:?}");
    // Every good passage has its example; the garbled passage still serves as a candidate.
    let set = captured.final_set();
    assert_eq!(set.keys().collect::<Vec<_>>(), vec!["q:p1", "q:p2"]);
    assert!(set["q:p1"].ranking.iter().any(|r| r.id == "garbled"));
}
