//! The pipeline: a pipeline config ([`config`]) run by one entry point ([`run`]), which builds the
//! dataflow's stages ([`resources`]), runs them between connectors on one driver loop ([`driver`]) with
//! the input and sinks of its kind ([`file`] or [`kafka`]), and owns the in-process trainer and Ctrl-C. Only this layer knows both sides:
//! the dataflow ([`crate::dataflow`]) knows no storage and no config file, the connectors
//! ([`crate::connectors`]) know no dataflow. The CLI parses arguments, calls [`run`] and prints.
//!
//! One passage's path, file pipeline: [`file::run_pipeline`] reads it with a connector
//! (`connectors::file::source`) into a [`crate::records::PassageEvent`]; the dataflow
//! ([`crate::dataflow::graph::fret_dataflow`]) keeps the current passages, embeds them, generates and
//! embeds a query, retrieves, judges and fuses into a [`crate::records::Example`]; the change sink
//! operator consolidates each time into [`crate::records::Change`]s for the connectors' file sinks and, with
//! `[train]`, the trainer's channel. Kafka pipelines differ only at the two ends ([`kafka`]).
pub mod config;
pub mod driver;
pub mod file;
pub mod kafka;
pub mod metrics;
pub mod resources;

use crate::dataflow::progress::Snapshot;
use crate::train::gauges::TrainGauges;
use crate::train::options::{summary_text, TrainOptions};
use crate::train::source::{channel, ChannelSource};
use anyhow::Context;
use config::{Input, PipelineConfig};
use driver::ProgressHook;
use file::run_pipeline;
use kafka::run::{run_fret, FretRunOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Called once with the run's metrics when its input has ended.
pub type InputDoneHook = Box<dyn FnOnce(&Snapshot) + Send>;

/// How to run a pipeline config: where this process stands in the cluster, and what to tell whom.
pub struct RunOptions {
    /// Timely's workers and processes.
    pub timely: timely::Config,
    /// This process's index in the cluster (0 when alone). Process 0 reads a file source, writes the
    /// sinks and runs the in-process trainer.
    pub process: usize,
    /// Kafka pipelines: stop once the source topic has been quiet this long (`None`: follow until Ctrl-C).
    pub idle_exit: Option<Duration>,
    /// Called with the run's metrics about four times a second.
    pub progress: Option<ProgressHook>,
    /// Called once when the input has ended and, with `[train] after_input`, before training starts.
    pub on_input_done: Option<InputDoneHook>,
    /// Where the in-process trainer shows its step and checkpoint numbers (the `/metrics` endpoint).
    pub train_gauges: Option<Arc<TrainGauges>>,
}

/// What a run did.
#[derive(Debug)]
pub struct RunOutcome {
    /// The pipeline's final metrics.
    pub snapshot: Snapshot,
    /// The in-process trainer's summary, when the config has `[train]` (and this is process 0).
    pub trained: Option<String>,
}

/// Runs `config`: the file or Kafka driver, and with `[train]` (file pipelines) the trainer in this
/// process, on its own thread while examples stream in or, with `after_input`, once the input has ended.
/// The caller names the config file in the error.
pub fn run(config: &PipelineConfig, options: RunOptions) -> anyhow::Result<RunOutcome> {
    let RunOptions { timely, process, idle_exit, progress, on_input_done, train_gauges } = options;
    let mut config = config.clone();
    config.apply_env(|name| std::env::var(name).ok())?;
    let config = &config;
    // The in-process trainer runs where the sinks are: process 0.
    let train = match &config.train {
        Some(t) if process == 0 => Some((t.options.clone(), t.after_input)),
        _ => None,
    };
    let finished = |snapshot: Snapshot| {
        if let Some(f) = on_input_done {
            f(&snapshot);
        }
        snapshot
    };
    match (config.input(), train) {
        (Input::File(_), None) => {
            let snapshot = run_pipeline(config, timely, process, Vec::new(), progress)?;
            Ok(RunOutcome { snapshot: finished(snapshot), trained: None })
        }
        (Input::File(_), Some((train, after_input))) => {
            let (feed, source) = channel();
            let interrupted = watch_ctrl_c()?;
            if after_input {
                let snapshot = run_pipeline(config, timely, process, vec![Box::new(feed)], progress)?;
                let snapshot = finished(snapshot);
                let trained = train_in_process(train, interrupted, source, train_gauges)?;
                return Ok(RunOutcome { snapshot, trained: Some(trained) });
            }
            let stop = Arc::clone(&interrupted);
            let trainer = std::thread::Builder::new()
                .name("fretflow-train".into())
                .spawn(move || train_in_process(train, interrupted, source, train_gauges))
                .context("cannot start the trainer thread")?;
            let result = run_pipeline(config, timely, process, vec![Box::new(feed)], progress);
            if result.is_err() {
                // A failed pipeline: the trainer checkpoints at its next step and stops, rather than
                // finishing a pass.
                stop.store(true, Ordering::Relaxed);
            }
            let trained = trainer.join().map_err(|_| anyhow::anyhow!("the trainer thread panicked"))?;
            // A trainer that failed stops the pipeline too: its error is the one to report.
            let trained = trained?;
            let snapshot = finished(result?);
            Ok(RunOutcome { snapshot, trained: Some(trained) })
        }
        (Input::Kafka { connection, source, sink }, _) => {
            let options = FretRunOptions { idle_exit, progress };
            let snapshot = run_fret(config, connection, source, sink, timely, options)?;
            Ok(RunOutcome { snapshot: finished(snapshot), trained: None })
        }
    }
}

/// Trains on the pipeline's change stream until it ends (or Ctrl-C), returning the trainer's summary.
fn train_in_process(
    options: TrainOptions,
    interrupted: Arc<AtomicBool>,
    mut source: ChannelSource,
    gauges: Option<Arc<TrainGauges>>,
) -> anyhow::Result<String> {
    let mut trainer = options.trainer()?;
    trainer.stop_when(interrupted);
    if let Some(gauges) = gauges {
        trainer.report_to(gauges);
    }
    let summary = trainer.run(&mut source).context("in-process training failed")?;
    summary_text(&trainer, &summary, &options.out)
}

/// A flag set on Ctrl-C, for the in-process trainer: the pipeline's own handler drains the dataflow, and
/// once a handler is installed Ctrl-C no longer ends the process, so the trainer must stop by itself (at
/// its next step, with a checkpoint) rather than run on.
fn watch_ctrl_c() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal watcher")?;
    std::thread::Builder::new()
        .name("fretflow-ctrl-c".into())
        .spawn(move || {
            if runtime.block_on(tokio::signal::ctrl_c()).is_ok() {
                set.store(true, Ordering::Relaxed);
            }
        })
        .context("cannot start the signal watcher")?;
    Ok(flag)
}

/// Writes the run's metrics to `sinks.summary` when the config names it.
pub fn write_summary(config: &PipelineConfig, snapshot: &Snapshot) -> anyhow::Result<()> {
    if let Some(path) = &config.sinks.summary {
        let json = serde_json::to_string_pretty(snapshot).expect("summary serializes. This is a bug.");
        std::fs::write(path, json).with_context(|| format!("cannot write the summary {}", path.display()))?;
    }
    Ok(())
}
