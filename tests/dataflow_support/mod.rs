//! Shared harness of the dataflow tests: runs the FRet dataflow in-process on epochs of source records
//! with a tiny deterministic embedder, captures its outputs and extracts them (as differential's own
//! tests do). No sleeps: workers park until the async stages wake them.
#![allow(dead_code)]
use differential_dataflow::input::Input as _;
use fretflow::dataflow::async_op::BatchPolicy;
use fretflow::dataflow::embedder::SharedEmbedder;
use fretflow::dataflow::graph::fret_dataflow;
use fretflow::dataflow::labeler::Labeler;
use fretflow::dataflow::params::FretParams;
use fretflow::dataflow::params::Limits;
use fretflow::dataflow::progress::Metrics;
use fretflow::dataflow::stages::Stages;
use fretflow::dataflow::{Diff, Time};
use fretflow::embed::{EmbedError, TextEmbedder};
use fretflow::records::{decode_json_passage, DeadLetter, Example, SourceRecord};
use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use timely::dataflow::operators::capture::Extract;
use timely::dataflow::operators::{Capture, Input};

/// Bag of words hashed into 64 dimensions: texts sharing words are near.
pub struct WordEmbedder;

impl TextEmbedder for WordEmbedder {
    fn dim(&self) -> usize {
        64
    }

    fn embed(&self, texts: &[&str]) -> Result<tch::Tensor, EmbedError> {
        let mut flat = vec![0f32; texts.len() * 64];
        for (row, text) in texts.iter().enumerate() {
            for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
                let h = word.to_lowercase().bytes().fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
                flat[row * 64 + (h % 64) as usize] += 1.0;
            }
        }
        Ok(tch::Tensor::from_slice(&flat).view([texts.len() as i64, 64]))
    }
}

/// An upsert record of the JSONL source format.
pub fn upsert(id: &str, text: &str, seq: u64) -> SourceRecord {
    let line = serde_json::json!({"id": id, "text": text}).to_string();
    decode_json_passage(&line, seq, &format!("test:{seq}"))
}

/// A delete record.
pub fn delete(id: &str, seq: u64) -> SourceRecord {
    let line = serde_json::json!({"id": id, "op": "delete"}).to_string();
    decode_json_passage(&line, seq, &format!("test:{seq}"))
}

/// What a run produced.
pub struct Captured {
    /// Example updates, consolidated per time, sorted.
    pub changes: Vec<((String, Example), Time, Diff)>,
    /// Dead letters, sorted.
    pub dead_letters: Vec<DeadLetter>,
    /// The run's counters.
    pub metrics: Arc<Metrics>,
}

impl Captured {
    /// The set of examples after all times, by key.
    pub fn final_set(&self) -> BTreeMap<String, Example> {
        let mut counts: BTreeMap<(String, Example), Diff> = BTreeMap::new();
        for (record, _, diff) in &self.changes {
            *counts.entry(record.clone()).or_default() += diff;
        }
        let mut set = BTreeMap::new();
        for ((key, example), count) in counts {
            assert!(count == 0 || count == 1, "multiplicity {count} for {key}");
            if count == 1 {
                assert!(set.insert(key.clone(), example).is_none(), "two examples for {key}");
            }
        }
        set
    }
}

/// Settings of one harness run.
pub struct Run {
    pub workers: usize,
    pub params: FretParams,
    pub limits: Limits,
    pub llm_batch: BatchPolicy,
    /// The encoder (default: [`WordEmbedder`] as `test:words`).
    pub embedder: Option<SharedEmbedder>,
    /// For a versioned encoder: the version set at each listed time (the previous one retracted).
    pub versions: Vec<(Time, String)>,
}

impl Default for Run {
    fn default() -> Self {
        Self {
            workers: 1,
            // Near-duplicate queries off: the capture tests of the other stages give passages identical first
            // words (so identical queries) on purpose; tests/dataflow_dedup.rs turns it on.
            params: FretParams { neighbours: 3, duplicate_queries: None, ..FretParams::default() },
            limits: Limits::default(),
            llm_batch: BatchPolicy { max_batch: 4, max_wait: Duration::ZERO, max_in_flight: 2 },
            embedder: None,
            versions: Vec::new(),
        }
    }
}

impl Run {
    /// Feeds `epochs[t]` at time `t` (worker 0), waits for each time to complete, and captures.
    pub fn go(&self, epochs: Vec<Vec<SourceRecord>>, labeler: Arc<dyn Labeler>) -> Captured {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
        let metrics = Arc::new(Metrics::default());
        let stages = Stages {
            labeler,
            embedder: self.embedder.clone().unwrap_or_else(|| SharedEmbedder::new("test:words", WordEmbedder)),
            runtime: runtime.handle().clone(),
            generate_batch: self.llm_batch,
            judge_batch: self.llm_batch,
            embed_batch: BatchPolicy { max_batch: 8, max_wait: Duration::ZERO, max_in_flight: 1 },
            fret: self.params.clone(),
            limits: self.limits,
            metrics: Arc::clone(&metrics),
        };
        let (examples_tx, examples_rx) = mpsc::channel();
        let (dead_tx, dead_rx) = mpsc::channel();
        let (examples_tx, dead_tx) = (Arc::new(Mutex::new(examples_tx)), Arc::new(Mutex::new(dead_tx)));
        let epochs = Arc::new(epochs);
        let schedule = self.versions.clone();
        timely::execute(timely::Config::process(self.workers), move |worker| {
            let (examples_tx, dead_tx) = (examples_tx.lock().unwrap().clone(), dead_tx.lock().unwrap().clone());
            let (mut input, mut versions, probe) = worker.dataflow::<Time, _, _>(|scope| {
                let (input, records) = scope.new_input::<Vec<SourceRecord>>();
                let (versions, version_collection) = scope.new_collection();
                let out = fret_dataflow(records, version_collection, &stages);
                let (probe, examples) = out.examples.probe();
                examples.inner.capture_into(examples_tx);
                out.dead_letters.capture_into(dead_tx);
                (input, versions, probe)
            });
            if worker.index() == 0 {
                let mut current: Option<String> = None;
                for (t, batch) in epochs.iter().enumerate() {
                    if let Some((_, version)) = schedule.iter().find(|(at, _)| *at == t as Time) {
                        if let Some(old) = current.replace(version.clone()) {
                            versions.remove(old);
                        }
                        versions.insert(version.clone());
                    }
                    for record in batch {
                        input.send(record.clone());
                    }
                    let next = t as Time + 1;
                    input.advance_to(next);
                    versions.advance_to(next);
                    versions.flush();
                    worker.step_or_park_while(None, || probe.less_than(&next));
                }
            }
        })
        .unwrap()
        .join()
        .into_iter()
        .for_each(|r| r.unwrap());
        drop(runtime);
        let mut changes: Vec<_> = examples_rx
            .extract()
            .into_iter()
            .flat_map(|(_, mut updates)| {
                differential_dataflow::consolidation::consolidate_updates(&mut updates);
                updates
            })
            .collect();
        changes.sort_by(|a, b| (a.1, &a.0, a.2).cmp(&(b.1, &b.0, b.2)));
        let mut dead_letters: Vec<DeadLetter> = dead_rx.extract().into_iter().flat_map(|(_, d)| d).collect();
        dead_letters.sort();
        Captured { changes, dead_letters, metrics }
    }
}

/// `(key, positive id, negative ids, ranking ids)` of an example: what the tests assert on.
pub fn shape(example: &Example) -> (String, String, Vec<String>, Vec<String>) {
    (
        example.query_id.clone(),
        example.positive.id.clone(),
        example.negatives.iter().map(|n| n.id.clone()).collect(),
        example.ranking.iter().map(|r| r.id.clone()).collect(),
    )
}
