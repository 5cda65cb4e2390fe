//! `lamina bench`: the benchmark models of DESIGN.md §5, timed step by step. Prints the rows
//! `../shared/bench/side_by_side.py` reads: `{"model", "mode", "us_per_step", …}`.

use lamina_core::{Error, Result};
use lamina_nn::{ModelBuilder, ModelSpec};
use lamina_train::{Device, ModelTrainer, TrainerConfig};
use std::time::Instant;

/// The benchmark models by name.
pub const MODELS: [&str; 4] = ["seed_mlp", "bn_mlp", "readme_cnn", "wide_mlp"];

/// One of DESIGN.md §5's models with its batch size (Adam, sparse cross-entropy).
pub fn model(name: &str) -> Result<ModelSpec> {
    match name {
        // 784-256-swish-128-swish-10, batch 32 (the seed example)
        "seed_mlp" => ModelBuilder::new(&[32, 784])
            .dense(256, true, "dense1")
            .swish("swish1")
            .dense(128, true, "dense2")
            .swish("swish2")
            .dense(10, true, "output")
            .compile(),
        // 64-dense64-relu-dropout0.2-dense128-leaky0.01-batchnorm-dense64-elu-dense10, batch 32
        "bn_mlp" => ModelBuilder::new(&[32, 64])
            .dense(64, true, "dense1")
            .relu("relu1")
            .dropout(0.2, "drop")
            .dense(128, true, "dense2")
            .leaky_relu(0.01, "leaky")
            .batch_norm(1e-5, 0.1, true, "bn")
            .dense(64, true, "dense3")
            .elu(1.0, "elu")
            .dense(10, true, "output")
            .compile(),
        // 3×32×32: conv32 3/1/1, conv32 3/2/1, conv64 3/1/1, conv64 3/2/1, dense128, dropout0.5, dense10; batch 64
        "readme_cnn" => ModelBuilder::new(&[64, 3, 32, 32])
            .conv2d(32, 3, 1, 1, true, "conv1")
            .relu("relu1")
            .conv2d(32, 3, 2, 1, true, "conv2")
            .relu("relu2")
            .conv2d(64, 3, 1, 1, true, "conv3")
            .relu("relu3")
            .conv2d(64, 3, 2, 1, true, "conv4")
            .relu("relu4")
            .flatten("flatten")
            .dense(128, true, "dense1")
            .relu("relu5")
            .dropout(0.5, "drop")
            .dense(10, true, "output")
            .compile(),
        // 1024-4096-relu-4096-relu-4096-relu-10, batch 2048 (compute-bound)
        "wide_mlp" => ModelBuilder::new(&[2048, 1024])
            .dense(4096, true, "dense1")
            .relu("relu1")
            .dense(4096, true, "dense2")
            .relu("relu2")
            .dense(4096, true, "dense3")
            .relu("relu3")
            .dense(10, true, "output")
            .compile(),
        other => Err(Error::Spec(format!(
            "unknown benchmark model '{other}' (known: {})",
            MODELS.join(", ")
        ))),
    }
}

/// Median microseconds per training step of `name` on `device`, after `warmup` steps.
pub fn run(name: &str, device: Device, steps: usize, warmup: usize) -> Result<serde_json::Value> {
    let spec = model(name)?;
    let batch = spec.input_shape[0];
    let per: usize = spec.input_shape[1..].iter().product();
    let start = Instant::now();
    let mut t = ModelTrainer::new(
        &spec,
        TrainerConfig {
            batch_size: batch,
            device,
            ..Default::default()
        },
    )?;
    // deterministic pseudo-random inputs in [-1, 1) and labels
    let mut s = 0x1234_5678_u64;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let x: Vec<f32> = (0..batch * per).map(|_| next()).collect();
    let y: Vec<i32> = (0..batch).map(|i| (i * 7 % 10) as i32).collect();
    let mut shape = vec![batch];
    shape.extend_from_slice(&spec.input_shape[1..]);
    let mut loss = t.train_batch(&x, &shape, &y, &[batch])?.loss;
    let first_step_ms = start.elapsed().as_secs_f64() * 1e3;
    for _ in 0..warmup {
        t.train_batch(&x, &shape, &y, &[batch])?;
    }
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t0 = Instant::now();
        loss = t.train_batch(&x, &shape, &y, &[batch])?.loss;
        times.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    let mode = match t.device() {
        Device::Cuda(_) => "cuda",
        _ => "cpu",
    };
    Ok(serde_json::json!({
        "model": name, "mode": mode, "us_per_step": (median * 10.0).round() / 10.0, "steps": steps,
        "kernels": t.kernel_count(batch), "first_step_ms": (first_step_ms * 10.0).round() / 10.0, "loss": loss,
        "threads": lamina_cpu::CpuBackend::new().threads(),
    }))
}
