//! The source stage: decoded records in, the current passage set out.
//!
//! Sources (files, Kafka) emit [`SourceRecord`]s: a [`PassageEvent`] (an upsert or delete keyed by
//! passage id, with a sequence number that orders events of one source) or a [`DeadLetter`] for a record
//! that could not be decoded. [`Upsert::upsert_passages`] checks the [`Limits`], exchanges events by id
//! and keeps, per id, the latest version: an upsert of a known id retracts the old version and inserts
//! the new one, a delete retracts it. Events of one time apply in sequence order once the frontier has
//! passed that time.
use super::deadletter::{DeadLetter, Stage};
use super::progress::SharedMetrics;
use super::{Diff, Time};
use crate::records::Passage;
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Instant;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

/// An upsert or delete of one passage.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PassageEvent {
    /// The passage id (the key).
    pub id: String,
    /// Orders the events of one source (line number, offset); later wins within one time.
    pub seq: u64,
    /// The new version, or `None` for a delete.
    pub passage: Option<Passage>,
    /// Where the event came from (`file:line`), for dead letters.
    pub origin: String,
}

/// A decoded source record, or why it could not be decoded.
pub type SourceRecord = Result<PassageEvent, DeadLetter>;

/// Size limits on passages; a passage beyond them is a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest passage text, in characters.
    pub max_text_chars: usize,
    /// Longest title, in characters.
    pub max_title_chars: usize,
    /// Longest id, in characters.
    pub max_id_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_text_chars: 4000, max_title_chars: 500, max_id_chars: 256 }
    }
}

impl Limits {
    /// Why `event` is beyond the limits, if it is.
    pub fn check(&self, event: &PassageEvent) -> Option<String> {
        let over = |field: &str, value: &str, max: usize| {
            let n = value.chars().count();
            (n > max).then(|| format!("field `{field}` has {n} characters, over the limit of {max}"))
        };
        over("id", &event.id, self.max_id_chars).or_else(|| {
            event.passage.as_ref().and_then(|p| {
                over("text", &p.text, self.max_text_chars).or_else(|| over("title", &p.title, self.max_title_chars))
            })
        })
    }
}

/// Decodes one JSON record of a passage source: `{"id" | "_id": .., "title"?: .., "text": ..}`, or
/// `{"id": .., "op": "delete"}`. `op` is `"upsert"` (default) or `"delete"`. Numeric ids become strings.
/// Every failure is a dead letter naming the field.
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

/// Turns a stream of source records into the collection of current passages.
pub trait Upsert<'scope> {
    /// The current passages (one version per id), and the dead letters of undecodable records and of
    /// passages beyond `limits`.
    fn upsert_passages(
        self,
        limits: Limits,
        metrics: SharedMetrics,
    ) -> (VecCollection<'scope, Time, Passage, Diff>, Stream<'scope, Time, Vec<DeadLetter>>);
}

impl<'scope> Upsert<'scope> for Stream<'scope, Time, Vec<SourceRecord>> {
    fn upsert_passages(
        self,
        limits: Limits,
        metrics: SharedMetrics,
    ) -> (VecCollection<'scope, Time, Passage, Diff>, Stream<'scope, Time, Vec<DeadLetter>>) {
        let counted = metrics.clone();
        let (events, dead): (Stream<'scope, Time, Vec<PassageEvent>>, Stream<'scope, Time, Vec<DeadLetter>>) = self
            .ok_err(move |record: SourceRecord| {
                counted.records_in.fetch_add(1, Ordering::Relaxed);
                record.and_then(|event| match limits.check(&event) {
                    None => Ok(event),
                    Some(reason) => {
                        let excerpt = event.passage.as_ref().map(|p| p.text.as_str());
                        Err(DeadLetter::new(Stage::Validate, reason, event.origin.clone(), excerpt))
                    }
                })
            });
        let passages = events.unary_frontier(
            Exchange::new(|e: &PassageEvent| e.id.hashed()),
            "UpsertPassages",
            move |_cap, _info| {
                let mut pending: BTreeMap<Time, (Capability<Time>, Vec<PassageEvent>)> = BTreeMap::new();
                let mut current: HashMap<String, Passage> = HashMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let time = *cap.least().expect("source records carry a time. This is a bug.");
                        pending.entry(time).or_insert_with(|| (cap.delayed(&time, 0), Vec::new())).1.append(data);
                    });
                    let started = Instant::now();
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (time, (cap, mut events)) = entry.remove_entry();
                        events.sort_by_key(|e| e.seq);
                        let mut before: BTreeMap<String, Option<Passage>> = BTreeMap::new();
                        for event in events {
                            let old = match event.passage {
                                Some(p) => current.insert(event.id.clone(), p),
                                None => current.remove(&event.id),
                            };
                            before.entry(event.id).or_insert(old);
                        }
                        let mut session = output.session(&cap);
                        for (id, old) in before {
                            let new = current.get(&id);
                            if old.as_ref() == new {
                                continue;
                            }
                            if let Some(old) = old {
                                session.give((old, time, -1 as Diff));
                                if new.is_none() {
                                    metrics.passages_deleted.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            if let Some(new) = new {
                                session.give((new.clone(), time, 1 as Diff));
                                metrics.passages_in.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    metrics.source.add_operator_time(started.elapsed());
                }
            },
        );
        (passages.as_collection(), dead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(line: &str) -> String {
        decode_json_passage(line, 1, "c.jsonl:1").unwrap_err().reason
    }

    #[test]
    fn decoding_accepts_beir_ids_numbers_and_deletes() {
        let e = decode_json_passage(r#"{"_id": 7, "title": "T", "text": "x"}"#, 3, "f:3").unwrap();
        assert_eq!((e.id.as_str(), e.seq, e.passage.unwrap().title.as_str()), ("7", 3, "T"));
        let d = decode_json_passage(r#"{"id": "a", "op": "delete"}"#, 4, "f:4").unwrap();
        assert!(d.passage.is_none());
    }

    #[test]
    fn decoding_failures_name_the_field() {
        assert!(reason("{not json").starts_with("malformed JSON"));
        assert_eq!(reason(r#"{"text": "x"}"#), "missing field `id`");
        assert_eq!(reason(r#"{"id": "a"}"#), "missing field `text`");
        assert_eq!(reason(r#"{"id": "a", "text": "  "}"#), "field `text` is empty");
        assert_eq!(reason(r#"{"id": "a", "text": 3}"#), "field `text` must be a string, found a number");
        assert_eq!(reason(r#"[1]"#), "expected a JSON object");
        assert!(reason(r#"{"id": "a", "text": "x", "op": "merge"}"#).contains("field `op`"));
    }

    #[test]
    fn limits_name_the_field_and_count_characters_not_bytes() {
        let limits = Limits { max_text_chars: 3, max_title_chars: 10, max_id_chars: 10 };
        let mut e = decode_json_passage(r#"{"id": "a", "text": "ééé"}"#, 1, "f:1").unwrap();
        assert_eq!(limits.check(&e), None);
        e.passage.as_mut().unwrap().text.push('x');
        assert_eq!(limits.check(&e).unwrap(), "field `text` has 4 characters, over the limit of 3");
    }
}
