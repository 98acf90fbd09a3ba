//! Totally ordered floating-point scores, so records that carry them can live in differential
//! collections (which need `Ord`, `Eq` and `Hash`).
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

/// A score (cosine, log-probability, RRF value) with a total order ([`f64::total_cmp`]): equal means
/// bit-identical, so a score computed twice the same way compares equal and cancels in consolidation.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Score(pub f64);

impl Score {
    /// The wrapped value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Hash for Score {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

impl From<f64> for Score {
    fn from(value: f64) -> Self {
        Score(value)
    }
}

impl From<f32> for Score {
    fn from(value: f32) -> Self {
        Score(f64::from(value))
    }
}

#[cfg(test)]
mod tests {
    use super::Score;

    #[test]
    fn scores_order_totally_including_nan_and_signed_zero() {
        let mut v = [Score(1.0), Score(f64::NAN), Score(-0.0), Score(0.0), Score(-3.0)];
        v.sort();
        assert_eq!(v[0], Score(-3.0));
        assert_eq!(v[1], Score(-0.0));
        assert_eq!(v[2], Score(0.0));
        assert_ne!(Score(-0.0), Score(0.0));
        assert!(v[4].0.is_nan());
    }
}
