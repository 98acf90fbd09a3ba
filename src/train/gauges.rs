//! What a running trainer shows an operator ([`TrainGauges`]): step, loss, throughput and the newest
//! checkpoint's metrics, updated by [`super::Trainer`] after each step and checkpoint and read by the
//! `/metrics` endpoint (`fretflow train --metrics`, or `fretflow run --metrics` with `[train]`).
use crate::records::CheckpointEvent;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

/// A trainer's live numbers, shared with whoever reads them.
#[derive(Debug, Default)]
pub struct TrainGauges {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    snapshot: TrainSnapshot,
    /// When this trainer's first step of the run ended, and the examples seen then.
    first_step: Option<(Instant, u64)>,
}

/// A copy of the gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainSnapshot {
    /// Optimizer steps taken (including those of the run resumed from).
    pub step: u64,
    /// Examples trained on (including those of the run resumed from).
    pub examples_seen: u64,
    /// Loss of the last step's batch.
    pub loss: f64,
    /// Examples per second since this run's first step (0 until its second).
    pub examples_per_second: f64,
    /// Examples in the replay buffer.
    pub buffer: usize,
    /// Checkpoints recorded by this run (the base model's evaluation not counted).
    pub checkpoints: u64,
    /// Step of the newest recorded checkpoint (0: the base model's evaluation).
    pub checkpoint_step: u64,
    /// Step of the checkpoint `latest` points at, when a promoted one was recorded by this run.
    pub promoted_step: Option<u64>,
    /// The newest checkpoint's metrics: dataset -> metric (`ndcg@10`, `ndcg@10/256`, ...) -> value.
    pub checkpoint_metrics: BTreeMap<String, BTreeMap<String, f64>>,
}

impl TrainGauges {
    /// A step ended.
    pub fn stepped(&self, step: u64, examples_seen: u64, loss: f64, buffer: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (since, examples_then) = *s.first_step.get_or_insert((now, examples_seen));
        let elapsed = now.duration_since(since).as_secs_f64();
        s.snapshot.examples_per_second =
            if elapsed > 0.0 { (examples_seen - examples_then) as f64 / elapsed } else { 0.0 };
        s.snapshot.step = step;
        s.snapshot.examples_seen = examples_seen;
        s.snapshot.loss = loss;
        s.snapshot.buffer = buffer;
    }

    /// A checkpoint (or the base model's evaluation) was recorded.
    pub fn checkpointed(&self, event: &CheckpointEvent) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !event.baseline {
            s.snapshot.checkpoints += 1;
            if event.promoted {
                s.snapshot.promoted_step = Some(event.step);
            }
        }
        s.snapshot.checkpoint_step = event.step;
        s.snapshot.checkpoint_metrics = event.metrics.clone();
    }

    /// The gauges now.
    pub fn snapshot(&self) -> TrainSnapshot {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).snapshot.clone()
    }
}
