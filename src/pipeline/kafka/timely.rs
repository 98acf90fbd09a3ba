//! The Kafka sink as timely operators.
//!
//! [`SinkOperator::sink_to_kafka`] writes a stream of [`SinkRecord`]s, each under its timestamp as epoch,
//! and holds a capability for every epoch until the broker has acknowledged all of that worker's records
//! of it. Its output carries no data; a probe on it therefore passes epoch `e` only when every worker's
//! outputs of epochs `<= e` are durable, which is exactly when each worker may call
//! [`super::KafkaSource::commit_through`]`(e)`.
//!
//! [`UpsertRecords::upsert_records`] turns a differential-style update stream `((key, value), time, diff)`
//! into sink records: per key and time, a value with a positive net count becomes an upsert and a key
//! whose values were only retracted becomes a tombstone.
use crate::connectors::kafka::{KafkaSink, SinkRecord};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

/// Writes records to Kafka; see the module docs.
pub trait SinkOperator<'scope> {
    /// Sends every record to `sink` under its time; the returned stream is empty and its frontier passes
    /// an epoch once the broker acknowledged this worker's records of it. A failed delivery holds its
    /// epoch forever (check [`KafkaSink::check`] in the driver loop).
    fn sink_to_kafka(self, sink: Arc<KafkaSink>) -> StreamVec<'scope, u64, ()>;
}

impl<'scope> SinkOperator<'scope> for StreamVec<'scope, u64, SinkRecord> {
    fn sink_to_kafka(self, sink: Arc<KafkaSink>) -> StreamVec<'scope, u64, ()> {
        let worker = self.scope().worker();
        self.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "KafkaSink", move |_initial, info| {
            // Delivery reports arrive on librdkafka's thread; wake this operator to release epochs.
            let activator = worker.sync_activator_for(info.address.to_vec());
            sink.on_delivery(move || {
                let _ = activator.activate();
            });
            let mut held: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|stamp, containers| {
                    let Some(capability) = stamp.retain_least(output.output_index()) else { return };
                    let epoch = *capability.time();
                    for container in containers {
                        for record in container.drain(..) {
                            if let Err(error) = sink.send(epoch, &record) {
                                // The tracker keeps the epoch unacknowledged; the driver sees `check()` fail.
                                tracing::error!(epoch, key = %record.key_text(), error = %error, "Kafka sink send failed.");
                            }
                        }
                    }
                    held.entry(epoch).or_insert(capability);
                });
                held.retain(|epoch, _| frontier.less_equal(epoch) || sink.unacked_through(*epoch) > 0);
            }
        })
    }
}

/// Turns `((key, value), time, diff)` updates into upserts and tombstones; see the module docs.
pub trait UpsertRecords<'scope, V> {
    /// Consolidates per key and time once the input frontier has passed the time, then emits
    /// [`SinkRecord::upsert`] of the value with a positive net count, or [`SinkRecord::tombstone`] when
    /// the key only lost values. Records are exchanged by key, so each key is decided by one worker.
    fn upsert_records(self) -> StreamVec<'scope, u64, SinkRecord>
    where
        Self: Sized,
    {
        self.upsert_records_with(|_| Vec::new())
    }

    /// As [`UpsertRecords::upsert_records`], adding `headers(value)` to each upsert (e.g. provenance).
    fn upsert_records_with(
        self,
        headers: impl Fn(&V) -> Vec<(String, String)> + 'static,
    ) -> StreamVec<'scope, u64, SinkRecord>;
}

impl<'scope, V> UpsertRecords<'scope, V> for StreamVec<'scope, u64, ((String, V), u64, isize)>
where
    V: Serialize + Ord + Clone + timely::ExchangeData,
{
    fn upsert_records_with(
        self,
        headers: impl Fn(&V) -> Vec<(String, String)> + 'static,
    ) -> StreamVec<'scope, u64, SinkRecord> {
        let by_key = Exchange::new(|update: &((String, V), u64, isize)| hash_key(&update.0 .0));
        self.unary_frontier::<CapacityContainerBuilder<Vec<SinkRecord>>, _, _, _>(by_key, "UpsertRecords", move |_initial, _info| {
            // time -> (capability, key -> value -> net count)
            let mut stash: BTreeMap<u64, (Capability<u64>, KeyCounts<V>)> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|stamp, containers| {
                    let Some(capability) = stamp.retain_least(output.output_index()) else { return };
                    for container in containers {
                        for ((key, value), time, diff) in container.drain(..) {
                            let entry = stash.entry(time).or_insert_with(|| (capability.delayed(&time), HashMap::new()));
                            *entry.1.entry(key).or_default().entry(value).or_insert(0) += diff;
                        }
                    }
                });
                while let Some(entry) = stash.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (capability, keys) = entry.remove();
                    let mut session = output.session(&capability);
                    for (key, values) in keys {
                        let live: Vec<&V> = values.iter().filter(|(_, n)| **n > 0).map(|(v, _)| v).collect();
                        match live.last() {
                            Some(value) => {
                                if live.len() > 1 {
                                    tracing::warn!(key = %key, values = live.len(), "Several live values for one key; the largest wins.");
                                }
                                let mut record = SinkRecord::upsert(&key, *value);
                                record.headers = headers(value);
                                session.give(record);
                            }
                            None if values.values().any(|n| *n < 0) => session.give(SinkRecord::tombstone(&key)),
                            None => {}
                        }
                    }
                }
            }
        })
    }
}

/// Net count of each value of each key at one time.
type KeyCounts<V> = HashMap<String, BTreeMap<V, isize>>;

fn hash_key(key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use timely::dataflow::operators::capture::{Capture, Extract};
    use timely::dataflow::operators::Input;

    #[test]
    fn updates_become_one_upsert_or_tombstone_per_key_and_time() {
        let captured = timely::execute_directly(|worker| {
            let (mut input, captured) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<((String, String), u64, isize)>>();
                (input, stream.upsert_records().capture())
            });
            let update = |k: &str, v: &str, t: u64, d: isize| ((k.to_owned(), v.to_owned()), t, d);
            // t0: a gets v1; b gets and loses x (no net change).
            input.send(update("a", "v1", 0, 1));
            input.send(update("b", "x", 0, 1));
            input.send(update("b", "x", 0, -1));
            input.advance_to(1);
            // t1: a's value is replaced.
            input.send(update("a", "v1", 1, -1));
            input.send(update("a", "v2", 1, 1));
            input.advance_to(2);
            // t2: a is retracted.
            input.send(update("a", "v2", 2, -1));
            input.advance_to(3);
            drop(input);
            while worker.step() {}
            captured
        });
        let got: Vec<(u64, Vec<SinkRecord>)> = captured.extract();
        let want = vec![
            (0, vec![SinkRecord::upsert("a", "v1")]),
            (1, vec![SinkRecord::upsert("a", "v2")]),
            (2, vec![SinkRecord::tombstone("a")]),
        ];
        assert_eq!(got, want);
    }
}
