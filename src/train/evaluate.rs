//! Evaluation of checkpoints on BEIR datasets with the project's evaluator ([`crate::eval::evaluate`]).
use super::manifest::CheckpointEvaluator;
use super::TrainError;
use crate::embed::{EncoderOptions, SentenceEncoder, TextEmbedder};
use crate::eval::{evaluate_at_dims, BeirDataset, EvalOptions, LoadOptions};
use crate::records::Metrics;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Evaluates checkpoints on BEIR-layout datasets, loaded once. Each checkpoint is loaded from disk with
/// the model's own `max_seq_length` (not the training truncation), like `fretflow eval` does.
#[derive(Debug)]
pub struct BeirEvaluator {
    datasets: Vec<BeirDataset>,
    options: EncoderOptions,
    dims: Vec<usize>,
    query_prefix: String,
}

impl BeirEvaluator {
    /// The metrics measured on each dataset, the names [`crate::records::Metrics`] holds.
    pub const METRICS: [&'static str; 5] = ["ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100"];

    /// Loads the dataset directories (`corpus.jsonl`, `queries.jsonl`, `qrels/test.tsv`); `options` says
    /// how checkpoints are run (device, token budget).
    pub fn new(dirs: &[PathBuf], options: EncoderOptions) -> Result<Self, TrainError> {
        let datasets = dirs.iter().map(|d| BeirDataset::load(d, &LoadOptions::default())).collect::<Result<_, _>>()?;
        let options = EncoderOptions { max_seq_length: None, ..options };
        Ok(Self { datasets, options, dims: Vec::new(), query_prefix: String::new() })
    }

    /// Gives checkpoints' queries this prefix (the task prompt they were trained with), so each model is
    /// measured as it is used: the base model (step 0) with plain queries, checkpoints with the prompt.
    pub fn with_query_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.query_prefix = prefix.into();
        self
    }

    /// The query prefix the model of `step` is evaluated with: none for the base model (step 0).
    fn prefix_at(&self, step: u64) -> &str {
        if step == 0 {
            ""
        } else {
            &self.query_prefix
        }
    }

    /// Also measures every metric at these truncated (Matryoshka) dimensions, recorded as `METRIC/D`
    /// (`ndcg@10/256`) next to the full-dimension metrics (texts are encoded once).
    pub fn with_dims(mut self, dims: &[usize]) -> Self {
        self.dims = dims.to_vec();
        self
    }
}

impl CheckpointEvaluator for BeirEvaluator {
    fn evaluate(&mut self, model_dir: &Path, step: u64) -> Result<BTreeMap<String, Metrics>, TrainError> {
        let encoder = SentenceEncoder::load(model_dir, self.options)?;
        let opts = EvalOptions {
            model: model_dir.display().to_string(),
            per_query: false,
            query_prefix: self.prefix_at(step).to_string(),
            ..EvalOptions::default()
        };
        let mut out = BTreeMap::new();
        let full = encoder.dim();
        let mut dims = vec![full];
        dims.extend(self.dims.iter().copied().filter(|&d| d != full));
        for ds in &self.datasets {
            let reports = evaluate_at_dims(&encoder, ds, &opts, &dims).map_err(|source| TrainError::Eval {
                step,
                dataset: ds.name.clone(),
                source: Box::new(source),
            })?;
            let mut metrics = Metrics::new();
            for report in reports {
                let m = report.metrics;
                let values = [m.ndcg_at_10, m.recall_at_10, m.recall_at_100, m.mrr_at_10, m.map_at_100];
                let dim = report.settings.dim;
                let suffix = if dim == full { String::new() } else { format!("/{dim}") };
                metrics.extend(Self::METRICS.iter().map(|name| format!("{name}{suffix}")).zip(values));
                tracing::info!(step, dataset = %ds.name, dim, ndcg_at_10 = m.ndcg_at_10, "Evaluated checkpoint.");
            }
            out.insert(ds.name.clone(), metrics);
        }
        Ok(out)
    }
}
