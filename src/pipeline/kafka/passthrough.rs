//! Topic to topic on timely workers: the driver loop every Kafka pipeline uses, with a pluggable
//! transform ([`Transform`]). [`Identity`] (each passage out as itself, tombstones as tombstones, dead
//! letters to the dead-letter topic) proves the connectors; the FRet dataflow plugs in as another
//! [`Transform`].
//!
//! Each worker owns a [`KafkaSource`] (worker index and count decide its partitions) and a [`KafkaSink`].
//! Epochs are wall-clock ticks (`tick` apart) shared by all workers, so an idle worker does not hold back
//! the others. The loop: advance the input to the current tick, hand over what the source has, step the
//! worker, and commit the source through the last epoch the probe after the sink has passed.
//!
//! With [`RunOptions::replay`] (stateful transforms such as the FRet dataflow) each worker reads its
//! partitions from the beginning on every start and the consumer group's offsets only mark progress;
//! see [`crate::connectors::kafka::replay::ReplayStart`].
use super::timely::SinkOperator;
use crate::connectors::kafka::replay::ReplayStart;
use crate::connectors::kafka::{
    ConnectionConfig, KafkaError, KafkaRecord, KafkaSink, KafkaSource, SinkConfig, SinkRecord, SourceConfig,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::StreamVec;

/// What a pipeline does between the source and the sink. `build` runs once per worker.
pub trait Transform: Send + Sync + 'static {
    /// Builds this worker's part of the dataflow from the decoded input records (timestamped with their
    /// epoch) to the records for the sink (at the epochs of the inputs they derive from, or later).
    fn build<'scope>(&self, input: StreamVec<'scope, u64, KafkaRecord>) -> StreamVec<'scope, u64, SinkRecord>;
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
    fn build<'scope>(&self, input: StreamVec<'scope, u64, KafkaRecord>) -> StreamVec<'scope, u64, SinkRecord> {
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
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            tick: Duration::from_millis(20),
            batch: 1000,
            commit_interval: Duration::from_millis(200),
            idle_exit: None,
            throttle: None,
            replay: false,
            stop: None,
        }
    }
}

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Input records handed to the dataflow (dead letters included).
    pub records: u64,
    /// Time from this worker's first record until the outputs of its last record were acknowledged by the
    /// broker (all workers' outputs up to that epoch, as the probe is global); zero without records.
    pub active: Duration,
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

/// One worker's loop; see the module docs.
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
    let mut replay = None;
    let mut source = if options.replay {
        let start = ReplayStart::prepare(connection, source_config, index, peers)?;
        let source = KafkaSource::start(connection, &start.reader, index, peers)?;
        replay = Some(start.marker);
        source
    } else {
        KafkaSource::start(connection, source_config, index, peers)?
    };
    let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
        let (input, stream) = scope.new_input::<Vec<KafkaRecord>>();
        let (probe, _) = transform.build(stream).sink_to_kafka(Arc::clone(&sink)).probe();
        (input, probe)
    });
    let tick_ms = options.tick.as_millis().max(1) as u64;
    let started = Instant::now();
    let epoch_now = || started.elapsed().as_millis() as u64 / tick_ms;
    let mut report = WorkerReport::default();
    let (mut first_record, mut last_record) = (None::<Instant>, Instant::now());
    // The epoch of this worker's latest records, and when the probe passed it.
    let (mut last_data_epoch, mut acked_at) = (None::<u64>, None::<Instant>);
    let mut last_commit = Instant::now();
    let mut committed_through: Option<u64> = None;
    loop {
        let now = epoch_now();
        if now > *input.time() {
            input.advance_to(now);
        }
        let epoch = *input.time();
        let mut batch = source.poll_batch(epoch, options.batch, Duration::from_millis(1))?;
        if !batch.is_empty() {
            report.records += batch.len() as u64;
            first_record.get_or_insert_with(Instant::now);
            last_record = Instant::now();
            input.send_batch(&mut batch);
            last_data_epoch = Some(epoch);
            acked_at = None;
            if let Some(pause) = options.throttle {
                std::thread::sleep(pause);
            }
        }
        worker.step();
        sink.check()?;
        if acked_at.is_none() && last_data_epoch.is_some_and(|e| !probe.less_equal(&e)) {
            acked_at = Some(Instant::now());
        }
        if last_commit.elapsed() >= options.commit_interval {
            commit_passed(&mut source, &probe, &mut committed_through)?;
            if let Some(marker) = replay.as_mut() {
                marker.advance(source.committed());
            }
            last_commit = Instant::now();
        }
        if options.idle_exit.is_some_and(|idle| last_record.elapsed() >= idle) {
            break;
        }
        if options.stop.as_ref().is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            tracing::info!(worker = index, "Stopping: draining the pipeline and committing.");
            break;
        }
    }
    // Drain: close the input, wait until every output of this worker is acknowledged, commit all.
    let last_epoch = *input.time();
    drop(input);
    while probe.less_equal(&last_epoch) {
        worker.step_or_park(Some(Duration::from_millis(10)));
        sink.check()?;
    }
    source.commit_through(last_epoch)?;
    if let Some(marker) = replay.as_mut() {
        marker.advance(source.committed());
    }
    if let Some(first) = first_record {
        report.active = acked_at.unwrap_or_else(Instant::now).duration_since(first);
    }
    tracing::info!(worker = index, records = report.records, committed = ?source.committed(), "Kafka pipeline worker done.");
    source.shutdown();
    Ok(report)
}

/// Commits through the epoch before the probe's frontier, when that moved.
fn commit_passed(
    source: &mut KafkaSource,
    probe: &timely::dataflow::ProbeHandle<u64>,
    committed_through: &mut Option<u64>,
) -> Result<(), KafkaError> {
    let frontier = probe.with_frontier(|f| f.first().copied());
    let Some(done) = frontier.and_then(|f| f.checked_sub(1)) else { return Ok(()) };
    if committed_through.is_some_and(|c| c >= done) {
        return Ok(());
    }
    match source.commit_through(done) {
        Ok(()) => *committed_through = Some(done),
        // Not fatal: the offsets stay pending and the next commit retries them.
        Err(error) => tracing::warn!(error = %error, epoch = done, "Offset commit failed; will retry."),
    }
    Ok(())
}
