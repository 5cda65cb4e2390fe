//! `lamina bench`: the benchmark models of DESIGN.md §5, timed step by step. Prints the rows
//! `../shared/bench/side_by_side.py` reads: `{"model", "mode", "us_per_step", …}`.

use lamina_core::{Error, Result};
use lamina_train::{Device, ModelTrainer, TrainerConfig};
use std::time::Instant;

/// Median microseconds per training step of `name` on `device` over blocks of 10 steps: at
/// least `steps` steps and at least `min_seconds` of timed blocks (a median over a few seconds
/// is not moved by a burst of a second or so on a shared machine, which takes a 50-step window
/// of a small model whole), after `warmup` steps run on the final kernels; also the time to the end of the first
/// step, the time until the optimised kernels were in (`final_kernels_ms`: CUDA's quick start
/// runs the first steps on quick builds) and the device memory the trainer holds
/// (`device_bytes`, 0 on the CPU).
pub fn run(
    name: &str,
    device: Device,
    steps: usize,
    warmup: usize,
    min_seconds: f64,
) -> Result<serde_json::Value> {
    let spec = lamina_nn::zoo::model(name, true)?;
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
    // the steady state runs the optimised kernels: on CUDA the first steps may run quick builds
    // while those compile in the background (`finish_compiling`)
    t.finish_compiling()?;
    let final_kernels_ms = start.elapsed().as_secs_f64() * 1e3;
    for _ in 0..warmup {
        t.train_batch(&x, &shape, &y, &[batch])?;
    }
    // Steady state, as a training loop runs: each step is submitted before the previous step's
    // result (its loss) is read, so the host checks and copies the next batch while the device
    // runs; timed in blocks of BLOCK steps like torch_anchor.py, the median over blocks. Every
    // step's loss is read (torch_anchor.py reads one per block).
    const BLOCK: usize = 10;
    let mut times = Vec::with_capacity(steps.div_ceil(BLOCK));
    // the host's share: time spent in `submit_batch` (checking, copying, enqueueing)
    let mut host = Vec::with_capacity(steps.div_ceil(BLOCK));
    t.submit_batch(&x, &shape, &y, &[batch])?;
    let (min_blocks, timed) = (steps.div_ceil(BLOCK).max(1), Instant::now());
    // a cap on the blocks, should a step take next to nothing
    const MAX_BLOCKS: usize = 100_000;
    while times.len() < min_blocks
        || (timed.elapsed().as_secs_f64() < min_seconds && times.len() < MAX_BLOCKS)
    {
        let t0 = Instant::now();
        let mut in_submit = 0.0;
        for _ in 0..BLOCK {
            let s0 = Instant::now();
            t.submit_batch(&x, &shape, &y, &[batch])?;
            in_submit += s0.elapsed().as_secs_f64();
            loss = match t.next_result() {
                Some(r) => r?.loss,
                None => return Err(Error::Input("bench: no step was pending".into())),
            };
        }
        times.push(t0.elapsed().as_secs_f64() * 1e6 / BLOCK as f64);
        host.push(in_submit * 1e6 / BLOCK as f64);
    }
    t.wait_results()?;
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    host.sort_by(f64::total_cmp);
    let host_median = host.get(host.len() / 2).copied().unwrap_or(f64::NAN);
    let mode = match t.device() {
        Device::Cuda(_) => "cuda",
        _ => "cpu",
    };
    Ok(serde_json::json!({
        "model": name, "mode": mode, "us_per_step": (median * 10.0).round() / 10.0,
        "steps": times.len() * BLOCK, "timed_seconds": (timed.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        "kernels": t.kernel_count(batch), "first_step_ms": (first_step_ms * 10.0).round() / 10.0,
        "final_kernels_ms": (final_kernels_ms * 10.0).round() / 10.0, "loss": loss,
        "threads": lamina_cpu::CpuBackend::new().threads(), "device_bytes": t.device_bytes(),
        "host_us_per_step": (host_median * 10.0).round() / 10.0,
    }))
}
