//! The training data on the device, and which rows each step reads.
//!
//! A split is uploaded once ([`DeviceSplit`]); each step gathers its mini-batch there by index,
//! in the order [`BatchOrder`] draws from the run's seed: one permutation per epoch, so that a
//! resumed run reads the same rows as an uninterrupted one.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::Split;
use crate::model::CLASSES;
use crate::rng::Rng;

/// A data split uploaded once; mini-batches are gathered from it by index, on the device.
///
/// A GPU caps the size of one buffer (wgpu's storage-binding limit; lavapipe refuses MNIST's
/// 188 MB training images in one piece), so the split is uploaded in chunks of at most
/// `backend::max_buffer_bytes` each. On the CPU there is no cap and one chunk.
pub struct DeviceSplit {
    /// `(images [rows, features], one-hot labels [rows, 10])`, `rows_per_chunk` rows each (the
    /// last one fewer). The labels travel with the images, so that a training step gathers its
    /// targets on the device instead of building them on the host.
    chunks: Vec<(Tensor<2>, Tensor<2>)>,
    rows_per_chunk: usize,
    pub labels: Vec<u8>,
    pub len: usize,
    pub features: usize,
}

impl DeviceSplit {
    /// Move a split onto the device (no copy of the images on the CPU backend), in chunks of
    /// at most `max_bytes` of images each (`None`: one chunk).
    pub fn upload(split: Split, device: &Device, max_bytes: Option<usize>) -> Self {
        let features = split.feature_len();
        let row_bytes = features * std::mem::size_of::<f32>();
        let rows_per_chunk = max_bytes
            .map_or(split.len, |max| (max / row_bytes).max(1))
            .clamp(1, split.len.max(1));
        let mut one_hot = vec![0f32; split.len * CLASSES];
        for (row, &label) in split.labels.iter().enumerate() {
            one_hot[row * CLASSES + label as usize] = 1.0;
        }
        let chunks = if rows_per_chunk >= split.len {
            vec![(
                Tensor::from_data(TensorData::new(split.images, [split.len, features]), device),
                Tensor::from_data(TensorData::new(one_hot, [split.len, CLASSES]), device),
            )]
        } else {
            (0..split.len)
                .step_by(rows_per_chunk)
                .map(|start| {
                    let end = (start + rows_per_chunk).min(split.len);
                    let images = split.images[start * features..end * features].to_vec();
                    let targets = one_hot[start * CLASSES..end * CLASSES].to_vec();
                    (
                        Tensor::from_data(TensorData::new(images, [end - start, features]), device),
                        Tensor::from_data(TensorData::new(targets, [end - start, CLASSES]), device),
                    )
                })
                .collect()
        };
        Self {
            chunks,
            rows_per_chunk,
            labels: split.labels,
            len: split.len,
            features,
        }
    }

    /// Images `[n, features]` at `indices`, and their one-hot labels `[n, 10]`: an upload of
    /// the indices, then gathers on the device (one pair per chunk the batch touches, and one
    /// more to put the rows back in the batch's order when it touches several).
    pub fn batch(&self, indices: &[usize], device: &Device) -> (Tensor<2>, Tensor<2>) {
        let upload = |idx: Vec<i64>| {
            let n = idx.len();
            Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), device)
        };
        if self.chunks.len() == 1 {
            let idx = upload(indices.iter().map(|&i| i as i64).collect());
            let (images, targets) = &self.chunks[0];
            return (
                images.clone().select(0, idx.clone()),
                targets.clone().select(0, idx),
            );
        }
        // The batch's positions bucketed by chunk; gathered chunk by chunk, the rows come out in
        // bucket order, and `back` puts each where the batch has it.
        let mut buckets = vec![Vec::new(); self.chunks.len()];
        for (k, &i) in indices.iter().enumerate() {
            buckets[i / self.rows_per_chunk].push(k);
        }
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for ((images, targets), bucket) in self.chunks.iter().zip(&buckets) {
            if bucket.is_empty() {
                continue;
            }
            let idx = upload(
                bucket
                    .iter()
                    .map(|&k| (indices[k] % self.rows_per_chunk) as i64)
                    .collect(),
            );
            xs.push(images.clone().select(0, idx.clone()));
            ys.push(targets.clone().select(0, idx));
        }
        let mut back = vec![0i64; indices.len()];
        for (position, &k) in buckets.iter().flatten().enumerate() {
            back[k] = position as i64;
        }
        let back = upload(back);
        (
            Tensor::cat(xs, 0).select(0, back.clone()),
            Tensor::cat(ys, 0).select(0, back),
        )
    }

    /// Images `[end - start, features]` of a contiguous range, and their one-hot labels.
    pub fn range(&self, start: usize, end: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
        if self.chunks.len() == 1 {
            let (images, targets) = &self.chunks[0];
            return (
                images.clone().slice([start..end, 0..self.features]),
                targets.clone().slice([start..end, 0..CLASSES]),
            );
        }
        self.batch(&(start..end).collect::<Vec<_>>(), device)
    }
}

/// Mini-batch indices for each step: epochs of permutations, each drawn from the seed's
/// `stream` (the run's data stream; the population pass draws its own from another seed).
pub(super) struct BatchOrder {
    seed: u64,
    stream: u64,
    n: usize,
    batch: usize,
    epoch: u64,
    perm: Vec<usize>,
}

impl BatchOrder {
    pub(super) fn new(seed: u64, stream: u64, n: usize, batch: usize) -> Self {
        Self {
            seed,
            stream,
            n,
            batch,
            epoch: u64::MAX,
            perm: Vec::new(),
        }
    }

    /// Indices of the mini-batch used by step `step` (0-based).
    pub(super) fn indices(&mut self, step: u64) -> &[usize] {
        let per_epoch = (self.n / self.batch) as u64;
        let epoch = step / per_epoch;
        if epoch != self.epoch {
            self.perm = Rng::stream(self.seed, self.stream, epoch).permutation(self.n);
            self.epoch = epoch;
        }
        let start = (step % per_epoch) as usize * self.batch;
        &self.perm[start..start + self.batch]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::tensor_to_f32 as host;

    /// A split of `n` 3-value images whose values and labels name their row.
    fn numbered_split(n: usize) -> Split {
        Split {
            images: (0..n * 3).map(|v| v as f32).collect(),
            labels: (0..n).map(|i| (i % CLASSES) as u8).collect(),
            len: n,
            channels: 3,
            height: 1,
            width: 1,
        }
    }

    /// The GPU uploads data in chunks; gathered through several chunks (uneven, one of them
    /// untouched), a batch and a range are the rows of the split in the batch's own order.
    #[test]
    fn a_split_in_chunks_gathers_the_same_rows_as_one_piece() {
        let device = Device::flex();
        let whole = DeviceSplit::upload(numbered_split(23), &device, None);
        // 5 rows of 12 bytes per chunk: 5 chunks, the last one of 3 rows.
        let chunked = DeviceSplit::upload(numbered_split(23), &device, Some(60));
        assert_eq!(chunked.chunks.len(), 5);
        let indices = [22, 0, 7, 3, 22, 14, 6, 1];
        let (x, y) = chunked.batch(&indices, &device);
        let (x1, y1) = whole.batch(&indices, &device);
        let x = host(x);
        assert_eq!(x, host(x1));
        assert_eq!(host(y), host(y1));
        // Row k of the batch is image indices[k]: values 3i, 3i+1, 3i+2.
        for (k, &i) in indices.iter().enumerate() {
            assert_eq!(x[3 * k], (3 * i) as f32);
        }
        let (r, t) = chunked.range(4, 17, &device);
        let (r1, t1) = whole.range(4, 17, &device);
        assert_eq!(host(r), host(r1));
        assert_eq!(host(t), host(t1));
    }
}
