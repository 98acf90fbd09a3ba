//! The state of the near-duplicate stage: every live query with its vector and whether it is kept, updated
//! one time's changes at a time.
//!
//! The rule ([`super`] states it for users): queries are taken in key order (`(Query, Vector)`, so query id
//! first), and a query is kept unless its cosine with an already kept query is at least the threshold; a
//! query that is not kept is a duplicate of the first kept query (in key order) within the threshold, its
//! *winner*. The statuses depend only on the set of live queries, never on the order in which they arrived.
//!
//! Recomputing the rule from scratch costs a dot product per (query, kept query) pair. An update instead
//! walks the queries in key order once and re-decides a query only against what changed before it: the
//! queries that became kept (*gained*) and those that stopped being kept (*lost*):
//!
//! - a kept query can only be pushed out by a gained query within the threshold (no query that was kept
//!   before was within it);
//! - a duplicate keeps its winner while the winner is kept, unless a gained query before the winner is
//!   within the threshold, which then becomes the winner; when the winner is lost, it scans all kept
//!   queries before it again;
//! - a new query scans all kept queries before it.
//!
//! So a change costs one pass over the queries, a dot product per (later query, gained query) pair, and a
//! scan of the kept queries for each new query and each duplicate whose winner left.
use crate::dataflow::generate::Query;
use crate::dataflow::Diff;
use crate::retrieve::vector::Vector;
use std::collections::{BTreeMap, HashSet};

/// Where a live query stands.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Status {
    /// No kept query before it is within the threshold.
    Kept,
    /// Within the threshold of a kept query: the first one in key order.
    Duplicate {
        /// The winner's serial (its identity in this state).
        winner: u64,
        /// The winner's query id.
        winner_id: String,
        /// Cosine of this query's vector and the winner's.
        cosine: f32,
    },
    /// Live since this time's updates and not yet decided, or not live.
    Undecided,
}

/// A live query whose status changed at one time. `None` is "not live".
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Transition {
    /// The query.
    pub query: Query,
    /// Its vector.
    pub vector: Vector,
    /// Status before the time's updates.
    pub before: Option<Status>,
    /// Status after them.
    pub after: Option<Status>,
}

struct Entry {
    query: Query,
    vector: Vector,
    /// Identity that survives moves in `entries`; assigned when the entry is created.
    serial: u64,
    count: Diff,
    status: Status,
}

impl Entry {
    fn live(&self) -> bool {
        self.count > 0
    }

    fn kept(&self) -> bool {
        self.live() && self.status == Status::Kept
    }
}

/// Queries in key order with their statuses.
pub(super) struct Queries {
    threshold: f64,
    /// Every query with a non-zero count, sorted by `(query, vector)`.
    entries: Vec<Entry>,
    next_serial: u64,
}

impl Queries {
    /// An empty state; queries with cosine `>= threshold` are duplicates.
    pub(super) fn new(threshold: f64) -> Self {
        Self { threshold, entries: Vec::new(), next_serial: 0 }
    }

    /// Applies one time's updates and returns the queries whose liveness or status changed, in key order
    /// (removed queries first).
    pub(super) fn apply(&mut self, updates: Vec<((Query, Vector), Diff)>) -> Vec<Transition> {
        let mut net: BTreeMap<(Query, Vector), Diff> = BTreeMap::new();
        for (key, r) in updates {
            *net.entry(key).or_insert(0) += r;
        }
        net.retain(|_, r| *r != 0);
        if net.is_empty() {
            return Vec::new();
        }
        let mut transitions = Vec::new();
        let mut lost: HashSet<u64> = HashSet::new();
        self.merge(net, &mut transitions, &mut lost);
        self.walk(&mut transitions, lost);
        transitions
    }

    /// Merges the net updates into `entries` (one pass): removed queries leave with a transition (and
    /// into `lost` when they were kept), new ones enter undecided.
    fn merge(
        &mut self,
        net: BTreeMap<(Query, Vector), Diff>,
        transitions: &mut Vec<Transition>,
        lost: &mut HashSet<u64>,
    ) {
        let old = std::mem::take(&mut self.entries);
        let mut merged: Vec<Entry> = Vec::with_capacity(old.len() + net.len());
        let mut old = old.into_iter().peekable();
        for ((query, vector), r) in net {
            while let Some(entry) = old.next_if(|e| (&e.query, &e.vector) < (&query, &vector)) {
                merged.push(entry);
            }
            let mut entry = match old.next_if(|e| e.query == query && e.vector == vector) {
                Some(entry) => entry,
                None => {
                    self.next_serial += 1;
                    Entry { query, vector, serial: self.next_serial, count: 0, status: Status::Undecided }
                }
            };
            let was_live = entry.live();
            entry.count += r;
            if was_live && !entry.live() {
                if entry.status == Status::Kept {
                    lost.insert(entry.serial);
                }
                let before = std::mem::replace(&mut entry.status, Status::Undecided);
                transitions.push(Transition {
                    query: entry.query.clone(),
                    vector: entry.vector.clone(),
                    before: Some(before),
                    after: None,
                });
            }
            if entry.count != 0 {
                merged.push(entry);
            }
        }
        merged.extend(old);
        self.entries = merged;
    }

    /// Re-decides, in key order, every live query that is new or may be affected by what was gained or
    /// lost before it.
    fn walk(&mut self, transitions: &mut Vec<Transition>, mut lost: HashSet<u64>) {
        let mut gained: Vec<usize> = Vec::new();
        for i in 0..self.entries.len() {
            let entry = &self.entries[i];
            if !entry.live() || (entry.status != Status::Undecided && gained.is_empty() && lost.is_empty()) {
                continue;
            }
            let after = match &entry.status {
                Status::Undecided => self.scan(i),
                Status::Kept => self.first_within(i, gained.iter().copied()).unwrap_or(Status::Kept),
                Status::Duplicate { winner, .. } if lost.contains(winner) => self.scan(i),
                Status::Duplicate { winner_id, .. } => {
                    // Only a gained query before the winner can take its place. Ids order the keys, except
                    // between two entries with the same id: then decide from scratch.
                    let before_winner = gained.iter().copied().take_while(|&g| self.entries[g].query.id < *winner_id);
                    let tie = gained.iter().any(|&g| self.entries[g].query.id == *winner_id);
                    if tie {
                        self.scan(i)
                    } else {
                        self.first_within(i, before_winner).unwrap_or_else(|| entry.status.clone())
                    }
                }
            };
            let entry = &mut self.entries[i];
            if after == entry.status {
                continue;
            }
            let before = std::mem::replace(&mut entry.status, after.clone());
            match (&before, &after) {
                (Status::Kept, _) => {
                    lost.insert(entry.serial);
                }
                (_, Status::Kept) => gained.push(i),
                _ => {}
            }
            transitions.push(Transition {
                query: entry.query.clone(),
                vector: entry.vector.clone(),
                before: (before != Status::Undecided).then_some(before),
                after: Some(after),
            });
        }
    }

    /// The status of entry `i` from scratch: the first kept query before it within the threshold.
    fn scan(&self, i: usize) -> Status {
        self.first_within(i, (0..i).filter(|&j| self.entries[j].kept())).unwrap_or(Status::Kept)
    }

    /// The first of `candidates` (kept entries before `i`, in key order) within the threshold of entry `i`.
    fn first_within(&self, i: usize, candidates: impl Iterator<Item = usize>) -> Option<Status> {
        let vector = &self.entries[i].vector;
        for j in candidates {
            let cosine = vector.dot(&self.entries[j].vector);
            if f64::from(cosine) >= self.threshold {
                let winner = &self.entries[j];
                return Some(Status::Duplicate { winner: winner.serial, winner_id: winner.query.id.clone(), cosine });
            }
        }
        None
    }

    /// `(query id, winner id)` of every live query, winner `None` when kept: for tests.
    #[cfg(test)]
    fn statuses(&self) -> Vec<(String, Option<String>)> {
        self.entries
            .iter()
            .filter(|e| e.live())
            .map(|e| match &e.status {
                Status::Kept => (e.query.id.clone(), None),
                Status::Duplicate { winner_id, .. } => (e.query.id.clone(), Some(winner_id.clone())),
                Status::Undecided => panic!("undecided live query {} after an update", e.query.id),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: &str) -> Query {
        Query { id: id.into(), seed_id: id.into(), task: "t".into(), text: format!("text of {id}") }
    }

    /// The rule from scratch: keys in order, greedy.
    fn brute_force(live: &BTreeMap<(Query, Vector), Diff>, threshold: f64) -> Vec<(String, Option<String>)> {
        let mut kept: Vec<(&Query, &Vector)> = Vec::new();
        let mut out = Vec::new();
        for ((q, v), _) in live.iter().filter(|(_, c)| **c > 0) {
            let winner = kept.iter().find(|(_, k)| f64::from(v.dot(k)) >= threshold).map(|(w, _)| w.id.clone());
            if winner.is_none() {
                kept.push((q, v));
            }
            out.push((q.id.clone(), winner));
        }
        out
    }

    #[test]
    fn a_near_duplicate_yields_to_the_smaller_id_and_comes_back_when_it_leaves() {
        let mut state = Queries::new(0.9);
        let a = (query("q:a"), Vector::normalized(vec![1.0, 0.1]));
        let b = (query("q:b"), Vector::normalized(vec![1.0, 0.0]));
        let t0 = state.apply(vec![(b.clone(), 1)]);
        assert_eq!(t0.len(), 1);
        assert_eq!((t0[0].before.clone(), t0[0].after.clone()), (None, Some(Status::Kept)));
        // A smaller id arrives: it is kept, and `q:b` becomes its duplicate.
        let t1 = state.apply(vec![(a.clone(), 1)]);
        assert_eq!(state.statuses(), vec![("q:a".into(), None), ("q:b".into(), Some("q:a".into()))]);
        let changed: Vec<(&str, bool)> = t1.iter().map(|t| (t.query.id.as_str(), t.before.is_some())).collect();
        assert_eq!(changed, [("q:a", false), ("q:b", true)]);
        // The winner leaves: `q:b` is kept again.
        let t2 = state.apply(vec![(a, -1)]);
        assert_eq!(state.statuses(), vec![("q:b".into(), None)]);
        assert_eq!(t2.len(), 2);
        assert_eq!((t2[0].query.id.as_str(), t2[0].after.clone()), ("q:a", None));
        assert_eq!((t2[1].query.id.as_str(), t2[1].after.clone()), ("q:b", Some(Status::Kept)));
    }

    #[test]
    fn the_rule_is_greedy_not_transitive() {
        // a ~ b and b ~ c, but a !~ c: a kept, b its duplicate, c kept (b is not kept, so it suppresses
        // nothing).
        let mut state = Queries::new(0.9);
        let v = |deg: f32| Vector(vec![deg.to_radians().cos(), deg.to_radians().sin()]);
        state.apply(vec![((query("q:a"), v(0.0)), 1), ((query("q:b"), v(20.0)), 1), ((query("q:c"), v(40.0)), 1)]);
        let statuses = vec![("q:a".into(), None), ("q:b".into(), Some("q:a".into())), ("q:c".into(), None)];
        assert_eq!(state.statuses(), statuses);
    }

    #[test]
    fn a_second_version_of_the_winners_id_that_sorts_first_takes_over_as_winner() {
        // Two live versions of one id (a replay can briefly hold both): keys, not ids alone, decide.
        let mut state = Queries::new(25f64.to_radians().cos());
        let v = |deg: f32| Vector(vec![deg.to_radians().cos(), deg.to_radians().sin()]);
        let (w, y, g) = ((query("q:x"), v(0.0)), (query("q:y"), v(20.0)), (query("q:x"), v(40.0)));
        assert!(g < w, "the new version sorts before the winner");
        state.apply(vec![(w.clone(), 1), (y.clone(), 1)]);
        let changed = state.apply(vec![(g, 1)]);
        let y_after = changed.iter().find(|t| t.query == y.0).and_then(|t| t.after.clone());
        match y_after {
            Some(Status::Duplicate { winner_id, cosine, .. }) => {
                assert_eq!(winner_id, "q:x");
                assert!((cosine - 20f32.to_radians().cos()).abs() < 1e-6, "the winner is the 40° version");
            }
            other => panic!("q:y should change winner: {other:?}"),
        }
        let statuses = vec![("q:x".into(), None), ("q:x".into(), None), ("q:y".into(), Some("q:x".into()))];
        assert_eq!(state.statuses(), statuses);
    }

    #[test]
    fn incremental_updates_equal_the_rule_from_scratch_through_inserts_retractions_and_replacements() {
        let mut rng = 0x9E3779B97F4A7C15u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        // Directions 10 degrees apart (a third component tells versions apart): with a threshold of cos 25°,
        // 0° ~ 20° ~ 40° but not 0° ~ 40°, so chains of near pairs form and winners change hands.
        let vector = |a: u64, b: u64| {
            let angle = (a as f32 * 10.0).to_radians();
            Vector::normalized(vec![angle.cos(), angle.sin(), b as f32 * 1e-3])
        };
        for threshold in [25f64.to_radians().cos(), 45f64.to_radians().cos(), 0.999] {
            let mut state = Queries::new(threshold);
            let mut live: BTreeMap<(Query, Vector), Diff> = BTreeMap::new();
            for _time in 0..300 {
                let mut updates = Vec::new();
                for _ in 0..1 + next(4) {
                    let id = format!("q:{:02}", next(20));
                    let new_key = (query(&id), vector(next(10), next(3)));
                    let current = live.keys().find(|(q, _)| q.id == id).cloned();
                    // Retract the current version (1 in 3), replace it (1 in 3), or add a second version with
                    // the same id (1 in 3: two live queries with one id, as a replay could briefly give).
                    let (retract, insert) = match (current.is_some(), next(3)) {
                        (false, _) => (false, true),
                        (true, 0) => (true, false),
                        (true, 1) => (true, true),
                        (true, _) => (false, true),
                    };
                    if let (true, Some(key)) = (retract, current) {
                        updates.push((key.clone(), -1));
                        *live.get_mut(&key).unwrap() -= 1;
                    }
                    if insert && !live.contains_key(&new_key) {
                        updates.push((new_key.clone(), 1));
                        *live.entry(new_key).or_insert(0) += 1;
                    }
                    live.retain(|_, c| *c != 0);
                }
                state.apply(updates);
                assert_eq!(state.statuses(), brute_force(&live, threshold), "threshold {threshold}");
            }
        }
    }

    #[test]
    fn transitions_report_each_change_once_and_nothing_when_nothing_changes() {
        let mut state = Queries::new(0.9);
        let k = (query("q:k"), Vector::normalized(vec![0.0, 1.0]));
        state.apply(vec![(k.clone(), 1)]);
        // An update that cancels out within the time changes nothing.
        assert!(state.apply(vec![(k.clone(), -1), (k.clone(), 1)]).is_empty());
        // A far query: only itself changes.
        let far = state.apply(vec![((query("q:a"), Vector::normalized(vec![1.0, 0.0])), 1)]);
        assert_eq!(far.len(), 1);
    }
}
