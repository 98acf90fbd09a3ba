//! Retrieval evaluation on BEIR-layout datasets with trec_eval-compatible metrics.
//!
//! - [`beir`]: loading `corpus.jsonl`, `queries.jsonl` and `qrels/<split>.tsv`, with errors naming file
//!   and line.
//! - [`metrics`]: nDCG@10, Recall@10/100, MRR@10 and MAP@100 as trec_eval (pytrec_eval) defines them.
//! - [`evaluate()`]: encode the corpus and the judged queries with a [`crate::embed::TextEmbedder`],
//!   retrieve the top 100 passages exactly, score the run.
//! - [`report`]: the JSON report and the printed table.
pub mod beir;
mod evaluate;
pub mod metrics;
pub mod report;

pub use beir::{BeirDataset, BeirError, BeirQuery, LoadOptions, UnknownIds};
pub use evaluate::{evaluate, evaluate_at_dims, EvalError, EvalOptions, TOP_K};
pub use metrics::{QueryMetrics, RunDoc, RunMetrics};
pub use report::EvalReport;
