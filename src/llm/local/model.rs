//! The llama-family decoder in tch: RMSNorm, rotate-half RoPE, grouped-query attention with a KV cache,
//! SwiGLU MLP, tied or separate output projection; qwen2 adds q/k/v biases.
//!
//! The forward pass returns hidden states before the final norm; [`Llama::logits`] applies the final norm
//! and the output projection to chosen rows only, so scoring and generation never pay for the 49k-wide
//! output projection at positions nobody reads.
//!
//! **Shared prefixes.** Batched prompts often share a long head (the instructions and few-shot examples of
//! a FRet prompt: about half of its tokens). [`shared_prefix`] finds it, [`Llama::prefix_cache`] computes
//! it once for the batch, and the batch's forward pass covers only the rest. The model is causal, so the
//! result is the same as the full pass up to float summation order.
use tch::{Device, Kind, TchError, Tensor};

use super::config::ModelConfig;
use super::weights::{LayerWeights, Weights};

/// Per-layer key and value buffers of a batch, preallocated to the batch's final length.
#[derive(Debug)]
pub(crate) struct KvCache {
    /// `[batch, kv_heads, capacity, head_dim]` per layer.
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Positions filled so far.
    len: i64,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> i64 {
        self.len
    }

    /// Fills the first positions of every row with `prefix`'s (a one-row cache), so a batch whose prompts
    /// share those tokens computes them once.
    pub fn fill_prefix(&mut self, prefix: &KvCache) -> Result<(), TchError> {
        let n = prefix.len;
        for (dst, src) in self.k.iter_mut().zip(&prefix.k).chain(self.v.iter_mut().zip(&prefix.v)) {
            let rows = dst.size()[0];
            let src = src.f_narrow(2, 0, n)?;
            let src = src.f_expand([rows, -1, -1, -1], false)?;
            dst.f_narrow(2, 0, n)?.f_copy_(&src)?;
        }
        self.len = n;
        Ok(())
    }

    /// Keeps only the given batch rows (finished sequences leave the batch).
    pub fn retain_rows(&mut self, rows: &Tensor) -> Result<(), TchError> {
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            *t = t.f_index_select(0, rows)?;
        }
        Ok(())
    }
}

/// How the attention of one forward call is masked.
pub(crate) enum Attention<'a> {
    /// Plain causal attention over the call's own tokens (right-padded batches without a cache).
    Causal,
    /// An explicit boolean mask `[batch, 1, new, cached + new]`, `true` = may attend.
    Mask(&'a Tensor),
}

/// The model with its weights on one device.
#[derive(Debug)]
pub(crate) struct Llama {
    cfg: ModelConfig,
    w: Weights,
    /// `[max_positions, head_dim]` cosine and sine tables; the sine's first half is negated (see [`rope`]).
    cos: Tensor,
    sin: Tensor,
    device: Device,
    /// Weights, activations and KV cache (`Float` or `BFloat16`); logits are always f32.
    kind: Kind,
}

impl Llama {
    /// Moves the weights to `device` as `kind` and precomputes the RoPE tables as transformers does (in
    /// f32, then cast to `kind`).
    pub fn new(cfg: ModelConfig, w: Weights, device: Device, kind: Kind) -> Result<Self, TchError> {
        let mv = |t: Tensor| t.f_to_device(device)?.f_to_kind(kind);
        let layers = w
            .layers
            .into_iter()
            .map(|l| {
                Ok(LayerWeights {
                    attn_norm: mv(l.attn_norm)?,
                    qkv: mv(l.qkv)?,
                    qkv_bias: l.qkv_bias.map(mv).transpose()?,
                    o: mv(l.o)?,
                    ffn_norm: mv(l.ffn_norm)?,
                    gate_up: mv(l.gate_up)?,
                    down: mv(l.down)?,
                })
            })
            .collect::<Result<Vec<_>, TchError>>()?;
        let w = Weights {
            embed: mv(w.embed)?,
            final_norm: mv(w.final_norm)?,
            lm_head: w.lm_head.map(mv).transpose()?,
            layers,
        };
        let d = cfg.head_dim as i64;
        let exponent = Tensor::f_arange_start_step(0, d, 2, (Kind::Int64, device))?.f_to_kind(Kind::Float)? / d as f64;
        let inv_freq =
            Tensor::f_full([d / 2], cfg.rope_theta, (Kind::Float, device))?.f_pow(&exponent)?.f_reciprocal()?;
        let pos = Tensor::f_arange(cfg.max_positions as i64, (Kind::Float, device))?;
        let freqs = pos.f_outer(&inv_freq)?;
        let emb = Tensor::f_cat(&[&freqs, &freqs], -1)?;
        let sin = emb.f_sin()?;
        let sign = Tensor::f_cat(
            &[Tensor::f_full([d / 2], -1.0, (Kind::Float, device))?, Tensor::f_ones([d / 2], (Kind::Float, device))?],
            0,
        )?;
        let sin = sin.f_mul(&sign)?;
        Ok(Self { cos: emb.f_cos()?.f_to_kind(kind)?, sin: sin.f_to_kind(kind)?, cfg, w, device, kind })
    }

    /// The model's hyperparameters.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// An empty cache for `batch` sequences of at most `capacity` positions.
    pub fn new_cache(&self, batch: i64, capacity: i64) -> Result<KvCache, TchError> {
        let shape = [batch, self.cfg.num_kv_heads as i64, capacity, self.cfg.head_dim as i64];
        let mk = || Tensor::f_zeros(shape, (self.kind, self.device));
        let n = self.cfg.num_layers;
        Ok(KvCache {
            k: (0..n).map(|_| mk()).collect::<Result<_, _>>()?,
            v: (0..n).map(|_| mk()).collect::<Result<_, _>>()?,
            len: 0,
        })
    }

    /// A cache for `batch` rows of `capacity` positions whose first `prefix.len()` positions hold the keys
    /// and values of `prefix`, computed once in a one-row pass (the shared head of a batch's prompts:
    /// instructions and few-shot examples). Positions of later tokens continue from `prefix.len()`.
    pub fn prefix_cache(&self, prefix: &[u32], batch: i64, capacity: i64) -> Result<KvCache, TchError> {
        let n = prefix.len() as i64;
        let ids: Vec<i64> = prefix.iter().map(|&id| i64::from(id)).collect();
        let ids = Tensor::f_from_slice(&ids)?.f_view([1, n])?.f_to_device(self.device)?;
        let positions = Tensor::f_arange(n, (Kind::Int64, self.device))?.f_unsqueeze(0)?;
        let mut one = self.new_cache(1, n)?;
        let _hidden = self.forward(&ids, &positions, Attention::Causal, Some(&mut one))?;
        let mut cache = self.new_cache(batch, capacity)?;
        cache.fill_prefix(&one)?;
        Ok(cache)
    }

    /// Runs `ids` (`[batch, new]`, i64) at `positions` (same shape) through every block, appending to
    /// `cache` when given; returns the last block's output `[batch, new, hidden]` (before the final norm).
    pub fn forward(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        attention: Attention<'_>,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor, TchError> {
        let (b, t) = ids.size2()?;
        let mut x = Tensor::f_embedding(&self.w.embed, ids, -1, false, false)?;
        let flat = positions.f_reshape([-1])?;
        let d = self.cfg.head_dim as i64;
        let cos = self.cos.f_index_select(0, &flat)?.f_view([b, 1, t, d])?;
        let sin = self.sin.f_index_select(0, &flat)?.f_view([b, 1, t, d])?;
        for (i, layer) in self.w.layers.iter().enumerate() {
            let kv = cache.as_deref_mut().map(|c| (i, c));
            x = self.block(layer, &x, (&cos, &sin), &attention, kv)?;
        }
        if let Some(c) = cache {
            c.len += t;
        }
        Ok(x)
    }

    fn block(
        &self,
        l: &LayerWeights,
        x: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
        attention: &Attention<'_>,
        cache: Option<(usize, &mut KvCache)>,
    ) -> Result<Tensor, TchError> {
        let cfg = &self.cfg;
        let (b, t, _) = x.size3()?;
        let (h, kvh, d) = (cfg.num_heads as i64, cfg.num_kv_heads as i64, cfg.head_dim as i64);
        let eps = cfg.rms_norm_eps;
        let normed = x.f_rms_norm([cfg.hidden_size as i64], Some(&l.attn_norm), eps)?;
        // `[batch, heads + 2 kv_heads, new, head_dim]`; q and k heads are rotated together.
        let qkv = normed.f_linear(&l.qkv, l.qkv_bias.as_ref())?.f_view([b, t, h + 2 * kvh, d])?.f_transpose(1, 2)?;
        let qk = rope(&qkv.f_narrow(1, 0, h + kvh)?, cos, sin)?;
        let (q, k) = (qk.f_narrow(1, 0, h)?, qk.f_narrow(1, h, kvh)?);
        let v = qkv.f_narrow(1, h + kvh, kvh)?;
        let (k, v) = match cache {
            Some((i, c)) => {
                let (start, end) = (c.len, c.len + t);
                c.k[i].f_narrow(2, start, t)?.f_copy_(&k)?;
                c.v[i].f_narrow(2, start, t)?.f_copy_(&v)?;
                (c.k[i].f_narrow(2, 0, end)?, c.v[i].f_narrow(2, 0, end)?)
            }
            None => (k, v),
        };
        let (mask, causal) = match attention {
            Attention::Causal => (None, true),
            Attention::Mask(m) => (Some(*m), false),
        };
        let attn = Tensor::f_scaled_dot_product_attention(&q, &k, &v, mask, 0.0, causal, None, h != kvh)?;
        let attn = attn.f_transpose(1, 2)?.f_reshape([b * t, h * d])?;
        // Residual adds ride on the matrix products (`x += a @ w.T`, BLAS beta = 1).
        let mut x = x.f_reshape([b * t, cfg.hidden_size as i64])?;
        let _ = x.f_addmm_(&attn, &l.o.f_tr()?)?;
        let normed = x.f_rms_norm([cfg.hidden_size as i64], Some(&l.ffn_norm), eps)?;
        let gu = normed.f_linear::<&Tensor>(&l.gate_up, None)?.f_chunk(2, -1)?;
        let act = gu[0].f_silu()?.f_mul(&gu[1])?;
        let _ = x.f_addmm_(&act, &l.down.f_tr()?)?;
        x.f_view([b, t, cfg.hidden_size as i64])
    }

    /// Final norm and output projection of `hidden` rows (`[..., hidden]`), as f32 logits `[..., vocab]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor, TchError> {
        let normed =
            hidden.f_rms_norm([self.cfg.hidden_size as i64], Some(&self.w.final_norm), self.cfg.rms_norm_eps)?;
        let head = self.w.lm_head.as_ref().unwrap_or(&self.w.embed);
        normed.f_linear::<&Tensor>(head, None)?.f_to_kind(Kind::Float)
    }
}

/// Fewest shared tokens worth a separate prefix pass.
pub(crate) const MIN_SHARED_PREFIX: usize = 32;

/// Length of the head that every sequence shares, capped so that each keeps at least `keep` tokens of its
/// own; 0 when that is under [`MIN_SHARED_PREFIX`] or there is only one sequence.
pub(crate) fn shared_prefix<S: AsRef<[u32]>>(seqs: &[S], keep: usize) -> usize {
    let Some((first, rest)) = seqs.split_first() else { return 0 };
    if rest.is_empty() {
        return 0;
    }
    let first = first.as_ref();
    let mut n = seqs.iter().map(|s| s.as_ref().len().saturating_sub(keep)).min().unwrap_or(0);
    for s in rest {
        n = first[..n].iter().zip(s.as_ref()).take_while(|(a, b)| a == b).count();
    }
    if n < MIN_SHARED_PREFIX {
        0
    } else {
        n
    }
}

/// Rotate-half RoPE on `[batch, heads, new, head_dim]` with per-token tables `[batch, 1, new, head_dim]`;
/// `signed_sin` has its first half negated, so `rotate_half(x) * sin == cat(x2, x1) * signed_sin`.
fn rope(x: &Tensor, cos: &Tensor, signed_sin: &Tensor) -> Result<Tensor, TchError> {
    let half = x.size()[3] / 2;
    let swapped = Tensor::f_cat(&[x.f_narrow(3, half, half)?, x.f_narrow(3, 0, half)?], 3)?;
    x.f_mul(cos)?.f_addcmul(&swapped, signed_sin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefix_is_the_common_head_leaving_each_sequence_its_own_tokens() {
        let head: Vec<u32> = (0..40).collect();
        let a = [head.as_slice(), &[100, 101]].concat();
        let b = [head.as_slice(), &[200]].concat();
        assert_eq!(shared_prefix(&[&a, &b], 1), 40);
        // `b` must keep 2 tokens of its own: the head shrinks to 39.
        assert_eq!(shared_prefix(&[&a, &b], 2), 39);
        // Identical sequences still leave `keep` tokens.
        assert_eq!(shared_prefix(&[&a, &a], 1), 41);
        // Too short a head, one sequence, no sequences: no prefix pass.
        let c = [&head[..10], &[7, 7, 7]].concat();
        assert_eq!(shared_prefix(&[&a, &c], 1), 0);
        assert_eq!(shared_prefix(&[&a], 1), 0);
        assert_eq!(shared_prefix::<Vec<u32>>(&[], 1), 0);
    }
}
