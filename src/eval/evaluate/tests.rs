//! `evaluate` on a tiny dataset with a keyword embedder whose rankings are known by hand.
use super::*;
use crate::eval::beir::{BeirQuery, Qrels};
use crate::records::Passage;
use tch::Tensor;

/// Counts of four keywords: cosine similarity of these vectors is easy to work out by hand.
struct KeywordEmbedder;

const WORDS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

impl TextEmbedder for KeywordEmbedder {
    fn dim(&self) -> usize {
        WORDS.len()
    }
    fn embed(&self, texts: &[&str]) -> Result<Tensor, EmbedError> {
        let flat: Vec<f32> =
            texts.iter().flat_map(|t| WORDS.map(|w| t.split_whitespace().filter(|x| *x == w).count() as f32)).collect();
        Ok(Tensor::from_slice(&flat).reshape([texts.len() as i64, WORDS.len() as i64]))
    }
}

/// Fails on every call.
struct BrokenEmbedder;

impl TextEmbedder for BrokenEmbedder {
    fn dim(&self) -> usize {
        4
    }
    fn embed(&self, _: &[&str]) -> Result<Tensor, EmbedError> {
        Err(EmbedError::Tokenize("boom".to_string()))
    }
}

fn passage(id: &str, title: &str, text: &str) -> Passage {
    Passage { id: id.into(), title: title.into(), text: text.into() }
}

fn dataset() -> BeirDataset {
    let corpus = vec![
        passage("d1", "alpha", "zeta"),   // alpha only in the title
        passage("d2", "", "delta gamma"), // cos 0.707 with "delta"
        passage("d3", "", "beta beta"),   // cos 1 with "beta"
        passage("d4", "", "beta gamma"),  // cos 0.707 with "beta"
        passage("d5", "", "delta"),       // cos 1 with "delta"
    ];
    let query = |id: &str, text: &str| BeirQuery { id: id.into(), text: text.into() };
    let queries = vec![
        query("q1", "alpha"),
        query("q2", "beta"),
        query("q3", "delta"),
        query("q4", "alpha"),
        query("q5", "beta"),
    ];
    let mut qrels = Qrels::new();
    let mut judge = |q: &str, d: &str, g: i32| qrels.entry(q.to_string()).or_default().insert(d.to_string(), g);
    judge("q1", "d1", 1);
    judge("q2", "d3", 2);
    judge("q2", "d4", 1);
    judge("q3", "d2", 1);
    judge("q5", "d3", 0); // judged, but nothing relevant: skipped like q4
    BeirDataset {
        name: "tiny".into(),
        root: "tiny".into(),
        split: "test".into(),
        corpus,
        queries,
        qrels,
        unknown_query_judgments: 0,
        unknown_passage_judgments: 0,
    }
}

#[test]
fn metrics_of_a_hand_worked_dataset_and_unjudged_queries_are_counted() {
    let opts = EvalOptions { model: "keywords".into(), encode_chunk: 2, ..Default::default() };
    let report = evaluate(&KeywordEmbedder, &dataset(), &opts).unwrap();
    assert_eq!(report.counts.passages, 5);
    assert_eq!(report.counts.queries, 5);
    assert_eq!(report.counts.queries_evaluated, 3);
    assert_eq!(report.counts.queries_unjudged, 2);
    assert_eq!((report.counts.judgments, report.counts.relevant_judgments), (5, 4));
    let per_query = report.per_query.as_ref().unwrap();
    assert_eq!(per_query.keys().collect::<Vec<_>>(), ["q1", "q2", "q3"]);
    // q1 finds d1 through its title; q2 ranks d3 then d4 (ideal order).
    assert_eq!(per_query["q1"].ndcg_at_10, 1.0);
    assert!((per_query["q2"].ndcg_at_10 - 1.0).abs() < 1e-12);
    // q3: d5 (cos 1) first, the relevant d2 (cos 0.707) second.
    let q3 = per_query["q3"];
    assert!((q3.ndcg_at_10 - 1.0 / 3f64.log2()).abs() < 1e-12, "{q3:?}");
    assert_eq!((q3.mrr_at_10, q3.map_at_100, q3.recall_at_10), (0.5, 0.5, 1.0));
    assert!((report.metrics.mrr_at_10 - 2.5 / 3.0).abs() < 1e-12);
    assert_eq!(report.settings.k, TOP_K);
    assert_eq!(report.model, "keywords");
}

#[test]
fn the_query_prefix_is_encoded_with_every_query() {
    // "gamma delta" matches d2 ("delta gamma") exactly: q3's relevant passage moves to the top.
    let opts = EvalOptions { query_prefix: "gamma ".into(), ..Default::default() };
    let report = evaluate(&KeywordEmbedder, &dataset(), &opts).unwrap();
    assert_eq!(report.per_query.as_ref().unwrap()["q3"].ndcg_at_10, 1.0);
}

#[test]
fn per_query_metrics_can_be_left_out() {
    let opts = EvalOptions { per_query: false, ..Default::default() };
    assert!(evaluate(&KeywordEmbedder, &dataset(), &opts).unwrap().per_query.is_none());
}

#[test]
fn embedder_failures_and_empty_judgments_are_typed_errors() {
    let err = evaluate(&BrokenEmbedder, &dataset(), &EvalOptions::default()).unwrap_err();
    assert!(matches!(err, EvalError::Embed { what: "passages", .. }), "{err}");
    let mut data = dataset();
    data.qrels.retain(|q, _| q == "q5");
    let err = evaluate(&KeywordEmbedder, &data, &EvalOptions::default()).unwrap_err();
    assert!(err.to_string().contains("nothing to evaluate"), "{err}");
}
