//! Counters and clocks the stages update as they work, shared by all workers of a process; read by the
//! progress bars and the end-of-run summary.
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Measures the wall time during which at least one call is in flight (the union of call intervals),
/// so overlapping calls are not counted twice.
#[derive(Debug, Default)]
pub struct BusyClock {
    state: Mutex<BusyState>,
}

#[derive(Debug, Default)]
struct BusyState {
    in_flight: usize,
    since: Option<Instant>,
    total: Duration,
}

impl BusyClock {
    /// A call starts.
    pub fn enter(&self) {
        let mut s = self.state.lock().expect("busy clock poisoned. This is a bug.");
        if s.in_flight == 0 {
            s.since = Some(Instant::now());
        }
        s.in_flight += 1;
    }

    /// A call ends.
    pub fn exit(&self) {
        let mut s = self.state.lock().expect("busy clock poisoned. This is a bug.");
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            if let Some(since) = s.since.take() {
                s.total += since.elapsed();
            }
        }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.state.lock().expect("busy clock poisoned. This is a bug.").in_flight
    }

    /// Busy time so far, including the current busy interval.
    pub fn busy(&self) -> Duration {
        let s = self.state.lock().expect("busy clock poisoned. This is a bug.");
        s.total + s.since.map_or(Duration::ZERO, |t| t.elapsed())
    }
}

/// Counters of one stage.
#[derive(Debug, Default)]
pub struct StageMetrics {
    /// Inputs sent to the model (or processed, for synchronous stages).
    pub requests: AtomicU64,
    /// Batches sent.
    pub batches: AtomicU64,
    /// Inputs that failed (dead letters).
    pub failures: AtomicU64,
    /// Wall time with at least one batch of this stage in flight.
    pub busy: BusyClock,
    /// CPU time spent inside the operator itself (synchronous stages), in nanoseconds.
    pub operator_nanos: AtomicU64,
}

impl StageMetrics {
    /// Adds time spent in the operator.
    pub fn add_operator_time(&self, elapsed: Duration) {
        self.operator_nanos.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Everything a run measures.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Source records read (valid or not).
    pub records_in: AtomicU64,
    /// Passage versions that entered the corpus.
    pub passages_in: AtomicU64,
    /// Passage deletions applied.
    pub passages_deleted: AtomicU64,
    /// Dead letters written.
    pub dead_letters: AtomicU64,
    /// Dead letters written, by the stage that rejected them (`source`, `validate`, `embed`, ...).
    pub dead_letters_by_stage: Mutex<BTreeMap<String, u64>>,
    /// Live passages in this process's shards of the retrieval index.
    pub index_passages: AtomicI64,
    /// Live queries known to this process's retrieval workers (each worker keeps every query: this is
    /// the number of queries times the process's workers).
    pub index_queries: AtomicI64,
    /// Example changes written (upserts and retractions).
    pub example_changes: AtomicU64,
    /// Examples in the current set.
    pub examples_live: AtomicU64,
    /// Examples in the current set whose positive is not the seed passage.
    pub positive_not_seed: AtomicU64,
    /// Live queries within the duplicate threshold of a kept query (dead-lettered, or kept and counted,
    /// by `[fret] duplicate_queries`).
    pub duplicate_queries: AtomicU64,
    /// Reading and upserting the source.
    pub source: StageMetrics,
    /// Query generation.
    pub generate: StageMetrics,
    /// Passage and query embedding.
    pub embed: StageMetrics,
    /// Near-duplicate queries.
    pub dedup: StageMetrics,
    /// Top-N retrieval.
    pub retrieve: StageMetrics,
    /// QL/RC judging.
    pub judge: StageMetrics,
    /// Fusion and example assembly.
    pub fuse: StageMetrics,
    /// Writing sinks.
    pub sink: StageMetrics,
    /// Wall time with at least one LLM batch (generation or judging) in flight.
    pub llm_busy: BusyClock,
    /// Where each partition of the input stands (Kafka sources), by (topic, partition).
    pub source_partitions: Mutex<BTreeMap<(String, i32), SourcePartition>>,
}

/// Where one partition of the input stands: committed offset and consumer lag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourcePartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Next offset committed for the consumer group (`None`: nothing committed yet).
    pub committed: Option<i64>,
    /// Records between the committed offset and the partition's end.
    pub lag: i64,
}

/// A point-in-time copy of the metrics, with the labeler's counters; what the summary prints and
/// writes as JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Wall time since the run started, seconds.
    pub elapsed_s: f64,
    /// Source records read.
    pub records_in: u64,
    /// Passage versions that entered the corpus.
    pub passages_in: u64,
    /// Passage deletions.
    pub passages_deleted: u64,
    /// Queries generated.
    pub queries: u64,
    /// Query–candidate pairs judged.
    pub judged_pairs: u64,
    /// Example changes written.
    pub example_changes: u64,
    /// Examples in the current set.
    pub examples_live: u64,
    /// Examples in the current set whose positive p1 is not the seed passage (the paper saw about 15%).
    pub positive_not_seed: u64,
    /// Live queries within the duplicate threshold of a kept query, now (see [`Metrics::duplicate_queries`]).
    pub duplicate_queries: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Dead letters by the stage that rejected them.
    pub dead_letters_by_stage: BTreeMap<String, u64>,
    /// Live passages in this process's shards of the retrieval index.
    pub index_passages: i64,
    /// Live queries held by this process's retrieval workers (queries x workers).
    pub index_queries: i64,
    /// Batches in flight now, per model stage.
    pub in_flight_batches: Vec<(String, usize)>,
    /// LLM requests answered by the model.
    pub llm_calls: u64,
    /// LLM requests answered from the cache.
    pub llm_cache_hits: u64,
    /// Share of wall time with an LLM batch in flight.
    pub llm_busy_share: f64,
    /// Seconds per stage: busy (in flight) for model stages, in-operator time for the others.
    pub stage_seconds: Vec<(String, f64)>,
    /// Committed offset and lag of each input partition this process reads (Kafka sources).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_partitions: Vec<SourcePartition>,
}

impl Metrics {
    /// Counts one dead letter rejected by `stage`.
    pub fn count_dead_letter(&self, stage: &str) {
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
        let mut by_stage = self.dead_letters_by_stage.lock().unwrap_or_else(|e| e.into_inner());
        *by_stage.entry(stage.to_string()).or_insert(0) += 1;
    }

    /// Records where partition `partition` of `topic` stands.
    pub fn set_source_partition(&self, progress: SourcePartition) {
        let mut partitions = self.source_partitions.lock().unwrap_or_else(|e| e.into_inner());
        partitions.insert((progress.topic.clone(), progress.partition), progress);
    }

    /// Copies the counters; `llm_stats` are the labeler's (calls, cache hits).
    pub fn snapshot(&self, started: Instant, llm_stats: (u64, u64)) -> Snapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let op_s = |s: &StageMetrics| load(&s.operator_nanos) as f64 / 1e9;
        Snapshot {
            elapsed_s: elapsed,
            records_in: load(&self.records_in),
            passages_in: load(&self.passages_in),
            passages_deleted: load(&self.passages_deleted),
            queries: load(&self.generate.requests) - load(&self.generate.failures),
            judged_pairs: load(&self.judge.requests) - load(&self.judge.failures),
            example_changes: load(&self.example_changes),
            examples_live: load(&self.examples_live),
            positive_not_seed: load(&self.positive_not_seed),
            duplicate_queries: load(&self.duplicate_queries),
            dead_letters: load(&self.dead_letters),
            dead_letters_by_stage: self.dead_letters_by_stage.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            index_passages: self.index_passages.load(Ordering::Relaxed),
            index_queries: self.index_queries.load(Ordering::Relaxed),
            in_flight_batches: vec![
                ("generate".into(), self.generate.busy.in_flight()),
                ("embed".into(), self.embed.busy.in_flight()),
                ("judge".into(), self.judge.busy.in_flight()),
            ],
            llm_calls: llm_stats.0,
            llm_cache_hits: llm_stats.1,
            llm_busy_share: if elapsed > 0.0 { self.llm_busy.busy().as_secs_f64() / elapsed } else { 0.0 },
            stage_seconds: vec![
                ("source".into(), op_s(&self.source)),
                ("generate (LLM)".into(), self.generate.busy.busy().as_secs_f64()),
                ("embed".into(), self.embed.busy.busy().as_secs_f64()),
                ("dedup".into(), op_s(&self.dedup)),
                ("retrieve".into(), op_s(&self.retrieve)),
                ("judge (LLM)".into(), self.judge.busy.busy().as_secs_f64()),
                ("fuse".into(), op_s(&self.fuse)),
                ("sinks".into(), op_s(&self.sink)),
            ],
            source_partitions: self
                .source_partitions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect(),
        }
    }
}

/// Shared handle to a run's metrics.
pub type SharedMetrics = Arc<Metrics>;
