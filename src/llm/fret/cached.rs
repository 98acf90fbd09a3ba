//! Cache-through batched calls: look every request up in the cache, send the misses to the backend in
//! batches, store the successes, and return one result per request in order.
use crate::llm::cache::{CacheKey, LlmCache};
use crate::llm::LlmError;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How misses are sent to the backend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batching {
    /// Requests per backend call.
    pub batch_size: usize,
    /// Backend calls in flight at once.
    pub batches_in_flight: usize,
}

/// Answers `requests` from `cache` where it can and from `call` otherwise.
///
/// Identical requests (same key) are sent once. Only successes are stored, one write transaction per
/// batch, as soon as the batch returns. A cache that cannot be read or written is logged and bypassed:
/// results stay correct, only durability is lost. `calls` counts the requests sent to the backend, `hits`
/// those answered from the cache.
pub(crate) async fn cached_batches<Req, Resp, F, Fut>(
    cache: Option<&Arc<LlmCache>>,
    keys: Vec<CacheKey>,
    requests: Vec<Req>,
    batching: Batching,
    calls: &AtomicU64,
    hits: &AtomicU64,
    call: F,
) -> Vec<Result<Resp, LlmError>>
where
    Req: Clone,
    Resp: Serialize + DeserializeOwned + Clone + Send + 'static,
    F: Fn(Vec<Req>) -> Fut,
    Fut: Future<Output = Vec<Result<Resp, LlmError>>>,
{
    debug_assert_eq!(keys.len(), requests.len());
    let mut results: Vec<Option<Result<Resp, LlmError>>> = match cache {
        Some(cache) => lookup(cache, keys.clone()).await.into_iter().map(|hit| hit.map(Ok)).collect(),
        None => vec![None; requests.len()],
    };
    hits.fetch_add(results.iter().filter(|r| r.is_some()).count() as u64, Ordering::Relaxed);
    // Unique missing keys, in first-seen order, with every position that wants each.
    let mut wanted: HashMap<CacheKey, Vec<usize>> = HashMap::new();
    let mut order = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if results[i].is_none() {
            let positions = wanted.entry(*key).or_default();
            if positions.is_empty() {
                order.push(i);
            }
            positions.push(i);
        }
    }
    let chunks: Vec<Vec<usize>> = order.chunks(batching.batch_size.max(1)).map(<[usize]>::to_vec).collect();
    let call = &call;
    let requests = &requests;
    let keys = &keys;
    let mut answered = futures::stream::iter(chunks)
        .map(|chunk| async move {
            let batch: Vec<Req> = chunk.iter().map(|&i| requests[i].clone()).collect();
            calls.fetch_add(batch.len() as u64, Ordering::Relaxed);
            let mut out = call(batch).await;
            if out.len() != chunk.len() {
                let message = format!("the backend returned {} results for {} requests", out.len(), chunk.len());
                out = chunk.iter().map(|_| Err(LlmError::Model(message.clone()))).collect();
            }
            if let Some(cache) = cache {
                let entries: Vec<(CacheKey, Resp)> = chunk
                    .iter()
                    .zip(&out)
                    .filter_map(|(&i, r)| r.as_ref().ok().map(|v| (keys[i], v.clone())))
                    .collect();
                store(cache, entries).await;
            }
            (chunk, out)
        })
        .buffered(batching.batches_in_flight.max(1));
    while let Some((chunk, out)) = answered.next().await {
        for (i, result) in chunk.into_iter().zip(out) {
            let positions = wanted.get(&keys[i]).expect("every sent key is wanted. This is a bug.");
            for &p in positions {
                results[p] = Some(result.clone());
            }
        }
    }
    results.into_iter().map(|r| r.expect("every request is answered. This is a bug.")).collect()
}

/// Cache lookup off the async threads; an unreadable cache counts as all misses.
async fn lookup<Resp: DeserializeOwned + Send + 'static>(
    cache: &Arc<LlmCache>,
    keys: Vec<CacheKey>,
) -> Vec<Option<Resp>> {
    let n = keys.len();
    let cache = Arc::clone(cache);
    match tokio::task::spawn_blocking(move || cache.get_many::<Resp>(&keys)).await {
        Ok(Ok(hits)) => hits,
        Ok(Err(error)) => {
            tracing::warn!(%error, "LLM cache lookup failed; calling the model instead.");
            (0..n).map(|_| None).collect()
        }
        Err(error) => {
            tracing::warn!(%error, "LLM cache lookup panicked; calling the model instead.");
            (0..n).map(|_| None).collect()
        }
    }
}

/// Cache write off the async threads; a failed write is logged (the results are still returned).
async fn store<Resp: Serialize + Send + 'static>(cache: &Arc<LlmCache>, entries: Vec<(CacheKey, Resp)>) {
    if entries.is_empty() {
        return;
    }
    let cache = Arc::clone(cache);
    match tokio::task::spawn_blocking(move || cache.put_many(&entries)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "LLM cache write failed; these results will be recomputed after a restart.")
        }
        Err(error) => tracing::warn!(%error, "LLM cache write panicked."),
    }
}
