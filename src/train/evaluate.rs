//! Evaluation of checkpoints on BEIR datasets with the project's evaluator.
use super::manifest::{CheckpointEvaluator, Metrics};
use super::TrainError;
use crate::embed::SentenceEncoder;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Evaluates an encoder on BEIR-layout dataset directories (named by their last path component).
#[derive(Debug)]
pub struct BeirEvaluator {
    datasets: Vec<PathBuf>,
}

/// An evaluator over `datasets`.
pub fn beir_evaluator(datasets: &[PathBuf]) -> Result<Box<dyn CheckpointEvaluator>, TrainError> {
    Ok(Box::new(BeirEvaluator { datasets: datasets.to_vec() }))
}

impl CheckpointEvaluator for BeirEvaluator {
    fn evaluate(&mut self, _encoder: &SentenceEncoder) -> Result<BTreeMap<String, Metrics>, TrainError> {
        Err(TrainError::Config {
            field: "eval_dataset",
            message: format!("evaluation of {:?} needs crate::eval, which is not built yet", self.datasets),
        })
    }
}
