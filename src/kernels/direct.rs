//! A 3×3 convolution with stride 1 and padding 1 (its forward, ∂x and ∂W) computed from the
//! image and ∂z themselves rather than from the column matrix, with the bits of the
//! column-matrix path.
//!
//! ```text
//! z[o, y, x]     = b[o] + Σ_{c, ky, kx} W[o, c, ky, kx] · x[c, y + ky − 1, x + kx − 1]
//! ∂x[c, y, x]    = Σ_{ky, kx} Σ_o W[o, c, ky, kx] · ∂z[o, y − ky + 1, x − kx + 1]
//! ∂W[o, c, ky, kx] = Σ_{y, x} ∂z[o, y, x] · x[c, y + ky − 1, x + kx − 1]
//! ```
//!
//! Why: the column-matrix path writes nine shifted copies of the image (`memmove` was a tenth of
//! an Inception step), builds them again for ∂W, writes ∂col and scatters it back, and `gemm`
//! copies each into its panels. Here each channel of the image (or of ∂z) is copied once into a
//! zero-padded plane of side (H + 2) × (W + 2). The forward and ∂x are computed on the same
//! padded grid, one flat run of positions at a time: at flat position f = y·(W + 2) + x the tap
//! (ky, kx) reads the padded plane at f + ky·(W + 2) + kx, so every tap of a run of positions is
//! one contiguous load. A tile is 4 channels by 64 (forward) or 32 (∂x) flat positions. The
//! outputs are stored on the padded grid and its valid columns copied out at the end: the two
//! columns past W are computed and dropped. ∂W runs along the output channels, as `gemm` does,
//! one input channel's nine taps at a time, reading the taps from the padded plane.
//!
//! Why the same bits: `gemm` computes each output element of a product as one chain of FMAs
//! over the depth, in order, from zero, in blocks, and adds each block's chain to the output
//! once. For a depth of at most 512 the chain is one block ([`DEPTH_MAX`]); above it, the
//! blocks depend on the product's shape, so the kernels take only shapes whose blocks are
//! known. Here each element is the same chain: the forward's over the taps in the column
//! matrix's (c, ky, kx) order, ∂x's over the output channels (∂col's element) then added tap by
//! tap in the order `col2im_add` adds them, ∂W's over the positions, with the padding read as
//! the same zeros. The tests below hold the three to the column-matrix path bit for bit, in f32
//! and f64, and `scripts/same_behaviour.sh` holds whole runs to the same records.

use std::mem::MaybeUninit;

use super::common::{Real, SimdLevel, simd_fn, simd_level, transpose_into};

/// The deepest product (C·9) this path computes: `gemm` (0.19) sums deeper ones in blocks,
/// whose bounds depend on the product's shape.
pub(super) const DEPTH_MAX: usize = 512;

/// Positions per vector of a tile: one AVX-512 register of f32.
const LANES: usize = 16;

/// Vectors of positions per tile.
const RUNS: usize = 4;

/// Positions a tile computes.
const TILE: usize = LANES * RUNS;

/// Output channels per tile: with [`RUNS`], 16 AVX-512 accumulators, which stay in registers
/// (a tile of 8 × 2 was as fast; wider ones spilled).
const NR: usize = 4;

/// The most output channels for which the direct kernels are faster than the column-matrix
/// path. Side by side on one core each (`bench --threads 1`): the Inception's steps (C_out 8 to
/// 44) 6 to 11% faster with both kernels; the CIFAR CNN's 64-channel convolution 3% slower
/// (forward) and 4 to 6% (∂x) through them, its 32-channel one the same either way.
const C_OUT_MAX: usize = 48;

/// One image's convolution as the kernels take it: (C, H, W, C_out).
pub(super) type Image = (usize, usize, usize, usize);

/// Whether [`conv3x3_direct`] computes a 3×3, stride-1 convolution of `c` input and `c_out`
/// output channels on a map of `positions` with the column-matrix path's bits, faster: as
/// [`forward_fits`], on a CPU with AVX-512 (with FMA, as `gemm`'s own kernels use). With AVX2
/// only, a tile's 16-float vectors would not fit in registers; such CPUs keep the column-matrix
/// path, whose bits are the same.
pub(super) fn applies(c: usize, c_out: usize, positions: usize) -> bool {
    forward_fits(c, c_out, positions) && simd_level() >= SimdLevel::Avx512
}

/// The shapes [`conv3x3_direct`] computes with `gemm`'s bits, faster: the depth fits one of
/// `gemm`'s blocks, the output channels are few ([`C_OUT_MAX`]), and the map has more than one
/// position (a 1 × 1 map's product has one column, which `gemm` sums in lanes, in another order:
/// `super::gemm::sums_in_lanes`).
fn forward_fits(c: usize, c_out: usize, positions: usize) -> bool {
    c * 9 <= DEPTH_MAX && c_out <= C_OUT_MAX && positions > 1
}

/// The scratch [`conv3x3_direct`] needs for `c` input and `c_out` output channels of h × w:
/// the padded image, then the output on the padded grid.
pub(super) fn scratch_len((c, h, w, c_out): Image) -> usize {
    c * padded_plane(h, w) + c_out * grid_len(h, w)
}

/// One padded plane, (h + 2) × (w + 2), with the last tile's overreach (at most `TILE` + 2
/// values past it).
fn padded_plane(h: usize, w: usize) -> usize {
    (h + 2) * (w + 2) + TILE + 2
}

/// One output channel on the padded grid: h rows of w + 2, rounded up to whole tiles.
fn grid_len(h: usize, w: usize) -> usize {
    (h * (w + 2)).next_multiple_of(TILE)
}

/// The sums of one tile, `N` output channels from `o0` on by `TILE` flat positions from `f0`
/// on, stored into `grid` (the output on the padded grid, `grid_len` apart per channel).
/// `xp` holds the padded planes, `plane` values apart, rows `wp` apart; `wt` is `[C_out, C·9]`.
#[inline(always)]
fn tile<T: Real, const N: usize>(
    (xp, wt): (&[T], &[T]),
    (c, plane, wp, stride): (usize, usize, usize, usize),
    (o0, f0): (usize, usize),
    grid: &mut [T],
) {
    let k = c * 9;
    let mut acc = [[[T::ZERO; LANES]; RUNS]; N];
    for ch in 0..c {
        for ky in 0..3 {
            for kx in 0..3 {
                let tap = ch * 9 + ky * 3 + kx;
                let at = ch * plane + f0 + ky * wp + kx;
                let mut xv = [[T::ZERO; LANES]; RUNS];
                for (r, v) in xv.iter_mut().enumerate() {
                    v.copy_from_slice(&xp[at + r * LANES..][..LANES]);
                }
                for (n, acc) in acc.iter_mut().enumerate() {
                    let wv = wt[(o0 + n) * k + tap];
                    for (a, v) in acc.iter_mut().zip(&xv) {
                        for (a, &v) in a.iter_mut().zip(v) {
                            *a = wv.mul_add(v, *a);
                        }
                    }
                }
            }
        }
    }
    for (n, acc) in acc.iter().enumerate() {
        for (r, a) in acc.iter().enumerate() {
            grid[(o0 + n) * stride + f0 + r * LANES..][..LANES].copy_from_slice(a);
        }
    }
}

simd_fn! {
    /// One image's output `z` (`[C_out, H, W]`, every element written) of a 3×3 convolution
    /// with stride 1 and padding 1 of `x` (`[C, H, W]`) by `wt` (`[C_out, C·9]`), plus `bias`:
    /// the column-matrix product's bits where [`applies`]. `scratch` is of [`scratch_len`].
    pub(super) fn conv3x3_direct<T: Real>(
        x: &[T],
        wt: &[T],
        bias: Option<&[T]>,
        dims: Image,
        scratch: &mut [T],
        z: &mut [MaybeUninit<T>],
    ) {
        let (c, h, w, c_out) = dims;
        let (wp, plane, stride) = (w + 2, padded_plane(h, w), grid_len(h, w));
        let (xp, grid) = scratch[..scratch_len(dims)].split_at_mut(c * plane);
        pad_planes(x, (h, w), xp);
        let ops = (&*xp, wt);
        let geometry = (c, plane, wp, stride);
        for (o0, f0, wide) in tiles_of((h * wp, TILE), (c_out, NR)) {
            if wide {
                tile::<T, NR>(ops, geometry, (o0, f0), grid);
            } else {
                tile::<T, 1>(ops, geometry, (o0, f0), grid);
            }
        }
        // The valid columns of the grid, plus the bias: the same single addition `gemm` makes.
        for (o, (zo, go)) in z.chunks_exact_mut(h * w).zip(grid.chunks_exact(stride)).enumerate() {
            for (zr, gr) in zo.chunks_exact_mut(w).zip(go.chunks(wp)) {
                for (v, &sum) in zr.iter_mut().zip(gr) {
                    v.write(bias.map_or(sum, |b| b[o] + sum));
                }
            }
        }
    }
}

/// Whether [`conv3x3_direct_input_grad`] computes ∂x of a 3×3, stride-1 convolution with
/// `c_out` output channels with the column-matrix path's bits (∂col = Wᵀ · ∂z has depth
/// C_out), faster: as for [`applies`].
pub(super) fn applies_input_grad(c_out: usize) -> bool {
    // C_OUT_MAX is below DEPTH_MAX, so the chain over the output channels is one block.
    c_out <= C_OUT_MAX && simd_level() >= SimdLevel::Avx512
}

/// The scratch [`conv3x3_direct_input_grad`] needs: ∂z padded, then ∂x on the padded grid.
pub(super) fn input_grad_scratch_len((c, h, w, c_out): Image) -> usize {
    c_out * padded_plane(h, w) + c * grid_len(h, w)
}

/// Input channels per tile of ∂x: a tap's sums, 4 × 4 vectors, 16 AVX-512 registers; the
/// running ∂x stays in the grid (in L1), as two sets of accumulators spilled.
const NR_DX: usize = 4;

/// Vectors of positions per tile of ∂x.
const RUNS_DX: usize = 4;

/// One tile of ∂x: `N` input channels from `c0` on by `LANES · RUNS_DX` flat positions from
/// `f0` on, accumulated in `grid`. `gzp` holds ∂z's padded planes; `wt` is `[C_out, C·9]`.
///
/// For each tap in (ky, kx) order: its sum over the output channels, a chain of FMAs from zero
/// (∂col's element, as `gemm` computes it), then added to the running ∂x, which starts at zero
/// (`col2im_add`'s additions, in its order). Position f reads tap (ky, kx) of the output
/// position (y − ky + 1, x − kx + 1), which lies at f + (2 − ky)·(W + 2) + 2 − kx of a padded
/// plane; outside the map it reads the padding, so that tap's sum is +0 and adds nothing, as
/// `col2im_add` adds nothing there.
#[inline(always)]
fn input_grad_tile<T: Real, const N: usize>(
    (gzp, wt): (&[T], &[T]),
    (c, c_out, plane, wp, stride): (usize, usize, usize, usize, usize),
    (c0, f0): (usize, usize),
    grid: &mut [T],
) {
    let k = c * 9;
    for ky in 0..3 {
        for kx in 0..3 {
            let tap = ky * 3 + kx;
            let shift = (2 - ky) * wp + 2 - kx;
            let mut sums = [[[T::ZERO; LANES]; RUNS_DX]; N];
            for o in 0..c_out {
                let at = o * plane + f0 + shift;
                let mut gv = [[T::ZERO; LANES]; RUNS_DX];
                for (r, v) in gv.iter_mut().enumerate() {
                    v.copy_from_slice(&gzp[at + r * LANES..][..LANES]);
                }
                for (n, sums) in sums.iter_mut().enumerate() {
                    let wv = wt[o * k + (c0 + n) * 9 + tap];
                    for (a, v) in sums.iter_mut().zip(&gv) {
                        for (a, &v) in a.iter_mut().zip(v) {
                            *a = wv.mul_add(v, *a);
                        }
                    }
                }
            }
            for (n, sums) in sums.iter().enumerate() {
                for (r, s) in sums.iter().enumerate() {
                    let run = &mut grid[(c0 + n) * stride + f0 + r * LANES..][..LANES];
                    for (d, &s) in run.iter_mut().zip(s) {
                        // The first tap adds onto zero, as onto ∂x's zeroed buffer.
                        let before = if tap == 0 { T::ZERO } else { *d };
                        *d = before + s;
                    }
                }
            }
        }
    }
}

/// The tiles of a grid of `flat` positions by `channels`, `step` positions and `wide` channels
/// a tile, the channels past the last multiple of `wide` one at a time: (first channel, first
/// position, whether the tile is `wide` channels). Positions outside, channels inside: a tile's
/// rows of the padded planes stay in the L1 cache across the channels. (An iterator, not a
/// function taking the tile as a closure: a closure is a function of its own, compiled for
/// baseline x86-64 whatever `simd_fn!` its caller is in, and the tiles ran 35 times slower.)
fn tiles_of(
    (flat, step): (usize, usize),
    (channels, wide): (usize, usize),
) -> impl Iterator<Item = (usize, usize, bool)> {
    let full = channels / wide * wide;
    (0..flat).step_by(step).flat_map(move |f0| {
        let wide_tiles = (0..full).step_by(wide).map(move |c0| (c0, f0, true));
        wide_tiles.chain((full..channels).map(move |ch| (ch, f0, false)))
    })
}

/// `src` (`planes` planes of h × w) copied into zero-padded planes of (h + 2) × (w + 2) in
/// `dst`, `padded_plane(h, w)` apart.
fn pad_planes<T: Real>(src: &[T], (h, w): (usize, usize), dst: &mut [T]) {
    let (wp, plane) = (w + 2, padded_plane(h, w));
    for (dst, src) in dst.chunks_exact_mut(plane).zip(src.chunks_exact(h * w)) {
        // Only the padding is zeroed: the top row, each row's two ends, the bottom row and the
        // slack past it. Each value is written once.
        dst[..wp].fill(T::ZERO);
        for (y, row) in src.chunks_exact(w).enumerate() {
            let padded = &mut dst[(y + 1) * wp..][..wp];
            padded[0] = T::ZERO;
            padded[1..=w].copy_from_slice(row);
            padded[w + 1] = T::ZERO;
        }
        dst[(h + 1) * wp..].fill(T::ZERO);
    }
}

simd_fn! {
    /// One image's ∂x (`[C, H, W]`, every element written) of a 3×3 convolution with stride 1
    /// and padding 1, from its ∂z (`[C_out, H, W]`) and `wt` (`[C_out, C·9]`): the bits of
    /// ∂col = Wᵀ · ∂z through `gemm` scattered back by `col2im_add`, where
    /// [`applies_input_grad`]. `scratch` is of [`input_grad_scratch_len`].
    pub(super) fn conv3x3_direct_input_grad<T: Real>(
        gz: &[T],
        wt: &[T],
        dims: Image,
        scratch: &mut [T],
        dx: &mut [MaybeUninit<T>],
    ) {
        let (c, h, w, c_out) = dims;
        let (wp, plane, stride) = (w + 2, padded_plane(h, w), grid_len(h, w));
        let len = input_grad_scratch_len(dims);
        let (gzp, grid) = scratch[..len].split_at_mut(c_out * plane);
        pad_planes(gz, (h, w), gzp);
        let ops = (&*gzp, wt);
        let geometry = (c, c_out, plane, wp, stride);
        for (c0, f0, wide) in tiles_of((h * wp, LANES * RUNS_DX), (c, NR_DX)) {
            if wide {
                input_grad_tile::<T, NR_DX>(ops, geometry, (c0, f0), grid);
            } else {
                input_grad_tile::<T, 1>(ops, geometry, (c0, f0), grid);
            }
        }
        for (dc, gc) in dx.chunks_exact_mut(h * w).zip(grid.chunks_exact(stride)) {
            for (dr, gr) in dc.chunks_exact_mut(w).zip(gc.chunks(wp)) {
                for (d, &v) in dr.iter_mut().zip(&gr[..w]) {
                    d.write(v);
                }
            }
        }
    }
}

/// Taps per tile of ∂W: one input channel's nine, so that a tile never straddles channels.
const TAPS: usize = 9;

/// Whether [`conv3x3_direct_weight_grad`] computes ∂W of a 3×3, stride-1 convolution with the
/// column-matrix path's bits, faster: as for [`applies`], with a map whose positions `gemm`
/// sums in blocks of one rule (at most 512 positions, one block; else a multiple of 512, blocks
/// of 512: `gemm` cuts other depths by a rule that depends on the product's shape), and not a
/// product `gemm` sums in lanes (`super::gemm::sums_in_lanes`), which keeps its own order.
pub(super) fn applies_weight_grad(c: usize, c_out: usize, positions: usize) -> bool {
    weight_grad_fits(c, c_out, positions) && simd_level() >= SimdLevel::Avx512
}

/// The shapes [`conv3x3_direct_weight_grad`] computes with `gemm`'s bits (at most
/// [`C_OUT_MAX`] output channels: three vectors).
fn weight_grad_fits(c: usize, c_out: usize, positions: usize) -> bool {
    let blocks_of_one_rule = positions <= DEPTH_MAX || positions.is_multiple_of(DEPTH_MAX);
    blocks_of_one_rule && !super::gemm::sums_in_lanes(c * 9, c_out) && c_out <= C_OUT_MAX
}

/// The scratch [`conv3x3_direct_weight_grad`] needs: the padded image, then ∂z transposed
/// (with one vector of slack: a tile's last vector of output channels reads past a row).
pub(super) fn weight_grad_scratch_len((c, h, w, c_out): Image) -> usize {
    c * padded_plane(h, w) + h * w * c_out + LANES
}

/// One channel's nine taps of ∂Wᵀ, for `V` vectors of `L` output channels (at least C_out:
/// the lanes past it are computed and dropped), over the positions `from..to` of one block,
/// added to `dwt` (`[C·9, C_out]`): for each element, a chain of FMAs over the positions in
/// order, from zero, then one addition to what `dwt` holds, as `gemm` computes col · ∂zᵀ. `xp`
/// is the channel's padded plane; `gzt` is ∂z transposed.
#[inline(always)]
fn weight_grad_tile<T: Real, const L: usize, const V: usize>(
    (xp, gzt): (&[T], &[T]),
    (w, wp, c_out): (usize, usize, usize),
    (from, to): (usize, usize),
    dwt: &mut [T],
) {
    let mut acc = [[[T::ZERO; L]; V]; TAPS];
    let mut p = from;
    // A run of positions along one output row at a time: its three padded rows are sliced once.
    while p < to {
        let (y, x0) = (p / w, p % w);
        let n = (w - x0).min(to - p);
        let rows: [&[T]; 3] = std::array::from_fn(|ky| &xp[(y + ky) * wp + x0..][..n + 2]);
        // The run's ∂z rows, with slack for the last one's lanes past C_out.
        let grads = &gzt[p * c_out..][..(n - 1) * c_out + V * L];
        for i in 0..n {
            // SAFETY: i < n, so i·C_out + V·L ≤ (n − 1)·C_out + V·L = grads.len(), and i + 2 <
            // n + 2 = each row's length. Unchecked, because the bounds checks of these twelve
            // reads a position were half of this loop's instructions.
            let g: [[T; L]; V] = std::array::from_fn(|v| {
                std::array::from_fn(|l| unsafe { *grads.get_unchecked(i * c_out + v * L + l) })
            });
            // Tap (ky, kx) of output position (y, x) reads the padded plane at (y + ky, x + kx).
            for (tap, acc) in acc.iter_mut().enumerate() {
                let xv = unsafe { *rows[tap / 3].get_unchecked(i + tap % 3) };
                for (a, g) in acc.iter_mut().zip(&g) {
                    for (a, &g) in a.iter_mut().zip(g) {
                        *a = xv.mul_add(g, *a);
                    }
                }
            }
        }
        p += n;
    }
    // Two slices zipped, which LLVM vectorises: through `flatten` this loop was one value at a
    // time, a quarter of the time of a 7 × 7 map's ∂W.
    for (row, acc) in dwt.chunks_exact_mut(c_out).zip(&acc) {
        for (d, &a) in row.iter_mut().zip(acc.as_flattened()) {
            *d += a;
        }
    }
}

simd_fn! {
    /// Adds one image's term of ∂Wᵀ (`[C·9, C_out]`) of a 3×3 convolution with stride 1 and
    /// padding 1, from the image `x` (`[C, H, W]`) and its ∂z (`[C_out, H, W]`): the bits of
    /// col · ∂zᵀ through `gemm` added onto `dwt`, where [`applies_weight_grad`]. `scratch` is
    /// of [`weight_grad_scratch_len`].
    pub(super) fn conv3x3_direct_weight_grad<T: Real>(
        x: &[T],
        gz: &[T],
        dims: Image,
        scratch: &mut [T],
        dwt: &mut [T],
    ) {
        let (c, h, w, c_out) = dims;
        assert!(weight_grad_fits(c, c_out, h * w), "direct dW: shape {dims:?}");
        let (wp, plane, hw) = (w + 2, padded_plane(h, w), h * w);
        let len = weight_grad_scratch_len(dims);
        let (xp, gzt) = scratch[..len].split_at_mut(c * plane);
        pad_planes(x, (h, w), xp);
        transpose_into(gz, c_out, hw, &mut gzt[..hw * c_out]);
        let gzt = &*gzt;
        let block = if hw <= DEPTH_MAX { hw } else { DEPTH_MAX };
        for from in (0..hw).step_by(block) {
            let to = (from + block).min(hw);
            for (ch, dwt) in dwt.chunks_exact_mut(TAPS * c_out).enumerate() {
                let ops = (&xp[ch * plane..(ch + 1) * plane], gzt);
                let geometry = (w, wp, c_out);
                // Vectors of 8 lanes where they waste fewer than 16 would (C_out 8: one 8-lane
                // vector, not half of a 16-lane one), at most three vectors, so that the nine
                // taps' accumulators stay in registers.
                match c_out {
                    0..=8 => weight_grad_tile::<T, 8, 1>(ops, geometry, (from, to), dwt),
                    9..=16 => weight_grad_tile::<T, LANES, 1>(ops, geometry, (from, to), dwt),
                    17..=24 => weight_grad_tile::<T, 8, 3>(ops, geometry, (from, to), dwt),
                    25..=32 => weight_grad_tile::<T, LANES, 2>(ops, geometry, (from, to), dwt),
                    _ => weight_grad_tile::<T, LANES, 3>(ops, geometry, (from, to), dwt),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::common::{differing_bits, test_values};
    use super::super::gemm::{Operand, gemm_into};
    use super::*;

    /// (C, H, W, C_out): the Inception's and the CNN's shapes, the deepest product this path
    /// takes (C·9 = 504), tile remainders of output and input channels, ∂W's vectors of 8 and
    /// 16 lanes full and part-empty, and odd small maps (a 1 × 1 one, which the forward leaves
    /// to the column matrix: through the direct kernel its outputs differed).
    const SHAPES: [Image; 13] = [
        (5, 1, 1, 7),
        (3, 32, 32, 24),
        (40, 15, 15, 20),
        (16, 9, 9, 6),
        (24, 32, 32, 8),
        (16, 32, 32, 12),
        (32, 16, 16, 64),
        (40, 15, 15, 28),
        (40, 15, 15, 12),
        (56, 7, 7, 44),
        (2, 5, 4, 3),
        (5, 3, 17, 13),
        (1, 1, 1, 1),
    ];

    /// `data` as a `gemm` operand with row stride `rs` and column stride `cs`.
    fn operand<T>(data: &[T], rs: isize, cs: isize) -> Operand<'_, T> {
        Operand { data, rs, cs }
    }

    /// `got` has `want`'s bits, every element; `what` names the case.
    fn assert_same_bits<T: Real>(got: &[T], want: &[T], what: std::fmt::Arguments) {
        let n = differing_bits(got, want);
        assert_eq!(n, 0, "{what}: {n} of {} values differ", want.len());
    }

    /// The values a kernel wrote, each element of `v` initialised by the test beforehand.
    fn written<T: Copy>(v: &[MaybeUninit<T>]) -> Vec<T> {
        // SAFETY: every test creates its output with `MaybeUninit::new`.
        v.iter().map(|v| unsafe { v.assume_init() }).collect()
    }

    /// The column matrix of one image, element by element: the plain reference.
    fn column_matrix<T: Real>(x: &[T], (c, h, w): (usize, usize, usize)) -> Vec<T> {
        let mut col = vec![T::ZERO; c * 9 * h * w];
        for (row, (ch, ky, kx)) in (0..c)
            .flat_map(|ch| (0..3).flat_map(move |ky| (0..3).map(move |kx| (ch, ky, kx))))
            .enumerate()
        {
            for y in 0..h {
                for xx in 0..w {
                    let (sy, sx) = ((y + ky).checked_sub(1), (xx + kx).checked_sub(1));
                    if let (Some(sy), Some(sx)) = (sy.filter(|&v| v < h), sx.filter(|&v| v < w)) {
                        col[row * h * w + y * w + xx] = x[ch * h * w + sy * w + sx];
                    }
                }
            }
        }
        col
    }

    /// The column-matrix path as the conv op runs it: the bias (or zero) written, then
    /// `W · col` added by `gemm`.
    fn through_columns<T: Real>(
        x: &[T],
        wt: &[T],
        bias: Option<&[T]>,
        (c, h, w, c_out): Image,
    ) -> Vec<T> {
        let (k, hw) = (c * 9, h * w);
        let col = column_matrix(x, (c, h, w));
        let mut z: Vec<T> = (0..c_out * hw)
            .map(|i| bias.map_or(T::ZERO, |b| b[i / hw]))
            .collect();
        let lhs = operand(wt, k as isize, 1);
        let rhs = operand(&col[..], hw as isize, 1);
        gemm_into((c_out, hw, k), &mut z, lhs, rhs, bias.is_some());
        z
    }

    fn bits_agree<T: Real>(seed: u64) {
        assert!(
            simd_level() >= SimdLevel::Avx2,
            "this CPU has no FMA, so the direct convolution never runs on it"
        );
        for (c, h, w, c_out) in SHAPES {
            if !forward_fits(c, c_out, h * w) {
                // A 1 × 1 map, whose product `gemm` sums in lanes, keeps the column matrix.
                continue;
            }
            let dims = (c, h, w, c_out);
            let x = test_values::<T>(c * h * w, seed);
            let wt = test_values::<T>(c_out * c * 9, seed + 1);
            let b = test_values::<T>(c_out, seed + 2);
            for bias in [None, Some(&b[..])] {
                let want = through_columns(&x, &wt, bias, dims);
                // NaN in the scratch, as garbage left by another image would be: the kernel must
                // write every value it reads, the padding's zeros included.
                let mut xp = vec![T::from_f64(f64::NAN); scratch_len(dims)];
                // NaN where the kernel writes nothing, which no output of the reference is.
                let mut z = vec![MaybeUninit::new(T::from_f64(f64::NAN)); c_out * h * w];
                conv3x3_direct(&x, &wt, bias, dims, &mut xp, &mut z);
                let what = format_args!("C {c}, {h}x{w}, C_out {c_out}, bias {}", bias.is_some());
                assert_same_bits(&written(&z), &want, what);
            }
        }
    }

    /// ∂x through the column matrix as the conv op's backward computes it: ∂col = Wᵀ · ∂z by
    /// `gemm`, then each ∂col row added back where its column matrix row was read from, row by
    /// row in (c, ky, kx) order.
    fn input_grad_through_columns<T: Real>(gz: &[T], wt: &[T], (c, h, w, c_out): Image) -> Vec<T> {
        let (k, hw) = (c * 9, h * w);
        let mut dcol = vec![T::ZERO; k * hw];
        let w_t = operand(wt, 1, k as isize);
        let g = operand(gz, hw as isize, 1);
        gemm_into((k, hw, c_out), &mut dcol, w_t, g, false);
        let mut dx = vec![T::ZERO; c * hw];
        for ch in 0..c {
            for ky in 0..3 {
                for kx in 0..3 {
                    let row = &dcol[(ch * 9 + ky * 3 + kx) * hw..][..hw];
                    for y in 0..h {
                        for xx in 0..w {
                            let (sy, sx) = ((y + ky).checked_sub(1), (xx + kx).checked_sub(1));
                            if let (Some(sy), Some(sx)) =
                                (sy.filter(|&v| v < h), sx.filter(|&v| v < w))
                            {
                                dx[ch * hw + sy * w + sx] += row[y * w + xx];
                            }
                        }
                    }
                }
            }
        }
        dx
    }

    fn input_grad_bits_agree<T: Real>(seed: u64) {
        for (c, h, w, c_out) in SHAPES {
            let dims = (c, h, w, c_out);
            let gz = test_values::<T>(c_out * h * w, seed);
            let wt = test_values::<T>(c_out * c * 9, seed + 1);
            let want = input_grad_through_columns(&gz, &wt, dims);
            let mut scratch = vec![T::from_f64(f64::NAN); input_grad_scratch_len(dims)];
            let mut got = vec![MaybeUninit::new(T::from_f64(f64::NAN)); c * h * w];
            conv3x3_direct_input_grad(&gz, &wt, dims, &mut scratch, &mut got);
            let what = format_args!("dx: C {c}, {h}x{w}, C_out {c_out}");
            assert_same_bits(&written(&got), &want, what);
        }
    }

    /// The direct ∂x has the bits of ∂col = Wᵀ · ∂z through `gemm` scattered back by the
    /// column matrix's adjoint, in f32 and f64.
    #[test]
    fn direct_input_gradient_has_the_bits_of_the_column_matrix_adjoint() {
        input_grad_bits_agree::<f32>(31);
        input_grad_bits_agree::<f64>(37);
    }

    /// ∂Wᵀ over three images through the column matrix as the conv op's backward computes it:
    /// col · ∂zᵀ by `gemm`, added image by image.
    fn weight_grad_through_columns<T: Real>(
        images: &[(Vec<T>, Vec<T>)],
        (c, h, w, c_out): Image,
    ) -> Vec<T> {
        let (k, hw) = (c * 9, h * w);
        let mut dwt = vec![T::ZERO; k * c_out];
        for (x, gz) in images {
            let col = column_matrix(x, (c, h, w));
            let mut gzt = vec![T::ZERO; hw * c_out];
            for o in 0..c_out {
                for p in 0..hw {
                    gzt[p * c_out + o] = gz[o * hw + p];
                }
            }
            let col_op = operand(&col[..], hw as isize, 1);
            let gzt_op = operand(&gzt[..], c_out as isize, 1);
            gemm_into((k, c_out, hw), &mut dwt, col_op, gzt_op, true);
        }
        dwt
    }

    fn weight_grad_bits_agree<T: Real>(seed: u64) {
        for (c, h, w, c_out) in SHAPES {
            if !weight_grad_fits(c, c_out, h * w) {
                // Products `gemm` sums in lanes, and wide ones, keep the column-matrix path.
                continue;
            }
            let dims = (c, h, w, c_out);
            let images: Vec<(Vec<T>, Vec<T>)> = (0..3)
                .map(|i| {
                    let s = seed + 2 * i;
                    let x = test_values::<T>(c * h * w, s);
                    (x, test_values::<T>(c_out * h * w, s + 1))
                })
                .collect();
            let want = weight_grad_through_columns(&images, dims);
            let mut scratch = vec![T::from_f64(f64::NAN); weight_grad_scratch_len(dims)];
            let mut got = vec![T::ZERO; want.len()];
            for (x, gz) in &images {
                conv3x3_direct_weight_grad(x, gz, dims, &mut scratch, &mut got);
            }
            let what = format_args!("dW: C {c}, {h}x{w}, C_out {c_out}");
            assert_same_bits(&got, &want, what);
        }
    }

    /// The direct ∂W has the bits of col · ∂zᵀ through `gemm`, added over three images, in f32
    /// and f64: on maps of one block of positions and of two (32 × 32).
    #[test]
    fn direct_weight_gradient_has_the_bits_of_the_column_matrix_product() {
        weight_grad_bits_agree::<f32>(41);
        weight_grad_bits_agree::<f64>(43);
    }

    /// The direct convolution has the bits of the column-matrix product through `gemm`, in
    /// f32 and f64, with and without the bias.
    #[test]
    fn direct_convolution_has_the_bits_of_the_column_matrix_product() {
        bits_agree::<f32>(11);
        bits_agree::<f64>(23);
    }
}
