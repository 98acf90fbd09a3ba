//! The incremental top-N retrieval operator on hand-made vectors: exact changes in both directions
//! (new queries search the index; new passages enter a top N by beating its N-th; deletions refill), and
//! the same changes from an index sharded over 1, 2 and 4 workers as from a from-scratch top N per time.
use differential_dataflow::input::InputSession;
use fretflow::dataflow::generate::Query;
use fretflow::dataflow::progress::Metrics;
use fretflow::dataflow::retrieve::RetrieveTopN;
use fretflow::dataflow::{Diff, Time};
use fretflow::records::Passage;
use fretflow::retrieve::rank_cmp;
use fretflow::retrieve::vector::Vector;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{mpsc, Arc, Mutex};
use timely::dataflow::operators::capture::Extract;
use timely::dataflow::operators::Capture;

fn passage(id: &str) -> Passage {
    Passage { id: id.into(), title: String::new(), text: format!("text of {id}") }
}

fn query(id: &str) -> Query {
    Query { id: id.into(), seed_id: id.into(), task: "t".into(), text: id.into() }
}

/// A unit vector at `angle` degrees in the plane: cosine between two is the cosine of their angle gap.
fn at(angle: f64) -> Vector {
    let r = angle.to_radians();
    Vector(vec![r.cos() as f32, r.sin() as f32])
}

enum Step {
    AddPassage(&'static str, f64),
    DeletePassage(&'static str, f64),
    AddQuery(&'static str, f64),
    DeleteQuery(&'static str, f64),
}
use Step::*;

/// One input update: a passage or a query with its vector, and its diff.
#[derive(Clone)]
enum Update {
    Passage(Passage, Vector, Diff),
    Query(Query, Vector, Diff),
}

/// A change of the candidate set: `(query, passage, cosine bits, time, diff)`.
type Change = (String, String, u32, Time, Diff);

/// Runs `epochs` through the operator with `n` neighbours on `workers`; returns `(query, passage, time,
/// diff)` changes sorted by time.
fn run(n: usize, workers: usize, epochs: Vec<Vec<Step>>) -> Vec<(String, String, Time, Diff)> {
    let epochs = epochs
        .into_iter()
        .map(|steps| {
            steps
                .into_iter()
                .map(|step| match step {
                    AddPassage(id, a) => Update::Passage(passage(id), at(a), 1),
                    DeletePassage(id, a) => Update::Passage(passage(id), at(a), -1),
                    AddQuery(id, a) => Update::Query(query(id), at(a), 1),
                    DeleteQuery(id, a) => Update::Query(query(id), at(a), -1),
                })
                .collect()
        })
        .collect();
    run_updates(n, workers, epochs).into_iter().map(|(q, p, _, t, r)| (q, p, t, r)).collect()
}

/// Runs `epochs` of updates through the operator with `n` neighbours on `workers`; returns the
/// consolidated changes sorted by time, query, passage.
fn run_updates(n: usize, workers: usize, epochs: Vec<Vec<Update>>) -> Vec<Change> {
    let (tx, rx) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let epochs = Arc::new(epochs);
    timely::execute(timely::Config::process(workers), move |worker| {
        let mut passages = InputSession::<Time, (Passage, Vector), Diff>::new();
        let mut queries = InputSession::<Time, (Query, Vector), Diff>::new();
        let tx = tx.lock().unwrap().clone();
        let probe = worker.dataflow(|scope| {
            let candidates = queries.to_collection(scope).retrieve_top_n(
                passages.to_collection(scope),
                n,
                Arc::new(Metrics::default()),
            );
            let (probe, candidates) = candidates.probe();
            candidates.inner.capture_into(tx);
            probe
        });
        if worker.index() == 0 {
            for (t, updates) in epochs.iter().enumerate() {
                for update in updates {
                    match update.clone() {
                        Update::Passage(p, v, r) => passages.update((p, v), r),
                        Update::Query(q, v, r) => queries.update((q, v), r),
                    }
                }
                let next = t as Time + 1;
                passages.advance_to(next);
                queries.advance_to(next);
                passages.flush();
                queries.flush();
                worker.step_while(|| probe.less_than(&next));
            }
        }
    })
    .unwrap();
    let mut net: BTreeMap<(Time, String, String, u32), Diff> = BTreeMap::new();
    for (_, updates) in rx.extract() {
        for (c, t, r) in updates {
            *net.entry((t, c.query.id, c.passage.id, (c.cosine.get() as f32).to_bits())).or_insert(0) += r;
        }
    }
    net.into_iter().filter(|(_, r)| *r != 0).map(|((t, q, p, bits), r)| (q, p, bits, t, r)).collect()
}

fn c(q: &str, p: &str, t: Time, r: Diff) -> (String, String, Time, Diff) {
    (q.into(), p.into(), t, r)
}

#[test]
fn a_new_query_scans_the_index_and_a_closer_new_passage_displaces_the_nth() {
    let epochs = vec![
        vec![AddPassage("a", 0.0), AddPassage("b", 40.0), AddPassage("c", 90.0), AddQuery("q", 10.0)],
        // d is closer to q than b (the current 2nd); e is farther than b and stays out.
        vec![AddPassage("d", 15.0), AddPassage("e", 70.0)],
    ];
    assert_eq!(run(2, 1, epochs), vec![c("q", "a", 0, 1), c("q", "b", 0, 1), c("q", "b", 1, -1), c("q", "d", 1, 1)]);
}

#[test]
fn deleting_a_top_passage_refills_from_the_index_and_deleting_a_query_retracts_its_top() {
    let epochs = vec![
        vec![
            AddPassage("a", 0.0),
            AddPassage("b", 40.0),
            AddPassage("c", 90.0),
            AddQuery("q", 10.0),
            AddQuery("r", 85.0),
        ],
        vec![DeletePassage("a", 0.0)],
        vec![DeleteQuery("r", 85.0)],
    ];
    assert_eq!(
        run(2, 1, epochs),
        vec![
            c("q", "a", 0, 1),
            c("q", "b", 0, 1),
            c("r", "b", 0, 1),
            c("r", "c", 0, 1),
            c("q", "a", 1, -1),
            c("q", "c", 1, 1),
            c("r", "b", 2, -1),
            c("r", "c", 2, -1),
        ]
    );
}

#[test]
fn ties_break_by_passage_so_workers_agree() {
    let epochs = vec![
        vec![
            AddPassage("y", 20.0),
            AddPassage("x", 20.0),
            AddPassage("z", 20.0),
            AddQuery("q", 0.0),
            AddQuery("s", 1.0),
        ],
        vec![AddPassage("w", 20.0)],
    ];
    let one = run(2, 1, epochs);
    assert_eq!(
        one,
        vec![
            c("q", "x", 0, 1),
            c("q", "y", 0, 1),
            c("s", "x", 0, 1),
            c("s", "y", 0, 1),
            c("q", "w", 1, 1),
            c("q", "y", 1, -1),
            c("s", "w", 1, 1),
            c("s", "y", 1, -1)
        ]
    );
    let epochs = vec![
        vec![
            AddPassage("y", 20.0),
            AddPassage("x", 20.0),
            AddPassage("z", 20.0),
            AddQuery("q", 0.0),
            AddQuery("s", 1.0),
        ],
        vec![AddPassage("w", 20.0)],
    ];
    assert_eq!(run(2, 3, epochs), one);
}

/// The top `n` of every live query over the live passages, computed from scratch:
/// `(query, passage, cosine bits)`.
fn from_scratch(
    passages: &BTreeMap<String, (Passage, Vector)>,
    queries: &BTreeMap<String, (Query, Vector)>,
    n: usize,
) -> BTreeSet<(String, String, u32)> {
    let mut out = BTreeSet::new();
    for (qid, (_, qv)) in queries {
        let mut scored: Vec<(f32, &Passage)> = passages.values().map(|(p, v)| (qv.dot(v), p)).collect();
        scored.sort_by(|a, b| rank_cmp(a.0 as f64, a.1, b.0 as f64, b.1));
        for (score, p) in scored.into_iter().take(n) {
            out.insert((qid.clone(), p.id.clone(), score.to_bits()));
        }
    }
    out
}

/// A seeded workload over 8 epochs on 8-dimensional vectors with coarse components (so that scores tie
/// and the passage order decides): passages added late that enter top Ns, deleted (refill), changed (same
/// id, new text and vector, in one epoch), queries added and deleted. Returns the epochs and the changes
/// a from-scratch top N per epoch implies.
fn workload(seed: u64, n: usize) -> (Vec<Vec<Update>>, Vec<Change>) {
    let mut state = seed;
    let mut next = move |k: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % k
    };
    let vector = |next: &mut dyn FnMut(u64) -> u64| Vector((0..8).map(|_| next(5) as f32 - 2.0).collect());
    let mut live_p: BTreeMap<String, (Passage, Vector)> = BTreeMap::new();
    let mut live_q: BTreeMap<String, (Query, Vector)> = BTreeMap::new();
    let mut epochs = Vec::new();
    let mut expected = Vec::new();
    let mut before = BTreeSet::new();
    let mut version = 0;
    for t in 0..8u64 {
        let mut updates = Vec::new();
        let adds = if t == 0 { 40 } else { 6 };
        for _ in 0..adds {
            let id = format!("p{:03}", next(200));
            if live_p.contains_key(&id) {
                continue;
            }
            let p = Passage { id: id.clone(), title: String::new(), text: format!("text of {id}") };
            let v = vector(&mut next);
            updates.push(Update::Passage(p.clone(), v.clone(), 1));
            live_p.insert(id, (p, v));
        }
        if t > 0 {
            for _ in 0..3 {
                let ids: Vec<String> = live_p.keys().cloned().collect();
                let id = ids[next(ids.len() as u64) as usize].clone();
                let (p, v) = live_p.remove(&id).unwrap();
                updates.push(Update::Passage(p.clone(), v, -1));
                if next(2) == 0 {
                    // A change: the same id with a new text and vector.
                    version += 1;
                    let p = Passage { id: id.clone(), title: String::new(), text: format!("text of {id} v{version}") };
                    let v = vector(&mut next);
                    updates.push(Update::Passage(p.clone(), v.clone(), 1));
                    live_p.insert(id, (p, v));
                }
            }
        }
        for _ in 0..if t == 0 { 8 } else { 2 } {
            let id = format!("q{:03}", next(50));
            if live_q.contains_key(&id) {
                continue;
            }
            let q = Query { id: id.clone(), seed_id: id.clone(), task: "t".into(), text: id.clone() };
            let v = vector(&mut next);
            updates.push(Update::Query(q.clone(), v.clone(), 1));
            live_q.insert(id, (q, v));
        }
        if t > 0 && t % 3 == 0 {
            let id = live_q.keys().next().cloned().unwrap();
            let (q, v) = live_q.remove(&id).unwrap();
            updates.push(Update::Query(q, v, -1));
        }
        epochs.push(updates);
        let after = from_scratch(&live_p, &live_q, n);
        for (q, p, bits) in before.difference(&after) {
            expected.push((q.clone(), p.clone(), *bits, t, -1));
        }
        for (q, p, bits) in after.difference(&before) {
            expected.push((q.clone(), p.clone(), *bits, t, 1));
        }
        before = after;
    }
    expected.sort_by(|a, b| (a.3, &a.0, &a.1, a.2).cmp(&(b.3, &b.0, &b.1, b.2)));
    (epochs, expected)
}

/// The sharded index (each worker indexes the passages it owns, queries go to every worker, the global
/// top N is the merge of the local ones) gives, on 1, 2 and 4 workers, exactly the changes of a top N
/// recomputed from scratch at every time: late passages entering, deletions and changes refilling from
/// other shards, queries coming and going.
#[test]
fn a_sharded_index_on_one_two_and_four_workers_gives_the_from_scratch_changes() {
    for seed in [1, 2, 3] {
        for n in [1, 3, 5] {
            let (epochs, expected) = workload(seed, n);
            assert!(expected.iter().any(|c| c.3 > 0 && c.4 < 0), "the workload retracts something (seed {seed})");
            for workers in [1, 2, 4] {
                let got = run_updates(n, workers, epochs.clone());
                assert_eq!(got, expected, "seed {seed}, n {n}, {workers} workers");
            }
        }
    }
}
