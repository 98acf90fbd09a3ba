//! The [`Labeler`] over the LLM layer's [`FretLlm`]: FRet prompts, answer parsing, durable cache and call
//! counters come from there; this adapter only maps types.
use super::labeler::{
    GeneratedQuery, JudgeRequest, LabelFailure, Labeler, LabelerProvenance, LabelerStats, PairScores, QuerySeed,
};
use crate::llm::fret::{FretLlm, QueryGenFailure};
use crate::llm::prompts::PromptKind;
use crate::llm::LlmError;
use crate::records::ModelProvenance;
use crate::records::Passage;
use std::sync::Arc;

/// A [`Labeler`] backed by [`FretLlm`].
#[derive(Debug, Clone)]
pub struct FretLabeler {
    llm: Arc<FretLlm>,
}

impl FretLabeler {
    /// Wraps `llm`.
    pub fn new(llm: Arc<FretLlm>) -> Self {
        Self { llm }
    }

    /// The wrapped LLM layer.
    pub fn llm(&self) -> &FretLlm {
        &self.llm
    }
}

fn from_llm_error(error: LlmError) -> LabelFailure {
    match error {
        LlmError::InvalidRequest(why) => LabelFailure::Invalid(why),
        LlmError::BadResponse(answer) => LabelFailure::Unparsable { reason: "bad response".into(), answer },
        other => LabelFailure::Call(other.to_string()),
    }
}

fn from_generation_failure(failure: QueryGenFailure) -> LabelFailure {
    match failure {
        QueryGenFailure::Llm { error } => from_llm_error(error),
        other => LabelFailure::Unparsable { reason: other.reason().to_string(), answer: other.to_string() },
    }
}

#[async_trait::async_trait]
impl Labeler for FretLabeler {
    async fn generate(&self, seeds: Vec<QuerySeed>) -> Vec<Result<GeneratedQuery, LabelFailure>> {
        let seeds: Vec<(&Passage, u32)> = seeds.iter().map(|s| (&s.passage, s.variant)).collect();
        self.llm
            .generate_query_variants(&seeds)
            .await
            .into_iter()
            .map(|r| r.map(|g| GeneratedQuery { task: g.task, query: g.query }).map_err(from_generation_failure))
            .collect()
    }

    async fn judge(&self, pairs: Vec<JudgeRequest>) -> Vec<Result<PairScores, LabelFailure>> {
        let refs: Vec<(&str, &Passage)> = pairs.iter().map(|r| (r.query.as_str(), &r.passage)).collect();
        self.llm
            .judge(&refs)
            .await
            .into_iter()
            .map(|r| r.map(|j| PairScores { ql: j.ql, rc: j.rc }).map_err(from_llm_error))
            .collect()
    }

    fn provenance(&self) -> LabelerProvenance {
        let id = self.llm.backend_id();
        let model = format!("{}:{}", id.backend, id.model);
        let prompts = self.llm.prompts();
        LabelerProvenance {
            generator: ModelProvenance {
                model: model.clone(),
                prompt_version: prompts.version(PromptKind::QueryGeneration).to_string(),
            },
            judge: ModelProvenance {
                model,
                prompt_version: if self.llm.relevance() {
                    format!(
                        "ql:{}+rc:{}",
                        prompts.version(PromptKind::QueryLikelihood),
                        prompts.version(PromptKind::Relevance)
                    )
                } else {
                    format!("ql:{}", prompts.version(PromptKind::QueryLikelihood))
                },
            },
        }
    }

    fn stats(&self) -> LabelerStats {
        LabelerStats { model_calls: self.llm.model_calls().total(), cache_hits: self.llm.cache_hits() }
    }
}
