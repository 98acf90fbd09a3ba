//! The checkpoint manifest (`checkpoints.jsonl`), evaluation on arrival, retention and the metric plot.
//!
//! Each checkpoint, once written, is evaluated on the configured BEIR datasets and put through the
//! promotion gate ([`super::promotion`]); its [`CheckpointEvent`] (step, examples seen, path, metrics,
//! whether and why it was promoted) is appended to the manifest, handed to any listener (e.g. a Kafka
//! producer), and the plot `ndcg_at_10.png` is redrawn. Retention then deletes checkpoints that are none of:
//! the last `keep_last`, the best by the configured metric, the promoted one (`latest`), the newest.
use super::checkpoint::{link_target, remove_checkpoint, LATEST, NEWEST};
use super::TrainError;
use crate::records::{CheckpointEvent, Metrics};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Manifest file name in the output directory.
pub const MANIFEST: &str = "checkpoints.jsonl";
/// Plot file name in the output directory.
pub const PLOT: &str = "ndcg_at_10.png";

/// Evaluates a freshly written checkpoint (loading it from disk, as its users will).
pub trait CheckpointEvaluator {
    /// Dataset name → metrics of the model in `model_dir`, as of optimizer step `step` (0: the base model).
    fn evaluate(&mut self, model_dir: &Path, step: u64) -> Result<BTreeMap<String, Metrics>, TrainError>;
}

/// Reads every event of `out_dir/checkpoints.jsonl` (none when the file is absent).
pub fn read_manifest(out_dir: &Path) -> Result<Vec<CheckpointEvent>, TrainError> {
    let path = out_dir.join(MANIFEST);
    if !path.exists() {
        return Ok(Vec::new());
    }
    Ok(crate::connectors::file::jsonl::read_all::<CheckpointEvent>(&path)?.into_iter().map(|(_, e)| e).collect())
}

/// Appends `event` to the manifest and fsyncs it.
pub fn append_manifest(out_dir: &Path, event: &CheckpointEvent) -> Result<(), TrainError> {
    let path = out_dir.join(MANIFEST);
    let line = serde_json::to_string(event).expect("events serialize. This is a bug.");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| TrainError::checkpoint(&path, e))?;
    writeln!(f, "{line}").and_then(|()| f.sync_data()).map_err(|e| TrainError::checkpoint(&path, e))
}

/// Deletes checkpoint directories that are neither among the last `keep_last` steps, nor the best by
/// `metric` (mean over datasets, higher is better), nor the target of `latest` (the promoted checkpoint)
/// or of `newest` (the restart point). Returns the removed paths.
pub fn apply_retention(
    out_dir: &Path,
    events: &[CheckpointEvent],
    keep_last: usize,
    metric: &str,
) -> Result<Vec<PathBuf>, TrainError> {
    // Only checkpoints this trainer wrote: the base model's evaluation (step 0) points elsewhere.
    let mut present: Vec<&CheckpointEvent> =
        events.iter().filter(|e| e.path.starts_with(out_dir) && e.path.is_dir()).collect();
    present.sort_by_key(|e| e.step);
    present.dedup_by_key(|e| e.step);
    let mut keep: Vec<u64> = present.iter().rev().take(keep_last.max(1)).map(|e| e.step).collect();
    let best = present
        .iter()
        .filter_map(|e| e.mean_metric(metric).map(|m| (m, e.step)))
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
    if let Some((_, step)) = best {
        keep.push(step);
    }
    let linked: Vec<PathBuf> = [LATEST, NEWEST].iter().filter_map(|link| link_target(out_dir, link)).collect();
    let mut removed = Vec::new();
    for e in present {
        if !keep.contains(&e.step) && !linked.contains(&e.path) {
            remove_checkpoint(&e.path)?;
            tracing::info!(step = e.step, path = %e.path.display(), "Removed checkpoint (retention).");
            removed.push(e.path.clone());
        }
    }
    Ok(removed)
}

/// Redraws `out_dir/ndcg_at_10.png` from the events' `ndcg@10` per dataset (skipped without metrics).
pub fn write_plot(out_dir: &Path, events: &[CheckpointEvent]) -> Result<(), TrainError> {
    let mut series: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    for e in events {
        for (dataset, m) in &e.metrics {
            if let Some(v) = m.get("ndcg@10") {
                series.entry(dataset.clone()).or_default().push((e.step, *v));
            }
        }
    }
    if series.is_empty() {
        return Ok(());
    }
    let path = out_dir.join(PLOT);
    super::plot::write_metric_plot(&path, "NDCG@10 VS STEP", &series).map_err(|e| TrainError::checkpoint(&path, e))
}
