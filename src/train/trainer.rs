//! The training loop: absorb FRet changes, take optimizer steps, checkpoint, evaluate, retain.
//!
//! Restart contract: a trainer started on an output directory that holds a `latest` checkpoint loads the
//! model and optimizer moments from it and continues at its step. Batches depend only on the replay
//! buffer's contents and the step number, so replaying the same FRet data (a file, or a compacted topic
//! read from the start) repeats the steps an uninterrupted run would have taken; only the steps after
//! the last checkpoint are redone.
use super::buffer::{sample_batch, ReplayBuffer, SamplerConfig};
use super::checkpoint::{find_latest, write_checkpoint, TrainerState, OPTIMIZER_FILE};
use super::data::{read_pairs_jsonl, Change, TrainExample};
use super::gradcache::{backward, BackwardConfig};
use super::manifest::{append_manifest, apply_retention, read_manifest, write_plot, CheckpointEvaluator, CheckpointEvent};
use super::optim::{AdamW, OptimConfig};
use super::source::ChangeSource;
use super::{GeckoLoss, TrainError};
use crate::embed::{EncoderOptions, Precision, SentenceEncoder};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Everything a training run is configured with (the CLI fills it; the pipeline may build it directly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// Base model: a directory or a short name (`all-MiniLM-L6-v2`).
    pub model: String,
    /// Output directory: checkpoints, `latest`, `checkpoints.jsonl`, the plot.
    pub out_dir: PathBuf,
    /// Stop after this many optimizer steps in all (restarts included); `None`: one pass over a finite
    /// source's examples, or forever on a stream.
    pub max_steps: Option<u64>,
    /// The loss.
    pub loss: GeckoLoss,
    /// Optimizer and schedule.
    pub optimizer: OptimConfig,
    /// Batch composition.
    pub sampler: SamplerConfig,
    /// Backward pass.
    pub backward: BackwardConfig,
    /// Checkpoint every this many steps.
    pub checkpoint_every_steps: Option<u64>,
    /// Checkpoint when this many minutes have passed since the last one.
    pub checkpoint_every_minutes: Option<f64>,
    /// Checkpoints kept besides the best.
    pub keep_last: usize,
    /// Metric that picks the best checkpoint (mean over evaluation datasets).
    pub best_metric: String,
    /// Examples the buffer must hold before the first step (waits on a stream; a finished source trains
    /// on what it has).
    pub min_examples: usize,
    /// Extra `{query, positive}` JSONL datasets mixed in at `sampler.pair_mix_ratio`.
    pub pair_datasets: Vec<PathBuf>,
    /// Continue from `out_dir/latest` when it exists.
    pub resume: bool,
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The step just taken (1-based).
    pub step: u64,
    /// Loss of the batch.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Queries in the batch.
    pub batch_size: usize,
}

/// What a call to [`Trainer::run`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunSummary {
    /// Optimizer steps taken in this run.
    pub steps: u64,
    /// Training examples consumed in this run.
    pub examples: u64,
    /// Training throughput over this run's steps after the first (which pays one-time allocation costs),
    /// excluding checkpoints and evaluation; `None` with fewer than two steps.
    pub examples_per_second: Option<f64>,
}

/// Told of each checkpoint after it is written, evaluated and recorded in the manifest (e.g.
/// [`super::kafka::CheckpointPublisher`]); an error stops training.
pub type CheckpointListener = Box<dyn FnMut(&CheckpointEvent) -> Result<(), TrainError>>;

/// A trainer: encoder, optimizer, replay buffer and bookkeeping.
pub struct Trainer {
    config: TrainerConfig,
    encoder: SentenceEncoder,
    optimizer: AdamW,
    buffer: ReplayBuffer,
    pairs: Vec<TrainExample>,
    step: u64,
    examples_seen: u64,
    base_model: String,
    source: String,
    losses: (f64, u64),
    last_checkpoint: (u64, Instant),
    evaluator: Option<Box<dyn CheckpointEvaluator>>,
    listeners: Vec<CheckpointListener>,
    stop: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer").field("step", &self.step).field("buffer", &self.buffer.len()).finish()
    }
}

impl Trainer {
    /// Loads the base model, or the latest checkpoint of `out_dir` with its optimizer state when
    /// `config.resume` is set and one exists. The parameters are f32 whatever `options.precision` says;
    /// `config.backward.bf16` chooses mixed precision for the products.
    pub fn new(config: TrainerConfig, options: EncoderOptions) -> Result<Self, TrainError> {
        let precision = if config.backward.bf16 { Precision::MixedBf16 } else { Precision::F32 };
        let options = EncoderOptions { precision, ..options };
        config.loss.dims_and_weights(usize::MAX)?;
        if config.sampler.batch_size == 0 {
            return Err(TrainError::Config { field: "batch_size", message: "must be at least 1".into() });
        }
        let resumed = if config.resume { find_latest(&config.out_dir)? } else { None };
        let (encoder, optimizer, step, examples_seen, base_model) = match resumed {
            Some((dir, state)) => {
                let encoder = SentenceEncoder::load(&dir, options)?;
                let mut optimizer = AdamW::new(encoder.var_store(), config.optimizer.clone())?;
                optimizer.load_state(&dir.join(OPTIMIZER_FILE), state.step)?;
                tracing::info!(step = state.step, checkpoint = %dir.display(), "Resuming training.");
                (encoder, optimizer, state.step, state.examples_seen, state.base_model)
            }
            None => {
                let encoder = SentenceEncoder::from_name(&config.model, options)?;
                let optimizer = AdamW::new(encoder.var_store(), config.optimizer.clone())?;
                let base = encoder.model_dir().display().to_string();
                (encoder, optimizer, 0, 0, base)
            }
        };
        config.loss.dims_and_weights(encoder.config().output_dim())?;
        let mut pairs = Vec::new();
        for path in &config.pair_datasets {
            pairs.extend(read_pairs_jsonl(path)?);
        }
        Ok(Self {
            encoder,
            optimizer,
            buffer: ReplayBuffer::new(),
            pairs,
            step,
            examples_seen,
            base_model,
            source: String::new(),
            losses: (0.0, 0),
            last_checkpoint: (step, Instant::now()),
            evaluator: None,
            listeners: Vec::new(),
            stop: None,
            config,
        })
    }

    /// Evaluates every checkpoint (and the base model, at step 0) with `evaluator`.
    pub fn set_evaluator(&mut self, evaluator: Box<dyn CheckpointEvaluator>) {
        self.evaluator = Some(evaluator);
    }

    /// Calls `listener` with each checkpoint event (e.g. to publish it on Kafka).
    pub fn on_checkpoint(&mut self, listener: CheckpointListener) {
        self.listeners.push(listener);
    }

    /// Makes [`Self::run`] stop at the next step boundary once `flag` is set (e.g. by Ctrl-C), writing its
    /// final checkpoint as when it ends normally.
    pub fn stop_when(&mut self, flag: Arc<AtomicBool>) {
        self.stop = Some(flag);
    }

    /// Optimizer steps taken (restarts included).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The encoder being trained.
    pub fn encoder(&self) -> &SentenceEncoder {
        &self.encoder
    }

    /// The replay buffer.
    pub fn buffer(&self) -> &ReplayBuffer {
        &self.buffer
    }

    /// Applies FRet changes to the replay buffer.
    pub fn apply(&mut self, changes: &[Change]) {
        for c in changes {
            self.buffer.apply(c);
        }
    }

    /// One optimizer step on a batch sampled for the next step number.
    pub fn train_step(&mut self) -> Result<StepReport, TrainError> {
        let next = self.step + 1;
        let batch = sample_batch(&self.buffer, &self.pairs, &self.config.sampler, next);
        self.optimizer.zero_grad();
        let seed = self.config.sampler.seed.wrapping_add(next) as i64;
        let loss = backward(&self.encoder, &self.config.loss, &batch, &self.config.backward, seed)?;
        let grad_norm = self.optimizer.clip_grad_norm();
        let lr = self.optimizer.step();
        self.step = next;
        self.examples_seen += batch.len() as u64;
        self.losses = (self.losses.0 + loss, self.losses.1 + 1);
        Ok(StepReport { step: next, loss, grad_norm, lr, batch_size: batch.len() })
    }

    fn now() -> f64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
    }

    fn evaluate(&mut self, dir: &Path) -> Result<std::collections::BTreeMap<String, super::manifest::Metrics>, TrainError> {
        match self.evaluator.as_mut() {
            Some(ev) => ev.evaluate(dir, self.step),
            None => Ok(Default::default()),
        }
    }

    fn publish(&mut self, event: &CheckpointEvent) -> Result<(), TrainError> {
        append_manifest(&self.config.out_dir, event)?;
        for listener in &mut self.listeners {
            listener(event)?;
        }
        write_plot(&self.config.out_dir, &read_manifest(&self.config.out_dir)?)
    }

    /// Evaluates the untrained base model once (step 0) so the manifest and plot start from it; does
    /// nothing without an evaluator, after a restart, or when the manifest already has entries.
    pub fn evaluate_base(&mut self) -> Result<Option<CheckpointEvent>, TrainError> {
        if self.evaluator.is_none() || self.step > 0 || !read_manifest(&self.config.out_dir)?.is_empty() {
            return Ok(None);
        }
        std::fs::create_dir_all(&self.config.out_dir).map_err(|e| TrainError::checkpoint(&self.config.out_dir, e))?;
        let base = self.encoder.model_dir().to_path_buf();
        let metrics = self.evaluate(&base)?;
        let event = CheckpointEvent {
            step: 0,
            examples_seen: 0,
            path: base,
            metrics,
            mean_loss: None,
            created: Self::now(),
        };
        self.publish(&event)?;
        Ok(Some(event))
    }

    /// Writes a checkpoint now, evaluates it, records it in the manifest, tells listeners, applies
    /// retention and redraws the plot.
    pub fn checkpoint(&mut self) -> Result<CheckpointEvent, TrainError> {
        let mean_loss = (self.losses.1 > 0).then(|| self.losses.0 / self.losses.1 as f64);
        let (upserts, retractions) = self.buffer.change_counts();
        let state = TrainerState {
            step: self.step,
            examples_seen: self.examples_seen,
            created: Self::now(),
            base_model: self.base_model.clone(),
            mean_loss,
            loss: self.config.loss.clone(),
            optimizer: self.config.optimizer.clone(),
            sampler: self.config.sampler.clone(),
            backward: self.config.backward,
            data: serde_json::json!({
                "source": self.source,
                "buffer_examples": self.buffer.len(),
                "upserts": upserts,
                "retractions": retractions,
                "pair_datasets": self.config.pair_datasets,
                "pair_examples": self.pairs.len(),
            }),
        };
        let path = write_checkpoint(&self.config.out_dir, &self.encoder, &self.optimizer, &state)?;
        let metrics = self.evaluate(&path)?;
        let event = CheckpointEvent {
            step: self.step,
            examples_seen: self.examples_seen,
            path,
            metrics,
            mean_loss,
            created: state.created,
        };
        self.publish(&event)?;
        let events = read_manifest(&self.config.out_dir)?;
        apply_retention(&self.config.out_dir, &events, self.config.keep_last, &self.config.best_metric)?;
        self.losses = (0.0, 0);
        self.last_checkpoint = (self.step, Instant::now());
        tracing::info!(step = self.step, mean_loss, metrics = ?event.metrics, "Checkpoint evaluated.");
        Ok(event)
    }

    fn checkpoint_due(&self) -> bool {
        let by_steps = self.config.checkpoint_every_steps.is_some_and(|k| k > 0 && self.step.is_multiple_of(k));
        let by_time = self
            .config
            .checkpoint_every_minutes
            .is_some_and(|m| self.last_checkpoint.1.elapsed() >= Duration::from_secs_f64(m * 60.0));
        by_steps || by_time
    }

    /// Trains from `source` until `max_steps` (or, without it, one pass over a finite source) or until the
    /// [`Self::stop_when`] flag is set, then writes a final checkpoint if the last step has none.
    pub fn run(&mut self, source: &mut dyn ChangeSource) -> Result<RunSummary, TrainError> {
        self.source = source.describe();
        let start_step = self.step;
        self.evaluate_base()?;
        let mut limit = self.config.max_steps;
        let mut last_log = Instant::now();
        let (mut examples, mut timed_examples, mut timed) = (0u64, 0u64, Duration::ZERO);
        loop {
            if limit.is_some_and(|l| self.step >= l) {
                break;
            }
            if self.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                tracing::warn!(step = self.step, "Stopping training: asked to stop.");
                break;
            }
            let available = self.buffer.len() + self.pairs.len();
            let wait = if available >= self.config.min_examples || source.is_finished() { 0 } else { 500 };
            let changes = source.poll(Duration::from_millis(wait))?;
            self.apply(&changes);
            let available = self.buffer.len() + self.pairs.len();
            if available < self.config.min_examples.max(1) && !source.is_finished() {
                continue;
            }
            if available == 0 {
                return Err(TrainError::EmptyBatch);
            }
            if limit.is_none() && source.is_finished() {
                let pass = available.div_ceil(self.config.sampler.batch_size) as u64;
                limit = Some(self.step.max(start_step + pass));
                tracing::info!(steps = pass, examples = available, "Finite source: training one pass.");
                continue;
            }
            let started = Instant::now();
            let report = self.train_step()?;
            if self.step > start_step + 1 {
                timed += started.elapsed();
                timed_examples += report.batch_size as u64;
            }
            examples += report.batch_size as u64;
            if last_log.elapsed() >= Duration::from_secs(10) || Some(report.step) == limit {
                tracing::info!(
                    step = report.step, loss = report.loss, grad_norm = report.grad_norm, lr = report.lr,
                    batch = report.batch_size, buffer = self.buffer.len(), "Training."
                );
                last_log = Instant::now();
            }
            if self.checkpoint_due() {
                self.checkpoint()?;
            }
        }
        if self.last_checkpoint.0 != self.step {
            self.checkpoint()?;
        }
        let examples_per_second = (timed > Duration::ZERO).then(|| timed_examples as f64 / timed.as_secs_f64());
        Ok(RunSummary { steps: self.step - start_step, examples, examples_per_second })
    }
}
