//! OpenAI-compatible remote backend (vLLM, llama.cpp server, llama-cpp-python, hosted APIs).
//!
//! | method | endpoint | how |
//! | --- | --- | --- |
//! | `generate`, chat prompt | `chat/completions` | `message.content` |
//! | `generate`, text prompt | `completions` | `text` |
//! | `label_probs`, chat prompt | `chat/completions` | `max_tokens: 1, logprobs: true, top_logprobs: k`, see [`logprobs::label_distribution`] |
//! | `label_probs`, text prompt | `completions` | `max_tokens: 1, logprobs: k` |
//! | `score` | `completions` | `echo: true, logprobs: 1, max_tokens: 1` on `prompt + continuation`, see [`logprobs::continuation_from_echo`] |
//!
//! Each request of a batch is its own HTTP call; all run concurrently, at most `max_concurrency` in
//! flight per backend. Retries, timeouts and `Retry-After` are handled by [`client::HttpClient`] with
//! [`retry::RetryPolicy`].
//!
//! **Servers without prompt log-probabilities** (llama.cpp's own server, chat-only hosted APIs): `score`
//! answers [`LlmError::Unsupported`], either because the config says `ql = "unsupported"` (no call is
//! made) or because the answer carried no echoed prompt tokens. The FRet layer then records no QL and
//! ranks candidates by relevance classification alone.
pub mod client;
pub mod config;
pub mod logprobs;
pub mod retry;
pub mod wire;

pub use config::{QlMode, RemoteConfig, RemoteConfigError};

use crate::llm::{
    BackendId, ContinuationScore, FinishReason, GenerateRequest, Generation, LabelDistribution, LabelRequest,
    LlmBackend, LlmError, Prompt, ScoreRequest,
};
use client::HttpClient;
use wire::{ChatRequest, ChatResponse, CompletionRequest, CompletionResponse};

/// An [`LlmBackend`] that talks to one OpenAI-compatible server.
#[derive(Debug, Clone)]
pub struct RemoteLlm {
    config: RemoteConfig,
    client: HttpClient,
}

impl RemoteLlm {
    /// Checks the config, reads the API key from its environment variable, and builds the HTTP client.
    /// Makes no request.
    pub fn new(config: RemoteConfig) -> Result<Self, RemoteConfigError> {
        let client = HttpClient::new(&config)?;
        Ok(Self { config, client })
    }

    /// The config this backend was built from.
    pub fn config(&self) -> &RemoteConfig {
        &self.config
    }

    async fn generate_one(&self, request: GenerateRequest) -> Result<Generation, LlmError> {
        if request.max_new_tokens == 0 {
            return Err(LlmError::InvalidRequest("max_new_tokens is 0".to_string()));
        }
        let s = request.sampling;
        let (text, finish, usage) = match &request.prompt {
            Prompt::Chat(messages) => {
                check_chat(messages)?;
                let body = ChatRequest {
                    model: &self.config.model,
                    messages,
                    max_tokens: request.max_new_tokens,
                    temperature: s.temperature,
                    top_p: s.top_p,
                    seed: s.seed,
                    stop: &request.stop,
                    logprobs: false,
                    top_logprobs: None,
                };
                let response: ChatResponse = self.client.post("chat/completions", &body).await?;
                let choice = response.choices.into_iter().next().ok_or_else(no_choice)?;
                (choice.message.content.unwrap_or_default(), choice.finish_reason, response.usage)
            }
            Prompt::Text(prompt) => {
                check_text(prompt)?;
                let body = CompletionRequest {
                    model: &self.config.model,
                    prompt,
                    max_tokens: request.max_new_tokens,
                    temperature: s.temperature,
                    top_p: s.top_p,
                    seed: s.seed,
                    stop: &request.stop,
                    echo: false,
                    logprobs: None,
                };
                let response: CompletionResponse = self.client.post("completions", &body).await?;
                let choice = response.choices.into_iter().next().ok_or_else(no_choice)?;
                (choice.text, choice.finish_reason, response.usage)
            }
        };
        let finish = if finish.as_deref() == Some("length") { FinishReason::Length } else { FinishReason::Stop };
        let tokens = usage.and_then(|u| u.completion_tokens).unwrap_or(0);
        Ok(Generation { text, tokens, finish })
    }

    async fn score_one(&self, request: ScoreRequest) -> Result<ContinuationScore, LlmError> {
        if self.config.ql == QlMode::Unsupported {
            return Err(LlmError::Unsupported(
                "query likelihood is off for this server (`ql = \"unsupported\"`): candidates are ranked by \
                 relevance classification alone"
                    .to_string(),
            ));
        }
        check_text(&request.prompt)?;
        if request.continuation.is_empty() {
            return Err(LlmError::InvalidRequest("the continuation to score is empty".to_string()));
        }
        let full = format!("{}{}", request.prompt, request.continuation);
        let body = CompletionRequest {
            model: &self.config.model,
            prompt: &full,
            // One token, not zero: some servers (llama-cpp-python) read 0 as "up to the context size".
            max_tokens: 1,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: &[],
            echo: true,
            logprobs: Some(1),
        };
        let response: CompletionResponse = self.client.post("completions", &body).await?;
        let choice = response.choices.first().ok_or_else(no_choice)?;
        logprobs::continuation_from_echo(&request.prompt, &request.continuation, choice)
    }

    async fn label_one(&self, request: LabelRequest) -> Result<LabelDistribution, LlmError> {
        check_labels(&request.labels)?;
        let k = self.config.top_logprobs;
        match &request.prompt {
            Prompt::Chat(messages) => {
                check_chat(messages)?;
                let body = ChatRequest {
                    model: &self.config.model,
                    messages,
                    max_tokens: 1,
                    temperature: 0.0,
                    top_p: 1.0,
                    seed: 0,
                    stop: &[],
                    logprobs: true,
                    top_logprobs: Some(k),
                };
                let response: ChatResponse = self.client.post("chat/completions", &body).await?;
                let choice = response.choices.into_iter().next().ok_or_else(no_choice)?;
                let first =
                    choice.logprobs.and_then(|l| l.content).and_then(|c| c.into_iter().next()).ok_or_else(|| {
                        LlmError::Unsupported(
                            "the server returned no `logprobs.content` for chat completions".to_string(),
                        )
                    })?;
                logprobs::label_distribution(
                    &request.labels,
                    first.top_logprobs.iter().map(|t| (t.token.as_str(), t.logprob)),
                )
            }
            Prompt::Text(prompt) => {
                check_text(prompt)?;
                let body = CompletionRequest {
                    model: &self.config.model,
                    prompt,
                    max_tokens: 1,
                    temperature: 0.0,
                    top_p: 1.0,
                    seed: 0,
                    stop: &[],
                    echo: false,
                    logprobs: Some(k),
                };
                let response: CompletionResponse = self.client.post("completions", &body).await?;
                let choice = response.choices.into_iter().next().ok_or_else(no_choice)?;
                let top = choice
                    .logprobs
                    .and_then(|l| l.top_logprobs)
                    .and_then(|t| t.into_iter().next().flatten())
                    .ok_or_else(|| {
                        LlmError::Unsupported(
                            "the server returned no `logprobs.top_logprobs` for completions".to_string(),
                        )
                    })?;
                logprobs::label_distribution(&request.labels, top.iter().map(|(t, lp)| (t.as_str(), *lp)))
            }
        }
    }
}

#[async_trait::async_trait]
impl LlmBackend for RemoteLlm {
    fn id(&self) -> BackendId {
        BackendId { backend: format!("remote:{}", self.config.api_base()), model: self.config.model.clone() }
    }

    async fn generate(&self, requests: Vec<GenerateRequest>) -> Vec<Result<Generation, LlmError>> {
        futures::future::join_all(requests.into_iter().map(|r| self.generate_one(r))).await
    }

    async fn score(&self, requests: Vec<ScoreRequest>) -> Vec<Result<ContinuationScore, LlmError>> {
        futures::future::join_all(requests.into_iter().map(|r| self.score_one(r))).await
    }

    async fn label_probs(&self, requests: Vec<LabelRequest>) -> Vec<Result<LabelDistribution, LlmError>> {
        futures::future::join_all(requests.into_iter().map(|r| self.label_one(r))).await
    }
}

fn no_choice() -> LlmError {
    LlmError::BadResponse("the response has no choices".to_string())
}

fn check_text(prompt: &str) -> Result<(), LlmError> {
    if prompt.is_empty() {
        return Err(LlmError::InvalidRequest("the prompt is empty".to_string()));
    }
    Ok(())
}

fn check_chat(messages: &[crate::llm::ChatMessage]) -> Result<(), LlmError> {
    if messages.is_empty() {
        return Err(LlmError::InvalidRequest("the chat prompt has no messages".to_string()));
    }
    Ok(())
}

fn check_labels(labels: &[String]) -> Result<(), LlmError> {
    if labels.is_empty() {
        return Err(LlmError::InvalidRequest("no labels to score".to_string()));
    }
    for (i, label) in labels.iter().enumerate() {
        if label.trim().is_empty() {
            return Err(LlmError::InvalidRequest(format!("label {i} is blank")));
        }
        if labels[..i].iter().any(|l| l.trim() == label.trim()) {
            return Err(LlmError::InvalidRequest(format!("label {label:?} is given twice")));
        }
    }
    Ok(())
}
