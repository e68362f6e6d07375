//! Constant-velocity Kalman filter over (cx, cy, aspect, height), as in ByteTrack/DeepSORT.
//!
//! With that model (F = [[I, I], [0, I]], H = [I, 0], diagonal noise) the 8x8 covariance stays
//! block-diagonal: each of the four measured quantities is an independent 2-state filter of
//! (position, velocity). We store the four 2x2 blocks, which is exact and far cheaper.

const STD_POS: f32 = 1.0 / 20.0;
const STD_VEL: f32 = 1.0 / 160.0;

#[derive(Debug, Clone, Copy)]
struct Axis {
    x: f32,
    v: f32,
    p00: f32,
    p01: f32,
    p11: f32,
}

impl Axis {
    fn predict(&mut self, q_pos: f32, q_vel: f32) {
        self.x += self.v;
        let p00 = self.p00 + 2.0 * self.p01 + self.p11 + q_pos;
        let p01 = self.p01 + self.p11;
        self.p00 = p00;
        self.p01 = p01;
        self.p11 += q_vel;
    }

    fn update(&mut self, z: f32, r: f32) {
        let s = self.p00 + r;
        let k0 = self.p00 / s;
        let k1 = self.p01 / s;
        let y = z - self.x;
        self.x += k0 * y;
        self.v += k1 * y;
        let (p00, p01, p11) = (self.p00, self.p01, self.p11);
        self.p00 = p00 - p00 * p00 / s;
        self.p01 = p01 - p00 * p01 / s;
        self.p11 = p11 - p01 * p01 / s;
    }
}

/// Motion state of one track.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kalman {
    axes: [Axis; 4],
}

/// Standard deviations per axis (cx, cy, aspect, height) for a given height scale.
fn stds(h: f32, weight: f32, aspect: f32) -> [f32; 4] {
    [weight * h, weight * h, aspect, weight * h]
}

impl Kalman {
    /// Starts a filter at measurement `[cx, cy, a, h]` with zero velocity.
    pub(crate) fn new(m: [f32; 4]) -> Self {
        let h = m[3];
        let sp = stds(h, 2.0 * STD_POS, 1e-2);
        let sv = stds(h, 10.0 * STD_VEL, 1e-5);
        let axes = std::array::from_fn(|i| Axis {
            x: m[i],
            v: 0.0,
            p00: sp[i] * sp[i],
            p01: 0.0,
            p11: sv[i] * sv[i],
        });
        Self { axes }
    }

    pub(crate) fn predict(&mut self) {
        let h = self.axes[3].x;
        let sp = stds(h, STD_POS, 1e-2);
        let sv = stds(h, STD_VEL, 1e-5);
        for (i, a) in self.axes.iter_mut().enumerate() {
            a.predict(sp[i] * sp[i], sv[i] * sv[i]);
        }
    }

    pub(crate) fn update(&mut self, m: [f32; 4]) {
        let r = stds(self.axes[3].x, STD_POS, 1e-1);
        for (i, a) in self.axes.iter_mut().enumerate() {
            a.update(m[i], r[i] * r[i]);
        }
    }

    /// Stops the height from drifting while a track is unseen (ByteTrack does the same).
    pub(crate) fn freeze_height_velocity(&mut self) {
        self.axes[3].v = 0.0;
    }

    /// The current state as `[cx, cy, a, h]`.
    pub(crate) fn state(&self) -> [f32; 4] {
        std::array::from_fn(|i| self.axes[i].x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_constant_velocity() {
        let mut k = Kalman::new([100.0, 50.0, 0.5, 80.0]);
        for t in 1..30 {
            k.predict();
            k.update([100.0 + 4.0 * t as f32, 50.0, 0.5, 80.0]);
        }
        k.predict();
        let s = k.state();
        assert!((s[0] - 220.0).abs() < 1.0, "predicted cx {}", s[0]);
        assert!((s[1] - 50.0).abs() < 0.5);
    }
}
