//! The FRet dataflow: a changing corpus in, the FRet training set out as a differential collection.
//!
//! One timely dataflow, one module per stage, each stage an extension trait on a collection:
//!
//! ```text
//! source records ─► source::Upsert ─► passages (id → current version)
//!   passages ─► embed::EmbedPassages ─────────────────────────────┐ (index sharded by id)
//!   passages ─► generate::GenerateQueries ─► embed::EmbedQueries ─► dedup::DedupQueries
//!            ─► retrieve::RetrieveTopN ─► judge::JudgeCandidates ─► fuse::FuseRankings
//!            ─► examples (key = query id)
//! ```
//!
//! - Every stage that calls a model (LLM or encoder) is an [`async_op::AsyncMap`]: it ships batches to a
//!   tokio runtime, holds capabilities for in-flight work, and is woken by a `SyncActivator`, so a
//!   worker never blocks on a model. It remembers the answer for each live input, so a retraction costs
//!   no call and only new inputs (new passages, new query–candidate pairs) are sent to a model.
//! - Retrieval is incremental in both directions ([`retrieve`]); a deleted or changed passage retracts
//!   everything derived from it, down to the examples.
//! - Bad records are values, not panics: they travel as [`crate::records::DeadLetter`]s to their own sink.
//!
//! [`graph::fret_dataflow`] assembles the stages. The dataflow knows no storage and no config file: the
//! drivers in [`crate::pipeline`] build its [`graph::Stages`] from a pipeline config and run it between
//! connectors.
#![allow(clippy::type_complexity)]

pub mod async_op;
pub mod dedup;
pub mod embed;
pub mod embedder;
pub mod example;
pub mod fret_labeler;
pub mod fuse;
pub mod generate;
pub mod graph;
pub mod instant;
pub mod judge;
pub mod labeler;
pub mod params;
pub mod progress;
pub mod retrieve;
pub mod sink;
pub mod source;
pub mod stages;

/// Logical time of the dataflow: the epoch in which a source record was read.
pub use crate::records::Time;
/// Multiplicity change of a record (+1 insert, −1 retract).
pub type Diff = isize;

pub use labeler::Labeler;
