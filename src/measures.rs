//! Santurkar, Tsipras, Ilyas & Madry (2018), "How Does Batch Normalization Help
//! Optimization?": the measures they used to dispute that BN works by reducing internal
//! covariate shift, taken on one mini-batch at a time.
//!
//! With w the parameters, L the loss on the step's training batch and g = ∇L(w):
//! - **ICS as gradient change**, per weight layer i (their definition 2.1): G_i = ∇_{W_i}L(w),
//!   and G'_i = ∇_{W_i}L(w') on the same batch, where w' applies the optimiser's actual update
//!   (momentum and weight decay included) to the layers *before* i only, their normalisation
//!   parameters included. Reported as ‖G_i − G'_i‖₂, that over ‖G_i‖₂, and cos(G_i, G'_i). It is
//!   exactly 0 for the first layer and whenever the earlier layers' update is zero.
//! - **The loss landscape along the gradient**: L(w − η·g) for η on a grid of multiples of the
//!   step's learning rate; its min, max and range.
//! - **Gradient predictiveness**: ‖∇L(w) − ∇L(w − η·g)‖₂ over the same grid.
//! - **Effective β-smoothness**: max over η of ‖∇L(w) − ∇L(w − η·g)‖₂ / ‖η·g‖₂. For a quadratic
//!   loss with Hessian H this is ‖H·g‖/‖g‖ exactly, whatever η (`tests/measures.rs` checks it).
//!
//! Every function here is generic over the model and takes its loss as a closure, so the same
//! code measures bn-exp's nets and the closed-form test's linear model. Nothing here changes the
//! model, the optimiser or any running statistic: the model is cloned and mapped into new
//! parameter values, the optimiser is cloned before its one step, and the caller's loss closure
//! must run its forward pass without updating running statistics (the training loop passes
//! `update_running: false` and the step's own dropout and noise seeds).

use std::any::Any;
use std::collections::{HashMap, HashSet};

use anyhow::{Result, ensure};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

use crate::model::WeightLayer;
use crate::run::{LayerIcs, MeasureRecord};
use crate::tensor::tensor_to_f64;

/// A loss and its gradient at one point, both as the optimiser sees it (`params`) and flattened
/// on the host in f64, in the model's visiting order (`flat`), for norms and differences.
pub struct Gradient {
    pub loss: f64,
    pub params: GradientsParams,
    pub flat: Vec<(ParamId, Vec<f64>)>,
}

impl Gradient {
    /// ‖g‖₂ over every parameter.
    fn norm(&self) -> f64 {
        self.flat
            .iter()
            .map(|(_, v)| l2_norm(v).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    /// The gradient of one parameter, flattened.
    pub fn of(&self, id: ParamId) -> Option<&[f64]> {
        self.flat
            .iter()
            .find(|(pid, _)| *pid == id)
            .map(|(_, v)| v.as_slice())
    }

    /// ‖self − other‖₂ over every parameter (the two from the same model structure).
    fn distance(&self, other: &Gradient) -> f64 {
        self.flat
            .iter()
            .zip(&other.flat)
            .map(|((_, a), (_, b))| l2_distance(a, b).powi(2))
            .sum::<f64>()
            .sqrt()
    }
}

/// L(model) and ∇L(model), through one forward and one backward pass.
pub fn gradient<M, F>(model: &M, loss_of: &F) -> Result<Gradient>
where
    M: Module,
    F: Fn(&M) -> Result<Tensor<1>>,
{
    let loss = loss_of(model)?;
    let value = tensor_to_f64(loss.clone())[0];
    let params = GradientsParams::from_grads(loss.backward(), model);
    let flat = flatten(model, &params);
    Ok(Gradient {
        loss: value,
        params,
        flat,
    })
}

/// Every parameter's gradient on the host, in visiting order; zeros for a parameter the loss
/// does not reach, so two flattenings of one model structure always line up.
fn flatten<M: Module>(model: &M, grads: &GradientsParams) -> Vec<(ParamId, Vec<f64>)> {
    struct Flatten<'a> {
        grads: &'a GradientsParams,
        out: Vec<(ParamId, Vec<f64>)>,
    }
    impl ModuleVisitor for Flatten<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = match self.grads.get::<D>(param.id) {
                Some(g) => tensor_to_f64(g),
                None => vec![0.0; param.val().shape().num_elements()],
            };
            self.out.push((param.id, values));
        }
    }
    let mut visitor = Flatten {
        grads,
        out: Vec::new(),
    };
    model.visit(&mut visitor);
    visitor.out
}

/// A copy of the gradients the optimiser can consume (its `step` takes them by value).
fn copy_gradients<M: Module>(model: &M, grads: &GradientsParams) -> GradientsParams {
    struct Copy<'a> {
        from: &'a GradientsParams,
        to: GradientsParams,
    }
    impl ModuleVisitor for Copy<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.from.get::<D>(param.id) {
                self.to.register::<D>(param.id, g);
            }
        }
    }
    let mut visitor = Copy {
        from: grads,
        to: GradientsParams::new(),
    };
    model.visit(&mut visitor);
    visitor.to
}

/// The model at w − η·g: every parameter with a gradient moved by −η times it.
fn step_along<M: Module>(model: &M, grads: &GradientsParams, eta: f64) -> M {
    struct StepAlong<'a> {
        grads: &'a GradientsParams,
        eta: f64,
    }
    impl ModuleMapper for StepAlong<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let Some(g) = self.grads.get::<D>(param.id) else {
                return param;
            };
            let eta = self.eta;
            param.map(|w| {
                let tracked = w.is_require_grad();
                let moved = w.inner().sub(g.inner().mul_scalar(eta)).autodiff();
                if tracked { moved.require_grad() } else { moved }
            })
        }
    }
    model.clone().map(&mut StepAlong { grads, eta })
}

/// `model` with the parameters in `ids` taken from `source` (the same structure).
fn with_params_from<M: Module>(model: &M, source: &M, ids: &HashSet<ParamId>) -> M {
    struct Take<'a> {
        ids: &'a HashSet<ParamId>,
        values: HashMap<ParamId, Box<dyn Any>>,
    }
    impl ModuleVisitor for Take<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.ids.contains(&param.id) {
                self.values.insert(param.id, Box::new(param.val()));
            }
        }
    }
    struct Put(HashMap<ParamId, Box<dyn Any>>);
    impl ModuleMapper for Put {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            match self
                .0
                .get(&param.id)
                .and_then(|v| v.downcast_ref::<Tensor<D>>())
            {
                Some(value) => {
                    let value = value.clone();
                    param.map(|_| value)
                }
                None => param,
            }
        }
    }
    let mut take = Take {
        ids,
        values: HashMap::new(),
    };
    source.visit(&mut take);
    model.clone().map(&mut Put(take.values))
}

/// What [`measure`] needs besides the model and its loss.
pub struct Probe<'a> {
    /// The run's optimiser, as it is before this step (cloned, never stepped).
    pub optimizer: &'a ModuleOptimizer,
    /// The step's learning rate.
    pub lr: f64,
    /// The weight layers, input to output.
    pub layers: &'a [WeightLayer],
    /// The step sizes along the gradient, as multiples of `lr`.
    pub lr_multiples: &'a [f64],
}

/// Every measure at `model` on the batch `loss_of` evaluates, as the record of `step`.
/// Costs 1 + layers + step sizes forward and backward passes.
pub fn measure<M, F>(model: &M, loss_of: &F, probe: &Probe, step: u64) -> Result<MeasureRecord>
where
    M: Module,
    F: Fn(&M) -> Result<Tensor<1>>,
{
    ensure!(
        !probe.lr_multiples.is_empty(),
        "the measures need at least one step size"
    );
    let g = gradient(model, loss_of)?;
    let ics = gradient_change(model, loss_of, probe, &g)?;
    let g_norm = g.norm();
    let mut step_sizes = Vec::new();
    let mut losses = Vec::new();
    let mut changes = Vec::new();
    let mut beta = f64::NAN;
    for &k in probe.lr_multiples {
        let eta = k * probe.lr;
        let moved = step_along(model, &g.params, eta);
        let g_eta = gradient(&moved, loss_of)?;
        let change = g.distance(&g_eta);
        step_sizes.push(eta);
        losses.push(g_eta.loss);
        changes.push(change);
        // Only finite ratios: a step that blew the loss up leaves the others standing.
        let ratio = change / (eta * g_norm);
        if ratio.is_finite() {
            beta = beta.max(ratio);
        }
    }
    let (loss_min, loss_max) = finite_range(&losses);
    let (grad_change_min, grad_change_max) = finite_range(&changes);
    Ok(MeasureRecord {
        step,
        lr: probe.lr,
        loss: finite(g.loss),
        grad_norm: finite(g_norm),
        ics,
        step_sizes,
        losses: losses.into_iter().map(finite).collect(),
        loss_min,
        loss_max,
        loss_range: loss_min.zip(loss_max).map(|(lo, hi)| hi - lo),
        grad_change: changes.into_iter().map(finite).collect(),
        grad_change_min,
        grad_change_max,
        beta_smoothness: finite(beta),
    })
}

/// ICS as gradient change for every weight layer (see the module docs).
fn gradient_change<M, F>(
    model: &M,
    loss_of: &F,
    probe: &Probe,
    g: &Gradient,
) -> Result<Vec<LayerIcs>>
where
    M: Module,
    F: Fn(&M) -> Result<Tensor<1>>,
{
    // The optimiser's actual update of every parameter, from a copy of its state.
    let updated =
        probe
            .optimizer
            .clone()
            .step(probe.lr, model.clone(), copy_gradients(model, &g.params));
    let mut before = HashSet::new();
    let mut out = Vec::with_capacity(probe.layers.len());
    for (i, layer) in probe.layers.iter().enumerate() {
        let shifted = with_params_from(model, &updated, &before);
        let g_shifted = gradient(&shifted, loss_of)?;
        let (Some(a), Some(b)) = (g.of(layer.weight), g_shifted.of(layer.weight)) else {
            anyhow::bail!(
                "layer {} has no weight among the model's parameters",
                layer.name
            );
        };
        out.push(layer_ics(i, &layer.name, a, b));
        before.extend(layer.params.iter().copied());
    }
    Ok(out)
}

/// The gradient change of one layer: ‖a − b‖₂, that over ‖a‖₂, and cos(a, b).
fn layer_ics(layer: usize, name: &str, a: &[f64], b: &[f64]) -> LayerIcs {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let (na, nb) = (l2_norm(a), l2_norm(b));
    let l2 = l2_distance(a, b);
    LayerIcs {
        layer,
        name: name.to_string(),
        l2: finite(l2),
        relative: finite(l2 / na),
        // Clamped: rounding can put equal gradients' cosine a hair above 1.
        cosine: finite(dot / (na * nb)).map(|c| c.clamp(-1.0, 1.0)),
    }
}

/// A value for the records: JSON has no NaN or infinity, so those are written as null.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// The smallest and largest finite values, if any is finite.
fn finite_range(values: &[f64]) -> (Option<f64>, Option<f64>) {
    let finite = || values.iter().copied().filter(|x| x.is_finite());
    (finite().reduce(f64::min), finite().reduce(f64::max))
}

/// ‖a‖₂, accumulated in f64.
fn l2_norm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// ‖a − b‖₂, accumulated in f64.
fn l2_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt()
}
