//! `DataLoader`: batches of a data set in a seeded per-epoch order, gathered ahead of the consumer
//! on worker threads so loading overlaps compute.
//!
//! Threads: `workers` scoped threads share the data set by reference (hence `Dataset: Sync`).
//! Worker `w` gathers batches `w, w + workers, …` and sends each into its own bounded
//! `sync_channel`; the consumer takes batch `k` from channel `k % workers`, so batches come out in
//! order and are identical for any number of workers. At most `prefetch` finished batches (rounded
//! up to a multiple of `workers`) wait in the channels, plus one being gathered per worker. The
//! threads live for one epoch inside [`DataLoader::epoch`]; dropping the iterator early stops
//! them at their next send.

use crate::{shuffled, Dataset, LabelData, Labels};
use lamina_core::{Error, Result};
use std::sync::mpsc::{sync_channel, Receiver};

/// How a [`DataLoader`] batches and prefetches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderOptions {
    /// Samples per batch.
    pub batch_size: usize,
    /// Reshuffle every epoch with [`shuffled`]`(len, seed, epoch)`; otherwise `0..len` in order.
    pub shuffle: bool,
    pub seed: u64,
    /// Drop the last partial batch; otherwise it is a smaller batch of its own.
    pub drop_last: bool,
    /// Threads that gather batches; 0 gathers on the consumer's thread, with no overlap.
    pub workers: usize,
    /// Finished batches that may wait for the consumer.
    pub prefetch: usize,
    /// Gather with [`Dataset::gather_epoch`] (training draws, augmented where the data set
    /// augments) rather than [`Dataset::gather`].
    pub augment: bool,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            batch_size: 32,
            shuffle: true,
            seed: 0,
            drop_last: false,
            workers: 1,
            prefetch: 2,
            augment: true,
        }
    }
}

/// One batch, owned.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Position of the batch in its epoch.
    pub index: usize,
    /// Indices of its samples in the data set, in batch order.
    pub indices: Vec<usize>,
    /// The samples, one after another.
    pub x: Vec<f32>,
    /// `[batch, ..sample_shape]`.
    pub x_shape: Vec<usize>,
    /// Class indices, or targets with the per-sample target shape.
    pub labels: LabelData,
    /// `[batch, ..target_shape]`, as the trainer takes it.
    pub label_shape: Vec<usize>,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    /// True for a batch without samples (never produced by the loader).
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
    /// The labels as `train_batch` and `evaluate` take them.
    pub fn labels(&self) -> Labels<'_> {
        self.labels.as_labels()
    }
}

/// Iterates the batches of a data set, epoch by epoch.
///
/// ```
/// use lamina_data::{DataLoader, InMemoryDataset, LabelData, LoaderOptions};
/// let data = InMemoryDataset::new((0..10).map(|v| v as f32).collect(), &[1], LabelData::Classes(vec![0; 10])).unwrap();
/// let loader = DataLoader::new(&data, LoaderOptions { batch_size: 4, ..Default::default() }).unwrap();
/// let sizes = loader.epoch(1, |batches| batches.map(|b| b.len()).collect::<Vec<_>>());
/// assert_eq!(sizes, [4, 4, 2]);
/// ```
pub struct DataLoader<'a, D: Dataset + ?Sized> {
    dataset: &'a D,
    options: LoaderOptions,
}

impl<'a, D: Dataset + ?Sized> DataLoader<'a, D> {
    /// A loader over `dataset`; a batch size of 0 is an error.
    pub fn new(dataset: &'a D, options: LoaderOptions) -> Result<Self> {
        if options.batch_size == 0 {
            return Err(Error::Spec(
                "DataLoader: batch_size must be at least 1".into(),
            ));
        }
        Ok(DataLoader { dataset, options })
    }

    /// The options.
    pub fn options(&self) -> &LoaderOptions {
        &self.options
    }

    /// The sample order of `epoch`.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let n = self.dataset.len();
        if self.options.shuffle {
            shuffled(n, self.options.seed, epoch)
        } else {
            (0..n).collect()
        }
    }

    /// Number of batches in an epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, bs) = (self.dataset.len(), self.options.batch_size);
        if self.options.drop_last {
            n / bs
        } else {
            n.div_ceil(bs)
        }
    }

    /// Runs `consume` on the batches of `epoch` (in [`order`](Self::order)) while workers gather
    /// ahead; returns what `consume` returns once the workers have stopped.
    pub fn epoch<R>(&self, epoch: usize, consume: impl FnOnce(&mut Batches<'_>) -> R) -> R {
        let order = self.order(epoch);
        self.run(&order, epoch, consume)
    }

    /// Like [`epoch`](Self::epoch) with a caller's sample order (which may repeat or omit
    /// samples). An index outside the data set is an error.
    pub fn with_order<R>(
        &self,
        order: &[usize],
        epoch: usize,
        consume: impl FnOnce(&mut Batches<'_>) -> R,
    ) -> Result<R> {
        let n = self.dataset.len();
        if let Some(bad) = order.iter().find(|&&i| i >= n) {
            return Err(Error::Input(format!(
                "DataLoader: sample index {bad} is outside the data set of {n}"
            )));
        }
        Ok(self.run(order, epoch, consume))
    }

    /// Every batch of `epoch`, collected.
    pub fn collect_epoch(&self, epoch: usize) -> Vec<Batch> {
        self.epoch(epoch, |batches| batches.collect())
    }

    /// Gathers one batch (on whichever thread calls it).
    fn make_batch(&self, index: usize, indices: &[usize], epoch: usize) -> Batch {
        let d = self.dataset;
        let per: usize = d.sample_shape().iter().product();
        let (mut x, mut classes, mut targets) = (
            Vec::with_capacity(indices.len() * per),
            Vec::new(),
            Vec::new(),
        );
        if self.options.augment {
            d.gather_epoch(indices, epoch, &mut x, &mut classes, &mut targets);
        } else {
            d.gather(indices, &mut x, &mut classes, &mut targets);
        }
        let mut x_shape = vec![indices.len()];
        x_shape.extend_from_slice(d.sample_shape());
        let mut label_shape = vec![indices.len()];
        label_shape.extend_from_slice(d.target_shape());
        let labels = if d.has_classes() {
            LabelData::Classes(classes)
        } else {
            LabelData::Targets {
                values: targets,
                shape: d.target_shape().to_vec(),
            }
        };
        Batch {
            index,
            indices: indices.to_vec(),
            x,
            x_shape,
            labels,
            label_shape,
        }
    }

    fn run<R>(
        &self,
        order: &[usize],
        epoch: usize,
        consume: impl FnOnce(&mut Batches<'_>) -> R,
    ) -> R {
        let bs = self.options.batch_size;
        let chunks: Vec<&[usize]> = order
            .chunks(bs)
            .filter(|c| !(self.options.drop_last && c.len() < bs))
            .collect();
        let workers = self.options.workers.min(chunks.len());
        if workers == 0 {
            let chunks = &chunks;
            let mut batches = Batches {
                source: Source::Inline(Box::new(move |k| self.make_batch(k, chunks[k], epoch))),
                next: 0,
                total: chunks.len(),
            };
            return consume(&mut batches);
        }
        let per_channel = self.options.prefetch.div_ceil(workers);
        std::thread::scope(|scope| {
            let chunks = &chunks;
            let mut receivers = Vec::with_capacity(workers);
            for w in 0..workers {
                let (tx, rx) = sync_channel(per_channel);
                scope.spawn(move || {
                    for k in (w..chunks.len()).step_by(workers) {
                        // A failed send means the consumer is done with the epoch.
                        if tx.send(self.make_batch(k, chunks[k], epoch)).is_err() {
                            return;
                        }
                    }
                });
                receivers.push(rx);
            }
            let mut batches = Batches {
                source: Source::Workers(receivers),
                next: 0,
                total: chunks.len(),
            };
            let out = consume(&mut batches);
            // Close the channels before the scope joins the workers, so none blocks on a send.
            drop(batches);
            out
        })
    }
}

enum Source<'s> {
    Inline(Box<dyn Fn(usize) -> Batch + 's>),
    Workers(Vec<Receiver<Batch>>),
}

/// The batches of one epoch, in order.
pub struct Batches<'s> {
    source: Source<'s>,
    next: usize,
    total: usize,
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.total {
            return None;
        }
        let k = self.next;
        let batch = match &self.source {
            Source::Inline(make) => make(k),
            // A closed channel means the worker panicked; the scope re-raises that panic.
            Source::Workers(rx) => rx[k % rx.len()].recv().ok()?,
        };
        self.next += 1;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.total - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches<'_> {}
