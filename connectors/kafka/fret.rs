//! The FRet dataflow between the Kafka source and sink: a [`Transform`] for [`super::passthrough::run`].
//!
//! Kafka records become the dataflow's passage events (`seq` = offset, which orders the events of one
//! key since a key lives in one partition; `origin` = `topic/partition/offset`). Undecodable Kafka
//! records bypass the dataflow and go to the dead-letter topic with their original bytes and reason code;
//! the dataflow's own dead letters (limits, LLM failures) follow with `fretflow.error` = their stage. The
//! examples' update stream becomes upserts (key = query id, value = example JSON, provenance headers) and
//! tombstones.
use super::headers;
use super::passthrough::Transform;
use super::sink::{Destination, SinkRecord};
use super::source::{PassageChange, SourceRecord};
use super::timely::UpsertRecords;
use crate::dataflow::deadletter::DeadLetter as FlowDeadLetter;
use crate::dataflow::example::Example;
use crate::dataflow::graph::{fret_dataflow, Stages};
use crate::dataflow::source::{PassageEvent, SourceRecord as FlowRecord};
use timely::dataflow::operators::core::{Concat, OkErr};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

/// Runs [`fret_dataflow`] on each worker with these stages.
#[derive(Clone)]
pub struct FretTransform {
    /// The source topic, for provenance.
    pub source_topic: String,
    /// Models, runtime, settings and metrics of the stages.
    pub stages: Stages,
}

impl Transform for FretTransform {
    fn build<'scope>(&self, input: StreamVec<'scope, u64, SourceRecord>) -> StreamVec<'scope, u64, SinkRecord> {
        let topic = self.source_topic.clone();
        let (events, undecodable) = input.ok_err(move |record| match &record.change {
            Ok(change) => Ok(to_event(&topic, &record, change)),
            Err(dead) => Err(SinkRecord::dead_letter(&topic, &record, dead)),
        });
        let streams = fret_dataflow(events, &self.stages);
        let examples = streams.examples.inner.upsert_records_with(provenance_headers);
        let dead = streams.dead_letters.map(flow_dead_letter);
        examples.concat(undecodable).concat(dead)
    }
}

fn to_event(topic: &str, record: &SourceRecord, change: &PassageChange) -> FlowRecord {
    let passage = match change {
        PassageChange::Upsert(passage) => Some(passage.clone()),
        PassageChange::Delete { .. } => None,
    };
    Ok(PassageEvent {
        id: change.id().to_owned(),
        seq: record.offset.max(0) as u64,
        passage,
        origin: format!("{topic}/{}/{}", record.partition, record.offset),
    })
}

fn provenance_headers(example: &Example) -> Vec<(String, String)> {
    let p = &example.provenance;
    vec![
        ("fretflow.seed".to_owned(), example.seed_id.clone()),
        ("fretflow.generator".to_owned(), serde_json::to_string(&p.generator).unwrap_or_default()),
        ("fretflow.judge".to_owned(), serde_json::to_string(&p.judge).unwrap_or_default()),
        ("fretflow.embedder".to_owned(), p.embedder.clone()),
    ]
}

fn flow_dead_letter(dead: FlowDeadLetter) -> SinkRecord {
    let stage = serde_json::to_value(dead.stage).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
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
