//! The generation stage: each passage becomes the seed of `queries_per_passage` queries (one by default,
//! as in the paper; Promptagator writes eight), written by the LLM ([`Labeler::generate`]) through the
//! async-batch operator.
//!
//! A query's id is derived from its seed passage's id and its variant ([`query_id`]), so when a passage
//! changes, its new queries replace the old ones under the same keys, and downstream sinks see upserts.
use super::async_op::{AsyncMap, BatchFuture};
use super::labeler::{Labeler, QuerySeed};
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
    /// Query id, derived from the seed passage id and the variant (see [`query_id`]).
    pub id: String,
    /// Id of the passage the query was written for.
    pub seed_id: String,
    /// The task description.
    pub task: String,
    /// The query text.
    pub text: String,
}

/// The id of the `variant`-th query written for seed passage `seed_id`: `q:<seed id>` for the first
/// (variant 0, the only one by default), `q_<variant>:<seed id>` for the others. No two (seed, variant)
/// share an id, whatever the seed ids hold (the text before the first `:` tells the variant), and every
/// first query sorts before every further one, so the near-duplicate stage, which keeps the smallest id,
/// keeps a passage's first query over a later one that repeats it.
pub fn query_id(seed_id: &str, variant: u32) -> String {
    match variant {
        0 => format!("q:{seed_id}"),
        v => format!("q_{v}:{seed_id}"),
    }
}

/// The ids of every query written for `seed_id` when each passage gets `queries_per_passage` of them.
pub fn query_ids(seed_id: &str, queries_per_passage: u32) -> impl Iterator<Item = String> + '_ {
    (0..queries_per_passage.max(1)).map(move |v| query_id(seed_id, v))
}

/// Writes `queries_per_passage` queries per passage.
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
        let func = move |seeds: Vec<QuerySeed>| -> BatchFuture<Query> {
            let labeler = Arc::clone(&labeler);
            Box::pin(async move {
                let ids: Vec<(String, u32)> = seeds.iter().map(|s| (s.passage.id.clone(), s.variant)).collect();
                let answers = labeler.generate(seeds).await;
                answers
                    .into_iter()
                    .zip(ids)
                    .map(|(answer, (seed_id, variant))| {
                        answer
                            .map(|g| Query { id: query_id(&seed_id, variant), seed_id, task: g.task, text: g.query })
                            .map_err(|e| e.to_string())
                    })
                    .collect()
            })
        };
        let stage = stages.async_stage("GenerateQueries", Arc::new(func), stages.generate_batch, |m| &m.generate, true);
        let variants = stages.fret.queries_per_passage.max(1);
        let seeds = self
            .flat_map(move |passage| (0..variants).map(move |variant| QuerySeed { passage: passage.clone(), variant }));
        let (queries, failed) = seeds.async_map(stage);
        let dead = failed.map(move |(s, reason): (QuerySeed, String)| {
            let input = match s.variant {
                0 => format!("passage {}", s.passage.id),
                v => format!("passage {} (query {} of its {variants})", s.passage.id, v + 1),
            };
            DeadLetter::new(Stage::Generate, reason, input, Some(&s.passage.text))
        });
        (queries, dead)
    }
}
