//! The training loop: absorb FRet changes, take optimizer steps, checkpoint, evaluate, retain.
//!
//! Restart contract: a trainer started on an output directory that holds a checkpoint continues from
//! `newest`, the last checkpoint written, promoted or not (`latest` for an output directory written before
//! `newest` existed): it loads the model and optimizer moments from it and continues at its step. Batches
//! depend only on the replay buffer's contents and the step number, so replaying the same FRet data (a
//! file, or a compacted topic read from the start) repeats the steps an uninterrupted run would have
//! taken; only the steps after the last checkpoint are redone. The promotion state (which model `latest`
//! stands for, and what it measured) is read back from `checkpoints.jsonl` ([`super::promotion`]), so a
//! restarted trainer goes on comparing checkpoints with the same promoted model.
use super::buffer::{sample_batch, ReplayBuffer, SamplerConfig};
use super::checkpoint::{
    checkpoint_name, find_newest, link_target, point_latest, read_state, write_checkpoint, TrainerState, LATEST,
    NEWEST, OPTIMIZER_FILE,
};
use super::data::{read_pairs_jsonl, ExampleFilter, QueryFormat, TrainExample};
use super::gauges::TrainGauges;
use super::gradcache::{backward, BackwardConfig};
use super::manifest::{append_manifest, apply_retention, read_manifest, write_plot, CheckpointEvaluator};
use super::model_card;
use super::optim::{AdamW, OptimConfig};
use super::promotion::{self, Decision, Promoted, PromotionConfig};
use super::source::ChangeSource;
use super::{GeckoLoss, TrainError};
use crate::device::Precision;
use crate::embed::{EncoderOptions, SentenceEncoder};
use crate::records::{mean_metric, Change, CheckpointEvent, Metrics};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Everything a training run is configured with (the CLI fills it; the pipeline may build it directly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// Base model: a directory or a short name (`all-MiniLM-L6-v2`).
    pub model: String,
    /// Output directory: checkpoints, `latest`, `newest`, `checkpoints.jsonl`, the plot.
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
    /// Continue from `out_dir/newest` (or, for older output directories, `latest`) when it exists.
    pub resume: bool,
    /// When `latest` moves: the promotion gate ([`super::promotion`]).
    #[serde(default)]
    pub promotion: PromotionConfig,
    /// How FRet queries are given to the encoder.
    #[serde(default)]
    pub query_format: QueryFormat,
    /// Which FRet examples are trained on.
    #[serde(default)]
    pub examples: ExampleFilter,
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
    /// The promoted model while the gate is active; read back from the manifest when first needed.
    promoted: Option<Promoted>,
    /// Where step and checkpoint numbers are shown (the `/metrics` endpoint), if anywhere.
    gauges: Option<Arc<TrainGauges>>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer").field("step", &self.step).field("buffer", &self.buffer.len()).finish()
    }
}

impl Trainer {
    /// Loads the base model, or the newest checkpoint of `out_dir` with its optimizer state when
    /// `config.resume` is set and one exists (the restart contract in the module docs). The parameters are
    /// f32 whatever `options.precision` says;
    /// `config.backward.bf16` chooses mixed precision for the products.
    pub fn new(config: TrainerConfig, options: EncoderOptions) -> Result<Self, TrainError> {
        let (precision, autocast) =
            if config.backward.bf16 { (Precision::Bf16, true) } else { (Precision::F32, false) };
        let options = EncoderOptions { precision, autocast, ..options };
        config.loss.dims_and_weights(usize::MAX)?;
        config.promotion.validate()?;
        if config.sampler.batch_size == 0 {
            return Err(TrainError::Config { field: "batch_size", message: "must be at least 1".into() });
        }
        let resumed = if config.resume { find_newest(&config.out_dir)? } else { None };
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
            buffer: ReplayBuffer::with_format(config.query_format).with_filter(config.examples),
            pairs,
            step,
            examples_seen,
            base_model,
            source: String::new(),
            losses: (0.0, 0),
            last_checkpoint: (step, Instant::now()),
            evaluator: None,
            listeners: Vec::new(),
            gauges: None,
            stop: None,
            promoted: None,
            config,
        })
    }

    /// Evaluates every checkpoint (and the base model, at step 0) with `evaluator`; this also arms the
    /// promotion gate when `config.promotion.enabled`.
    pub fn set_evaluator(&mut self, evaluator: Box<dyn CheckpointEvaluator>) {
        self.evaluator = Some(evaluator);
    }

    /// Shows step, loss, throughput and each recorded checkpoint's metrics in `gauges`.
    pub fn report_to(&mut self, gauges: Arc<TrainGauges>) {
        self.gauges = Some(gauges);
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
        if let Some(gauges) = &self.gauges {
            gauges.stepped(next, self.examples_seen, loss, self.buffer.len());
        }
        Ok(StepReport { step: next, loss, grad_norm, lr, batch_size: batch.len() })
    }

    fn now() -> f64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
    }

    fn evaluate(&mut self, dir: &Path) -> Result<BTreeMap<String, Metrics>, TrainError> {
        match self.evaluator.as_mut() {
            Some(ev) => ev.evaluate(dir, self.step),
            None => Ok(Default::default()),
        }
    }

    /// The promotion gate decides: on, with an evaluator to measure checkpoints.
    fn gate_active(&self) -> bool {
        self.config.promotion.enabled && self.evaluator.is_some()
    }

    /// Records `event` in the manifest, then moves `latest` to it when it is a promoted checkpoint (in this
    /// order: a crash between the two leaves the manifest ahead, and the next start finishes the move),
    /// then tells listeners and redraws the plot.
    fn publish(&mut self, event: &CheckpointEvent) -> Result<(), TrainError> {
        append_manifest(&self.config.out_dir, event)?;
        if event.promoted && !event.baseline {
            point_latest(&self.config.out_dir, &checkpoint_name(event.step))?;
        }
        for listener in &mut self.listeners {
            listener(event)?;
        }
        if let Some(gauges) = &self.gauges {
            gauges.checkpointed(event);
        }
        write_plot(&self.config.out_dir, &read_manifest(&self.config.out_dir)?)
    }

    /// Evaluates the untrained base model once (step 0) so the manifest and plot start from it, and records
    /// it as the baseline entry: the first promoted model, which checkpoints must beat when the gate is on.
    /// Does nothing without an evaluator, after a restart, or when the manifest already has entries.
    pub fn evaluate_base(&mut self) -> Result<Option<CheckpointEvent>, TrainError> {
        if self.evaluator.is_none() || self.step > 0 || !read_manifest(&self.config.out_dir)?.is_empty() {
            return Ok(None);
        }
        std::fs::create_dir_all(&self.config.out_dir).map_err(|e| TrainError::checkpoint(&self.config.out_dir, e))?;
        let base = self.encoder.model_dir().to_path_buf();
        let metrics = self.evaluate(&base)?;
        let gate = self.gate_active();
        if gate {
            self.require_metric(&metrics)?;
        }
        let promotion = if gate { "baseline: the base model, the first promoted model" } else { "baseline" };
        let event = CheckpointEvent {
            step: 0,
            examples_seen: 0,
            path: base,
            metrics,
            mean_loss: None,
            created: Self::now(),
            promoted: true,
            promotion: promotion.to_string(),
            baseline: true,
        };
        self.publish(&event)?;
        if gate {
            self.promoted = Some(Promoted::from_event(&event));
        }
        Ok(Some(event))
    }

    /// Writes a checkpoint now (moving `newest`), evaluates it, puts it through the promotion gate (moving
    /// `latest` when it passes), records it in the manifest, tells listeners, applies retention and redraws
    /// the plot.
    pub fn checkpoint(&mut self) -> Result<CheckpointEvent, TrainError> {
        let mean_loss = (self.losses.1 > 0).then(|| self.losses.0 / self.losses.1 as f64);
        let mut data = serde_json::json!({
            "source": self.source,
            "pair_datasets": self.config.pair_datasets,
            "pair_examples": self.pairs.len(),
        });
        data.as_object_mut().expect("a JSON object").extend(self.buffer.describe());
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
            data,
            query_format: self.config.query_format,
            examples: self.config.examples,
        };
        let path = write_checkpoint(&self.config.out_dir, &self.encoder, &self.optimizer, &state)?;
        self.record_checkpoint(path, &state)
    }

    /// What follows a checkpoint's write: evaluation, the promotion gate, the model card, the manifest,
    /// listeners, retention, the plot.
    fn record_checkpoint(&mut self, path: PathBuf, state: &TrainerState) -> Result<CheckpointEvent, TrainError> {
        let mean_loss = state.mean_loss;
        let metrics = self.evaluate(&path)?;
        let Decision { promoted, reason } = self.decide(&metrics)?;
        let event = CheckpointEvent {
            step: self.step,
            examples_seen: self.examples_seen,
            path,
            metrics,
            mean_loss,
            created: state.created,
            promoted,
            promotion: reason,
            baseline: false,
        };
        self.write_model_card(state, &event)?;
        self.publish(&event)?;
        if promoted && self.gate_active() {
            self.promoted = Some(Promoted::from_event(&event));
        }
        let reason = &event.promotion;
        if promoted {
            tracing::info!(step = self.step, reason, "Promoted the checkpoint: latest points at it.");
        } else {
            tracing::info!(step = self.step, reason, "Checkpoint not promoted: latest stays.");
        }
        let events = read_manifest(&self.config.out_dir)?;
        apply_retention(&self.config.out_dir, &events, self.config.keep_last, &self.config.best_metric)?;
        self.losses = (0.0, 0);
        self.last_checkpoint = (self.step, Instant::now());
        tracing::info!(step = self.step, mean_loss, metrics = ?event.metrics, "Checkpoint evaluated.");
        Ok(event)
    }

    /// Writes the checkpoint's model card (`README.md`), with the base model's evaluation from the manifest.
    fn write_model_card(&self, state: &TrainerState, event: &CheckpointEvent) -> Result<(), TrainError> {
        let manifest = read_manifest(&self.config.out_dir)?;
        let base = manifest.iter().rev().find(|e| e.baseline);
        let card = model_card::render(&self.config.model, state, event, base);
        let path = event.path.join(model_card::MODEL_CARD);
        let tmp = event.path.join(".README.md.tmp");
        std::fs::write(&tmp, card).map_err(|e| TrainError::checkpoint(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| TrainError::checkpoint(&path, e))
    }

    /// Whether a checkpoint measured as `metrics` is promoted (see [`super::promotion`]).
    fn decide(&mut self, metrics: &BTreeMap<String, Metrics>) -> Result<Decision, TrainError> {
        let config = self.config.promotion.clone();
        if !self.gate_active() {
            return Ok(promotion::decide(&config, self.evaluator.is_some(), None, None));
        }
        let reference = self.reference(metrics)?;
        let value = reference.mean_metric(&config.metric);
        let label = reference.label();
        let candidate = mean_metric(metrics, &config.metric);
        Ok(promotion::decide(&config, true, candidate, value.map(|v| (v, label.as_str()))))
    }

    /// The promoted model, measured on the same datasets as `metrics`: read back from the manifest when
    /// first needed, and evaluated again when it was measured on other datasets (the evaluation datasets
    /// changed between runs) or not at all (it was promoted without an evaluation).
    fn reference(&mut self, metrics: &BTreeMap<String, Metrics>) -> Result<Promoted, TrainError> {
        if self.promoted.is_none() {
            self.promoted = Some(self.recover_promoted()?);
        }
        let promoted = self.promoted.as_mut().expect("the promoted model was just set. This is a bug.");
        if !metrics.is_empty() && !promoted.metrics.keys().eq(metrics.keys()) {
            if let Some(evaluator) = self.evaluator.as_mut() {
                tracing::info!(
                    step = promoted.step, path = %promoted.path.display(),
                    "Evaluating the promoted model on this run's datasets, to compare checkpoints with it."
                );
                promoted.metrics = evaluator.evaluate(&promoted.path, promoted.step)?;
            }
        }
        let promoted = promoted.clone();
        self.require_metric(&promoted.metrics)?;
        Ok(promoted)
    }

    /// The promoted model recorded in the manifest (see [`promotion::recorded_promoted`]); without one, the
    /// checkpoint `latest` points at, else the base model, both to be measured. When the manifest records a
    /// promotion that `latest` does not show (a crash between the two), `latest` is moved now.
    fn recover_promoted(&self) -> Result<Promoted, TrainError> {
        let out = &self.config.out_dir;
        let latest = link_target(out, LATEST);
        if let Some(mut p) = promotion::recorded_promoted(&read_manifest(out)?, latest.as_deref()) {
            if !p.baseline {
                // The manifest's path is as the output directory was named then (relative or not).
                let name = checkpoint_name(p.step);
                p.path = out.join(&name);
                let shown = latest.as_deref().and_then(Path::file_name) == Some(name.as_ref());
                if p.path.is_dir() && !shown {
                    tracing::warn!(step = p.step, "The manifest records a promotion latest does not show: moving it.");
                    point_latest(out, &name)?;
                }
            }
            tracing::info!(step = p.step, baseline = p.baseline, "Promoted model read back from the manifest.");
            return Ok(p);
        }
        let metrics = BTreeMap::new();
        Ok(match latest {
            Some(dir) => Promoted { step: read_state(&dir)?.step, path: dir, baseline: false, metrics },
            None => Promoted { step: 0, path: PathBuf::from(&self.base_model), baseline: true, metrics },
        })
    }

    /// A promotion metric the evaluation does not produce is a configuration error (a misspelt name would
    /// otherwise keep every checkpoint from being promoted).
    fn require_metric(&self, metrics: &BTreeMap<String, Metrics>) -> Result<(), TrainError> {
        let metric = &self.config.promotion.metric;
        if metrics.is_empty() || mean_metric(metrics, metric).is_some() {
            return Ok(());
        }
        let known: std::collections::BTreeSet<&str> =
            metrics.values().flat_map(|m| m.keys().map(String::as_str)).collect();
        let known = known.into_iter().collect::<Vec<_>>().join(", ");
        let message = format!("'{metric}' is not measured (measured: {known})");
        Err(TrainError::Config { field: "promote_metric", message })
    }

    /// One line on where `latest` stands (see [`promotion::report`]): the promoted checkpoint and why, or
    /// that no checkpoint beat the base model and `latest` was not written.
    pub fn promotion_report(&self) -> Result<String, TrainError> {
        let out = &self.config.out_dir;
        let name = |link| link_target(out, link).and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let (latest, newest) = (name(LATEST), name(NEWEST));
        let events = read_manifest(out)?;
        let evaluated = self.evaluator.is_some();
        Ok(promotion::report(&self.config.promotion, evaluated, &events, latest.as_deref(), newest.as_deref()))
    }

    fn checkpoint_due(&self) -> bool {
        let by_steps = self.config.checkpoint_every_steps.is_some_and(|k| k > 0 && self.step.is_multiple_of(k));
        let by_time = self
            .config
            .checkpoint_every_minutes
            .is_some_and(|m| self.last_checkpoint.1.elapsed() >= Duration::from_secs_f64(m * 60.0));
        by_steps || by_time
    }

    /// A trainer killed between writing a checkpoint (moving `newest`) and recording it left a checkpoint
    /// the manifest does not list: the resumed run evaluates, gates and records it before training on, so
    /// every checkpoint is listed once and `latest` can still move to it.
    fn record_interrupted_checkpoint(&mut self) -> Result<(), TrainError> {
        // Only the checkpoint this trainer resumed from, at its step (not a trainer stepped by hand).
        let Some(dir) = link_target(&self.config.out_dir, NEWEST) else { return Ok(()) };
        let state = read_state(&dir)?;
        if state.step != self.step
            || read_manifest(&self.config.out_dir)?.iter().any(|e| e.step == self.step && !e.baseline)
        {
            return Ok(());
        }
        tracing::warn!(step = self.step, checkpoint = %dir.display(), "Recording a checkpoint an interrupted run wrote but did not record.");
        self.record_checkpoint(dir, &state).map(|_| ())
    }

    /// Trains from `source` until `max_steps` (or, without it, one pass over a finite source) or until the
    /// [`Self::stop_when`] flag is set, then writes a final checkpoint if the last step has none.
    pub fn run(&mut self, source: &mut dyn ChangeSource) -> Result<RunSummary, TrainError> {
        self.source = source.describe();
        let start_step = self.step;
        self.evaluate_base()?;
        self.record_interrupted_checkpoint()?;
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
                return Err(match self.buffer.filtered() {
                    0 => TrainError::EmptyBatch,
                    n => TrainError::AllFiltered(n),
                });
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
                    step = report.step,
                    loss = report.loss,
                    grad_norm = report.grad_norm,
                    lr = report.lr,
                    batch = report.batch_size,
                    buffer = self.buffer.len(),
                    "Training."
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
        let report = self.promotion_report()?;
        if self.gate_active() && link_target(&self.config.out_dir, LATEST).is_none() {
            tracing::warn!("{report}");
        } else {
            tracing::info!("{report}");
        }
        let examples_per_second = (timed > Duration::ZERO).then(|| timed_examples as f64 / timed.as_secs_f64());
        Ok(RunSummary { steps: self.step - start_step, examples, examples_per_second })
    }
}
