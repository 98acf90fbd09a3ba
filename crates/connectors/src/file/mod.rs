//! File storage: JSONL and Parquet readers and writers.
pub mod fret;
pub mod jsonl;
pub mod parquet;
pub mod sink;
pub mod source;

use std::path::PathBuf;

/// An input that could not be read or parsed, naming the file and, where there is one, the line.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading failed part way.
    #[error("{path}:{line}: read error: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The cause.
        source: std::io::Error,
    },
    /// A line or record is malformed.
    #[error("{path}:{line}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number (0 when the error is not tied to a line).
        line: usize,
        /// What is wrong, naming the field where there is one.
        message: String,
    },
}
