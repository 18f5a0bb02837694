//! Statistics batches smaller than the training batch ("ghost batches"): `norm.stats_batch = k`
//! normalises each group of k consecutive examples of a training batch by its own statistics,
//! as data-parallel training does with k images per GPU. The gradient still comes from the
//! whole batch, so a study can vary the noise in BN's statistics with the learning rate fixed.
//!
//! The groups are not a loop. `[N, C, …]` is viewed as `[k, (N/k)·C, …]`: example `j·k + i`
//! becomes row `i`, and channel `c` of group `j` becomes channel `j·C + c`. A per-channel
//! normaliser over that view (the fused BN kernel) then takes each group's statistics for each
//! channel, with γ and β tiled N/k times so that their gradients sum over the groups.
//!
//! A batch that k does not divide (the activation probe's 1,000 examples at k = 60, say) is
//! split: the largest divisible head as groups of k, and the rest normalised as one group of
//! its own (the last group of k joins it when only one example would be left over).

use anyhow::{Result, ensure};
use burn::tensor::Tensor;

use crate::kernels::FusedOutput;

/// `norm.stats_batch` against the training batch: at least two examples (one has no variance),
/// and a divisor of `batch_size`, so that every training batch splits into whole groups.
pub fn check_stats_batch(stats_batch: Option<usize>, batch_size: usize) -> Result<()> {
    let Some(k) = stats_batch else {
        return Ok(());
    };
    ensure!(
        k >= 2,
        "norm.stats_batch is {k}: a statistics batch needs at least 2 examples, or its variance \
         is undefined"
    );
    ensure!(
        batch_size.is_multiple_of(k),
        "norm.stats_batch {k} does not divide batch_size {batch_size}: each training batch is \
         split into groups of norm.stats_batch examples"
    );
    Ok(())
}

/// How a batch of `n` examples splits into statistics groups of `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// One group: the whole batch (no `k`, or `k >= n`).
    Whole,
    /// `n / k` groups of `k` examples.
    Groups { k: usize, groups: usize },
    /// The first `head` examples in groups of `k`, the remaining examples as one group.
    HeadAndRest { k: usize, head: usize },
}

/// The split of a batch of `n` examples for a statistics batch of `k` (`None`: the whole batch).
pub fn split(n: usize, k: Option<usize>) -> Split {
    let Some(k) = k.filter(|&k| k >= 1 && k < n) else {
        return Split::Whole;
    };
    let rest = n % k;
    if rest == 0 {
        return Split::Groups { k, groups: n / k };
    }
    // A rest of one example has no variance: it joins the group before it.
    let head = if rest >= 2 { n - rest } else { n - rest - k };
    if head == 0 {
        Split::Whole
    } else {
        Split::HeadAndRest { k, head }
    }
}

/// `[N, C, …]` as `[k, (N/k)·C, …]`: each group of k examples gets its own channels.
pub fn to_groups<const D: usize>(x: Tensor<D>, k: usize) -> Tensor<D> {
    let dims = x.dims();
    let (n, c) = (dims[0], dims[1]);
    let inner: usize = dims[2..].iter().product();
    let groups = n / k;
    let swapped = x.reshape([groups, k, c, inner]).swap_dims(0, 1);
    let mut shape = dims;
    shape[0] = k;
    shape[1] = groups * c;
    swapped.reshape(shape)
}

/// The inverse of [`to_groups`]: `[k, G·C, …]` back to `[G·k, C, …]`.
pub fn from_groups<const D: usize>(y: Tensor<D>, k: usize, channels: usize) -> Tensor<D> {
    let dims = y.dims();
    let groups = dims[1] / channels;
    let inner: usize = dims[2..].iter().product();
    let swapped = y.reshape([k, groups, channels, inner]).swap_dims(0, 1);
    let mut shape = dims;
    shape[0] = groups * k;
    shape[1] = channels;
    swapped.reshape(shape)
}

/// A per-channel `[C]` vector repeated for `groups` groups: `[G·C]`, group-major.
pub fn tile(v: Tensor<1>, groups: usize) -> Tensor<1> {
    if groups == 1 {
        return v;
    }
    let c = v.dims()[0];
    v.reshape([1, c])
        .repeat_dim(0, groups)
        .reshape([groups * c])
}

/// The mean over groups of a group-major `[G·C]` vector: `[C]`.
pub fn mean_over_groups(v: Tensor<1>, groups: usize) -> Tensor<1> {
    let c = v.dims()[0] / groups;
    v.reshape([groups, c]).mean_dim(0).reshape([c])
}

/// Per-channel statistics of one training mini-batch: μ_B and the biased σ²_B, plus m.
#[derive(Debug, Clone)]
pub struct BatchStats {
    pub mean: Tensor<1>,
    pub biased_var: Tensor<1>,
    /// Values per channel the statistics were taken over (N, or N·H·W).
    pub count: usize,
}

impl BatchStats {
    /// The same statistics outside the autodiff graph, as the running averages and the
    /// population pass take them.
    pub fn detach(self) -> Self {
        Self {
            mean: self.mean.detach(),
            biased_var: self.biased_var.detach(),
            count: self.count,
        }
    }
}

/// A training batch normalised per statistics group, with the statistics the running averages
/// absorb: the per-channel mean over groups of each group's μ_B and biased σ²_B, and m, the
/// values per channel in one group (k, or k·H·W).
pub struct GroupedOutput<const D: usize> {
    pub output: Tensor<D>,
    pub stats: BatchStats,
}

/// Normalise `x` (`[N, C, …]`) in statistics groups of `k` examples. `normalise` is a
/// per-channel normaliser called on a view with `groups`·C channels (see the module docs); it
/// returns its output and the `[groups·C]` statistics it took.
pub fn normalise_in_groups<const D: usize>(
    x: Tensor<D>,
    k: Option<usize>,
    normalise: &dyn Fn(Tensor<D>, usize) -> FusedOutput<D>,
) -> GroupedOutput<D> {
    let dims = x.dims();
    let (n, c) = (dims[0], dims[1]);
    let inner: usize = dims[2..].iter().product();
    match split(n, k) {
        Split::Whole => {
            let out = normalise(x, 1);
            GroupedOutput {
                output: out.output,
                stats: BatchStats {
                    mean: out.mean,
                    biased_var: out.variance,
                    count: n * inner,
                },
            }
        }
        Split::Groups { k, groups } => {
            let out = normalise(to_groups(x, k), groups);
            GroupedOutput {
                output: from_groups(out.output, k, c),
                stats: BatchStats {
                    mean: mean_over_groups(out.mean, groups),
                    biased_var: mean_over_groups(out.variance, groups),
                    count: k * inner,
                },
            }
        }
        Split::HeadAndRest { k, head } => {
            let grouped = normalise_in_groups(rows(x.clone(), 0, head), Some(k), normalise);
            let rest = normalise(rows(x, head, n), 1);
            GroupedOutput {
                output: Tensor::cat(vec![grouped.output, rest.output], 0),
                ..grouped
            }
        }
    }
}

/// Rows `start..end` of the batch axis.
pub fn rows<const D: usize>(x: Tensor<D>, start: usize, end: usize) -> Tensor<D> {
    x.narrow(0, start, end - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_keep_every_group_at_two_or_more_examples() {
        assert_eq!(split(60, None), Split::Whole);
        assert_eq!(split(60, Some(60)), Split::Whole);
        assert_eq!(split(60, Some(4)), Split::Groups { k: 4, groups: 15 });
        assert_eq!(
            split(1000, Some(60)),
            Split::HeadAndRest { k: 60, head: 960 }
        );
        // 61 = 30 groups of 2 and one left over: the last group takes 3.
        assert_eq!(split(61, Some(2)), Split::HeadAndRest { k: 2, head: 58 });
        assert_eq!(split(3, Some(2)), Split::Whole);
    }
}
