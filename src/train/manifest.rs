//! The checkpoint manifest (`checkpoints.jsonl`), evaluation on arrival, retention and the metric plot.
//!
//! Each checkpoint, once written, is evaluated on the configured BEIR datasets and put through the
//! promotion gate ([`super::promotion`]); its [`CheckpointEvent`] (step, examples seen, path, metrics,
//! whether and why it was promoted) is appended to the manifest, handed to any listener (e.g. a Kafka
//! producer), and the plot `ndcg_at_10.png` is redrawn. Retention then deletes checkpoints that are none of:
//! the last `keep_last`, the best by the configured metric, the promoted one (`latest`), the newest.
use super::checkpoint::{link_target, remove_checkpoint, LATEST, NEWEST};
use super::TrainError;
use crate::connectors::file::InputError;
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
///
/// A last line without its newline that does not parse is the trace of a crash while it was appended: it is
/// left out with a warning (the checkpoint it described is still on disk, and [`append_manifest`] cuts it
/// off before the next record). Any other bad line is an error naming the file and line.
pub fn read_manifest(out_dir: &Path) -> Result<Vec<CheckpointEvent>, TrainError> {
    let path = out_dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(InputError::Open { path, source }.into()),
    };
    let torn = !text.is_empty() && !text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut events = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<CheckpointEvent>(line) {
            Ok(event) => events.push(event),
            Err(_) if torn && i + 1 == lines.len() => {
                tracing::warn!(path = %path.display(), line = i + 1,
                    "The manifest's last record was cut off (a crash while it was written); leaving it out.");
            }
            Err(e) => return Err(InputError::Malformed { path, line: i + 1, message: e.to_string() }.into()),
        }
    }
    Ok(events)
}

/// Appends `event` to the manifest and fsyncs it. A record cut off by a crash at the end of the file is
/// removed first, so the new record starts on its own line.
pub fn append_manifest(out_dir: &Path, event: &CheckpointEvent) -> Result<(), TrainError> {
    let path = out_dir.join(MANIFEST);
    let line = serde_json::to_string(event).expect("events serialize. This is a bug.");
    let fail = |e| TrainError::checkpoint(&path, e);
    if let Ok(existing) = std::fs::read(&path) {
        if existing.last().is_some_and(|&b| b != b'\n') {
            let keep = existing.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let f = std::fs::OpenOptions::new().write(true).open(&path).map_err(fail)?;
            f.set_len(keep as u64).and_then(|()| f.sync_data()).map_err(fail)?;
        }
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(fail)?;
    writeln!(f, "{line}").and_then(|()| f.sync_data()).map_err(fail)
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

/// Redraws `out_dir/ndcg_at_10.png` from the events' nDCG@10 per dataset and dimension (skipped without
/// metrics): one line per dataset at the full dimension and one per truncated (Matryoshka) dimension.
pub fn write_plot(out_dir: &Path, events: &[CheckpointEvent]) -> Result<(), TrainError> {
    let series = ndcg_series(events);
    if series.is_empty() {
        return Ok(());
    }
    let path = out_dir.join(PLOT);
    super::plot::write_metric_plot(&path, "NDCG@10 VS STEP", &series).map_err(|e| TrainError::checkpoint(&path, e))
}

/// The plot's lines: `dataset` (full dimension, metric `ndcg@10`) and `dataset/D` (metric `ndcg@10/D`,
/// see [`super::evaluate`]), each with its `(step, value)` points.
fn ndcg_series(events: &[CheckpointEvent]) -> BTreeMap<String, Vec<(u64, f64)>> {
    let mut series: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    for e in events {
        for (dataset, m) in &e.metrics {
            for (metric, v) in m {
                let name = match metric.strip_prefix("ndcg@10") {
                    Some("") => dataset.clone(),
                    Some(dim) if dim.starts_with('/') => format!("{dataset}{dim}"),
                    _ => continue,
                };
                series.entry(name).or_default().push((e.step, *v));
            }
        }
    }
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(step: u64) -> CheckpointEvent {
        CheckpointEvent {
            step,
            examples_seen: step * 8,
            path: PathBuf::from(format!("checkpoint-{step:08}")),
            metrics: BTreeMap::new(),
            mean_loss: Some(1.0),
            created: 0.0,
            promoted: false,
            promotion: String::new(),
            baseline: false,
        }
    }

    #[test]
    fn the_plot_has_a_line_per_dataset_and_truncated_dimension() {
        let mut events = vec![event(0), event(5)];
        for (k, e) in events.iter_mut().enumerate() {
            let m = BTreeMap::from([
                ("ndcg@10".to_string(), 0.5 + k as f64),
                ("ndcg@10/64".to_string(), 0.3 + k as f64),
                ("ndcg@100".to_string(), 9.0),
                ("recall@10/64".to_string(), 9.0),
            ]);
            e.metrics.insert("cranfield".into(), m);
        }
        let series = ndcg_series(&events);
        assert_eq!(
            series,
            BTreeMap::from([
                ("cranfield".to_string(), vec![(0, 0.5), (5, 1.5)]),
                ("cranfield/64".to_string(), vec![(0, 0.3), (5, 1.3)]),
            ])
        );
        let dir = tempfile::tempdir().unwrap();
        write_plot(dir.path(), &events).unwrap();
        assert!(std::fs::metadata(dir.path().join(PLOT)).unwrap().len() > 1000);
    }

    /// A crash while a record is appended leaves a torn last line: it is left out on reading and cut off
    /// before the next record; a bad line anywhere else is an error naming file and line.
    #[test]
    fn a_torn_last_record_is_left_out_and_cut_off_and_other_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        append_manifest(dir.path(), &event(1)).unwrap();
        append_manifest(dir.path(), &event(2)).unwrap();
        let path = dir.path().join(MANIFEST);
        let whole = std::fs::read_to_string(&path).unwrap();
        let torn = serde_json::to_string(&event(3)).unwrap();
        std::fs::write(&path, format!("{whole}{}", &torn[..torn.len() / 2])).unwrap();
        let steps = |events: Vec<CheckpointEvent>| events.iter().map(|e| e.step).collect::<Vec<_>>();
        assert_eq!(steps(read_manifest(dir.path()).unwrap()), [1, 2]);
        append_manifest(dir.path(), &event(3)).unwrap();
        assert_eq!(steps(read_manifest(dir.path()).unwrap()), [1, 2, 3]);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3, "the torn bytes are gone");

        let text = std::fs::read_to_string(&path).unwrap().replacen("\"step\":2", "\"step\":\"two\"", 1);
        std::fs::write(&path, text).unwrap();
        let error = read_manifest(dir.path()).unwrap_err().to_string();
        assert!(error.contains("checkpoints.jsonl:2"), "{error}");
    }
}
