//! Retrieval metrics with trec_eval's definitions (as pytrec_eval computes them).
//!
//! For one query, with its judgments (passage id to integer grade) and its ranked run:
//! - The run is put in **trec_eval's order** first: score descending, ties by document id *descending*
//!   (byte order; trec_eval compares with `strcmp`). The order the run arrives in does not matter.
//! - A document is **relevant** when its grade is at least 1; `R` is the number of relevant judged
//!   documents, retrieved or not.
//! - `nDCG@10` (`ndcg_cut_10`): `DCG = sum over ranks i = 1..10 of gain_i / log2(i + 1)` with linear gains
//!   (`gain = grade` when the grade is positive, else 0), divided by the same sum over the ideal ranking of
//!   all judged documents' positive grades, sorted descending.
//! - `Recall@k` (`recall_k`): relevant documents in the top k, divided by `R`.
//! - `MRR@10`: `1 / rank` of the first relevant document in the top 10, else 0 (trec_eval's
//!   `recip_rank` on the run cut to its top 10).
//! - `MAP@100` (`map_cut_100`): the sum, over relevant documents at ranks i <= 100, of precision at i,
//!   divided by `R`.
//!
//! A query without relevant judgments (`R = 0`) has no metrics: it is skipped and counted, where
//! trec_eval would score it 0 and include it in its means. A judged query missing from the run is scored
//! on an empty ranking (as `trec_eval -c`). A document listed twice for a query counts once, at its best
//! position.
use std::collections::{BTreeMap, HashMap, HashSet};

/// One ranked document of a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunDoc {
    /// Document (passage) id.
    pub id: String,
    /// Retrieval score; higher is better.
    pub score: f64,
}

/// A run: ranked documents per query id.
pub type Run = BTreeMap<String, Vec<RunDoc>>;

/// The metrics of one query, or their means over queries.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct QueryMetrics {
    /// nDCG@10, linear gains (trec_eval `ndcg_cut_10`).
    pub ndcg_at_10: f64,
    /// Recall@10 (trec_eval `recall_10`).
    pub recall_at_10: f64,
    /// Recall@100 (trec_eval `recall_100`).
    pub recall_at_100: f64,
    /// MRR@10: reciprocal rank of the first relevant document within the top 10.
    pub mrr_at_10: f64,
    /// MAP@100 (trec_eval `map_cut_100`).
    pub map_at_100: f64,
}

impl QueryMetrics {
    /// Names and values, in the order reports print them.
    pub fn named(&self) -> [(&'static str, f64); 5] {
        [
            ("nDCG@10", self.ndcg_at_10),
            ("Recall@10", self.recall_at_10),
            ("Recall@100", self.recall_at_100),
            ("MRR@10", self.mrr_at_10),
            ("MAP@100", self.map_at_100),
        ]
    }

    /// The arithmetic mean of each metric over `all`; zeros when `all` is empty.
    pub fn mean<'a>(all: impl IntoIterator<Item = &'a QueryMetrics>) -> QueryMetrics {
        let (mut sum, mut n) = (QueryMetrics::default(), 0usize);
        for m in all {
            sum.ndcg_at_10 += m.ndcg_at_10;
            sum.recall_at_10 += m.recall_at_10;
            sum.recall_at_100 += m.recall_at_100;
            sum.mrr_at_10 += m.mrr_at_10;
            sum.map_at_100 += m.map_at_100;
            n += 1;
        }
        if n == 0 {
            return sum;
        }
        let n = n as f64;
        QueryMetrics {
            ndcg_at_10: sum.ndcg_at_10 / n,
            recall_at_10: sum.recall_at_10 / n,
            recall_at_100: sum.recall_at_100 / n,
            mrr_at_10: sum.mrr_at_10 / n,
            map_at_100: sum.map_at_100 / n,
        }
    }
}

/// Metrics of a whole run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunMetrics {
    /// Metrics of each evaluated query.
    pub per_query: BTreeMap<String, QueryMetrics>,
    /// Means over the evaluated queries.
    pub mean: QueryMetrics,
    /// Queries of the run or the qrels with no relevant judgment, skipped.
    pub unjudged: Vec<String>,
}

/// Sorts `docs` into trec_eval's order: score descending, then id descending.
pub fn trec_order(docs: &mut [RunDoc]) {
    docs.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| b.id.cmp(&a.id)));
}

/// The metrics of one query, or `None` when it has no relevant judgment (grade >= 1).
pub fn query_metrics(judgments: &HashMap<String, i32>, run: &[RunDoc]) -> Option<QueryMetrics> {
    let relevant = judgments.values().filter(|&&g| g >= 1).count();
    if relevant == 0 {
        return None;
    }
    let mut ranked = run.to_vec();
    trec_order(&mut ranked);
    let mut seen = HashSet::new();
    ranked.retain(|d| seen.insert(d.id.clone()));
    let grade = |d: &RunDoc| judgments.get(&d.id).copied().unwrap_or(0);

    let mut ideal: Vec<i32> = judgments.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let dcg = |grades: &mut dyn Iterator<Item = i32>| -> f64 {
        grades.take(10).enumerate().map(|(i, g)| g.max(0) as f64 / ((i + 2) as f64).log2()).sum()
    };
    let ndcg = dcg(&mut ranked.iter().map(grade)) / dcg(&mut ideal.into_iter());

    let (mut hits_10, mut hits_100, mut first_hit, mut precision_sum) = (0usize, 0usize, None, 0.0);
    for (i, doc) in ranked.iter().take(100).enumerate() {
        if grade(doc) < 1 {
            continue;
        }
        hits_100 += 1;
        precision_sum += hits_100 as f64 / (i + 1) as f64;
        if i < 10 {
            hits_10 += 1;
            first_hit.get_or_insert(i + 1);
        }
    }
    let r = relevant as f64;
    Some(QueryMetrics {
        ndcg_at_10: ndcg,
        recall_at_10: hits_10 as f64 / r,
        recall_at_100: hits_100 as f64 / r,
        mrr_at_10: first_hit.map_or(0.0, |rank| 1.0 / rank as f64),
        map_at_100: precision_sum / r,
    })
}

/// Evaluates every query of `qrels` and of `run`: queries with a relevant judgment are scored (on an
/// empty ranking when the run lacks them), the others are listed in [`RunMetrics::unjudged`].
pub fn evaluate_run(qrels: &BTreeMap<String, HashMap<String, i32>>, run: &Run) -> RunMetrics {
    let no_judgments = HashMap::new();
    let mut out = RunMetrics::default();
    let mut query_ids: Vec<&String> = qrels.keys().chain(run.keys()).collect();
    query_ids.sort();
    query_ids.dedup();
    for query in query_ids {
        let judgments = qrels.get(query).unwrap_or(&no_judgments);
        let docs = run.get(query).map_or(&[][..], Vec::as_slice);
        match query_metrics(judgments, docs) {
            Some(m) => {
                out.per_query.insert(query.clone(), m);
            }
            None => out.unjudged.push(query.clone()),
        }
    }
    out.mean = QueryMetrics::mean(out.per_query.values());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    fn judged(pairs: &[(&str, i32)]) -> HashMap<String, i32> {
        pairs.iter().map(|&(d, g)| (d.to_string(), g)).collect()
    }

    fn run(pairs: &[(&str, f64)]) -> Vec<RunDoc> {
        pairs.iter().map(|&(id, score)| RunDoc { id: id.to_string(), score }).collect()
    }

    #[test]
    fn hand_computed_query() {
        // Order: a (0.9), then the 0.5 tie by id descending: c, b.
        let m = query_metrics(
            &judged(&[("a", 0), ("b", 3), ("c", 1), ("z", 2)]),
            &run(&[("b", 0.5), ("a", 0.9), ("c", 0.5)]),
        )
        .unwrap();
        let dcg = 1.0 / 3f64.log2() + 3.0 / 4f64.log2();
        let idcg = 3.0 + 2.0 / 3f64.log2() + 1.0 / 4f64.log2();
        assert!(close(m.ndcg_at_10, dcg / idcg, 1e-12), "{m:?}");
        assert!(close(m.recall_at_10, 2.0 / 3.0, 1e-12));
        assert!(close(m.mrr_at_10, 0.5, 1e-12));
        assert!(close(m.map_at_100, (1.0 / 2.0 + 2.0 / 3.0) / 3.0, 1e-12));
    }

    #[test]
    fn cutoffs_limit_each_metric() {
        let mut docs: Vec<(String, f64)> = (0..150).map(|i| (format!("n{i:03}"), 1000.0 - i as f64)).collect();
        docs[10].0 = "rel1".into(); // rank 11
        docs[120].0 = "rel2".into(); // rank 121
        let docs: Vec<RunDoc> = docs.into_iter().map(|(id, score)| RunDoc { id, score }).collect();
        let m = query_metrics(&judged(&[("rel1", 1), ("rel2", 1)]), &docs).unwrap();
        assert_eq!((m.ndcg_at_10, m.recall_at_10, m.mrr_at_10), (0.0, 0.0, 0.0));
        assert!(close(m.recall_at_100, 0.5, 1e-12) && close(m.map_at_100, (1.0 / 11.0) / 2.0, 1e-12));
    }

    #[test]
    fn queries_without_relevant_judgments_are_skipped_and_missing_runs_score_zero() {
        let qrels: BTreeMap<_, _> =
            [("q1".to_string(), judged(&[("a", 1)])), ("q2".to_string(), judged(&[("a", 0)]))].into();
        let mut r = Run::new();
        r.insert("q3".into(), run(&[("a", 1.0)]));
        let out = evaluate_run(&qrels, &r);
        assert_eq!(out.unjudged, vec!["q2".to_string(), "q3".to_string()]);
        assert_eq!(out.per_query["q1"], QueryMetrics::default());
        assert_eq!(out.mean, QueryMetrics::default());
    }

    #[test]
    fn duplicate_documents_count_once() {
        let m = query_metrics(&judged(&[("a", 1)]), &run(&[("a", 0.9), ("a", 0.8)])).unwrap();
        assert_eq!(m.recall_at_10, 1.0);
        assert_eq!(m.map_at_100, 1.0);
    }
}
