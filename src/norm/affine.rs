//! The learnt per-channel scale γ and shift β that BN, Batch Renorm and Group Norm share.

/// The accessors of a layer whose `gamma` and `beta` fields are `Param<Tensor<1>>`, one value
/// per channel: its channel count, γ and β as the forward pass uses them, and a copy with both
/// set. Written once here and expanded into each layer's `impl`, rather than kept in a nested
/// module, because the fields must stay the layer's own: their names are the checkpoint's
/// parameter paths (`norms.0.gamma`).
macro_rules! affine_accessors {
    () => {
        /// Number of channels C.
        pub fn channels(&self) -> usize {
            self.gamma.val().dims()[0]
        }

        /// γ, as the forward pass uses it (its gradient is γ's).
        pub fn gamma(&self) -> burn::tensor::Tensor<1> {
            self.gamma.val()
        }

        /// β, as the forward pass uses it.
        pub fn beta(&self) -> burn::tensor::Tensor<1> {
            self.beta.val()
        }

        /// The same layer with γ and β set (fresh trainable parameters): for tests against
        /// reference vectors, which start from given values.
        pub fn with_affine(
            mut self,
            gamma: burn::tensor::Tensor<1>,
            beta: burn::tensor::Tensor<1>,
        ) -> Self {
            self.gamma = burn::module::Param::from_tensor(gamma);
            self.beta = burn::module::Param::from_tensor(beta);
            self
        }
    };
}

pub(super) use affine_accessors;
