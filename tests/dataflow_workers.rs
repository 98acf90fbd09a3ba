//! The FRet dataflow gives the same result on 1, 2 and 4 workers, through additions, changes and deletes
//! (near-duplicate queries: tests/dataflow_dedup.rs has a case where they come and go).
mod dataflow_support;

use dataflow_support::{delete, upsert, Run};
use fretflow::dataflow::async_op::BatchPolicy;
use fretflow::dataflow::instant::OverlapLabeler;
use fretflow::dataflow::params::FretParams;
use fretflow::dataflow::params::NegativeStrategy;
use fretflow::records::SourceRecord;
use std::sync::Arc;
use std::time::Duration;

const WORDS: [&str; 24] = [
    "wing",
    "flow",
    "shock",
    "boundary",
    "layer",
    "heat",
    "plate",
    "vortex",
    "drag",
    "lift",
    "wave",
    "mach",
    "pressure",
    "nozzle",
    "jet",
    "cone",
    "body",
    "skin",
    "friction",
    "laminar",
    "turbulent",
    "stream",
    "edge",
    "slot",
];

/// A deterministic stream of epochs: 40 passages in 4 epochs, then changes of 6 and deletes of 5.
fn epochs() -> Vec<Vec<SourceRecord>> {
    let mut state: u64 = 0x2545F4914F6CDD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut text =
        |len: usize| (0..len).map(|_| WORDS[(next() % WORDS.len() as u64) as usize]).collect::<Vec<_>>().join(" ");
    let mut seq = 0;
    let mut epochs: Vec<Vec<SourceRecord>> = (0..4)
        .map(|e| {
            (0..10)
                .map(|i| {
                    seq += 1;
                    upsert(&format!("p{}", e * 10 + i), &text(8 + i % 5), seq)
                })
                .collect()
        })
        .collect();
    epochs.push((0..6).map(|i| upsert(&format!("p{}", i * 7), &text(9), 100 + i)).collect());
    epochs.push([3, 14, 22, 35, 39].iter().map(|i| delete(&format!("p{i}"), 200 + i)).collect());
    epochs
}

#[test]
fn one_two_and_four_workers_give_identical_changes_and_final_sets() {
    let run = |workers: usize| {
        let params = FretParams {
            neighbours: 5,
            negatives: NegativeStrategy::Random,
            negatives_count: 2,
            ..FretParams::default()
        };
        let llm_batch = BatchPolicy { max_batch: 3, max_wait: Duration::ZERO, max_in_flight: 2 };
        Run { workers, params, llm_batch, ..Run::default() }.go(epochs(), Arc::new(OverlapLabeler::new(4)))
    };
    let one = run(1);
    let final_set = one.final_set();
    // 40 passages, 5 deleted: one example each, except q:p34, whose query ("shock lift plate flow") is q:p26's
    // (the near-duplicate check is on, at its default threshold).
    assert_eq!(final_set.len(), 34);
    let letters: Vec<(&str, &str)> = one.dead_letters.iter().map(|d| (d.input.as_str(), d.reason.as_str())).collect();
    assert_eq!(letters, [("query q:p34", "duplicate_query: cosine 1.0000 >= 0.97 with kept query q:p26")]);
    // Two negatives each, fewer where the false-negative filter (on by default) leaves too few candidates.
    assert!(final_set.values().all(|e| e.ranking.len() == 5 && e.negatives.len() <= 2));
    assert!(final_set.values().filter(|e| e.negatives.len() == 2).count() > 20);
    // Late passages changed earlier queries' positives at least once.
    let first_epoch = |id: &str| id[1..].parse::<u32>().unwrap() < 10;
    assert!(one
        .changes
        .iter()
        .any(|((_, e), t, r)| *t > 0 && *r > 0 && first_epoch(&e.seed_id) && !first_epoch(&e.positive.id)));
    // Exact, scores included: word counts, scalar normalization, the fixed-order `Vector::dot` and the overlap
    // labeler give the same bits whichever worker or batch computes them.
    for workers in [2, 4] {
        let other = run(workers);
        assert_eq!(other.final_set(), final_set, "{workers} workers");
        assert_eq!(other.changes, one.changes, "{workers} workers");
        assert_eq!(other.dead_letters, one.dead_letters, "{workers} workers");
    }
}
