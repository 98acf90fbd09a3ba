//! The driver: runs a pipeline config on timely workers (threads and processes), with the file source
//! on its own thread, the model calls on a tokio runtime, and the sinks on worker 0.
//!
//! Worker 0 follows the usual driver shape: feed the records of a read chunk, `advance_to` the next
//! epoch, and step; it keeps at most [`MAX_OPEN_EPOCHS`] epochs unfinished, so a fast source cannot run
//! far ahead of the models. The other workers only step. When the source is exhausted (or Ctrl-C is
//! pressed while following a file), the input closes and the workers drain the dataflow.
use super::config::PipelineConfig;
use super::resources::{self, PipelineParts, ResourceError};
use crate::connectors::file::source::PassageReader;
use crate::dataflow::graph::fret_dataflow;
use crate::dataflow::labeler::Labeler;
use crate::dataflow::progress::{SharedMetrics, Snapshot};
use crate::dataflow::sink::{ChangeSink, ErrorSlot, SinkChanges, SinkDeadLetters};
use crate::dataflow::Time;
use crate::records::SourceRecord;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use timely::dataflow::operators::Input;

/// Most epochs worker 0 lets run ahead of the slowest stage.
pub const MAX_OPEN_EPOCHS: Time = 4;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A model, the cache, the source or a sink could not be set up.
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// Timely could not start (bad `-n/-p/-h` settings, unreachable peers).
    #[error("cannot start the timely workers: {0}")]
    Timely(String),
    /// The source failed part way.
    #[error("source failed: {0}")]
    Source(String),
    /// A sink failed.
    #[error("sink failed: {0}")]
    Sink(String),
    /// A worker panicked.
    #[error("a worker failed: {0}")]
    Worker(String),
}

/// What a progress display sees while the run goes on.
pub type ProgressHook = Box<dyn FnMut(&Snapshot) + Send>;

/// Messages from the reader thread to worker 0.
enum FromReader {
    Records(Vec<SourceRecord>),
    Failed(String),
}

/// Runs `config` on `timely_config`'s workers as process `process` of the cluster (0 when alone); calls
/// `progress` about four times a second and returns this process's final metrics. Process 0 reads the
/// source and writes the sinks (the config's, then `extra_sinks`, e.g. an in-process trainer's feed);
/// every process runs model calls for its workers.
pub fn run_pipeline(
    config: &PipelineConfig,
    timely_config: timely::Config,
    process: usize,
    extra_sinks: Vec<Box<dyn ChangeSink>>,
    mut progress: Option<ProgressHook>,
) -> Result<Snapshot, RunError> {
    let started = Instant::now();
    let PipelineParts { runtime: _runtime, stages, interrupted: stop } =
        resources::pipeline_parts(config, "closing the input and draining the pipeline.")?;
    let (labeler, metrics) = (Arc::clone(&stages.labeler), Arc::clone(&stages.metrics));
    let errors: ErrorSlot = Arc::new(Mutex::new(None));
    let source_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let done = Arc::new(AtomicBool::new(false));

    // Worker 0 of process 0 owns the reader and the sinks; they are built here so that setup errors
    // surface before any worker starts, and handed over through a slot.
    let owned = Arc::new(Mutex::new(if process == 0 {
        let mut change_sinks = resources::change_sinks(config)?;
        change_sinks.extend(extra_sinks);
        Some((resources::reader(config)?, change_sinks, resources::dead_letter_sink(config)?))
    } else {
        None
    }));
    let file_source = config.source.as_ref().ok_or(ResourceError::NotFile)?;
    let (epoch_records, poll) = (file_source.epoch_records, Duration::from_millis(file_source.poll_ms));

    let guards = {
        let (errors, source_error, stop) = (Arc::clone(&errors), Arc::clone(&source_error), Arc::clone(&stop));
        timely::execute(timely_config, move |worker| {
            let mine = if worker.index() == 0 { owned.lock().expect("poisoned. This is a bug.").take() } else { None };
            let (reader, change_sinks, dead_sink) = match mine {
                Some((r, c, d)) => (Some(r), c, Some(d)),
                None => (None, Vec::new(), None),
            };
            let (mut input, probe) = worker.dataflow::<Time, _, _>(|scope| {
                let (input, records) = scope.new_input::<Vec<SourceRecord>>();
                let out = fret_dataflow(records, &stages);
                let (probe, examples) = out.examples.probe();
                examples.sink_changes(change_sinks, Arc::clone(&errors), Arc::clone(&stages.metrics));
                out.dead_letters.sink_dead_letters(dead_sink, Arc::clone(&errors), Arc::clone(&stages.metrics));
                (input, probe)
            });
            let Some(reader) = reader else { return };
            let rx = spawn_reader(reader, epoch_records, poll, Arc::clone(&stop), std::thread::current());
            let mut epoch: Time = 0;
            loop {
                if errors.lock().expect("poisoned. This is a bug.").is_some() {
                    break;
                }
                match rx.try_recv() {
                    Ok(FromReader::Records(records)) => {
                        for record in records {
                            input.send(record);
                        }
                        epoch += 1;
                        input.advance_to(epoch);
                        let oldest_open = epoch.saturating_sub(MAX_OPEN_EPOCHS);
                        worker.step_or_park_while(Some(Duration::from_millis(100)), || probe.less_than(&oldest_open));
                    }
                    Ok(FromReader::Failed(e)) => {
                        *source_error.lock().expect("poisoned. This is a bug.") = Some(e);
                        break;
                    }
                    Err(mpsc::TryRecvError::Empty) => {
                        worker.step_or_park(Some(Duration::from_millis(100)));
                    }
                    Err(mpsc::TryRecvError::Disconnected) => break,
                }
            }
        })
        .map_err(RunError::Timely)?
    };

    // Progress while the workers run.
    let progress_thread = progress.take().map(|hook| spawn_progress(hook, &metrics, &labeler, &done, started));
    let joined = guards.join();
    done.store(true, Ordering::Relaxed);
    let stats = labeler.stats();
    let snapshot = metrics.snapshot(started, (stats.model_calls, stats.cache_hits));
    if let Some(mut hook) = progress_thread.and_then(|t| t.join().ok()) {
        hook(&snapshot);
    }
    for result in joined {
        result.map_err(RunError::Worker)?;
    }
    if let Some(e) = source_error.lock().expect("poisoned. This is a bug.").take() {
        return Err(RunError::Source(e));
    }
    if let Some(e) = errors.lock().expect("poisoned. This is a bug.").take() {
        return Err(RunError::Sink(e));
    }
    Ok(snapshot)
}

/// Reads the source on its own thread, in chunks of `epoch_records`, waking `worker` after each.
fn spawn_reader(
    mut reader: Box<dyn PassageReader>,
    epoch_records: usize,
    poll: Duration,
    stop: Arc<AtomicBool>,
    worker: std::thread::Thread,
) -> mpsc::Receiver<FromReader> {
    let (tx, rx) = mpsc::sync_channel(2);
    std::thread::Builder::new()
        .name("fretflow-source".into())
        .spawn(move || {
            tracing::info!(source = %reader.describe(), "Reading passages.");
            while !stop.load(Ordering::Relaxed) {
                match reader.poll(epoch_records) {
                    Ok(polled) => {
                        let finished = polled.finished;
                        if !polled.records.is_empty() {
                            if tx.send(FromReader::Records(polled.records)).is_err() {
                                return;
                            }
                            worker.unpark();
                        } else if !finished {
                            std::thread::sleep(poll);
                        }
                        if finished {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(FromReader::Failed(e.to_string()));
                        break;
                    }
                }
            }
            drop(tx);
            worker.unpark();
        })
        .expect("cannot spawn the source thread");
    rx
}

/// Calls `hook` with a fresh snapshot four times a second on its own thread until `done` is set; the thread
/// returns the hook for a last call with the final metrics.
pub fn spawn_progress(
    mut hook: ProgressHook,
    metrics: &SharedMetrics,
    labeler: &Arc<dyn Labeler>,
    done: &Arc<AtomicBool>,
    started: Instant,
) -> std::thread::JoinHandle<ProgressHook> {
    let (metrics, labeler, done) = (Arc::clone(metrics), Arc::clone(labeler), Arc::clone(done));
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            let stats = labeler.stats();
            hook(&metrics.snapshot(started, (stats.model_calls, stats.cache_hits)));
            std::thread::sleep(Duration::from_millis(250));
        }
        hook
    })
}
