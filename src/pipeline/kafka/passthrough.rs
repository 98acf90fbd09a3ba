//! Topic to topic on timely workers: the driver loop every Kafka pipeline uses, with a pluggable
//! transform ([`Transform`]). [`Identity`] (each passage out as itself, tombstones as tombstones, dead
//! letters to the dead-letter topic) proves the connectors; the FRet dataflow plugs in as another
//! [`Transform`].
//!
//! Each worker owns a [`KafkaSource`] (worker index and count decide its partitions) and a [`KafkaSink`],
//! and runs the pipelines' one driver loop ([`crate::pipeline::driver`]) with wall-clock epochs (`tick`
//! apart, shared by all workers, so an idle worker does not hold back the others), committing the source
//! through the last epoch the probe after the sink has passed.
//!
//! With [`RunOptions::replay`] (stateful transforms such as the FRet dataflow) each worker reads its
//! partitions from the beginning on every start and the consumer group's offsets only mark progress;
//! see [`crate::connectors::kafka::replay::ReplayStart`].
use super::timely::SinkOperator;
use crate::connectors::kafka::replay::{ProgressMarker, ReplayStart};
use crate::connectors::kafka::{
    ConnectionConfig, KafkaError, KafkaRecord, KafkaSink, KafkaSource, SinkConfig, SinkRecord, SourceConfig,
};
use crate::dataflow::embedder::{EmbedderVersion, SharedEmbedder};
use crate::dataflow::progress::{SharedMetrics, SourcePartition};
use crate::dataflow::{Diff, Time};
pub use crate::pipeline::driver::WorkerReport;
use crate::pipeline::driver::{drive, Epochs, LoopOptions, Polled, WorkerInput};
use differential_dataflow::VecCollection;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Probe;
use timely::dataflow::StreamVec;

/// What a pipeline does between the source and the sink. `build` runs once per worker.
pub trait Transform: Send + Sync + 'static {
    /// Builds this worker's part of the dataflow from the decoded input records (timestamped with their
    /// epoch) to the records for the sink (at the epochs of the inputs they derive from, or later).
    /// `versions` is the encoder version in use, fed from [`Transform::follow`] (empty without it).
    fn build<'scope>(
        &self,
        input: StreamVec<'scope, u64, KafkaRecord>,
        versions: VecCollection<'scope, u64, EmbedderVersion, Diff>,
    ) -> StreamVec<'scope, u64, SinkRecord>;

    /// An encoder following a checkpoint directory, whose version changes the driver feeds to `build`'s
    /// `versions`.
    fn follow(&self) -> Option<SharedEmbedder> {
        None
    }
}

/// Passes every passage through unchanged: upsert in, upsert out (key = passage id, value = the passage
/// JSON, `fretflow.source` header); tombstone in, tombstone out; undecodable records to the dead-letter
/// topic.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The source topic, for provenance headers.
    pub source_topic: String,
}

impl Transform for Identity {
    fn build<'scope>(
        &self,
        input: StreamVec<'scope, u64, KafkaRecord>,
        _versions: VecCollection<'scope, u64, EmbedderVersion, Diff>,
    ) -> StreamVec<'scope, u64, SinkRecord> {
        let topic = self.source_topic.clone();
        input.map(move |record| {
            let out = match &record.event {
                Ok(event) => match &event.passage {
                    Some(passage) => SinkRecord::upsert(&passage.id, passage),
                    None => SinkRecord::tombstone(&event.id),
                },
                Err(dead) => return SinkRecord::dead_letter(&topic, &record, dead),
            };
            out.with_source(&topic, record.partition, record.offset)
        })
    }
}

/// How long a run lasts and how it batches.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Timely worker threads in this process.
    pub workers: usize,
    /// Epoch length: records read within one tick share an epoch.
    pub tick: Duration,
    /// Most records handed to the dataflow per loop iteration and worker.
    pub batch: usize,
    /// Most records of one epoch per worker (a tick with more moves on to the next epoch): see
    /// [`LoopOptions::epoch_records`]. Unbounded for the passthrough.
    pub epoch_records: usize,
    /// Read more only while at most this many epochs with data are unfinished (bounds what a slow
    /// transform holds in memory; unbounded for the passthrough, whose sink keeps up).
    pub max_open_epochs: usize,
    /// How often offsets are committed (at most).
    pub commit_interval: Duration,
    /// Stop when a worker has read nothing for this long (after committing everything); `None` runs until
    /// killed.
    pub idle_exit: Option<Duration>,
    /// Sleep this long after each non-empty batch (slows a run down for crash tests).
    pub throttle: Option<Duration>,
    /// Read every partition from its beginning on start (rebuilding a stateful transform's state) and
    /// commit the group's offsets only once the replay has passed them; `false` resumes from the
    /// committed offsets (enough for a stateless transform such as [`Identity`]).
    pub replay: bool,
    /// Set (e.g. by a Ctrl-C handler) to stop reading, drain and commit, as after `idle_exit`.
    pub stop: Option<Arc<AtomicBool>>,
    /// Where each worker reports its partitions' committed offsets and lag (after every commit).
    pub metrics: Option<SharedMetrics>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            tick: Duration::from_millis(20),
            batch: 1000,
            epoch_records: usize::MAX,
            max_open_epochs: usize::MAX,
            commit_interval: Duration::from_millis(200),
            idle_exit: None,
            throttle: None,
            replay: false,
            stop: None,
            metrics: None,
        }
    }
}

/// Runs `transform` from `source` to `sink` on `options.workers` threads of this process, until every
/// worker has been idle for `options.idle_exit`. Returns one report per worker.
pub fn run<X: Transform>(
    connection: &ConnectionConfig,
    source: &SourceConfig,
    sink: &SinkConfig,
    options: &RunOptions,
    transform: X,
) -> Result<Vec<WorkerReport>, KafkaError> {
    let config = timely::Config::process(options.workers.max(1));
    run_cluster(config, connection, source, sink, options, transform)
}

/// As [`run`], on the workers of `config` (threads and processes; `options.workers` is ignored).
/// Returns one report per worker of this process.
pub fn run_cluster<X: Transform>(
    config: timely::Config,
    connection: &ConnectionConfig,
    source: &SourceConfig,
    sink: &SinkConfig,
    options: &RunOptions,
    transform: X,
) -> Result<Vec<WorkerReport>, KafkaError> {
    connection.validate()?;
    source.validate()?;
    sink.validate()?;
    let shared = Arc::new((connection.clone(), source.clone(), sink.clone(), options.clone(), transform));
    let guards = timely::execute(config, move |worker| {
        let (connection, source, sink, options, transform) = &*shared;
        run_worker(worker, connection, source, sink, options, transform)
    })
    .map_err(|message| KafkaError::Config { field: "workers".into(), message })?;
    let mut reports = Vec::new();
    for result in guards.join() {
        let report = result.map_err(|message| KafkaError::SourceStopped { topic: source.topic.clone(), message })??;
        reports.push(report);
    }
    Ok(reports)
}

/// One worker's pipeline: its partitions through `transform` to the sink, on the driver loop; see the
/// module docs.
pub fn run_worker<X: Transform>(
    worker: &mut timely::worker::Worker,
    connection: &ConnectionConfig,
    source_config: &SourceConfig,
    sink_config: &SinkConfig,
    options: &RunOptions,
    transform: &X,
) -> Result<WorkerReport, KafkaError> {
    let (index, peers) = (worker.index(), worker.peers());
    let sink = Arc::new(KafkaSink::start(connection, sink_config)?);
    let mut input = if options.replay {
        let start = ReplayStart::prepare(connection, source_config, index, peers)?;
        let source = KafkaSource::start(connection, &start.reader, index, peers)?;
        KafkaInput { source, marker: Some(start.marker), metrics: options.metrics.clone() }
    } else {
        let source = KafkaSource::start(connection, source_config, index, peers)?;
        KafkaInput { source, marker: None, metrics: options.metrics.clone() }
    };
    let build = |records: StreamVec<'_, Time, KafkaRecord>,
                 versions: VecCollection<'_, Time, EmbedderVersion, Diff>| {
        let (probe, _) = transform.build(records, versions).sink_to_kafka(Arc::clone(&sink)).probe();
        probe
    };
    let loop_options = LoopOptions {
        epochs: Epochs::Tick(options.tick),
        batch: options.batch,
        epoch_records: options.epoch_records,
        max_open_epochs: options.max_open_epochs,
        // The source's poll waits up to 1 ms for records; the worker itself does not park.
        park: Duration::ZERO,
        commit_interval: options.commit_interval,
        idle_exit: options.idle_exit,
        throttle: options.throttle,
        stop: options.stop.clone(),
        follow: transform.follow(),
    };
    let report = drive(worker, &mut input, build, || sink.check(), &loop_options)?;
    tracing::info!(worker = index, records = report.records, committed = ?input.source.committed(), "Kafka pipeline worker done.");
    input.source.shutdown();
    Ok(report)
}

/// A worker's partitions, and with replay the group's progress marker (advanced after every commit).
struct KafkaInput {
    source: KafkaSource,
    marker: Option<ProgressMarker>,
    metrics: Option<SharedMetrics>,
}

impl WorkerInput for KafkaInput {
    type Record = KafkaRecord;
    type Error = KafkaError;

    fn poll(&mut self, epoch: Time, max: usize) -> Result<Polled<KafkaRecord>, KafkaError> {
        let batch = self.source.poll_batch(epoch, max, Duration::from_millis(1))?;
        Ok(if batch.is_empty() { Polled::Nothing } else { Polled::Records(batch) })
    }

    fn commit_through(&mut self, epoch: Time) -> Result<(), KafkaError> {
        let committed = self.source.commit_through(epoch);
        if let Some(marker) = self.marker.as_mut() {
            marker.advance(self.source.committed());
        }
        committed
    }

    /// Each partition's committed offset and lag, from the source's last statistics report (none before
    /// the first): before the first commit the lag is the whole partition.
    fn report_progress(&mut self) {
        if let Some(metrics) = &self.metrics {
            for p in self.source.progress() {
                let topic = self.source.topic().to_string();
                metrics.set_source_partition(SourcePartition {
                    topic,
                    partition: p.partition,
                    committed: p.committed,
                    lag: p.lag,
                });
            }
        }
    }
}
