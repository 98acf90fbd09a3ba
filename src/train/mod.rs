//! The continuous trainer: fine-tunes the sentence encoder on the evolving FRet set (Gecko recipe).
//!
//! - [`loss`]: the Gecko contrastive loss with same-tower negatives, false-negative masking and Matryoshka,
//!   plus an optional distillation term from the judge's scores.
//! - [`optim`]: AdamW with warmup/decay and clipping, whose state checkpoints.
//! - [`gradcache`]: one backward pass over a batch, with gradient caching for large batches.
//! - [`data`]: FRet examples, their change stream, extra pair datasets.
//! - [`buffer`]: the replay buffer following the stream, and batch sampling.
//! - [`source`]: where changes come from (file, in-process channel); [`kafka`]: the FRet topic in and
//!   checkpoint events out.
//! - [`checkpoint`]: atomic checkpoints in sentence-transformers layout, with optimizer state.
//! - [`manifest`]: `checkpoints.jsonl`, evaluation on arrival, retention, the nDCG@10 plot ([`plot`]).
//! - [`promotion`]: the promotion gate: `latest` moves only to a checkpoint that beats the promoted model.
//! - [`trainer`]: the loop tying these together.
use std::path::PathBuf;

pub mod buffer;
pub mod checkpoint;
pub mod data;
pub mod evaluate;
pub mod gauges;
pub mod gradcache;
pub mod kafka;
pub mod loss;
pub mod manifest;
pub mod model_card;
pub mod optim;
pub mod options;
pub mod plot;
pub mod promotion;
pub mod source;
pub mod trainer;

pub use loss::{DistillTeacher, GeckoLoss, LossError, LossInputs, TeacherInputs, TeacherScores};
pub use trainer::{RunSummary, StepReport, Trainer, TrainerConfig};

/// Anything that stops training: bad configuration, unreadable data, model or checkpoint failures.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting is out of range (names the setting).
    #[error("invalid training setting {field}: {message}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The loss could not be computed.
    #[error(transparent)]
    Loss(#[from] LossError),
    /// The optimizer could not be set up or restored.
    #[error(transparent)]
    Optim(#[from] optim::OptimError),
    /// The encoder could not be loaded or run.
    #[error(transparent)]
    Embed(#[from] crate::embed::EmbedError),
    /// A data file could not be read (names file and line).
    #[error(transparent)]
    Input(#[from] crate::connectors::file::InputError),
    /// The change source failed (Kafka, channel).
    #[error("training data source {source_name}: {message}")]
    Source {
        /// The source, as described in logs.
        source_name: String,
        /// What failed.
        message: String,
    },
    /// A checkpoint could not be written or read (names the path).
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// An evaluation dataset could not be loaded (names the file).
    #[error("evaluation dataset: {0}")]
    Dataset(#[from] crate::eval::BeirError),
    /// A checkpoint could not be evaluated.
    #[error("evaluating step {step} on {dataset}: {source}")]
    Eval {
        /// The checkpoint's step.
        step: u64,
        /// The dataset.
        dataset: String,
        /// The cause (boxed: it is large, and every training result carries this error type).
        source: Box<crate::eval::EvalError>,
    },
    /// A batch came out empty: no training data.
    #[error("no training examples: the FRet set is empty and no pair dataset is configured")]
    EmptyBatch,
    /// Every FRet example was left out by `--examples consistent`.
    #[error(
        "no training examples: --examples consistent left out all {0} FRet upserts (none has the passage its \
         query was written for as its judged positive); train with --examples all"
    )]
    AllFiltered(u64),
    /// A tensor operation failed.
    #[error("tensor error in training: {0}")]
    Tensor(#[from] tch::TchError),
}

impl TrainError {
    /// A checkpoint error naming `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Self::Checkpoint { path: path.into(), message: message.to_string() }
    }
}
