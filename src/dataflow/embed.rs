//! The embedding stages: passages and queries to unit vectors, through the async-batch operator (the
//! encoder runs on the runtime's blocking threads, never on a timely worker).
//!
//! Each record is embedded by the encoder versions live at its time ([`versioned`]): the configured
//! encoder when the pipeline does not follow a checkpoint directory; else the `versions` collection (one
//! live version, replaced when a new checkpoint is promoted), so a switch retracts every record's old
//! vector and embeds it again with the new version.
use super::async_op::AsyncMap;
use super::embedder::EmbedderVersion;
use super::generate::Query;
use super::stages::Stages;
use super::{Diff, Time};
use crate::records::Passage;
use crate::records::{DeadLetter, Stage};
use crate::retrieve::vector::Vector;
use differential_dataflow::{ExchangeData, Hashable, VecCollection};
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
        versions: &VecCollection<'scope, Time, EmbedderVersion, Diff>,
        stages: &Stages,
    ) -> (VecCollection<'scope, Time, (Passage, Vector), Diff>, Stream<'scope, Time, Vec<DeadLetter>>);
}

impl<'scope> EmbedPassages<'scope> for VecCollection<'scope, Time, Passage, Diff> {
    fn embed_passages(
        self,
        versions: &VecCollection<'scope, Time, EmbedderVersion, Diff>,
        stages: &Stages,
    ) -> (VecCollection<'scope, Time, (Passage, Vector), Diff>, Stream<'scope, Time, Vec<DeadLetter>>) {
        let func = stages.embedder.batch_fn(|p: &Passage| p.embedding_text());
        let stage = stages.async_stage("EmbedPassages", func, stages.embed_batch, |m| &m.embed, false);
        let (vectors, failed) = versioned(self, versions, stages).async_map(stage);
        let dead = failed.map(|((p, _), reason): ((Passage, EmbedderVersion), String)| {
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
        versions: &VecCollection<'scope, Time, EmbedderVersion, Diff>,
        stages: &Stages,
    ) -> (VecCollection<'scope, Time, (Query, Vector), Diff>, Stream<'scope, Time, Vec<DeadLetter>>);
}

impl<'scope> EmbedQueries<'scope> for VecCollection<'scope, Time, Query, Diff> {
    fn embed_queries(
        self,
        versions: &VecCollection<'scope, Time, EmbedderVersion, Diff>,
        stages: &Stages,
    ) -> (VecCollection<'scope, Time, (Query, Vector), Diff>, Stream<'scope, Time, Vec<DeadLetter>>) {
        let func = stages.embedder.batch_fn(query_text);
        let stage = stages.async_stage("EmbedQueries", func, stages.embed_batch, |m| &m.embed, false);
        let (vectors, failed) = versioned(self, versions, stages).async_map(stage);
        let dead = failed.map(|((q, _), reason): ((Query, EmbedderVersion), String)| {
            DeadLetter::new(Stage::Embed, reason, format!("query {}", q.id), Some(&q.text))
        });
        (vectors, dead)
    }
}

/// Shards of the version join: each record meets the live versions in the shard its hash falls in, so
/// the join spreads over the workers (a key of its own would put every record on one worker).
const VERSION_SHARDS: u64 = 256;

/// Each record paired with the encoder version it is embedded with: the configured encoder, or, when
/// following a checkpoint directory, every live version of `versions` (one at a time, so a switch
/// retracts `(record, old)` and inserts `(record, new)` at the switch's time).
fn versioned<'scope, D>(
    records: VecCollection<'scope, Time, D, Diff>,
    versions: &VecCollection<'scope, Time, EmbedderVersion, Diff>,
    stages: &Stages,
) -> VecCollection<'scope, Time, (D, EmbedderVersion), Diff>
where
    D: ExchangeData + Hashable,
{
    if !stages.embedder.is_versioned() {
        let base = stages.embedder.base().to_string();
        return records.map(move |r| (r, base.clone()));
    }
    let shards = versions.clone().flat_map(|v| (0..VERSION_SHARDS).map(move |s| (s, v.clone())));
    records.map(|r| (r.hashed().into() % VERSION_SHARDS, r)).join_map(shards, |_, r, v| (r.clone(), v.clone()))
}
