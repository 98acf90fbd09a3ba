//! AdamW with warmup and decay, global-norm gradient clipping, and an optimizer state that checkpoints.
//!
//! tch's `nn::AdamW` keeps its moment buffers inside the C++ optimizer with no way to read or restore
//! them, so a restarted trainer would lose them. This AdamW is written on tensors instead: the update is
//! `torch.optim.AdamW`'s (decoupled weight decay, bias-corrected moments; checked against PyTorch in
//! tests/train_optim.rs), and its state (`exp_avg.<name>`, `exp_avg_sq.<name>`, step) saves to and loads from
//! safetensors. As in Hugging Face's trainer, biases and LayerNorm parameters get no weight decay.
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn::VarStore, Tensor};

/// Failure to configure, save or restore the optimizer.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// A hyperparameter is out of range (names the field).
    #[error("invalid optimizer setting {field}: {message}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A saved state does not fit the model (names the file and the tensor).
    #[error("optimizer state {path} does not match the model: {message}")]
    State {
        /// The state file.
        path: std::path::PathBuf,
        /// What is missing or mis-shaped.
        message: String,
    },
    /// A tensor operation or file access failed.
    #[error("optimizer tensor error: {0}")]
    Tensor(#[from] tch::TchError),
}

/// How the learning rate moves after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Stay at the peak learning rate (the natural choice for an open-ended stream).
    Constant,
    /// Decay linearly to zero at `total_steps`.
    Linear,
}

/// Optimizer and schedule settings; saved in each checkpoint's `fretflow.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay (not applied to biases and LayerNorm parameters).
    pub weight_decay: f64,
    /// Adam beta1.
    pub beta1: f64,
    /// Adam beta2.
    pub beta2: f64,
    /// Adam epsilon.
    pub eps: f64,
    /// Steps of linear warmup from 0 to `lr` (step `t` of warmup uses `lr * t / warmup_steps`).
    pub warmup_steps: u64,
    /// Schedule after warmup.
    pub decay: Decay,
    /// Last step of a linear decay (required for `linear`).
    pub total_steps: Option<u64>,
    /// Clip the global gradient norm to this value; 0 disables clipping.
    pub max_grad_norm: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 2e-5,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_steps: 10,
            decay: Decay::Constant,
            total_steps: None,
            max_grad_norm: 1.0,
        }
    }
}

impl OptimConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), OptimError> {
        let bad = |field, message: &str| Err(OptimError::Config { field, message: message.to_string() });
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", "must be a positive number");
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("beta1/beta2", "must be in [0, 1)");
        }
        if !(self.eps > 0.0 && self.weight_decay >= 0.0 && self.max_grad_norm >= 0.0) {
            return bad("eps/weight_decay/max_grad_norm", "eps must be > 0, the others >= 0");
        }
        if self.decay == Decay::Linear && self.total_steps.is_none_or(|t| t <= self.warmup_steps) {
            return bad("total_steps", "linear decay needs total_steps greater than warmup_steps");
        }
        Ok(())
    }

    /// The learning rate for optimizer step `step` (1-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step <= self.warmup_steps && self.warmup_steps > 0 {
            return self.lr * step as f64 / self.warmup_steps as f64;
        }
        match (self.decay, self.total_steps) {
            (Decay::Linear, Some(total)) => {
                let left = total.saturating_sub(step) as f64;
                self.lr * left / (total - self.warmup_steps).max(1) as f64
            }
            _ => self.lr,
        }
    }
}

/// AdamW over a VarStore's trainable variables, in name order.
#[derive(Debug)]
pub struct AdamW {
    config: OptimConfig,
    names: Vec<String>,
    params: Vec<Tensor>,
    decay: Vec<bool>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    step: u64,
}

impl AdamW {
    /// An optimizer with zero moments for every trainable variable of `vs`.
    pub fn new(vs: &VarStore, config: OptimConfig) -> Result<Self, OptimError> {
        config.validate()?;
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let decay = vars.iter().map(|(n, _)| !(n.ends_with("bias") || n.contains("LayerNorm"))).collect();
        let exp_avg = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        let exp_avg_sq = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        let (names, params) = vars.into_iter().unzip();
        Ok(Self { config, names, params, decay, exp_avg, exp_avg_sq, step: 0 })
    }

    /// Settings in use.
    pub fn config(&self) -> &OptimConfig {
        &self.config
    }

    /// Optimizer steps taken so far (also the bias-correction step).
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Clears the gradients of all parameters.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_grad_norm` (as `clip_grad_norm_`);
    /// returns the norm before clipping.
    pub fn clip_grad_norm(&mut self) -> f64 {
        let grads: Vec<Tensor> = self.params.iter().map(Tensor::grad).filter(Tensor::defined).collect();
        if grads.is_empty() {
            return 0.0;
        }
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
        let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
        let max = self.config.max_grad_norm;
        if max > 0.0 && total > max {
            let scale = max / (total + 1e-6);
            tch::no_grad(|| {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(scale);
                }
            });
        }
        total
    }

    /// One AdamW update with the scheduled learning rate; returns the learning rate used.
    pub fn step(&mut self) -> f64 {
        self.step += 1;
        let c = &self.config;
        let lr = c.lr_at(self.step);
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2_sqrt = (1.0 - c.beta2.powi(self.step as i32)).sqrt();
        tch::no_grad(|| {
            for k in 0..self.params.len() {
                let grad = self.params[k].grad();
                if !grad.defined() {
                    continue;
                }
                let p = &mut self.params[k];
                if self.decay[k] && c.weight_decay > 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                // In place, two temporaries per tensor: v = b2 v + (1 - b2) g^2 is a lerp towards g^2,
                // and p -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps) is an addcdiv with a scaled denominator.
                let _ = self.exp_avg[k].lerp_(&grad, 1.0 - c.beta1);
                let _ = self.exp_avg_sq[k].lerp_(&grad.square(), 1.0 - c.beta2);
                if lr > 0.0 {
                    let mut denom = self.exp_avg_sq[k].sqrt();
                    let _ = denom.g_div_scalar_(bias2_sqrt);
                    let _ = denom.g_add_scalar_(c.eps);
                    let _ = denom.g_mul_scalar_(-bias1 / lr);
                    let _ = p.addcdiv_(&self.exp_avg[k], &denom);
                }
            }
        });
        lr
    }

    /// Writes the moment buffers to a safetensors file (`exp_avg.<name>`, `exp_avg_sq.<name>`).
    pub fn save_state(&self, path: &Path) -> Result<(), OptimError> {
        let mut named: Vec<(String, &Tensor)> = Vec::with_capacity(2 * self.names.len());
        for (k, name) in self.names.iter().enumerate() {
            named.push((format!("exp_avg.{name}"), &self.exp_avg[k]));
            named.push((format!("exp_avg_sq.{name}"), &self.exp_avg_sq[k]));
        }
        Tensor::write_safetensors(&named, path)?;
        Ok(())
    }

    /// Restores moment buffers saved by [`AdamW::save_state`] and the step counter `step`.
    pub fn load_state(&mut self, path: &Path, step: u64) -> Result<(), OptimError> {
        let mut saved: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(path)?.into_iter().collect();
        let state_err = |message: String| OptimError::State { path: path.to_path_buf(), message };
        for (k, name) in self.names.iter().enumerate() {
            for (prefix, buf) in [("exp_avg", &mut self.exp_avg[k]), ("exp_avg_sq", &mut self.exp_avg_sq[k])] {
                let key = format!("{prefix}.{name}");
                let t = saved.remove(&key).ok_or_else(|| state_err(format!("no tensor {key}")))?;
                if t.size() != buf.size() {
                    return Err(state_err(format!("{key} has shape {:?}, expected {:?}", t.size(), buf.size())));
                }
                tch::no_grad(|| buf.f_copy_(&t))?;
            }
        }
        if let Some(extra) = saved.keys().next() {
            return Err(state_err(format!("unexpected tensor {extra} (different model?)")));
        }
        self.step = step;
        Ok(())
    }
}
