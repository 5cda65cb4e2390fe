//! The benchmark models of DESIGN.md §5, shared by `lamina bench`, the PyTorch trajectory tests
//! and the anchors in `../shared/bench/` (which define the same four models).

use crate::{ModelBuilder, ModelSpec};
use lamina_core::{Error, Result};

/// The benchmark models by name.
pub const MODELS: [&str; 4] = ["seed_mlp", "bn_mlp", "readme_cnn", "wide_mlp"];

/// One of DESIGN.md §5's models with its batch size as the input's batch axis (trained with Adam
/// and sparse cross-entropy); `dropout: false` sets the dropout rates to 0.
pub fn model(name: &str, dropout: bool) -> Result<ModelSpec> {
    // the trajectory fixtures turn dropout off (rate 0); the benchmarks keep it
    let rate = |r: f64| if dropout { r } else { 0.0 };
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
            .dropout(rate(0.2), "drop")
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
            .dropout(rate(0.5), "drop")
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
