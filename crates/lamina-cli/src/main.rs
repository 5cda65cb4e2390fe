//! `lamina`: train, evaluate, predict with, summarise, benchmark, export and import models described in JSON or
//! TOML spec files, on bundled or user data sets. Errors print one clear message and exit with a
//! non-zero code; nothing panics on bad input.

mod bench;
mod report;
mod run;
mod spec;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "lamina",
    version,
    about = "Train neural networks compiled into one graph per step."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a spec file; writes a run folder (checkpoint, history, plots, report).
    Train {
        /// Spec file (.json or .toml): model layers plus "data" and "train" sections.
        spec: PathBuf,
        /// Data set: a bundled name (digits, breast_cancer, diabetes) or a CSV file.
        #[arg(long)]
        data: Option<String>,
        #[arg(long)]
        epochs: Option<usize>,
        #[arg(long)]
        batch_size: Option<usize>,
        #[arg(long)]
        lr: Option<f64>,
        /// sgd, adam, adamw, rmsprop, adagrad, adadelta, nadam, lbfgs
        #[arg(long)]
        optimizer: Option<String>,
        /// cpu, cuda, cuda:N, auto
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        seed: Option<u64>,
        /// Run folder (default runs/<spec name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Save a checkpoint every N epochs in <run folder>/checkpoints/epoch-NNNN.safetensors
        /// (overrides the spec's train.checkpoint.every).
        #[arg(long, value_name = "N")]
        checkpoint_every: Option<usize>,
        /// Keep only the newest K periodic checkpoints (saved every epoch unless
        /// --checkpoint-every says otherwise).
        #[arg(long, value_name = "K")]
        keep_last: Option<usize>,
        /// Also keep best-epoch-NNNN.safetensors, the best epoch by this history metric
        /// (val_loss, val_accuracy, val_mse, train_loss, train_accuracy, train_mse).
        #[arg(long, value_name = "METRIC")]
        keep_best: Option<String>,
        /// min or max: which values of --keep-best are better (default: max for accuracies,
        /// min otherwise).
        #[arg(long)]
        best_goal: Option<String>,
        /// Print one JSON line of final metrics (and no progress bars).
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a checkpoint on the test split of its data set (or another data set).
    Eval {
        checkpoint: PathBuf,
        #[arg(long)]
        data: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Predict with a checkpoint: CSV rows of features, an image or a folder of images in; CSV or
    /// JSON out.
    Predict {
        checkpoint: PathBuf,
        /// CSV file of samples (one row per sample, features only; a header row is skipped), an
        /// image file (PNG, JPEG, BMP) or a folder of images.
        input: PathBuf,
        /// Output file (.csv or .json); standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Export a checkpoint's model (evaluation mode) as ONNX (opset 17).
    ExportOnnx {
        checkpoint: PathBuf,
        output: PathBuf,
        /// Batch size baked into the graph (default: the spec's).
        #[arg(long)]
        batch: Option<usize>,
    },
    /// Import an ONNX model (one lamina exported, or a PyTorch-style chain of built-in layers) as
    /// a lamina checkpoint that predict, eval and export-onnx accept.
    ImportOnnx {
        model: PathBuf,
        /// Checkpoint file to write (.safetensors).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print a spec's Keras-style summary table.
    Summary { spec: PathBuf },
    /// Time the benchmark models of DESIGN.md §5 (median µs per training step).
    Bench {
        /// seed_mlp, bn_mlp, readme_cnn, wide_mlp, or all
        #[arg(long, default_value = "all")]
        model: String,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Steps timed at least (in blocks of 10)
        #[arg(long, default_value_t = 50)]
        steps: usize,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// Seconds of timed steps at least: more blocks are timed until they add up to this
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train {
            spec,
            data,
            epochs,
            batch_size,
            lr,
            optimizer,
            device,
            seed,
            out,
            checkpoint_every,
            keep_last,
            keep_best,
            best_goal,
            json,
        } => run::train(run::TrainArgs {
            spec,
            data,
            epochs,
            batch_size,
            lr,
            optimizer,
            device,
            seed,
            out,
            checkpoint_every,
            keep_last,
            keep_best,
            best_goal,
            json,
        }),
        Command::Eval {
            checkpoint,
            data,
            json,
        } => run::eval(&checkpoint, data.as_deref(), json),
        Command::Predict {
            checkpoint,
            input,
            out,
            json,
        } => run::predict(&checkpoint, &input, out.as_deref(), json),
        Command::ExportOnnx {
            checkpoint,
            output,
            batch,
        } => export_onnx(&checkpoint, &output, batch),
        Command::ImportOnnx { model, output } => import_onnx(&model, &output),
        Command::Summary { spec } => spec::load(&spec).map(|s| print!("{}", s.model.summary())),
        Command::Bench {
            model,
            device,
            steps,
            warmup,
            seconds,
            json,
        } => bench_command(&model, &device, (steps, warmup, seconds), json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn export_onnx(
    checkpoint: &std::path::Path,
    output: &std::path::Path,
    batch: Option<usize>,
) -> lamina_core::Result<()> {
    let file = lamina_train::CheckpointFile::read(checkpoint, &lamina_nn::LayerRegistry::new())?;
    let params: lamina_core::StateMap<lamina_core::HostTensor> = file
        .spec
        .params()
        .map(|p| {
            file.tensors
                .get(&p.path)
                .cloned()
                .map(|t| (p.path.clone(), t))
                .ok_or_else(|| {
                    lamina_core::Error::Io(format!(
                        "{}: tensor \"{}\" is missing",
                        checkpoint.display(),
                        p.path
                    ))
                })
        })
        .collect::<lamina_core::Result<_>>()?;
    lamina_onnx::export_to_file(output, &file.spec, &params, batch)?;
    println!("wrote {}", output.display());
    Ok(())
}

/// The imported layers and weights in a fresh trainer (default configuration: Adam, sparse
/// cross-entropy, CPU), saved as a checkpoint.
fn import_onnx(model: &std::path::Path, output: &std::path::Path) -> lamina_core::Result<()> {
    let m = lamina_onnx::import_file(model)?;
    let config = lamina_train::TrainerConfig {
        device: lamina_train::Device::Cpu,
        ..Default::default()
    };
    let mut trainer = lamina_train::ModelTrainer::new(&m.spec, config)?;
    for (path, value) in &m.weights {
        trainer.set_state(path, value)?;
    }
    trainer.save_checkpoint(output)?;
    print!("{}", m.spec.summary());
    println!("wrote {}", output.display());
    Ok(())
}

fn bench_command(
    model: &str,
    device: &str,
    (steps, warmup, seconds): (usize, usize, f64),
    json: bool,
) -> lamina_core::Result<()> {
    if !(seconds >= 0.0 && seconds.is_finite()) {
        return Err(lamina_core::Error::Input(format!(
            "--seconds must be a finite number of seconds ≥ 0, not {seconds}"
        )));
    }
    let device = lamina_train::device_from_str(device)?;
    let names: Vec<&str> = if model == "all" {
        lamina_nn::zoo::MODELS.to_vec()
    } else {
        vec![model]
    };
    for name in names {
        let row = bench::run(name, device, steps, warmup, seconds)?;
        if json {
            println!("{row}");
        } else {
            println!(
                "{name:<12} {:>10.1} µs/step  ({} kernels, first step {} ms)",
                row["us_per_step"].as_f64().unwrap_or(f64::NAN),
                row["kernels"],
                row["first_step_ms"]
            );
        }
    }
    Ok(())
}
