//! Small helpers on Burn's tensors and modules that every layer and net uses: copies between a
//! tensor and the host, and [`enum_module!`], which makes an enum of modules one module.
//!
//! It imports nothing of bn-exp, so that `norm`, `model`, `measures` and `train` can all use it
//! without importing each other.

use burn::tensor::{Device, Tensor, TensorCreationOptions, TensorData};

/// Copy a tensor to the host as f64, whatever its float dtype.
pub fn tensor_to_f64<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("tensor data converted to f64")
}

/// Copy a tensor to the host as f32, whatever its float dtype.
pub fn tensor_to_f32<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("tensor data converted to f32")
}

/// A `[C]` tensor from host f64 values, stored as f32 on `device`.
pub fn vector_tensor(values: &[f64], device: &Device) -> Tensor<1> {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(v, [values.len()]), device)
}

/// A copy of `t` that no op produced, on its device and in its dtype: autodiff only makes
/// trainable parameters of such leaves (a data-dependent initialisation computes its values
/// with ops).
pub fn leaf<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    let like = TensorCreationOptions::new(t.device()).with_dtype(t.dtype());
    Tensor::from_data(t.into_data(), like)
}

/// Implement Burn's `Module` (and its display traits) for an enum whose every variant holds one
/// module, by handing each call to the variant's module.
///
/// Written out rather than derived: the derive would put the variant's name into every
/// parameter's path (`norms.0.Batch.gamma`), and checkpoints name parameters by path
/// (`norms.0.gamma`, `linears.1.weight`). Which variant a run has is in its `config.json`; the
/// checkpoint needs the parameters only by position, so a checkpoint written before the enum
/// existed still loads.
///
/// ```ignore
/// enum_module!(Norm { Batch, Renorm, Group, Weight });
/// ```
macro_rules! enum_module {
    ($name:ident { $($variant:ident),+ $(,)? }) => {
        impl burn::module::Module for $name {
            fn collect_devices(&self, devices: burn::module::Devices) -> burn::module::Devices {
                match self {
                    $($name::$variant(inner) => inner.collect_devices(devices),)+
                }
            }

            fn fork(self, device: &burn::tensor::Device) -> Self {
                match self {
                    $($name::$variant(inner) => $name::$variant(inner.fork(device)),)+
                }
            }

            fn to_device(self, device: &burn::tensor::Device) -> Self {
                match self {
                    $($name::$variant(inner) => $name::$variant(inner.to_device(device)),)+
                }
            }

            fn train(self) -> Self {
                match self {
                    $($name::$variant(inner) => $name::$variant(inner.train()),)+
                }
            }

            fn valid(&self) -> Self {
                match self {
                    $($name::$variant(inner) => $name::$variant(inner.valid()),)+
                }
            }

            fn materialize(self) -> Self {
                match self {
                    $($name::$variant(inner) => $name::$variant(inner.materialize()),)+
                }
            }

            fn visit<V: burn::module::ModuleVisitor>(&self, visitor: &mut V) {
                match self {
                    $($name::$variant(inner) => inner.visit(visitor),)+
                }
            }

            fn map<M: burn::module::ModuleMapper>(self, mapper: &mut M) -> Self {
                match self {
                    $($name::$variant(inner) => $name::$variant(inner.map(mapper)),)+
                }
            }
        }

        impl burn::module::ModuleDisplayDefault for $name {
            fn content(
                &self,
                content: burn::module::Content,
            ) -> Option<burn::module::Content> {
                match self {
                    $($name::$variant(inner) => inner.content(content),)+
                }
            }
        }

        impl burn::module::ModuleDisplay for $name {}

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $($name::$variant(inner) => std::fmt::Display::fmt(inner, f),)+
                }
            }
        }
    };
}

pub(crate) use enum_module;
