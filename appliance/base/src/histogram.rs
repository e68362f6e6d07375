/// A lock-free latency histogram with fixed bucket bounds, shared between the thread that
/// records and the thread that reports (Prometheus conventions: seconds, cumulative buckets).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, not cumulative; the last one is above every bound.
    counts: Vec<std::sync::atomic::AtomicU64>,
    sum_micros: std::sync::atomic::AtomicU64,
}

/// A histogram at one moment: cumulative counts for each bound, then the total.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// An upper bound for the `q` quantile (0..1): the bound of the bucket it falls in;
    /// `None` when empty or beyond the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        (self.count > 0)
            .then(|| {
                self.buckets
                    .iter()
                    .find(|(_, n)| *n >= rank)
                    .map(|(b, _)| *b)
            })
            .flatten()
    }
}

impl Histogram {
    /// `bounds` in seconds, ascending.
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| Default::default()).collect(),
            sum_micros: Default::default(),
        }
    }

    pub fn observe(&self, d: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = d.as_secs_f64();
        let i = self.bounds.partition_point(|&b| b < s);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        use std::sync::atomic::Ordering::Relaxed;
        let mut running = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(&b, c)| {
                running += c.load(Relaxed);
                (b, running)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            count: running + self.counts[self.bounds.len()].load(Relaxed),
            sum_seconds: self.sum_micros.load(Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn buckets_are_cumulative_and_a_value_on_a_bound_falls_in_it() {
        let h = Histogram::new(&[0.01, 0.1]);
        for ms in [5, 10, 50, 500] {
            h.observe(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, [(0.01, 2), (0.1, 3)]);
        assert_eq!(s.count, 4);
        assert!((s.sum_seconds - 0.565).abs() < 1e-9);
        assert_eq!(s.quantile(0.5), Some(0.01));
        assert_eq!(s.quantile(0.75), Some(0.1));
        assert_eq!(s.quantile(1.0), None, "above the last bound");
    }
}
