//! Request and response bodies of the OpenAI HTTP API (the subset fretflow uses).
//!
//! Responses are parsed leniently: unknown fields are ignored and optional ones default, because servers
//! (OpenAI, vLLM, llama.cpp, llama-cpp-python, TGI) differ in what they add.
use crate::llm::ChatMessage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Body of `POST {base}/chat/completions`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatRequest<'a> {
    /// Model name.
    pub model: &'a str,
    /// The conversation.
    pub messages: &'a [ChatMessage],
    /// Upper bound on new tokens.
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// Seed of the server's sampler.
    pub seed: u64,
    /// Stop strings.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub stop: &'a [String],
    /// Whether to return log-probabilities of the generated tokens.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub logprobs: bool,
    /// Alternatives returned per generated position (needs `logprobs: true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
}

/// Body of `POST {base}/completions`.
#[derive(Debug, Clone, Serialize)]
pub struct CompletionRequest<'a> {
    /// Model name.
    pub model: &'a str,
    /// The text to continue.
    pub prompt: &'a str,
    /// Upper bound on new tokens.
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// Seed of the server's sampler.
    pub seed: u64,
    /// Stop strings.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub stop: &'a [String],
    /// Return the prompt in front of the completion, with its tokens' log-probabilities.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub echo: bool,
    /// Number of alternatives per position (legacy API: an integer, not a flag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
}

/// Body of a chat completion response.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatResponse {
    /// The answers (fretflow asks for one).
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// One chat answer.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatChoice {
    /// The assistant message.
    pub message: ChatAnswer,
    /// `stop`, `length`, ...
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Log-probabilities, when requested.
    #[serde(default)]
    pub logprobs: Option<ChatLogprobs>,
}

/// The assistant message of a chat answer.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatAnswer {
    /// The text (absent for tool calls).
    #[serde(default)]
    pub content: Option<String>,
}

/// Log-probabilities of a chat answer.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatLogprobs {
    /// One entry per generated token.
    #[serde(default)]
    pub content: Option<Vec<ChatTokenLogprob>>,
}

/// A generated token with its alternatives.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatTokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its natural-log probability.
    pub logprob: f64,
    /// The most likely tokens at this position.
    #[serde(default)]
    pub top_logprobs: Vec<TopLogprob>,
}

/// An alternative token at a position.
#[derive(Debug, Clone, Deserialize)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its natural-log probability.
    pub logprob: f64,
}

/// Body of a completion response.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionResponse {
    /// The answers (fretflow asks for one).
    pub choices: Vec<CompletionChoice>,
    /// Token counts.
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// One completion.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionChoice {
    /// The completion (with `echo`, the prompt followed by the completion).
    pub text: String,
    /// `stop`, `length`, ...
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Log-probabilities, when requested.
    #[serde(default)]
    pub logprobs: Option<CompletionLogprobs>,
}

/// Legacy-format log-probabilities: parallel arrays, one entry per token.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionLogprobs {
    /// Token texts.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Log-probability of each token (`null` for the first token of an echoed prompt).
    #[serde(default)]
    pub token_logprobs: Vec<Option<f64>>,
    /// Offset of each token in `text`, in characters (Unicode scalar values, as Python counts).
    #[serde(default)]
    pub text_offset: Vec<usize>,
    /// Alternatives per position, token text → log-probability.
    #[serde(default)]
    pub top_logprobs: Option<Vec<Option<BTreeMap<String, f64>>>>,
}

/// Token counts of a response.
#[derive(Debug, Clone, Deserialize)]
pub struct Usage {
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: Option<usize>,
}
