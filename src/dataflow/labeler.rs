//! What the dataflow asks of an LLM, as one small trait: write a query for a passage, and judge
//! query–passage pairs with query likelihood (QL) and relevance classification (RC).
//!
//! Keeping this trait here decouples the dataflow from the LLM layer: [`crate::llm`] provides the real
//! implementation (prompts, parsing, cache) behind an adapter, and [`crate::dataflow::instant`] provides
//! instantly answering deterministic labelers for tests and benchmarks.
use crate::records::{ModelProvenance, Passage};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A task description and a query written by the LLM for a seed passage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratedQuery {
    /// Free-form task description, e.g. "Given a query, find a passage that answers it".
    pub task: String,
    /// The query suited to that task.
    pub query: String,
}

/// One query to write: the passage it is written for, and which of that passage's queries it is
/// (`[fret] queries_per_passage`): variant 0 is the first (greedy), variants 1, 2, ... further ones
/// (sampled, each with seeds of its own, so they differ and are cached apart).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuerySeed {
    /// The seed passage.
    pub passage: Passage,
    /// Which of the passage's queries, from 0.
    pub variant: u32,
}

impl QuerySeed {
    /// The first query of `passage`.
    pub fn first(passage: Passage) -> Self {
        Self { passage, variant: 0 }
    }
}

/// A query–passage pair to judge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeRequest {
    /// The task the query was written for.
    pub task: String,
    /// The query text.
    pub query: String,
    /// The candidate passage.
    pub passage: Passage,
}

/// The LLM's two relevance scores of one pair; higher is more relevant for both.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairScores {
    /// Query likelihood: log P(query | passage), natural log; `None` when the backend cannot score
    /// continuations (candidates are then ranked by RC alone).
    pub ql: Option<f64>,
    /// Relevance classification: expected relevance grade (or probability of "relevant").
    pub rc: f64,
}

/// Why the labeler has no answer for one input. Never fatal: it becomes a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum LabelFailure {
    /// The model answered, but the answer could not be used (empty, echoed the prompt, no query).
    #[error("unparsable LLM answer ({reason}): {answer:?}")]
    Unparsable {
        /// What is wrong with it.
        reason: String,
        /// The raw answer (possibly cut short).
        answer: String,
    },
    /// The call failed (transport, timeout, model error) after the backend's retries.
    #[error("LLM call failed: {0}")]
    Call(String),
    /// The input cannot be sent (e.g. too long for the model's context).
    #[error("invalid LLM request: {0}")]
    Invalid(String),
}

/// Provenance of a labeler's two capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LabelerProvenance {
    /// Who wrote the queries.
    pub generator: ModelProvenance,
    /// Who judged the pairs (QL and RC).
    pub judge: ModelProvenance,
}

/// Counters of a labeler, for progress and summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelerStats {
    /// Requests answered by the model itself (cache misses that reached it).
    pub model_calls: u64,
    /// Requests answered from the cache.
    pub cache_hits: u64,
}

/// What the FRet dataflow needs from an LLM.
///
/// Contract:
/// - Each method returns exactly one result per input, in input order; one bad input never fails
///   its neighbours.
/// - Answers are a function of the input (greedy decoding or a cache): the dataflow remembers the answer
///   for each live input, but after a passage is deleted and re-added it may ask again.
/// - Methods may take long (seconds) but must not block the async runtime: CPU-bound work belongs on
///   blocking threads.
#[async_trait::async_trait]
pub trait Labeler: Send + Sync + 'static {
    /// Writes a task and a query for each seed: the same answer for the same seed, and different
    /// variants of one passage are meant to differ (a labeler may still write the same query twice;
    /// the near-duplicate stage catches that).
    async fn generate(&self, seeds: Vec<QuerySeed>) -> Vec<Result<GeneratedQuery, LabelFailure>>;
    /// Scores each query–passage pair with QL and RC.
    async fn judge(&self, pairs: Vec<JudgeRequest>) -> Vec<Result<PairScores, LabelFailure>>;
    /// Models and prompt versions, recorded in every example.
    fn provenance(&self) -> LabelerProvenance;
    /// Calls and cache hits so far.
    fn stats(&self) -> LabelerStats {
        LabelerStats::default()
    }
}

/// The two roles on two labelers: queries written by `generator`, pairs judged by `judge` (a pipeline's
/// `[llm.generator]` and `[llm.judge]`). Provenance takes each role from its own labeler; stats add up,
/// counting a labeler that fills both roles once.
#[derive(Clone)]
pub struct SplitLabeler {
    generator: Arc<dyn Labeler>,
    judge: Arc<dyn Labeler>,
}

impl SplitLabeler {
    /// Generation by `generator`, judging by `judge`.
    pub fn new(generator: Arc<dyn Labeler>, judge: Arc<dyn Labeler>) -> Self {
        Self { generator, judge }
    }
}

impl std::fmt::Debug for SplitLabeler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let provenance = self.provenance();
        let (generator, judge) = (&provenance.generator, &provenance.judge);
        f.debug_struct("SplitLabeler").field("generator", generator).field("judge", judge).finish()
    }
}

#[async_trait::async_trait]
impl Labeler for SplitLabeler {
    async fn generate(&self, seeds: Vec<QuerySeed>) -> Vec<Result<GeneratedQuery, LabelFailure>> {
        self.generator.generate(seeds).await
    }

    async fn judge(&self, pairs: Vec<JudgeRequest>) -> Vec<Result<PairScores, LabelFailure>> {
        self.judge.judge(pairs).await
    }

    fn provenance(&self) -> LabelerProvenance {
        LabelerProvenance { generator: self.generator.provenance().generator, judge: self.judge.provenance().judge }
    }

    fn stats(&self) -> LabelerStats {
        let generator = self.generator.stats();
        if Arc::ptr_eq(&self.generator, &self.judge) {
            return generator;
        }
        let judge = self.judge.stats();
        LabelerStats {
            model_calls: generator.model_calls + judge.model_calls,
            cache_hits: generator.cache_hits + judge.cache_hits,
        }
    }
}
