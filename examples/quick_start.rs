//! The README's quick start (kept compiling here). Run: `cargo run --release --example quick_start`
use lamina::prelude::*;

fn main() -> Result<()> {
    let model = ModelBuilder::new(&[32, 784]) // batch axis first
        .dense(256, true, "dense1")
        .swish("swish1")
        .dense(128, true, "dense2")
        .swish("swish2")
        .dense(10, true, "output")
        .softmax(-1, "softmax")
        .compile()?; // shapes and parameters inferred
    println!("{}", model.summary()); // 235,146 parameters

    let config = TrainerConfig {
        batch_size: 32,
        learning_rate: 1e-3,
        optimizer: OptimizerType::Adam,
        loss: LossFunction::SparseCrossEntropy,
        device: Device::Cpu,
        ..Default::default()
    };
    let mut trainer = ModelTrainer::new(&model, config)?; // compiles the whole step
    let x = vec![0.1f32; 32 * 784];
    let labels: Vec<i32> = (0..32).map(|i| i % 10).collect();
    let r = trainer.train_batch(&x, &[32, 784], &labels, &[32])?;
    println!("loss {} accuracy {:?}", r.loss, r.accuracy);
    let p = trainer.predict(&x[..784], &[1, 784])?; // any batch size
    println!("probabilities of the first sample: {:?}", p.values);
    let dir = std::env::temp_dir().join("lamina-quick-start");
    trainer.save_checkpoint(dir.join("ckpt.safetensors"))?;
    Ok(())
}
