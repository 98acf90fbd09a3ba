//! Batched teacher forcing: one forward pass over right-padded `prompt + continuation` sequences gives the
//! log-probability of every continuation token; the output projection runs only at the positions that
//! predict a continuation token. A head that every sequence of the batch shares is computed once.
use tch::{Kind, Tensor};

use super::model::{shared_prefix, Attention, Llama};
use crate::llm::LlmError;

/// A tokenized scoring request: the model reads `prompt` then `continuation`; the continuation's tokens
/// are scored. `prompt` is non-empty (the first continuation token needs a context).
#[derive(Debug, Clone)]
pub(crate) struct ScoreJob {
    pub prompt: Vec<u32>,
    pub continuation: Vec<u32>,
}

impl ScoreJob {
    /// Tokens in the whole sequence.
    pub fn len(&self) -> usize {
        self.prompt.len() + self.continuation.len()
    }
}

fn tch_err(e: tch::TchError) -> LlmError {
    LlmError::Model(e.to_string())
}

/// Rows of the output projection computed at once (bounds the logits buffer to ~100 MB for a 49k vocab).
const LOGIT_ROWS: i64 = 512;

/// Log-probabilities `[rows]` of `targets` under the next-token distributions at `hidden` rows
/// (`[rows, hidden]`), computed in chunks of [`LOGIT_ROWS`].
fn target_logprobs(model: &Llama, hidden: &Tensor, targets: &Tensor) -> Result<Tensor, LlmError> {
    let n = hidden.size()[0];
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let len = LOGIT_ROWS.min(n - start);
        let logits = model.logits(&hidden.narrow(0, start, len)).map_err(tch_err)?;
        let logp = logits.f_log_softmax(-1, Kind::Float).map_err(tch_err)?;
        out.push(logp.gather(1, &targets.narrow(0, start, len).unsqueeze(1), false).squeeze_dim(1));
        start += len;
    }
    Tensor::f_cat(&out, 0).map_err(tch_err)
}

/// Runs right-padded sequences through the model with causal attention; returns the hidden states
/// `[batch, longest - shared, hidden]` of the positions after the `shared` head that every sequence has in
/// common (computed once, see [`shared_prefix`]), and `shared`. Every sequence keeps at least `keep` of
/// its own tokens after the head. Padding sits after every real token, so no real token sees it.
fn forward_right_padded(model: &Llama, seqs: &[Vec<u32>], pad: u32, keep: usize) -> Result<(Tensor, usize), LlmError> {
    let dev = model.device();
    let shared = shared_prefix(seqs, keep);
    let b = seqs.len() as i64;
    let t = seqs.iter().map(|s| s.len() - shared).max().unwrap_or(0) as i64;
    let mut ids = vec![i64::from(pad); (b * t) as usize];
    for (r, s) in seqs.iter().enumerate() {
        for (k, &id) in s[shared..].iter().enumerate() {
            ids[r * t as usize + k] = i64::from(id);
        }
    }
    let ids = Tensor::from_slice(&ids).view([b, t]).to_device(dev);
    let p = shared as i64;
    let positions = Tensor::arange_start(p, p + t, (Kind::Int64, dev)).unsqueeze(0).expand([b, t], false);
    let hidden = if shared == 0 {
        model.forward(&ids, &positions, Attention::Causal, None)
    } else {
        // Causal over the whole sequence: row i (position p + i) sees the head and columns up to p + i.
        let mask = Tensor::ones([t, p + t], (Kind::Bool, dev)).tril(p).view([1, 1, t, p + t]);
        let mut cache = model.prefix_cache(&seqs[0][..shared], b, p + t).map_err(tch_err)?;
        model.forward(&ids, &positions, Attention::Mask(&mask), Some(&mut cache))
    };
    Ok((hidden.map_err(tch_err)?, shared))
}

/// Per-token log-probabilities of each job's continuation, one forward pass for the whole batch.
pub(crate) fn score_batch(model: &Llama, pad: u32, jobs: &[ScoreJob]) -> Result<Vec<Vec<f32>>, LlmError> {
    let seqs: Vec<Vec<u32>> = jobs.iter().map(|j| [j.prompt.as_slice(), &j.continuation].concat()).collect();
    // Every continuation token is predicted from a position after the shared head.
    let keep = jobs.iter().map(|j| j.continuation.len() + 1).max().unwrap_or(1);
    let (hidden, shared) = forward_right_padded(model, &seqs, pad, keep)?;
    let (_, t, h) = hidden.size3().map_err(tch_err)?;
    // Position p predicts token p + 1: continuation token k sits at prompt_len + k.
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (r, j) in jobs.iter().enumerate() {
        for (k, &id) in j.continuation.iter().enumerate() {
            rows.push(r as i64 * t + (j.prompt.len() + k - shared) as i64 - 1);
            targets.push(i64::from(id));
        }
    }
    let dev = model.device();
    let picked = hidden.reshape([-1, h]).index_select(0, &Tensor::from_slice(&rows).to_device(dev));
    let logp = target_logprobs(model, &picked, &Tensor::from_slice(&targets).to_device(dev))?;
    let flat = Vec::<f32>::try_from(logp.to_device(tch::Device::Cpu)).map_err(tch_err)?;
    let mut out = Vec::with_capacity(jobs.len());
    let mut at = 0;
    for j in jobs {
        out.push(flat[at..at + j.continuation.len()].to_vec());
        at += j.continuation.len();
    }
    Ok(out)
}

/// Full next-token log-probability rows `[batch, vocab]` after each prompt (non-empty), one pass.
pub(crate) fn next_token_logprobs(model: &Llama, pad: u32, prompts: &[Vec<u32>]) -> Result<Tensor, LlmError> {
    let (hidden, shared) = forward_right_padded(model, prompts, pad, 1)?;
    let (_, t, h) = hidden.size3().map_err(tch_err)?;
    let rows: Vec<i64> =
        prompts.iter().enumerate().map(|(r, p)| r as i64 * t + (p.len() - shared) as i64 - 1).collect();
    let dev = model.device();
    let picked = hidden.reshape([-1, h]).index_select(0, &Tensor::from_slice(&rows).to_device(dev));
    let logits = model.logits(&picked).map_err(tch_err)?;
    logits.f_log_softmax(-1, Kind::Float).map_err(tch_err)
}
