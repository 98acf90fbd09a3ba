//! The promotion gate: `latest` moves only to a checkpoint that measured better than the promoted model.
//!
//! With the gate on and an evaluation configured, the base model is evaluated before the first step and
//! recorded in `checkpoints.jsonl` as the baseline entry (step 0, `baseline: true`, its path the base
//! model's directory): it is the first promoted model. Each checkpoint is evaluated on arrival and
//! promoted, `latest` moving to it, only when its metric (mean over the evaluation datasets) beats the
//! promoted model's by more than the margin: `candidate > promoted + margin`. So with the default margin 0
//! a tie does not promote, and a negative margin accepts a drop of up to `-margin` (`-1`: every
//! checkpoint). Until a checkpoint beats the base model there is no `latest`: its users keep the base
//! model. Every checkpoint is still written, followed by `newest` (the restart point), listed in the
//! manifest with `promoted` and a `promotion` reason, and published to listeners.
//!
//! With the gate off, or without an evaluation to gate on, every checkpoint is promoted (reasons
//! `gate off`, `no evaluation configured`), as before the gate existed.
//!
//! The promotion state lives in the manifest only: the promoted model is its last entry with
//! `promoted: true` (see [`recorded_promoted`]), so it survives restarts. A checkpoint's `fretflow.json`
//! does not say whether it was promoted: it is written before the checkpoint is evaluated.
use super::TrainError;
use crate::records::{mean_metric, CheckpointEvent, Metrics};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The reason recorded for every checkpoint when the gate is off.
pub const GATE_OFF: &str = "gate off";
/// The reason recorded for every checkpoint when no evaluation is configured.
pub const NO_EVALUATION: &str = "no evaluation configured";

/// How checkpoints are promoted to `latest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromotionConfig {
    /// Gate on: `latest` moves only to a checkpoint that beats the promoted model (needs an evaluator;
    /// without one every checkpoint is promoted). Off: `latest` follows every checkpoint.
    pub enabled: bool,
    /// The metric compared, averaged over the evaluation datasets; higher is better.
    pub metric: String,
    /// A checkpoint is promoted when its metric is greater than the promoted model's plus this.
    pub margin: f64,
}

impl Default for PromotionConfig {
    /// Gate on, `ndcg@10`, margin 0 (strictly better).
    fn default() -> Self {
        Self { enabled: true, metric: "ndcg@10".to_string(), margin: 0.0 }
    }
}

impl PromotionConfig {
    /// Checks the metric name is not empty and the margin is a finite number.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.metric.trim().is_empty() {
            return Err(TrainError::Config { field: "promote_metric", message: "must name a metric".into() });
        }
        if !self.margin.is_finite() {
            let message = format!("must be a finite number, got {}", self.margin);
            return Err(TrainError::Config { field: "promote_margin", message });
        }
        Ok(())
    }
}

/// Whether a checkpoint was promoted, and why, as recorded in its manifest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `latest` moves to the checkpoint.
    pub promoted: bool,
    /// A short reason for people, e.g. `ndcg@10 0.3912 > promoted 0.3817 (base) + margin 0.0000`.
    pub reason: String,
}

/// The promoted model: the one later checkpoints must beat.
#[derive(Debug, Clone, PartialEq)]
pub struct Promoted {
    /// Its step (0: the base model).
    pub step: u64,
    /// Its directory (the base model's directory for the baseline).
    pub path: PathBuf,
    /// It is the base model.
    pub baseline: bool,
    /// Dataset name → metrics, as last measured (empty when not yet measured).
    pub metrics: BTreeMap<String, Metrics>,
}

impl Promoted {
    /// The promoted model a manifest entry describes (a step-0 entry is the base model's evaluation, also in
    /// manifests written before entries were marked `baseline`).
    pub fn from_event(event: &CheckpointEvent) -> Self {
        let baseline = event.baseline || event.step == 0;
        Self { step: event.step, path: event.path.clone(), baseline, metrics: event.metrics.clone() }
    }

    /// `base` or `step N`, for reasons and logs.
    pub fn label(&self) -> String {
        if self.baseline {
            "base".to_string()
        } else {
            format!("step {}", self.step)
        }
    }

    /// `metric` averaged over the datasets it was measured on; `None` when not measured.
    pub fn mean_metric(&self, metric: &str) -> Option<f64> {
        mean_metric(&self.metrics, metric)
    }
}

/// Decides whether a checkpoint is promoted. `evaluated`: an evaluation is configured; `candidate`: the
/// checkpoint's mean metric (`None` when its evaluation lacks it); `reference`: the promoted model's mean
/// metric and its label (`base`, `step N`), `None` when there is nothing to compare with.
///
/// Gate off or no evaluation: promoted. Otherwise promoted exactly when `candidate > reference + margin`
/// (a tie at margin 0 is not promoted, nor is a missing or NaN metric); with no reference, promoted.
pub fn decide(
    config: &PromotionConfig,
    evaluated: bool,
    candidate: Option<f64>,
    reference: Option<(f64, &str)>,
) -> Decision {
    let metric = &config.metric;
    let margin = config.margin;
    let (promoted, reason) = match (config.enabled, evaluated, candidate, reference) {
        (false, ..) => (true, GATE_OFF.to_string()),
        (true, false, ..) => (true, NO_EVALUATION.to_string()),
        (true, true, None, _) => (false, format!("not promoted: the evaluation has no {metric}")),
        (true, true, Some(c), None) => (true, format!("{metric} {c:.4}; no promoted model to compare with")),
        (true, true, Some(c), Some((r, label))) if c > r + margin => {
            (true, format!("{metric} {c:.4} > promoted {r:.4} ({label}) + margin {margin:.4}"))
        }
        (true, true, Some(c), Some((r, label))) => {
            (false, format!("not promoted: {metric} {c:.4} <= promoted {r:.4} ({label}) + margin {margin:.4}"))
        }
    };
    Decision { promoted, reason }
}

/// The promoted model recorded in a manifest: the last entry with `promoted: true`. A manifest written
/// before the gate existed marks none: then the entry for the checkpoint `latest` points at (compared by
/// directory name), else the last baseline or step-0 entry (the base model's evaluation).
pub fn recorded_promoted(events: &[CheckpointEvent], latest: Option<&Path>) -> Option<Promoted> {
    let latest_name = latest.and_then(Path::file_name);
    events
        .iter()
        .rev()
        .find(|e| e.promoted)
        .or_else(|| latest_name.and_then(|l| events.iter().rev().find(|e| e.step > 0 && e.path.file_name() == Some(l))))
        .or_else(|| events.iter().rev().find(|e| e.baseline || e.step == 0))
        .map(Promoted::from_event)
}

/// One line on where `latest` stands after a run, from the manifest and the directory names `latest` and
/// `newest` point at: the promoted checkpoint and why; or, with the gate on and nothing promoted, that no
/// checkpoint beat the base model (best checkpoint against base) and `latest` was not written.
pub fn report(
    config: &PromotionConfig,
    evaluated: bool,
    events: &[CheckpointEvent],
    latest: Option<&str>,
    newest: Option<&str>,
) -> String {
    let newest_part = newest.map(|n| format!("; newest: {n}")).unwrap_or_default();
    if !config.enabled || !evaluated {
        let why = if config.enabled { NO_EVALUATION } else { "promotion gate off" };
        return match latest {
            Some(l) => format!("latest: {l} ({why}: latest follows every checkpoint)"),
            None => format!("no checkpoint written yet ({why})"),
        };
    }
    let metric = &config.metric;
    let is_base = |e: &&CheckpointEvent| e.baseline || e.step == 0;
    match (latest, events.iter().rev().find(|e| e.promoted && !is_base(e))) {
        (Some(l), Some(p)) => format!("latest: {l}, promoted at step {}: {}{newest_part}", p.step, p.promotion),
        (Some(l), None) => format!("latest: {l}{newest_part}"),
        (None, _) => {
            let base = events.iter().rev().find(is_base).and_then(|e| e.mean_metric(metric));
            let best = events.iter().filter(|e| !is_base(e)).filter_map(|e| e.mean_metric(metric)).reduce(f64::max);
            let value = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"));
            match best {
                Some(_) => format!(
                    "no checkpoint beat the base model (best {metric} {} vs base {}, margin {:.4}); latest not \
                     written: keep using the base model{newest_part}",
                    value(best),
                    value(base),
                    config.margin
                ),
                None => {
                    format!("no checkpoint evaluated yet; latest not written: keep using the base model{newest_part}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(margin: f64) -> PromotionConfig {
        PromotionConfig { margin, ..PromotionConfig::default() }
    }

    fn event(step: u64, ndcg: Option<f64>, promoted: bool, promotion: &str) -> CheckpointEvent {
        let metrics = ndcg.map(|v| BTreeMap::from([("d".to_string(), Metrics::from([("ndcg@10".to_string(), v)]))]));
        CheckpointEvent {
            step,
            examples_seen: step * 4,
            path: PathBuf::from(if step == 0 { "base".to_string() } else { format!("out/checkpoint-{step:08}") }),
            metrics: metrics.unwrap_or_default(),
            mean_loss: None,
            created: 0.0,
            promoted,
            promotion: promotion.to_string(),
            baseline: step == 0 && !promotion.is_empty(),
        }
    }

    #[test]
    fn a_checkpoint_is_promoted_only_when_it_beats_the_promoted_one_by_more_than_the_margin() {
        let better = decide(&gate(0.0), true, Some(0.3912), Some((0.3817, "base")));
        assert_eq!(
            better,
            Decision { promoted: true, reason: "ndcg@10 0.3912 > promoted 0.3817 (base) + margin 0.0000".into() }
        );
        let worse = decide(&gate(0.0), true, Some(0.38), Some((0.3817, "step 4")));
        assert!(!worse.promoted);
        assert_eq!(worse.reason, "not promoted: ndcg@10 0.3800 <= promoted 0.3817 (step 4) + margin 0.0000");
        assert!(!decide(&gate(0.01), true, Some(0.3912), Some((0.3817, "base"))).promoted, "0.0095 < margin 0.01");
        assert!(decide(&gate(0.005), true, Some(0.3912), Some((0.3817, "base"))).promoted);
        let drop = decide(&gate(-1.0), true, Some(0.1), Some((0.9, "base")));
        assert!(drop.promoted, "a negative margin accepts a drop: {}", drop.reason);
        assert!(drop.reason.ends_with("+ margin -1.0000"), "{}", drop.reason);
    }

    #[test]
    fn a_tie_is_not_promoted_at_margin_zero() {
        let tie = decide(&gate(0.0), true, Some(1.0), Some((1.0, "base")));
        assert!(!tie.promoted, "{}", tie.reason);
        let tiny = decide(&gate(-1e-9), true, Some(1.0), Some((1.0, "base")));
        assert!(tiny.promoted, "a tiny negative margin lets ties in");
    }

    #[test]
    fn a_missing_or_nan_metric_is_never_promoted() {
        let missing = decide(&gate(-1.0), true, None, Some((0.3, "base")));
        assert_eq!(missing, Decision { promoted: false, reason: "not promoted: the evaluation has no ndcg@10".into() });
        assert!(!decide(&gate(-1.0), true, Some(f64::NAN), Some((0.3, "base"))).promoted);
    }

    #[test]
    fn gate_off_or_no_evaluation_promotes_every_checkpoint() {
        let off = PromotionConfig { enabled: false, ..gate(0.5) };
        let worse = decide(&off, true, Some(0.1), Some((0.9, "base")));
        assert_eq!(worse, Decision { promoted: true, reason: GATE_OFF.into() });
        assert_eq!(decide(&off, false, None, None).reason, GATE_OFF);
        assert_eq!(decide(&gate(0.5), false, None, None), Decision { promoted: true, reason: NO_EVALUATION.into() });
        let first = decide(&gate(0.0), true, Some(0.2), None);
        assert!(first.promoted && first.reason.contains("no promoted model"), "{}", first.reason);
    }

    #[test]
    fn a_bad_margin_or_an_empty_metric_is_a_config_error_naming_the_option() {
        let nan = gate(f64::NAN).validate().unwrap_err().to_string();
        assert!(nan.contains("promote_margin"), "{nan}");
        let empty = PromotionConfig { metric: " ".into(), ..gate(0.0) }.validate().unwrap_err().to_string();
        assert!(empty.contains("promote_metric"), "{empty}");
        assert!(gate(-1.0).validate().is_ok());
    }

    #[test]
    fn the_promoted_model_is_the_last_promoted_entry_of_the_manifest() {
        let events = [
            event(0, Some(0.38), true, "baseline"),
            event(1, Some(0.40), true, "ndcg@10 0.4000 > promoted 0.3800 (base) + margin 0.0000"),
            event(2, Some(0.39), false, "not promoted"),
        ];
        let p = recorded_promoted(&events, Some(Path::new("out/checkpoint-00000002"))).unwrap();
        assert_eq!((p.step, p.baseline, p.label(), p.mean_metric("ndcg@10")), (1, false, "step 1".into(), Some(0.40)));
        let base_only = recorded_promoted(&events[..1], None).unwrap();
        assert_eq!((base_only.step, base_only.baseline, base_only.label()), (0, true, "base".into()));
        assert_eq!(recorded_promoted(&[], None), None);
    }

    #[test]
    fn a_manifest_from_before_the_gate_takes_latest_or_else_the_base_evaluation() {
        let old = [event(0, Some(0.38), false, ""), event(1, Some(0.40), false, ""), event(2, Some(0.37), false, "")];
        let p = recorded_promoted(&old, Some(Path::new("out/checkpoint-00000002"))).unwrap();
        assert_eq!(p.step, 2, "latest pointed at step 2");
        assert_eq!(recorded_promoted(&old, None).unwrap().step, 0, "no latest: the base model's evaluation");
    }

    #[test]
    fn the_report_names_the_promoted_checkpoint_or_says_latest_was_not_written() {
        let on = gate(0.0);
        let events = [
            event(0, Some(0.382), true, "baseline"),
            event(1, Some(0.381), false, "not promoted: ndcg@10 0.3810 <= promoted 0.3820 (base) + margin 0.0000"),
            event(2, Some(0.3), false, "not promoted: ..."),
        ];
        let none = report(&on, true, &events, None, Some("checkpoint-00000002"));
        assert_eq!(
            none,
            "no checkpoint beat the base model (best ndcg@10 0.3810 vs base 0.3820, margin 0.0000); latest not \
             written: keep using the base model; newest: checkpoint-00000002"
        );
        let mut promoted = events.to_vec();
        promoted[1] = event(1, Some(0.39), true, "ndcg@10 0.3900 > promoted 0.3820 (base) + margin 0.0000");
        let some = report(&on, true, &promoted, Some("checkpoint-00000001"), Some("checkpoint-00000002"));
        assert_eq!(
            some,
            "latest: checkpoint-00000001, promoted at step 1: ndcg@10 0.3900 > promoted 0.3820 (base) + margin \
             0.0000; newest: checkpoint-00000002"
        );
        assert!(report(&on, true, &events[..1], None, None).starts_with("no checkpoint evaluated yet"));
        let off = PromotionConfig { enabled: false, ..on.clone() };
        assert!(report(&off, true, &events, Some("checkpoint-00000002"), None).contains("promotion gate off"));
        assert!(report(&on, false, &[], Some("checkpoint-00000002"), None).contains(NO_EVALUATION));
    }

    #[test]
    fn manifest_lines_from_before_the_gate_still_parse() {
        let line = r#"{"step":3,"examples_seen":12,"path":"out/checkpoint-00000003","metrics":{},"mean_loss":0.5,
            "created":1.0}"#;
        let e: CheckpointEvent = serde_json::from_str(line).unwrap();
        assert_eq!((e.promoted, e.promotion.as_str(), e.baseline), (false, "", false));
        let back: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!((back["promoted"].as_bool(), back["promotion"].as_str()), (Some(false), Some("")));
    }
}
