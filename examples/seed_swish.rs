//! The seed tutorial's Example 1: an MLP with Swish activations (784-256-128-10, batch 32), here
//! with a real Swish (x·σ(x)) and trained on a learnable synthetic problem.
//!
//! Run: `cargo run --release --example seed_swish`
use lamina::prelude::*;
include!("seed_data.rs");

fn main() -> Result<()> {
    let model = ModelBuilder::new(&[32, 784])
        .dense(256, true, "dense1")
        .swish("swish1")
        .dense(128, true, "dense2")
        .swish("swish2")
        .dense(10, true, "output")
        .softmax(-1, "softmax")
        .compile()?;
    println!("{}", model.summary());
    let config = TrainerConfig {
        batch_size: 32,
        learning_rate: 1e-3,
        optimizer: OptimizerType::Adam,
        device: Device::Cpu,
        ..Default::default()
    };
    let mut trainer = ModelTrainer::new(&model, config)?;
    let (x, y) = synthetic(32 * 40, 784, 10, 1);
    print_header();
    for epoch in 1..=5 {
        let (mut loss, mut acc) = (0.0, 0.0);
        for b in 0..40 {
            let r = trainer.train_batch(
                &x[b * 32 * 784..(b + 1) * 32 * 784],
                &[32, 784],
                &y[b * 32..(b + 1) * 32],
                &[32],
            )?;
            loss += r.loss / 40.0;
            acc += r.accuracy.unwrap_or(0.0) / 40.0;
        }
        print_row(epoch, loss, acc);
    }
    Ok(())
}
