//! The Gecko contrastive loss with Matryoshka representation learning, and an optional distillation term.
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
//!
//! Distillation (soft labels, off when `distill_weight` is 0): each FRet example carries the judge's
//! scores of its candidates, so query `i`'s own list `C_i = [p_i, its hard negatives]` (the passages of the
//! batch that have text; no in-batch or same-tower candidates) gets a listwise KL term. Only the members
//! of `C_i` with a teacher score `t_c` (see [`DistillTeacher`]) take part; a query with fewer than two of
//! them adds nothing. With `S_i` those scored members, at each Matryoshka dimension `d`:
//!
//! ```text
//! teacher  P_i(c) = softmax_{c in S_i}(t_c / distill_temperature)
//! student  Q_i(c) = softmax_{c in S_i}(cos_d(q_i, c) / temperature)
//! KL_i,d          = sum_{c in S_i} P_i(c) (log P_i(c) - log Q_i(c))
//! loss            = sum_d w_d * (contrastive_d + distill_weight * mean_{i : |S_i| >= 2} KL_i,d)
//! ```
//!
//! The student side is applied at every Matryoshka dimension with the same weights as the contrastive
//! part, so the truncated embeddings also learn the judge's order. The teacher is a constant: gradients
//! flow only into the embeddings, which is all GradCache needs (it differentiates the loss w.r.t. cached
//! embeddings). Teacher scores live on different scales (RRF values ~0.025..0.033 with k = 60, QL
//! log-probabilities in nats, RC probabilities in 0..1), so `distill_temperature` must suit the teacher: the
//! default 0.001 spreads RRF ranks 1 and 20 by ~7.8 nats, about what a cosine gap of 0.4 gives the student
//! at temperature 0.05; ~1 suits QL and ~0.05 RC.
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
    /// A distillation setting is out of range (names the setting).
    #[error("{field} must be {expected}, got {value}")]
    Distill {
        /// The setting (`distill_weight`, `distill_temperature`).
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// The value given.
        value: f64,
    },
    /// Teacher scores or negative owners do not line up with the embedding rows.
    #[error("teacher inputs: {what} has {len} entries for {rows} embedding rows")]
    TeacherCount {
        /// Which list (positive scores, negative scores, negative owners).
        what: &'static str,
        /// Entries given.
        len: usize,
        /// Rows expected.
        rows: usize,
    },
    /// A hard negative names a query row the batch does not have.
    #[error("teacher inputs: a hard negative belongs to query row {owner} of a batch of {queries} queries")]
    NegativeOwner {
        /// The row named.
        owner: usize,
        /// Queries in the batch.
        queries: usize,
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
    /// Weight of the distillation term (module doc); 0 is the contrastive loss alone, with no extra compute.
    pub distill_weight: f64,
    /// The judge score the distillation term follows.
    pub distill_teacher: DistillTeacher,
    /// Temperature of the teacher's softmax over its scores (on the scale of the chosen score).
    pub distill_temperature: f64,
}

/// Which score of an example's `ranking` is the teacher of the distillation term.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DistillTeacher {
    /// The judge's fused score, `1/(k + ql_rank) + 1/(k + rc_rank)`.
    #[default]
    Rrf,
    /// Query likelihood (log-probability); candidates without one are left out.
    Ql,
    /// Relevance classification score.
    Rc,
    /// The judge's fused rank fused again with the retrieval embedder's cosine rank over the example's
    /// candidates: `1/(60 + rrf_rank) + 1/(60 + cosine_rank)`. The cosines are those recorded when the
    /// example was made (the student before this training), not the current student's.
    #[value(name = "rrf_student", alias = "rrf-student")]
    RrfStudent,
}

/// What an example's `ranking` says about one candidate passage (all teachers' scores).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TeacherScores {
    /// The judge's reciprocal rank fusion score.
    pub rrf: f64,
    /// Query likelihood, when the judge gave one.
    pub ql: Option<f64>,
    /// Relevance classification score.
    pub rc: f64,
    /// [`DistillTeacher::RrfStudent`]'s score.
    pub rrf_student: f64,
}

impl DistillTeacher {
    /// This teacher's score of a candidate, if it has one.
    pub fn score(self, scores: &TeacherScores) -> Option<f64> {
        match self {
            DistillTeacher::Rrf => Some(scores.rrf),
            DistillTeacher::Ql => scores.ql,
            DistillTeacher::Rc => Some(scores.rc),
            DistillTeacher::RrfStudent => Some(scores.rrf_student),
        }
    }
}

impl Default for GeckoLoss {
    fn default() -> Self {
        Self {
            temperature: 0.05,
            matryoshka_dims: Vec::new(),
            matryoshka_weights: Vec::new(),
            same_tower_negatives: true,
            mask_false_negatives: true,
            distill_weight: 0.0,
            distill_teacher: DistillTeacher::Rrf,
            distill_temperature: 0.001,
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
    /// The teacher's view of each passage, for the distillation term; `None`: no distillation.
    pub teacher: Option<TeacherInputs<'a>>,
}

/// Teacher scores aligned with the rows of [`LossInputs`], and which query each hard negative belongs to.
#[derive(Debug, Clone, Copy)]
pub struct TeacherInputs<'a> {
    /// `B` entries: the scores of query `i`'s positive (`None`: not in its ranking, e.g. a pair example).
    pub positives: &'a [Option<TeacherScores>],
    /// `M` entries: the scores of each hard negative in its own query's ranking.
    pub negatives: &'a [Option<TeacherScores>],
    /// `M` entries: the batch row of the query each hard negative belongs to.
    pub negative_owners: &'a [usize],
}

impl GeckoLoss {
    /// Checks the settings and returns the (dimension, weight) pairs the loss sums over for embeddings of
    /// size `full_dim`.
    pub fn dims_and_weights(&self, full_dim: usize) -> Result<Vec<(usize, f64)>, LossError> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(LossError::Temperature(self.temperature));
        }
        if !(self.distill_weight.is_finite() && self.distill_weight >= 0.0) {
            let (field, expected, value) = ("distill_weight", "a finite number >= 0", self.distill_weight);
            return Err(LossError::Distill { field, expected, value });
        }
        if !(self.distill_temperature.is_finite() && self.distill_temperature > 0.0) {
            let (field, expected, value) = ("distill_temperature", "a finite number > 0", self.distill_temperature);
            return Err(LossError::Distill { field, expected, value });
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
        let mask =
            Tensor::from_slice(&self.mask(inputs.positive_ids, inputs.negative_ids)).view([b, -1]).to_device(device);
        let targets = Tensor::arange(b, (Kind::Int64, device));
        let dims = self.dims_and_weights(dim as usize)?;
        let distill = match inputs.teacher {
            Some(teacher) if self.distill_weight > 0.0 => {
                DistillLists::new(self, &teacher, b as usize, m as usize, inputs.queries.kind(), device)?
            }
            _ => None,
        };

        let mut total: Option<Tensor> = None;
        for (d, w) in dims {
            let d = d as i64;
            let q = normalize(&inputs.queries.f_narrow(1, 0, d)?);
            let p = normalize(&inputs.positives.f_narrow(1, 0, d)?);
            let n = normalize(&inputs.negatives.f_narrow(1, 0, d)?);
            let mut candidates = vec![p.shallow_clone(), n.shallow_clone()];
            if self.same_tower_negatives {
                candidates.push(q.shallow_clone());
            }
            let candidates = Tensor::f_cat(&candidates, 0)?;
            let logits = q.f_matmul(&candidates.f_transpose(0, 1)?)? / self.temperature;
            let logits = logits.f_masked_fill(&mask, f64::NEG_INFINITY)?;
            let loss = logits.f_cross_entropy_loss::<Tensor>(&targets, None, tch::Reduction::Mean, -100, 0.0)?;
            let loss = match &distill {
                Some(lists) => loss + lists.kl(&q, &p, &n, self.temperature)? * self.distill_weight,
                None => loss,
            } * w;
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

/// The distillation lists of one batch in padded form: the `R` queries with at least two scored candidates,
/// `C` slots each (the longest list), with the teacher's distribution precomputed in f64.
struct DistillLists {
    /// `[R]` batch rows of the queries.
    rows: Tensor,
    /// `[R, C]` rows of `cat([positives, negatives])` (0 in padding slots).
    slots: Tensor,
    /// `[R, C]` true in padding slots (lists shorter than `C`; unscored candidates are never in a list).
    absent: Tensor,
    /// `[R, C]` teacher probabilities (0 where absent).
    teacher: Tensor,
    /// `sum P log P` of the teacher over all rows, i.e. minus its total entropy.
    neg_entropy: f64,
}

impl DistillLists {
    /// `None` when no query has two scored candidates.
    fn new(
        loss: &GeckoLoss,
        inputs: &TeacherInputs<'_>,
        b: usize,
        m: usize,
        kind: Kind,
        device: tch::Device,
    ) -> Result<Option<Self>, LossError> {
        let count =
            |what, len, rows| if len == rows { Ok(()) } else { Err(LossError::TeacherCount { what, len, rows }) };
        count("positive scores", inputs.positives.len(), b)?;
        count("negative scores", inputs.negatives.len(), m)?;
        count("negative owners", inputs.negative_owners.len(), m)?;
        // Each query's scored candidates as (row in cat([positives, negatives]), teacher score).
        let score = |s: &Option<TeacherScores>| s.and_then(|s| loss.distill_teacher.score(&s));
        let positive = |(i, s)| score(s).map(|t| (i as i64, t)).into_iter().collect();
        let mut lists: Vec<Vec<(i64, f64)>> = inputs.positives.iter().enumerate().map(positive).collect();
        for (k, (scores, &owner)) in inputs.negatives.iter().zip(inputs.negative_owners).enumerate() {
            let Some(list) = lists.get_mut(owner) else {
                return Err(LossError::NegativeOwner { owner, queries: b });
            };
            if let Some(t) = score(scores) {
                list.push(((b + k) as i64, t));
            }
        }
        let kept: Vec<(usize, &Vec<(i64, f64)>)> = lists.iter().enumerate().filter(|(_, l)| l.len() >= 2).collect();
        let Some(width) = kept.iter().map(|(_, l)| l.len()).max() else { return Ok(None) };
        let (mut slots, mut absent, mut probs) = (Vec::new(), Vec::new(), Vec::new());
        let mut neg_entropy = 0.0;
        for (_, list) in &kept {
            let logits: Vec<f64> = list.iter().map(|&(_, t)| t / loss.distill_temperature).collect();
            let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let log_z = max + logits.iter().map(|z| (z - max).exp()).sum::<f64>().ln();
            for c in 0..width {
                match (list.get(c), logits.get(c)) {
                    (Some(&(slot, _)), Some(&z)) => {
                        let (log_p, p) = (z - log_z, (z - log_z).exp());
                        neg_entropy += p * log_p;
                        slots.push(slot);
                        absent.push(false);
                        probs.push(p);
                    }
                    _ => {
                        slots.push(0);
                        absent.push(true);
                        probs.push(0.0);
                    }
                }
            }
        }
        let shape = [kept.len() as i64, width as i64];
        let rows: Vec<i64> = kept.iter().map(|&(i, _)| i as i64).collect();
        Ok(Some(Self {
            rows: Tensor::from_slice(&rows).to_device(device),
            slots: Tensor::from_slice(&slots).view(shape).to_device(device),
            absent: Tensor::from_slice(&absent).view(shape).to_device(device),
            teacher: Tensor::from_slice(&probs).view(shape).to_kind(kind).to_device(device),
            neg_entropy,
        }))
    }

    /// Mean over the kept queries of `KL(teacher || student)`, the student's logits being the cosines of
    /// the (normalized) embeddings divided by `temperature`.
    fn kl(&self, q: &Tensor, p: &Tensor, n: &Tensor, temperature: f64) -> Result<Tensor, LossError> {
        let (r, c) = self.slots.size2()?;
        let passages = Tensor::f_cat(&[p, n], 0)?;
        let dim = passages.size2()?.1;
        let candidates = passages.f_index_select(0, &self.slots.view([-1]))?.view([r, c, dim]);
        let queries = q.f_index_select(0, &self.rows)?.unsqueeze(1);
        let logits = (queries * candidates).f_sum_dim_intlist([-1i64].as_slice(), false, q.kind())? / temperature;
        let log_student = logits
            .f_masked_fill(&self.absent, f64::NEG_INFINITY)?
            .f_log_softmax(-1, q.kind())?
            .f_masked_fill(&self.absent, 0.0)?;
        let cross = (&self.teacher * log_student).f_sum(q.kind())?;
        Ok((cross.neg() + self.neg_entropy) / r as f64)
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
