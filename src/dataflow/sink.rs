//! Sink operators: the consolidated change stream of the FRet set, and the dead letters.
//!
//! Both exchange everything to worker 0, which owns the writers (file sinks need one writer; a Kafka sink
//! may choose otherwise). The change sink waits until the frontier passes a time, consolidates that
//! time's updates per key, and emits at most one [`Change`] per key: an upsert with the key's new
//! example, or a retraction when the key has none left. It keeps the current set for snapshots, written
//! when the input ends.
use super::progress::SharedMetrics;
use super::{Diff, Time};
pub use crate::connectors::{ChangeSink, DeadLetterSink, SinkError};
use crate::records::{Change, DeadLetter, Example};
use differential_dataflow::VecCollection;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

/// The first sink error of a run; the driver stops when it is set.
pub type ErrorSlot = Arc<Mutex<Option<SinkError>>>;

fn record_error(slot: &ErrorSlot, error: SinkError) {
    let mut slot = slot.lock().expect("error slot poisoned. This is a bug.");
    if slot.is_none() {
        tracing::error!(%error, "Sink failed; stopping.");
        *slot = Some(error);
    }
}

/// Writes the FRet set's change stream.
pub trait SinkChanges<'scope> {
    /// Sends consolidated changes to `sinks` (used on worker 0; other workers pass an empty list).
    fn sink_changes(self, sinks: Vec<Box<dyn ChangeSink>>, errors: ErrorSlot, metrics: SharedMetrics);
}

impl<'scope> SinkChanges<'scope> for VecCollection<'scope, Time, (String, Example), Diff> {
    fn sink_changes(self, mut sinks: Vec<Box<dyn ChangeSink>>, errors: ErrorSlot, metrics: SharedMetrics) {
        let mut pending: BTreeMap<Time, Vec<((String, Example), Diff)>> = BTreeMap::new();
        let mut current: BTreeMap<String, Example> = BTreeMap::new();
        let mut positive_not_seed = 0usize;
        let mut finished = false;
        self.inner.sink(
            Exchange::new(|_: &((String, Example), Time, Diff)| 0),
            "SinkChanges",
            move |(input, frontier)| {
                input.for_each(|_cap, data| {
                    for (record, time, diff) in data.drain(..) {
                        pending.entry(time).or_default().push((record, diff));
                    }
                });
                let started = Instant::now();
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (time, mut updates) = entry.remove_entry();
                    differential_dataflow::consolidation::consolidate(&mut updates);
                    let changes = changes_at(time, updates, &mut current, &mut positive_not_seed);
                    metrics.example_changes.fetch_add(changes.len() as u64, Ordering::Relaxed);
                    metrics.examples_live.store(current.len() as u64, Ordering::Relaxed);
                    metrics.positive_not_seed.store(positive_not_seed as u64, Ordering::Relaxed);
                    if !changes.is_empty() {
                        write_all(&mut sinks, &errors, |s| s.write(&changes));
                    }
                }
                if frontier.is_empty() && !finished {
                    finished = true;
                    write_all(&mut sinks, &errors, |s| s.finish(&current));
                }
                metrics.sink.add_operator_time(started.elapsed());
            },
        );
    }
}

/// Calls `f` on every sink; on the first error, records it and drops all sinks.
fn write_all(
    sinks: &mut Vec<Box<dyn ChangeSink>>,
    errors: &ErrorSlot,
    mut f: impl FnMut(&mut dyn ChangeSink) -> Result<(), SinkError>,
) {
    for sink in sinks.iter_mut() {
        if let Err(e) = f(sink.as_mut()) {
            record_error(errors, e);
            sinks.clear();
            return;
        }
    }
}

/// Turns one time's consolidated updates into at most one change per key, updating `current` and the
/// count of its examples whose positive is not the seed passage.
pub fn changes_at(
    time: Time,
    updates: Vec<((String, Example), Diff)>,
    current: &mut BTreeMap<String, Example>,
    positive_not_seed: &mut usize,
) -> Vec<Change> {
    let moved = |e: &Example| usize::from(e.positive.id != e.seed_id);
    let mut by_key: BTreeMap<String, (Option<Example>, bool)> = BTreeMap::new();
    for ((key, example), diff) in updates {
        let slot = by_key.entry(key).or_insert((None, false));
        if diff > 0 {
            slot.0 = Some(example);
        } else {
            slot.1 = true;
        }
    }
    let mut changes = Vec::with_capacity(by_key.len());
    for (key, (inserted, _retracted)) in by_key {
        match inserted {
            Some(example) => {
                *positive_not_seed += moved(&example);
                if let Some(old) = current.insert(key.clone(), example.clone()) {
                    *positive_not_seed -= moved(&old);
                }
                changes.push(Change::upsert(example, time));
            }
            None => {
                if let Some(old) = current.remove(&key) {
                    *positive_not_seed -= moved(&old);
                }
                changes.push(Change::retract(key, time));
            }
        }
    }
    changes
}

/// Writes dead letters.
pub trait SinkDeadLetters<'scope> {
    /// Sends every dead letter to `sink` (on worker 0; other workers pass `None`).
    fn sink_dead_letters(self, sink: Option<Box<dyn DeadLetterSink>>, errors: ErrorSlot, metrics: SharedMetrics);
}

impl<'scope> SinkDeadLetters<'scope> for Stream<'scope, Time, Vec<DeadLetter>> {
    fn sink_dead_letters(self, mut sink: Option<Box<dyn DeadLetterSink>>, errors: ErrorSlot, metrics: SharedMetrics) {
        self.sink(Exchange::new(|_: &DeadLetter| 0), "SinkDeadLetters", move |(input, _frontier)| {
            let mut wrote = false;
            input.for_each(|_cap, data| {
                for letter in data.iter() {
                    metrics.count_dead_letter(letter.stage.as_str());
                    tracing::warn!(stage = ?letter.stage, input = %letter.input, reason = %letter.reason, "Dead letter.");
                }
                if let Some(s) = sink.as_mut() {
                    if let Err(e) = s.write(data) {
                        record_error(&errors, e);
                        sink = None;
                    }
                    wrote = true;
                }
            });
            if wrote {
                if let Some(Err(e)) = sink.as_mut().map(|s| s.flush()) {
                    record_error(&errors, e);
                    sink = None;
                }
            }
        });
    }
}
