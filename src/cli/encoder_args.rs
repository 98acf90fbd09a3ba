//! The encoder flags shared by `fretflow embed` and `fretflow eval`.
use crate::device::{DeviceChoice, Precision};
use crate::embed::{default_token_budget, EncoderOptions};
use anyhow::bail;

/// How to load and run the sentence encoder.
#[derive(Debug, Clone, clap::Args)]
pub struct EncoderArgs {
    /// Model: a directory in sentence-transformers layout or a short name of an installed model.
    #[arg(long, default_value = "all-MiniLM-L6-v2")]
    pub model: String,
    /// Device for the encoder (and the index): cpu, cuda, cuda:N or auto (CUDA when available).
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Token budget per batch: texts sorted by length are packed while `count * longest <= budget`
    /// [default: 2048 for f32 on a CPU, else 8192].
    #[arg(long)]
    pub batch_tokens: Option<usize>,
    /// Truncation length in tokens (default: the model's `max_seq_length`).
    #[arg(long)]
    pub max_seq_length: Option<usize>,
    /// Number type: f32 (reference) or bf16 (faster, cosine to f32 >= 0.99).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// CPU threads for LibTorch (default: LibTorch's own choice, usually the number of cores).
    #[arg(long)]
    pub threads: Option<i32>,
}

impl EncoderArgs {
    /// Sets LibTorch's thread count when `--threads` is given, and resolves the device.
    pub fn options(&self) -> anyhow::Result<EncoderOptions> {
        if let Some(n) = self.threads {
            if n < 1 {
                bail!("--threads must be at least 1, got {n}");
            }
            tch::set_num_threads(n);
        }
        let device = self.device.resolve()?;
        Ok(EncoderOptions {
            device,
            max_seq_length: self.max_seq_length,
            token_budget: self.batch_tokens.unwrap_or_else(|| default_token_budget(device, self.precision)),
            precision: self.precision,
            autocast: false,
        })
    }
}
