//! Acknowledgement bookkeeping of the sink: per epoch, how many records are in flight, and the first
//! delivery failure. Updated from librdkafka's delivery callbacks (on the producer's polling thread).
use crate::kafka::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::ClientContext;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

type Notify = Box<dyn Fn() + Send + Sync>;

/// In-flight counts per epoch and the first failure.
#[derive(Default)]
pub(super) struct DeliveryTracker {
    in_flight: Mutex<BTreeMap<u64, usize>>,
    failure: Mutex<Option<(String, usize, String)>>,
    notify: Mutex<Option<Notify>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent (plain counter updates).
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DeliveryTracker {
    pub(super) fn sent(&self, epoch: u64) {
        *lock(&self.in_flight).entry(epoch).or_insert(0) += 1;
    }

    fn acked(&self, epoch: u64) {
        let mut in_flight = lock(&self.in_flight);
        let count = in_flight.get_mut(&epoch).expect("an acknowledged epoch was sent. This is a bug.");
        *count -= 1;
        if *count == 0 {
            in_flight.remove(&epoch);
        }
    }

    pub(super) fn unacked_through(&self, epoch: u64) -> usize {
        lock(&self.in_flight).range(..=epoch).map(|(_, n)| n).sum()
    }

    pub(super) fn check(&self) -> Result<(), KafkaError> {
        match &*lock(&self.failure) {
            None => Ok(()),
            Some((topic, failed, message)) => {
                Err(KafkaError::Delivery { topic: topic.clone(), failed: *failed, message: message.clone() })
            }
        }
    }

    pub(super) fn set_notify(&self, notify: Notify) {
        *lock(&self.notify) = Some(notify);
    }

    pub(super) fn failed(&self, topic: &str, message: String) {
        let mut failure = lock(&self.failure);
        match &mut *failure {
            Some((_, failed, _)) => *failed += 1,
            None => *failure = Some((topic.to_owned(), 1, message)),
        }
    }
}

/// The producer's context: routes delivery reports to the tracker.
pub(super) struct SinkContext {
    pub(super) tracker: Arc<DeliveryTracker>,
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, epoch: Self::DeliveryOpaque) {
        if let Err((error, message)) = result {
            tracing::error!(topic = message.topic(), partition = message.partition(), epoch = *epoch, error = %error,
                "Kafka delivery failed; the epoch will not be committed.");
            self.tracker.failed(message.topic(), error.to_string());
            // A failed epoch stays in flight, so nothing at or after it is ever reported as acknowledged.
        } else {
            self.tracker.acked(*epoch);
        }
        if let Some(notify) = &*lock(&self.tracker.notify) {
            notify();
        }
    }
}
