//! The result of an evaluation: a JSON report and a printed table.
use super::metrics::QueryMetrics;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Everything an evaluation measured, written as JSON by `fretflow eval`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalReport {
    /// Dataset name (its directory's name).
    pub dataset: String,
    /// The dataset directory as given.
    pub dataset_path: String,
    /// The qrels split evaluated.
    pub split: String,
    /// The model as named by the user.
    pub model: String,
    /// Version of fretflow that produced the report.
    pub fretflow_version: String,
    /// How retrieval was run.
    pub settings: EvalSettings,
    /// What was evaluated.
    pub counts: EvalCounts,
    /// Means over the evaluated queries.
    pub metrics: QueryMetrics,
    /// Where the time went.
    pub timings: Timings,
    /// Metrics of each evaluated query, by query id (absent when not asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_query: Option<BTreeMap<String, QueryMetrics>>,
}

/// How retrieval was run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalSettings {
    /// Passages retrieved per query.
    pub k: usize,
    /// Scoring of queries against passages.
    pub similarity: crate::retrieve::Similarity,
    /// Embedding dimension.
    pub dim: usize,
    /// Device of the index, as tch names it.
    pub device: String,
}

/// What was evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct EvalCounts {
    /// Passages in the corpus (all encoded and searched).
    pub passages: usize,
    /// Queries in `queries.jsonl`.
    pub queries: usize,
    /// Queries with at least one relevant judgment: encoded, searched and scored.
    pub queries_evaluated: usize,
    /// Queries without a relevant judgment: skipped.
    pub queries_unjudged: usize,
    /// Judgments (qrels lines) used.
    pub judgments: usize,
    /// Judgments with grade >= 1.
    pub relevant_judgments: usize,
    /// Qrels lines dropped because their query is unknown (only when unknown ids are allowed).
    pub unknown_query_judgments: usize,
    /// Qrels lines whose passage is not in the corpus (only when unknown ids are allowed).
    pub unknown_passage_judgments: usize,
}

/// Wall-clock seconds of each step.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Timings {
    /// Loading the dataset (set by the caller that loaded it).
    pub load_s: f64,
    /// Encoding the corpus.
    pub encode_passages_s: f64,
    /// Encoding the queries.
    pub encode_queries_s: f64,
    /// Exact search.
    pub search_s: f64,
    /// Computing metrics.
    pub metrics_s: f64,
    /// Passages encoded per second.
    pub passages_per_s: f64,
}

/// Failure to write a report.
#[derive(Debug, thiserror::Error)]
#[error("cannot write report {path}: {source}")]
pub struct WriteReportError {
    /// The report file.
    pub path: std::path::PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

impl EvalReport {
    /// A table of the counts and mean metrics, for the terminal.
    pub fn table(&self) -> String {
        let c = &self.counts;
        let mut out = String::new();
        let _ = writeln!(out, "dataset  {} ({}, split {})", self.dataset, self.dataset_path, self.split);
        let s = &self.settings;
        let _ = writeln!(
            out,
            "model    {} (dim {}, {}, top {} on {})",
            self.model,
            s.dim,
            s.similarity.name(),
            s.k,
            s.device
        );
        let _ = writeln!(
            out,
            "counts   {} passages, {} queries: {} evaluated, {} without relevant judgments; {} judgments ({} relevant)",
            c.passages, c.queries, c.queries_evaluated, c.queries_unjudged, c.judgments, c.relevant_judgments
        );
        if c.unknown_query_judgments + c.unknown_passage_judgments > 0 {
            let _ = writeln!(
                out,
                "warning  {} judgments of unknown queries dropped, {} of unknown passages kept (unretrievable)",
                c.unknown_query_judgments, c.unknown_passage_judgments
            );
        }
        let t = &self.timings;
        let _ = writeln!(
            out,
            "time     encode passages {:.1} s ({:.1}/s), queries {:.1} s, search {:.2} s",
            t.encode_passages_s, t.passages_per_s, t.encode_queries_s, t.search_s
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<12} {:>8}", "metric", "value");
        let _ = writeln!(out, "{:-<12} {:->8}", "", "");
        for (name, value) in self.metrics.named() {
            let _ = writeln!(out, "{name:<12} {value:>8.4}");
        }
        out
    }

    /// Writes the report as pretty JSON to `path`, creating parent directories.
    pub fn write_json(&self, path: &Path) -> Result<(), WriteReportError> {
        let err = |source| WriteReportError { path: path.to_path_buf(), source };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        let json = serde_json::to_string_pretty(self).expect("a report always serializes. This is a bug.");
        std::fs::write(path, json + "\n").map_err(err)
    }
}
