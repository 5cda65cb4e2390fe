//! The seed tutorial's Example 2: PReLU with a learnable slope per unit. The tutorial passes 32
//! labels with a batch of 64; lamina rejects that batch with a clear error and changes nothing,
//! then trains correctly and shows how the slopes move away from their initial 0.25.
//!
//! Run: `cargo run --release --example seed_prelu`
use lamina::prelude::*;
include!("seed_data.rs");

fn slopes(t: &ModelTrainer) -> Result<Vec<f64>> {
    Ok(t.state("prelu1.weight")?.to_f64())
}

fn main() -> Result<()> {
    let model = ModelBuilder::new(&[64, 20])
        .dense(16, true, "dense1")
        .prelu("prelu1")
        .dense(3, true, "output")
        .compile()?;
    println!("{}", model.summary());
    let mut trainer = ModelTrainer::new(
        &model,
        TrainerConfig {
            batch_size: 64,
            learning_rate: 1e-2,
            device: Device::Cpu,
            ..Default::default()
        },
    )?;
    let (x, y) = synthetic(64 * 20, 20, 3, 2);

    // The tutorial's mistake: a batch of 64 samples with only 32 labels.
    match trainer.train_batch(&x[..64 * 20], &[64, 20], &y[..32], &[32]) {
        Err(e) => println!("rejected as it should be: {e}\n"),
        Ok(_) => unreachable!("a mislabelled batch must not train"),
    }
    let before = slopes(&trainer)?;
    println!(
        "PReLU slopes before training: {:?}\n",
        before.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>()
    );
    print_header();
    for epoch in 1..=8 {
        let (mut loss, mut acc) = (0.0, 0.0);
        for b in 0..20 {
            let r = trainer.train_batch(
                &x[b * 64 * 20..(b + 1) * 64 * 20],
                &[64, 20],
                &y[b * 64..(b + 1) * 64],
                &[64],
            )?;
            loss += r.loss / 20.0;
            acc += r.accuracy.unwrap_or(0.0) / 20.0;
        }
        print_row(epoch, loss, acc);
    }
    let after = slopes(&trainer)?;
    println!(
        "\nPReLU slopes after training:  {:?}",
        after.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>()
    );
    let moved = after
        .iter()
        .zip(&before)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!("largest move away from 0.25: {moved:.3}");
    Ok(())
}
