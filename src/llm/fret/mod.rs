//! The FRet LLM tasks on any backend, cached: query generation for passages, and judgements (query
//! likelihood and relevance classification) for (query, candidate passage) pairs.
//!
//! Every result comes back in input order, one per input, so one bad passage never fails its
//! neighbours. Failures are values: [`QueryGenFailure`] for query generation (a failed call, or an
//! answer that is empty, unparsable or echoed), [`LlmError`] for judgements.
//!
//! **QL fallback.** When the backend cannot score continuations (`LlmError::Unsupported`, e.g. a remote
//! server without prompt log-probabilities), judgements carry `ql: None` and the relabel step ranks by
//! RC alone. After the first such answer no more QL requests are sent to that backend.
//!
//! **RC off.** With [`FretOptions::relevance`] off (the pipeline does this when the fusion weights RC 0),
//! judgements are QL alone and cost one request per pair.
mod cached;
pub mod scripted;

pub use crate::llm::prompts::{EchoSource, QueryGenFailure};
pub use scripted::ScriptedLlm;

use crate::llm::cache::{CacheKey, CacheStats, LlmCache};
use crate::llm::prompts::{expected_grade, FretPrompts, PromptKind, PromptOptions};
use crate::llm::{BackendId, LlmBackend, LlmError, Sampling};
use crate::records::Passage;
use cached::{cached_batches, Batching};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Settings of the FRet LLM layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FretOptions {
    /// Requests per backend call (the local backend runs one batch per forward pass; the remote one sends
    /// a batch's requests concurrently).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Backend calls in flight at once. 1 suits the local backend; raise it for remote servers so that
    /// `batch_size * batches_in_flight` covers the server's `max_concurrency`.
    #[serde(default = "default_batches_in_flight")]
    pub batches_in_flight: usize,
    /// Settings of the prompts.
    #[serde(default)]
    pub prompts: PromptOptions,
    /// Tries per passage at writing a usable query: the first is greedy, each retry samples (temperature
    /// [`RETRY_TEMPERATURE`], top-p 0.95, seed = attempt number) and is taken only when the answers before
    /// it were empty, unparsable or echoed. Small models echo the passage's title or first sentence often;
    /// retries turn many of those passages into examples. 1 = greedy only.
    #[serde(default = "default_generation_attempts")]
    pub generation_attempts: usize,
    /// Temperature of a passage's further queries (variants 1, 2, ...; [`query_sampling`]); retries stay
    /// at [`RETRY_TEMPERATURE`], whose heat is what gets them past an echo. Default
    /// [`DEFAULT_FURTHER_QUERY_TEMPERATURE`].
    #[serde(default = "default_temperature")]
    pub further_query_temperature: f32,
    /// Ask for relevance classification in judgements. Off when the fusion gives RC no weight (a small
    /// judge whose RC is noise): judging then costs one QL request per pair instead of two, and
    /// judgements carry `rc = 0` with no grade probabilities. Needs a backend that scores continuations.
    #[serde(default = "default_relevance")]
    pub relevance: bool,
}

/// Default of [`FretOptions::generation_attempts`] (also the pipeline config's and the CLI's).
pub const DEFAULT_GENERATION_ATTEMPTS: usize = 3;

/// Most attempts per query, and most queries per passage, that keep [`query_sampling`]'s seeds apart.
pub const MAX_GENERATION_ATTEMPTS: usize = 1000;

/// Sampling temperature of query-generation retries.
pub const RETRY_TEMPERATURE: f32 = 0.8;

/// Default of [`FretOptions::further_query_temperature`]: cooler than a retry, because SmolLM2-135M's second
/// cranfield queries passed the round-trip filter for 51% of passages at 0.5 against 26% at 0.8 (the first
/// 200 passages; `scripts/sweeps/2026-12-08-temperature.sh`, docs/RESULTS.md), while 0.3 left fewer of them
/// past generation and the near-duplicate check.
pub const DEFAULT_FURTHER_QUERY_TEMPERATURE: f32 = 0.5;

/// Whether `t` can be [`FretOptions::further_query_temperature`]: in (0, 2] (greedy is the first query's;
/// hotter than 2 is noise).
pub fn valid_further_query_temperature(t: f64) -> bool {
    t.is_finite() && t > 0.0 && t <= 2.0
}

/// How attempt `attempt` (0-based) at variant `variant` of a passage's queries samples; `None`: greedy.
///
/// Variant 0 is the passage's first query: greedy, then retries at [`RETRY_TEMPERATURE`], top-p 0.95, seed
/// = attempt number (1, 2, ...), whatever `temperature` says. A further variant samples every attempt:
/// the first at `temperature`, its retries at [`RETRY_TEMPERATURE`], seed `variant * 1000 + attempt`,
/// which no other variant or attempt uses while attempts stay below [`MAX_GENERATION_ATTEMPTS`] (and
/// which stays within the 32 bits some servers take while variants do).
pub fn query_sampling(variant: u32, attempt: u32, temperature: f32) -> Option<Sampling> {
    if variant == 0 && attempt == 0 {
        return None;
    }
    let seed = u64::from(variant) * MAX_GENERATION_ATTEMPTS as u64 + u64::from(attempt);
    let temperature = if attempt == 0 { temperature } else { RETRY_TEMPERATURE };
    Some(Sampling { temperature, top_p: 0.95, seed })
}

fn default_batch_size() -> usize {
    16
}
fn default_generation_attempts() -> usize {
    DEFAULT_GENERATION_ATTEMPTS
}
fn default_temperature() -> f32 {
    DEFAULT_FURTHER_QUERY_TEMPERATURE
}
fn default_batches_in_flight() -> usize {
    1
}
fn default_relevance() -> bool {
    true
}

impl Default for FretOptions {
    fn default() -> Self {
        Self {
            batch_size: default_batch_size(),
            batches_in_flight: default_batches_in_flight(),
            prompts: PromptOptions::default(),
            generation_attempts: default_generation_attempts(),
            further_query_temperature: default_temperature(),
            relevance: default_relevance(),
        }
    }
}

/// A task and a query written by the LLM for a passage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratedQuery {
    /// The task description.
    pub task: String,
    /// The query.
    pub query: String,
    /// Version of the query-generation prompt.
    pub prompt_version: String,
    /// The model that wrote it.
    pub model: String,
}

/// The LLM's two scores of a (query, passage) pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// Query likelihood: `log P(query | passage)`, summed over the query's tokens (natural log). `None`
    /// when the backend cannot score continuations; rank by `rc` alone then.
    pub ql: Option<f64>,
    /// Number of query tokens behind `ql` (0 when `ql` is `None`).
    pub ql_tokens: usize,
    /// Relevance classification: expected grade / 3, in `[0, 1]`; 0 when RC is off
    /// ([`FretOptions::relevance`]).
    pub rc: f64,
    /// Probabilities of the grades 0 ("irrelevant") to 3 ("perfectly relevant"); empty when RC is off.
    pub rc_probs: Vec<f32>,
    /// The judging model.
    pub model: String,
    /// Version of the QL prompt.
    pub ql_prompt_version: String,
    /// Version of the RC prompt.
    pub rc_prompt_version: String,
}

/// Requests sent to the backend since the layer was built (cache hits are not calls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelCalls {
    /// Generation requests.
    pub generate: u64,
    /// Continuation-scoring (QL) requests.
    pub score: u64,
    /// Label-probability (RC) requests.
    pub label: u64,
}

impl ModelCalls {
    /// All requests.
    pub fn total(&self) -> u64 {
        self.generate + self.score + self.label
    }
}

/// The FRet LLM tasks over a backend and an optional durable cache.
pub struct FretLlm {
    backend: Arc<dyn LlmBackend>,
    id: BackendId,
    cache: Option<Arc<LlmCache>>,
    prompts: FretPrompts,
    options: FretOptions,
    generate_calls: AtomicU64,
    score_calls: AtomicU64,
    label_calls: AtomicU64,
    cache_hits: AtomicU64,
    ql_unsupported: AtomicBool,
}

impl std::fmt::Debug for FretLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FretLlm")
            .field("backend", &self.id)
            .field("cache", &self.cache)
            .field("options", &self.options)
            .field("calls", &self.model_calls())
            .finish()
    }
}

impl FretLlm {
    /// The FRet tasks on `backend`, caching results in `cache` when given.
    pub fn new(backend: Arc<dyn LlmBackend>, cache: Option<Arc<LlmCache>>, options: FretOptions) -> Self {
        let id = backend.id();
        Self {
            backend,
            id,
            cache,
            prompts: FretPrompts::new(options.prompts.clone()),
            options,
            generate_calls: AtomicU64::new(0),
            score_calls: AtomicU64::new(0),
            label_calls: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            ql_unsupported: AtomicBool::new(false),
        }
    }

    /// The backend's identity.
    pub fn backend_id(&self) -> &BackendId {
        &self.id
    }

    /// The prompts (for their versions).
    pub fn prompts(&self) -> &FretPrompts {
        &self.prompts
    }

    /// Requests sent to the backend so far.
    pub fn model_calls(&self) -> ModelCalls {
        ModelCalls {
            generate: self.generate_calls.load(Ordering::Relaxed),
            score: self.score_calls.load(Ordering::Relaxed),
            label: self.label_calls.load(Ordering::Relaxed),
        }
    }

    /// Cache hits, misses and writes, when there is a cache: of the whole cache, which other layers may
    /// share (a pipeline's generator and judge do).
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(|c| c.stats())
    }

    /// Requests of this layer answered from the cache so far.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }

    /// A task and a query for each passage, or why there is none (the last attempt's reason; see
    /// [`FretOptions::generation_attempts`]): each passage's first query ([`query_sampling`], variant 0).
    pub async fn generate_queries(&self, passages: &[Passage]) -> Vec<Result<GeneratedQuery, QueryGenFailure>> {
        let seeds: Vec<(&Passage, u32)> = passages.iter().map(|p| (p, 0)).collect();
        self.generate_query_variants(&seeds).await
    }

    /// A task and a query for each `(passage, variant)`: variant 0 is a passage's first query (greedy,
    /// then sampled retries), variant `v > 0` its `v`-th further one, every attempt sampled with seeds of
    /// its own ([`query_sampling`]), so a passage's variants are different requests (and cache entries),
    /// and asking for more variants later reuses the answers to the first ones. Failures as
    /// [`Self::generate_queries`].
    pub async fn generate_query_variants(
        &self,
        seeds: &[(&Passage, u32)],
    ) -> Vec<Result<GeneratedQuery, QueryGenFailure>> {
        let kind = PromptKind::QueryGeneration;
        let version = self.prompts.version(kind).to_string();
        let mut results: Vec<Option<Result<GeneratedQuery, QueryGenFailure>>> = seeds.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..seeds.len()).collect();
        for attempt in 0..self.options.generation_attempts.max(1) {
            if pending.is_empty() {
                break;
            }
            let requests: Vec<_> = pending
                .iter()
                .map(|&i| {
                    let (passage, variant) = seeds[i];
                    let mut request = self.prompts.query_generation(passage);
                    if let Some(sampling) =
                        query_sampling(variant, attempt as u32, self.options.further_query_temperature)
                    {
                        request.sampling = sampling;
                    }
                    request
                })
                .collect();
            let keys = self.keys(kind, &requests);
            let backend = &self.backend;
            let answers = self.cached(keys, requests, &self.generate_calls, |batch| backend.generate(batch)).await;
            let mut retry = Vec::new();
            for (i, answer) in pending.iter().copied().zip(answers) {
                let (passage, variant) = seeds[i];
                let outcome = answer.map_err(|error| QueryGenFailure::Llm { error }).and_then(|generation| {
                    self.prompts.parse_query_generation(&generation.text, passage).map(|tq| GeneratedQuery {
                        task: tq.task,
                        query: tq.query,
                        prompt_version: version.clone(),
                        model: self.id.model.clone(),
                    })
                });
                if let Err(failure) = &outcome {
                    tracing::debug!(passage = %passage.id, variant, attempt, reason = failure.reason(), %failure, "No query for this passage.");
                    // A failed call was already retried by the backend; only bad answers get another try.
                    if !matches!(failure, QueryGenFailure::Llm { .. }) {
                        retry.push(i);
                    }
                }
                results[i] = Some(outcome);
            }
            pending = retry;
        }
        results.into_iter().map(|r| r.expect("every passage is attempted at least once. This is a bug.")).collect()
    }

    /// QL and RC for each (query text, passage) pair (QL alone when [`FretOptions::relevance`] is off).
    pub async fn judge(&self, pairs: &[(&str, &Passage)]) -> Vec<Result<Judgement, LlmError>> {
        let backend = &self.backend;
        let rc = async {
            if !self.options.relevance {
                return vec![Ok(None); pairs.len()];
            }
            let requests: Vec<_> = pairs.iter().map(|(q, p)| self.prompts.relevance(q, p)).collect();
            let keys = self.keys(PromptKind::Relevance, &requests);
            self.cached(keys, requests, &self.label_calls, |batch| backend.label_probs(batch))
                .await
                .into_iter()
                .map(|r| r.map(Some))
                .collect()
        };
        let ql = async {
            if self.ql_unsupported.load(Ordering::Relaxed) {
                return vec![Err(LlmError::Unsupported("query likelihood".to_string())); pairs.len()];
            }
            let requests: Vec<_> = pairs.iter().map(|(q, p)| self.prompts.query_likelihood(q, p)).collect();
            let keys = self.keys(PromptKind::QueryLikelihood, &requests);
            self.cached(keys, requests, &self.score_calls, |batch| backend.score(batch)).await
        };
        let (rc, ql) = futures::join!(rc, ql);
        let ql_prompt_version = self.prompts.version(PromptKind::QueryLikelihood).to_string();
        let rc_prompt_version = self.prompts.version(PromptKind::Relevance).to_string();
        rc.into_iter()
            .zip(ql)
            .map(|(rc, ql)| {
                let ql = match ql {
                    Ok(score) => Some(score),
                    Err(LlmError::Unsupported(why)) => {
                        if !self.ql_unsupported.swap(true, Ordering::Relaxed) {
                            tracing::warn!(backend = %self.id.backend, %why, "No query likelihood from this backend; ranking by relevance classification alone.");
                        }
                        None
                    }
                    Err(error) => return Err(error),
                };
                let rc = rc?;
                if ql.is_none() && rc.is_none() {
                    return Err(LlmError::Unsupported(
                        "judging with relevance classification off needs query likelihood, which this backend cannot score; give RC a weight".to_string(),
                    ));
                }
                Ok(Judgement {
                    ql: ql.as_ref().map(|s| s.sum_logprob),
                    ql_tokens: ql.as_ref().map_or(0, |s| s.token_logprobs.len()),
                    rc: rc.as_ref().map_or(0.0, |d| expected_grade(&d.probs)),
                    rc_probs: rc.map(|d| d.probs).unwrap_or_default(),
                    model: self.id.model.clone(),
                    ql_prompt_version: ql_prompt_version.clone(),
                    rc_prompt_version: if self.options.relevance { rc_prompt_version.clone() } else { String::new() },
                })
            })
            .collect()
    }

    /// Whether judgements include relevance classification.
    pub fn relevance(&self) -> bool {
        self.options.relevance
    }

    fn keys<T: Serialize>(&self, kind: PromptKind, requests: &[T]) -> Vec<CacheKey> {
        let version = self.prompts.version(kind);
        requests.iter().map(|r| CacheKey::for_request(&self.id, version, kind.as_str(), r)).collect()
    }

    /// [`cached_batches`] with this layer's cache, batching and hit counter; `calls` counts the requests sent.
    async fn cached<Req, Resp, F, Fut>(
        &self,
        keys: Vec<CacheKey>,
        requests: Vec<Req>,
        calls: &AtomicU64,
        call: F,
    ) -> Vec<Result<Resp, LlmError>>
    where
        Req: Clone,
        Resp: Serialize + serde::de::DeserializeOwned + Clone + Send + 'static,
        F: Fn(Vec<Req>) -> Fut,
        Fut: std::future::Future<Output = Vec<Result<Resp, LlmError>>>,
    {
        let (batch_size, batches_in_flight) = (self.options.batch_size, self.options.batches_in_flight);
        let batching = Batching { batch_size, batches_in_flight };
        cached_batches(self.cache.as_ref(), keys, requests, batching, calls, &self.cache_hits, call).await
    }
}
