//! Prefetching overlaps loading with compute: a data set whose `gather` takes 2 ms per batch (a
//! sleep, standing for disk or decoding) and a consumer that spins 2 ms per batch (standing for the
//! training step). Criterion reports the time per batch: about 2 ms with one prefetching worker,
//! about 4 ms with loading on the consumer's thread (`workers: 0`).

use criterion::{criterion_group, criterion_main, Criterion};
use lamina_data::{DataLoader, Dataset, LoaderOptions};
use std::time::{Duration, Instant};

const BATCH: usize = 16;
const FEATURES: usize = 8;
const LOAD: Duration = Duration::from_millis(2);
const STEP: Duration = Duration::from_millis(2);

/// `len` samples whose every `gather` call (one per batch) sleeps `LOAD`.
struct SlowDataset {
    len: usize,
    shape: [usize; 1],
}

impl Dataset for SlowDataset {
    fn len(&self) -> usize {
        self.len
    }
    fn sample_shape(&self) -> &[usize] {
        &self.shape
    }
    fn target_shape(&self) -> &[usize] {
        &[]
    }
    fn has_classes(&self) -> bool {
        true
    }
    fn gather(
        &self,
        indices: &[usize],
        x: &mut Vec<f32>,
        classes: &mut Vec<i32>,
        _targets: &mut Vec<f32>,
    ) {
        std::thread::sleep(LOAD);
        for &i in indices {
            x.extend(std::iter::repeat_n(i as f32, FEATURES));
            classes.push(0);
        }
    }
}

/// Busy compute for `d` (a sleep would not occupy the consumer's core).
fn spin(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Time to consume `batches` batches (one epoch) with `workers` prefetching threads.
fn run(batches: usize, workers: usize) -> Duration {
    let data = SlowDataset {
        len: batches * BATCH,
        shape: [FEATURES],
    };
    let options = LoaderOptions {
        batch_size: BATCH,
        workers,
        prefetch: 2,
        ..Default::default()
    };
    let Ok(loader) = DataLoader::new(&data, options) else {
        return Duration::ZERO;
    };
    let start = Instant::now();
    loader.epoch(1, |epoch| {
        for batch in epoch {
            std::hint::black_box(&batch.x);
            spin(STEP);
        }
    });
    start.elapsed()
}

fn prefetch(c: &mut Criterion) {
    // A plain summary first, for logs that do not keep criterion's report.
    let n = 100;
    let with = run(n, 1).as_secs_f64() * 1e3 / n as f64;
    let without = run(n, 0).as_secs_f64() * 1e3 / n as f64;
    println!("prefetch summary ({n} batches, 2 ms load + 2 ms step): workers=1 prefetch=2: {with:.2} ms/batch; workers=0: {without:.2} ms/batch");

    let mut group = c.benchmark_group("loader_ms_per_batch");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    group.bench_function("workers=1 prefetch=2", |b| {
        b.iter_custom(|iters| run(iters as usize, 1))
    });
    group.bench_function("workers=0 (no prefetch)", |b| {
        b.iter_custom(|iters| run(iters as usize, 0))
    });
    group.finish();
}

criterion_group!(benches, prefetch);
criterion_main!(benches);
