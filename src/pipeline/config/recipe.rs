//! The `[fret]` and `[batching]` tables of the pipeline config: the recipe's parameters (N, RRF, fusion
//! weights, hard negatives, generation attempts, near-duplicate queries) and how model calls are batched.
use crate::dataflow::async_op::BatchPolicy;
use crate::dataflow::params::DuplicateAction;
use crate::dataflow::params::NegativeStrategy;
pub use crate::dataflow::params::DEFAULT_DUPLICATE_THRESHOLD;
pub use crate::dataflow::params::DEFAULT_MAX_POSITIVE_RATIO;
use serde::Deserialize;
use std::time::Duration;

/// The FRet recipe's parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FretConfig {
    /// Queries written per passage (default 1, as in the paper): the first greedy, each further one
    /// sampled with seeds of its own (at `further_query_temperature`, top-p 0.95), so one passage yields
    /// several examples (Promptagator writes 8). Query ids are `q:<passage id>` for the first and
    /// `q_<v>:<passage id>` for the others (a first query is kept over a later near-duplicate of it);
    /// raising it later reuses the cached answers to the first ones, and sampled queries that come out
    /// (nearly) the same are caught by `duplicate_queries`. At most 1000. On Kafka, keep it across
    /// restarts: a passage deleted while the pipeline was down gets tombstones for the query keys of the
    /// current setting only.
    #[serde(default = "default_queries_per_passage")]
    pub queries_per_passage: usize,
    /// Neighbours retrieved and judged per query (N).
    #[serde(default = "default_neighbours")]
    pub neighbours: usize,
    /// Reciprocal rank fusion constant k.
    #[serde(default = "default_rrf_k")]
    pub rrf_k: f64,
    /// How hard negatives are chosen.
    #[serde(default)]
    pub hard_negatives: HardNegativesConfig,
    /// Weights of the QL and RC rankings in the fusion, `{ ql = 1.0, rc = 1.0 }` (the paper's RRF). Set
    /// `rc = 0` when the judge model is too small for relevance classification (see docs/RESULTS.md, the cranfield
    /// run: SmolLM2-135M's RC ranks the seed passage first for 13% of queries, its QL for 75%, which is 99% of
    /// the queries whose seed was retrieved). With `rc = 0` the judge asks for QL alone, which halves its
    /// model calls; examples then carry `rc = 0`.
    #[serde(default)]
    pub weights: WeightsConfig,
    /// Tries per passage at a usable query: greedy first, then sampled retries when the answer was empty,
    /// unparsable or echoed (default 3; 1 = greedy only).
    #[serde(default = "default_generation_attempts")]
    pub generation_attempts: usize,
    /// Temperature of a passage's further queries (`queries_per_passage` > 1; default 0.5, top-p 0.95).
    /// Retries of echoed answers stay at 0.8, so a passage's first query does not depend on it. A small
    /// generator wanders off the passage when it samples hot: SmolLM2-135M's second cranfield queries pass
    /// the round-trip filter for 26% of passages at 0.8 and 51% at 0.5 (docs/RESULTS.md).
    #[serde(default = "default_temperature")]
    pub further_query_temperature: f64,
    /// Near-duplicate queries, `{ threshold = 0.97, action = "dead_letter" }` (the default). Among the live
    /// queries, taken in id order, a query whose vector (`task + query`, the retrieval vector) has cosine
    /// `>= threshold` with an already kept query is a duplicate: `dead_letter` drops it before retrieval
    /// (no judging, no example) with a `duplicate_query` dead letter naming the kept query and the cosine;
    /// `keep` keeps it and only counts it (`duplicate_queries` in the summary). The smallest id wins, whatever
    /// the arrival order, and a duplicate comes back when the query it yielded to is retracted. `threshold =
    /// 1.0` turns the check off (the stage is left out). With all-MiniLM-L6-v2, no two of cranfield's 225
    /// human queries (under one task) reach 0.97; "theoretical/experimental studies of creep buckling" are
    /// at 0.958.
    #[serde(default)]
    pub duplicate_queries: DuplicateQueriesConfig,
}

/// Near-duplicate queries (see [`FretConfig::duplicate_queries`]).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuplicateQueriesConfig {
    /// Cosine from which a query is a duplicate of a kept one, in (0, 1]; `1.0` turns the check off.
    #[serde(default = "default_duplicate_threshold")]
    pub threshold: f64,
    /// `dead_letter` (default): duplicates leave the pipeline as dead letters; `keep`: they stay and are
    /// counted.
    #[serde(default)]
    pub action: DuplicateAction,
}

fn default_duplicate_threshold() -> f64 {
    DEFAULT_DUPLICATE_THRESHOLD
}

impl Default for DuplicateQueriesConfig {
    fn default() -> Self {
        Self { threshold: DEFAULT_DUPLICATE_THRESHOLD, action: DuplicateAction::default() }
    }
}

fn default_temperature() -> f64 {
    f64::from(crate::llm::fret::DEFAULT_FURTHER_QUERY_TEMPERATURE)
}

fn default_queries_per_passage() -> usize {
    1
}

fn default_generation_attempts() -> usize {
    crate::llm::fret::DEFAULT_GENERATION_ATTEMPTS
}

impl Default for FretConfig {
    fn default() -> Self {
        Self {
            queries_per_passage: default_queries_per_passage(),
            neighbours: default_neighbours(),
            rrf_k: default_rrf_k(),
            hard_negatives: HardNegativesConfig::default(),
            weights: WeightsConfig::default(),
            generation_attempts: default_generation_attempts(),
            further_query_temperature: default_temperature(),
            duplicate_queries: DuplicateQueriesConfig::default(),
        }
    }
}

/// Fusion weights (see [`FretConfig::weights`]).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsConfig {
    /// Weight of the query-likelihood ranking.
    #[serde(default = "unit")]
    pub ql: f64,
    /// Weight of the relevance-classification ranking.
    #[serde(default = "unit")]
    pub rc: f64,
}

impl Default for WeightsConfig {
    fn default() -> Self {
        Self { ql: 1.0, rc: 1.0 }
    }
}

fn unit() -> f64 {
    1.0
}

/// Hard negative selection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardNegativesConfig {
    /// `last` (the lowest-ranked neighbours, p_N first) or `random` (among ranks 2..N).
    #[serde(default = "default_strategy")]
    pub strategy: NegativeStrategy,
    /// Negatives per example.
    #[serde(default = "super::one")]
    pub count: usize,
    /// False-negative control (NV-Retriever's TopK-PercPos): a candidate whose retrieval cosine is above
    /// this fraction of the positive's is never used as a negative, being likely an unlabelled positive
    /// (an example then gets fewer negatives, possibly none). Default 0.95; `0` turns the filter off.
    #[serde(default = "default_max_positive_ratio")]
    pub max_positive_ratio: f64,
}

fn default_max_positive_ratio() -> f64 {
    DEFAULT_MAX_POSITIVE_RATIO
}

impl Default for HardNegativesConfig {
    fn default() -> Self {
        Self { strategy: default_strategy(), count: 1, max_positive_ratio: DEFAULT_MAX_POSITIVE_RATIO }
    }
}

/// Batching of model calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// LLM calls of both roles (query generation and judging), unless `generator` or `judge` overrides them.
    /// `max_batch` is also the requests per model call (a local model's batch per forward pass).
    #[serde(default = "default_llm_batch")]
    pub llm: BatchConfig,
    /// Encoder calls.
    #[serde(default = "default_embed_batch")]
    pub embed: BatchConfig,
    /// `[batching.generator]`: query-generation calls; each key given replaces `llm`'s, e.g.
    /// `generator = { max_batch = 4 }` for a generator with long answers.
    #[serde(default)]
    pub generator: BatchOverride,
    /// `[batching.judge]`: judging calls; each key given replaces `llm`'s, e.g.
    /// `judge = { max_batch = 32, max_in_flight = 4 }` for a judge behind a server.
    #[serde(default)]
    pub judge: BatchOverride,
}

impl BatchingConfig {
    /// Batching of query generation: `generator` over `llm`.
    pub fn generator(&self) -> BatchConfig {
        self.generator.over(&self.llm)
    }

    /// Batching of judging: `judge` over `llm`.
    pub fn judge(&self) -> BatchConfig {
        self.judge.over(&self.llm)
    }
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            llm: default_llm_batch(),
            embed: default_embed_batch(),
            generator: BatchOverride::default(),
            judge: BatchOverride::default(),
        }
    }
}

/// Some keys of a [`BatchConfig`], replacing those of another (absent keys keep its values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchOverride {
    /// Most records per batch.
    #[serde(default)]
    pub max_batch: Option<usize>,
    /// Longest a record waits for its batch to fill, in milliseconds.
    #[serde(default)]
    pub max_wait_ms: Option<u64>,
    /// Most batches in flight per worker.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
}

impl BatchOverride {
    /// `base` with the keys given here replaced.
    pub fn over(&self, base: &BatchConfig) -> BatchConfig {
        BatchConfig {
            max_batch: self.max_batch.unwrap_or(base.max_batch),
            max_wait_ms: self.max_wait_ms.unwrap_or(base.max_wait_ms),
            max_in_flight: self.max_in_flight.unwrap_or(base.max_in_flight),
        }
    }
}

/// When a batch is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most records per batch.
    pub max_batch: usize,
    /// Longest a record waits for its batch to fill, in milliseconds.
    pub max_wait_ms: u64,
    /// Most batches in flight per worker.
    #[serde(default = "super::one")]
    pub max_in_flight: usize,
}

impl BatchConfig {
    /// As the operator's policy.
    pub fn policy(&self) -> BatchPolicy {
        BatchPolicy {
            max_batch: self.max_batch,
            max_wait: Duration::from_millis(self.max_wait_ms),
            max_in_flight: self.max_in_flight,
        }
    }
}

// One set of defaults: the dataflow's own (`FretParams::default`), which the config's keys override.
fn default_neighbours() -> usize {
    crate::dataflow::params::FretParams::default().neighbours
}

fn default_rrf_k() -> f64 {
    crate::dataflow::params::FretParams::default().rrf_k
}

fn default_strategy() -> NegativeStrategy {
    NegativeStrategy::Last
}

fn default_llm_batch() -> BatchConfig {
    BatchConfig { max_batch: 8, max_wait_ms: 50, max_in_flight: 1 }
}

fn default_embed_batch() -> BatchConfig {
    BatchConfig { max_batch: 64, max_wait_ms: 20, max_in_flight: 1 }
}
