//! Assembles the FRet dataflow from its stages.
use super::dedup::DedupQueries;
use super::embed::{EmbedPassages, EmbedQueries};
use super::embedder::EmbedderVersion;
use super::fuse::{FuseParams, FuseRankings};
use super::generate::GenerateQueries;
use super::judge::JudgeCandidates;
use super::retrieve::RetrieveTopN;
use super::source::Upsert;
use super::stages::Stages;
use super::{Diff, Time};
use crate::records::{DeadLetter, Example, SourceRecord};
use differential_dataflow::VecCollection;
use std::sync::Arc;
use timely::dataflow::operators::Concatenate;
use timely::dataflow::Stream;

/// The outputs of the FRet dataflow.
pub struct FretStreams<'scope> {
    /// The FRet set, keyed by query id.
    pub examples: VecCollection<'scope, Time, (String, Example), Diff>,
    /// Every rejected record, from all stages.
    pub dead_letters: Stream<'scope, Time, Vec<DeadLetter>>,
}

/// Builds the FRet dataflow over a stream of source records. `versions` is the encoder version in use
/// (see [`super::embed`]); it is read only when the embedder follows a checkpoint directory, and may
/// stay empty otherwise.
pub fn fret_dataflow<'scope>(
    records: Stream<'scope, Time, Vec<SourceRecord>>,
    versions: VecCollection<'scope, Time, EmbedderVersion, Diff>,
    stages: &Stages,
) -> FretStreams<'scope> {
    let (passages, dead_source) = records.upsert_passages(stages.limits, Arc::clone(&stages.metrics));
    let (passage_vectors, dead_embed_p) = passages.clone().embed_passages(&versions, stages);
    let (queries, dead_generate) = passages.generate_queries(stages);
    let (query_vectors, dead_embed_q) = queries.embed_queries(&versions, stages);
    let (query_vectors, dead_dedup) = match stages.fret.duplicate_queries {
        Some(params) => {
            let (live, dead) = query_vectors.dedup_queries(params, Arc::clone(&stages.metrics));
            (live, Some(dead))
        }
        None => (query_vectors, None),
    };
    let candidates = query_vectors.retrieve_top_n(passage_vectors, stages.fret.neighbours, Arc::clone(&stages.metrics));
    let (judged, dead_judge) = candidates.judge_candidates(stages);
    let params = FuseParams {
        rrf_k: stages.fret.rrf_k,
        weights: stages.fret.weights,
        negatives: stages.fret.negatives,
        negatives_count: stages.fret.negatives_count,
        max_positive_ratio: stages.fret.max_positive_ratio,
        provenance: stages.provenance(),
    };
    let examples = judged.fuse_rankings(params, Arc::clone(&stages.metrics));
    let scope = records_scope(&examples);
    let mut dead = vec![dead_source, dead_embed_p, dead_generate, dead_embed_q, dead_judge];
    dead.extend(dead_dedup);
    let dead_letters = scope.concatenate(dead);
    FretStreams { examples, dead_letters }
}

fn records_scope<'scope>(
    c: &VecCollection<'scope, Time, (String, Example), Diff>,
) -> timely::dataflow::Scope<'scope, Time> {
    c.inner.scope()
}
