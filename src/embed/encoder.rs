//! [`SentenceEncoder`]: a sentence-transformers model (BERT, pooling, normalization) run with tch.
use super::batching::{plan_batches, TokenBatch};
use super::bert::BertModel;
use super::config::ModelConfig;
use super::pooling::pool;
use super::tokenize::TextTokenizer;
use super::workers::{run_on_cpu_workers, BatchJob};
use super::{weights, EmbedError, TextEmbedder};
use crate::device::Precision;
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// The token budget for bf16 and for GPUs: the padded `[batch, len]` block holds at most this many tokens.
pub const DEFAULT_TOKEN_BUDGET: usize = 8192;

/// The token budget for f32 on a CPU, where smaller blocks stay in cache: on a 2-core AVX-512 Xeon with
/// all-MiniLM-L6-v2 and 600 cranfield passages, 2048 encodes 42 passages/s against 35/s at 8192, while bf16
/// runs best at 8192 (97/s against 72/s at 2048). Measured with `fretflow embed --stats --batch-tokens N`.
pub const CPU_F32_TOKEN_BUDGET: usize = 2048;

/// The token budget that runs fastest for `precision` on `device` (see [`CPU_F32_TOKEN_BUDGET`]).
pub fn default_token_budget(device: Device, precision: Precision) -> usize {
    match (device, precision) {
        (Device::Cpu, Precision::F32) => CPU_F32_TOKEN_BUDGET,
        _ => DEFAULT_TOKEN_BUDGET,
    }
}

/// How a [`SentenceEncoder`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderOptions {
    /// Where parameters and activations live; results are always returned on the CPU.
    pub device: Device,
    /// Truncation length in tokens; `None` takes the model's `max_seq_length`.
    pub max_seq_length: Option<usize>,
    /// Tokens per padded batch (see [`super::batching`]).
    pub token_budget: usize,
    /// Number type for encoding: f32 (the reference) or bf16.
    pub precision: Precision,
    /// With bf16: keep the parameters f32 and run the matrix products in bf16, as
    /// `torch.autocast(dtype=torch.bfloat16)` does (f32 residual stream, LayerNorms, softmax and pooling),
    /// so an optimizer updates f32 weights and gradients are f32. For training (`fretflow train --precision
    /// bf16` means this); without it bf16 converts the parameters. No effect in f32.
    pub autocast: bool,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            max_seq_length: None,
            token_budget: CPU_F32_TOKEN_BUDGET,
            precision: Precision::F32,
            autocast: false,
        }
    }
}

/// A sentence-transformers model: tokenizer, BERT encoder in a [`VarStore`], pooling and normalization.
#[derive(Debug)]
pub struct SentenceEncoder {
    config: ModelConfig,
    tokenizer: TextTokenizer,
    vs: VarStore,
    model: BertModel,
    options: EncoderOptions,
}

impl SentenceEncoder {
    /// Loads a model directory in sentence-transformers layout (`config.json`, `tokenizer.json`,
    /// `model.safetensors`, optionally `modules.json`, `1_Pooling/config.json`,
    /// `sentence_bert_config.json`). Errors name the file at fault.
    pub fn load(dir: &Path, options: EncoderOptions) -> Result<Self, EmbedError> {
        let config = ModelConfig::load(dir)?;
        let positions = config.bert.max_positions() as usize;
        let max_len = options.max_seq_length.unwrap_or(config.max_seq_length);
        if max_len < 2 || max_len > positions {
            return Err(EmbedError::InvalidOption {
                option: "max_seq_length",
                message: format!("{max_len} is outside 2..={positions} (the model's position table)"),
            });
        }
        if options.token_budget == 0 {
            return Err(EmbedError::InvalidOption { option: "token_budget", message: "must be positive".into() });
        }
        let tokenizer = TextTokenizer::load(dir, max_len, config.do_lower_case, config.bert.pad_token_id)?;
        let mut vs = VarStore::new(options.device);
        let mut model = BertModel::new(vs.root(), &config.bert);
        let summary = weights::load_safetensors(&vs, &dir.join("model.safetensors"))?;
        match (options.precision, options.autocast) {
            (Precision::F32, _) => {}
            (Precision::Bf16, false) => vs.bfloat16(),
            (Precision::Bf16, true) => model.set_compute_kind(Some(Kind::BFloat16)),
        }
        tracing::info!(
            model = %dir.display(), tensors = summary.loaded, max_seq_length = max_len,
            device = ?options.device, precision = %options.precision, autocast = options.autocast, "Loaded sentence encoder."
        );
        let options = EncoderOptions { max_seq_length: Some(max_len), ..options };
        Ok(Self { config, tokenizer, vs, model, options })
    }

    /// Loads a model given as a directory or a short name (`all-MiniLM-L6-v2`), see
    /// [`crate::assets::resolve_model`].
    pub fn from_name(model: &str, options: EncoderOptions) -> Result<Self, EmbedError> {
        Self::load(&crate::assets::resolve_model(model)?, options)
    }

    /// Truncation length in tokens, special tokens included.
    pub fn max_seq_length(&self) -> usize {
        self.tokenizer.max_len()
    }

    /// The model directory this encoder was loaded from.
    pub fn model_dir(&self) -> &Path {
        &self.config.dir
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The options in effect (with `max_seq_length` resolved).
    pub fn options(&self) -> &EncoderOptions {
        &self.options
    }

    /// The parameters, under Hugging Face names (for optimizers and checkpoints).
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// The parameters, mutably (to freeze, move or cast them).
    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    /// Writes the parameters to `path` as safetensors under Hugging Face names.
    pub fn save_weights(&self, path: &Path) -> Result<(), EmbedError> {
        weights::save_safetensors(&self.vs, path)
    }

    /// Id of the padding token (what [`TokenBatch::pad`] should pad with).
    pub fn pad_id(&self) -> i64 {
        self.tokenizer.pad_id()
    }

    /// Token ids of each text, truncated at [`Self::max_seq_length`], unpadded.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, EmbedError> {
        self.tokenizer.encode(texts)
    }

    /// Tokenizes `texts` into one padded batch on the encoder's device, in input order (for training;
    /// encoding uses length-sorted, budgeted batches instead).
    pub fn tokenize_batch(&self, texts: &[&str]) -> Result<TokenBatch, EmbedError> {
        let ids = self.tokenizer.encode(texts)?;
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        Ok(TokenBatch::pad(&refs, self.tokenizer.pad_id(), self.options.device))
    }

    /// Sentence vectors `[batch, dim]` (f32, pooled, normalized when the model says so) for a padded batch
    /// on the encoder's device; evaluation mode (no dropout), differentiable.
    pub fn forward_tokens(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        self.forward_tokens_t(input_ids, attention_mask, false)
    }

    /// Like [`Self::forward_tokens`], with dropout when `train` is set.
    pub fn forward_tokens_t(&self, input_ids: &Tensor, attention_mask: &Tensor, train: bool) -> Tensor {
        let tokens = self.model.forward_t(input_ids, attention_mask, train);
        pool(&self.config.pooling, &tokens, attention_mask, self.config.normalize)
    }

    /// Encodes `texts` in budgeted batches without gradients, calling `progress` with the number of texts
    /// finished after each batch. Returns `[texts.len(), dim]` f32 on the CPU, rows in input order.
    ///
    /// On the CPU, when there are several batches, they run on as many single-threaded workers as LibTorch
    /// has threads (see `embed::workers`); on CUDA, batches run one after another.
    pub fn encode_with_progress(&self, texts: &[&str], progress: &mut dyn FnMut(usize)) -> Result<Tensor, EmbedError> {
        let dim = self.config.output_dim() as i64;
        let mut out = Tensor::zeros([texts.len() as i64, dim], (Kind::Float, Device::Cpu));
        if texts.is_empty() {
            return Ok(out);
        }
        let ids = self.tokenizer.encode(texts)?;
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
        let batches = plan_batches(&lengths, self.options.token_budget);
        let job = BatchJob {
            ids: &ids,
            batches: &batches,
            pad_id: self.tokenizer.pad_id(),
            pooling: self.config.pooling,
            normalize: self.config.normalize,
        };
        let mut place = |b: usize, vectors: Tensor| {
            let rows: Vec<i64> = batches[b].iter().map(|&i| i as i64).collect();
            let _ = out.index_copy_(0, &Tensor::from_slice(&rows), &vectors);
            progress(rows.len());
        };
        let threads = tch::get_num_threads();
        let workers = if self.options.device == Device::Cpu { (threads.max(1) as usize).min(batches.len()) } else { 1 };
        if workers > 1 {
            run_on_cpu_workers(&self.model, &job, workers, &mut place);
            // Workers set LibTorch's thread count to 1 for themselves; put back the process-wide default that
            // threads started later inherit (this thread's own count was never changed).
            tch::set_num_threads(threads);
        } else {
            let _no_grad = tch::no_grad_guard();
            for b in 0..batches.len() {
                place(b, job.run(&self.model, b, self.options.device));
            }
        }
        Ok(out)
    }
}

impl TextEmbedder for SentenceEncoder {
    fn dim(&self) -> usize {
        self.config.output_dim()
    }

    fn embed(&self, texts: &[&str]) -> Result<Tensor, EmbedError> {
        self.encode_with_progress(texts, &mut |_| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_can_move_to_another_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<SentenceEncoder>();
    }
}
