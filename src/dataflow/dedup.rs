//! The near-duplicate stage, between query embedding and retrieval: among the live queries, a query whose
//! vector is within a cosine threshold of a kept query is a *duplicate*, dead-lettered (`duplicate_query`)
//! or kept and counted, by config (`[fret] duplicate_queries`).
//!
//! **The rule.** Take the live queries in id order (then by text, for two versions of one id); keep a query
//! unless its cosine with an already kept query is `>= threshold`. A query that is not kept is a duplicate
//! of the first kept query within the threshold (its *winner*). Near-duplication is not transitive (a ~ b
//! and b ~ c do not make a ~ c), and this greedy rule gives one answer for every set of queries: it depends
//! on the set alone, not on arrival order or the number of workers. So, under retractions:
//!
//! - when a kept query leaves (its seed passage is deleted or changed), its duplicates are decided again
//!   and the first of them comes back as a live query: it is retrieved, judged and becomes an example;
//! - when a query with a smaller id arrives within the threshold of a kept one, the kept one becomes its
//!   duplicate: it leaves the live queries (so its example is retracted) and is dead-lettered.
//!
//! Dead letters are events, not a collection: each time a query becomes a duplicate (or its winner
//! changes) one is written; when it comes back nothing is retracted from the dead-letter sink.
//!
//! **Cost.** All queries go to one worker (the rule compares every query with every kept one), which keeps
//! each live query and its vector. A time's updates cost one pass over the queries in id order, a dot product
//! per (later query, newly kept query) pair, and a scan of the kept queries before each new query and each
//! duplicate whose winner left (`dedup/greedy.rs` explains why that is exact). The scans dominate:
//! 384-dimension queries arriving 32 per time took 1.2 s in all for 5,000 queries (9 ms for the last time)
//! and 39 s for 20,000 (85 ms for the last time, ~2.7 ms per new query), on a 2-core machine shared with
//! other jobs. That is far below an LLM's time per query, but quadratic over a run: past ~100,000 queries the
//! kept queries need an index (an exact blocked scan like retrieval's, or an ANN index; bucketing by a hash
//! alone would miss near pairs that fall in different buckets).
//!
//! ```text
//! at time 0: q:a [1, 0], q:b [0.99, 0.14]  ─►  q:a kept (+1), q:b duplicate of q:a (dead letter)
//! at time 1: q:a retracted                 ─►  q:a −1, q:b +1 (comes back)
//! ```
mod greedy;

use super::generate::Query;
use super::params::{DedupParams, DuplicateAction};
use super::progress::SharedMetrics;
use super::{Diff, Time};
use crate::records::{DeadLetter, Stage};
use crate::retrieve::vector::Vector;
use differential_dataflow::{AsCollection, VecCollection};
use greedy::{Queries, Status, Transition};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

/// The reason of a duplicate's dead letter.
pub fn duplicate_reason(winner_id: &str, cosine: f32, threshold: f64) -> String {
    format!("duplicate_query: cosine {cosine:.4} >= {threshold} with kept query {winner_id}")
}

/// Suppresses near-duplicate queries.
pub trait DedupQueries<'scope> {
    /// The queries that stay live (all of them with [`DuplicateAction::Keep`]), and a dead letter each time
    /// a query becomes a duplicate (with [`DuplicateAction::DeadLetter`]). `metrics.duplicate_queries`
    /// follows the number of live duplicates under either action.
    fn dedup_queries(
        self,
        params: DedupParams,
        metrics: SharedMetrics,
    ) -> (VecCollection<'scope, Time, (Query, Vector), Diff>, Stream<'scope, Time, Vec<DeadLetter>>);
}

impl<'scope> DedupQueries<'scope> for VecCollection<'scope, Time, (Query, Vector), Diff> {
    fn dedup_queries(
        self,
        params: DedupParams,
        metrics: SharedMetrics,
    ) -> (VecCollection<'scope, Time, (Query, Vector), Diff>, Stream<'scope, Time, Vec<DeadLetter>>) {
        let mut builder = OperatorBuilder::new("DedupQueries".to_owned(), self.inner.scope());
        // Every query meets every other, so all of them go to worker 0.
        let mut input = builder.new_input(self.inner, Exchange::new(|_: &((Query, Vector), Time, Diff)| 0u64));
        type Updates = Vec<((Query, Vector), Time, Diff)>;
        let (live_output, live_stream) = builder.new_output::<Updates>();
        let (dead_output, dead_stream) = builder.new_output::<Vec<DeadLetter>>();
        let mut live_output = OutputBuilder::<_, CapacityContainerBuilder<Updates>>::from(live_output);
        let mut dead_output = OutputBuilder::<_, CapacityContainerBuilder<Vec<DeadLetter>>>::from(dead_output);

        builder.build(move |initial| {
            drop(initial);
            let mut queries = Queries::new(params.threshold);
            type Pending = (Capability<Time>, Capability<Time>, Vec<((Query, Vector), Diff)>);
            let mut pending: BTreeMap<Time, Pending> = BTreeMap::new();
            move |frontiers| {
                let mut live = live_output.activate();
                let mut dead = dead_output.activate();
                input.for_each(|cap, data| {
                    for (qv, t, r) in data.drain(..) {
                        let slot =
                            pending.entry(t).or_insert_with(|| (cap.delayed(&t, 0), cap.delayed(&t, 1), Vec::new()));
                        slot.2.push((qv, r));
                    }
                });
                // A time is decided once all its updates are in: the statuses are those of its whole set.
                let started = Instant::now();
                while let Some(entry) = pending.first_entry() {
                    let t = *entry.key();
                    if frontiers[0].less_equal(&t) {
                        break;
                    }
                    let (live_cap, dead_cap, updates) = entry.remove();
                    let mut changes: Vec<((Query, Vector), Time, Diff)> = Vec::new();
                    let mut letters: Vec<DeadLetter> = Vec::new();
                    for transition in queries.apply(updates) {
                        outputs(transition, params, &metrics, t, &mut changes, &mut letters);
                    }
                    live.session(&live_cap).give_iterator(changes.into_iter());
                    dead.session(&dead_cap).give_iterator(letters.into_iter());
                }
                metrics.dedup.add_operator_time(started.elapsed());
            }
        });

        (live_stream.as_collection(), dead_stream)
    }
}

/// Turns one query's change of status into updates of the live queries, dead letters and the count of
/// duplicates.
fn outputs(
    transition: Transition,
    params: DedupParams,
    metrics: &SharedMetrics,
    t: Time,
    changes: &mut Vec<((Query, Vector), Time, Diff)>,
    letters: &mut Vec<DeadLetter>,
) {
    let Transition { query, vector, before, after } = transition;
    let is_duplicate = |s: &Option<Status>| matches!(s, Some(Status::Duplicate { .. }));
    match (is_duplicate(&before), is_duplicate(&after)) {
        (false, true) => {
            metrics.duplicate_queries.fetch_add(1, Ordering::Relaxed);
        }
        (true, false) => {
            metrics.duplicate_queries.fetch_sub(1, Ordering::Relaxed);
        }
        _ => {}
    }
    let passes = |s: &Option<Status>| match params.action {
        DuplicateAction::DeadLetter => s == &Some(Status::Kept),
        DuplicateAction::Keep => s.is_some(),
    };
    match (passes(&before), passes(&after)) {
        (false, true) => changes.push(((query.clone(), vector.clone()), t, 1)),
        (true, false) => changes.push(((query.clone(), vector.clone()), t, -1)),
        _ => {}
    }
    if let (DuplicateAction::DeadLetter, Some(Status::Duplicate { winner_id, cosine, .. })) = (params.action, &after) {
        let reason = duplicate_reason(winner_id, *cosine, params.threshold);
        letters.push(DeadLetter::new(Stage::Dedup, reason, format!("query {}", query.id), Some(&query.text)));
    }
}
