//! The embedding stages: passages and queries to unit vectors, through the async-batch operator (the
//! encoder runs on the runtime's blocking threads, never on a timely worker).
use super::async_op::AsyncMap;
use super::generate::Query;
use super::stages::Stages;
use super::{Diff, Time};
use crate::records::Passage;
use crate::records::{DeadLetter, Stage};
use crate::retrieve::vector::Vector;
use differential_dataflow::VecCollection;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::Stream;

/// The text a query is retrieved with: its task and query, as in the recipe (`t + q`).
pub fn query_text(query: &Query) -> String {
    format!("{} {}", query.task, query.text)
}

/// Embeds passages (`title + " " + text`).
pub trait EmbedPassages<'scope> {
    /// Each passage with its vector, and dead letters for passages the encoder failed on.
    fn embed_passages(
        self,
        stages: &Stages,
    ) -> (VecCollection<'scope, Time, (Passage, Vector), Diff>, Stream<'scope, Time, Vec<DeadLetter>>);
}

impl<'scope> EmbedPassages<'scope> for VecCollection<'scope, Time, Passage, Diff> {
    fn embed_passages(
        self,
        stages: &Stages,
    ) -> (VecCollection<'scope, Time, (Passage, Vector), Diff>, Stream<'scope, Time, Vec<DeadLetter>>) {
        let func = stages.embedder.batch_fn(|p: &Passage| p.embedding_text());
        let stage = stages.async_stage("EmbedPassages", func, stages.embed_batch, |m| &m.embed, false);
        let (vectors, failed) = self.async_map(stage);
        let dead = failed.map(|(p, reason): (Passage, String)| {
            DeadLetter::new(Stage::Embed, reason, format!("passage {}", p.id), Some(&p.text))
        });
        (vectors, dead)
    }
}

/// Embeds queries (`task + " " + query`).
pub trait EmbedQueries<'scope> {
    /// Each query with its vector, and dead letters for queries the encoder failed on.
    fn embed_queries(
        self,
        stages: &Stages,
    ) -> (VecCollection<'scope, Time, (Query, Vector), Diff>, Stream<'scope, Time, Vec<DeadLetter>>);
}

impl<'scope> EmbedQueries<'scope> for VecCollection<'scope, Time, Query, Diff> {
    fn embed_queries(
        self,
        stages: &Stages,
    ) -> (VecCollection<'scope, Time, (Query, Vector), Diff>, Stream<'scope, Time, Vec<DeadLetter>>) {
        let func = stages.embedder.batch_fn(query_text);
        let stage = stages.async_stage("EmbedQueries", func, stages.embed_batch, |m| &m.embed, false);
        let (vectors, failed) = self.async_map(stage);
        let dead = failed.map(|(q, reason): (Query, String)| {
            DeadLetter::new(Stage::Embed, reason, format!("query {}", q.id), Some(&q.text))
        });
        (vectors, dead)
    }
}
