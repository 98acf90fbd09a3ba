//! What the stages share ([`Stages`]): the models, the runtime their calls run on, batching, the recipe's
//! parameters, limits and metrics. Each stage takes it by reference; [`super::graph`] wires the stages.
use super::async_op::{AsyncStage, BatchFn, BatchPolicy};
use super::embedder::SharedEmbedder;
use super::labeler::Labeler;
use super::params::{FretParams, Limits};
use super::progress::{Metrics, SharedMetrics, StageMetrics};
use crate::records::Provenance;
use std::sync::Arc;

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
