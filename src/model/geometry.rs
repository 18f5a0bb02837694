//! What a config asks of an architecture before any net exists: its hidden layers' widths and
//! positions, what a width counts, the checks of its own keys, and its size for the memory
//! estimate. Each architecture answers in its own file (`mlp.rs`, `cnn.rs`); the config and the
//! bench ask through [`Architecture`], never by matching on which net it is.

use anyhow::Result;

use crate::norm::LayerShape;

/// The images a net takes: channels and side (square images).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    pub channels: usize,
    pub side: usize,
}

impl From<(usize, usize)> for ImageShape {
    fn from((channels, side): (usize, usize)) -> Self {
        Self { channels, side }
    }
}

impl ImageShape {
    /// Values per image.
    pub fn features(self) -> usize {
        self.channels * self.side * self.side
    }
}

/// Which of bench's timed workloads a net's step time scales from: its cost per FLOP is that
/// of the paper's MLP (small dense products, bound by launches and memory) or of the CIFAR CNN
/// (convolutions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compute {
    Dense,
    Conv,
}

/// The sizes the memory estimate needs: weights, and values computed per example.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetSize {
    /// Every weight (biases and normalisation parameters aside: they are a rounding error).
    pub params: u64,
    /// The input and every hidden layer's output, per example.
    pub activations: u64,
}

/// An architecture's answers about itself, from its settings alone.
pub trait Architecture {
    /// What a hidden layer's width counts: "units", "channels".
    fn unit_word(&self) -> &'static str;

    /// Each hidden layer (each normalisation slot, each probed pre-activation), input to
    /// output: its width and its positions per channel for one example.
    fn layers(&self, image: ImageShape) -> Vec<LayerShape>;

    /// Check the architecture's own keys against the images; each failure names its key.
    fn check(&self, image: ImageShape) -> Result<()>;

    /// Weights and per-example values, in saturating arithmetic (the config may be hostile).
    fn size(&self, image: ImageShape) -> NetSize;

    /// Floating-point operations of one example's forward pass through the weight layers
    /// (2 per multiply-add; normalisation, g and pooling are a rounding error beside them).
    fn forward_flops(&self, image: ImageShape) -> u64;

    /// Which timed workload the net's cost per FLOP is taken from.
    fn compute(&self) -> Compute;
}

/// Limits on what a config may ask for. Far beyond anything the paper's experiments need, and
/// low enough that no value makes bn-exp allocate without end or loop for ever.
pub const MAX_LAYERS: usize = 64;
pub const MAX_WIDTH: usize = 1 << 16;

/// A list of widths (`model.hidden`, `model.channels`) within the limits: at least one, each
/// positive, at most [`MAX_LAYERS`] of at most [`MAX_WIDTH`] each.
pub fn check_widths(key: &str, what: &str, widths: &[usize]) -> Result<()> {
    anyhow::ensure!(
        !widths.is_empty() && widths.iter().all(|&w| w > 0),
        "{key} must list at least one positive width, got {widths:?}"
    );
    anyhow::ensure!(
        widths.len() <= MAX_LAYERS,
        "{key} ({what}) is {}, more than the {MAX_LAYERS} bn-exp allows",
        widths.len()
    );
    if let Some(w) = widths.iter().find(|&&w| w > MAX_WIDTH) {
        anyhow::bail!("{key} holds a width of {w}, more than the {MAX_WIDTH} bn-exp allows");
    }
    Ok(())
}
