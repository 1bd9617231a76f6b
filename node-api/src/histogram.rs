//! A cumulative latency histogram in Prometheus' shape (upper bounds and cumulative
//! counts), with the subtraction and quantile the rollout analysis needs.

use serde::{Deserialize, Serialize};

/// Cumulative histogram: `counts[i]` observations were ≤ `bounds[i]`; `count` is the
/// total (including those above the last bound).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Upper bounds, ascending, in seconds.
    pub bounds: Vec<f64>,
    /// Cumulative counts per bound.
    pub counts: Vec<u64>,
    /// All observations.
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum: f64,
}

impl Histogram {
    /// The observations between `earlier` and `self` (same bounds; otherwise `self`).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        if earlier.bounds != self.bounds || earlier.count > self.count {
            return self.clone();
        }
        Histogram {
            bounds: self.bounds.clone(),
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            count: self.count - earlier.count,
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }

    /// Adds another histogram with the same bounds (an empty one takes the other's bounds).
    pub fn add(&mut self, other: &Histogram) {
        if self.bounds.is_empty() && self.count == 0 {
            *self = other.clone();
            return;
        }
        if self.bounds == other.bounds {
            for (a, b) in self.counts.iter_mut().zip(&other.counts) {
                *a += b;
            }
            self.count += other.count;
            self.sum += other.sum;
        }
    }

    /// The `q` quantile (0..=1) as the upper bound of the bucket it falls in, the way
    /// Prometheus' `histogram_quantile` bounds it from above; `+inf` when it is above the
    /// last bound, `None` when there are no observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        for (bound, cumulative) in self.bounds.iter().zip(&self.counts) {
            if *cumulative >= rank {
                return Some(*bound);
            }
        }
        Some(f64::INFINITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(counts: &[u64], count: u64) -> Histogram {
        Histogram {
            bounds: vec![0.001, 0.01, 0.1],
            counts: counts.to_vec(),
            count,
            sum: 0.0,
        }
    }

    #[test]
    fn quantile_is_the_bucket_bound() {
        assert_eq!(h(&[0, 0, 0], 0).quantile(0.99), None);
        assert_eq!(h(&[99, 100, 100], 100).quantile(0.99), Some(0.001));
        assert_eq!(h(&[98, 100, 100], 100).quantile(0.99), Some(0.01));
        assert_eq!(h(&[50, 90, 98], 100).quantile(0.99), Some(f64::INFINITY));
    }

    #[test]
    fn since_subtracts_and_add_sums() {
        let late = h(&[10, 20, 30], 31);
        let early = h(&[5, 5, 5], 5);
        let d = late.since(&early);
        assert_eq!(d.counts, vec![5, 15, 25]);
        assert_eq!(d.count, 26);
        let mut total = Histogram::default();
        total.add(&d);
        total.add(&d);
        assert_eq!(total.counts, vec![10, 30, 50]);
        // A restart (counts went down) takes the later one whole.
        assert_eq!(early.since(&late), early);
    }
}
