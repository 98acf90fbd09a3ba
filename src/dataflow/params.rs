//! The recipe's parameters, as plain data: what the pipeline config fills in and the stages read. Nothing
//! here depends on a stage, so every stage can depend on it.
use crate::records::PassageEvent;
use serde::{Deserialize, Serialize};

/// Parameters of the FRet recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct FretParams {
    /// Queries written per passage (1 in the paper).
    pub queries_per_passage: u32,
    /// Neighbours retrieved (and judged) per query: N.
    pub neighbours: usize,
    /// The RRF constant k.
    pub rrf_k: f64,
    /// Weights of the QL and RC rankings in the fusion.
    pub weights: FusionWeights,
    /// How hard negatives are chosen.
    pub negatives: NegativeStrategy,
    /// Hard negatives per example.
    pub negatives_count: usize,
    /// False-negative filter ratio (`None`: off); see [`super::example::eligible_negative`].
    pub max_positive_ratio: Option<f64>,
    /// Near-duplicate queries (`None`: the stage is left out); see [`super::dedup`].
    pub duplicate_queries: Option<DedupParams>,
}

impl Default for FretParams {
    fn default() -> Self {
        Self {
            queries_per_passage: 1,
            neighbours: 20,
            rrf_k: 60.0,
            weights: FusionWeights::default(),
            negatives: NegativeStrategy::Last,
            negatives_count: 1,
            max_positive_ratio: Some(super::params::DEFAULT_MAX_POSITIVE_RATIO),
            duplicate_queries: Some(DedupParams {
                threshold: super::params::DEFAULT_DUPLICATE_THRESHOLD,
                action: DuplicateAction::DeadLetter,
            }),
        }
    }
}

/// Default cosine threshold of near-duplicate queries (`[fret] duplicate_queries.threshold`).
pub const DEFAULT_DUPLICATE_THRESHOLD: f64 = 0.97;

/// What happens to a duplicate query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateAction {
    /// It leaves the live queries (no retrieval, no judging, no example) and goes to the dead letters.
    #[default]
    DeadLetter,
    /// It stays (and gets its example); duplicates are only counted.
    Keep,
}

/// Parameters of the near-duplicate stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DedupParams {
    /// A query whose cosine with a kept query is at least this is a duplicate.
    pub threshold: f64,
    /// What happens to duplicates.
    pub action: DuplicateAction,
}

/// Weights of the two rankings in reciprocal rank fusion: `ql / (k + rank_ql) + rc / (k + rank_rc)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusionWeights {
    /// Weight of the query-likelihood ranking.
    pub ql: f64,
    /// Weight of the relevance-classification ranking.
    pub rc: f64,
}

impl Default for FusionWeights {
    /// Equal weights, as in the paper.
    fn default() -> Self {
        Self { ql: 1.0, rc: 1.0 }
    }
}

/// Size limits on passages; a passage beyond them is a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest passage text, in characters.
    pub max_text_chars: usize,
    /// Longest title, in characters.
    pub max_title_chars: usize,
    /// Longest id, in characters.
    pub max_id_chars: usize,
    /// Fewest words (title and text together): a shorter passage gives the LLM nothing to ask about, so
    /// it would invent a query. 0: no minimum.
    pub min_words: usize,
}

/// Default of [`Limits::min_words`].
pub const DEFAULT_MIN_WORDS: usize = 3;

impl Default for Limits {
    fn default() -> Self {
        Self { max_text_chars: 4000, max_title_chars: 500, max_id_chars: 256, min_words: DEFAULT_MIN_WORDS }
    }
}

impl Limits {
    /// Why `event` is beyond the limits, if it is.
    pub fn check(&self, event: &PassageEvent) -> Option<String> {
        let over = |field: &str, value: &str, max: usize| {
            let n = value.chars().count();
            (n > max).then(|| format!("field `{field}` has {n} characters, over the limit of {max}"))
        };
        over("id", &event.id, self.max_id_chars).or_else(|| {
            event.passage.as_ref().and_then(|p| {
                over("text", &p.text, self.max_text_chars)
                    .or_else(|| over("title", &p.title, self.max_title_chars))
                    .or_else(|| too_short(p, self.min_words))
            })
        })
    }
}

/// Why passage `p` is below `min_words` words (title and text together), if it is.
pub fn too_short(p: &crate::records::Passage, min_words: usize) -> Option<String> {
    let words = p.title.split_whitespace().count() + p.text.split_whitespace().count();
    (words < min_words).then(|| {
        format!("too_short: the passage has {words} word(s), below the minimum of {min_words} (`[limits] min_words`)")
    })
}

/// Default false-negative filter ratio (`[fret.hard_negatives] max_positive_ratio`; NV-Retriever's best setting).
pub const DEFAULT_MAX_POSITIVE_RATIO: f64 = 0.95;

/// How hard negatives are chosen from the fused ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativeStrategy {
    /// The lowest-ranked candidates (`p_N`, then `p_{N-1}`, ...): best in the paper's ablation.
    Last,
    /// A pseudo-random pick among ranks 2..N, seeded by query and passage id, so it is reproducible and
    /// stays put when unrelated candidates come and go.
    Random,
}
