//! Order statistics of a sample, nearest-rank.

use serde_json::{json, Value};

/// Median, p90, p99, min and max of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// The summary of `values` (any order); `None` when empty.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Self {
            n: sorted.len(),
            min: sorted[0],
            median: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p99: percentile(&sorted, 99.0),
            max: sorted[sorted.len() - 1],
        })
    }

    /// As JSON, values rounded to 3 decimals.
    pub fn to_json(&self) -> Value {
        json!({
            "n": self.n,
            "min": round3(self.min),
            "median": round3(self.median),
            "p90": round3(self.p90),
            "p99": round3(self.p99),
            "max": round3(self.max),
        })
    }
}

/// The nearest-rank percentile `p` (0..=100) of a sorted, non-empty sample.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `x` rounded to 3 decimals.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&values).expect("non-empty");
        assert_eq!((s.median, s.p90, s.p99, s.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(Summary::of(&[7.0]).expect("one").p99, 7.0);
        assert!(Summary::of(&[]).is_none());
    }
}
