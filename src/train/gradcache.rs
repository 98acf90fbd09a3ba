//! One backward pass over a batch, optionally with gradient caching (GradCache, Gao et al. 2021).
//!
//! A contrastive loss couples every row of the batch, so it cannot be accumulated over micro-batches.
//! GradCache splits the work instead: (1) encode all texts in chunks without a graph, (2) compute the loss
//! on those embeddings as leaves and backpropagate to the embeddings only, (3) re-encode chunk by chunk
//! with a graph and backpropagate the cached embedding gradients into the parameters. Peak memory is one
//! chunk's activations, whatever the batch size; the price is a second forward pass. The parameter
//! gradients equal those of one full-batch backward (tests/train_gradcache.rs). This holds for any loss that
//! is a function of the embeddings alone, the distillation term included (its teacher is a constant).
//!
//! Texts are packed into chunks by a token budget after sorting by length (little padding), the same way
//! the encoder batches for inference. With dropout, each chunk's forward passes are seeded identically so
//! the re-encoding sees the same dropout masks.
use super::buffer::Batch;
use super::loss::{GeckoLoss, LossInputs};
use super::TrainError;
use crate::embed::batching::{plan_batches, TokenBatch};
use crate::embed::SentenceEncoder;
use tch::{Kind, Tensor};

/// How the backward pass is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackwardConfig {
    /// Padded tokens per encoder chunk (a chunk holds `texts * longest <= chunk_tokens`).
    pub chunk_tokens: usize,
    /// Use GradCache (bounded memory, one extra forward); otherwise every chunk keeps its graph until the
    /// loss is backpropagated (fastest, memory grows with the batch).
    pub grad_cache: bool,
    /// Train with the model's dropout (`hidden_dropout_prob`, `attention_probs_dropout_prob`).
    pub dropout: bool,
    /// Mixed precision: bf16 matrix products, f32 weights, gradients, residual stream, LayerNorms and loss
    /// ([`crate::embed::EncoderOptions::autocast`]). Faster on CPUs with AVX-512 BF16/AMX and on GPUs.
    #[serde(default)]
    pub bf16: bool,
}

impl Default for BackwardConfig {
    fn default() -> Self {
        Self { chunk_tokens: 8192, grad_cache: false, dropout: false, bf16: false }
    }
}

/// Computes the loss of `batch` and accumulates the parameter gradients into the encoder's variables
/// (the caller zeroes them before and steps the optimizer after). `seed` fixes dropout masks. Returns the
/// loss value.
pub fn backward(
    encoder: &SentenceEncoder,
    loss: &GeckoLoss,
    batch: &Batch,
    config: &BackwardConfig,
    seed: i64,
) -> Result<f64, TrainError> {
    if batch.is_empty() {
        return Err(TrainError::EmptyBatch);
    }
    let texts: Vec<&str> =
        batch.queries.iter().chain(&batch.positives).chain(&batch.negatives).map(String::as_str).collect();
    let ids = encoder.tokenize(&texts)?;
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    let chunks = plan_batches(&lengths, config.chunk_tokens.max(1));
    let device = encoder.options().device;
    let pad_id = encoder.config().bert.pad_token_id;
    let encode = |k: usize, chunk: &[usize]| -> Tensor {
        let seqs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
        let tokens = TokenBatch::pad(&seqs, pad_id, device);
        if config.dropout {
            tch::manual_seed(seed.wrapping_add(k as i64));
        }
        encoder.forward_tokens_t(&tokens.input_ids, &tokens.attention_mask, config.dropout)
    };
    let rows =
        |chunk: &[usize]| Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>()).to_device(device);

    // Embeddings of all texts in input order: detached leaves (GradCache) or graph-carrying chunks.
    let mut parts: Vec<(Tensor, Tensor)> = Vec::with_capacity(chunks.len());
    for (k, chunk) in chunks.iter().enumerate() {
        let emb = if config.grad_cache { tch::no_grad(|| encode(k, chunk)) } else { encode(k, chunk) };
        parts.push((rows(chunk), emb));
    }
    let dim = parts[0].1.size()[1];
    let all = Tensor::zeros([texts.len() as i64, dim], (Kind::Float, device));
    let all = parts.iter().try_fold(all, |acc, (r, e)| acc.f_index_copy(0, r, e))?;
    let all = if config.grad_cache { all.detach().set_requires_grad(true) } else { all };

    let (b, m) = (batch.queries.len() as i64, batch.negatives.len() as i64);
    let value = loss.forward(&LossInputs {
        queries: &all.narrow(0, 0, b),
        positives: &all.narrow(0, b, b),
        negatives: &all.narrow(0, 2 * b, m),
        positive_ids: &batch.positive_ids,
        negative_ids: &batch.negative_ids,
        teacher: (loss.distill_weight > 0.0).then(|| batch.teacher_inputs()),
    })?;
    value.f_backward()?;
    let loss_value = value.double_value(&[]);
    if !config.grad_cache {
        return Ok(loss_value);
    }

    let cached = all.grad();
    drop(parts);
    for (k, chunk) in chunks.iter().enumerate() {
        let emb = encode(k, chunk);
        let grad = cached.f_index_select(0, &rows(chunk))?;
        (emb * grad).f_sum(Kind::Float)?.f_backward()?;
    }
    Ok(loss_value)
}
