//! The slot index: live passages' vectors in one contiguous matrix (a slot per passage, freed slots
//! reused), updated incrementally and scanned in cache-sized blocks for many queries at once: the index of
//! the dataflow's retrieval stage.
//!
//! A scan of the whole index used to chase one heap pointer per passage; with the rows side by side a
//! block of rows stays in cache while every query of the time is scored against it.
//!
//! The scan scores a block of rows against all queries at once with a matrix product (LibTorch's, on the
//! index's own memory; MKL's sgemm on x86-64, as fast as faiss's BLAS). The product rounds otherwise than
//! [`dot`] (and differently with the thread count and blocking), so it only preselects: a passage whose
//! product score is within the rounding bound of the query's current N-th is scored again with [`dot`],
//! and only exact scores are kept and compared. The result is exactly the [`dot`] top N, whatever the
//! block or batch.
use super::rank_cmp;
use super::vector::{dot, for_each_at_least, Vector};
use crate::records::Passage;
use crate::records::Score;
use std::cmp::Ordering;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// Rows scored per block (for 384-dim vectors, 1.5 MiB: about an L2 cache).
const BLOCK_ROWS: usize = 1024;

/// Queries per matrix product (bounds the score buffer: 1024 x 1024 f32, 4 MiB).
const BLOCK_QUERIES: usize = 1024;

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
    /// The largest Euclidean norm of any row ever stored (bounds the product's rounding error).
    max_norm: f32,
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
                self.max_norm = self.max_norm.max(norm(&vector.0));
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
        // The products of one batch and block; sized to what this call needs (it runs for every time's
        // new queries and refills, often a handful).
        let mut products = vec![0f32; queries.len().min(BLOCK_QUERIES) * self.slots.len().min(BLOCK_ROWS)];
        for (chunk, batch) in queries.chunks(BLOCK_QUERIES).enumerate() {
            // The batch's queries side by side (a query shorter than the rows counts as zero-padded, as
            // `dot` over the shorter length does), and each one's rounding bound against any row.
            let mut matrix = vec![0f32; batch.len() * dim];
            let mut margins = Vec::with_capacity(batch.len());
            for (row, query) in matrix.chunks_exact_mut(dim).zip(batch) {
                let len = query.0.len().min(dim);
                row[..len].copy_from_slice(&query.0[..len]);
                margins.push(rounding_bound(dim, norm(row), self.max_norm));
            }
            for block_start in (0..self.slots.len()).step_by(BLOCK_ROWS) {
                let block_end = (block_start + BLOCK_ROWS).min(self.slots.len());
                let width = block_end - block_start;
                let out = &mut products[..batch.len() * width];
                product(&matrix, &self.rows[block_start * dim..block_end * dim], dim, out);
                for (b, query) in batch.iter().enumerate() {
                    let q = chunk * BLOCK_QUERIES + b;
                    let scores = &out[b * width..(b + 1) * width];
                    // Rows whose product score is below this cannot beat the current N-th; before there is
                    // one (the query's first block), none below the block's own N-th product score by more
                    // than twice the margin can (its exact score is below each of those N rows' exact
                    // scores), so only about N rows, not the whole block, are scored exactly.
                    let cut = match worst[q] {
                        Some(w) => w.0.get() as f32 - margins[b],
                        None => nth_live_product(scores, &self.slots[block_start..block_end], n)
                            .map_or(f32::NEG_INFINITY, |nth| nth - 2.0 * margins[b]),
                    };
                    let mut consider = |j: usize| {
                        let slot = block_start + j;
                        if self.slots[slot].is_none() {
                            return;
                        }
                        let hit = (Score::from(dot(&query.0, &self.rows[slot * dim..(slot + 1) * dim])), slot);
                        if worst[q].is_some_and(|w| order(&hit, &w) != Ordering::Less) {
                            return;
                        }
                        kept[q].push(hit);
                        if kept[q].len() >= 2 * n.max(1) {
                            kept[q].select_nth_unstable_by(n - 1, order);
                            kept[q].truncate(n);
                            worst[q] = kept[q].iter().copied().max_by(order);
                        }
                    };
                    // The cut is fixed for the block: rows that pass it are scored exactly, and the N-th
                    // they raise takes effect from the next block on.
                    for_each_at_least(scores, cut, &mut consider);
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

/// The `n`-th largest of `scores` over the live `slots` (`None`: fewer than `n` are live).
fn nth_live_product(scores: &[f32], slots: &[Option<Passage>], n: usize) -> Option<f32> {
    let mut live: Vec<f32> = scores.iter().zip(slots).filter(|(_, s)| s.is_some()).map(|(v, _)| *v).collect();
    if live.len() < n {
        return None;
    }
    let (_, nth, _) = live.select_nth_unstable_by(n - 1, |a, b| b.total_cmp(a));
    // A NaN product (a NaN in a vector) gives no cut: every row is scored exactly, as before.
    Some(*nth).filter(|v| !v.is_nan())
}

/// Euclidean norm, rounded up a little so that it bounds the true norm.
fn norm(v: &[f32]) -> f32 {
    (v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt() * (1.0 + 1e-6)) as f32
}

/// A bound on |product score - `dot` score| for `dim`-long vectors of norms at most `a` and `b`: each of
/// the two sums of `dim` products is within `dim * 2^-24 * sum |x_k y_k| <= dim * 2^-24 * a * b` of the
/// exact value (the classic bound for recursive summation, fused or not), so they differ by at most twice
/// that; doubled again for safety, plus the smallest normal f32 for zero vectors.
fn rounding_bound(dim: usize, a: f32, b: f32) -> f32 {
    4.0 * dim as f32 * f32::EPSILON / 2.0 * a * b + f32::MIN_POSITIVE
}

/// `out[q * w + j] = <queries row q, rows row j>` for `dim`-wide row-major `queries` and `rows` (`w` rows):
/// one LibTorch matrix product (MKL's sgemm on x86-64) over the slices themselves, no copies.
fn product(queries: &[f32], rows: &[f32], dim: usize, out: &mut [f32]) {
    let (m, w) = (queries.len() / dim, rows.len() / dim);
    assert!(queries.len() == m * dim && rows.len() == w * dim && out.len() == m * w, "product shapes. This is a bug.");
    if m == 0 || w == 0 {
        return;
    }
    let (m, w, d) = (m as i64, w as i64, dim as i64);
    // SAFETY: each tensor views a live slice of exactly its shape (checked above), contiguous row-major
    // f32; the tensors are dropped before this function returns, and only `out` is written.
    unsafe {
        let q = Tensor::from_blob(queries.as_ptr().cast(), &[m, d], &[], Kind::Float, Device::Cpu);
        let r = Tensor::from_blob(rows.as_ptr().cast(), &[w, d], &[], Kind::Float, Device::Cpu);
        let o = Tensor::from_blob(out.as_mut_ptr().cast(), &[m, w], &[], Kind::Float, Device::Cpu);
        let _written = q.f_mm_out(&o, &r.tr()).expect("matrix product of checked shapes. This is a bug.");
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

    /// The matrix product only preselects: with float vectors of mixed norms, near-ties a few ulps apart
    /// (where the product's rounding and `dot`'s disagree on the order), more queries than one product
    /// takes and more rows than one block, the result is exactly `dot`'s top N.
    #[test]
    fn the_product_preselection_keeps_exactly_the_dot_top_n() {
        let mut state = 11u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let dim = 384;
        let mut index = Index::default();
        let mut live: Vec<(Passage, Vector)> = Vec::new();
        let base: Vec<f32> = (0..dim).map(|_| next()).collect();
        for i in 0..600 {
            let v = if i % 3 == 0 {
                // Near-copies of one vector, a few ulps apart in a few components, scaled by up to 4.
                let scale = 1.0 + (i % 4) as f32;
                Vector(
                    base.iter()
                        .enumerate()
                        .map(|(k, x)| if k == i % dim { x * scale * (1.0 + 1e-7) } else { x * scale })
                        .collect(),
                )
            } else {
                Vector((0..dim).map(|_| next() * 3.0).collect())
            };
            index.update(passage(&format!("p{i:03}")), &v, 1);
            live.push((passage(&format!("p{i:03}")), v));
        }
        let queries: Vec<Vector> = (0..300)
            .map(|q| if q % 2 == 0 { Vector(base.clone()) } else { Vector((0..dim).map(|_| next()).collect()) })
            .collect();
        let refs: Vec<&Vector> = queries.iter().collect();
        for n in [1, 7, 40] {
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
