//! The LLM layer: one batched interface for generation, continuation scoring and label probabilities,
//! implemented by a local tch backend and an OpenAI-compatible remote backend.
//!
//! Every method takes a batch and returns one result per request, in order, so one bad request never
//! fails its neighbours. Implementations never block the async runtime: CPU-bound work runs on blocking
//! threads.
use serde::{Deserialize, Serialize};

/// A chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

/// What the model is given: raw text to continue, or chat messages rendered with the model's chat template.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Prompt {
    /// Plain text; the model continues it (completion style).
    Text(String),
    /// Chat messages; the backend applies the model's chat template and adds the generation prompt.
    Chat(Vec<ChatMessage>),
}

/// Sampling settings of a generation request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus sampling mass; 1.0 disables it.
    pub top_p: f32,
    /// Seed of the request's random stream (with temperature > 0).
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self { temperature: 0.0, top_p: 1.0, seed: 0 }
    }
}

/// A request to generate text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Upper bound on new tokens.
    pub max_new_tokens: usize,
    /// Strings that end generation (not included in the output).
    pub stop: Vec<String>,
    /// Sampling settings.
    pub sampling: Sampling,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// A stop string or the end-of-sequence token.
    Stop,
    /// `max_new_tokens` reached.
    Length,
}

/// Generated text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The new text, without the prompt and without the stop string.
    pub text: String,
    /// Number of tokens generated.
    pub tokens: usize,
    /// Why generation ended.
    pub finish: FinishReason,
}

/// A request to score `continuation` given `prompt` (teacher forcing).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScoreRequest {
    /// The conditioning text.
    pub prompt: String,
    /// The text whose log-probability is computed.
    pub continuation: String,
}

/// Log-probabilities of a continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinuationScore {
    /// Sum of the per-token natural-log probabilities.
    pub sum_logprob: f64,
    /// Per-token natural-log probabilities of the continuation's tokens.
    pub token_logprobs: Vec<f32>,
}

/// A request for the distribution over a small set of answer strings after a prompt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LabelRequest {
    /// The prompt (the answer follows it directly; chat prompts get the generation prompt).
    pub prompt: Prompt,
    /// Candidate answers, e.g. `["0", "1", "2", "3"]`.
    pub labels: Vec<String>,
}

/// Probabilities of each label, in the request's order, normalized over the labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelDistribution {
    /// One probability per label; they sum to 1.
    pub probs: Vec<f32>,
}

/// Who answered: part of every cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackendId {
    /// `local` or `remote:<base url>`.
    pub backend: String,
    /// Model name and, for local files, a digest of the weights.
    pub model: String,
}

/// An LLM failure for one request.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum LlmError {
    /// The request itself is unusable (empty prompt, too long for the context, no labels).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Transport failure, timeout or server error after retries.
    #[error("LLM call failed: {0}")]
    Call(String),
    /// The server answered with something that could not be understood.
    #[error("unparsable LLM response: {0}")]
    BadResponse(String),
    /// The backend cannot do this (e.g. a server without prompt log-probabilities).
    #[error("unsupported by this backend: {0}")]
    Unsupported(String),
    /// Model failure (tensor error).
    #[error("model error: {0}")]
    Model(String),
}

/// One batched interface to an LLM.
#[async_trait::async_trait]
pub trait LlmBackend: Send + Sync {
    /// Identity for cache keys and provenance.
    fn id(&self) -> BackendId;
    /// Generates text for each request.
    async fn generate(&self, requests: Vec<GenerateRequest>) -> Vec<Result<Generation, LlmError>>;
    /// Scores each continuation given its prompt.
    async fn score(&self, requests: Vec<ScoreRequest>) -> Vec<Result<ContinuationScore, LlmError>>;
    /// Distribution over each request's labels.
    async fn label_probs(&self, requests: Vec<LabelRequest>) -> Vec<Result<LabelDistribution, LlmError>>;
}

pub mod cache;
pub mod fret;
pub mod local;
pub mod prompts;
pub mod remote;
