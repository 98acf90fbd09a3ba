//! The judging stage: every query–candidate pair gets its QL and RC scores from the LLM
//! ([`Labeler::judge`]) through the async-batch operator. Only new pairs are sent: a pair that stays in
//! a query's top N is judged once, and its retraction is answered from the operator's memory.
use super::async_op::{AsyncMap, BatchFuture};
use super::labeler::{JudgeRequest, Labeler};
use super::retrieve::Candidate;
use super::stages::Stages;
use super::{Diff, Time};
use crate::records::Score;
use crate::records::{DeadLetter, Stage};
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::Stream;

/// A candidate with the LLM's scores.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Judged {
    /// The query–passage pair and its cosine.
    pub candidate: Candidate,
    /// Query likelihood, log P(query | passage); `None` when the backend cannot score continuations.
    pub ql: Option<Score>,
    /// Relevance classification score.
    pub rc: Score,
}

/// Scores each candidate pair with QL and RC.
pub trait JudgeCandidates<'scope> {
    /// The judged candidates, and dead letters for pairs the LLM could not score.
    fn judge_candidates(
        self,
        stages: &Stages,
    ) -> (VecCollection<'scope, Time, Judged, Diff>, Stream<'scope, Time, Vec<DeadLetter>>);
}

impl<'scope> JudgeCandidates<'scope> for VecCollection<'scope, Time, Candidate, Diff> {
    fn judge_candidates(
        self,
        stages: &Stages,
    ) -> (VecCollection<'scope, Time, Judged, Diff>, Stream<'scope, Time, Vec<DeadLetter>>) {
        let labeler: Arc<dyn Labeler> = Arc::clone(&stages.labeler);
        let func = move |candidates: Vec<Candidate>| -> BatchFuture<Judged> {
            let labeler = Arc::clone(&labeler);
            Box::pin(async move {
                let requests = candidates
                    .iter()
                    .map(|c| JudgeRequest {
                        task: c.query.task.clone(),
                        query: c.query.text.clone(),
                        passage: c.passage.clone(),
                    })
                    .collect();
                let answers = labeler.judge(requests).await;
                answers
                    .into_iter()
                    .zip(candidates)
                    .map(|(answer, candidate)| {
                        answer
                            .map(|s| Judged { candidate, ql: s.ql.map(Score), rc: Score(s.rc) })
                            .map_err(|e| e.to_string())
                    })
                    .collect()
            })
        };
        let stage = stages.async_stage("JudgeCandidates", Arc::new(func), stages.judge_batch, |m| &m.judge, true);
        let (judged, failed) = self.async_map(stage);
        let dead = failed.map(|(c, reason): (Candidate, String)| {
            let input = format!("query {} × passage {}", c.query.id, c.passage.id);
            DeadLetter::new(Stage::Judge, reason, input, Some(&c.query.text))
        });
        (judged, dead)
    }
}
