//! Assembles the FRet dataflow from its stages.
use super::async_op::{AsyncStage, BatchFn, BatchPolicy};
use super::dedup::{DedupParams, DedupQueries, DuplicateAction};
use super::embed::{EmbedPassages, EmbedQueries, SharedEmbedder};
use super::example::NegativeStrategy;
use super::fuse::{FuseParams, FuseRankings, FusionWeights};
use super::generate::GenerateQueries;
use super::judge::JudgeCandidates;
use super::labeler::Labeler;
use super::progress::{Metrics, SharedMetrics, StageMetrics};
use super::retrieve::RetrieveTopN;
use super::source::{Limits, Upsert};
use super::{Diff, Time};
use crate::records::{DeadLetter, Example, Provenance, SourceRecord};
use differential_dataflow::VecCollection;
use std::sync::Arc;
use timely::dataflow::operators::Concatenate;
use timely::dataflow::Stream;

/// Parameters of the FRet recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct FretParams {
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
            neighbours: 20,
            rrf_k: 60.0,
            weights: FusionWeights::default(),
            negatives: NegativeStrategy::Last,
            negatives_count: 1,
            max_positive_ratio: Some(super::example::DEFAULT_MAX_POSITIVE_RATIO),
            duplicate_queries: Some(DedupParams {
                threshold: super::dedup::DEFAULT_DUPLICATE_THRESHOLD,
                action: DuplicateAction::DeadLetter,
            }),
        }
    }
}

/// What the stages share: the models, the runtime their calls run on, settings, metrics.
#[derive(Clone)]
pub struct Stages {
    /// The LLM (its generator writes queries, its judge judges pairs).
    pub labeler: Arc<dyn Labeler>,
    /// The retrieval encoder.
    pub embedder: SharedEmbedder,
    /// Where model calls run.
    pub runtime: tokio::runtime::Handle,
    /// Batching of query generation.
    pub generate_batch: BatchPolicy,
    /// Batching of judging.
    pub judge_batch: BatchPolicy,
    /// Batching of encoder calls.
    pub embed_batch: BatchPolicy,
    /// The recipe's parameters.
    pub fret: FretParams,
    /// Passage size limits.
    pub limits: Limits,
    /// Counters.
    pub metrics: SharedMetrics,
}

impl Stages {
    /// An async stage named `name` running `func` with this context's runtime and metrics.
    pub fn async_stage<I, O>(
        &self,
        name: &str,
        func: Arc<dyn BatchFn<I, O>>,
        policy: BatchPolicy,
        counters: fn(&Metrics) -> &StageMetrics,
        calls_llm: bool,
    ) -> AsyncStage<I, O> {
        AsyncStage {
            name: name.to_string(),
            func,
            policy,
            runtime: self.runtime.clone(),
            metrics: Arc::clone(&self.metrics),
            counters,
            calls_llm,
        }
    }

    /// Provenance recorded in each example.
    pub fn provenance(&self) -> Provenance {
        let labeler = self.labeler.provenance();
        Provenance { generator: labeler.generator, judge: labeler.judge, embedder: self.embedder.name().to_string() }
    }
}

/// The outputs of the FRet dataflow.
pub struct FretStreams<'scope> {
    /// The FRet set, keyed by query id.
    pub examples: VecCollection<'scope, Time, (String, Example), Diff>,
    /// Every rejected record, from all stages.
    pub dead_letters: Stream<'scope, Time, Vec<DeadLetter>>,
}

/// Builds the FRet dataflow over a stream of source records.
pub fn fret_dataflow<'scope>(records: Stream<'scope, Time, Vec<SourceRecord>>, stages: &Stages) -> FretStreams<'scope> {
    let (passages, dead_source) = records.upsert_passages(stages.limits, Arc::clone(&stages.metrics));
    let (passage_vectors, dead_embed_p) = passages.clone().embed_passages(stages);
    let (queries, dead_generate) = passages.generate_queries(stages);
    let (query_vectors, dead_embed_q) = queries.embed_queries(stages);
    let (query_vectors, dead_dedup) = match stages.fret.duplicate_queries {
        Some(params) => {
            let (live, dead) = query_vectors.dedup_queries(params, Arc::clone(&stages.metrics));
            (live, Some(dead))
        }
        None => (query_vectors, None),
    };
    let candidates = query_vectors.retrieve_top_n(passage_vectors, stages.fret.neighbours, Arc::clone(&stages.metrics));
    let (judged, dead_judge) = candidates.judge_candidates(stages);
    let params = FuseParams {
        rrf_k: stages.fret.rrf_k,
        weights: stages.fret.weights,
        negatives: stages.fret.negatives,
        negatives_count: stages.fret.negatives_count,
        max_positive_ratio: stages.fret.max_positive_ratio,
        provenance: stages.provenance(),
    };
    let examples = judged.fuse_rankings(params, Arc::clone(&stages.metrics));
    let scope = records_scope(&examples);
    let mut dead = vec![dead_source, dead_embed_p, dead_generate, dead_embed_q, dead_judge];
    dead.extend(dead_dedup);
    let dead_letters = scope.concatenate(dead);
    FretStreams { examples, dead_letters }
}

fn records_scope<'scope>(
    c: &VecCollection<'scope, Time, (String, Example), Diff>,
) -> timely::dataflow::Scope<'scope, Time> {
    c.inner.scope()
}
