//! Instantly answering, deterministic labelers: for capture tests, dry runs and the overhead benchmark.
//!
//! [`OverlapLabeler`] writes the first words of a passage as its query and scores pairs by word overlap,
//! so a test controls which passage is preferred by choosing the words. [`WithLatency`] adds a fixed delay
//! per batch to any labeler, to simulate a real model's latency.
use super::labeler::{
    GeneratedQuery, JudgeRequest, LabelFailure, Labeler, LabelerProvenance, LabelerStats, PairScores, QuerySeed,
};
use crate::records::ModelProvenance;
use crate::records::Passage;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The task every [`OverlapLabeler`] query is written for.
pub const OVERLAP_TASK: &str = "Given a query, find a passage that answers it";

/// A deterministic labeler that answers at once.
///
/// - Query: the first `query_words` words of the passage text (lower-cased, alphanumeric), task
///   [`OVERLAP_TASK`]; variant `v` of a passage's queries starts `v` words later (wrapping around). A
///   passage with no words, or whose text contains the failure marker, gets an
///   [`LabelFailure::Unparsable`] answer, as a real model's garbage would.
/// - QL: the number of occurrences in the passage of the query's distinct words (repetition raises it).
/// - RC: the share of the passage's distinct words that occur in the query (precision; a passage made
///   only of query words scores 1).
#[derive(Debug)]
pub struct OverlapLabeler {
    query_words: usize,
    fail_marker: Option<String>,
    calls: AtomicU64,
}

impl OverlapLabeler {
    /// A labeler writing queries of `query_words` words.
    pub fn new(query_words: usize) -> Self {
        Self { query_words: query_words.max(1), fail_marker: None, calls: AtomicU64::new(0) }
    }

    /// Answers garbage for passages whose text contains `marker` (to exercise dead letters).
    pub fn with_failure_marker(mut self, marker: impl Into<String>) -> Self {
        self.fail_marker = Some(marker.into());
        self
    }

    /// Number of requests answered so far (generation and judging together).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn generate_one(&self, passage: &Passage, variant: u32) -> Result<GeneratedQuery, LabelFailure> {
        if let Some(marker) = &self.fail_marker {
            if passage.text.contains(marker.as_str()) {
                return Err(LabelFailure::Unparsable {
                    reason: "no `Query:` line in the answer".into(),
                    answer: format!("{marker}?!"),
                });
            }
        }
        let words = words(&passage.text);
        if words.is_empty() {
            return Err(LabelFailure::Unparsable { reason: "empty answer".into(), answer: String::new() });
        }
        let skip = variant as usize % words.len();
        let query =
            words.iter().cycle().skip(skip).take(self.query_words.min(words.len())).cloned().collect::<Vec<_>>();
        let query = query.join(" ");
        Ok(GeneratedQuery { task: OVERLAP_TASK.to_string(), query })
    }
}

/// Lower-cased alphanumeric words of `text`.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// The [`OverlapLabeler`]'s scores of one pair.
pub fn overlap_scores(query: &str, passage: &Passage) -> PairScores {
    let query_words: BTreeSet<String> = words(query).into_iter().collect();
    let passage_words = words(&passage.embedding_text());
    let distinct: BTreeSet<&String> = passage_words.iter().collect();
    let ql = passage_words.iter().filter(|w| query_words.contains(*w)).count() as f64;
    let shared = distinct.iter().filter(|w| query_words.contains(**w)).count() as f64;
    let rc = if distinct.is_empty() { 0.0 } else { shared / distinct.len() as f64 };
    PairScores { ql: Some(ql), rc }
}

#[async_trait::async_trait]
impl Labeler for OverlapLabeler {
    async fn generate(&self, seeds: Vec<QuerySeed>) -> Vec<Result<GeneratedQuery, LabelFailure>> {
        self.calls.fetch_add(seeds.len() as u64, Ordering::Relaxed);
        seeds.iter().map(|s| self.generate_one(&s.passage, s.variant)).collect()
    }

    async fn judge(&self, pairs: Vec<JudgeRequest>) -> Vec<Result<PairScores, LabelFailure>> {
        self.calls.fetch_add(pairs.len() as u64, Ordering::Relaxed);
        pairs.iter().map(|r| Ok(overlap_scores(&r.query, &r.passage))).collect()
    }

    fn provenance(&self) -> LabelerProvenance {
        let model = ModelProvenance { model: "instant:overlap".into(), prompt_version: "overlap-v1".into() };
        LabelerProvenance { generator: model.clone(), judge: model }
    }

    fn stats(&self) -> LabelerStats {
        LabelerStats { model_calls: self.calls(), cache_hits: 0 }
    }
}

/// Wraps a labeler and waits `per_batch` before answering each batch, like a model would.
#[derive(Debug)]
pub struct WithLatency<L> {
    inner: Arc<L>,
    per_batch: Duration,
}

impl<L: Labeler> WithLatency<L> {
    /// `inner` answering each batch after `per_batch`.
    pub fn new(inner: Arc<L>, per_batch: Duration) -> Self {
        Self { inner, per_batch }
    }
}

#[async_trait::async_trait]
impl<L: Labeler> Labeler for WithLatency<L> {
    async fn generate(&self, seeds: Vec<QuerySeed>) -> Vec<Result<GeneratedQuery, LabelFailure>> {
        tokio::time::sleep(self.per_batch).await;
        self.inner.generate(seeds).await
    }

    async fn judge(&self, pairs: Vec<JudgeRequest>) -> Vec<Result<PairScores, LabelFailure>> {
        tokio::time::sleep(self.per_batch).await;
        self.inner.judge(pairs).await
    }

    fn provenance(&self) -> LabelerProvenance {
        self.inner.provenance()
    }

    fn stats(&self) -> LabelerStats {
        self.inner.stats()
    }
}

/// A bag-of-words hashing encoder: each word adds 1 to one of `dim` dimensions (FNV-1a hash). Instant
/// and deterministic, for dry runs and benchmarks of the pipeline (`embedder.model = "hashing:DIM"`).
#[derive(Debug, Clone, Copy)]
pub struct HashingEmbedder {
    dim: usize,
}

impl HashingEmbedder {
    /// An encoder of dimension `dim` (at least 1).
    pub fn new(dim: usize) -> Self {
        Self { dim: dim.max(1) }
    }
}

impl crate::embed::TextEmbedder for HashingEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<tch::Tensor, crate::embed::EmbedError> {
        let mut flat = vec![0f32; texts.len() * self.dim];
        for (row, text) in texts.iter().enumerate() {
            for word in words(text) {
                let h = word.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
                flat[row * self.dim + (h % self.dim as u64) as usize] += 1.0;
            }
        }
        Ok(tch::Tensor::from_slice(&flat).view([texts.len() as i64, self.dim as i64]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(id: &str, text: &str) -> Passage {
        Passage { id: id.into(), title: String::new(), text: text.into() }
    }

    #[test]
    fn a_passage_of_repeated_query_words_beats_its_seed_in_both_scores() {
        let seed = passage("p1", "alpha beta gamma delta epsilon zeta eta theta");
        let labeler = OverlapLabeler::new(6);
        let q = labeler.generate_one(&seed, 0).unwrap();
        assert_eq!(q.query, "alpha beta gamma delta epsilon zeta");
        let better = passage("p2", "alpha beta gamma delta epsilon zeta alpha beta");
        let (s, b) = (overlap_scores(&q.query, &seed), overlap_scores(&q.query, &better));
        assert!(b.ql > s.ql && b.rc > s.rc, "{s:?} {b:?}");
    }

    #[test]
    fn the_failure_marker_and_empty_text_give_unparsable_answers() {
        let labeler = OverlapLabeler::new(3).with_failure_marker("GARBLE");
        assert!(matches!(labeler.generate_one(&passage("a", "x GARBLE y"), 0), Err(LabelFailure::Unparsable { .. })));
        assert!(matches!(labeler.generate_one(&passage("b", " ,;"), 0), Err(LabelFailure::Unparsable { .. })));
    }
}
