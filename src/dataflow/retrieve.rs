//! The retrieval stage: each query's top-N passages by cosine, maintained incrementally in both
//! directions.
//!
//! - Passage vectors are broadcast, so every worker holds the whole index; queries are exchanged by id.
//! - A new query scans the index for its top N.
//! - A new passage is scored against every existing query and enters a query's top N when it beats the
//!   current N-th (or the list is short); the passage it pushes out is retracted.
//! - A deleted passage leaves every top N it was in; those queries rescan the index to refill.
//! - A deleted query retracts its whole top N.
//!
//! Updates of one time are applied once both input frontiers have passed that time, so the output at
//! each time is exactly the top N over the index and queries at that time. Ties in cosine are broken by
//! passage (id first), and every score comes from the same [`Vector::dot`], so the result does not depend
//! on the number of workers or the order of arrival.
use super::embed::Vector;
use super::generate::Query;
use super::progress::SharedMetrics;
use super::score::Score;
use super::{Diff, Time};
use crate::records::Passage;
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Capability;

/// One of a query's top-N passages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Candidate {
    /// The query.
    pub query: Query,
    /// The retrieved passage.
    pub passage: Passage,
    /// Cosine similarity of the query's and the passage's vectors.
    pub cosine: Score,
}

/// Rank order of retrieval: higher cosine first, then passage (id first) for ties.
fn rank_order(a: &(Score, Passage), b: &(Score, Passage)) -> Ordering {
    b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1))
}

/// Live passages of the index with their vectors and multiplicities.
#[derive(Default)]
struct Index {
    passages: HashMap<Passage, (Vector, Diff)>,
}

impl Index {
    /// The top `n` passages for `vector`, best first.
    fn top(&self, vector: &Vector, n: usize) -> Vec<(Score, Passage)> {
        let mut scored: Vec<(Score, &Passage)> =
            self.passages.iter().map(|(p, (v, _))| (Score::from(vector.dot(v)), p)).collect();
        let order = |a: &(Score, &Passage), b: &(Score, &Passage)| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1));
        if scored.len() > n {
            scored.select_nth_unstable_by(n, order);
            scored.truncate(n);
        }
        scored.sort_by(order);
        scored.into_iter().map(|(s, p)| (s, p.clone())).collect()
    }
}

struct QueryState {
    vector: Vector,
    count: Diff,
    top: Vec<(Score, Passage)>,
}

/// Finds each query's top-N passages.
pub trait RetrieveTopN<'scope> {
    /// The candidates of every query: its `n` nearest passages by cosine, kept current as passages and
    /// queries come and go.
    fn retrieve_top_n(
        self,
        passages: VecCollection<'scope, Time, (Passage, Vector), Diff>,
        n: usize,
        metrics: SharedMetrics,
    ) -> VecCollection<'scope, Time, Candidate, Diff>;
}

impl<'scope> RetrieveTopN<'scope> for VecCollection<'scope, Time, (Query, Vector), Diff> {
    fn retrieve_top_n(
        self,
        passages: VecCollection<'scope, Time, (Passage, Vector), Diff>,
        n: usize,
        metrics: SharedMetrics,
    ) -> VecCollection<'scope, Time, Candidate, Diff> {
        let n = n.max(1);
        let passages = passages.inner.broadcast();
        self.inner
            .binary_frontier(
                passages,
                Exchange::new(|u: &((Query, Vector), Time, Diff)| (u.0).0.id.hashed()),
                Pipeline,
                "RetrieveTopN",
                move |_cap, _info| {
                    let mut index = Index::default();
                    let mut queries: HashMap<Query, QueryState> = HashMap::new();
                    type Pending = (Vec<((Query, Vector), Diff)>, Vec<((Passage, Vector), Diff)>);
                    let mut pending: BTreeMap<Time, (Capability<Time>, Pending)> = BTreeMap::new();
                    move |(query_input, query_frontier), (passage_input, passage_frontier), output| {
                        query_input.for_each(|cap, data| {
                            for (q, t, r) in data.drain(..) {
                                let slot = pending.entry(t).or_insert_with(|| (cap.delayed(&t, 0), Default::default()));
                                slot.1 .0.push((q, r));
                            }
                        });
                        passage_input.for_each(|cap, data| {
                            for (p, t, r) in data.drain(..) {
                                let slot = pending.entry(t).or_insert_with(|| (cap.delayed(&t, 0), Default::default()));
                                slot.1 .1.push((p, r));
                            }
                        });
                        let started = Instant::now();
                        while let Some(entry) = pending.first_entry() {
                            let t = *entry.key();
                            if query_frontier.less_equal(&t) || passage_frontier.less_equal(&t) {
                                break;
                            }
                            let (cap, (query_updates, passage_updates)) = entry.remove();
                            let mut changes: Vec<(Candidate, Time, Diff)> = Vec::new();
                            apply_time(&mut index, &mut queries, query_updates, passage_updates, n, |c, r| {
                                changes.push((c, t, r))
                            });
                            output.session(&cap).give_iterator(changes.into_iter());
                        }
                        metrics.retrieve.add_operator_time(started.elapsed());
                    }
                },
            )
            .as_collection()
    }
}

/// Applies one time's updates and reports the changes of the candidate set.
fn apply_time(
    index: &mut Index,
    queries: &mut HashMap<Query, QueryState>,
    query_updates: Vec<((Query, Vector), Diff)>,
    passage_updates: Vec<((Passage, Vector), Diff)>,
    n: usize,
    mut emit: impl FnMut(Candidate, Diff),
) {
    // Passages: which ones appeared and which ones disappeared at this time.
    let mut added: Vec<(Passage, Vector)> = Vec::new();
    let mut removed: HashSet<Passage> = HashSet::new();
    let mut net: BTreeMap<(Passage, Vector), Diff> = BTreeMap::new();
    for (pv, r) in passage_updates {
        *net.entry(pv).or_insert(0) += r;
    }
    for ((passage, vector), r) in net.into_iter().filter(|(_, r)| *r != 0) {
        let entry = index.passages.entry(passage.clone()).or_insert((vector.clone(), 0));
        let before = entry.1;
        entry.1 += r;
        match (before > 0, entry.1 > 0) {
            (false, true) => added.push((passage, vector)),
            (true, false) => {
                index.passages.remove(&passage);
                removed.insert(passage);
            }
            _ => {}
        }
    }

    // Queries: new ones wait for the scan below; deleted ones retract their top N.
    let mut net: BTreeMap<(Query, Vector), Diff> = BTreeMap::new();
    for (qv, r) in query_updates {
        *net.entry(qv).or_insert(0) += r;
    }
    let mut fresh: Vec<Query> = Vec::new();
    for ((query, vector), r) in net.into_iter().filter(|(_, r)| *r != 0) {
        let state = queries.entry(query.clone()).or_insert(QueryState { vector, count: 0, top: Vec::new() });
        let before = state.count;
        state.count += r;
        match (before > 0, state.count > 0) {
            (false, true) => fresh.push(query),
            (true, false) => {
                let state = queries.remove(&query).expect("state just seen. This is a bug.");
                for (cosine, passage) in state.top {
                    emit(Candidate { query: query.clone(), passage, cosine }, -1);
                }
            }
            _ => {}
        }
    }
    let fresh_set: HashSet<&Query> = fresh.iter().collect();

    // Existing queries: refill after removals, or let new passages compete with the current N-th.
    if !added.is_empty() || !removed.is_empty() {
        for (query, state) in queries.iter_mut().filter(|(q, _)| !fresh_set.contains(q)) {
            let new_top = if state.top.iter().any(|(_, p)| removed.contains(p)) {
                index.top(&state.vector, n)
            } else if added.is_empty() {
                continue;
            } else {
                let mut merged = state.top.clone();
                merged.extend(added.iter().map(|(p, v)| (Score::from(state.vector.dot(v)), p.clone())));
                merged.sort_by(rank_order);
                merged.truncate(n);
                merged
            };
            let old: HashSet<&(Score, Passage)> = state.top.iter().collect();
            let new: HashSet<&(Score, Passage)> = new_top.iter().collect();
            for (cosine, passage) in state.top.iter().filter(|e| !new.contains(e)) {
                emit(Candidate { query: query.clone(), passage: passage.clone(), cosine: *cosine }, -1);
            }
            for (cosine, passage) in new_top.iter().filter(|e| !old.contains(e)) {
                emit(Candidate { query: query.clone(), passage: passage.clone(), cosine: *cosine }, 1);
            }
            state.top = new_top;
        }
    }

    // New queries scan the (updated) index.
    for query in fresh {
        let state = queries.get_mut(&query).expect("fresh query has state. This is a bug.");
        state.top = index.top(&state.vector, n);
        for (cosine, passage) in &state.top {
            emit(Candidate { query: query.clone(), passage: passage.clone(), cosine: *cosine }, 1);
        }
    }
}
