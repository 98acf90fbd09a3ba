//! The incremental top-N retrieval operator on hand-made vectors: exact changes in both directions
//! (new queries search the index; new passages enter a top N by beating its N-th; deletions refill).
use differential_dataflow::input::InputSession;
use fretflow::dataflow::generate::Query;
use fretflow::dataflow::progress::Metrics;
use fretflow::dataflow::retrieve::RetrieveTopN;
use fretflow::dataflow::{Diff, Time};
use fretflow::records::Passage;
use fretflow::retrieve::vector::Vector;
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

/// Runs `epochs` through the operator with `n` neighbours on `workers`; returns `(query, passage, time,
/// diff)` changes sorted by time.
fn run(n: usize, workers: usize, epochs: Vec<Vec<Step>>) -> Vec<(String, String, Time, Diff)> {
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
            for (t, steps) in epochs.iter().enumerate() {
                for step in steps {
                    match *step {
                        AddPassage(id, a) => passages.insert((passage(id), at(a))),
                        DeletePassage(id, a) => passages.remove((passage(id), at(a))),
                        AddQuery(id, a) => queries.insert((query(id), at(a))),
                        DeleteQuery(id, a) => queries.remove((query(id), at(a))),
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
    let mut changes: Vec<_> = rx
        .extract()
        .into_iter()
        .flat_map(|(_, updates)| updates)
        .map(|(c, t, r)| (c.query.id, c.passage.id, t, r))
        .collect();
    changes.sort_by(|a, b| (a.2, &a.0, &a.1, a.3).cmp(&(b.2, &b.0, &b.1, b.3)));
    changes
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
