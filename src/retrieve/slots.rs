//! The slot index: live passages' vectors in one contiguous matrix (a slot per passage, freed slots
//! reused), updated incrementally and scanned in cache-sized blocks for many queries at once: the index of
//! the dataflow's retrieval stage.
//!
//! A scan of the whole index used to chase one heap pointer per passage; with the rows side by side a
//! block of rows stays in cache while every query of the time is scored against it.
use super::rank_cmp;
use super::vector::{dot, Vector};
use crate::records::Passage;
use crate::records::Score;
use std::cmp::Ordering;
use std::collections::HashMap;

/// Rows scored per block (for 384-dim vectors, 384 KiB: about an L2 cache).
const BLOCK_ROWS: usize = 256;

/// The slot of a passage that is not live (its count is not positive).
const NO_SLOT: usize = usize::MAX;

/// What an update did to the set of live passages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The passage became live.
    Added,
    /// The passage stopped being live.
    Removed,
    /// Liveness did not change (a multiplicity change, or an update of a dead passage).
    Unchanged,
}

/// Live passages with their vectors and multiplicities.
#[derive(Default)]
pub struct Index {
    /// Vector length, fixed by the first vector (one embedder writes them all).
    dim: usize,
    /// `slots.len() * dim` components, row `s` at `s * dim`.
    rows: Vec<f32>,
    /// The passage in each slot, `None` for a free slot.
    slots: Vec<Option<Passage>>,
    /// Slot ([`NO_SLOT`] unless live) and multiplicity of each passage with a non-zero count.
    by_passage: HashMap<Passage, (usize, isize)>,
    /// Free slots, reused before the matrix grows.
    free: Vec<usize>,
}

impl Index {
    /// Number of live passages.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether no passage is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `r` to the multiplicity of `passage` (with `vector`) and reports whether it became live or
    /// stopped being live.
    pub fn update(&mut self, passage: Passage, vector: &Vector, r: isize) -> Transition {
        let (slot, count) = self.by_passage.get(&passage).copied().unwrap_or((NO_SLOT, 0));
        let after = count + r;
        let (slot, transition) = match (count > 0, after > 0) {
            (false, true) => {
                if self.dim == 0 {
                    self.dim = vector.0.len();
                }
                assert_eq!(vector.0.len(), self.dim, "passage vectors of different lengths. This is a bug.");
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.rows[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(&vector.0);
                        slot
                    }
                    None => {
                        self.rows.extend_from_slice(&vector.0);
                        self.slots.push(None);
                        self.slots.len() - 1
                    }
                };
                self.slots[slot] = Some(passage.clone());
                (slot, Transition::Added)
            }
            (true, false) => {
                self.slots[slot] = None;
                self.free.push(slot);
                (NO_SLOT, Transition::Removed)
            }
            _ => (slot, Transition::Unchanged),
        };
        if after == 0 {
            self.by_passage.remove(&passage);
        } else {
            self.by_passage.insert(passage, (slot, after));
        }
        transition
    }

    /// The top `n` passages of each query, best first ([`rank_order`]), in one blocked pass over the
    /// matrix.
    pub fn top_many(&self, queries: &[&Vector], n: usize) -> Vec<Vec<(Score, Passage)>> {
        assert!(n > 0, "top 0 asked for. This is a bug.");
        if queries.is_empty() {
            return Vec::new();
        }
        let mut kept: Vec<Vec<(Score, usize)>> = queries.iter().map(|_| Vec::with_capacity(2 * n)).collect();
        let mut worst: Vec<Option<(Score, usize)>> = vec![None; queries.len()];
        let order = |a: &(Score, usize), b: &(Score, usize)| {
            rank_cmp(a.0.get(), self.passage(a.1), b.0.get(), self.passage(b.1))
        };
        let dim = self.dim.max(1);
        for block_start in (0..self.slots.len()).step_by(BLOCK_ROWS) {
            let block_end = (block_start + BLOCK_ROWS).min(self.slots.len());
            for (q, query) in queries.iter().enumerate() {
                for slot in block_start..block_end {
                    if self.slots[slot].is_none() {
                        continue;
                    }
                    let hit = (Score::from(dot(&query.0, &self.rows[slot * dim..(slot + 1) * dim])), slot);
                    if worst[q].is_some_and(|w| order(&hit, &w) != Ordering::Less) {
                        continue;
                    }
                    kept[q].push(hit);
                    if kept[q].len() >= 2 * n.max(1) {
                        kept[q].select_nth_unstable_by(n - 1, order);
                        kept[q].truncate(n);
                        worst[q] = kept[q].iter().copied().max_by(order);
                    }
                }
            }
        }
        kept.into_iter()
            .map(|mut hits| {
                hits.sort_by(order);
                hits.truncate(n);
                hits.into_iter().map(|(score, slot)| (score, self.passage(slot).clone())).collect()
            })
            .collect()
    }

    fn passage(&self, slot: usize) -> &Passage {
        self.slots[slot].as_ref().expect("scanned slot is live. This is a bug.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(id: &str) -> Passage {
        Passage { id: id.into(), title: String::new(), text: format!("text of {id}") }
    }

    /// The reference: score every live passage, sort by rank order, keep n.
    fn brute_force(live: &[(Passage, Vector)], query: &Vector, n: usize) -> Vec<(Score, Passage)> {
        let mut all: Vec<(Score, Passage)> = live.iter().map(|(p, v)| (Score::from(query.dot(v)), p.clone())).collect();
        all.sort_by(|a, b| rank_cmp(a.0.get(), &a.1, b.0.get(), &b.1));
        all.truncate(n);
        all
    }

    #[test]
    fn blocked_scan_equals_brute_force_with_ties_deletions_and_reused_slots() {
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // Coarse values so that many scores tie and the passage order decides.
            ((state >> 61) as f32) - 3.0
        };
        let mut index = Index::default();
        let mut live: Vec<(Passage, Vector)> = Vec::new();
        for i in 0..700 {
            let v = Vector((0..12).map(|_| next()).collect());
            assert_eq!(index.update(passage(&format!("p{i:03}")), &v, 1), Transition::Added);
            live.push((passage(&format!("p{i:03}")), v));
        }
        for i in (0..700).step_by(3) {
            let (p, v) = live.iter().find(|(p, _)| p.id == format!("p{i:03}")).cloned().unwrap();
            assert_eq!(index.update(p.clone(), &v, -1), Transition::Removed);
            live.retain(|(q, _)| q != &p);
        }
        for i in 700..760 {
            let v = Vector((0..12).map(|_| next()).collect());
            index.update(passage(&format!("p{i:03}")), &v, 1);
            live.push((passage(&format!("p{i:03}")), v));
        }
        assert_eq!(index.len(), live.len());
        let queries: Vec<Vector> = (0..9).map(|_| Vector((0..12).map(|_| next()).collect())).collect();
        let refs: Vec<&Vector> = queries.iter().collect();
        for n in [1, 5, 20, 1000] {
            let got = index.top_many(&refs, n);
            for (q, query) in queries.iter().enumerate() {
                assert_eq!(got[q], brute_force(&live, query, n), "query {q}, n {n}");
            }
        }
    }

    #[test]
    fn multiplicities_count_and_only_the_zero_crossings_transition() {
        let mut index = Index::default();
        let v = Vector(vec![1.0, 0.0]);
        assert_eq!(index.update(passage("a"), &v, 1), Transition::Added);
        assert_eq!(index.update(passage("a"), &v, 1), Transition::Unchanged);
        assert_eq!(index.update(passage("a"), &v, -1), Transition::Unchanged);
        assert_eq!(index.update(passage("a"), &v, -1), Transition::Removed);
        assert_eq!(index.len(), 0);
        assert_eq!(index.update(passage("b"), &v, 1), Transition::Added);
        assert_eq!(index.top_many(&[&v], 3), vec![vec![(Score::from(1.0f32), passage("b"))]]);
    }
}
