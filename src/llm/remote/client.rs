//! The HTTP side of the remote backend: one POST with bounded concurrency, a per-request timeout and the
//! retry policy, returning a parsed body or a typed [`LlmError`].
use super::config::{RemoteConfig, RemoteConfigError};
use super::retry::{AttemptFailure, Decision, RetryPolicy};
use crate::llm::LlmError;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// How much of an error body goes into an error message.
const BODY_EXCERPT_CHARS: usize = 300;

/// An HTTP client for one OpenAI-compatible server.
///
/// The API key lives only in the client's default headers, marked sensitive, so `Debug` never shows it
/// and nothing here logs headers.
#[derive(Debug, Clone)]
pub struct HttpClient {
    http: reqwest::Client,
    api_base: String,
    permits: Arc<Semaphore>,
    policy: RetryPolicy,
    timeout_secs: f64,
}

impl HttpClient {
    /// Builds the client (reads the API key from the environment variable the config names).
    pub fn new(config: &RemoteConfig) -> Result<Self, RemoteConfigError> {
        config.validate()?;
        let mut headers = HeaderMap::new();
        if let Some(key) = config.read_api_key()? {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| RemoteConfigError::Invalid {
                    field: "api_key_env",
                    message: "the key holds characters that cannot go in an HTTP header".to_string(),
                })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout())
            .build()
            .map_err(|e| RemoteConfigError::Client(e.to_string()))?;
        Ok(Self {
            http,
            api_base: config.api_base(),
            permits: Arc::new(Semaphore::new(config.max_concurrency)),
            policy: RetryPolicy::from_config(config),
            timeout_secs: config.timeout_secs,
        })
    }

    /// POSTs `body` to `{api_base}/{endpoint}` and parses the answer, retrying as the policy says.
    pub async fn post<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: &B,
    ) -> Result<R, LlmError> {
        let url = format!("{}/{}", self.api_base, endpoint);
        let mut retries = 0u32;
        loop {
            let outcome = {
                let _permit = self.permits.acquire().await.expect("the semaphore is never closed. This is a bug.");
                self.attempt(&url, body).await
            };
            let failure = match outcome {
                Ok(bytes) => return parse_body(&url, &bytes),
                Err(failure) => failure,
            };
            match self.policy.decide(retries, &failure) {
                Decision::RetryAfter(wait) => {
                    tracing::warn!(
                        url = %url,
                        retry = retries + 1,
                        wait_ms = wait.as_millis() as u64,
                        failure = %describe(&failure, self.timeout_secs),
                        "Remote LLM call failed; retrying."
                    );
                    tokio::time::sleep(wait).await;
                    retries += 1;
                }
                Decision::Fail => return Err(self.final_error(&url, retries + 1, failure)),
            }
        }
    }

    /// One attempt: the response body on 2xx, the failure otherwise.
    async fn attempt<B: Serialize + ?Sized>(&self, url: &str, body: &B) -> Result<Vec<u8>, AttemptFailure> {
        let response = self.http.post(url).json(body).send().await.map_err(AttemptFailure::Transport)?;
        let status = response.status();
        if status.is_success() {
            return response.bytes().await.map(|b| b.to_vec()).map_err(AttemptFailure::Transport);
        }
        let retry_after = RetryPolicy::retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        Err(AttemptFailure::Status { status, retry_after, body: excerpt(&body) })
    }

    /// The error reported once the policy gives up.
    fn final_error(&self, url: &str, attempts: u32, failure: AttemptFailure) -> LlmError {
        let what = describe(&failure, self.timeout_secs);
        match failure {
            AttemptFailure::Status {
                status: StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNPROCESSABLE_ENTITY,
                ..
            } => LlmError::InvalidRequest(format!("{url} rejected the request: {what}")),
            AttemptFailure::Status { status: StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, .. } => {
                LlmError::Call(format!("{url}: {what} (check the key in the variable named by `api_key_env`)"))
            }
            AttemptFailure::Status { status, retry_after: Some(wait), .. }
                if RetryPolicy::is_retriable_status(status) && wait > self.policy.retry_after_max =>
            {
                LlmError::Call(format!(
                    "{url}: {what}; the server asks to retry after {:.1}s, more than retry_after_max_secs ({:.1}s)",
                    wait.as_secs_f64(),
                    self.policy.retry_after_max.as_secs_f64()
                ))
            }
            _ => LlmError::Call(format!("{url}: {what} (after {attempts} attempt(s))")),
        }
    }
}

/// Parses a 2xx body; garbage is a `BadResponse` (never retried).
fn parse_body<R: DeserializeOwned>(url: &str, bytes: &[u8]) -> Result<R, LlmError> {
    serde_json::from_slice(bytes).map_err(|e| {
        LlmError::BadResponse(format!(
            "{url}: {e}; the body starts with {:?}",
            excerpt(&String::from_utf8_lossy(bytes))
        ))
    })
}

/// A one-line description of a failed attempt (never includes headers).
fn describe(failure: &AttemptFailure, timeout_secs: f64) -> String {
    match failure {
        AttemptFailure::Status { status, body, .. } if body.is_empty() => format!("HTTP {status}"),
        AttemptFailure::Status { status, body, .. } => format!("HTTP {status}: {body}"),
        AttemptFailure::Transport(e) if e.is_timeout() => format!("timed out after {timeout_secs}s"),
        AttemptFailure::Transport(e) if e.is_connect() => format!("cannot connect: {}", error_chain(e)),
        AttemptFailure::Transport(e) => error_chain(e),
    }
}

/// An error with its causes, `a: b: c`.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The first characters of a body, on one line.
fn excerpt(body: &str) -> String {
    let one_line: String = body.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match one_line.char_indices().nth(BODY_EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}...", &one_line[..cut]),
        None => one_line,
    }
}
