//! Santurkar et al.'s noisy BN (2018, section 2.2): a deliberate, changing covariate shift
//! after the normalisation layer.
//!
//! For layer ℓ at training step t, draw μ_t ~ U(−mean_range, mean_range) and
//! σ_t ~ U(scale_min, scale_max) once; then for every value a of the layer's output (every
//! element of `[N, C]` or `[N, C, H, W]`) draw m ~ U(μ_t − mean_spread, μ_t + mean_spread) and
//! s ~ N(σ_t, scale_std), and replace a by s·a + m. With the defaults (0.5, 1, 1.25, 0.1, 0.1)
//! the next layer sees a distribution whose mean moves by up to ±0.5 and whose scale by up to
//! 25% from one step to the next, which is more "internal covariate shift" than a net without
//! BN has. The paper's point: BN with this noise trains about as well as BN.
//!
//! The draws come from bn-exp's generator, seeded per forward pass (the training step's noise
//! seed) and per layer, so a resumed run repeats them exactly. s and m are constants of the
//! pass: no gradient flows into them.

use anyhow::{Result, ensure};
use burn::tensor::{Tensor, TensorCreationOptions, TensorData};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// The distribution of the noise (`norm.noise_params`), Santurkar et al. (2018), section 2.2:
/// for each layer and training step draw μ_t ~ U(−mean_range, mean_range) and
/// σ_t ~ U(scale_min, scale_max); then for each value m ~ U(μ_t − mean_spread, μ_t +
/// mean_spread) and s ~ N(σ_t, scale_std), and a ← s·a + m.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoiseConfig {
    pub mean_range: f64,
    pub scale_min: f64,
    pub scale_max: f64,
    pub mean_spread: f64,
    pub scale_std: f64,
}

impl Default for NoiseConfig {
    fn default() -> Self {
        Self {
            mean_range: 0.5,
            scale_min: 1.0,
            scale_max: 1.25,
            mean_spread: 0.1,
            scale_std: 0.1,
        }
    }
}

impl NoiseConfig {
    /// The parameters must describe a distribution. Each failure names its key.
    pub fn check(&self) -> Result<()> {
        for (key, value) in [
            ("norm.noise_params.mean_range", self.mean_range),
            ("norm.noise_params.mean_spread", self.mean_spread),
            ("norm.noise_params.scale_std", self.scale_std),
            ("norm.noise_params.scale_min", self.scale_min),
        ] {
            ensure!(
                value.is_finite() && value >= 0.0,
                "{key} must be a finite number of at least 0, got {value}"
            );
        }
        ensure!(
            self.scale_max.is_finite() && self.scale_max >= self.scale_min,
            "norm.noise_params.scale_max ({}) must be finite and at least \
             norm.noise_params.scale_min ({}): σ_t is drawn from U(scale_min, scale_max)",
            self.scale_max,
            self.scale_min
        );
        Ok(())
    }
}

/// Purpose of the noise streams ([`Rng::stream`]), one per layer under a pass's seed.
const NOISE_STREAM: u64 = 0x2015E;

/// `a` with the noise of layer `layer` for the forward pass seeded by `seed`.
pub fn add_noise<const D: usize>(
    a: Tensor<D>,
    params: &NoiseConfig,
    seed: u64,
    layer: usize,
) -> Tensor<D> {
    let dims = a.dims();
    let (scale, shift) = noise_values(params, seed, layer, dims.iter().product());
    let like = TensorCreationOptions::new(a.device()).with_dtype(a.dtype());
    let scale = Tensor::<D>::from_data(TensorData::new(scale, dims), like.clone());
    let shift = Tensor::<D>::from_data(TensorData::new(shift, dims), like);
    a.mul(scale).add(shift)
}

/// The per-value scales s and shifts m of layer `layer` for the pass seeded by `seed`, `n`
/// values each. Public so that tests can check their distribution.
pub fn noise_values(
    params: &NoiseConfig,
    seed: u64,
    layer: usize,
    n: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::stream(seed, NOISE_STREAM, layer as u64);
    let mu_t = params.mean_range * (2.0 * rng.uniform() - 1.0);
    let sigma_t = params.scale_min + (params.scale_max - params.scale_min) * rng.uniform();
    let shift = (0..n)
        .map(|_| (mu_t + params.mean_spread * (2.0 * rng.uniform() - 1.0)) as f32)
        .collect();
    let mut scale = Vec::with_capacity(n + 1);
    while scale.len() < n {
        let (z1, z2) = rng.normal_pair();
        scale.push((sigma_t + params.scale_std * z1) as f32);
        scale.push((sigma_t + params.scale_std * z2) as f32);
    }
    scale.truncate(n);
    (scale, shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_std(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    #[test]
    fn draws_follow_santurkar_et_al_s_distribution() {
        let params = NoiseConfig::default();
        let n = 4000;
        let mut centres = Vec::new();
        for seed in 0..100 {
            for layer in 0..3 {
                let (scale, shift) = noise_values(&params, seed, layer, n);
                assert_eq!((scale.len(), shift.len()), (n, n));
                // m ~ U(μ_t − 0.1, μ_t + 0.1): the shifts span at most 0.2 around their centre.
                let lo = shift.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = shift.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                assert!(
                    hi - lo <= 0.2 + 1e-6 && hi - lo > 0.19,
                    "shift span {}",
                    hi - lo
                );
                let mu_t = f64::from(lo + hi) / 2.0;
                assert!(mu_t.abs() <= 0.5 + 1e-6, "μ_t {mu_t}");
                centres.push(mu_t);
                // s ~ N(σ_t, 0.1) with σ_t ~ U(1, 1.25).
                let (sigma_t, spread) = mean_std(&scale);
                assert!((0.99..=1.26).contains(&sigma_t), "σ_t {sigma_t}");
                assert!((spread - 0.1).abs() < 0.008, "scale std {spread}");
            }
        }
        // μ_t covers its range: U(−0.5, 0.5) over 300 draws reaches past ±0.45.
        let min = centres.iter().copied().fold(f64::INFINITY, f64::min);
        let max = centres.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert!(min < -0.45 && max > 0.45, "μ_t range [{min}, {max}]");
    }

    #[test]
    fn draws_repeat_for_a_seed_and_layer_and_differ_otherwise() {
        let params = NoiseConfig::default();
        let a = noise_values(&params, 7, 1, 101);
        assert_eq!(a, noise_values(&params, 7, 1, 101));
        assert_ne!(a, noise_values(&params, 7, 2, 101));
        assert_ne!(a, noise_values(&params, 8, 1, 101));
        // An odd count is cut from the last Box–Muller pair, not padded.
        assert_eq!(a.0.len(), 101);
    }
}
