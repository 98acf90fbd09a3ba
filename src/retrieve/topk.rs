//! The running top-k of each query: candidates from every corpus block are merged into it.
use std::cmp::Ordering;

/// A hit: a score and the key of what was scored (a corpus row or a passage id).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scored<K> {
    /// Similarity of the query and the item.
    pub score: f32,
    /// What was scored.
    pub key: K,
}

impl<K: Ord> Scored<K> {
    /// The retrieval order: higher score first, then smaller key first. `-0.0` and `0.0` are equal;
    /// otherwise scores compare with [`f32::total_cmp`], so the order is total even for NaN (which
    /// retrieval rejects on input anyway).
    pub fn rank_cmp(&self, other: &Self) -> Ordering {
        // f32 -> f64 is exact and keeps the order.
        super::rank_cmp(f64::from(self.score), &self.key, f64::from(other.score), &other.key)
    }
}

/// The best `k` hits of each of a fixed number of queries, kept sorted in [`Scored::rank_cmp`] order.
///
/// Feeding any partition of the candidates, in any order, gives the same lists as sorting all candidates
/// at once and keeping the first `k`, provided a key is offered at most once per query.
///
/// ```
/// use fretflow::retrieve::{Scored, TopK};
/// let mut top = TopK::new(1, 2);
/// top.offer(0, vec![Scored { score: 0.5, key: 7 }, Scored { score: 0.9, key: 3 }]);
/// top.offer(0, vec![Scored { score: 0.5, key: 1 }]);
/// let keys: Vec<_> = top.into_lists()[0].iter().map(|h| h.key).collect();
/// assert_eq!(keys, vec![3, 1]); // 0.5 tie: key 1 before key 7
/// ```
#[derive(Debug, Clone)]
pub struct TopK<K> {
    k: usize,
    lists: Vec<Vec<Scored<K>>>,
}

impl<K: Ord> TopK<K> {
    /// An empty accumulator for `queries` queries keeping `k` hits each.
    pub fn new(queries: usize, k: usize) -> Self {
        Self { k, lists: (0..queries).map(|_| Vec::with_capacity(k)).collect() }
    }

    /// Hits kept per query.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The worst hit `query` keeps once it holds `k` hits: a candidate ranked after it cannot enter.
    /// `None` while fewer than `k` hits are held.
    ///
    /// # Panics
    /// If `query` is out of range (a bug of the caller).
    pub fn threshold(&self, query: usize) -> Option<&Scored<K>> {
        let list = &self.lists[query];
        if list.len() == self.k {
            list.last()
        } else {
            None
        }
    }

    /// Merges `candidates` (any order) into the hits of `query`, keeping the best `k`.
    ///
    /// # Panics
    /// If `query` is out of range (a bug of the caller).
    pub fn offer(&mut self, query: usize, mut candidates: Vec<Scored<K>>) {
        if self.k == 0 || candidates.is_empty() {
            return;
        }
        if let Some(worst) = self.threshold(query) {
            candidates.retain(|c| c.rank_cmp(worst) == Ordering::Less);
        }
        if candidates.len() > self.k {
            candidates.select_nth_unstable_by(self.k - 1, Scored::rank_cmp);
            candidates.truncate(self.k);
        }
        candidates.sort_unstable_by(Scored::rank_cmp);
        let kept = std::mem::take(&mut self.lists[query]);
        self.lists[query] = merge_sorted(kept, candidates, self.k);
    }

    /// The hits of every query, best first.
    pub fn into_lists(self) -> Vec<Vec<Scored<K>>> {
        self.lists
    }
}

/// Merges two lists sorted in [`Scored::rank_cmp`] order, keeping the first `k`.
fn merge_sorted<K: Ord>(a: Vec<Scored<K>>, b: Vec<Scored<K>>, k: usize) -> Vec<Scored<K>> {
    let mut out = Vec::with_capacity(k.min(a.len() + b.len()));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while out.len() < k {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.rank_cmp(y) != Ordering::Greater,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_a { a.next() } else { b.next() };
        out.push(next.expect("peeked element exists. This is a bug."));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn hits(pairs: &[(f32, u32)]) -> Vec<Scored<u32>> {
        pairs.iter().map(|&(score, key)| Scored { score, key }).collect()
    }

    #[test]
    fn any_partition_of_candidates_gives_the_sorted_prefix() {
        let mut rng = StdRng::seed_from_u64(7);
        for round in 0..200 {
            let n = rng.random_range(0..60u32);
            // Few distinct scores, so ties are common.
            let all: Vec<_> = (0..n).map(|key| Scored { score: rng.random_range(0..5) as f32 / 4.0, key }).collect();
            let k = rng.random_range(0..12usize);
            let mut expected = all.clone();
            expected.sort_by(Scored::rank_cmp);
            expected.truncate(k);

            let mut shuffled = all.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.random_range(0..=i));
            }
            let mut top = TopK::new(1, k);
            let mut rest = shuffled.as_slice();
            while !rest.is_empty() {
                let take = rng.random_range(1..=rest.len());
                top.offer(0, rest[..take].to_vec());
                rest = &rest[take..];
            }
            assert_eq!(top.into_lists()[0], expected, "round {round}, k {k}");
        }
    }

    #[test]
    fn ties_prefer_the_smaller_key_and_threshold_is_the_kth_hit() {
        let mut top = TopK::new(2, 3);
        top.offer(1, hits(&[(1.0, 9), (2.0, 5), (1.0, 4)]));
        assert!(top.threshold(0).is_none());
        assert_eq!(top.threshold(1), Some(&Scored { score: 1.0, key: 9 }));
        top.offer(1, hits(&[(1.0, 2), (0.5, 1)]));
        assert_eq!(top.into_lists()[1], hits(&[(2.0, 5), (1.0, 2), (1.0, 4)]));
    }

    #[test]
    fn negative_zero_ties_with_zero() {
        let mut top = TopK::new(1, 2);
        top.offer(0, hits(&[(0.0, 5), (-0.0, 2), (0.0, 3)]));
        assert_eq!(top.into_lists()[0].iter().map(|h| h.key).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn k_zero_keeps_nothing() {
        let mut top = TopK::new(1, 0);
        top.offer(0, hits(&[(1.0, 1)]));
        assert!(top.into_lists()[0].is_empty());
    }
}
