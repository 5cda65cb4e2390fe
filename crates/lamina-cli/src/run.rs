//! `lamina train`, `eval` and `predict`.

use crate::report::{write_report, RunReport};
use crate::spec::{self, DataSection};
use indicatif::{ProgressBar, ProgressStyle};
use lamina_core::{Error, Result};
use lamina_data::{Dataset, InMemoryDataset, LabelData};
use lamina_nn::LayerRegistry;
use lamina_train::metrics::{roc_auc, roc_curve, Average, ConfusionMatrix, RegressionMetrics};
use lamina_train::{
    BatchResult, Callback, CheckpointPolicy, Device, EpochLog, FitControl, FitOptions, History,
    ModelCheckpoint, ModelTrainer, ProblemType,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub struct TrainArgs {
    pub spec: PathBuf,
    pub data: Option<String>,
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    pub optimizer: Option<String>,
    pub device: Option<String>,
    pub seed: Option<u64>,
    pub out: Option<PathBuf>,
    pub checkpoint_every: Option<usize>,
    pub keep_last: Option<usize>,
    pub keep_best: Option<String>,
    pub best_goal: Option<String>,
    pub json: bool,
}

/// Train / validation / test splits, scaled, with what is needed to undo target scaling.
pub struct Splits {
    pub train: InMemoryDataset,
    pub val: Option<InMemoryDataset>,
    pub test: InMemoryDataset,
    pub class_names: Option<Vec<String>>,
    /// `(mean, std)` of regression targets when they were standardised.
    pub target_scale: Option<(f64, f64)>,
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{}: {e}", path.display()))
}

/// A bundled data set by name, or a CSV file (label in the last column; relative paths are tried
/// beside the spec file, then in the working directory).
fn load_source(
    source: &str,
    spec_dir: &Path,
    problem: ProblemType,
    label_column: &lamina_data::LabelColumn,
    input_shape: &[usize],
) -> Result<(InMemoryDataset, Option<Vec<String>>)> {
    if lamina_data::BUNDLED_NAMES.contains(&source.to_ascii_lowercase().replace('-', "_").as_str())
    {
        let b = lamina_data::bundled(source)?;
        return Ok((b.dataset, b.class_names));
    }
    let beside = spec_dir.join(source);
    let path = if beside.exists() {
        beside
    } else {
        PathBuf::from(source)
    };
    if path.is_dir() {
        // an image folder: one sub-folder per class, images sized to the model's [C, H, W]
        let ds = lamina_data::read_image_folder(&path, &image_options(input_shape)?)?;
        let names = ds.class_names().map(|n| n.to_vec());
        return Ok((ds, names));
    }
    if !path.exists() {
        return Err(Error::Io(format!(
            "data set '{source}': no such file, and not a bundled name ({})",
            lamina_data::BUNDLED_NAMES.join(", ")
        )));
    }
    let label_kind = match problem {
        ProblemType::Classification => lamina_data::LabelKind::Classes,
        ProblemType::Regression => lamina_data::LabelKind::Targets,
    };
    let ds = lamina_data::read_csv(
        &path,
        &lamina_data::CsvOptions {
            label_kind,
            label_column: label_column.clone(),
            ..Default::default()
        },
    )?;
    let names = ds.class_names().map(|n| n.to_vec());
    Ok((ds, names))
}

/// Samples to predict: an image file, a folder of images (sorted by name), or CSV rows.
fn read_samples(input: &Path, per: usize, input_shape: &[usize]) -> Result<Vec<f32>> {
    let is_image = |p: &Path| {
        p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            matches!(
                e.to_ascii_lowercase().as_str(),
                "png" | "jpg" | "jpeg" | "bmp"
            )
        })
    };
    if input.is_dir() || is_image(input) {
        let options = image_options(input_shape)?;
        let files = if input.is_dir() {
            lamina_data::image_files(input)?
        } else {
            vec![input.to_path_buf()]
        };
        if files.is_empty() {
            return Err(Error::Input(format!("{}: no images", input.display())));
        }
        let mut out = Vec::new();
        for f in files {
            out.extend(lamina_data::read_image(&f, &options)?);
        }
        return Ok(out);
    }
    read_feature_rows(input, per)
}

/// Feature rows of a CSV file (a header row is skipped), each `per` values long.
fn read_feature_rows(path: &Path, per: usize) -> Result<Vec<f32>> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let parsed: std::result::Result<Vec<f32>, _> =
            fields.iter().map(|f| f.parse::<f32>()).collect();
        match parsed {
            Ok(v) if v.len() == per => out.extend(v),
            Ok(v) => {
                return Err(Error::Input(format!(
                    "{} line {}: {} values, the model takes {per}",
                    path.display(),
                    i + 1,
                    v.len()
                )))
            }
            Err(_) if i == 0 => continue, // a header
            Err(e) => {
                return Err(Error::Input(format!(
                    "{} line {}: {e}",
                    path.display(),
                    i + 1
                )))
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Input(format!(
            "{}: no rows of features",
            path.display()
        )));
    }
    Ok(out)
}

/// How images are read for a model taking `[batch, channels, height, width]` (strict channels:
/// an RGB image for a grey model is an error, not a silent conversion).
fn image_options(input_shape: &[usize]) -> Result<lamina_data::ImageFolderOptions> {
    match input_shape {
        [_, c @ (1 | 3), h, w] => Ok(lamina_data::ImageFolderOptions { size: (*h, *w), channels: *c, strict_channels: true, ..Default::default() }),
        _ => Err(Error::Spec(format!(
            "images need a model input [batch, channels (1 or 3), height, width], the model takes {}",
            lamina_core::dtype::fmt_shape(input_shape)
        ))),
    }
}

/// Loads the data set named by the spec (or `--data`) and splits and scales it.
pub fn prepare(
    d: &DataSection,
    source: &str,
    spec_dir: &Path,
    problem: ProblemType,
    input_shape: &[usize],
) -> Result<Splits> {
    let (all, class_names) = load_source(source, spec_dir, problem, &d.label_column, input_shape)?;
    let (rest, test) = lamina_data::train_test_split(&all, d.test_fraction, d.split_seed)?;
    let (mut train, mut val) = if d.val_fraction > 0.0 {
        let (t, v) =
            lamina_data::train_test_split(&rest, d.val_fraction, d.split_seed.wrapping_add(1))?;
        (t, Some(v))
    } else {
        (rest, None)
    };
    let mut test = test;
    if d.standardize {
        let s = lamina_data::Standardizer::fit(&train)?;
        train = s.apply(&train)?;
        test = s.apply(&test)?;
        val = val.map(|v| s.apply(&v)).transpose()?;
    }
    let mut target_scale = None;
    if d.standardize_targets {
        if let LabelData::Targets { values, .. } = train.labels() {
            let n = values.len().max(1) as f64;
            let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
            let std = (values
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / n)
                .sqrt()
                .max(1e-12);
            let scale = |ds: &InMemoryDataset| -> Result<InMemoryDataset> {
                match ds.labels() {
                    LabelData::Targets { values, shape } => InMemoryDataset::new(
                        ds.x().to_vec(),
                        ds.sample_shape(),
                        LabelData::Targets {
                            values: values
                                .iter()
                                .map(|&v| ((v as f64 - mean) / std) as f32)
                                .collect(),
                            shape: shape.clone(),
                        },
                    ),
                    LabelData::Classes(_) => Ok(ds.clone()),
                }
            };
            train = scale(&train)?;
            test = scale(&test)?;
            val = val.map(|v| scale(&v)).transpose()?;
            target_scale = Some((mean, std));
        }
    }
    Ok(Splits {
        train,
        val,
        test,
        class_names,
        target_scale,
    })
}

/// Progress bars and Ctrl-C: one bar per epoch with loss, accuracy and samples/s.
struct Progress {
    bar: Option<ProgressBar>,
    epochs: usize,
    started: Instant,
    samples: usize,
    loss: f64,
    acc: f64,
    seen: usize,
    stop: Arc<AtomicBool>,
    quiet: bool,
}

impl Callback for Progress {
    fn on_batch_end(&mut self, epoch: usize, batch: usize, batches: usize, r: &BatchResult) {
        if batch == 0 {
            self.started = Instant::now();
            self.samples = 0;
            self.loss = 0.0;
            self.acc = 0.0;
            self.seen = 0;
            if !self.quiet {
                let bar = ProgressBar::new(batches as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "epoch {prefix:>3} [{bar:30.cyan/blue}] {pos:>4}/{len:4} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("{epoch}/{}", self.epochs));
                self.bar = Some(bar);
            }
        }
        self.samples += r.samples;
        self.seen += r.samples;
        self.loss += r.loss * r.samples as f64;
        self.acc += r.accuracy.unwrap_or(0.0) * r.samples as f64;
        if let Some(bar) = &self.bar {
            let rate = self.samples as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            let acc = if r.accuracy.is_some() {
                format!(" acc {:5.1}%", 100.0 * self.acc / self.seen as f64)
            } else {
                String::new()
            };
            bar.set_message(format!(
                "loss {:.4}{acc} {:.0} samples/s",
                self.loss / self.seen as f64,
                rate
            ));
            bar.inc(1);
        }
    }
    fn on_epoch_end(&mut self, log: &EpochLog, control: &mut FitControl) {
        if let Some(bar) = self.bar.take() {
            let mut msg = format!("loss {:.4}", log.train_loss);
            if let Some(a) = log.train_accuracy {
                msg += &format!(" acc {:5.1}%", a * 100.0);
            }
            if let Some(v) = log.val_loss {
                msg += &format!(" | val loss {v:.4}");
            }
            if let Some(a) = log.val_accuracy {
                msg += &format!(" val acc {:5.1}%", a * 100.0);
            }
            bar.finish_with_message(msg);
        }
        if self.stop.load(Ordering::SeqCst) {
            control.stop = true;
        }
    }
    fn stop_requested(&mut self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Test-split evaluation: the metrics table and what the plots need.
struct TestResults {
    metrics: Vec<(String, f64)>,
    confusion: Option<Vec<Vec<u64>>>,
    roc: Option<(Vec<f64>, Vec<f64>, f64)>,
    regression: Option<(Vec<f64>, Vec<f64>)>,
}

fn evaluate_test(
    t: &mut ModelTrainer,
    test: &InMemoryDataset,
    target_scale: Option<(f64, f64)>,
) -> Result<TestResults> {
    let mut shape = vec![test.len()];
    shape.extend_from_slice(test.sample_shape());
    let p = t.predict(test.x(), &shape)?;
    let k = *p.shape.last().unwrap_or(&1);
    let mut metrics = Vec::new();
    match (t.config().problem, test.labels()) {
        (ProblemType::Classification, LabelData::Classes(y)) => {
            let classes = if k == 1 { 2 } else { k };
            let pred = p.classes();
            let truth: Vec<usize> = y.iter().map(|&c| c as usize).collect();
            let cm = ConfusionMatrix::from_predictions(&truth, &pred, classes)?;
            metrics.push(("test accuracy".into(), cm.accuracy()));
            metrics.push(("test macro F1".into(), cm.f1(Average::Macro)));
            metrics.push(("test macro precision".into(), cm.precision(Average::Macro)));
            metrics.push(("test macro recall".into(), cm.recall(Average::Macro)));
            let mut roc = None;
            if classes == 2 {
                // probability (or score) of class 1
                let scores: Vec<f64> = if k == 1 {
                    p.values.iter().map(|&v| v as f64).collect()
                } else {
                    p.values.chunks(k).map(|r| (r[1] - r[0]) as f64).collect()
                };
                let labels: Vec<bool> = truth.iter().map(|&c| c == 1).collect();
                if let (Ok(auc), Ok((fpr, tpr, _))) =
                    (roc_auc(&scores, &labels), roc_curve(&scores, &labels))
                {
                    metrics.push(("test ROC AUC".into(), auc));
                    roc = Some((fpr, tpr, auc));
                }
            }
            let rows = (0..classes)
                .map(|r| (0..classes).map(|c| cm.get(r, c)).collect())
                .collect();
            Ok(TestResults {
                metrics,
                confusion: Some(rows),
                roc,
                regression: None,
            })
        }
        (ProblemType::Regression, LabelData::Targets { values, .. }) => {
            let (m, s) = target_scale.unwrap_or((0.0, 1.0));
            let pred: Vec<f64> = p.values.iter().map(|&v| v as f64 * s + m).collect();
            let actual: Vec<f64> = values.iter().map(|&v| v as f64 * s + m).collect();
            let r = RegressionMetrics::new(&pred, &actual)?;
            metrics.extend([
                ("test R2".to_string(), r.r2),
                ("test MAE".into(), r.mae),
                ("test MSE".into(), r.mse),
                ("test RMSE".into(), r.rmse),
            ]);
            Ok(TestResults {
                metrics,
                confusion: None,
                roc: None,
                regression: Some((pred, actual)),
            })
        }
        (problem, _) => Err(Error::Spec(format!(
            "a {problem:?} problem does not fit the data set's labels"
        ))),
    }
}

fn write_history(path: &Path, h: &History) -> Result<()> {
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    let mut s = String::from(
        "epoch,train_loss,train_accuracy,train_mse,val_loss,val_accuracy,val_mse,lr,seconds\n",
    );
    for e in &h.epochs {
        s += &format!(
            "{},{},{},{},{},{},{},{},{:.3}\n",
            e.epoch,
            e.train_loss,
            opt(e.train_accuracy),
            opt(e.train_mse),
            opt(e.val_loss),
            opt(e.val_accuracy),
            opt(e.val_mse),
            e.lr,
            e.seconds
        );
    }
    std::fs::write(path, s).map_err(|e| io(path, e))
}

pub fn train(a: TrainArgs) -> Result<()> {
    let mut spec = spec::load(&a.spec)?;
    if let Some(e) = a.epochs {
        spec.epochs = e;
    }
    if let Some(b) = a.batch_size {
        spec.config.batch_size = b;
    }
    if let Some(lr) = a.lr {
        spec.config.learning_rate = lr;
    }
    if let Some(o) = &a.optimizer {
        spec.config.optimizer = lamina_train::optimizer_from_str(o)?;
    }
    if let Some(d) = &a.device {
        spec.config.device = lamina_train::device_from_str(d)?;
    }
    if let Some(s) = a.seed {
        spec.config.seed = s;
    }
    spec.config.validate()?;
    let ck = &mut spec.checkpoint;
    ck.every = a.checkpoint_every.or(ck.every);
    ck.keep_last = a.keep_last.or(ck.keep_last);
    ck.keep_best = a.keep_best.clone().or(ck.keep_best.take());
    if let Some(g) = &a.best_goal {
        ck.goal = Some(lamina_train::Goal::parse(g)?);
    }
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&spec.name));
    // checked before the data is read or anything trains
    let saver = if ck.any() {
        Some(ModelCheckpoint::new(CheckpointPolicy {
            dir: out.join("checkpoints"),
            // keep_best alone saves only the best file; keep_last alone implies every epoch
            every: ck
                .every
                .or((ck.keep_last.is_some() || ck.keep_best.is_none()).then_some(1)),
            keep_last: ck.keep_last,
            keep_best: ck.keep_best.clone().map(|m| {
                let g = ck.goal.unwrap_or(lamina_train::Goal::of(&m));
                (m, g)
            }),
        })?)
    } else {
        None
    };
    let source = a.data.clone().unwrap_or_else(|| spec.data.source.clone());
    let spec_dir = a.spec.parent().unwrap_or(Path::new("."));
    let splits = prepare(
        &spec.data,
        &source,
        spec_dir,
        spec.config.problem,
        &spec.model.input_shape,
    )?;
    std::fs::create_dir_all(&out).map_err(|e| io(&out, e))?;

    let started = Instant::now();
    let mut trainer = ModelTrainer::new(&spec.model, spec.config.clone())?;
    if !a.json {
        println!("{}", spec.model.summary());
        println!(
            "data: {source} — {} train, {} validation, {} test samples; device {:?}; {} epochs of batch {}\n",
            splits.train.len(),
            splits.val.as_ref().map_or(0, |v| v.len()),
            splits.test.len(),
            trainer.device(),
            spec.epochs,
            spec.config.batch_size
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    // Ctrl-C: finish the running step, stop, and save what was trained
    let _ = ctrlc::set_handler(move || s2.store(true, Ordering::SeqCst));
    let progress = Progress {
        bar: None,
        epochs: spec.epochs,
        started: Instant::now(),
        samples: 0,
        loss: 0.0,
        acc: 0.0,
        seen: 0,
        stop: stop.clone(),
        quiet: a.json,
    };
    let history = trainer.fit(
        &splits.train,
        splits.val.as_ref().map(|v| v as &dyn Dataset),
        FitOptions {
            epochs: spec.epochs,
            callbacks: std::iter::once(Box::new(progress) as Box<dyn Callback>)
                .chain(saver.map(|s| Box::new(s) as Box<dyn Callback>))
                .collect(),
            ..Default::default()
        },
    )?;
    let train_seconds = started.elapsed().as_secs_f64();
    if stop.load(Ordering::SeqCst) && !a.json {
        println!("interrupted: saving the model trained so far");
    }

    let ckpt = out.join("checkpoint.safetensors");
    trainer.save_checkpoint(&ckpt)?;
    write_history(&out.join("history.csv"), &history)?;
    let results = evaluate_test(&mut trainer, &splits.test, splits.target_scale)?;
    let mut run_json = spec.json.clone();
    run_json["data"]["source"] = json!(source);
    run_json["train"] = trainer.config().to_json();
    run_json["train"]["epochs"] = json!(spec.epochs);
    let ck = &spec.checkpoint;
    if ck.any() {
        run_json["train"]["checkpoint"] = json!({
            "every": ck.every,
            "keep_last": ck.keep_last,
            "keep_best": ck.keep_best,
            "goal": ck.goal.map(|g| if g == lamina_train::Goal::Max { "max" } else { "min" }),
        });
        // null means "not set"
        if let Some(o) = run_json["train"]["checkpoint"].as_object_mut() {
            o.retain(|_, v| !v.is_null());
        }
    }
    if let Some((m, s)) = splits.target_scale {
        run_json["data"]["target_mean"] = json!(m);
        run_json["data"]["target_std"] = json!(s);
    }
    std::fs::write(
        out.join("spec.json"),
        serde_json::to_string_pretty(&run_json).unwrap_or_default(),
    )
    .map_err(|e| io(&out, e))?;
    let metrics_json: serde_json::Map<String, Value> = results
        .metrics
        .iter()
        .map(|(k, v)| (k.replace(' ', "_"), json!(v)))
        .collect();
    let mut final_json = json!({
        "spec": spec.name, "epochs": history.epochs.len(), "train_seconds": (train_seconds * 100.0).round() / 100.0,
        "final_train_loss": history.epochs.last().map(|e| e.train_loss), "run_folder": out.display().to_string(),
    });
    for (k, v) in &metrics_json {
        final_json[k] = v.clone();
    }
    std::fs::write(
        out.join("metrics.json"),
        serde_json::to_string_pretty(&final_json).unwrap_or_default(),
    )
    .map_err(|e| io(&out, e))?;
    let config_text = serde_json::to_string_pretty(&run_json).unwrap_or_default();
    let summary = spec.model.summary();
    let report = RunReport {
        title: &spec.name,
        model_summary: &summary,
        config: &config_text,
        history: &history,
        class_names: splits.class_names.as_deref(),
        confusion: results.confusion.as_deref(),
        roc: results
            .roc
            .as_ref()
            .map(|(f, t, a)| (f.as_slice(), t.as_slice(), *a)),
        regression: results
            .regression
            .as_ref()
            .map(|(p, a)| (p.as_slice(), a.as_slice())),
        final_metrics: &results.metrics,
    };
    let files = write_report(&out, &report)?;
    if a.json {
        println!("{final_json}");
    } else {
        println!();
        for (k, v) in &results.metrics {
            println!("{k:>22}: {v:.4}");
        }
        println!("\ntrained in {train_seconds:.1} s; wrote {} ({} files: checkpoint, history.csv, metrics.json, plots, report.html)", out.display(), files.len() + 4);
        if spec.checkpoint.any() {
            let dir = out.join("checkpoints");
            let best = lamina_train::best_checkpoint_in(&dir)
                .map(|b| format!("; best {}", b.display()))
                .unwrap_or_default();
            println!("checkpoints in {}{best}", dir.display());
        }
    }
    Ok(())
}

/// Reopens a run: the checkpoint and the spec saved beside it.
fn open_run(checkpoint: &Path) -> Result<(ModelTrainer, Value)> {
    let trainer = ModelTrainer::load_checkpoint(checkpoint, &LayerRegistry::new(), Device::Auto)?;
    let mut spec_path = checkpoint.with_file_name("spec.json");
    // a file of <run>/checkpoints/ uses the run's spec
    if !spec_path.exists() {
        if let Some(run) = checkpoint.parent().and_then(Path::parent) {
            spec_path = run.join("spec.json");
        }
    }
    let spec: Value = match std::fs::read_to_string(&spec_path) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| io(&spec_path, e))?,
        Err(_) => json!({}),
    };
    Ok((trainer, spec))
}

pub fn eval(checkpoint: &Path, data: Option<&str>, as_json: bool) -> Result<()> {
    let (mut trainer, spec) = open_run(checkpoint)?;
    let num = |k: &str, d: f64| spec["data"][k].as_f64().unwrap_or(d);
    let section = DataSection {
        source: data
            .map(str::to_string)
            .or_else(|| spec["data"]["source"].as_str().map(str::to_string))
            .ok_or_else(|| Error::Spec("no data set: pass --data".into()))?,
        test_fraction: num("test_fraction", 0.2),
        val_fraction: num("val_fraction", 0.1),
        split_seed: spec["data"]["split_seed"].as_u64().unwrap_or(0),
        standardize: spec["data"]["standardize"].as_bool().unwrap_or(false),
        standardize_targets: spec["data"]["standardize_targets"]
            .as_bool()
            .unwrap_or(false),
        label_column: match &spec["data"]["label_column"] {
            Value::String(s) if s == "first" => lamina_data::LabelColumn::First,
            Value::String(s) if s != "last" => lamina_data::LabelColumn::Name(s.clone()),
            Value::Number(n) => lamina_data::LabelColumn::Index(n.as_u64().unwrap_or(0) as usize),
            _ => lamina_data::LabelColumn::Last,
        },
    };
    let problem = trainer.config().problem;
    let splits = prepare(
        &section,
        &section.source,
        checkpoint.parent().unwrap_or(Path::new(".")),
        problem,
        &trainer.model().input_shape.clone(),
    )?;
    let r = evaluate_test(&mut trainer, &splits.test, splits.target_scale)?;
    if as_json {
        let m: serde_json::Map<String, Value> = r
            .metrics
            .iter()
            .map(|(k, v)| (k.replace(' ', "_"), json!(v)))
            .collect();
        println!("{}", Value::Object(m));
    } else {
        for (k, v) in &r.metrics {
            println!("{k:>22}: {v:.4}");
        }
    }
    Ok(())
}

pub fn predict(checkpoint: &Path, input: &Path, out: Option<&Path>, as_json: bool) -> Result<()> {
    let (mut trainer, _) = open_run(checkpoint)?;
    let per: usize = trainer.model().input_shape[1..].iter().product();
    let input_shape = trainer.model().input_shape.clone();
    let rows = read_samples(input, per, &input_shape)?;
    let n = rows.len() / per;
    let mut shape = trainer.model().input_shape.clone();
    shape[0] = n;
    let p = trainer.predict(&rows, &shape)?;
    let k = *p.shape.last().unwrap_or(&1);
    let classes = p.classes();
    let write_json = as_json || out.is_some_and(|o| o.extension().is_some_and(|e| e == "json"));
    let text = if write_json {
        let rows: Vec<Value> = p
            .values
            .chunks(k)
            .zip(&classes)
            .map(|(v, c)| json!({ "outputs": v, "class": c }))
            .collect();
        serde_json::to_string(&rows).unwrap_or_default() + "\n"
    } else {
        let mut s = (0..k)
            .map(|i| format!("output_{i}"))
            .collect::<Vec<_>>()
            .join(",")
            + ",class\n";
        for (v, c) in p.values.chunks(k).zip(&classes) {
            s += &(v
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
                + &format!(",{c}\n"));
        }
        s
    };
    match out {
        Some(o) => std::fs::write(o, text).map_err(|e| io(o, e)),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
