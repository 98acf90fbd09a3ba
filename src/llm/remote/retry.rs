//! The retry policy of the remote backend: which failures are retried, and how long to wait.
//!
//! One object decides; the HTTP client only asks it ([`RetryPolicy::decide`]). Retried: HTTP 429 (after
//! `Retry-After` when the server sends one), 408, every 5xx, timeouts, connection errors and connections
//! dropped mid-request. Never retried: other 4xx (the request itself is wrong) and 2xx bodies that do not
//! parse (a server that answers garbage once will do it again).
use super::config::RemoteConfig;
use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use std::time::Duration;

/// What went wrong with one HTTP attempt.
#[derive(Debug)]
pub enum AttemptFailure {
    /// The server answered with a non-success status.
    Status {
        /// The status.
        status: StatusCode,
        /// The `Retry-After` delay, when the header was present and in delta-seconds form.
        retry_after: Option<Duration>,
        /// The start of the response body, for the error message.
        body: String,
    },
    /// No (complete) answer: timeout, refused or dropped connection, body read error.
    Transport(reqwest::Error),
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// Give up: the failure is not retriable, retries are exhausted, or the server asks for a longer
    /// wait than `retry_after_max_secs`.
    Fail,
}

/// Retry settings, built from a [`RemoteConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Scale of the exponential backoff.
    pub backoff_base: Duration,
    /// Cap of the exponential backoff.
    pub backoff_max: Duration,
    /// Longest `Retry-After` that is honoured.
    pub retry_after_max: Duration,
}

impl RetryPolicy {
    /// The policy that `config` describes.
    pub fn from_config(config: &RemoteConfig) -> Self {
        Self {
            max_retries: config.max_retries,
            backoff_base: Duration::from_secs_f64(config.backoff_base_secs),
            backoff_max: Duration::from_secs_f64(config.backoff_max_secs),
            retry_after_max: Duration::from_secs_f64(config.retry_after_max_secs),
        }
    }

    /// Whether a response with this status is worth another attempt: 429, 408 and 5xx.
    pub fn is_retriable_status(status: StatusCode) -> bool {
        status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT || status.is_server_error()
    }

    /// Whether a transport error is worth another attempt: timeouts, connection failures, and requests or
    /// bodies cut off mid-way. Builder and redirect errors are not.
    pub fn is_retriable_error(error: &reqwest::Error) -> bool {
        error.is_timeout() || error.is_connect() || error.is_request() || error.is_body()
    }

    /// The server's `Retry-After` in its delta-seconds form (`Retry-After: 2`, fractions accepted).
    /// The HTTP-date form is not parsed: such a response falls back to the exponential backoff.
    pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
        let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
        let secs: f64 = value.parse().ok()?;
        (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
    }

    /// Jittered exponential backoff before retry number `retry` (0 for the first retry): uniform in
    /// `[0, min(backoff_max, backoff_base * 2^retry)]` ("full jitter", so that many clients that failed
    /// together do not retry together).
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.backoff_base.as_secs_f64() * 2f64.powi(retry.min(62) as i32);
        let ceiling = ceiling.min(self.backoff_max.as_secs_f64());
        if ceiling <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(rand::rng().random_range(0.0..=ceiling))
    }

    /// Decides after a failed attempt, `retries_done` retries having been made already.
    pub fn decide(&self, retries_done: u32, failure: &AttemptFailure) -> Decision {
        if retries_done >= self.max_retries {
            return Decision::Fail;
        }
        match failure {
            AttemptFailure::Status { status, retry_after, .. } if Self::is_retriable_status(*status) => {
                match retry_after {
                    Some(wait) if *wait > self.retry_after_max => Decision::Fail,
                    Some(wait) => Decision::RetryAfter(*wait),
                    None => Decision::RetryAfter(self.backoff(retries_done)),
                }
            }
            AttemptFailure::Transport(error) if Self::is_retriable_error(error) => {
                Decision::RetryAfter(self.backoff(retries_done))
            }
            _ => Decision::Fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(250),
            retry_after_max: Duration::from_secs(10),
        }
    }

    fn status(code: u16, retry_after: Option<f64>) -> AttemptFailure {
        AttemptFailure::Status {
            status: StatusCode::from_u16(code).expect("valid test status. This is a bug."),
            retry_after: retry_after.map(Duration::from_secs_f64),
            body: String::new(),
        }
    }

    #[test]
    fn backoff_stays_within_the_jitter_window_and_the_cap() {
        let p = policy();
        for retry in 0..10 {
            let ceiling = (0.1 * 2f64.powi(retry as i32)).min(0.25);
            for _ in 0..50 {
                let d = p.backoff(retry).as_secs_f64();
                assert!((0.0..=ceiling + 1e-9).contains(&d), "retry {retry}: {d} > {ceiling}");
            }
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_dates_are_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(RetryPolicy::retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("0.5"));
        assert_eq!(RetryPolicy::retry_after(&headers), Some(Duration::from_millis(500)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(RetryPolicy::retry_after(&headers), None);
    }

    #[test]
    fn decisions_follow_status_classes_and_limits() {
        let p = policy();
        assert_eq!(p.decide(0, &status(429, Some(1.5))), Decision::RetryAfter(Duration::from_millis(1500)));
        assert!(matches!(p.decide(0, &status(503, None)), Decision::RetryAfter(_)));
        assert!(matches!(p.decide(2, &status(500, None)), Decision::RetryAfter(_)));
        assert_eq!(p.decide(3, &status(500, None)), Decision::Fail, "retries exhausted");
        assert_eq!(p.decide(0, &status(400, None)), Decision::Fail, "a bad request is not retried");
        assert_eq!(p.decide(0, &status(401, None)), Decision::Fail);
        assert_eq!(p.decide(0, &status(429, Some(60.0))), Decision::Fail, "longer than retry_after_max");
    }
}
