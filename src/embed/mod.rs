//! Sentence encoders: text in, one vector per text out.
//!
//! [`SentenceEncoder`] runs a sentence-transformers model (BERT or MPNet) with tch: [`config`] reads the
//! model directory, [`tokenize`] turns texts into ids, [`batching`] packs them by a token budget,
//! [`bert`] is the transformer, `workers` runs batches on several CPU threads at once, [`pooling`] makes
//! one vector per text, [`weights`] loads and saves safetensors by Hugging Face name.
pub mod batching;
pub mod bert;
pub mod config;
pub mod dropout;
mod encoder;
pub mod pooling;
pub mod tokenize;
pub mod weights;
mod workers;

pub use encoder::{default_token_budget, EncoderOptions, SentenceEncoder, CPU_F32_TOKEN_BUDGET, DEFAULT_TOKEN_BUDGET};

/// Failure to load or run an encoder.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// Model files missing or malformed (names the file).
    #[error("cannot load model from {path}: {message}")]
    Load {
        /// The file or directory.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The model name could not be resolved to an installed model.
    #[error(transparent)]
    Asset(#[from] crate::assets::AssetError),
    /// An encoder option is out of range (names the option).
    #[error("invalid {option}: {message}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Tokenization failed.
    #[error("tokenizer error: {0}")]
    Tokenize(String),
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Tensor(#[from] tch::TchError),
}

/// Anything that turns texts into vectors.
pub trait TextEmbedder {
    /// Output dimension.
    fn dim(&self) -> usize;
    /// Embeds `texts`, one row per text in input order, as a `[n, dim]` f32 tensor on the CPU.
    fn embed(&self, texts: &[&str]) -> Result<tch::Tensor, EmbedError>;
}
