//! `fretflow run` on Kafka: the FRet dataflow between a passage topic and a compacted FRet topic, with
//! restarts that rebuild the dataflow's in-memory state.
//!
//! # Restarts: replay from the beginning, offsets as progress markers
//!
//! The dataflow keeps its state (the passage index, the queries, each query's top-N) in memory. A process
//! that resumed from its consumer group's committed offsets would not know the passages before them: new
//! queries could not retrieve them and a later tombstone would retract nothing. So on every start each
//! worker reads its partitions from the beginning ([`crate::connectors::kafka::replay::ReplayStart`]):
//!
//! - The source reads under a scratch group, `<group_id>.replay`, whose offsets this worker rewinds to the
//!   start of its partitions before it starts (so its `Stored` position is the beginning, and the source's
//!   own per-epoch commits keep working unchanged).
//! - The real `group_id` is a progress marker: [`crate::connectors::kafka::replay::ProgressMarker::advance`] commits a partition's offset
//!   there only once every output derived from the records before it is acknowledged by the broker *and*
//!   the offset is beyond what the group had committed. Lag tools therefore show true progress, and the
//!   marker never moves backwards during a replay.
//! - Replayed records are answered from the LLM cache (no model call) and re-emit the upserts already in
//!   the compacted output topic, which compaction absorbs; the final state equals an uninterrupted run's.
//!
//! The input topic should be compacted (key = passage id), so a replay reads one record per live passage
//! (plus recent tombstones) however long the topic has existed.
use super::fret::FretTransform;
use super::passthrough::{self, RunOptions};
use crate::connectors::kafka::{ConnectionConfig, KafkaError, SinkConfig, SourceConfig};
use crate::dataflow::progress::Snapshot;
use crate::pipeline::config::PipelineConfig;
use crate::pipeline::driver::{spawn_progress, ProgressHook};
use crate::pipeline::resources::{self, PipelineParts, ResourceError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most ticks with data a worker lets run ahead of the models: the topic is read about this many ticks
/// (of 20 ms) ahead of what the LLM has finished, not to its end.
pub const MAX_OPEN_TICKS: usize = 16;

/// Why a Kafka run failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaRunError {
    /// A model or the cache could not be set up (names the config field).
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// The Kafka source or sink failed (names the topic or setting).
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// How a Kafka run ends and what it reports while it goes on.
#[derive(Default)]
pub struct FretRunOptions {
    /// Stop (drain, commit) once every worker has read nothing for this long; `None` follows the topic
    /// until Ctrl-C.
    pub idle_exit: Option<Duration>,
    /// Called about four times a second with the metrics so far, and once at the end.
    pub progress: Option<ProgressHook>,
}

/// Runs `config`'s FRet dataflow from `source` to `sink` on `timely_config`'s workers (this process's
/// share of the cluster), with the models, cache, batching and limits of the config. Every worker replays
/// its partitions from the beginning (see the module docs). Ctrl-C stops reading, drains the dataflow and
/// commits. Returns this process's metrics.
pub fn run_fret(
    config: &PipelineConfig,
    connection: &ConnectionConfig,
    source: &SourceConfig,
    sink: &SinkConfig,
    timely_config: timely::Config,
    mut options: FretRunOptions,
) -> Result<Snapshot, KafkaRunError> {
    let started = Instant::now();
    let PipelineParts { runtime: _runtime, stages, interrupted: stop } =
        resources::pipeline_parts(config, "stopping the Kafka source, draining the pipeline and committing.")?;
    let (labeler, metrics) = (Arc::clone(&stages.labeler), Arc::clone(&stages.metrics));
    let run_options = RunOptions {
        idle_exit: options.idle_exit,
        replay: true,
        stop: Some(stop),
        max_open_epochs: MAX_OPEN_TICKS,
        // A backlog read within one tick becomes epochs of at most this many records per worker, which
        // finish and commit one after another (one epoch would commit nothing until all of it was done);
        // with MAX_OPEN_TICKS it also bounds how far ahead of the models a worker reads.
        epoch_records: source.epoch_records,
        metrics: Some(Arc::clone(&stages.metrics)),
        ..RunOptions::default()
    };
    let transform = FretTransform { source_topic: source.topic.clone(), stages };
    let done = Arc::new(AtomicBool::new(false));
    let snapshot = || {
        let stats = labeler.stats();
        metrics.snapshot(started, (stats.model_calls, stats.cache_hits))
    };
    let progress_thread = options.progress.take().map(|hook| spawn_progress(hook, &metrics, &labeler, &done, started));
    let result = passthrough::run_cluster(timely_config, connection, source, sink, &run_options, transform);
    done.store(true, Ordering::Relaxed);
    let last = snapshot();
    if let Some(mut hook) = progress_thread.and_then(|t| t.join().ok()) {
        hook(&last);
    }
    let reports = result?;
    tracing::info!(
        workers = reports.len(),
        records = reports.iter().map(|r| r.records).sum::<u64>(),
        "Kafka run done."
    );
    Ok(last)
}
