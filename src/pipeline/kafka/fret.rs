//! The FRet dataflow between the Kafka source and sink: a [`Transform`] for [`super::passthrough::run`].
//!
//! Kafka records carry the dataflow's passage events (`seq` = offset, which orders the events of one
//! key since a key lives in one partition; `origin` = `topic/partition/offset`). Undecodable Kafka
//! records bypass the dataflow and go to the dead-letter topic with their original bytes and reason code;
//! the dataflow's own dead letters (limits, LLM failures) follow with `fretflow.error` = their stage. The
//! examples' update stream becomes upserts (key = query id, value = example JSON, provenance headers) and
//! tombstones.
//!
//! Every input tombstone also retracts a placeholder example under each of its passage's query keys
//! ([`query_ids`]), so each key gets a tombstone out at that time unless the key has a live example then.
//! This matters on a replay (see [`super::run`]): when a passage was deleted while the pipeline was
//! down, the replay may read its upsert and tombstone in one epoch (or, on a compacted input topic, only
//! the tombstone), the dataflow never sees the passage, and without the placeholder the example the
//! previous run wrote would stay live in the output topic.
//!
//! The run's counters ([`crate::dataflow::progress::Metrics`]) that the file sinks keep in a
//! file pipeline (examples live and changed, p1 != seed, dead letters) are kept here.
use super::passthrough::Transform;
use super::timely::UpsertRecords;
use crate::connectors::kafka::sink::Destination;
use crate::connectors::kafka::{headers, KafkaRecord, SinkRecord};
use crate::dataflow::embedder::{EmbedderVersion, SharedEmbedder};
use crate::dataflow::generate::query_ids;
use crate::dataflow::graph::fret_dataflow;
use crate::dataflow::progress::SharedMetrics;
use crate::dataflow::stages::Stages;
use crate::dataflow::Diff;
use crate::records::{DeadLetter, Example, Passage, SourceRecord};
use differential_dataflow::VecCollection;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::{Concat, Inspect, OkErr};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

/// Header of each upsert naming the example's positive passage (p1).
pub const POSITIVE_HEADER: &str = "fretflow.positive";
/// Header of each upsert naming the passage its query was written for.
pub const SEED_HEADER: &str = "fretflow.seed";

/// Runs [`fret_dataflow`] on each worker with these stages.
#[derive(Clone)]
pub struct FretTransform {
    /// The source topic, for provenance.
    pub source_topic: String,
    /// Models, runtime, settings and metrics of the stages.
    pub stages: Stages,
}

impl Transform for FretTransform {
    fn build<'scope>(
        &self,
        input: StreamVec<'scope, u64, KafkaRecord>,
        versions: VecCollection<'scope, u64, EmbedderVersion, Diff>,
    ) -> StreamVec<'scope, u64, SinkRecord> {
        let topic = self.source_topic.clone();
        let deleted = deleted_query_keys(input.clone(), self.stages.fret.queries_per_passage);
        let (events, undecodable) = input.ok_err(move |record| match record.event {
            Ok(event) => Ok::<SourceRecord, _>(Ok(event)),
            Err(ref dead) => Err(SinkRecord::dead_letter(&topic, &record, dead)),
        });
        let streams = fret_dataflow(events, versions, &self.stages);
        let examples = streams.examples.inner.concat(deleted).upsert_records_with(provenance_headers);
        let dead = streams.dead_letters.map(flow_dead_letter);
        count_outputs(examples.concat(undecodable).concat(dead), self.stages.metrics.clone())
    }

    fn follow(&self) -> Option<SharedEmbedder> {
        self.stages.embedder.following().map(|_| self.stages.embedder.clone())
    }
}

/// Counts what goes to the sink. Upserts and tombstones of one key are decided on one worker (the
/// upsert operator exchanges by key), so each worker tracks its own keys and adds its deltas.
fn count_outputs<'scope>(
    records: StreamVec<'scope, u64, SinkRecord>,
    metrics: SharedMetrics,
) -> StreamVec<'scope, u64, SinkRecord> {
    // key -> whether its example's positive is not its seed
    let mut live: HashMap<Vec<u8>, bool> = HashMap::new();
    records.inspect(move |record| {
        if record.destination == Destination::DeadLetter {
            let stage = record.headers.iter().find(|(k, _)| k == headers::ERROR).map_or("unknown", |(_, v)| v.as_str());
            metrics.count_dead_letter(stage);
            return;
        }
        let Some(key) = &record.key else { return };
        metrics.example_changes.fetch_add(1, Ordering::Relaxed);
        let header = |name: &str| record.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let now = record.value.as_ref().map(|_| header(POSITIVE_HEADER) != header(SEED_HEADER));
        let before = match now {
            Some(moved) => live.insert(key.clone(), moved),
            None => live.remove(key),
        };
        let adjust = |counter: &std::sync::atomic::AtomicU64, was: bool, is: bool| match (was, is) {
            (false, true) => counter.fetch_add(1, Ordering::Relaxed),
            (true, false) => counter.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
        adjust(&metrics.examples_live, before.is_some(), now.is_some());
        adjust(&metrics.positive_not_seed, before == Some(true), now == Some(true));
    })
}

/// For each input tombstone at time `t` and each of its passage's query ids (`queries_per_passage` of
/// them): `((query id, placeholder), t, -1)`. The placeholder is never live (it is only retracted), so it
/// makes the key's net update at `t` a tombstone when nothing else is live there, and changes nothing when
/// the dataflow upserts the key at `t`.
fn deleted_query_keys<'scope>(
    input: StreamVec<'scope, u64, KafkaRecord>,
    queries_per_passage: u32,
) -> StreamVec<'scope, u64, ((String, Example), u64, isize)> {
    input.unary::<CapacityContainerBuilder<Vec<_>>, _, _, _>(Pipeline, "DeletedQueryKeys", |_cap, _info| {
        move |input, output| {
            input.for_each(|cap, data| {
                let time = *cap.least().expect("source records carry a time. This is a bug.");
                let mut session = output.session(&cap);
                for record in data.drain(..) {
                    if let Ok(event) = &record.event {
                        if event.passage.is_none() {
                            for id in query_ids(&event.id, queries_per_passage) {
                                session.give(((id.clone(), placeholder(id, &event.id)), time, -1));
                            }
                        }
                    }
                }
            });
        }
    })
}

/// An example that no dataflow output can equal (no query, no ranking).
fn placeholder(query_id: String, seed_id: &str) -> Example {
    let empty = Passage { id: String::new(), title: String::new(), text: String::new() };
    Example {
        query_id,
        task: String::new(),
        query: String::new(),
        seed_id: seed_id.to_owned(),
        positive: empty,
        negatives: Vec::new(),
        ranking: Vec::new(),
        provenance: Default::default(),
    }
}

fn provenance_headers(example: &Example) -> Vec<(String, String)> {
    let p = &example.provenance;
    vec![
        (SEED_HEADER.to_owned(), example.seed_id.clone()),
        (POSITIVE_HEADER.to_owned(), example.positive.id.clone()),
        ("fretflow.generator".to_owned(), serde_json::to_string(&p.generator).unwrap_or_default()),
        ("fretflow.judge".to_owned(), serde_json::to_string(&p.judge).unwrap_or_default()),
        ("fretflow.embedder".to_owned(), p.embedder.clone()),
    ]
}

fn flow_dead_letter(dead: DeadLetter) -> SinkRecord {
    let stage = dead.stage.as_str().to_owned();
    SinkRecord {
        destination: Destination::DeadLetter,
        key: Some(dead.input.clone().into_bytes()),
        value: dead.record.clone().map(String::into_bytes),
        headers: vec![
            (headers::ERROR.to_owned(), stage),
            (headers::ERROR_MESSAGE.to_owned(), dead.reason.clone()),
            (headers::SOURCE.to_owned(), dead.input),
        ],
    }
}
