//! Data augmentation of training batches, as CIFAR-10 nets are commonly trained: each image
//! padded by `pad` pixels on every side, a random `side × side` crop taken from it, and the
//! crop flipped left to right with probability ½ (the `augment` key; off by default).
//!
//! The draws of step t come from the run's seed and t alone (`Rng::stream(seed, purpose, t)`),
//! never from a generator that carries state across steps: a resumed run draws the crops and
//! flips of the uninterrupted one, and the thread count changes nothing.
//!
//! Padding is with 0 in the preprocessed values, which under per-channel standardisation is
//! the channel's mean (torchvision pads the raw image with black before normalising; the two
//! differ only in the border's value).

use anyhow::{Result, ensure};
use burn::tensor::ops::PadMode;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// The `augment` key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Pixels of padding on each side before a random crop back to the image's size (0: no
    /// crops). CIFAR-10 nets commonly use 4.
    pub pad: usize,
    /// Flip each training image left to right with probability ½.
    pub flip: bool,
}

/// The most padding `augment.pad` may ask for: beyond a quarter of the side most of a crop
/// would be border.
const MAX_PAD_FRACTION: usize = 4;

impl AugmentConfig {
    /// Whether a training batch is changed at all.
    pub fn is_off(&self) -> bool {
        self.pad == 0 && !self.flip
    }

    /// `pad` against the images' side. `side` is the image's height and width.
    pub fn check(&self, side: usize) -> Result<()> {
        ensure!(
            self.pad <= side / MAX_PAD_FRACTION,
            "augment.pad must be at most a quarter of the image side ({} pixels), got {}",
            side / MAX_PAD_FRACTION,
            self.pad
        );
        Ok(())
    }

    /// "crops from 4-pixel padding, flips", for labels and summaries.
    pub fn label(&self) -> String {
        match (self.pad, self.flip) {
            (0, false) => "no augmentation".to_string(),
            (0, true) => "flips".to_string(),
            (p, false) => format!("crops from {p}-pixel padding"),
            (p, true) => format!("crops from {p}-pixel padding, flips"),
        }
    }
}

/// One image's draw: the crop's top-left corner in the padded image, and whether it is flipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    pub top: usize,
    pub left: usize,
    pub flip: bool,
}

/// The draws of a batch of `n` images at one step, from `rng` (the step's own stream).
pub fn draws(config: &AugmentConfig, n: usize, rng: &mut Rng) -> Vec<Draw> {
    (0..n)
        .map(|_| {
            let span = 2 * config.pad + 1;
            let top = if config.pad > 0 { rng.below(span) } else { 0 };
            let left = if config.pad > 0 { rng.below(span) } else { 0 };
            let flip = config.flip && rng.below(2) == 1;
            Draw { top, left, flip }
        })
        .collect()
}

/// Where output pixel (y, x) of an image comes from in its padded copy, as an offset into the
/// padded image's row-major plane of `side + 2·pad` columns.
fn source(draw: Draw, side: usize, padded: usize, y: usize, x: usize) -> usize {
    let x = if draw.flip { side - 1 - x } else { x };
    (y + draw.top) * padded + x + draw.left
}

/// The batch `x` (`[N, C·side·side]`, channel-major as bn-exp stores images) with each image
/// cropped and flipped as `draws` say: one pad and one gather on the tensor's device.
pub fn augment(
    x: Tensor<2>,
    channels: usize,
    side: usize,
    pad: usize,
    draws: &[Draw],
) -> Tensor<2> {
    let [n, features] = x.dims();
    let padded = side + 2 * pad;
    let plane = padded * padded;
    let device = x.device();
    let images = x
        .reshape([n, channels, side, side])
        .pad([(pad, pad), (pad, pad)], PadMode::Constant(0.0))
        .reshape([n, channels * plane]);
    let mut index = Vec::with_capacity(n * features);
    for &draw in draws {
        for c in 0..channels {
            for y in 0..side {
                for x in 0..side {
                    index.push((c * plane + source(draw, side, padded, y, x)) as i64);
                }
            }
        }
    }
    let index = Tensor::<2, Int>::from_data(TensorData::new(index, [n, features]), &device);
    images.gather(1, index)
}

/// The same crops and flips on host values, pixel by pixel: the reference [`augment`] is held
/// to. A pixel that falls in the padding is 0.
pub fn augment_reference(
    x: &[f32],
    channels: usize,
    side: usize,
    pad: usize,
    draws: &[Draw],
) -> Vec<f32> {
    let features = channels * side * side;
    let mut out = Vec::with_capacity(x.len());
    for (image, draw) in x.chunks(features).zip(draws) {
        for c in 0..channels {
            for y in 0..side {
                for col in 0..side {
                    // Coordinates in the padded image, then back in the original.
                    let px = if draw.flip { side - 1 - col } else { col } + draw.left;
                    let py = y + draw.top;
                    let inside = (pad..pad + side).contains(&py) && (pad..pad + side).contains(&px);
                    out.push(if inside {
                        image[c * side * side + (py - pad) * side + (px - pad)]
                    } else {
                        0.0
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    use crate::tensor::tensor_to_f32 as host;

    fn numbered(n: usize, channels: usize, side: usize) -> Vec<f32> {
        (0..n * channels * side * side)
            .map(|v| v as f32 + 1.0)
            .collect()
    }

    fn on_device(values: &[f32], n: usize) -> Tensor<2> {
        let features = values.len() / n;
        Tensor::from_data(
            TensorData::new(values.to_vec(), [n, features]),
            &Device::flex(),
        )
    }

    /// The gather on the device against the pixel-by-pixel reference, over every corner and
    /// both flips of a 3-channel 5×5 image padded by 2: exactly equal (values are only moved).
    #[test]
    fn the_gather_moves_each_pixel_where_the_reference_does() {
        let (channels, side, pad) = (3, 5, 2);
        let mut draws = Vec::new();
        for top in 0..=2 * pad {
            for left in 0..=2 * pad {
                for flip in [false, true] {
                    draws.push(Draw { top, left, flip });
                }
            }
        }
        let n = draws.len();
        let x = numbered(n, channels, side);
        let fast = host(augment(on_device(&x, n), channels, side, pad, &draws));
        assert_eq!(fast, augment_reference(&x, channels, side, pad, &draws));
    }

    /// Closed forms: the centred crop without a flip is the image; a flip reverses each row;
    /// the crop at the top-left corner shifts the image down and right by `pad`, with zeros.
    #[test]
    fn centred_flipped_and_shifted_crops_are_what_they_say() {
        let (side, pad) = (4, 1);
        let x = numbered(1, 1, side);
        let centred = Draw {
            top: pad,
            left: pad,
            flip: false,
        };
        assert_eq!(augment_reference(&x, 1, side, pad, &[centred]), x);
        let flipped = augment_reference(
            &x,
            1,
            side,
            pad,
            &[Draw {
                flip: true,
                ..centred
            }],
        );
        for row in 0..side {
            let mut expected = x[row * side..(row + 1) * side].to_vec();
            expected.reverse();
            assert_eq!(&flipped[row * side..(row + 1) * side], &expected[..]);
        }
        let corner = augment_reference(
            &x,
            1,
            side,
            pad,
            &[Draw {
                top: 0,
                left: 0,
                flip: false,
            }],
        );
        assert_eq!(&corner[..side], &[0.0; 4]);
        assert_eq!(corner[side], 0.0);
        assert_eq!(corner[side + 1], x[0]);
    }

    /// The draws of one step are a function of the seed and the step alone, cover every
    /// offset, and flip about half the images.
    #[test]
    fn draws_repeat_for_the_same_step_and_cover_every_offset() {
        let config = AugmentConfig { pad: 4, flip: true };
        let a = draws(&config, 2000, &mut Rng::stream(7, 6, 123));
        assert_eq!(a, draws(&config, 2000, &mut Rng::stream(7, 6, 123)));
        assert_ne!(a, draws(&config, 2000, &mut Rng::stream(7, 6, 124)));
        for offset in 0..=8 {
            assert!(a.iter().any(|d| d.top == offset) && a.iter().any(|d| d.left == offset));
        }
        assert!(a.iter().all(|d| d.top <= 8 && d.left <= 8));
        let flips = a.iter().filter(|d| d.flip).count();
        assert!((900..1100).contains(&flips), "{flips} flips of 2000");
    }

    #[test]
    fn too_much_padding_is_refused_by_name() {
        let err = AugmentConfig {
            pad: 9,
            flip: false,
        }
        .check(32)
        .unwrap_err();
        assert!(err.to_string().contains("augment.pad"), "{err}");
        assert!(AugmentConfig { pad: 8, flip: true }.check(32).is_ok());
    }
}
