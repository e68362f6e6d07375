/// Picks which decoded frames go to the detector so that, on average, `fps` frames per second of
/// stream time are kept, for any source rate: 30 -> 20 keeps 2 of every 3, 10 -> 5 every other.
/// A rate of 0 keeps nothing (decoding alone, as the decode benchmark measures).
#[derive(Debug, Clone)]
pub struct FrameSampler {
    interval: f64,
    next_due: Option<f64>,
}

impl FrameSampler {
    pub fn new(fps: f64) -> Self {
        Self {
            interval: 1.0 / fps,
            next_due: None,
        }
    }

    /// Whether the frame at stream time `t` (seconds) is kept.
    pub fn keep(&mut self, t: f64) -> bool {
        if !self.interval.is_finite() {
            return false;
        }
        // Tolerance for timestamps that land a hair before their due time.
        let eps = self.interval * 1e-3;
        match self.next_due {
            Some(due) if t + eps < due && due - t <= self.interval => false,
            Some(due) if t < due + self.interval => {
                self.next_due = Some(due + self.interval);
                true
            }
            // First frame, a jump forward, or a jump back (loop, camera clock reset): restart.
            _ => {
                self.next_due = Some(t + self.interval);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FrameSampler;

    fn kept(src: f64, dst: f64, n: usize) -> Vec<bool> {
        let mut s = FrameSampler::new(dst);
        (0..n).map(|i| s.keep(i as f64 / src)).collect()
    }

    #[test]
    fn non_integer_ratios_keep_the_right_share() {
        assert_eq!(kept(30.0, 20.0, 6), [true, false, true, true, false, true]);
        assert_eq!(kept(30.0, 20.0, 300).iter().filter(|k| **k).count(), 200);
        assert_eq!(kept(10.0, 5.0, 100).iter().filter(|k| **k).count(), 50);
        assert_eq!(kept(25.0, 10.0, 250).iter().filter(|k| **k).count(), 100);
        assert_eq!(kept(29.97, 5.0, 2997).iter().filter(|k| **k).count(), 500);
        assert!(
            kept(5.0, 10.0, 20).iter().all(|k| *k),
            "never more than the source"
        );
    }

    #[test]
    fn a_rate_of_zero_keeps_nothing() {
        assert!(kept(30.0, 0.0, 90).iter().all(|k| !k));
    }

    #[test]
    fn restarts_after_a_timestamp_jump() {
        let mut s = FrameSampler::new(5.0);
        assert!(s.keep(100.0));
        assert!(!s.keep(100.1));
        assert!(s.keep(0.0), "looped file starts over");
        assert!(s.keep(500.0), "gap");
    }
}
