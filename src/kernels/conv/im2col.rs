//! The geometry of the convolution op (`super`): the kernels it computes ([`Geometry`]) and the
//! shapes of one call ([`Dims`]); and the column matrices of one image, with their adjoints: for a
//! 3×3 kernel with stride 1 and padding 1 ([`im2col`], [`col2im_add`]) and for a 3×3 kernel
//! with stride 2 and no padding ([`im2col_stride2`], [`col2im_add_stride2`]). A 1×1 kernel's
//! column matrix is the image itself ([`columns`]).

use burn::backend::flex::FlexTensor;

use crate::kernels::common::{Real, simd_fn};
use crate::kernels::direct::Image;

/// What the op computes, for the panics of a misuse.
const SHAPES: &str = "weight [C_out, C, k, k] for the input's C, with k 3 and stride 1 or 2, or \
                      k 1 and stride 1, on an image of at least k x k";

/// A kernel's side, stride and padding: the three the nets use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(super) kernel: usize,
    pub(super) stride: usize,
    pub(super) pad: usize,
}

impl Geometry {
    /// 3×3 with stride 1 and padding 1: the convolutions the direct kernels (`kernels::direct`)
    /// can take.
    pub(super) const THREE_STRIDE_ONE: Geometry = Geometry {
        kernel: 3,
        stride: 1,
        pad: 1,
    };

    /// 3×3 stride 1 (padding 1), 1×1, or 3×3 stride 2 (no padding); `None` for anything else.
    pub(super) fn of(kernel: usize, stride: usize) -> Option<Self> {
        let pad = match (kernel, stride) {
            (3, 1) => 1,
            (1, 1) | (3, 2) => 0,
            _ => return None,
        };
        Some(Geometry {
            kernel,
            stride,
            pad,
        })
    }

    /// The geometry of a convolution of an input of shape `xd` with a weight of shape `wd`,
    /// checked: both `[·, C, ·, ·]` for the same C, a square kernel the op computes, and an
    /// image at least as large as the kernel (after padding). Panics otherwise, naming the
    /// shapes: the one check of the fast op and its reference.
    pub(super) fn fitting(xd: &[usize], wd: &[usize], stride: usize) -> Self {
        let geometry = (xd.len() == 4 && wd.len() == 4 && wd[1] == xd[1] && wd[2] == wd[3])
            .then(|| Geometry::of(wd[2], stride))
            .flatten()
            .filter(|g| xd[2] + 2 * g.pad >= g.kernel && xd[3] + 2 * g.pad >= g.kernel);
        let Some(g) = geometry else {
            panic!("conv: input {xd:?}, weight {wd:?} and stride {stride} do not fit ({SHAPES})")
        };
        g
    }

    /// An output side from an input side.
    pub(super) fn out(&self, side: usize) -> usize {
        (side + 2 * self.pad).saturating_sub(self.kernel) / self.stride + 1
    }
}

/// Shapes of one convolution.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dims {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) c_out: usize,
    pub(super) g: Geometry,
    /// The output's side: `g.out(h)` by `g.out(w)`.
    pub(super) ho: usize,
    pub(super) wo: usize,
}

impl Dims {
    pub(super) fn of(x: &FlexTensor, weight: &FlexTensor, stride: usize) -> Self {
        let xd = x.layout().shape().to_vec();
        let wd = weight.layout().shape().to_vec();
        let g = Geometry::fitting(&xd, &wd, stride);
        Dims {
            n: xd[0],
            c: xd[1],
            h: xd[2],
            w: xd[3],
            c_out: wd[0],
            g,
            ho: g.out(xd[2]),
            wo: g.out(xd[3]),
        }
    }
    /// The input map's size.
    pub(super) fn hw(&self) -> usize {
        self.h * self.w
    }
    /// One image's convolution as the direct kernels take it.
    pub(super) fn image(&self) -> Image {
        (self.c, self.h, self.w, self.c_out)
    }
    /// The output map's size: the column matrix's width.
    pub(super) fn hw_out(&self) -> usize {
        self.ho * self.wo
    }
    /// The column matrix's height.
    pub(super) fn k(&self) -> usize {
        self.c * self.g.kernel * self.g.kernel
    }
}

/// The output rows `y0..y1` whose source row y + ky − 1 lies inside an image of `h` rows (a 3×3
/// kernel with padding 1); the others read only padding.
fn inside_rows(h: usize, ky: usize) -> (usize, usize) {
    (1usize.saturating_sub(ky), (h + 1 - ky).min(h))
}

/// The column of the output map (x = 0 for kx = 0, x = w − 1 for kx = 2) whose reads fall
/// outside the image; none for kx = 1.
fn outside_column(kx: usize, w: usize) -> Option<usize> {
    match kx {
        0 => Some(0),
        2 => Some(w - 1),
        _ => None,
    }
}

/// For row (ky, kx) of a 3×3 column matrix with padding 1 on a `h`×`w` plane: the run of the
/// row `from..to` that reads the plane, and where in the plane that run starts. The row is
/// the plane shifted by (ky − 1)·w + kx − 1 as one flat run, whose ends at x = 0 (kx = 0) or
/// x = w − 1 (kx = 2) are left out. `None` when the row reads only padding (an image of one
/// row).
fn shifted_run(h: usize, w: usize, ky: usize, kx: usize) -> Option<(usize, usize, usize)> {
    let (y0, y1) = inside_rows(h, ky);
    if y0 == y1 {
        return None;
    }
    let (from, to) = (y0 * w + usize::from(kx == 0), y1 * w - usize::from(kx == 2));
    let start = (from + (ky * w + kx)) - (w + 1);
    Some((from, to, start))
}

simd_fn! {
    /// The column matrix `[C·9, H·W]` of one image `[C, H, W]` for a 3×3 kernel with stride 1
    /// and padding 1: row (c, ky, kx) holds the image shifted by (ky − 1, kx − 1), zero where
    /// that reads outside it.
    ///
    /// Each row is one copy of the whole shifted plane, then the column the shift wrapped
    /// around is zeroed: a copy per image row cost a `memcpy` call per 7 to 32 floats.
    fn im2col<T: Real>(img: &[T], d: Dims, col: &mut [T]) {
        let (h, w, hw) = (d.h, d.w, d.hw());
        for c in 0..d.c {
            let plane = &img[c * hw..(c + 1) * hw];
            for ky in 0..3 {
                let (y0, y1) = inside_rows(h, ky);
                for kx in 0..3 {
                    let row = &mut col[(c * 9 + ky * 3 + kx) * hw..][..hw];
                    row[..y0 * w].fill(T::ZERO);
                    row[y1 * w..].fill(T::ZERO);
                    let Some((from, to, start)) = shifted_run(h, w, ky, kx) else {
                        continue;
                    };
                    row[from..to].copy_from_slice(&plane[start..start + (to - from)]);
                    if let Some(x) = outside_column(kx, w) {
                        for y in y0..y1 {
                            row[y * w + x] = T::ZERO;
                        }
                    }
                }
            }
        }
    }
}

simd_fn! {
    /// The adjoint of [`im2col`]: adds each column-matrix row back onto the image `[C, H, W]`.
    ///
    /// As in [`im2col`], each row is added as one shifted run over the plane. The row's entries
    /// for reads outside the image (its wrapped column) are zeroed first, so that the run adds
    /// 0 where the shift wraps onto the neighbouring row: every element of the image receives
    /// the same additions in the same order as row by row.
    fn col2im_add<T: Real>(dcol: &mut [T], d: Dims, img: &mut [T]) {
        let (h, w, hw) = (d.h, d.w, d.hw());
        for c in 0..d.c {
            let plane = &mut img[c * hw..(c + 1) * hw];
            for ky in 0..3 {
                let (y0, y1) = inside_rows(h, ky);
                for kx in 0..3 {
                    let row = &mut dcol[(c * 9 + ky * 3 + kx) * hw..][..hw];
                    if let Some(x) = outside_column(kx, w) {
                        for y in y0..y1 {
                            row[y * w + x] = T::ZERO;
                        }
                    }
                    let Some((from, to, start)) = shifted_run(h, w, ky, kx) else {
                        continue;
                    };
                    let dst = &mut plane[start..start + (to - from)];
                    for (o, &v) in dst.iter_mut().zip(&row[from..to]) {
                        *o += v;
                    }
                }
            }
        }
    }
}

simd_fn! {
    /// The column matrix `[C·9, H'·W']` of one image for a 3×3 kernel with stride 2 and no
    /// padding: row (c, ky, kx), column (i, j) holds x[c, 2i + ky, 2j + kx]. Every read is
    /// inside the image.
    fn im2col_stride2<T: Real>(img: &[T], d: Dims, col: &mut [T]) {
        let (w, hw_out) = (d.w, d.hw_out());
        for c in 0..d.c {
            let plane = &img[c * d.hw()..(c + 1) * d.hw()];
            for ky in 0..3 {
                for kx in 0..3 {
                    let row = &mut col[(c * 9 + ky * 3 + kx) * hw_out..][..hw_out];
                    for (i, dst) in row.chunks_exact_mut(d.wo).enumerate() {
                        let src = &plane[(2 * i + ky) * w + kx..];
                        for (j, v) in dst.iter_mut().enumerate() {
                            *v = src[2 * j];
                        }
                    }
                }
            }
        }
    }
}

simd_fn! {
    /// The adjoint of [`im2col_stride2`]: adds each column-matrix row back onto the image.
    fn col2im_add_stride2<T: Real>(dcol: &[T], d: Dims, img: &mut [T]) {
        let (w, hw_out) = (d.w, d.hw_out());
        for c in 0..d.c {
            let plane = &mut img[c * d.hw()..(c + 1) * d.hw()];
            for ky in 0..3 {
                for kx in 0..3 {
                    let row = &dcol[(c * 9 + ky * 3 + kx) * hw_out..][..hw_out];
                    for (i, src) in row.chunks_exact(d.wo).enumerate() {
                        let dst = &mut plane[(2 * i + ky) * w + kx..];
                        for (j, &v) in src.iter().enumerate() {
                            dst[2 * j] += v;
                        }
                    }
                }
            }
        }
    }
}

/// The column matrix of one image `xi`: built in `col` for a 3×3 kernel, the image itself for
/// a 1×1 one.
pub(super) fn columns<'a, T: Real>(xi: &'a [T], d: Dims, col: &'a mut [T]) -> &'a [T] {
    match (d.g.kernel, d.g.stride) {
        (1, _) => return xi,
        (3, 1) => im2col(xi, d, col),
        _ => im2col_stride2(xi, d, col),
    }
    col
}

/// Adds the column matrix's gradient `dcol` back onto one image's ∂x (3×3 kernels); `dcol` is
/// scratch, and is left changed.
pub(super) fn add_columns<T: Real>(dcol: &mut [T], d: Dims, dxi: &mut [T]) {
    if d.g.stride == 1 {
        col2im_add(dcol, d, dxi);
    } else {
        col2im_add_stride2(dcol, d, dxi);
    }
}
