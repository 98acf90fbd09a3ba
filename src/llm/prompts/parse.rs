//! Parsing a query-generation answer into a task and a query, rejecting answers that are not examples.
use super::{collapse_whitespace, FewShotExample};
use crate::llm::LlmError;
use crate::records::Passage;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// A query longer than this many words is the model rambling, not a query.
const MAX_QUERY_WORDS: usize = 64;
/// Queries shorter than this many words are never called copies: short phrases are shared legitimately.
const MIN_COPY_WORDS: usize = 5;
/// A query whose word trigrams are found in the passage at least this often is a copy of the passage.
const COPY_TRIGRAM_SHARE: f64 = 0.75;
/// A query of 8+ words with fewer distinct words than this share of its length repeats itself.
const MIN_DISTINCT_WORD_SHARE: f64 = 0.5;

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
/// - [`QueryGenFailure::Unparsable`]: no `Query:`, no task before it, a query over 64 words, or one of 8+
///   words that is mostly repetition (fewer than half of its words distinct);
/// - [`QueryGenFailure::Echoed`]: a query equal (ignoring case and punctuation) to the passage title, to a
///   few-shot example's query or title, or to the task; a query whose content words (4+ letters) come
///   more from a few-shot example than from the passage (at least two of them); or a query of 5+ words at
///   least 75% of whose word trigrams occur in the passage's title and text (a copy, possibly with a word
///   changed at an end).
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
    let passage_text = normalize(&format!("{} {}", passage.title, passage.text));
    if borrows_from_an_example(&q, &passage_text, examples) {
        return echoed(EchoSource::FewShotExample);
    }
    if q == normalize(&task) {
        return echoed(EchoSource::Task);
    }
    let q_words: Vec<&str> = q.split(' ').collect();
    let distinct: HashSet<&str> = q_words.iter().copied().collect();
    if q_words.len() >= 8 && (distinct.len() as f64) < MIN_DISTINCT_WORD_SHARE * q_words.len() as f64 {
        return Err(unparsable("the query repeats itself"));
    }
    if q_words.len() >= MIN_COPY_WORDS && copied_share(&q_words, &passage_text) >= COPY_TRIGRAM_SHARE {
        return echoed(EchoSource::Passage);
    }
    Ok(TaskQuery { task, query })
}

/// Whether the query's content words come from a few-shot example rather than from the passage: at least
/// two of them are in one example (title, text, task or query), and more than are in the passage.
fn borrows_from_an_example(query: &str, passage: &str, examples: &[FewShotExample]) -> bool {
    let content: HashSet<&str> = query.split(' ').filter(|w| is_content_word(w)).collect();
    let passage_words: HashSet<&str> = passage.split(' ').collect();
    let from_passage = content.iter().filter(|w| passage_words.contains(*w)).count();
    examples.iter().any(|ex| {
        let example = normalize(&format!("{} {} {} {}", ex.title, ex.text, ex.task, ex.query));
        let example_words: HashSet<&str> = example.split(' ').collect();
        let from_example = content.iter().filter(|w| example_words.contains(*w)).count();
        from_example >= 2 && from_example > from_passage
    })
}

/// Words of four letters or more, except a few that every question uses.
fn is_content_word(word: &str) -> bool {
    const COMMON: [&str; 16] = [
        "what", "which", "when", "where", "does", "that", "this", "with", "from", "have", "into", "about", "there",
        "their", "they", "than",
    ];
    word.chars().count() >= 4 && !COMMON.contains(&word)
}

/// Share of the query's word trigrams that occur in the (normalized) passage.
fn copied_share(query_words: &[&str], passage: &str) -> f64 {
    let passage_words: Vec<&str> = passage.split(' ').collect();
    let passage_trigrams: HashSet<&[&str]> = passage_words.windows(3).collect();
    let trigrams: Vec<&[&str]> = query_words.windows(3).collect();
    if trigrams.is_empty() {
        return 0.0;
    }
    trigrams.iter().filter(|t| passage_trigrams.contains(*t)).count() as f64 / trigrams.len() as f64
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
