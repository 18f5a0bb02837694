//! The shape of one hidden layer as a normalisation layer's settings see it, when a config is
//! checked: the architecture reports it, the layer's settings judge it.

/// What [`NormConfig::check`] needs to know of one hidden layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerShape {
    /// Units (MLP) or channels (conv).
    pub width: usize,
    /// Values per channel of one example: 1 in an MLP, H·W in a conv map.
    pub positions: usize,
}
