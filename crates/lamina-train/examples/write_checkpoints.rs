//! Writes the lamina checkpoints that `tools/golden/state_dict_check.py` loads into the
//! equivalent `torch.nn` modules with `load_state_dict(strict=True)`:
//!
//! ```text
//! cargo run -p lamina-train --example write_checkpoints -- <dir>
//! python3 tools/golden/state_dict_check.py <dir> <out>
//! ```
//!
//! For each model (zoo `seed_mlp`, `bn_mlp`, `readme_cnn`, and `examples/digits_cnn.json`) it
//! trains three Adam steps on random data (so BatchNorm statistics, `num_batches_tracked` and the
//! optimizer state are not at their initial values) and writes `<name>.safetensors` (the
//! checkpoint) and `<name>.io.safetensors` (`x`, an input batch of 4, and `y`, lamina's outputs
//! in evaluation mode). It also writes `tiny_dense.safetensors` and `tiny_bn.safetensors`, small
//! checkpoints that seed the `checkpoint_load` fuzz target.

use lamina_core::Result;
use lamina_nn::{LayerRegistry, ModelBuilder, ModelSpec};
use lamina_train::{Device, ModelTrainer, TrainerConfig};
use std::path::Path;

/// Deterministic values in [-1, 1) (a linear congruential generator; no dependency needed).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

fn write(dir: &Path, name: &str, model: &ModelSpec, steps: usize) -> Result<()> {
    let batch = 4;
    let mut t = ModelTrainer::new(
        model,
        TrainerConfig {
            batch_size: batch,
            device: Device::Cpu,
            ..Default::default()
        },
    )?;
    let mut shape = model.input_shape.clone();
    shape[0] = batch;
    let n: usize = shape.iter().product();
    let classes = *model.output_shape.last().unwrap_or(&1) as i32;
    for k in 0..steps {
        let x = values(n, 100 + k as u64);
        let y: Vec<i32> = (0..batch as i32)
            .map(|i| (i * 3 + k as i32) % classes)
            .collect();
        t.train_batch(&x, &shape, &y, &[batch])?;
    }
    t.save_checkpoint(dir.join(format!("{name}.safetensors")))?;
    let x = values(n, 7);
    let p = t.predict(&x, &shape)?;
    let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let yb: Vec<u8> = p.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    fn view<'a>(b: &'a [u8], s: &[usize]) -> Result<safetensors::tensor::TensorView<'a>> {
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.to_vec(), b)
            .map_err(|e| lamina_core::Error::Io(e.to_string()))
    }
    let io = vec![("x", view(&xb, &shape)?), ("y", view(&yb, &p.shape)?)];
    let bytes = safetensors::tensor::serialize(io, &None)
        .map_err(|e| lamina_core::Error::Io(e.to_string()))?;
    lamina_train::checkpoint::write_atomic(&dir.join(format!("{name}.io.safetensors")), &bytes)?;
    println!(
        "{name}: {} steps, {} batches tracked, output {:?}",
        t.steps(),
        t.batches_tracked(),
        p.shape
    );
    Ok(())
}

fn main() -> Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "state_dict_checkpoints".into());
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir)
        .map_err(|e| lamina_core::Error::Io(format!("{}: {e}", dir.display())))?;
    for name in ["seed_mlp", "bn_mlp", "readme_cnn"] {
        write(dir, name, &lamina_nn::zoo::model(name, true)?, 3)?;
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/digits_cnn.json"
    );
    let text = std::fs::read_to_string(path)
        .map_err(|e| lamina_core::Error::Io(format!("{path}: {e}")))?;
    write(
        dir,
        "digits_cnn",
        &ModelSpec::from_json(&text, &LayerRegistry::new())?,
        3,
    )?;
    // fuzz seeds: a few hundred bytes each
    let tiny = ModelBuilder::new(&[2, 3]).dense(2, true, "d").compile()?;
    write(dir, "tiny_dense", &tiny, 1)?;
    let tiny_bn = ModelBuilder::new(&[2, 3])
        .dense(2, true, "d")
        .batch_norm(1e-5, 0.1, true, "bn")
        .compile()?;
    write(dir, "tiny_bn", &tiny_bn, 1)
}
