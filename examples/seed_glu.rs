//! The seed tutorial's Example 3: a gated linear unit, here a real one (projection to 2·units,
//! then a ⊙ σ(b)), trained on a learnable synthetic problem.
//!
//! Run: `cargo run --release --example seed_glu`
use lamina::prelude::*;
include!("seed_data.rs");

fn main() -> Result<()> {
    let model = ModelBuilder::new(&[32, 40])
        .glu(32, "glu1")
        .dense(16, true, "dense1")
        .swish("swish1")
        .dense(4, true, "output")
        .compile()?;
    println!("{}", model.summary());
    let mut trainer = ModelTrainer::new(
        &model,
        TrainerConfig {
            batch_size: 32,
            learning_rate: 3e-3,
            device: Device::Cpu,
            ..Default::default()
        },
    )?;
    let (x, y) = synthetic(32 * 30, 40, 4, 3);
    print_header();
    for epoch in 1..=8 {
        let (mut loss, mut acc) = (0.0, 0.0);
        for b in 0..30 {
            let r = trainer.train_batch(
                &x[b * 32 * 40..(b + 1) * 32 * 40],
                &[32, 40],
                &y[b * 32..(b + 1) * 32],
                &[32],
            )?;
            loss += r.loss / 30.0;
            acc += r.accuracy.unwrap_or(0.0) / 30.0;
        }
        print_row(epoch, loss, acc);
    }
    Ok(())
}
