//! One SGD step, shared by training and `bench`: the forward pass in training mode, softmax
//! cross-entropy, the backward pass and the optimiser's update.

use anyhow::Result;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig, decay::WeightDecayConfig};
use burn::tensor::Tensor;

use crate::config::Config;
use crate::kernels::cross_entropy;
use crate::model::{Mode, Net, Pass};

/// The seeds of a training step's random draws: its dropout masks and its noise (each `None`
/// when the net has none).
#[derive(Debug, Clone, Copy, Default)]
pub struct StepSeeds {
    pub dropout: Option<u64>,
    pub noise: Option<u64>,
}

impl StepSeeds {
    /// The training-mode forward pass with these draws.
    pub fn mode(self, update_running: bool) -> Mode {
        Mode::Train {
            update_running,
            dropout_seed: self.dropout,
            noise_seed: self.noise,
        }
    }
}

/// One SGD step on the mini-batch `x` (`[N, features]`) with one-hot labels `y`: the forward
/// pass in training mode (BN updating its running statistics, dropout masks and noise from
/// `seeds`), softmax cross-entropy, the backward pass and the optimiser's update at `lr`.
/// Returns the mini-batch loss and the updated net, or `None` for the net when the loss is not
/// finite (the run diverged; no update is made). Training and `bench` both step through here.
pub fn sgd_step(
    net: Net,
    optim: &mut ModuleOptimizer,
    x: Tensor<2>,
    y: Tensor<2>,
    seeds: StepSeeds,
    lr: f64,
) -> Result<(f64, Option<Net>)> {
    let mode = seeds.mode(true);
    let logits = net.forward(x.autodiff(), Pass::untraced(mode))?;
    let loss = cross_entropy(logits, y.autodiff());
    let value = f64::from(loss.clone().into_scalar::<f32>());
    if !value.is_finite() {
        return Ok((value, None));
    }
    let grads = GradientsParams::from_grads(loss.backward(), &net);
    Ok((value, Some(optim.step(lr, net, grads))))
}

/// Plain SGD with the config's momentum (no dampening) and weight decay.
pub fn build_optimizer(config: &Config) -> ModuleOptimizer {
    let o = &config.optim;
    let mut sgd = SgdConfig::new();
    if o.momentum > 0.0 {
        sgd = sgd.with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(o.momentum)
                .with_dampening(0.0),
        ));
    }
    if o.weight_decay > 0.0 {
        sgd = sgd.with_weight_decay(Some(WeightDecayConfig::new(o.weight_decay as f32)));
    }
    sgd.init()
}
