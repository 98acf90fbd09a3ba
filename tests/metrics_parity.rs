//! fretflow's metrics equal pytrec_eval's on the same run and qrels, per query and in the mean, to 1e-6.
//! The fixture and the script that made it: tests/fixtures/metrics/make_fixture.py.
use fretflow::eval::metrics::{evaluate_run, QueryMetrics, Run, RunDoc};
use std::collections::{BTreeMap, HashMap};

#[derive(serde::Deserialize)]
struct Fixture {
    qrels: BTreeMap<String, HashMap<String, i32>>,
    run: BTreeMap<String, HashMap<String, f64>>,
    expected: BTreeMap<String, QueryMetrics>,
    mean: QueryMetrics,
    unjudged: Vec<String>,
}

const TOLERANCE: f64 = 1e-6;

fn fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/metrics/metrics_fixture.json");
    let text = std::fs::read_to_string(path).expect("fixture is committed");
    serde_json::from_str(&text).expect("fixture parses")
}

/// The run as a caller would give it: documents in an arbitrary (here: id) order, not ranked.
fn run_of(fixture: &Fixture) -> Run {
    fixture
        .run
        .iter()
        .map(|(q, docs)| {
            let mut docs: Vec<RunDoc> = docs.iter().map(|(id, &score)| RunDoc { id: id.clone(), score }).collect();
            docs.sort_by(|a, b| a.id.cmp(&b.id));
            (q.clone(), docs)
        })
        .collect()
}

fn assert_close(what: &str, got: &QueryMetrics, want: &QueryMetrics) {
    for ((name, g), (_, w)) in got.named().iter().zip(want.named()) {
        assert!((g - w).abs() <= TOLERANCE, "{what} {name}: fretflow {g}, pytrec_eval {w}");
    }
}

#[test]
fn per_query_metrics_equal_pytrec_eval() {
    let fixture = fixture();
    let got = evaluate_run(&fixture.qrels, &run_of(&fixture));
    assert_eq!(got.per_query.keys().collect::<Vec<_>>(), fixture.expected.keys().collect::<Vec<_>>());
    for (query, want) in &fixture.expected {
        assert_close(query, &got.per_query[query], want);
    }
}

#[test]
fn mean_metrics_equal_pytrec_eval_and_unjudged_queries_are_skipped() {
    let fixture = fixture();
    let got = evaluate_run(&fixture.qrels, &run_of(&fixture));
    assert_close("mean", &got.mean, &fixture.mean);
    let mut unjudged = got.unjudged.clone();
    unjudged.sort();
    let mut want = fixture.unjudged.clone();
    want.sort();
    assert_eq!(unjudged, want);
}

#[test]
fn ranking_input_order_does_not_matter() {
    let fixture = fixture();
    let mut reversed = run_of(&fixture);
    reversed.values_mut().for_each(|docs| docs.reverse());
    let a = evaluate_run(&fixture.qrels, &run_of(&fixture));
    let b = evaluate_run(&fixture.qrels, &reversed);
    assert_eq!(a.per_query, b.per_query);
}
