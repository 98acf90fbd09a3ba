//! The one driver loop: what every timely worker of every pipeline runs, whatever its input (a file,
//! Kafka partitions) and its sinks (files and the in-process trainer, a Kafka topic).
//!
//! A worker builds its dataflow from its [`WorkerInput`]'s records (and the encoder version collection,
//! fed by worker 0 when the embedder follows a checkpoint directory: [`LoopOptions::follow`]) to its
//! sinks, which end in a probe that passes an epoch once that epoch's outputs are durable. Then it loops:
//!
//! 1. advance the input to the current epoch ([`Epochs`]);
//! 2. read a batch, unless more than [`LoopOptions::max_open_epochs`] epochs with data are unfinished (so
//!    a fast source cannot run far ahead of the models, and memory stays bounded);
//! 3. step the worker (parking briefly when there was nothing to read);
//! 4. check the sinks' health;
//! 5. every [`LoopOptions::commit_interval`], commit the input through the last epoch the probe passed;
//! 6. stop when the input ends, has been idle for [`LoopOptions::idle_exit`], or [`LoopOptions::stop`] is set.
//!
//! Then it closes the input, steps until every output is durable, and commits everything.
//!
//! What differs between inputs is an option or a trait method, not another loop:
//! - **Epochs.** A file gives every batch its own epoch ([`Epochs::PerBatch`]), so reruns produce the same
//!   change stream; Kafka uses wall-clock ticks shared by all workers ([`Epochs::Tick`]), so a worker whose
//!   partitions are quiet does not hold the others back.
//! - **Commits.** A file has nothing to commit; Kafka commits consumer offsets
//!   ([`WorkerInput::commit_through`]), which is why the probe sits after the sinks.
use crate::dataflow::embedder::{EmbedderVersion, SharedEmbedder};
use crate::dataflow::labeler::Labeler;
use crate::dataflow::progress::{SharedMetrics, Snapshot};
use crate::dataflow::{Diff, Time};
use differential_dataflow::input::{Input as _, InputSession};
use differential_dataflow::VecCollection;
use std::collections::VecDeque;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Input;
use timely::dataflow::{InputHandle, ProbeHandle, StreamVec};

/// What one poll of a [`WorkerInput`] found.
#[derive(Debug)]
pub enum Polled<R> {
    /// Records for the epoch the poll was given (never empty).
    Records(Vec<R>),
    /// Nothing now; more may come.
    Nothing,
    /// The input has ended: nothing more will come.
    Ended,
}

/// One worker's share of a pipeline's input.
pub trait WorkerInput {
    /// What the input hands to the dataflow.
    type Record: Clone + 'static;
    /// Why reading or committing failed (also the type of the sinks' health errors).
    type Error: Display;

    /// Up to `max` records, which the loop stamps with `epoch` (epochs never decrease between calls).
    /// Should not block for long: the worker steps its dataflow between polls.
    fn poll(&mut self, epoch: Time, max: usize) -> Result<Polled<Self::Record>, Self::Error>;

    /// Every output derived from records of epochs `<= epoch` is durable: make them read for good (commit
    /// offsets). Called periodically while running (an error there is logged and the call retried later)
    /// and once at the end (an error there is the run's).
    fn commit_through(&mut self, _epoch: Time) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Called after every commit attempt (every `commit_interval`, also before any epoch has finished, and
    /// after the final commit): where the input reports how far it has got (a Kafka source's lag), so that
    /// it is visible while a first epoch is still in the models.
    fn report_progress(&mut self) {}
}

/// How a worker's input records are grouped into epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epochs {
    /// Every non-empty batch is an epoch of its own.
    PerBatch,
    /// Records read within one tick share an epoch (epoch = time since start / tick, on every worker).
    Tick(Duration),
}

/// How the loop batches, waits and ends.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// How records are grouped into epochs.
    pub epochs: Epochs,
    /// Most records handed to the dataflow per poll.
    pub batch: usize,
    /// With [`Epochs::Tick`], most records of one epoch: a worker whose tick has this many moves on to the
    /// next epoch at once. A backlog (a topic read from its start) then becomes many small epochs that
    /// finish, and are committed, one after another, instead of one epoch that finishes only at the end.
    pub epoch_records: usize,
    /// Read more only while at most this many epochs with data are unfinished.
    pub max_open_epochs: usize,
    /// Longest park of the worker when a loop iteration read nothing (an input that has records wakes it
    /// sooner where it can, as the file reader does).
    pub park: Duration,
    /// How often the input is committed (at most).
    pub commit_interval: Duration,
    /// Stop when this worker has read nothing for this long (`None`: until the input ends or `stop`).
    pub idle_exit: Option<Duration>,
    /// Sleep this long after each non-empty batch (slows a run down for crash tests).
    pub throttle: Option<Duration>,
    /// Set (e.g. by a Ctrl-C handler) to stop reading, drain and commit.
    pub stop: Option<Arc<AtomicBool>>,
    /// An encoder that follows a checkpoint directory: worker 0 polls it every loop iteration and feeds
    /// each version change into the dataflow's version collection at the current epoch.
    pub follow: Option<SharedEmbedder>,
}

/// Most epochs with data a file pipeline lets run ahead of the slowest stage.
pub const MAX_OPEN_EPOCHS: usize = 4;

impl Default for LoopOptions {
    /// A file's settings: an epoch per batch, at most [`MAX_OPEN_EPOCHS`] unfinished, park 100 ms.
    fn default() -> Self {
        Self {
            epochs: Epochs::PerBatch,
            batch: usize::MAX,
            epoch_records: usize::MAX,
            max_open_epochs: MAX_OPEN_EPOCHS,
            park: Duration::from_millis(100),
            commit_interval: Duration::from_millis(200),
            idle_exit: None,
            throttle: None,
            stop: None,
            follow: None,
        }
    }
}

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Input records handed to the dataflow (dead letters included).
    pub records: u64,
    /// Time from this worker's first record until the outputs of its last record were durable (all
    /// workers' outputs up to that epoch, as the probe is global); zero without records.
    pub active: Duration,
}

/// How long the drain parks between steps while it waits for the last outputs to become durable.
const DRAIN_PARK: Duration = Duration::from_millis(10);

/// The dataflow's two inputs, advanced together: the input's records and the encoder version in use
/// (fed only when [`LoopOptions::follow`] is set, by worker 0).
struct Inputs<R: Clone + 'static> {
    records: InputHandle<Time, CapacityContainerBuilder<Vec<R>>>,
    versions: InputSession<Time, EmbedderVersion, Diff>,
}

impl<R: Clone + 'static> Inputs<R> {
    fn time(&self) -> Time {
        *self.records.time()
    }

    fn advance_to(&mut self, epoch: Time) {
        self.records.advance_to(epoch);
        self.versions.advance_to(epoch);
        self.versions.flush();
    }
}

/// Runs one worker's pipeline: `build` makes the dataflow from the input's records and the encoder
/// version collection, and returns the probe after its sinks; `healthy` reports a sink that failed. See
/// the module docs for the loop.
pub fn drive<I, B, H>(
    worker: &mut timely::worker::Worker,
    source: &mut I,
    build: B,
    mut healthy: H,
    options: &LoopOptions,
) -> Result<WorkerReport, I::Error>
where
    I: WorkerInput,
    B: for<'scope> FnOnce(
        StreamVec<'scope, Time, I::Record>,
        VecCollection<'scope, Time, EmbedderVersion, Diff>,
    ) -> ProbeHandle<Time>,
    H: FnMut() -> Result<(), I::Error>,
{
    let (mut input, probe) = worker.dataflow::<Time, _, _>(|scope| {
        let (records, record_stream) = scope.new_input::<Vec<I::Record>>();
        let (versions, version_collection) = scope.new_collection();
        (Inputs { records, versions }, build(record_stream, version_collection))
    });
    let follow = options.follow.as_ref().filter(|_| worker.index() == 0);
    let started = Instant::now();
    let mut report = WorkerReport::default();
    let (mut first_record, mut last_record) = (None::<Instant>, Instant::now());
    // The epoch of this worker's latest records, and when the probe passed it.
    let (mut last_data_epoch, mut acked_at) = (None::<Time>, None::<Instant>);
    // Epochs with data the probe has not passed yet, oldest first.
    let mut open: VecDeque<Time> = VecDeque::new();
    let mut last_commit = Instant::now();
    // Records this worker has put into the epoch `epoch_of_count` (see `LoopOptions::epoch_records`).
    let (mut epoch_of_count, mut in_epoch) = (0 as Time, 0usize);
    loop {
        if let Epochs::Tick(tick) = options.epochs {
            let now = (started.elapsed().as_millis() / tick.as_millis().max(1)) as Time;
            if now > input.time() {
                input.advance_to(now);
            }
        }
        if let Some(change) = follow.and_then(SharedEmbedder::poll_follow) {
            // At the current epoch, which a file's input then closes as it does after a batch.
            let epoch = input.time();
            if let Some(from) = change.from {
                input.versions.update(from, -1);
            }
            input.versions.update(change.to, 1);
            input.versions.flush();
            if open.back() != Some(&epoch) {
                open.push_back(epoch);
            }
            if options.epochs == Epochs::PerBatch {
                input.advance_to(epoch + 1);
            }
        }
        while open.front().is_some_and(|epoch| !probe.less_equal(epoch)) {
            open.pop_front();
        }
        let mut read = false;
        if open.len() <= options.max_open_epochs {
            let epoch = input.time();
            if epoch != epoch_of_count {
                (epoch_of_count, in_epoch) = (epoch, 0);
            }
            let room = options.epoch_records.saturating_sub(in_epoch).max(1);
            match source.poll(epoch, options.batch.min(room))? {
                Polled::Records(mut batch) if !batch.is_empty() => {
                    read = true;
                    report.records += batch.len() as u64;
                    in_epoch += batch.len();
                    first_record.get_or_insert_with(Instant::now);
                    last_record = Instant::now();
                    input.records.send_batch(&mut batch);
                    if open.back() != Some(&epoch) {
                        open.push_back(epoch);
                    }
                    (last_data_epoch, acked_at) = (Some(epoch), None);
                    if options.epochs == Epochs::PerBatch || in_epoch >= options.epoch_records {
                        input.advance_to(epoch + 1);
                    }
                    if let Some(pause) = options.throttle {
                        std::thread::sleep(pause);
                    }
                }
                Polled::Records(_) | Polled::Nothing => {}
                Polled::Ended => break,
            }
        }
        if read {
            worker.step();
        } else {
            worker.step_or_park(Some(options.park));
        }
        healthy()?;
        if acked_at.is_none() && last_data_epoch.is_some_and(|e| !probe.less_equal(&e)) {
            acked_at = Some(Instant::now());
        }
        if last_commit.elapsed() >= options.commit_interval {
            commit_passed(source, &probe);
            source.report_progress();
            last_commit = Instant::now();
        }
        if options.idle_exit.is_some_and(|idle| last_record.elapsed() >= idle) {
            break;
        }
        if options.stop.as_ref().is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            tracing::info!(worker = worker.index(), "Stopping: draining the pipeline and committing.");
            break;
        }
    }
    // Drain: close the input, wait until every output of this worker is durable, commit all.
    let last_epoch = input.time();
    drop(input);
    while probe.less_equal(&last_epoch) {
        worker.step_or_park(Some(DRAIN_PARK));
        healthy()?;
    }
    source.commit_through(last_epoch)?;
    source.report_progress();
    if let Some(first) = first_record {
        report.active = acked_at.unwrap_or_else(Instant::now).duration_since(first);
    }
    Ok(report)
}

/// Commits through the epoch before the probe's frontier; a failure is logged, and the offsets stay
/// pending for the next call.
fn commit_passed<I: WorkerInput>(source: &mut I, probe: &ProbeHandle<Time>) {
    let frontier = probe.with_frontier(|f| f.first().copied());
    let Some(done) = frontier.and_then(|f| f.checked_sub(1)) else { return };
    if let Err(error) = source.commit_through(done) {
        tracing::warn!(%error, epoch = done, "Commit failed; will retry.");
    }
}

/// What a progress display sees while the run goes on.
pub type ProgressHook = Box<dyn FnMut(&Snapshot) + Send>;

/// Calls `hook` with a fresh snapshot four times a second on its own thread until `done` is set; the thread
/// returns the hook for a last call with the final metrics.
pub fn spawn_progress(
    mut hook: ProgressHook,
    metrics: &SharedMetrics,
    labeler: &Arc<dyn Labeler>,
    done: &Arc<AtomicBool>,
    started: Instant,
) -> std::thread::JoinHandle<ProgressHook> {
    let (metrics, labeler, done) = (Arc::clone(metrics), Arc::clone(labeler), Arc::clone(done));
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            let stats = labeler.stats();
            hook(&metrics.snapshot(started, (stats.model_calls, stats.cache_hits)));
            std::thread::sleep(Duration::from_millis(250));
        }
        hook
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::capture::{Capture, Extract};
    use timely::dataflow::operators::generic::Operator;
    use timely::dataflow::operators::{Capability, Probe};

    /// Hands out `batches` in order, then ends; records each poll and commit.
    struct Batches {
        batches: VecDeque<Vec<u32>>,
        /// Whether the dataflow was holding every epoch when each batch was polled.
        held: Arc<AtomicBool>,
        polled_while_held: usize,
        commits: Vec<Time>,
    }

    impl WorkerInput for Batches {
        type Record = u32;
        type Error = String;
        fn poll(&mut self, _epoch: Time, _max: usize) -> Result<Polled<u32>, String> {
            match self.batches.pop_front() {
                Some(batch) => {
                    self.polled_while_held += usize::from(self.held.load(Ordering::SeqCst));
                    Ok(Polled::Records(batch))
                }
                None => Ok(Polled::Ended),
            }
        }
        fn commit_through(&mut self, epoch: Time) -> Result<(), String> {
            self.commits.push(epoch);
            Ok(())
        }
    }

    fn batches(batches: Vec<Vec<u32>>, held: &Arc<AtomicBool>) -> Batches {
        Batches { batches: batches.into(), held: Arc::clone(held), polled_while_held: 0, commits: Vec::new() }
    }

    #[test]
    fn every_batch_is_an_epoch_and_the_end_commits_everything() {
        let held = Arc::new(AtomicBool::new(false));
        let (seen, report, source) = timely::execute_directly(move |worker| {
            let mut source = batches(vec![vec![1, 2], vec![3], vec![4, 5, 6]], &held);
            let captured = Rc::new(RefCell::new(None));
            let slot = Rc::clone(&captured);
            let build = move |records: StreamVec<'_, Time, u32>, _: VecCollection<'_, Time, EmbedderVersion, Diff>| {
                *slot.borrow_mut() = Some(records.clone().capture());
                let (probe, _) = records.probe();
                probe
            };
            let report = drive(worker, &mut source, build, || Ok(()), &LoopOptions::default()).unwrap();
            while worker.step() {}
            let seen: Vec<(Time, Vec<u32>)> = captured.borrow_mut().take().unwrap().extract();
            (seen, report, (source.commits, source.polled_while_held))
        });
        assert_eq!(seen, vec![(0, vec![1, 2]), (1, vec![3]), (2, vec![4, 5, 6])]);
        assert_eq!(report.records, 6);
        // The final commit covers the input's last epoch (the one after the last batch).
        assert_eq!(source.0.last(), Some(&3));
    }

    /// A backlog of `0..end`, read at most `max` records per poll (as a Kafka source does).
    struct Backlog {
        next: u32,
        end: u32,
    }

    impl WorkerInput for Backlog {
        type Record = u32;
        type Error = String;
        fn poll(&mut self, _epoch: Time, max: usize) -> Result<Polled<u32>, String> {
            if self.next == self.end {
                return Ok(Polled::Ended);
            }
            let take = (self.end - self.next).min(u32::try_from(max).unwrap_or(u32::MAX));
            let batch: Vec<u32> = (self.next..self.next + take).collect();
            self.next += take;
            Ok(Polled::Records(batch))
        }
    }

    #[test]
    fn a_backlog_read_within_one_tick_is_cut_into_epochs_of_at_most_epoch_records() {
        let seen = timely::execute_directly(move |worker| {
            let mut source = Backlog { next: 0, end: 10 };
            let captured = Rc::new(RefCell::new(None));
            let slot = Rc::clone(&captured);
            let build = move |records: StreamVec<'_, Time, u32>, _: VecCollection<'_, Time, EmbedderVersion, Diff>| {
                *slot.borrow_mut() = Some(records.clone().capture());
                let (probe, _) = records.probe();
                probe
            };
            // One tick lasts the whole test: without the bound, every record would be in epoch 0.
            let options = LoopOptions {
                epochs: Epochs::Tick(Duration::from_secs(3600)),
                batch: 3,
                epoch_records: 4,
                ..LoopOptions::default()
            };
            drive(worker, &mut source, build, || Ok(()), &options).unwrap();
            while worker.step() {}
            let seen: Vec<(Time, Vec<u32>)> = captured.borrow_mut().take().unwrap().extract();
            seen
        });
        assert_eq!(seen, vec![(0, vec![0, 1, 2, 3]), (1, vec![4, 5, 6, 7]), (2, vec![8, 9])]);
    }

    #[test]
    fn no_more_than_max_open_epochs_are_read_ahead_of_the_dataflow() {
        // The dataflow holds every epoch until `held` is cleared (after 300 ms); meanwhile the driver may
        // read only max_open_epochs + 1 batches (it reads while at most max_open_epochs are open).
        let held = Arc::new(AtomicBool::new(true));
        let release = Arc::clone(&held);
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            release.store(false, Ordering::SeqCst);
        });
        let held_in = Arc::clone(&held);
        let (report, polled_while_held) = timely::execute_directly(move |worker| {
            let mut source = batches((0..10).map(|i| vec![i]).collect(), &held_in);
            let hold = Arc::clone(&held_in);
            let build = move |records: StreamVec<'_, Time, u32>, _: VecCollection<'_, Time, EmbedderVersion, Diff>| {
                let scope = records.scope();
                let held_back = records.unary_frontier::<CapacityContainerBuilder<Vec<u32>>, _, _, _>(
                    Pipeline,
                    "Hold",
                    move |_cap, info| {
                        let activator = scope.activator_for(Rc::clone(&info.address));
                        let mut caps: Vec<Capability<Time>> = Vec::new();
                        move |(input, _frontier), output| {
                            input.for_each(|cap, data| {
                                output.session(&cap).give_container(data);
                                caps.extend(cap.retain_least(0));
                            });
                            if hold.load(Ordering::SeqCst) {
                                activator.activate();
                            } else {
                                caps.clear();
                            }
                        }
                    },
                );
                let (probe, _) = held_back.probe();
                probe
            };
            let options = LoopOptions { max_open_epochs: 2, park: Duration::from_millis(5), ..LoopOptions::default() };
            let report = drive(worker, &mut source, build, || Ok(()), &options).unwrap();
            (report, source.polled_while_held)
        });
        releaser.join().unwrap();
        assert_eq!(polled_while_held, 3, "read ahead of the held dataflow");
        assert_eq!(report.records, 10);
    }
}
