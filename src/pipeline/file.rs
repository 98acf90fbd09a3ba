//! The file pipeline: a pipeline config run on timely workers (threads and processes) by the driver loop
//! ([`super::driver`]), with the file source on its own thread, the model calls on a tokio runtime, and the
//! sinks on worker 0.
//!
//! Worker 0 of process 0 reads the file (in chunks of `epoch_records`, one epoch each) and writes the
//! sinks; the other workers have no input of their own and take their share of the dataflow's work. When
//! the source is exhausted (or Ctrl-C is pressed while following a file), the input closes and the workers
//! drain the dataflow.
use super::config::PipelineConfig;
use super::driver::{drive, spawn_progress, LoopOptions, Polled, ProgressHook, WorkerInput};
use super::resources::{self, PipelineParts, ResourceError};
use crate::connectors::file::source::PassageReader;
use crate::dataflow::embedder::EmbedderVersion;
use crate::dataflow::graph::fret_dataflow;
use crate::dataflow::progress::Snapshot;
use crate::dataflow::sink::{ChangeSink, ErrorSlot, SinkChanges, SinkDeadLetters};
use crate::dataflow::{Diff, Time};
use crate::records::SourceRecord;
use differential_dataflow::VecCollection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

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
    let follow = stages.embedder.following().map(|_| stages.embedder.clone());
    let (epoch_records, poll) = (file_source.epoch_records, Duration::from_millis(file_source.poll_ms));

    let guards = {
        let (errors, stop) = (Arc::clone(&errors), Arc::clone(&stop));
        timely::execute(timely_config, move |worker| {
            let mine = if worker.index() == 0 { owned.lock().expect("poisoned. This is a bug.").take() } else { None };
            let (mut input, change_sinks, dead_sink) = match mine {
                Some((reader, c, d)) => {
                    let rx = spawn_reader(reader, epoch_records, poll, Arc::clone(&stop), std::thread::current());
                    (FileInput(Some(rx)), c, Some(d))
                }
                None => (FileInput(None), Vec::new(), None),
            };
            let build = |records: timely::dataflow::StreamVec<'_, Time, SourceRecord>,
                         versions: VecCollection<'_, Time, EmbedderVersion, Diff>| {
                let out = fret_dataflow(records, versions, &stages);
                let (probe, examples) = out.examples.probe();
                examples.sink_changes(change_sinks, Arc::clone(&errors), Arc::clone(&stages.metrics));
                out.dead_letters.sink_dead_letters(dead_sink, Arc::clone(&errors), Arc::clone(&stages.metrics));
                probe
            };
            let healthy = || match errors.lock().expect("poisoned. This is a bug.").as_ref() {
                Some(e) => Err(RunError::Sink(e.to_string())),
                None => Ok(()),
            };
            let options = LoopOptions { follow: follow.clone(), ..LoopOptions::default() };
            drive(worker, &mut input, build, healthy, &options).map(|_| ())
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
        result.map_err(RunError::Worker)??;
    }
    if let Some(e) = errors.lock().expect("poisoned. This is a bug.").take() {
        return Err(RunError::Sink(e));
    }
    Ok(snapshot)
}

/// Worker 0's input: the chunks the reader thread sends (each one epoch). The other workers have none.
struct FileInput(Option<mpsc::Receiver<FromReader>>);

impl WorkerInput for FileInput {
    type Record = SourceRecord;
    type Error = RunError;

    fn poll(&mut self, _epoch: Time, _max: usize) -> Result<Polled<SourceRecord>, RunError> {
        let Some(rx) = &self.0 else { return Ok(Polled::Ended) };
        match rx.try_recv() {
            Ok(FromReader::Records(records)) => Ok(Polled::Records(records)),
            Ok(FromReader::Failed(e)) => Err(RunError::Source(e)),
            Err(mpsc::TryRecvError::Empty) => Ok(Polled::Nothing),
            Err(mpsc::TryRecvError::Disconnected) => Ok(Polled::Ended),
        }
    }
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
