//! Dead letters: records the pipeline could not use, with the reason and a reference to the input.
//!
//! Bad records are values, not panics: a malformed line, a record without id or text, a text beyond the
//! limits, an LLM answer that could not be parsed, or a near-duplicate query becomes a [`DeadLetter`] on its
//! own stream, written to the dead-letter sink, and the run goes on.
use serde::{Deserialize, Serialize};

/// Where in the pipeline a record was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading and decoding the source (malformed line, missing field).
    Source,
    /// Validating a decoded passage (limits).
    Validate,
    /// Query generation by the LLM.
    Generate,
    /// Embedding a passage or a query.
    Embed,
    /// Near-duplicate queries ([`super::dedup`]): a query within the threshold of a kept query.
    Dedup,
    /// QL/RC judging by the LLM.
    Judge,
}

/// One rejected record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The stage that rejected it.
    pub stage: Stage,
    /// Why, in words (names the field where there is one).
    pub reason: String,
    /// Which input: `file:line` for a source record, the passage or query id for later stages.
    pub input: String,
    /// The offending record or an excerpt of it (at most [`DeadLetter::EXCERPT_CHARS`] characters),
    /// when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

impl DeadLetter {
    /// Longest excerpt of the offending record kept in a dead letter.
    pub const EXCERPT_CHARS: usize = 1000;

    /// A dead letter with an excerpt of `record`.
    pub fn new(stage: Stage, reason: impl Into<String>, input: impl Into<String>, record: Option<&str>) -> Self {
        let record = record.map(|r| {
            if r.chars().count() > Self::EXCERPT_CHARS {
                let mut s: String = r.chars().take(Self::EXCERPT_CHARS).collect();
                s.push('…');
                s
            } else {
                r.to_string()
            }
        });
        Self { stage, reason: reason.into(), input: input.into(), record }
    }
}
