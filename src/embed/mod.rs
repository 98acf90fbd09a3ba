//! Sentence encoders: text in, one vector per text out.

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
