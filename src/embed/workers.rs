//! Running batches on several CPU threads at once, each single-threaded.
//!
//! On a CPU, LibTorch normally splits every operation of one batch across its threads, and every one of the
//! ~100 operations of a forward pass ends in a barrier where fast threads wait for slow ones. When there are
//! several batches to run, giving each thread whole batches instead removes those barriers: every thread
//! runs its own batches from start to end with one LibTorch thread (the setting is per thread for
//! LibTorch's OpenMP and MKL), sharing the parameters without copies. Results are identical to the
//! single-worker path up to floating-point summation order.
use super::batching::TokenBatch;
use super::bert::BertModel;
use super::config::PoolingConfig;
use super::pooling::pool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use tch::{Device, Tensor};

/// What every worker needs to turn a batch of token ids into sentence vectors.
pub(crate) struct BatchJob<'a> {
    /// Token ids of every text.
    pub ids: &'a [Vec<u32>],
    /// Batches as lists of text indices.
    pub batches: &'a [Vec<usize>],
    /// Padding id.
    pub pad_id: i64,
    /// Pooling modes.
    pub pooling: PoolingConfig,
    /// Whether to normalize.
    pub normalize: bool,
}

impl BatchJob<'_> {
    /// Sentence vectors of batch `b` on the CPU, rows in the batch's order.
    pub fn run(&self, model: &BertModel, b: usize, device: Device) -> Tensor {
        let seqs: Vec<&[u32]> = self.batches[b].iter().map(|&i| self.ids[i].as_slice()).collect();
        let tokens = TokenBatch::pad(&seqs, self.pad_id, device);
        let hidden = model.forward_t(&tokens.input_ids, &tokens.attention_mask, false);
        pool(&self.pooling, &hidden, &tokens.attention_mask, self.normalize).to_device(Device::Cpu)
    }
}

/// Runs every batch of `job` on `workers` CPU threads (each with one LibTorch thread), calling `done` on
/// the calling thread with each batch index and its vectors as they finish.
pub(crate) fn run_on_cpu_workers(
    model: &BertModel,
    job: &BatchJob<'_>,
    workers: usize,
    done: &mut dyn FnMut(usize, Tensor),
) {
    let next = AtomicUsize::new(0);
    let (send, receive) = mpsc::channel::<(usize, Tensor)>();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let model = model.shallow_clone();
            let send = send.clone();
            let next = &next;
            scope.spawn(move || {
                tch::set_num_threads(1);
                let _no_grad = tch::no_grad_guard();
                loop {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b >= job.batches.len() {
                        break;
                    }
                    let vectors = job.run(&model, b, Device::Cpu);
                    if send.send((b, vectors)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(send);
        for (b, vectors) in receive {
            done(b, vectors);
        }
    });
}
