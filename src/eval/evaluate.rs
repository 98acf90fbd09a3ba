//! The evaluation itself: encode the corpus into an exact index, encode the judged queries, retrieve the
//! top [`TOP_K`] passages of each, and score the run.
use super::beir::BeirDataset;
use super::metrics::{evaluate_run, Run, RunDoc};
use super::report::{EvalCounts, EvalReport, EvalSettings, Timings};
use crate::embed::{EmbedError, TextEmbedder};
use crate::retrieve::{ExactIndex, IndexOptions, RetrieveError};
use std::time::Instant;

/// Passages retrieved per query: enough for Recall@100 and MAP@100.
pub const TOP_K: usize = 100;

/// How to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalOptions {
    /// The model's name as written into the report.
    pub model: String,
    /// Texts handed to the embedder per call (it batches them further by its token budget); progress
    /// is logged after each call.
    pub encode_chunk: usize,
    /// Whether the report lists every query's metrics.
    pub per_query: bool,
    /// Where and how passages are indexed and searched.
    pub index: IndexOptions,
    /// Text put before every query, e.g. `task: Given a question, find a passage that answers it | query: `
    /// to evaluate a model fine-tuned on FRet's task-prefixed queries in its training format (empty: none).
    pub query_prefix: String,
}

impl Default for EvalOptions {
    /// 4096 texts per embedder call, per-query metrics on, a cosine index on the CPU.
    fn default() -> Self {
        Self {
            model: String::new(),
            encode_chunk: 4096,
            per_query: true,
            index: IndexOptions::default(),
            query_prefix: String::new(),
        }
    }
}

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The embedder failed.
    #[error("encoding {what} failed: {source}")]
    Embed {
        /// `passages` or `queries`.
        what: &'static str,
        /// The cause.
        source: EmbedError,
    },
    /// Indexing or search failed (for instance the embedder returned vectors of the wrong shape).
    #[error("retrieval failed: {0}")]
    Retrieve(#[from] RetrieveError),
    /// No query has a relevant judgment.
    #[error("no query of dataset '{0}' has a relevant judgment (grade >= 1): nothing to evaluate")]
    NothingToEvaluate(String),
    /// A setting is out of range.
    #[error("{0} must be at least 1")]
    ZeroSize(&'static str),
    /// A truncated dimension the model does not have.
    #[error("dimension {dim} is not between 1 and the model's {model_dim}")]
    Dim {
        /// The dimension asked for.
        dim: usize,
        /// The model's output dimension.
        model_dim: usize,
    },
}

/// Evaluates `embedder` on `dataset`: passages are encoded as `title + " " + text`
/// ([`crate::records::Passage::embedding_text`]), queries as they are; every passage can be retrieved.
/// Queries without a relevant judgment are neither encoded nor scored, only counted.
/// `timings.load_s` is left at 0 for the caller that loaded the dataset.
pub fn evaluate(
    embedder: &dyn TextEmbedder,
    dataset: &BeirDataset,
    opts: &EvalOptions,
) -> Result<EvalReport, EvalError> {
    let mut reports = evaluate_at_dims(embedder, dataset, opts, &[embedder.dim()])?;
    Ok(reports.remove(0))
}

/// [`evaluate`] at each of `dims` (Matryoshka): texts are encoded once, and each evaluation keeps the
/// first `d` components of every vector, re-normalized by the cosine index, as sentence-transformers'
/// `truncate_dim` does. One report per dimension, in the order given; a dimension above the model's is an
/// error.
pub fn evaluate_at_dims(
    embedder: &dyn TextEmbedder,
    dataset: &BeirDataset,
    opts: &EvalOptions,
    dims: &[usize],
) -> Result<Vec<EvalReport>, EvalError> {
    if opts.encode_chunk == 0 {
        return Err(EvalError::ZeroSize("encode chunk"));
    }
    if let Some(&bad) = dims.iter().find(|&&d| d == 0 || d > embedder.dim()) {
        return Err(EvalError::Dim { dim: bad, model_dim: embedder.dim() });
    }
    let is_judged = |id: &str| dataset.qrels.get(id).is_some_and(|j| j.values().any(|&g| g >= 1));
    let judged: Vec<_> = dataset.queries.iter().filter(|q| is_judged(&q.id)).collect();
    if judged.is_empty() {
        return Err(EvalError::NothingToEvaluate(dataset.name.clone()));
    }
    let mut timings = Timings::default();

    let started = Instant::now();
    let mut passages: Vec<(Vec<&str>, tch::Tensor)> = Vec::new();
    for (i, chunk) in dataset.corpus.chunks(opts.encode_chunk).enumerate() {
        let texts: Vec<String> = chunk.iter().map(|p| p.embedding_text()).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = embedder.embed(&refs).map_err(|source| EvalError::Embed { what: "passages", source })?;
        passages.push((chunk.iter().map(|p| p.id.as_str()).collect(), vectors));
        let done = (i * opts.encode_chunk + chunk.len()).min(dataset.corpus.len());
        tracing::info!(
            done,
            total = dataset.corpus.len(),
            elapsed_s = started.elapsed().as_secs_f64(),
            "Encoded passages."
        );
    }
    timings.encode_passages_s = started.elapsed().as_secs_f64();
    timings.passages_per_s = dataset.corpus.len() as f64 / timings.encode_passages_s.max(1e-9);

    let started = Instant::now();
    let mut queries: Vec<(&[&super::beir::BeirQuery], tch::Tensor)> = Vec::new();
    for chunk in judged.chunks(opts.encode_chunk) {
        let prefixed: Vec<String> = chunk.iter().map(|q| format!("{}{}", opts.query_prefix, q.text)).collect();
        let texts: Vec<&str> = prefixed.iter().map(String::as_str).collect();
        let vectors = embedder.embed(&texts).map_err(|source| EvalError::Embed { what: "queries", source })?;
        queries.push((chunk, vectors));
    }
    timings.encode_queries_s = started.elapsed().as_secs_f64();

    let mut reports = Vec::with_capacity(dims.len());
    for &dim in dims {
        let mut timings = timings;
        let started = Instant::now();
        let mut index = ExactIndex::new(dim, opts.index)?;
        for (ids, vectors) in &passages {
            index.upsert(ids, &vectors.narrow(1, 0, dim as i64))?;
        }
        let mut run = Run::new();
        for (chunk, vectors) in &queries {
            let hits = index.search(&vectors.narrow(1, 0, dim as i64), TOP_K)?;
            for (query, hits) in chunk.iter().zip(hits) {
                let docs = hits.into_iter().map(|h| RunDoc { id: h.key, score: f64::from(h.score) }).collect();
                run.insert(query.id.clone(), docs);
            }
        }
        timings.search_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        // Every query with a relevant judgment is in the run, so `per_query` covers exactly those.
        let metrics = evaluate_run(&dataset.qrels, &run);
        timings.metrics_s = started.elapsed().as_secs_f64();
        tracing::info!(dim, queries = metrics.per_query.len(), ndcg_at_10 = metrics.mean.ndcg_at_10, "Evaluated.");
        reports.push(report(dataset, opts, dim, judged.len(), metrics, timings));
    }
    Ok(reports)
}

fn report(
    dataset: &BeirDataset,
    opts: &EvalOptions,
    dim: usize,
    judged: usize,
    metrics: super::metrics::RunMetrics,
    timings: Timings,
) -> EvalReport {
    let judgments = dataset.judgments();
    let relevant_judgments = dataset.qrels.values().flat_map(|j| j.values()).filter(|&&g| g >= 1).count();
    EvalReport {
        dataset: dataset.name.clone(),
        dataset_path: dataset.root.display().to_string(),
        split: dataset.split.clone(),
        model: opts.model.clone(),
        fretflow_version: env!("CARGO_PKG_VERSION").to_string(),
        settings: EvalSettings {
            k: TOP_K,
            similarity: opts.index.similarity,
            dim,
            device: device_name(opts.index.device),
        },
        counts: EvalCounts {
            passages: dataset.corpus.len(),
            queries: dataset.queries.len(),
            queries_evaluated: metrics.per_query.len(),
            queries_unjudged: dataset.queries.len() - judged,
            judgments,
            relevant_judgments,
            unknown_query_judgments: dataset.unknown_query_judgments,
            unknown_passage_judgments: dataset.unknown_passage_judgments,
        },
        metrics: metrics.mean,
        timings,
        per_query: opts.per_query.then_some(metrics.per_query),
    }
}

/// `cpu`, `cuda:N`, or tch's debug name for other devices.
fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cpu => "cpu".to_string(),
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests;
