//! Choosing an example's positive and hard negatives from its fused ranking ([`select`]), with the
//! positive-aware false-negative filter ([`eligible_negative`]). The example itself is
//! [`crate::records::Example`].
use super::params::NegativeStrategy;
use crate::records::RankedCandidate;
use differential_dataflow::Hashable;

/// The positive-aware false-negative filter (NV-Retriever's TopK-PercPos): a candidate whose embedder
/// cosine is above `ratio` of the positive's is too close to the positive to be trusted as a negative (it
/// is likely an unlabelled positive), so it is never picked as one. `ratio` scales the positive's cosine
/// toward zero: the threshold is `cos+ - (1 - ratio) * |cos+|` (`ratio * cos+` for a positive cosine).
pub fn eligible_negative(candidate: &RankedCandidate, positive: &RankedCandidate, ratio: Option<f64>) -> bool {
    let Some(ratio) = ratio else { return true };
    let p = positive.cosine.get();
    candidate.cosine.get() <= p - (1.0 - ratio) * p.abs()
}

/// Positions in `ranking` (best first, at least one entry) of the positive and of up to `count` hard
/// negatives (in rank order), among the candidates that pass [`eligible_negative`] with `max_positive_ratio`
/// (`None`: all). The positive is always position 0; an example may get fewer negatives than `count`.
pub fn select(
    query_id: &str,
    ranking: &[RankedCandidate],
    strategy: NegativeStrategy,
    count: usize,
    max_positive_ratio: Option<f64>,
) -> Vec<usize> {
    let rest = (1..ranking.len()).filter(|&i| eligible_negative(&ranking[i], &ranking[0], max_positive_ratio));
    let mut negatives: Vec<usize> = match strategy {
        NegativeStrategy::Last => rest.rev().take(count).collect(),
        NegativeStrategy::Random => {
            let mut picks: Vec<usize> = rest.collect();
            picks.sort_by_key(|&i| ((query_id, ranking[i].id.as_str()).hashed(), i));
            picks.truncate(count);
            picks
        }
    };
    negatives.sort_unstable();
    std::iter::once(0).chain(negatives).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Score;

    fn ranking(n: usize) -> Vec<RankedCandidate> {
        (0..n)
            .map(|i| RankedCandidate {
                id: format!("p{i}"),
                cosine: Score(0.0),
                ql: Some(Score(0.0)),
                rc: Score(0.0),
                ql_rank: Some(i + 1),
                rc_rank: i + 1,
                rrf: Score(0.0),
            })
            .collect()
    }

    #[test]
    fn last_strategy_takes_the_bottom_of_the_ranking() {
        assert_eq!(select("q", &ranking(5), NegativeStrategy::Last, 1, None), vec![0, 4]);
        assert_eq!(select("q", &ranking(5), NegativeStrategy::Last, 2, None), vec![0, 3, 4]);
        assert_eq!(select("q", &ranking(1), NegativeStrategy::Last, 2, None), vec![0]);
    }

    #[test]
    fn random_strategy_never_picks_the_positive_and_is_reproducible() {
        let r = ranking(20);
        let a = select("q7", &r, NegativeStrategy::Random, 3, None);
        assert_eq!(a, select("q7", &r, NegativeStrategy::Random, 3, None));
        assert_eq!(a.len(), 4);
        assert_eq!(a[0], 0);
        assert!(a[1..].iter().all(|&i| (1..20).contains(&i)));
        assert_eq!(select("q7", &r, NegativeStrategy::Random, 40, None).len(), 20);
    }

    /// Cosines 0.80 (positive), 0.90, 0.77, 0.50, 0.76: with ratio 0.95 the threshold is 0.76, so the
    /// candidates at 0.90 and 0.77 are never negatives, whatever their fused rank.
    fn scored(cosines: &[f64]) -> Vec<RankedCandidate> {
        let mut r = ranking(cosines.len());
        for (c, &cos) in r.iter_mut().zip(cosines) {
            c.cosine = Score(cos);
        }
        r
    }

    #[test]
    fn candidates_too_close_to_the_positive_are_never_negatives() {
        let r = scored(&[0.80, 0.90, 0.77, 0.50, 0.76]);
        assert_eq!(select("q", &r, NegativeStrategy::Last, 3, Some(0.95)), vec![0, 3, 4]);
        assert_eq!(select("q", &r, NegativeStrategy::Last, 3, None), vec![0, 2, 3, 4]);
        let random = select("q", &r, NegativeStrategy::Random, 4, Some(0.95));
        assert_eq!(random, vec![0, 3, 4]);
        // Nothing eligible: the example keeps its positive alone.
        assert_eq!(select("q", &scored(&[0.5, 0.6, 0.49]), NegativeStrategy::Last, 1, Some(0.95)), vec![0]);
        // A negative positive cosine: the threshold still lies below it (-0.2 - 0.05 * 0.2 = -0.21).
        let negative = scored(&[-0.2, -0.205, -0.3]);
        assert_eq!(select("q", &negative, NegativeStrategy::Last, 2, Some(0.95)), vec![0, 2]);
    }
}
