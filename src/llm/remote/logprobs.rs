//! Turning a server's log-probabilities into continuation scores and label distributions.
use super::wire::CompletionChoice;
use crate::llm::{ContinuationScore, LabelDistribution, LlmError};

/// The message of the `Unsupported` error for servers without prompt log-probabilities.
pub const NO_ECHO_HINT: &str = "the server returned no log-probabilities for the prompt tokens (`echo` with \
     `logprobs` on /completions); set `ql = \"unsupported\"` in the remote config to skip query likelihood, \
     and candidates are then ranked by relevance classification alone";

/// The log-probability of `continuation` after `prompt`, from a `/completions` answer to the request
/// `prompt + continuation` with `echo: true, logprobs: 1, max_tokens: 1`.
///
/// Tokens are assigned by their character offsets (`logprobs.text_offset`, Unicode scalar values as
/// Python counts them): a token belongs to the continuation when its span `[offset, next offset)` ends
/// after the prompt and starts before the end of `prompt + continuation`. So the one generated token
/// (which starts at the end of the echoed text) is left out, and a token that straddles the boundary
/// (rare: the prompt should not end with a space) counts for the continuation. The score is the sum of
/// the tokens' natural-log probabilities, as `log P(continuation | prompt)` is.
pub fn continuation_from_echo(
    prompt: &str,
    continuation: &str,
    choice: &CompletionChoice,
) -> Result<ContinuationScore, LlmError> {
    let Some(lp) = &choice.logprobs else {
        return Err(LlmError::Unsupported(NO_ECHO_HINT.to_string()));
    };
    let n = lp.tokens.len();
    if lp.token_logprobs.len() != n || lp.text_offset.len() != n {
        return Err(LlmError::BadResponse(format!(
            "logprobs arrays differ in length: {} tokens, {} token_logprobs, {} text_offset",
            n,
            lp.token_logprobs.len(),
            lp.text_offset.len()
        )));
    }
    let prompt_end = prompt.chars().count();
    let text_end = prompt_end + continuation.chars().count();
    // Without echo the offsets start after the prompt: nothing covers the prompt's first character.
    if n == 0 || lp.text_offset[0] > 0 {
        return Err(LlmError::Unsupported(NO_ECHO_HINT.to_string()));
    }
    let mut token_logprobs = Vec::new();
    let mut sum = 0.0f64;
    for i in 0..n {
        let start = lp.text_offset[i];
        let end = lp.text_offset.get(i + 1).copied().unwrap_or(start + lp.tokens[i].chars().count());
        if i + 1 < n && end < start {
            return Err(LlmError::BadResponse(format!("text_offset decreases at token {i}: {start} then {end}")));
        }
        if end <= prompt_end || start >= text_end {
            continue;
        }
        let Some(logprob) = lp.token_logprobs[i] else {
            return Err(LlmError::BadResponse(format!(
                "token {i} ({:?}) of the continuation has no log-probability",
                lp.tokens[i]
            )));
        };
        if !logprob.is_finite() && logprob != f64::NEG_INFINITY {
            return Err(LlmError::BadResponse(format!("token {i} has log-probability {logprob}")));
        }
        sum += logprob;
        token_logprobs.push(logprob as f32);
    }
    if token_logprobs.is_empty() {
        return Err(LlmError::BadResponse(format!(
            "no token of the echoed text covers the continuation (characters {prompt_end}..{text_end})"
        )));
    }
    Ok(ContinuationScore { sum_logprob: sum, token_logprobs })
}

/// Probabilities of `labels` from the alternatives the server listed for the first answer token.
///
/// A listed token matches a label when both are equal after trimming whitespace (`" 2"` and `"2"` are the
/// same answer); the probabilities of all tokens matching one label are added. A label that is not listed
/// gets the floor: the probability of the least likely listed token, an upper bound on anything unlisted.
/// The result is normalized over the labels, so when no label is listed at all the distribution is
/// uniform (no information), and a debug event says so.
pub fn label_distribution<'a>(
    labels: &[String],
    listed: impl IntoIterator<Item = (&'a str, f64)>,
) -> Result<LabelDistribution, LlmError> {
    let mut mass = vec![0.0f64; labels.len()];
    let mut found = vec![false; labels.len()];
    let mut floor = f64::INFINITY;
    let mut any = false;
    for (token, logprob) in listed {
        if logprob.is_nan() {
            return Err(LlmError::BadResponse(format!("token {token:?} has log-probability NaN")));
        }
        any = true;
        let p = logprob.exp();
        floor = floor.min(p);
        let token = token.trim();
        for (j, label) in labels.iter().enumerate() {
            if label.trim() == token {
                mass[j] += p;
                found[j] = true;
            }
        }
    }
    if !any {
        return Err(LlmError::BadResponse("the server listed no top log-probabilities".to_string()));
    }
    if !found.iter().any(|&f| f) {
        tracing::debug!(?labels, "No label among the top log-probabilities; the distribution is uniform.");
    }
    for (m, f) in mass.iter_mut().zip(&found) {
        if !f {
            *m = floor;
        }
    }
    let total: f64 = mass.iter().sum();
    let probs = if total > 0.0 {
        mass.iter().map(|m| (m / total) as f32).collect()
    } else {
        vec![1.0 / labels.len() as f32; labels.len()]
    };
    Ok(LabelDistribution { probs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_matched_after_trimming_and_missing_ones_get_the_floor() {
        let labels: Vec<String> = ["0", "1", "2", "3"].iter().map(|s| s.to_string()).collect();
        let listed = [(" 2", 0.5f64.ln()), ("2", 0.1f64.ln()), ("3", 0.2f64.ln()), ("The", 0.05f64.ln())];
        let d = label_distribution(&labels, listed).expect("valid input. This is a bug.");
        // Unnormalized: 0 -> 0.05 (floor), 1 -> 0.05 (floor), 2 -> 0.6, 3 -> 0.2; total 0.9.
        let expected = [0.05 / 0.9, 0.05 / 0.9, 0.6 / 0.9, 0.2 / 0.9];
        for (p, e) in d.probs.iter().zip(expected) {
            assert!((*p as f64 - e).abs() < 1e-6, "{:?} vs {:?}", d.probs, expected);
        }
    }

    #[test]
    fn no_listed_label_gives_a_uniform_distribution() {
        let labels: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let d = label_distribution(&labels, [("x", -0.1), ("y", -3.0)]).expect("valid input. This is a bug.");
        assert_eq!(d.probs, vec![0.5, 0.5]);
    }
}
