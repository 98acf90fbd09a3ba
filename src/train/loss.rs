//! The Gecko contrastive loss with Matryoshka representation learning.
//!
//! For a batch of `B` queries `q_i`, their positives `p_i` and `M` hard negatives `n_k` (every query's hard
//! negatives, flattened), query `i` is scored against
//! `[p_1..p_B | n_1..n_M | q_1..q_B]` by cosine similarity divided by the temperature, and the loss is the
//! softmax cross-entropy with target `p_i`, averaged over queries. The query block ("same-tower negatives")
//! is optional and never contains `q_i` itself. With false-negative masking, a candidate passage with the
//! same id as `p_i` (another query's identical positive, or a hard negative that is `p_i`) is removed
//! from query `i`'s softmax rather than pushed away.
//!
//! Matryoshka: for each configured dimension `d` the embeddings are truncated to their first `d` components,
//! re-normalized, and the loss above is computed; the result is the weighted sum over dimensions.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// A loss configuration that cannot be used with the given embeddings.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    /// `matryoshka_dims` and `matryoshka_weights` disagree, or a dimension is zero or too large.
    #[error("invalid Matryoshka configuration: {0}")]
    Matryoshka(String),
    /// The temperature is not a positive finite number.
    #[error("temperature must be a positive finite number, got {0}")]
    Temperature(f64),
    /// The number of ids does not match the number of embedding rows.
    #[error("{what}: {ids} ids for {rows} embedding rows")]
    IdCount {
        /// Which input (positives or negatives).
        what: &'static str,
        /// Ids given.
        ids: usize,
        /// Rows in the embedding tensor.
        rows: usize,
    },
    /// A tensor operation failed (shapes, devices).
    #[error("tensor error in loss: {0}")]
    Tensor(#[from] tch::TchError),
}

/// The Gecko loss and its hyperparameters; serialized into every checkpoint's `fretflow.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeckoLoss {
    /// Softmax temperature applied to cosine similarities (Gecko: 0.05, i.e. scale 20).
    pub temperature: f64,
    /// Matryoshka dimensions (each at most the embedding size); empty means the full embedding only.
    pub matryoshka_dims: Vec<usize>,
    /// One weight per Matryoshka dimension; empty means weight 1 for each.
    pub matryoshka_weights: Vec<f32>,
    /// Score each query against the other queries of the batch too.
    pub same_tower_negatives: bool,
    /// Mask candidates that are the query's own positive passage (same id) instead of treating them as negatives.
    pub mask_false_negatives: bool,
}

impl Default for GeckoLoss {
    fn default() -> Self {
        Self {
            temperature: 0.05,
            matryoshka_dims: Vec::new(),
            matryoshka_weights: Vec::new(),
            same_tower_negatives: true,
            mask_false_negatives: true,
        }
    }
}

/// The embeddings of one batch and the passage ids that identify duplicates.
#[derive(Debug)]
pub struct LossInputs<'a> {
    /// `[B, D]` query embeddings.
    pub queries: &'a Tensor,
    /// `[B, D]` positive-passage embeddings, row `i` is query `i`'s positive.
    pub positives: &'a Tensor,
    /// `[M, D]` hard-negative embeddings of all queries (`M` may be 0).
    pub negatives: &'a Tensor,
    /// `B` passage ids of the positives.
    pub positive_ids: &'a [String],
    /// `M` passage ids of the hard negatives.
    pub negative_ids: &'a [String],
}

impl GeckoLoss {
    /// The (dimension, weight) pairs the loss sums over for embeddings of size `full_dim`.
    pub fn dims_and_weights(&self, full_dim: usize) -> Result<Vec<(usize, f64)>, LossError> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(LossError::Temperature(self.temperature));
        }
        if self.matryoshka_dims.is_empty() {
            if !self.matryoshka_weights.is_empty() {
                return Err(LossError::Matryoshka("weights given without dimensions".into()));
            }
            return Ok(vec![(full_dim, 1.0)]);
        }
        if !self.matryoshka_weights.is_empty() && self.matryoshka_weights.len() != self.matryoshka_dims.len() {
            return Err(LossError::Matryoshka(format!(
                "{} dimensions but {} weights",
                self.matryoshka_dims.len(),
                self.matryoshka_weights.len()
            )));
        }
        self.matryoshka_dims
            .iter()
            .enumerate()
            .map(|(k, &d)| {
                if d == 0 || d > full_dim {
                    return Err(LossError::Matryoshka(format!(
                        "dimension {d} is outside 1..={full_dim} (the embedding size)"
                    )));
                }
                let w = self.matryoshka_weights.get(k).copied().unwrap_or(1.0);
                Ok((d, f64::from(w)))
            })
            .collect()
    }

    /// The scalar loss for one batch; differentiable w.r.t. all three embedding tensors.
    pub fn forward(&self, inputs: &LossInputs<'_>) -> Result<Tensor, LossError> {
        let (b, dim) = inputs.queries.size2()?;
        let m = inputs.negatives.size2()?.0;
        check_ids("positives", inputs.positive_ids.len(), b)?;
        check_ids("positives", inputs.positive_ids.len(), inputs.positives.size2()?.0)?;
        check_ids("negatives", inputs.negative_ids.len(), m)?;
        let device = inputs.queries.device();
        let mask = Tensor::from_slice(&self.mask(inputs.positive_ids, inputs.negative_ids))
            .view([b, -1])
            .to_device(device);
        let targets = Tensor::arange(b, (Kind::Int64, device));

        let mut total: Option<Tensor> = None;
        for (d, w) in self.dims_and_weights(dim as usize)? {
            let d = d as i64;
            let q = normalize(&inputs.queries.f_narrow(1, 0, d)?);
            let p = normalize(&inputs.positives.f_narrow(1, 0, d)?);
            let n = normalize(&inputs.negatives.f_narrow(1, 0, d)?);
            let mut candidates = vec![p, n];
            if self.same_tower_negatives {
                candidates.push(q.shallow_clone());
            }
            let candidates = Tensor::f_cat(&candidates, 0)?;
            let logits = q.f_matmul(&candidates.f_transpose(0, 1)?)? / self.temperature;
            let logits = logits.f_masked_fill(&mask, f64::NEG_INFINITY)?;
            let loss = logits.f_cross_entropy_loss::<Tensor>(
                &targets,
                None,
                tch::Reduction::Mean,
                -100,
                0.0,
            )? * w;
            total = Some(match total {
                Some(t) => t + loss,
                None => loss,
            });
        }
        Ok(total.expect("dims_and_weights returns at least one dimension. This is a bug."))
    }

    /// Row-major `[B, B + M (+ B)]` mask: true where a candidate is excluded from query `i`'s softmax.
    fn mask(&self, positive_ids: &[String], negative_ids: &[String]) -> Vec<bool> {
        let b = positive_ids.len();
        let cols = b + negative_ids.len() + if self.same_tower_negatives { b } else { 0 };
        let mut mask = Vec::with_capacity(b * cols);
        for (i, own) in positive_ids.iter().enumerate() {
            let duplicate = |id: &String| self.mask_false_negatives && id == own;
            mask.extend(positive_ids.iter().enumerate().map(|(j, id)| j != i && duplicate(id)));
            mask.extend(negative_ids.iter().map(duplicate));
            if self.same_tower_negatives {
                mask.extend((0..b).map(|k| k == i));
            }
        }
        mask
    }
}

fn check_ids(what: &'static str, ids: usize, rows: i64) -> Result<(), LossError> {
    if ids as i64 != rows {
        return Err(LossError::IdCount { what, ids, rows: rows as usize });
    }
    Ok(())
}

/// L2-normalizes rows like `torch.nn.functional.normalize` (norm clamped at 1e-12).
pub fn normalize(x: &Tensor) -> Tensor {
    let norm = x.norm_scalaropt_dim(2, [-1i64].as_slice(), true).clamp_min(1e-12);
    x / norm
}
