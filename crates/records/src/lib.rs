//! # Records
//!
//! The records of fretflow, one type each, and their wire format. Every stage, connector and the trainer
//! exchange these types; nothing converts between parallel definitions or through JSON text. This module
//! is the "Records" reference that the rest of the code cites.
//!
//! | record | type | JSONL (one per line) | Kafka |
//! | --- | --- | --- | --- |
//! | passage | [`Passage`] | `{"id" \| "_id", "title"?, "text"}` ([`decode_json_passage`]) | key = id, value = the JSON, null value = delete |
//! | passage event | [`PassageEvent`] | the above, or `{"id", "op": "delete"}` | as above; `origin` = `topic/partition/offset` |
//! | dead letter | [`DeadLetter`] | `{"stage", "reason", "input", "record"?}` | key = input, value = the record, reason in headers |
//! | FRet example | [`Example`] | `{"query_id", "task", "query", "seed_id", "positive", "negatives", "ranking", "provenance"}` | key = query id, value = the JSON |
//! | change | [`Change`] | `{"op": "upsert" \| "retract", "key", "time", "example"?}` | an upsert is the example under its key, a retraction a tombstone |
//! | checkpoint event | [`CheckpointEvent`] | one line of `checkpoints.jsonl` | key = checkpoint name, value = the JSON |
//!
//! Field order in JSON is the declaration order below; a FRet set written twice from the same input is
//! byte-identical. Reading is lenient where a user's or an older file may leave a field out (`title`,
//! `seed_id`, `negatives`, `ranking`, `provenance`, a change's `time`), and strict everywhere else: an
//! unknown field of a change record, a wrong type or a missing required field is an error naming it.
//!
//! The FRet Parquet files carry the same example in columns: the snapshot `key`, the change file `op`,
//! `key` and `time`; then `task`, `query`, `seed_id`, `positive_id`, `positive_title`, `positive_text`,
//! `negative_ids` (list), `negative_texts` (list), `example` (the whole example as JSON, what fretflow
//! reads back); then the columns a sentence-transformers trainer takes, as fretflow's trainer encodes
//! them: `anchor` ([`Example::query_text`]), `positive` and `negative` (the first hard negative, null
//! without one) as [`Passage::embedding_text`], `negatives` (list); and `generator`, `judge` (backend:model)
//! and `embedder`. A retraction's example columns are null.
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

/// Logical time of the pipeline: the epoch a record entered in.
pub type Time = u64;

/// A passage of the corpus, keyed by `id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Passage {
    /// Unique id of the passage within its corpus (BEIR files name it `_id`).
    #[serde(alias = "_id")]
    pub id: String,
    /// Optional title; empty when absent.
    #[serde(default)]
    pub title: String,
    /// The passage text.
    pub text: String,
}

impl Passage {
    /// The text an encoder sees: `title + " " + text` when there is a title (the BEIR convention),
    /// otherwise the text alone.
    pub fn embedding_text(&self) -> String {
        if self.title.is_empty() {
            self.text.clone()
        } else {
            format!("{} {}", self.title, self.text)
        }
    }
}

/// An upsert or delete of one passage, as a source emits it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PassageEvent {
    /// The passage id (the key).
    pub id: String,
    /// Orders the events of one source (line number, offset); later wins within one time.
    pub seq: u64,
    /// The new version, or `None` for a delete.
    pub passage: Option<Passage>,
    /// Where the event came from (`file:line`, `topic/partition/offset`), for dead letters.
    pub origin: String,
}

/// A decoded source record, or why it could not be decoded.
pub type SourceRecord = Result<PassageEvent, DeadLetter>;

/// Where in the pipeline a record was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading and decoding the source (malformed line, missing field).
    Source,
    /// Validating a decoded passage (limits).
    Validate,
    /// Query generation by the LLM.
    Generate,
    /// Embedding a passage or a query.
    Embed,
    /// Near-duplicate queries: a query within the threshold of a kept query.
    Dedup,
    /// QL/RC judging by the LLM.
    Judge,
}

impl Stage {
    /// The stage's name as written in dead letters (`source`, `validate`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::Validate => "validate",
            Stage::Generate => "generate",
            Stage::Embed => "embed",
            Stage::Dedup => "dedup",
            Stage::Judge => "judge",
        }
    }
}

/// One rejected record: bad records are values, not panics. A malformed line, a record without id or
/// text, a text beyond the limits, an LLM answer that could not be parsed, or a near-duplicate query
/// becomes a dead letter on its own stream, and the run goes on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The stage that rejected it.
    pub stage: Stage,
    /// Why, in words (names the field where there is one).
    pub reason: String,
    /// Which input: `file:line` or `topic/partition/offset` for a source record, the passage or query id
    /// for later stages.
    pub input: String,
    /// The offending record or an excerpt of it (at most [`DeadLetter::EXCERPT_CHARS`] characters),
    /// when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

impl DeadLetter {
    /// Longest excerpt of the offending record kept in a dead letter.
    pub const EXCERPT_CHARS: usize = 1000;

    /// A dead letter with an excerpt of `record`.
    pub fn new(stage: Stage, reason: impl Into<String>, input: impl Into<String>, record: Option<&str>) -> Self {
        let record = record.map(|r| {
            if r.chars().count() > Self::EXCERPT_CHARS {
                let mut s: String = r.chars().take(Self::EXCERPT_CHARS).collect();
                s.push('…');
                s
            } else {
                r.to_string()
            }
        });
        Self { stage, reason: reason.into(), input: input.into(), record }
    }
}

/// Decodes one JSON record of a passage source: `{"id" | "_id": .., "title"?: .., "text": ..}`, or
/// `{"id": .., "op": "delete"}`. `op` is `"upsert"` (default) or `"delete"`. Numeric ids become strings.
/// Every failure is a dead letter naming the field, with `origin` as its input.
pub fn decode_json_passage(line: &str, seq: u64, origin: &str) -> SourceRecord {
    let dead = |reason: String| DeadLetter::new(Stage::Source, reason, origin, Some(line));
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| dead(format!("malformed JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(dead("expected a JSON object".into()));
    };
    let string_field = |name: &str| -> Result<Option<String>, DeadLetter> {
        match object.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(serde_json::Value::Number(n)) if name.ends_with("id") => Ok(Some(n.to_string())),
            Some(other) => Err(dead(format!("field `{name}` must be a string, found {}", json_kind(other)))),
        }
    };
    let id = match string_field("id")? {
        Some(id) => id,
        None => string_field("_id")?.ok_or_else(|| dead("missing field `id`".into()))?,
    };
    if id.trim().is_empty() {
        return Err(dead("field `id` is empty".into()));
    }
    let op = string_field("op")?.unwrap_or_else(|| "upsert".into());
    let passage = match op.as_str() {
        "delete" => None,
        "upsert" => {
            let text = string_field("text")?.ok_or_else(|| dead("missing field `text`".into()))?;
            if text.trim().is_empty() {
                return Err(dead("field `text` is empty".into()));
            }
            let title = string_field("title")?.unwrap_or_default();
            Some(Passage { id: id.clone(), title, text })
        }
        other => return Err(dead(format!("field `op` must be \"upsert\" or \"delete\", found {other:?}"))),
    };
    Ok(PassageEvent { id, seq, passage, origin: origin.to_string() })
}

/// How a JSON value's kind reads in an error message ("a number", "an array", ...).
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A score (cosine, log-probability, RRF value) with a total order ([`f64::total_cmp`]), so records that
/// carry scores can live in differential collections (which need `Ord`, `Eq` and `Hash`): equal means
/// bit-identical, so a score computed twice the same way compares equal and cancels in consolidation.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Score(pub f64);

impl Score {
    /// The wrapped value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Hash for Score {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

impl From<f64> for Score {
    fn from(value: f64) -> Self {
        Score(value)
    }
}

impl From<f32> for Score {
    fn from(value: f32) -> Self {
        Score(f64::from(value))
    }
}

/// The model and prompt version behind one LLM capability.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ModelProvenance {
    /// Backend and model, e.g. `local:SmolLM2-135M-Instruct`.
    pub model: String,
    /// Version of the prompt template (a hash of it).
    pub prompt_version: String,
}

/// Who made an example.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Provenance {
    /// Model and prompt version that wrote the query.
    pub generator: ModelProvenance,
    /// Model and prompt version that judged the pairs.
    pub judge: ModelProvenance,
    /// Embedder used for retrieval.
    pub embedder: String,
}

/// One candidate in an example's fused ranking, best first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RankedCandidate {
    /// Passage id.
    pub id: String,
    /// Cosine of the query and the passage under the retrieval embedder.
    pub cosine: Score,
    /// Query likelihood (`None` when the backend cannot score continuations).
    pub ql: Option<Score>,
    /// Relevance classification score.
    pub rc: Score,
    /// 1-based rank by QL (`None` without QL scores: the ranking is by RC alone).
    #[serde(default)]
    pub ql_rank: Option<usize>,
    /// 1-based rank by RC (0 when a file leaves it out).
    #[serde(default)]
    pub rc_rank: usize,
    /// Reciprocal rank fusion: `1/(k + ql_rank) + 1/(k + rc_rank)` (`2/(k + rc_rank)` without QL).
    pub rrf: Score,
}

/// One FRet training example: a task and query written for a seed passage, with the positive and hard
/// negatives the judge's fused ranking chose. Its key in the output stream is `query_id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Example {
    /// Query id (derived from the seed passage id).
    pub query_id: String,
    /// Task description.
    pub task: String,
    /// Query text.
    pub query: String,
    /// The passage the query was written for.
    #[serde(default)]
    pub seed_id: String,
    /// Top of the fused ranking.
    pub positive: Passage,
    /// Hard negatives, best ranked first.
    #[serde(default)]
    pub negatives: Vec<Passage>,
    /// All candidates, best first.
    #[serde(default)]
    pub ranking: Vec<RankedCandidate>,
    /// Models and prompt versions.
    #[serde(default)]
    pub provenance: Provenance,
}

impl Example {
    /// The query side's encoder input: `task: {task} | query: {query}` (Gecko).
    pub fn query_text(&self) -> String {
        format!("task: {} | query: {}", self.task, self.query)
    }
}

/// What happened to a key of the FRet set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    /// The key now has this example (new or replacing the previous one).
    Upsert,
    /// The key has no example any more (a tombstone).
    Retract,
}

/// One change of the FRet set: an upsert carries the key's new example, a retraction none. Build one with
/// [`Change::upsert`] or [`Change::retract`], read one with [`Change::from_json`], which checks that.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// Upsert or retraction.
    pub op: ChangeOp,
    /// The query id.
    pub key: String,
    /// Logical time (epoch) of the change (0 when a file leaves it out).
    #[serde(default)]
    pub time: Time,
    /// The new example (`None` for a retraction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<Example>,
}

impl Change {
    /// The upsert of `example` under its query id at `time`.
    pub fn upsert(example: Example, time: Time) -> Self {
        Self { op: ChangeOp::Upsert, key: example.query_id.clone(), time, example: Some(example) }
    }

    /// The retraction of `key` at `time`.
    pub fn retract(key: impl Into<String>, time: Time) -> Self {
        Self { op: ChangeOp::Retract, key: key.into(), time, example: None }
    }

    /// The query id the change is about.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The example an upsert carries (`None` for a retraction).
    pub fn upserted(&self) -> Option<&Example> {
        match self.op {
            ChangeOp::Upsert => self.example.as_ref(),
            ChangeOp::Retract => None,
        }
    }

    /// Reads a change record or a bare example (an upsert at time 0); the message names the missing or bad
    /// field. An upsert must carry an example whose `query_id` is its key.
    pub fn from_json(value: serde_json::Value) -> Result<Self, String> {
        if value.get("op").is_none() {
            return from_value::<Example>(value).map(|e| Change::upsert(e, 0));
        }
        let change: Change = from_value(value)?;
        match (change.op, &change.example) {
            (ChangeOp::Retract, _) => Ok(Change { example: None, ..change }),
            (ChangeOp::Upsert, None) => Err(format!("upsert of '{}' has no 'example'", change.key)),
            (ChangeOp::Upsert, Some(example)) if example.query_id != change.key => {
                Err(format!("upsert key '{}' differs from the example's query_id '{}'", change.key, example.query_id))
            }
            (ChangeOp::Upsert, Some(_)) => Ok(change),
        }
    }

    /// Reads one line of a FRet JSONL file or one Kafka message value ([`Change::from_json`]).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, String> {
        Self::from_json(serde_json::from_slice(bytes).map_err(|e| e.to_string())?)
    }
}

/// Deserializes `value`; the error names the path of the bad field (`ranking[0].rrf: invalid type ...`).
fn from_value<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })
}

/// Metric name → value for one dataset (`ndcg@10`, `recall@100`, `mrr@10`, ...).
pub type Metrics = BTreeMap<String, f64>;

/// A checkpoint has landed: one line of the trainer's `checkpoints.jsonl` manifest, and one message of its
/// Kafka events topic (key = the checkpoint directory's name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointEvent {
    /// Optimizer steps taken.
    pub step: u64,
    /// Training examples consumed.
    pub examples_seen: u64,
    /// The checkpoint directory.
    pub path: PathBuf,
    /// Dataset name → metrics, empty when no evaluation is configured.
    pub metrics: BTreeMap<String, Metrics>,
    /// Mean training loss since the previous checkpoint.
    pub mean_loss: Option<f64>,
    /// Unix time (seconds) the checkpoint was written.
    pub created: f64,
    /// `latest` moved to this checkpoint (the promotion gate let it through); for the baseline entry: the
    /// base model is the first promoted model. `false` in manifests written before the gate existed.
    #[serde(default)]
    pub promoted: bool,
    /// Why it was or was not promoted, e.g. `ndcg@10 0.3912 > promoted 0.3817 (base) + margin 0.0000`,
    /// `not promoted: ...`, `gate off`, `no evaluation configured`; empty before the gate existed.
    #[serde(default)]
    pub promotion: String,
    /// This entry is the base model's evaluation before the first step (step 0, the base model's
    /// directory as path), not a checkpoint.
    #[serde(default)]
    pub baseline: bool,
}

impl CheckpointEvent {
    /// `metric` averaged over the evaluated datasets; `None` without evaluation.
    pub fn mean_metric(&self, metric: &str) -> Option<f64> {
        mean_metric(&self.metrics, metric)
    }
}

/// `metric` averaged over the datasets of `metrics` that have it; `None` when none has.
pub fn mean_metric(metrics: &BTreeMap<String, Metrics>, metric: &str) -> Option<f64> {
    let values: Vec<f64> = metrics.values().filter_map(|m| m.get(metric).copied()).collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_order_totally_including_nan_and_signed_zero() {
        let mut v = [Score(1.0), Score(f64::NAN), Score(-0.0), Score(0.0), Score(-3.0)];
        v.sort();
        assert_eq!(v[0], Score(-3.0));
        assert_eq!(v[1], Score(-0.0));
        assert_eq!(v[2], Score(0.0));
        assert_ne!(Score(-0.0), Score(0.0));
        assert!(v[4].0.is_nan());
    }

    fn example(id: &str) -> Example {
        let passage = Passage { id: "p".into(), title: String::new(), text: "t".into() };
        Example {
            query_id: id.into(),
            task: "task".into(),
            query: "q".into(),
            seed_id: "p".into(),
            positive: passage,
            negatives: Vec::new(),
            ranking: Vec::new(),
            provenance: Provenance::default(),
        }
    }

    #[test]
    fn a_change_reads_back_what_it_writes_and_the_stream_format_is_stable() {
        let up = Change::upsert(example("q1"), 3);
        let line = serde_json::to_string(&up).unwrap();
        assert!(line.starts_with(r#"{"op":"upsert","key":"q1","time":3,"example":{"query_id":"q1","task":"task""#));
        assert_eq!(Change::from_slice(line.as_bytes()).unwrap(), up);
        let down = Change::retract("q1", 4);
        assert_eq!(serde_json::to_string(&down).unwrap(), r#"{"op":"retract","key":"q1","time":4}"#);
        assert_eq!(Change::from_slice(br#"{"op":"retract","key":"q1"}"#).unwrap(), Change::retract("q1", 0));
    }

    #[test]
    fn bad_change_records_are_errors_naming_what_is_wrong() {
        let bare = serde_json::to_value(example("q2")).unwrap();
        assert_eq!(Change::from_json(bare).unwrap(), Change::upsert(example("q2"), 0));
        let no_example = Change::from_slice(br#"{"op":"upsert","key":"q"}"#).unwrap_err();
        assert!(no_example.contains("has no 'example'"), "{no_example}");
        let mut mismatched = serde_json::to_value(Change::upsert(example("q3"), 0)).unwrap();
        mismatched["key"] = "other".into();
        assert!(Change::from_json(mismatched).unwrap_err().contains("differs from the example's query_id"));
        let unknown = Change::from_slice(br#"{"op":"retract","key":"q","extra":1}"#).unwrap_err();
        assert!(unknown.contains("extra"), "{unknown}");
        let bad_op = Change::from_slice(br#"{"op":"insert","key":"q"}"#).unwrap_err();
        assert!(bad_op.starts_with("op: ") && bad_op.contains("insert"), "{bad_op}");
        let mut bad_score = serde_json::to_value(example("q4")).unwrap();
        bad_score["ranking"] = serde_json::json!([{"id": "p", "cosine": 0.5, "ql": null, "rc": 0.1, "rrf": "high"}]);
        let message = Change::from_json(bad_score).unwrap_err();
        assert!(message.starts_with("ranking[0].rrf: invalid type"), "{message}");
    }

    #[test]
    fn passage_lines_decode_or_become_dead_letters_naming_the_field() {
        let ok = decode_json_passage(r#"{"_id": 7, "title": "T", "text": "x"}"#, 3, "f:1").unwrap();
        assert_eq!(ok.seq, 3);
        assert_eq!(ok.passage.unwrap(), Passage { id: "7".into(), title: "T".into(), text: "x".into() });
        let delete = decode_json_passage(r#"{"id": "a", "op": "delete"}"#, 2, "f:2").unwrap();
        assert_eq!(delete.passage, None);
        for (line, reason) in [
            ("{", "malformed JSON"),
            ("[]", "expected a JSON object"),
            (r#"{"text": "x"}"#, "missing field `id`"),
            (r#"{"id": "a"}"#, "missing field `text`"),
            (r#"{"id": "a", "text": " "}"#, "field `text` is empty"),
            (r#"{"id": "a", "text": 3}"#, "field `text` must be a string, found a number"),
            (r#"{"id": "a", "op": "merge"}"#, "field `op` must be"),
        ] {
            let dead = decode_json_passage(line, 0, "f:9").unwrap_err();
            assert!(dead.reason.contains(reason), "{line}: {}", dead.reason);
            assert_eq!((dead.stage, dead.input.as_str()), (Stage::Source, "f:9"));
        }
    }

    #[test]
    fn dead_letters_keep_an_excerpt_of_long_records() {
        let long = "x".repeat(DeadLetter::EXCERPT_CHARS + 5);
        let dead = DeadLetter::new(Stage::Judge, "r", "q", Some(&long));
        assert_eq!(dead.record.unwrap().chars().count(), DeadLetter::EXCERPT_CHARS + 1);
        assert_eq!(serde_json::to_value(Stage::Dedup).unwrap(), Stage::Dedup.as_str());
    }
}
