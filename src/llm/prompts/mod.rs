//! The FRet prompts, as versioned templates in the repository (`src/llm/prompts/*.jinja`, rendered with
//! minijinja), and the requests built from them.
//!
//! | kind | template | request | answer |
//! | --- | --- | --- | --- |
//! | query generation | `query_generation.jinja` + `fret_examples.json` | generate, text, stops at a blank line | parsed by [`parse_query_answer`] into a task and a query |
//! | relevance classification (RC) | `relevance.jinja` | label probabilities of `" 0"`..`" 3"` | expected grade / 3, in `[0, 1]` |
//! | query likelihood (QL) | `query_likelihood.jinja` (+ the first `ql_examples` examples) | score `" " + query` | sum of the query tokens' log-probabilities |
//!
//! **Versions.** A prompt's version is the first 12 hex digits of the SHA-256 of its template text and the
//! few-shot examples rendered into it; the version is part of every cache key and of the provenance of
//! every query and judgement, so editing a template or an example invalidates exactly what it shaped.
//!
//! **QL as a sum.** `QL(q, p) = log P(q | p)` is the sum of the per-token log-probabilities, not the mean:
//! candidates are ranked per query, so every candidate is scored on the same token sequence and length
//! normalization would not change the ranking.
//!
//! Passages are rendered as `"{title}. {text}"` (the text alone when it starts with the title) with every whitespace run collapsed to one space (a blank
//! line would end the few-shot block) and cut to `max_passage_chars` at a word boundary.
mod parse;

pub use parse::{parse_query_answer, EchoSource, QueryGenFailure, TaskQuery};

use crate::llm::{GenerateRequest, LabelRequest, Prompt, Sampling, ScoreRequest};
use crate::records::Passage;
use minijinja::{context, AutoEscape, Environment};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const QUERY_GENERATION: &str = include_str!("query_generation.jinja");
const RELEVANCE: &str = include_str!("relevance.jinja");
const QUERY_LIKELIHOOD: &str = include_str!("query_likelihood.jinja");
const EXAMPLES: &str = include_str!("fret_examples.json");

/// The relevance labels, in grade order: the answer strings whose probabilities are asked for.
pub const RELEVANCE_LABELS: [&str; 4] = [" 0", " 1", " 2", " 3"];

/// The three things the FRet recipe asks an LLM; part of every cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptKind {
    /// A task and a query for a passage.
    QueryGeneration,
    /// Relevance classification of a (query, passage) pair.
    Relevance,
    /// Query likelihood of a (query, passage) pair.
    QueryLikelihood,
}

impl PromptKind {
    /// A stable name (`query_generation`, `relevance`, `query_likelihood`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueryGeneration => "query_generation",
            Self::Relevance => "relevance",
            Self::QueryLikelihood => "query_likelihood",
        }
    }
}

/// A worked example of the query-generation prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FewShotExample {
    /// The example passage's title.
    pub title: String,
    /// The example passage's text.
    pub text: String,
    /// The task description.
    pub task: String,
    /// The query.
    pub query: String,
}

/// Settings that shape the prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptOptions {
    /// Passages are cut to this many characters (at a word boundary) inside prompts.
    #[serde(default = "default_max_passage_chars")]
    pub max_passage_chars: usize,
    /// Few-shot examples in the QL prompt (0 = the zero-shot prompt); the paper's recipe uses few-shot.
    #[serde(default = "default_ql_examples")]
    pub ql_examples: usize,
    /// Upper bound on the tokens of a generated task + query.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// Few-shot examples replacing the built-in ones (`fret_examples.json`), e.g. examples from the
    /// corpus's own domain. They enter the prompt versions like the built-in ones.
    #[serde(default)]
    pub examples: Option<Vec<FewShotExample>>,
}

fn default_max_passage_chars() -> usize {
    1500
}
fn default_ql_examples() -> usize {
    2
}
fn default_max_new_tokens() -> usize {
    80
}

impl Default for PromptOptions {
    fn default() -> Self {
        Self {
            max_passage_chars: default_max_passage_chars(),
            ql_examples: default_ql_examples(),
            max_new_tokens: default_max_new_tokens(),
            examples: None,
        }
    }
}

/// The rendered FRet prompts with their versions.
#[derive(Debug)]
pub struct FretPrompts {
    env: Environment<'static>,
    examples: Vec<FewShotExample>,
    options: PromptOptions,
    query_generation_version: String,
    relevance_version: String,
    query_likelihood_version: String,
}

impl FretPrompts {
    /// The built-in templates, with the built-in examples unless `options.examples` names others.
    pub fn new(options: PromptOptions) -> Self {
        let examples: Vec<FewShotExample> = match &options.examples {
            Some(examples) if !examples.is_empty() => examples.clone(),
            _ => serde_json::from_str(EXAMPLES).expect("fret_examples.json is valid. This is a bug."),
        };
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        for (name, source) in [
            (PromptKind::QueryGeneration, QUERY_GENERATION),
            (PromptKind::Relevance, RELEVANCE),
            (PromptKind::QueryLikelihood, QUERY_LIKELIHOOD),
        ] {
            env.add_template(name.as_str(), source).expect("built-in templates parse. This is a bug.");
        }
        let ql_examples = &examples[..options.ql_examples.min(examples.len())];
        Self {
            query_generation_version: version(QUERY_GENERATION, &examples),
            relevance_version: version(RELEVANCE, &[]),
            query_likelihood_version: version(QUERY_LIKELIHOOD, ql_examples),
            env,
            examples,
            options,
        }
    }

    /// The version of one prompt (12 hex digits).
    pub fn version(&self, kind: PromptKind) -> &str {
        match kind {
            PromptKind::QueryGeneration => &self.query_generation_version,
            PromptKind::Relevance => &self.relevance_version,
            PromptKind::QueryLikelihood => &self.query_likelihood_version,
        }
    }

    /// The few-shot examples of the query-generation prompt.
    pub fn examples(&self) -> &[FewShotExample] {
        &self.examples
    }

    /// The options the prompts were built with.
    pub fn options(&self) -> &PromptOptions {
        &self.options
    }

    /// The request that asks for a task and a query for `passage` (greedy; stops at a blank line or at the
    /// next `Passage:`).
    pub fn query_generation(&self, passage: &Passage) -> GenerateRequest {
        let text = self.render(
            PromptKind::QueryGeneration,
            context! {
                examples => &self.examples,
                passage => self.passage_text(passage),
            },
        );
        GenerateRequest {
            prompt: Prompt::Text(text),
            max_new_tokens: self.options.max_new_tokens,
            stop: vec!["\n\n".to_string(), "\nPassage:".to_string()],
            sampling: Sampling::default(),
        }
    }

    /// Parses a query-generation answer for `passage` (see [`parse_query_answer`]).
    pub fn parse_query_generation(&self, answer: &str, passage: &Passage) -> Result<TaskQuery, QueryGenFailure> {
        parse_query_answer(answer, passage, &self.examples)
    }

    /// The request for the relevance-label distribution of `(query, passage)`.
    pub fn relevance(&self, query: &str, passage: &Passage) -> LabelRequest {
        let text = self.render(
            PromptKind::Relevance,
            context! {
                query => collapse_whitespace(query),
                passage => self.passage_text(passage),
            },
        );
        LabelRequest { prompt: Prompt::Text(text), labels: RELEVANCE_LABELS.iter().map(|l| l.to_string()).collect() }
    }

    /// The request that scores `" " + query` after the QL prompt for `passage`.
    pub fn query_likelihood(&self, query: &str, passage: &Passage) -> ScoreRequest {
        let n = self.options.ql_examples.min(self.examples.len());
        let prompt = self.render(
            PromptKind::QueryLikelihood,
            context! {
                examples => &self.examples[..n],
                passage => self.passage_text(passage),
            },
        );
        ScoreRequest { prompt, continuation: format!(" {}", collapse_whitespace(query)) }
    }

    /// The passage as prompts show it: `"{title}. {text}"`, whitespace collapsed, cut to
    /// `max_passage_chars` at a word boundary.
    pub fn passage_text(&self, passage: &Passage) -> String {
        let title = collapse_whitespace(&passage.title);
        let text = collapse_whitespace(&passage.text);
        let joined = match title.chars().last() {
            None => text,
            // Some corpora (cranfield) repeat the title at the start of the text.
            Some(_) if text.starts_with(&title) => text,
            Some(c) if ".?!:;".contains(c) => format!("{title} {text}"),
            Some(_) => format!("{title}. {text}"),
        };
        truncate_at_word(&joined, self.options.max_passage_chars)
    }

    fn render(&self, kind: PromptKind, ctx: minijinja::Value) -> String {
        self.env
            .get_template(kind.as_str())
            .and_then(|t| t.render(ctx))
            .expect("built-in templates render any strings. This is a bug.")
    }
}

/// RC score from a distribution over [`RELEVANCE_LABELS`]: the expected grade divided by the top grade,
/// in `[0, 1]`.
pub fn expected_grade(probs: &[f32]) -> f64 {
    if probs.len() < 2 {
        return 0.0;
    }
    let top = (probs.len() - 1) as f64;
    probs.iter().enumerate().map(|(grade, p)| grade as f64 * *p as f64).sum::<f64>() / top
}

/// First 12 hex digits of SHA-256(template, 0x00, examples as JSON).
fn version(template: &str, examples: &[FewShotExample]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(template.as_bytes());
    hasher.update([0u8]);
    hasher.update(serde_json::to_vec(examples).expect("examples serialize. This is a bug."));
    hex::encode(hasher.finalize())[..12].to_string()
}

/// Every whitespace run replaced by one space, ends trimmed.
pub(crate) fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` cut to at most `max_chars` characters, at the last space before the cut when there is one.
fn truncate_at_word(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_string(),
        // The cut is at a word boundary when the next character is a space.
        Some((cut, ' ')) => text[..cut].to_string(),
        Some((cut, _)) => {
            let head = &text[..cut];
            head.rfind(' ').map_or(head, |space| &head[..space]).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(title: &str, text: &str) -> Passage {
        Passage { id: "p1".to_string(), title: title.to_string(), text: text.to_string() }
    }

    #[test]
    fn passages_are_collapsed_and_cut_at_a_word() {
        let prompts = FretPrompts::new(PromptOptions { max_passage_chars: 20, ..PromptOptions::default() });
        assert_eq!(prompts.passage_text(&passage("Wings", "lift  and\n\ndrag of a wing")), "Wings. lift and drag");
        assert_eq!(prompts.passage_text(&passage("", "short")), "short");
        assert_eq!(prompts.passage_text(&passage("", "aaaa bbbb ccccccccccccc")), "aaaa bbbb");
        assert_eq!(prompts.passage_text(&passage("Why?", "x")), "Why? x");
        assert_eq!(prompts.passage_text(&passage("Wings .", "Wings . lift")), "Wings . lift");
    }

    #[test]
    fn expected_grade_is_normalized_to_the_top_grade() {
        assert_eq!(expected_grade(&[0.0, 0.0, 0.0, 1.0]), 1.0);
        assert_eq!(expected_grade(&[1.0, 0.0, 0.0, 0.0]), 0.0);
        assert!((expected_grade(&[0.25; 4]) - 0.5).abs() < 1e-9);
    }
}
