//! A deterministic stand-in LLM for tests and demos of the stages around the LLM: no model, no server.
//!
//! By default it behaves like a crude lexical judge, so rankings built on it mean something:
//! - `generate` answers a FRet query-generation prompt with a fixed task and the first words of the last
//!   `Passage:` of the prompt, as a question;
//! - `score` gives `-(continuation words absent from the prompt) - 0.1 * (continuation words)`, one
//!   "token" per word;
//! - `label_probs` puts more mass on higher labels the more of the query's words the passage holds.
//!
//! Each behaviour can be replaced by a closure, and every request is counted.
use crate::llm::{
    BackendId, ContinuationScore, FinishReason, GenerateRequest, Generation, LabelDistribution, LabelRequest,
    LlmBackend, LlmError, Prompt, ScoreRequest,
};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

type Handler<Req, Resp> = Box<dyn Fn(&Req) -> Result<Resp, LlmError> + Send + Sync>;

/// A scripted [`LlmBackend`]; see the module docs.
pub struct ScriptedLlm {
    id: BackendId,
    generate: Handler<GenerateRequest, Generation>,
    score: Handler<ScoreRequest, ContinuationScore>,
    label: Handler<LabelRequest, LabelDistribution>,
    requests: AtomicU64,
}

impl std::fmt::Debug for ScriptedLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedLlm").field("id", &self.id).field("requests", &self.requests()).finish()
    }
}

impl ScriptedLlm {
    /// The lexical stand-in, identified as backend `scripted` with this model name.
    pub fn new(model: &str) -> Self {
        Self {
            id: BackendId { backend: "scripted".to_string(), model: model.to_string() },
            generate: Box::new(|r| Ok(lexical_generation(r))),
            score: Box::new(|r| Ok(lexical_score(r))),
            label: Box::new(|r| Ok(lexical_labels(r))),
            requests: AtomicU64::new(0),
        }
    }

    /// Replaces the generation behaviour.
    pub fn with_generate(
        mut self,
        f: impl Fn(&GenerateRequest) -> Result<Generation, LlmError> + Send + Sync + 'static,
    ) -> Self {
        self.generate = Box::new(f);
        self
    }

    /// Replaces the scoring behaviour.
    pub fn with_score(
        mut self,
        f: impl Fn(&ScoreRequest) -> Result<ContinuationScore, LlmError> + Send + Sync + 'static,
    ) -> Self {
        self.score = Box::new(f);
        self
    }

    /// Replaces the label behaviour.
    pub fn with_labels(
        mut self,
        f: impl Fn(&LabelRequest) -> Result<LabelDistribution, LlmError> + Send + Sync + 'static,
    ) -> Self {
        self.label = Box::new(f);
        self
    }

    /// Requests answered so far, of every kind.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn count(&self, n: usize) {
        self.requests.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl LlmBackend for ScriptedLlm {
    fn id(&self) -> BackendId {
        self.id.clone()
    }

    async fn generate(&self, requests: Vec<GenerateRequest>) -> Vec<Result<Generation, LlmError>> {
        self.count(requests.len());
        requests.iter().map(|r| (self.generate)(r)).collect()
    }

    async fn score(&self, requests: Vec<ScoreRequest>) -> Vec<Result<ContinuationScore, LlmError>> {
        self.count(requests.len());
        requests.iter().map(|r| (self.score)(r)).collect()
    }

    async fn label_probs(&self, requests: Vec<LabelRequest>) -> Vec<Result<LabelDistribution, LlmError>> {
        self.count(requests.len());
        requests.iter().map(|r| (self.label)(r)).collect()
    }
}

fn prompt_text(prompt: &Prompt) -> String {
    match prompt {
        Prompt::Text(text) => text.clone(),
        Prompt::Chat(messages) => messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n"),
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// The text after the last `marker` line, up to the end of that line.
fn last_field<'a>(text: &'a str, marker: &str) -> &'a str {
    text.rfind(marker).map_or("", |i| text[i + marker.len()..].lines().next().unwrap_or(""))
}

fn lexical_generation(request: &GenerateRequest) -> Generation {
    let passage = last_field(&prompt_text(&request.prompt), "Passage:").to_string();
    let head: Vec<String> = words(&passage).into_iter().skip(1).take(6).collect();
    let text = format!(" Given a question, retrieve a passage that answers it\nQuery: what about {}", head.join(" "));
    Generation { tokens: text.split_whitespace().count(), text, finish: FinishReason::Stop }
}

fn lexical_score(request: &ScoreRequest) -> ContinuationScore {
    let known: HashSet<String> = words(&request.prompt).into_iter().collect();
    let token_logprobs: Vec<f32> =
        words(&request.continuation).iter().map(|w| if known.contains(w) { -0.1 } else { -1.1 }).collect();
    ContinuationScore { sum_logprob: token_logprobs.iter().map(|&x| x as f64).sum(), token_logprobs }
}

fn lexical_labels(request: &LabelRequest) -> LabelDistribution {
    let text = prompt_text(&request.prompt);
    let query = words(last_field(&text, "Query:"));
    let passage: HashSet<String> = words(last_field(&text, "Passage:")).into_iter().collect();
    let overlap = if query.is_empty() {
        0.0
    } else {
        query.iter().filter(|w| passage.contains(*w)).count() as f32 / query.len() as f32
    };
    // Mass centred on the grade closest to `overlap * top grade`.
    let n = request.labels.len().max(1);
    let centre = overlap * (n - 1) as f32;
    let weights: Vec<f32> = (0..n).map(|g| (-(g as f32 - centre).powi(2)).exp()).collect();
    let total: f32 = weights.iter().sum();
    LabelDistribution { probs: weights.iter().map(|w| w / total).collect() }
}
