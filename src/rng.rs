//! A small, seedable random generator that bn-exp owns, so that weight init, data order,
//! dropout masks and the probe batch are bit-identical across runs, resumes and machines,
//! whatever Burn's own generator does.
//!
//! SplitMix64 (Steele, Lea & Flood 2014): one u64 of state, passes BigCrush, and streams are
//! derived by hashing (seed, purpose, index), so a resumed run regenerates exactly the same
//! epoch permutation or dropout mask without saving generator state.

/// SplitMix64.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// An independent stream for `(seed, purpose, index)`, e.g. the permutation of epoch 7.
    pub fn stream(seed: u64, purpose: u64, index: u64) -> Self {
        let mut r = Rng::new(seed ^ 0x5851_F42D_4C95_7F2D);
        let a = r.next_u64() ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut r = Rng::new(a);
        let b = r.next_u64() ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
        Rng::new(b)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) (Lemire's multiply-shift; bias below 2^-32 for our sizes).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Standard normal by Box–Muller.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln is finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Two independent standard normals from one Box–Muller pair (both its cosine and its
    /// sine), for the places that need millions of them.
    pub fn normal_pair(&mut self) -> (f64, f64) {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
        (r * cos, r * sin)
    }

    /// A uniformly random permutation of 0..n (Fisher–Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i + 1);
            p.swap(i, j);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::stream(1, 2, 3).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::stream(1, 2, 3).next_u64(),
            Rng::stream(1, 2, 4).next_u64()
        );
        assert_ne!(
            Rng::stream(1, 2, 3).next_u64(),
            Rng::stream(2, 2, 3).next_u64()
        );
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut r = Rng::new(7);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
    }

    #[test]
    fn normal_pairs_have_unit_moments_and_no_correlation() {
        let mut r = Rng::new(11);
        let n = 100_000;
        let pairs: Vec<(f64, f64)> = (0..n).map(|_| r.normal_pair()).collect();
        let mean = |f: &dyn Fn(&(f64, f64)) -> f64| pairs.iter().map(f).sum::<f64>() / n as f64;
        assert!(mean(&|p| p.0).abs() < 0.01 && mean(&|p| p.1).abs() < 0.01);
        assert!((mean(&|p| p.0 * p.0) - 1.0).abs() < 0.015);
        assert!((mean(&|p| p.1 * p.1) - 1.0).abs() < 0.015);
        assert!(mean(&|p| p.0 * p.1).abs() < 0.01, "the pair is correlated");
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = Rng::new(3).permutation(1000);
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }
}
