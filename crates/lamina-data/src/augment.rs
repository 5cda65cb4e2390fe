//! Seeded image augmentation, drawn when batches are gathered.
//!
//! Design: [`AugmentedDataset`] wraps a data set and augments in
//! [`Dataset::gather_epoch`], the method the [`DataLoader`](crate::DataLoader) (and so
//! `ModelTrainer::fit`) calls for training batches, on its worker threads. The random draw of a
//! sample depends only on `(seed, epoch, sample index)`, never on the batch it lands in, the
//! thread that gathers it or the order of calls: a run is reproducible with any number of
//! workers, each epoch sees fresh crops and flips, and nothing is stored per epoch. Plain
//! [`Dataset::gather`] (evaluation, `subset`) returns the samples unaugmented.

use crate::{Dataset, SplitMix64};
use lamina_core::{dtype::fmt_shape, Error, Result};

/// Random training augmentation of image samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augment {
    /// Random crop with padding: the sample is padded by `pad` zeros on every side (zero in the
    /// stored, already normalised scale) and a window of the original size is cut at a uniform
    /// offset in `0..=2·pad` per axis. 0 disables it.
    pub pad: usize,
    /// Horizontal flip with probability 1/2.
    pub flip: bool,
}

/// A data set of images `[C, H, W]` (or `[H, W]`) whose training draws are augmented.
#[derive(Clone, Debug)]
pub struct AugmentedDataset<D> {
    inner: D,
    augment: Augment,
    seed: u64,
    planes: usize,
    height: usize,
    width: usize,
}

impl<D: Dataset> AugmentedDataset<D> {
    /// Wraps `inner`; its samples must be images of shape `[C, H, W]` or `[H, W]`.
    pub fn new(inner: D, augment: Augment, seed: u64) -> Result<Self> {
        let (planes, height, width) = match *inner.sample_shape() {
            [c, h, w] => (c, h, w),
            [h, w] => (1, h, w),
            ref other => {
                return Err(Error::Spec(format!(
                    "augmentation takes image samples [C, H, W] or [H, W], these have shape {}",
                    fmt_shape(other)
                )))
            }
        };
        Ok(AugmentedDataset {
            inner,
            augment,
            seed,
            planes,
            height,
            width,
        })
    }

    /// The wrapped data set.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Augments one sample in place as its draw for `(epoch, index)` says.
    pub fn augment_sample(&self, sample: &mut [f32], index: usize, epoch: usize) {
        let (h, w) = (self.height, self.width);
        // Mix the index through one SplitMix64 step so neighbouring samples get unrelated draws.
        let key = SplitMix64::new(self.seed ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
            .next_u64();
        let mut rng = SplitMix64::for_epoch(key, epoch);
        let span = 2 * self.augment.pad as u64 + 1;
        let dy = rng.below(span) as isize - self.augment.pad as isize;
        let dx = rng.below(span) as isize - self.augment.pad as isize;
        let flip = self.augment.flip && rng.next_u64() & 1 == 1;
        if (dy, dx, flip) == (0, 0, false) {
            return;
        }
        let mut out = vec![0f32; h * w];
        for plane in sample.chunks_exact_mut(h * w).take(self.planes) {
            out.iter_mut().for_each(|v| *v = 0.0);
            for y in 0..h {
                let sy = y as isize + dy;
                if sy < 0 || sy >= h as isize {
                    continue;
                }
                for x in 0..w {
                    let sx = x as isize + dx;
                    if sx < 0 || sx >= w as isize {
                        continue;
                    }
                    let ox = if flip { w - 1 - x } else { x };
                    out[y * w + ox] = plane[sy as usize * w + sx as usize];
                }
            }
            plane.copy_from_slice(&out);
        }
    }
}

impl<D: Dataset> Dataset for AugmentedDataset<D> {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn sample_shape(&self) -> &[usize] {
        self.inner.sample_shape()
    }
    fn target_shape(&self) -> &[usize] {
        self.inner.target_shape()
    }
    fn has_classes(&self) -> bool {
        self.inner.has_classes()
    }
    /// The plain samples: evaluation does not augment.
    fn gather(
        &self,
        indices: &[usize],
        x: &mut Vec<f32>,
        classes: &mut Vec<i32>,
        targets: &mut Vec<f32>,
    ) {
        self.inner.gather(indices, x, classes, targets)
    }
    fn gather_epoch(
        &self,
        indices: &[usize],
        epoch: usize,
        x: &mut Vec<f32>,
        classes: &mut Vec<i32>,
        targets: &mut Vec<f32>,
    ) {
        let start = x.len();
        self.inner.gather_epoch(indices, epoch, x, classes, targets);
        let per = self.planes * self.height * self.width;
        for (sample, &i) in x[start..].chunks_exact_mut(per).zip(indices) {
            self.augment_sample(sample, i, epoch);
        }
    }
}
