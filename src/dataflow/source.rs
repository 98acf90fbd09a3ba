//! The source stage: decoded records in, the current passage set out.
//!
//! Sources (files, Kafka) emit [`SourceRecord`]s (see [`crate::records`]): a [`PassageEvent`] (an upsert or delete keyed by
//! passage id, with a sequence number that orders events of one source) or a [`DeadLetter`] for a record
//! that could not be decoded. [`Upsert::upsert_passages`] checks the [`Limits`], exchanges events by id
//! and keeps, per id, the latest version: an upsert of a known id retracts the old version and inserts
//! the new one, a delete retracts it. Events of one time apply in sequence order once the frontier has
//! passed that time.
use super::params::Limits;
use super::progress::SharedMetrics;
use super::{Diff, Time};
use crate::records::{DeadLetter, Passage, PassageEvent, SourceRecord, Stage};
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Instant;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

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
    use crate::records::decode_json_passage;

    #[test]
    fn limits_name_the_field_and_count_characters_not_bytes() {
        let limits = Limits { max_text_chars: 3, max_title_chars: 10, max_id_chars: 10, min_words: 0 };
        let mut e = decode_json_passage(r#"{"id": "a", "text": "ééé"}"#, 1, "f:1").unwrap();
        assert_eq!(limits.check(&e), None);
        e.passage.as_mut().unwrap().text.push('x');
        assert_eq!(limits.check(&e).unwrap(), "field `text` has 4 characters, over the limit of 3");
    }

    #[test]
    fn passages_below_the_minimum_of_words_are_rejected_with_their_count() {
        let limits = Limits::default();
        let short = decode_json_passage(r#"{"id": "a", "title": "Lift", "text": "wings"}"#, 1, "f:1").unwrap();
        let reason = limits.check(&short).unwrap();
        assert!(reason.starts_with("too_short: the passage has 2 word(s), below the minimum of 3"), "{reason}");
        let enough = decode_json_passage(r#"{"id": "a", "title": "Lift", "text": "of thin wings"}"#, 1, "f:1").unwrap();
        assert_eq!(limits.check(&enough), None, "title words count");
        let delete = decode_json_passage(r#"{"id": "a", "op": "delete"}"#, 1, "f:1").unwrap();
        assert_eq!(limits.check(&delete), None, "a delete has no text to check");
        assert_eq!(Limits { min_words: 0, ..limits }.check(&short), None, "0 turns the minimum off");
    }
}
