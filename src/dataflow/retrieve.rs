//! The retrieval stage: each query's top-N passages by cosine, maintained incrementally in both
//! directions, over an index sharded across the timely workers.
//!
//! - Passages are exchanged by id: each worker indexes only the passages it owns (memory per worker is
//!   about the corpus over the workers). Query vectors are broadcast: every worker keeps each live query
//!   and its top N among its own passages (the query's local top N).
//! - A new query scans each shard for its local top N.
//! - A new passage is scored, on its shard, against every existing query and enters a query's local top N
//!   when it beats the current N-th (or the list is short); the passage it pushes out is retracted.
//! - A deleted passage leaves every local top N it was in; those queries rescan the shard to refill.
//! - A deleted query retracts its whole local top N.
//! - The global top N of a query is the best N of its local tops: a differential `reduce` keyed by query
//!   over the shards' (query, passage, cosine) updates, so a passage that leaves a shard's local top N (by
//!   deletion, change or a better passage) leaves the global one, and the next best takes its place. With
//!   one worker the local top N is the global one and the merge is left out.
//!
//! Updates of one time are applied once both input frontiers have passed that time, so the output at
//! each time is exactly the top N over the index and queries at that time. Ties in cosine are broken by
//! passage (id first), and every score comes from the same [`Vector::dot`], so the result does not depend
//! on the number of workers, on which shard owns a passage, or on the order of arrival.
use super::generate::Query;
use super::progress::SharedMetrics;
use super::{Diff, Time};
use crate::records::Passage;
use crate::records::Score;
use crate::retrieve::slots::{Index, Transition};
use crate::retrieve::vector::Vector;
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
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

/// Rank order of retrieval ([`crate::retrieve::rank_cmp`]): higher cosine first, then passage (id first).
fn rank_order(a: &(Score, Passage), b: &(Score, Passage)) -> Ordering {
    crate::retrieve::rank_cmp(a.0.get(), &a.1, b.0.get(), &b.1)
}

struct QueryState {
    vector: Vector,
    count: Diff,
    top: Vec<(Score, Passage)>,
    /// Live since this time's updates, not yet scanned (it scans the updated index at the end).
    fresh: bool,
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
        let shards = self.inner.scope().peers();
        let shard_metrics = Arc::clone(&metrics);
        let local = self
            .inner
            .broadcast()
            .binary_frontier(
                passages.inner,
                Pipeline,
                Exchange::new(|u: &((Passage, Vector), Time, Diff)| (u.0).0.id.hashed()),
                "RetrieveLocalTopN",
                move |_cap, _info| {
                    let mut index = Index::default();
                    let mut queries: HashMap<Query, QueryState> = HashMap::new();
                    type Pending = (Vec<((Query, Vector), Diff)>, Vec<((Passage, Vector), Diff)>);
                    let mut pending: BTreeMap<Time, (Capability<Time>, Pending)> = BTreeMap::new();
                    let metrics = shard_metrics;
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
                            let sizes = (index.len() as i64, queries.len() as i64);
                            apply_time(&mut index, &mut queries, query_updates, passage_updates, n, |c, r| {
                                changes.push((c, t, r))
                            });
                            metrics.index_passages.fetch_add(index.len() as i64 - sizes.0, AtomicOrdering::Relaxed);
                            metrics.index_queries.fetch_add(queries.len() as i64 - sizes.1, AtomicOrdering::Relaxed);
                            output.session(&cap).give_iterator(changes.into_iter());
                        }
                        metrics.retrieve.add_operator_time(started.elapsed());
                    }
                },
            )
            .as_collection();
        if shards == 1 {
            return local;
        }
        local
            .map(|c| (c.query, (c.cosine, c.passage)))
            .reduce_named("MergeTopN", move |_query, input, output| {
                let started = Instant::now();
                let mut all: Vec<&(Score, Passage)> = input.iter().filter(|(_, r)| *r > 0).map(|(e, _)| *e).collect();
                all.sort_by(|a, b| rank_order(a, b));
                output.extend(all.into_iter().take(n).map(|e| (e.clone(), 1 as Diff)));
                metrics.retrieve.add_operator_time(started.elapsed());
            })
            .map(|(query, (cosine, passage))| Candidate { query, passage, cosine })
    }
}

/// Lets `added` passages compete for a place in `state`'s top `n`. Only passages that beat the current
/// N-th (or fill a short list) are cloned and merged, so the common case, a query whose list is full and
/// none of the new passages is close enough, costs one dot product per new passage and no allocation.
fn admit(
    query: &Query,
    state: &mut QueryState,
    added: &[(Passage, Vector)],
    n: usize,
    emit: &mut impl FnMut(Candidate, Diff),
) {
    let full = state.top.len() >= n;
    let mut entrants: Vec<(Score, &Passage)> = Vec::new();
    for (passage, vector) in added {
        let score = Score::from(state.vector.dot(vector));
        // rank_order((score, passage), last) == Less, without cloning the passage.
        let beats_last = match state.top.last() {
            Some((last_score, last_passage)) if full => {
                last_score.cmp(&score).then_with(|| passage.cmp(last_passage)) == Ordering::Less
            }
            _ => true,
        };
        if beats_last {
            entrants.push((score, passage));
        }
    }
    if entrants.is_empty() {
        return;
    }
    // Merge: (entry, is new), best first; the first n stay.
    let mut merged: Vec<((Score, Passage), bool)> = state
        .top
        .drain(..)
        .map(|e| (e, false))
        .chain(entrants.into_iter().map(|(s, p)| ((s, p.clone()), true)))
        .collect();
    merged.sort_by(|a, b| rank_order(&a.0, &b.0));
    for (k, ((cosine, passage), is_new)) in merged.into_iter().enumerate() {
        match (k < n, is_new) {
            (true, true) => {
                emit(Candidate { query: query.clone(), passage: passage.clone(), cosine }, 1);
                state.top.push((cosine, passage));
            }
            (true, false) => state.top.push((cosine, passage)),
            (false, false) => emit(Candidate { query: query.clone(), passage, cosine }, -1),
            (false, true) => {}
        }
    }
}

/// Emits the retractions and insertions that turn `old` into `new` for `query`.
fn emit_difference(
    query: &Query,
    old: &[(Score, Passage)],
    new: &[(Score, Passage)],
    emit: &mut impl FnMut(Candidate, Diff),
) {
    let old_set: HashSet<&(Score, Passage)> = old.iter().collect();
    let new_set: HashSet<&(Score, Passage)> = new.iter().collect();
    for (cosine, passage) in old.iter().filter(|e| !new_set.contains(e)) {
        emit(Candidate { query: query.clone(), passage: passage.clone(), cosine: *cosine }, -1);
    }
    for (cosine, passage) in new.iter().filter(|e| !old_set.contains(e)) {
        emit(Candidate { query: query.clone(), passage: passage.clone(), cosine: *cosine }, 1);
    }
}

/// Applies one time's updates and reports the changes of the candidate set.
/// The non-zero net updates of one time, retractions before insertions: a record whose vector changed
/// (a new encoder version) is removed with its old vector, then added with its new one.
fn removals_first<K: Ord>(net: BTreeMap<K, Diff>) -> impl Iterator<Item = (K, Diff)> {
    let (removals, additions): (Vec<_>, Vec<_>) = net.into_iter().filter(|(_, r)| *r != 0).partition(|(_, r)| *r < 0);
    removals.into_iter().chain(additions)
}

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
    // Removals first: a passage re-embedded by a new encoder version (same passage, new vector) must
    // leave the index before it enters again with its new vector.
    for ((passage, vector), r) in removals_first(net) {
        match index.update(passage.clone(), &vector, r) {
            Transition::Added => added.push((passage, vector)),
            Transition::Removed => {
                removed.insert(passage);
            }
            Transition::Unchanged => {}
        }
    }

    // Queries: new ones wait for the scan below; deleted ones retract their top N.
    let mut net: BTreeMap<(Query, Vector), Diff> = BTreeMap::new();
    for (qv, r) in query_updates {
        *net.entry(qv).or_insert(0) += r;
    }
    let mut fresh: Vec<Query> = Vec::new();
    for ((query, vector), r) in removals_first(net) {
        let state =
            queries.entry(query.clone()).or_insert(QueryState { vector, count: 0, top: Vec::new(), fresh: false });
        let before = state.count;
        state.count += r;
        match (before > 0, state.count > 0) {
            (false, true) => {
                state.fresh = true;
                fresh.push(query);
            }
            (true, false) => {
                let state = queries.remove(&query).expect("state just seen. This is a bug.");
                for (cosine, passage) in state.top {
                    emit(Candidate { query: query.clone(), passage, cosine }, -1);
                }
            }
            _ => {}
        }
    }

    // Existing queries: refill after removals (rescanned together below), or let new passages compete
    // with the current N-th.
    let mut refill: Vec<Query> = Vec::new();
    if !added.is_empty() || !removed.is_empty() {
        for (query, state) in queries.iter_mut().filter(|(_, s)| !s.fresh) {
            if state.top.iter().any(|(_, p)| removed.contains(p)) {
                refill.push(query.clone());
            } else if !added.is_empty() {
                admit(query, state, &added, n, &mut emit);
            }
        }
    }
    let vectors: Vec<&Vector> = refill.iter().map(|q| &queries[q].vector).collect();
    let tops = index.top_many(&vectors, n);
    for (query, new_top) in refill.iter().zip(tops) {
        let state = queries.get_mut(query).expect("refilled query has state. This is a bug.");
        emit_difference(query, &state.top, &new_top, &mut emit);
        state.top = new_top;
    }

    // New queries scan the (updated) index, all in one pass.
    let vectors: Vec<&Vector> = fresh.iter().map(|q| &queries[q].vector).collect();
    let tops = index.top_many(&vectors, n);
    for (query, top) in fresh.iter().zip(tops) {
        let state = queries.get_mut(query).expect("fresh query has state. This is a bug.");
        state.fresh = false;
        for (cosine, passage) in &top {
            emit(Candidate { query: query.clone(), passage: passage.clone(), cosine: *cosine }, 1);
        }
        state.top = top;
    }
}
