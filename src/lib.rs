//! fretflow: a stream processor that turns an unlabeled stream of passages into a living FRet
//! retrieval-training set (Gecko recipe, arXiv 2403.20327) and a continuously improving embedding model.
//!
//! Where things live:
//! - [`embed`]: the sentence encoder (BERT family in tch, sentence-transformers pooling and batching).
//! - [`retrieve`]: exact top-k search by batched matrix products over corpus blocks.
//! - [`eval`]: BEIR datasets and trec_eval-compatible metrics.
//! - [`llm`]: the LLM layer (local tch backend, OpenAI-compatible remote backend, FRet prompts, cache).
//! - [`records`]: the records every stage exchanges, and their wire format (the `fretflow-records` crate).
//! - [`connectors`]: file and Kafka storage, JSONL and Parquet formats (the `fretflow-connectors` crate).
//! - [`pipeline`]: the drivers that run the dataflow between connectors.
//! - [`assets`]: resolving model names to installed model directories.
#![warn(missing_docs)]

pub use fretflow_connectors as connectors;
pub use fretflow_records as records;

pub mod assets;
pub mod cli;
pub mod dataflow;
pub mod device;
pub mod embed;
pub mod eval;
pub mod llm;
pub mod pipeline;
pub mod retrieve;
pub mod train;
