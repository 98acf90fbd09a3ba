//! Parsing a query-generation answer into a task and a query, rejecting answers that are not examples.
use super::{collapse_whitespace, FewShotExample};
use crate::llm::LlmError;
use crate::records::Passage;
use serde::{Deserialize, Serialize};

/// A query longer than this many words is the model rambling, not a query.
const MAX_QUERY_WORDS: usize = 64;
/// A query of at least this many words found verbatim in the passage is a copy of it.
const MIN_COPY_WORDS: usize = 5;

/// A task description and a query, as the model wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskQuery {
    /// The task, e.g. "Given a question, retrieve a passage that answers the question".
    pub task: String,
    /// The query.
    pub query: String,
}

/// What a rejected query echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EchoSource {
    /// The passage's title.
    Title,
    /// A query or title of a few-shot example.
    FewShotExample,
    /// A stretch of the passage's text.
    Passage,
    /// The task description of the same answer.
    Task,
}

impl std::fmt::Display for EchoSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Title => "passage title",
            Self::FewShotExample => "few-shot example",
            Self::Passage => "passage text",
            Self::Task => "task description",
        })
    }
}

/// Why a passage yielded no generated query. Recorded, never turned into an example.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum QueryGenFailure {
    /// The LLM call failed.
    #[error("{error}")]
    Llm {
        /// The failure.
        error: LlmError,
    },
    /// The answer, or the query in it, is blank.
    #[error("empty answer: {answer:?}")]
    Empty {
        /// The model's answer.
        answer: String,
    },
    /// The answer does not have the `<task>\nQuery: <query>` shape, or the query is implausibly long.
    #[error("unparsable answer ({why}): {answer:?}")]
    Unparsable {
        /// What is wrong.
        why: String,
        /// The model's answer.
        answer: String,
    },
    /// The query repeats something the model was shown instead of asking something new.
    #[error("the query echoes the {of}: {query:?}")]
    Echoed {
        /// What it repeats.
        of: EchoSource,
        /// The query.
        query: String,
    },
}

impl QueryGenFailure {
    /// A short machine-readable reason: `llm_error`, `empty`, `unparsable` or `echoed`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Llm { .. } => "llm_error",
            Self::Empty { .. } => "empty",
            Self::Unparsable { .. } => "unparsable",
            Self::Echoed { .. } => "echoed",
        }
    }
}

impl From<LlmError> for QueryGenFailure {
    fn from(error: LlmError) -> Self {
        Self::Llm { error }
    }
}

/// Parses the model's continuation of a query-generation prompt (the text after the final `Task:`).
///
/// Accepted: `" <task>\nQuery: <query>"`, also with the task and `Query:` on one line, a repeated
/// leading `Task:`, any case of `query:`, and quotes around the query; only the first line after `Query:`
/// is the query. Rejected, as typed failures:
/// - [`QueryGenFailure::Empty`]: a blank answer or a blank query;
/// - [`QueryGenFailure::Unparsable`]: no `Query:`, no task before it, or a query over 64 words;
/// - [`QueryGenFailure::Echoed`]: a query equal (ignoring case and punctuation) to the passage title, to a
///   few-shot example's query or title, or to the task, or a query of 5+ words found verbatim in the
///   passage text.
pub fn parse_query_answer(
    answer: &str,
    passage: &Passage,
    examples: &[FewShotExample],
) -> Result<TaskQuery, QueryGenFailure> {
    if answer.trim().is_empty() {
        return Err(QueryGenFailure::Empty { answer: answer.to_string() });
    }
    let unparsable = |why: &str| QueryGenFailure::Unparsable { why: why.to_string(), answer: answer.to_string() };
    let body = strip_prefix_ignore_case(answer.trim_start(), "task:").unwrap_or(answer);
    let marker = find_ignore_case(body, "query:").ok_or_else(|| unparsable("no 'Query:'"))?;
    let task = collapse_whitespace(&body[..marker]);
    let after = &body[marker + "query:".len()..];
    let first_line = after.trim_start_matches([' ', '\t']).lines().next().unwrap_or("");
    let query = collapse_whitespace(first_line.trim().trim_matches(|c| c == '"' || c == '\'' || c == '`'));
    if task.is_empty() {
        return Err(unparsable("no task before 'Query:'"));
    }
    if query.is_empty() {
        return Err(QueryGenFailure::Empty { answer: answer.to_string() });
    }
    let words = query.split_whitespace().count();
    if words > MAX_QUERY_WORDS {
        return Err(unparsable(&format!("the query has {words} words")));
    }
    let echoed = |of| Err(QueryGenFailure::Echoed { of, query: query.clone() });
    let q = normalize(&query);
    if q.is_empty() {
        return Err(QueryGenFailure::Empty { answer: answer.to_string() });
    }
    if q == normalize(&passage.title) {
        return echoed(EchoSource::Title);
    }
    if examples.iter().any(|ex| q == normalize(&ex.query) || q == normalize(&ex.title)) {
        return echoed(EchoSource::FewShotExample);
    }
    if q == normalize(&task) {
        return echoed(EchoSource::Task);
    }
    if q.split(' ').count() >= MIN_COPY_WORDS && format!(" {} ", normalize(&passage.text)).contains(&format!(" {q} ")) {
        return echoed(EchoSource::Passage);
    }
    Ok(TaskQuery { task, query })
}

/// Lowercase words of letters and digits, separated by single spaces.
fn normalize(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Byte offset of the first case-insensitive (ASCII) occurrence of `needle` in `haystack`.
fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    (0..=h.len().checked_sub(n.len())?).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// `text` without a leading case-insensitive `prefix`.
fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}
