//! The generation stage: each passage becomes the seed of one query, written by the LLM
//! ([`Labeler::generate`]) through the async-batch operator.
//!
//! A query's id is derived from its seed passage's id ([`query_id`]), so when a passage changes, its new
//! query replaces the old one under the same key, and downstream sinks see an upsert.
use super::async_op::{AsyncMap, BatchFuture};
use super::labeler::Labeler;
use super::stages::Stages;
use super::{Diff, Time};
use crate::records::Passage;
use crate::records::{DeadLetter, Stage};
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::Stream;

/// A generated query.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Query {
    /// Query id, derived from the seed passage id (see [`query_id`]).
    pub id: String,
    /// Id of the passage the query was written for.
    pub seed_id: String,
    /// The task description.
    pub task: String,
    /// The query text.
    pub text: String,
}

/// The id of the query written for seed passage `seed_id`.
pub fn query_id(seed_id: &str) -> String {
    format!("q:{seed_id}")
}

/// Writes one query per passage.
pub trait GenerateQueries<'scope> {
    /// The queries, and dead letters for passages the LLM gave no usable answer for.
    fn generate_queries(
        self,
        stages: &Stages,
    ) -> (VecCollection<'scope, Time, Query, Diff>, Stream<'scope, Time, Vec<DeadLetter>>);
}

impl<'scope> GenerateQueries<'scope> for VecCollection<'scope, Time, Passage, Diff> {
    fn generate_queries(
        self,
        stages: &Stages,
    ) -> (VecCollection<'scope, Time, Query, Diff>, Stream<'scope, Time, Vec<DeadLetter>>) {
        let labeler: Arc<dyn Labeler> = Arc::clone(&stages.labeler);
        let func = move |passages: Vec<Passage>| -> BatchFuture<Query> {
            let labeler = Arc::clone(&labeler);
            Box::pin(async move {
                let seeds: Vec<String> = passages.iter().map(|p| p.id.clone()).collect();
                let answers = labeler.generate(passages).await;
                answers
                    .into_iter()
                    .zip(seeds)
                    .map(|(answer, seed_id)| {
                        answer
                            .map(|g| Query { id: query_id(&seed_id), seed_id, task: g.task, text: g.query })
                            .map_err(|e| e.to_string())
                    })
                    .collect()
            })
        };
        let stage = stages.async_stage("GenerateQueries", Arc::new(func), stages.generate_batch, |m| &m.generate, true);
        let (queries, failed) = self.async_map(stage);
        let dead = failed.map(|(p, reason): (Passage, String)| {
            DeadLetter::new(Stage::Generate, reason, format!("passage {}", p.id), Some(&p.text))
        });
        (queries, dead)
    }
}
