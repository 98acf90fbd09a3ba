//! fretflow's connectors: bytes in and out of a system (storage: files, Kafka) kept apart from records
//! to and from bytes (format: JSON Lines, Parquet), so any storage pairs with any format.
//!
//! This crate depends on [`fretflow_records`] and on format and client crates only, never on the dataflow
//! or the trainer: the pipeline drives the connectors, not the other way round, and the compiler keeps it
//! so. What the pipeline needs of a sink is the pair of traits [`ChangeSink`] and [`DeadLetterSink`]; what
//! it needs of a file source is [`file::source::PassageReader`]; the Kafka clients are in [`kafka`].
#![warn(missing_docs)]

pub mod contain;
pub mod file;
pub mod kafka;

use fretflow_records::{Change, DeadLetter, Example};
use std::collections::BTreeMap;

/// A sink error, in words (the writer names its file or topic).
pub type SinkError = String;

/// Where the FRet set's changes go. The pipeline calls it on one worker.
pub trait ChangeSink: Send {
    /// Writes the changes of one time (consolidated, at most one per key, sorted by key).
    fn write(&mut self, changes: &[Change]) -> Result<(), SinkError>;
    /// The input has ended; `current` is the final FRet set by key. Flush and close.
    fn finish(&mut self, current: &BTreeMap<String, Example>) -> Result<(), SinkError>;
}

/// Where dead letters go. The pipeline calls it on one worker.
pub trait DeadLetterSink: Send {
    /// Writes dead letters.
    fn write(&mut self, letters: &[DeadLetter]) -> Result<(), SinkError>;
    /// Flushes (called after each batch and at the end).
    fn flush(&mut self) -> Result<(), SinkError>;
}
