//! The generic async-batch operator: maps each record of a collection through a batched async function
//! (an LLM or an encoder) without ever blocking a timely worker.
//!
//! How it works, per worker:
//! - Records are exchanged by hash, so model work spreads over all workers and each record's answer
//!   lives on one worker.
//! - A record seen for the first time is queued; batches of up to `max_batch` records are spawned on a
//!   tokio runtime when full, when the oldest queued record has waited `max_wait`, or when the input has
//!   ended. At most `max_in_flight` batches per worker run at once; more full batches wait on the
//!   runtime for a free slot (`SUBMIT_AHEAD`), so the next call starts the moment one ends, even
//!   while this worker is busy in another operator.
//! - For every update waiting on an answer the operator holds a capability at the update's time, so
//!   downstream frontiers cannot pass it. When a batch completes, its task sends the answers over a
//!   channel and wakes the operator with a `SyncActivator`.
//! - Answers are remembered while their record is live: further updates of the same record (a
//!   retraction, a duplicate) are answered from memory without a call. A record whose count drops to
//!   zero is forgotten once the input frontier has passed its last update, so re-adding it asks again.
//! - A failed answer emits one `(record, failure)` on the failure stream and nothing on the output.
//!
//! Contract: the function must be a function — the same input gives the same answer — for the whole time
//! a record is live (greedy decoding or a cache ensure it); otherwise a retraction could not cancel its
//! insertion.
use super::progress::{Metrics, SharedMetrics, StageMetrics};
use super::Diff;
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use futures::FutureExt;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

/// Full batches handed to the runtime per call slot (`max_in_flight`). Measured with
/// `scripts/bench_dataflow.sh` (10,000 passages, 50 ms per LLM batch, 2 workers): 1 (send only when a
/// slot is free) left the LLM idle 10.4% of the time, 2: 6.3%, 8: 2.7%, because a worker busy for a few
/// hundred milliseconds in the fusion or the sinks could not send the next batch.
const SUBMIT_AHEAD: usize = 8;

/// The answer to one input: a value, or a reason in words.
pub type Answer<O> = Result<O, String>;

/// A boxed future of a batch's answers.
pub type BatchFuture<O> = Pin<Box<dyn Future<Output = Vec<Answer<O>>> + Send>>;

/// A batched async function: one answer per input, in input order.
pub trait BatchFn<I, O>: Send + Sync + 'static {
    /// Starts answering `batch`.
    fn call(&self, batch: Vec<I>) -> BatchFuture<O>;
}

impl<I, O, F> BatchFn<I, O> for F
where
    F: Fn(Vec<I>) -> BatchFuture<O> + Send + Sync + 'static,
{
    fn call(&self, batch: Vec<I>) -> BatchFuture<O> {
        self(batch)
    }
}

/// When batches are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most records in one batch.
    pub max_batch: usize,
    /// Longest a queued record waits for its batch to fill.
    pub max_wait: Duration,
    /// Most batches in flight per worker.
    pub max_in_flight: usize,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        Self { max_batch: 16, max_wait: Duration::from_millis(50), max_in_flight: 2 }
    }
}

/// One async stage: its function, batching, runtime and the counters it updates.
pub struct AsyncStage<I, O> {
    /// Operator name (for timely logging).
    pub name: String,
    /// The batched function.
    pub func: Arc<dyn BatchFn<I, O>>,
    /// Batching.
    pub policy: BatchPolicy,
    /// Where batches run.
    pub runtime: tokio::runtime::Handle,
    /// The run's metrics.
    pub metrics: SharedMetrics,
    /// Which counters of `metrics` belong to this stage.
    pub counters: fn(&Metrics) -> &StageMetrics,
    /// Whether the stage calls the LLM (its busy time then also counts in [`Metrics::llm_busy`]).
    pub calls_llm: bool,
}

/// Maps a collection through an [`AsyncStage`].
pub trait AsyncMap<'scope, T: Timestamp, D> {
    /// The mapped collection, and the stream of inputs whose answer was a failure (each reported once,
    /// at the time of its first update).
    fn async_map<O>(
        self,
        stage: AsyncStage<D, O>,
    ) -> (VecCollection<'scope, T, O, Diff>, Stream<'scope, T, Vec<(D, String)>>)
    where
        O: differential_dataflow::Data + Send;
}

/// What the operator knows of one distinct input record.
enum Entry<T, O> {
    /// Queued or in flight; updates waiting for the answer.
    Waiting(Vec<(T, Diff)>),
    /// Answered (`None` = failed); accumulated count of the record and time of its last update.
    Ready { answer: Option<O>, count: Diff, last: T },
}

/// Capabilities held for updates waiting on answers, reference-counted per time.
struct HeldCaps<T: Timestamp> {
    by_time: BTreeMap<T, (Capability<T>, Capability<T>, usize)>,
}

impl<T: Timestamp> HeldCaps<T> {
    fn retain(&mut self, time: &T, make: impl FnOnce() -> (Capability<T>, Capability<T>)) {
        self.by_time
            .entry(time.clone())
            .or_insert_with(|| {
                let (a, b) = make();
                (a, b, 0)
            })
            .2 += 1;
    }

    fn get(&self, time: &T) -> &(Capability<T>, Capability<T>, usize) {
        self.by_time.get(time).expect("no capability held for a waiting update. This is a bug.")
    }

    fn release(&mut self, time: &T) {
        let entry = self.by_time.get_mut(time).expect("releasing an unheld capability. This is a bug.");
        entry.2 -= 1;
        if entry.2 == 0 {
            self.by_time.remove(time);
        }
    }
}

impl<'scope, T, D> AsyncMap<'scope, T, D> for VecCollection<'scope, T, D, Diff>
where
    T: Timestamp + TotalOrder,
    D: differential_dataflow::ExchangeData + Hash + Send,
{
    fn async_map<O>(
        self,
        stage: AsyncStage<D, O>,
    ) -> (VecCollection<'scope, T, O, Diff>, Stream<'scope, T, Vec<(D, String)>>)
    where
        O: differential_dataflow::Data + Send,
    {
        let scope = self.inner.scope();
        let mut builder = OperatorBuilder::new(stage.name.clone(), scope);
        let info = builder.operator_info();
        let mut input = builder.new_input(self.inner, Exchange::new(|u: &(D, T, Diff)| u.0.hashed()));
        let (ok_output, ok_stream) = builder.new_output::<Vec<(O, T, Diff)>>();
        let (err_output, err_stream) = builder.new_output::<Vec<(D, String)>>();
        let mut ok_output = OutputBuilder::<_, CapacityContainerBuilder<Vec<(O, T, Diff)>>>::from(ok_output);
        let mut err_output = OutputBuilder::<_, CapacityContainerBuilder<Vec<(D, String)>>>::from(err_output);

        let activator = scope.activator_for(Rc::clone(&info.address));
        let sync_activator = scope.worker().sync_activator_for(info.address.to_vec());
        let (answers_tx, answers_rx) = mpsc::channel::<(u64, Vec<Answer<O>>)>();
        let AsyncStage { func, policy, runtime, metrics, counters, calls_llm, .. } = stage;
        let max_batch = policy.max_batch.max(1);
        let max_in_flight = policy.max_in_flight.max(1);
        // Calls run at most `max_in_flight` at a time, but up to SUBMIT_AHEAD times that many batches are
        // handed to the runtime: when a call ends, the next batch starts at once, even while this worker
        // is busy in another operator (retrieval, the fusion, sinks) and cannot be scheduled to send it.
        let running = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
        let max_submitted = SUBMIT_AHEAD * max_in_flight;

        builder.build(move |initial| {
            drop(initial);
            let mut memo: HashMap<D, Entry<T, O>> = HashMap::new();
            let mut held = HeldCaps { by_time: BTreeMap::new() };
            let mut queue: VecDeque<D> = VecDeque::new();
            let mut queued_since: Option<Instant> = None;
            let mut in_flight: HashMap<u64, Vec<D>> = HashMap::new();
            let mut next_batch: u64 = 0;
            let mut zeroed: Vec<D> = Vec::new();

            move |frontiers| {
                let mut ok = ok_output.activate();
                let mut err = err_output.activate();

                // 1. Answers that arrived: release the updates waiting on them.
                while let Ok((batch_id, answers)) = answers_rx.try_recv() {
                    let keys = in_flight.remove(&batch_id).expect("answers for an unknown batch. This is a bug.");
                    let answers = if answers.len() == keys.len() {
                        answers
                    } else {
                        let reason = format!("stage returned {} answers for {} inputs", answers.len(), keys.len());
                        keys.iter().map(|_| Err(reason.clone())).collect()
                    };
                    for (key, answer) in keys.into_iter().zip(answers) {
                        let Some(Entry::Waiting(waiters)) = memo.remove(&key) else {
                            panic!("an answered record was not waiting. This is a bug.");
                        };
                        let count: Diff = waiters.iter().map(|(_, r)| *r).sum();
                        let last = waiters.iter().map(|(t, _)| t.clone()).max().expect("no waiters. This is a bug.");
                        let answer = match answer {
                            Ok(out) => {
                                for (time, diff) in &waiters {
                                    let (cap, _, _) = held.get(time);
                                    ok.session(cap).give((out.clone(), time.clone(), *diff));
                                }
                                Some(out)
                            }
                            Err(reason) => {
                                counters(&metrics).failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let first =
                                    waiters.iter().map(|(t, _)| t.clone()).min().expect("no waiters. This is a bug.");
                                let (_, cap, _) = held.get(&first);
                                err.session(cap).give((key.clone(), reason));
                                None
                            }
                        };
                        for (time, _) in &waiters {
                            held.release(time);
                        }
                        if count == 0 {
                            zeroed.push(key.clone());
                        }
                        memo.insert(key, Entry::Ready { answer, count, last });
                    }
                }

                // 2. New updates: answer from memory, or wait (and queue the record if it is new).
                input.for_each(|cap, data| {
                    for (record, time, diff) in data.drain(..) {
                        match memo.get_mut(&record) {
                            Some(Entry::Ready { answer, count, last }) => {
                                if let Some(out) = answer {
                                    ok.session(&cap).give((out.clone(), time.clone(), diff));
                                }
                                *count += diff;
                                if time > *last {
                                    *last = time.clone();
                                }
                                if *count == 0 {
                                    zeroed.push(record);
                                }
                            }
                            Some(Entry::Waiting(waiters)) => {
                                held.retain(&time, || (cap.delayed(&time, 0), cap.delayed(&time, 1)));
                                waiters.push((time, diff));
                            }
                            None => {
                                held.retain(&time, || (cap.delayed(&time, 0), cap.delayed(&time, 1)));
                                memo.insert(record.clone(), Entry::Waiting(vec![(time, diff)]));
                                queue.push_back(record);
                                queued_since.get_or_insert_with(Instant::now);
                            }
                        }
                    }
                });

                // 3. Forget records whose count is zero for good (the frontier passed their last update).
                let frontier = &frontiers[0];
                zeroed.retain(|key| match memo.get(key) {
                    Some(Entry::Ready { count: 0, last, .. }) => {
                        if frontier.less_equal(last) {
                            true
                        } else {
                            memo.remove(key);
                            false
                        }
                    }
                    _ => false,
                });

                // 4. Send batches that are full, waited long enough, or will not grow any more.
                let input_done = frontier.is_empty();
                while !queue.is_empty() {
                    let full = queue.len() >= max_batch;
                    // Only full batches use the extra submission slots: a partial batch is sent only when
                    // a call slot would otherwise stay idle, so that it can keep growing meanwhile.
                    if in_flight.len() >= if full { max_submitted } else { max_in_flight } {
                        break;
                    }
                    let waited = queued_since.is_some_and(|t| t.elapsed() >= policy.max_wait);
                    if !(full || waited || input_done) {
                        break;
                    }
                    let batch: Vec<D> = queue.drain(..queue.len().min(max_batch)).collect();
                    if queue.is_empty() {
                        queued_since = None;
                    }
                    counters(&metrics).batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    counters(&metrics).requests.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    let id = next_batch;
                    next_batch += 1;
                    let n = batch.len();
                    in_flight.insert(id, batch.clone());
                    let (tx, wake) = (answers_tx.clone(), sync_activator.clone());
                    let (clocks, func, running) = (Arc::clone(&metrics), Arc::clone(&func), Arc::clone(&running));
                    runtime.spawn(async move {
                        // The semaphore is never closed; a permit is held for the whole call.
                        let _permit = running.acquire_owned().await;
                        let future = func.call(batch);
                        counters(&clocks).busy.enter();
                        if calls_llm {
                            clocks.llm_busy.enter();
                        }
                        let answers = AssertUnwindSafe(future).catch_unwind().await.unwrap_or_else(|panic| {
                            let what = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_else(|| "unknown panic".into());
                            vec![Err(format!("stage panicked: {what}")); n]
                        });
                        if calls_llm {
                            clocks.llm_busy.exit();
                        }
                        counters(&clocks).busy.exit();
                        // The dataflow may be gone (shutdown); then nobody needs the answers.
                        if tx.send((id, answers)).is_ok() {
                            let _ = wake.activate();
                        }
                    });
                }
                // A partial batch waits for more records, but no longer than `max_wait`.
                if let (Some(since), true) = (queued_since, in_flight.len() < max_in_flight) {
                    activator.activate_after(policy.max_wait.saturating_sub(since.elapsed()));
                }
            }
        });

        (ok_stream.as_collection(), err_stream)
    }
}

use std::rc::Rc;
