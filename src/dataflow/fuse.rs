//! The fusion stage: per query, rank the judged candidates by QL and by RC, fuse the two rankings with
//! reciprocal rank fusion, and build the FRet [`Example`] (a differential `reduce` keyed by query id, so
//! when a candidate or a score changes, the query's example is retracted and rebuilt).
use super::example::select;
use super::judge::Judged;
use super::params::{FusionWeights, NegativeStrategy};
use super::progress::SharedMetrics;
use super::{Diff, Time};
use crate::records::Score;
use crate::records::{Example, Provenance, RankedCandidate};
use differential_dataflow::VecCollection;
use std::cmp::Ordering;
use std::time::Instant;

/// Fusion settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FuseParams {
    /// The RRF constant `k` (60 in the standard formulation).
    pub rrf_k: f64,
    /// Weights of the QL and RC rankings in the fusion (the paper's RRF: 1 and 1). A weight of 0 ranks by
    /// the other signal alone, e.g. when a small judge model's RC does not tell passages apart.
    pub weights: FusionWeights,
    /// How hard negatives are chosen.
    pub negatives: NegativeStrategy,
    /// How many hard negatives per example.
    pub negatives_count: usize,
    /// False-negative filter: a candidate whose cosine is above this fraction of the positive's is never a
    /// negative ([`super::example::eligible_negative`]); `None`: off.
    pub max_positive_ratio: Option<f64>,
    /// Models and prompt versions, recorded in each example.
    pub provenance: Provenance,
}

/// 1-based ranks of `judged` by `score` (higher first; ties by passage id).
fn ranks(judged: &[&Judged], score: impl Fn(&Judged) -> Score) -> Vec<usize> {
    let mut order: Vec<usize> = (0..judged.len()).collect();
    order.sort_by(|&a, &b| {
        score(judged[b])
            .cmp(&score(judged[a]))
            .then_with(|| judged[a].candidate.passage.cmp(&judged[b].candidate.passage))
    });
    let mut rank = vec![0; judged.len()];
    for (position, &i) in order.iter().enumerate() {
        rank[i] = position + 1;
    }
    rank
}

/// Builds the example of one query from its judged candidates (all of the same query, at least one).
pub fn fuse(judged: &[&Judged], params: &FuseParams) -> Example {
    let rc_rank = ranks(judged, |j| j.rc);
    // Without QL for every candidate, the RC ranking stands in for both.
    let ql_rank = judged.iter().all(|j| j.ql.is_some()).then(|| ranks(judged, |j| j.ql.unwrap_or_default()));
    let mut fused: Vec<(RankedCandidate, usize)> = judged
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let ql_rank_i = ql_rank.as_ref().map(|r| r[i]);
            let w = params.weights;
            let rrf = w.ql / (params.rrf_k + ql_rank_i.unwrap_or(rc_rank[i]) as f64)
                + w.rc / (params.rrf_k + rc_rank[i] as f64);
            let entry = RankedCandidate {
                id: j.candidate.passage.id.clone(),
                cosine: j.candidate.cosine,
                ql: j.ql,
                rc: j.rc,
                ql_rank: ql_rank_i,
                rc_rank: rc_rank[i],
                rrf: Score(rrf),
            };
            (entry, i)
        })
        .collect();
    // Best first: RRF, then RC, then QL, then cosine, then passage.
    fused.sort_by(|(a, i), (b, k)| {
        b.rrf
            .cmp(&a.rrf)
            .then_with(|| b.rc.cmp(&a.rc))
            .then_with(|| b.ql.cmp(&a.ql))
            .then_with(|| b.cosine.cmp(&a.cosine))
            .then_with(|| judged[*i].candidate.passage.cmp(&judged[*k].candidate.passage))
            .then(Ordering::Equal)
    });
    let query = &judged[0].candidate.query;
    let ranking: Vec<RankedCandidate> = fused.iter().map(|(r, _)| r.clone()).collect();
    let picks = select(&query.id, &ranking, params.negatives, params.negatives_count, params.max_positive_ratio);
    let passage_at = |position: usize| judged[fused[position].1].candidate.passage.clone();
    Example {
        query_id: query.id.clone(),
        task: query.task.clone(),
        query: query.text.clone(),
        seed_id: query.seed_id.clone(),
        positive: passage_at(picks[0]),
        negatives: picks[1..].iter().map(|&p| passage_at(p)).collect(),
        ranking,
        provenance: params.provenance.clone(),
    }
}

/// Fuses each query's judged candidates into its example.
pub trait FuseRankings<'scope> {
    /// `(query id, example)` for every query with at least one judged candidate.
    fn fuse_rankings(
        self,
        params: FuseParams,
        metrics: SharedMetrics,
    ) -> VecCollection<'scope, Time, (String, Example), Diff>;
}

impl<'scope> FuseRankings<'scope> for VecCollection<'scope, Time, Judged, Diff> {
    fn fuse_rankings(
        self,
        params: FuseParams,
        metrics: SharedMetrics,
    ) -> VecCollection<'scope, Time, (String, Example), Diff> {
        self.map(|j| (j.candidate.query.id.clone(), j)).reduce_named("FuseRankings", move |_qid, input, output| {
            let started = Instant::now();
            // A query id has one live query; if a changed query and its predecessor overlap in time,
            // fuse the latest text's candidates only.
            let latest =
                &input.iter().map(|(j, _)| &j.candidate.query).max().expect("reduce input is non-empty").clone();
            let judged: Vec<&Judged> =
                input.iter().filter(|(j, r)| *r > 0 && &j.candidate.query == latest).map(|(j, _)| *j).collect();
            if !judged.is_empty() {
                output.push((fuse(&judged, &params), 1 as Diff));
            }
            metrics.fuse.add_operator_time(started.elapsed());
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::generate::Query;
    use crate::dataflow::retrieve::Candidate;
    use crate::records::Passage;

    fn judged(passage: &str, ql: f64, rc: f64) -> Judged {
        let query = Query { id: "q:s".into(), seed_id: "s".into(), task: "t".into(), text: "q".into() };
        let passage = Passage { id: passage.into(), title: String::new(), text: "x".into() };
        Judged { candidate: Candidate { query, passage, cosine: Score(0.5) }, ql: Some(Score(ql)), rc: Score(rc) }
    }

    fn positive(weights: FusionWeights) -> String {
        // QL prefers "s", RC prefers "a"; "b" is second in both.
        let all = [judged("s", -1.0, 0.2), judged("a", -9.0, 0.9), judged("b", -5.0, 0.5)];
        let refs: Vec<&Judged> = all.iter().collect();
        let params = FuseParams {
            rrf_k: 60.0,
            weights,
            negatives: NegativeStrategy::Last,
            negatives_count: 1,
            max_positive_ratio: None,
            provenance: Provenance::default(),
        };
        fuse(&refs, &params).positive.id
    }

    #[test]
    fn weights_decide_between_disagreeing_rankings() {
        // Equal weights: "s" (1st and 3rd) and "a" (3rd and 1st) tie at 1/61 + 1/63, above "b" (2/62); the tie
        // goes to the better RC.
        assert_eq!(positive(FusionWeights::default()), "a");
        assert_eq!(positive(FusionWeights { ql: 2.0, rc: 1.0 }), "s");
        assert_eq!(positive(FusionWeights { ql: 1.0, rc: 0.0 }), "s");
        assert_eq!(positive(FusionWeights { ql: 0.0, rc: 1.0 }), "a");
    }
}
