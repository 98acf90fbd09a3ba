//! Configuration of the OpenAI-compatible remote backend.
//!
//! One serde struct with `deny_unknown_fields`; every field has a default except `base_url` and `model`.
//! Values are checked by [`RemoteConfig::validate`] (called when the backend is built), with errors that
//! name the field. In a TOML file:
//!
//! ```toml
//! base_url = "http://127.0.0.1:8000/v1"
//! model = "Qwen/Qwen2.5-7B-Instruct"
//! api_key_env = "OPENAI_API_KEY"
//! max_concurrency = 16
//! ql = "echo"
//! ```
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How query likelihood (continuation scoring) is obtained from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QlMode {
    /// `/completions` with `echo: true, logprobs: 1, max_tokens: 1`: the server returns the prompt's
    /// tokens with their log-probabilities (vLLM, llama-cpp-python's server, the legacy OpenAI API).
    #[default]
    Echo,
    /// The server cannot return prompt log-probabilities (e.g. hosted chat-only APIs, llama.cpp's own
    /// server): `score` answers `LlmError::Unsupported` without calling the server, and the FRet layer
    /// ranks candidates by relevance classification alone.
    Unsupported,
}

/// Settings of one OpenAI-compatible server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Base URL of the API, normally ending in `/v1` as in the OpenAI clients
    /// (`http://127.0.0.1:8000/v1`). Requests go to `{base_url}/chat/completions` and
    /// `{base_url}/completions`. A URL without a path (`http://host:8000`) gets `/v1` appended.
    pub base_url: String,
    /// Model name sent in every request (the server's name for it, e.g. the path vLLM was started with).
    pub model: String,
    /// Name of the environment variable that holds the API key, sent as `Authorization: Bearer <key>`.
    /// The key itself is never stored in the config, logged or printed. No header is sent when absent.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Most requests in flight at once to this server.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Limit for one HTTP request (connect, send, wait, read), in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// Retries after the first attempt, for 429, 408, 5xx, timeouts and connection errors.
    /// Other failures (4xx, unparsable bodies) are never retried.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Backoff before retry `n` (0-based) is uniform in `[0, min(backoff_max, backoff_base * 2^n)]`
    /// seconds ("full jitter"), unless the server sent `Retry-After`.
    #[serde(default = "default_backoff_base_secs")]
    pub backoff_base_secs: f64,
    /// Upper bound of the backoff, in seconds.
    #[serde(default = "default_backoff_max_secs")]
    pub backoff_max_secs: f64,
    /// Longest `Retry-After` (delta-seconds form) that is honoured, in seconds; a server asking for a
    /// longer wait fails the request instead of stalling the pipeline.
    #[serde(default = "default_retry_after_max_secs")]
    pub retry_after_max_secs: f64,
    /// Number of alternatives requested per position for label probabilities (`top_logprobs`);
    /// OpenAI allows at most 20.
    #[serde(default = "default_top_logprobs")]
    pub top_logprobs: u32,
    /// How query likelihood is obtained (see [`QlMode`]).
    #[serde(default)]
    pub ql: QlMode,
}

fn default_max_concurrency() -> usize {
    8
}
fn default_timeout_secs() -> f64 {
    120.0
}
fn default_max_retries() -> u32 {
    5
}
fn default_backoff_base_secs() -> f64 {
    0.5
}
fn default_backoff_max_secs() -> f64 {
    30.0
}
fn default_retry_after_max_secs() -> f64 {
    120.0
}
fn default_top_logprobs() -> u32 {
    20
}

/// A config value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RemoteConfigError {
    /// A field's value is out of range or malformed.
    #[error("remote LLM config: field `{field}`: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// `api_key_env` names a variable that is not set.
    #[error("remote LLM config: field `api_key_env`: environment variable `{var}` is not set or not unicode")]
    MissingApiKey {
        /// The variable's name.
        var: String,
    },
    /// The HTTP client could not be built.
    #[error("remote LLM: cannot build the HTTP client: {0}")]
    Client(String),
}

impl RemoteConfig {
    /// A config with every optional field at its default.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key_env: None,
            max_concurrency: default_max_concurrency(),
            timeout_secs: default_timeout_secs(),
            max_retries: default_max_retries(),
            backoff_base_secs: default_backoff_base_secs(),
            backoff_max_secs: default_backoff_max_secs(),
            retry_after_max_secs: default_retry_after_max_secs(),
            top_logprobs: default_top_logprobs(),
            ql: QlMode::default(),
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), RemoteConfigError> {
        let invalid = |field, message: &str| Err(RemoteConfigError::Invalid { field, message: message.to_string() });
        let url = self.base_url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() <= "https://".len() {
            return invalid("base_url", &format!("'{url}' is not an http:// or https:// URL"));
        }
        if self.model.trim().is_empty() {
            return invalid("model", "must not be empty");
        }
        if self.max_concurrency == 0 {
            return invalid("max_concurrency", "must be at least 1");
        }
        for (field, value) in [
            ("timeout_secs", self.timeout_secs),
            ("backoff_base_secs", self.backoff_base_secs),
            ("backoff_max_secs", self.backoff_max_secs),
            ("retry_after_max_secs", self.retry_after_max_secs),
        ] {
            if !value.is_finite() || value < 0.0 || (field == "timeout_secs" && value == 0.0) {
                return invalid(field, &format!("{value} is not a valid number of seconds"));
            }
        }
        if self.top_logprobs == 0 {
            return invalid("top_logprobs", "must be at least 1");
        }
        Ok(())
    }

    /// The API base URL without a trailing slash, with `/v1` added when the URL has no path.
    pub fn api_base(&self) -> String {
        let url = self.base_url.trim().trim_end_matches('/');
        let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
        if after_scheme.contains('/') {
            url.to_string()
        } else {
            format!("{url}/v1")
        }
    }

    /// Reads the API key from the environment variable named by `api_key_env`.
    pub(crate) fn read_api_key(&self) -> Result<Option<String>, RemoteConfigError> {
        match &self.api_key_env {
            None => Ok(None),
            Some(var) => std::env::var(var)
                .ok()
                .filter(|key| !key.is_empty())
                .map(Some)
                .ok_or_else(|| RemoteConfigError::MissingApiKey { var: var.clone() }),
        }
    }

    /// The per-request timeout.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_secs)
    }
}
