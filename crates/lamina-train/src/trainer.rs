//! `ModelTrainer`: compiles a model's whole training step into one graph and runs it.

use crate::config::{
    Device, LossFunction, OptimizerType, ProblemType, ScheduleStep, TrainerConfig,
};
use crate::engine::{engine_for, open_device, Engine, OpenDevice, StepKind};
use crate::lbfgs::{Lbfgs, LbfgsSettings};
use crate::loss::{self, Head};
use crate::optim::{self, Slot, HYPER_LEN};
use crate::schedule::Scheduler;
use lamina_core::{
    dtype::fmt_shape, grad, DType, Error, Feed, Graph, GraphBuilder, HostData, HostTensor, Op,
    PendingOutputs, Result, StateMap, Tensor,
};
use lamina_data::Labels;
use lamina_nn::{Mode, ModelSpec, Scope};
use std::collections::VecDeque;

/// Loss and metric of one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchResult {
    pub loss: f64,
    /// Fraction of correct predictions (classification only).
    pub accuracy: Option<f64>,
    /// Mean squared error (regression only).
    pub mse: Option<f64>,
    pub samples: usize,
}

/// Model outputs for a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub values: Vec<f32>,
    pub shape: Vec<usize>,
    /// Where a single output splits the two classes: 0.5 for probabilities, 0 for the logits of a
    /// model trained with BCE-with-logits.
    pub binary_threshold: f32,
}

impl Prediction {
    /// Index of the largest output of each sample; for a single output, 1 above
    /// `binary_threshold` (classification).
    pub fn classes(&self) -> Vec<usize> {
        let k = *self.shape.last().unwrap_or(&1);
        if k == 1 {
            return self
                .values
                .iter()
                .map(|&v| (v > self.binary_threshold) as usize)
                .collect();
        }
        self.values
            .chunks(k)
            .map(|r| {
                r.iter()
                    .enumerate()
                    .fold(0, |best, (i, &v)| if v > r[best] { i } else { best })
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LabelKind {
    Classes,
    Targets,
}

/// Trains, evaluates and runs a model. The training step (forward, loss, backward, optimizer update,
/// metric counters) is one compiled graph; parameters, optimizer state, BatchNorm statistics and
/// the random key live in the backend between steps. Executables are compiled per batch size on
/// first use, so any batch size works and a last partial batch is exact.
pub struct ModelTrainer {
    steps: Steps,
    engine: Box<dyn Engine>,
    device: Device,
    trainable: Vec<(String, Vec<usize>)>,
    updates: u64,
    micro: usize,
    scheduler: Scheduler,
    lr_override: Option<f64>,
    mu_product: f64,
    /// The step-dependent optimizer scalars fed to the last update (`optim.hyper` of a
    /// checkpoint).
    last_hyper: Option<[f64; HYPER_LEN]>,
    lbfgs: Lbfgs,
    /// Training-mode forward passes (BatchNorm's `num_batches_tracked`).
    forwards: u64,
    /// The last training batch's input tensor, refilled by the next batch of the same shape.
    x_reuse: Option<HostTensor>,
    /// Submitted steps whose results are not read yet, oldest first.
    pending: VecDeque<Submitted>,
    /// Host time per phase of `enqueue_train` (checks, input copy, hyper-parameters, submit) of
    /// steps 20-119, summed in µs, and the steps seen, when `LAMINA_CUDA_PROFILE` is set.
    profile: Option<([f64; 4], u64)>,
}

/// A step of `submit_batch`: its outputs and batch size while they may be in flight, or its
/// result (an L-BFGS step runs synchronously).
enum Submitted {
    Running(PendingOutputs, usize),
    Done(BatchResult),
}

/// What builds and checks the compiled graphs: the model and the configuration, apart from the
/// engine so that building a graph can borrow them while the engine runs.
struct Steps {
    model: ModelSpec,
    config: TrainerConfig,
    label_kind: LabelKind,
    target_shape: Vec<usize>,
    skip_last: bool,
}

impl Steps {
    fn graph(&self, kind: StepKind, batch: usize, slots: &mut Vec<Slot>) -> Result<Graph> {
        let cfg = &self.config;
        let dtype = cfg.dtype;
        let b = GraphBuilder::new();
        let mut xs = self.model.input_shape.clone();
        xs[0] = batch;
        let x = b.input("x", &xs, dtype);
        let mode = if matches!(kind, StepKind::Eval | StepKind::Predict) {
            Mode::Eval
        } else {
            Mode::Train
        };
        let mut s = Scope::new(&b, mode, dtype);
        let skip = self.skip_last && kind != StepKind::Predict;
        let n = self.model.layers.len() - skip as usize;
        let mut h = x;
        for l in &self.model.layers[..n] {
            h = s.scoped(&l.name, |s| l.layer.build(s, h))?.check()?;
        }
        if kind == StepKind::Predict {
            return b.finish(&[h]);
        }
        let head = if skip || cfg.loss.is_cross_entropy() || cfg.loss == LossFunction::BceWithLogits
        {
            Head::Logits
        } else {
            Head::Output
        };
        let y = match self.label_kind {
            LabelKind::Classes => b.input("y", &[batch], DType::I32),
            LabelKind::Targets => {
                let mut ys = vec![batch];
                ys.extend_from_slice(&self.target_shape);
                b.input("y", &ys, dtype)
            }
        };
        let loss = loss::loss(cfg.loss, h, head, y);
        let metric = loss::metric(cfg.problem, cfg.loss, h, head, y);
        if kind == StepKind::Eval {
            return b.finish(&[loss, metric]);
        }
        let params: Vec<(String, Tensor)> = s
            .params()
            .filter(|(p, _)| p.trainable)
            .map(|(p, t)| (p.path.clone(), t))
            .collect();
        let tensors: Vec<Tensor> = params.iter().map(|p| p.1).collect();
        let mut grads = grad(loss, &tensors)?;
        let mut assigns: Vec<(String, Tensor)> = s.updates().to_vec();
        if let Some(key) = s.key() {
            assigns.push(("rng".into(), key + key.literal(&[2], vec![0.0, 1.0])));
        }
        let mut outputs = vec![loss, metric];
        match kind {
            StepKind::LossGrad => outputs.extend(grads.iter().copied()),
            StepKind::Accumulate => {
                for ((path, _), g) in params.iter().zip(&grads) {
                    let name = format!("accum.{path}");
                    let acc = b.state(&name, &g.shape(), dtype);
                    assigns.push((name, acc + *g));
                }
            }
            _ => {
                let k = cfg.accumulate_grad_batches;
                if k > 1 {
                    for ((path, _), g) in params.iter().zip(grads.iter_mut()) {
                        let name = format!("accum.{path}");
                        let acc = b.state(&name, &g.shape(), dtype);
                        *g = (acc + *g) / k as f64;
                        assigns.push((name, acc.zeros_like()));
                    }
                }
                if let Some(c) = cfg.clip_grad_value {
                    for g in grads.iter_mut() {
                        *g = g.maximum(-c).minimum(c);
                    }
                }
                if let Some(max_norm) = cfg.clip_grad_norm {
                    // torch.nn.utils.clip_grad_norm_: scale by min(1, max_norm / (‖g‖ + 1e-6))
                    let total = grads
                        .iter()
                        .map(|g| g.square().sum(&[], false))
                        .reduce(|a, b| a + b)
                        .map(|t| t.sqrt());
                    if let Some(total) = total {
                        let coef = (total + 1e-6).recip().minimum(1.0 / max_norm) * max_norm;
                        for g in grads.iter_mut() {
                            *g = *g * coef;
                        }
                    }
                }
                // fed with every batch: on CUDA it rides in the one copy of the small inputs
                // (as a state it was a write of its own before each step, ~2.4 µs of device time)
                let hyper = b.input("optim.hyper", &[HYPER_LEN], dtype);
                for ((path, p), g) in params.iter().zip(&grads) {
                    assigns.extend(optim::update(cfg, &b, hyper, path, *p, *g, slots));
                }
            }
        }
        for (name, v) in assigns {
            Tensor::apply(Op::Assign { name }, &[v]).check()?;
        }
        b.finish(&outputs)
    }

    /// Checks a batch against the model before anything runs; returns the fed tensors.
    fn check_batch(
        &self,
        x: &[f32],
        x_shape: &[usize],
        labels: Option<(Labels, &[usize])>,
    ) -> Result<(HostTensor, Option<HostTensor>)> {
        self.check_batch_into(x, x_shape, labels, None)
    }

    /// [`Self::check_batch`] writing the input into `reuse` when it is an f32 tensor of the
    /// batch's shape: no allocation (and no fresh pages to fault in) per step for a batch that
    /// can be megabytes.
    fn check_batch_into(
        &self,
        x: &[f32],
        x_shape: &[usize],
        labels: Option<(Labels, &[usize])>,
        reuse: Option<HostTensor>,
    ) -> Result<(HostTensor, Option<HostTensor>)> {
        self.check_x_shape(x, x_shape)?;
        let xt = self.x_tensor(x, x_shape, reuse)?;
        let Some((labels, label_shape)) = labels else {
            return Ok((xt, None));
        };
        Ok((xt, Some(self.label_tensor(x_shape, labels, label_shape)?)))
    }

    /// The input's shape against the model's, and its number of values.
    fn check_x_shape(&self, x: &[f32], x_shape: &[usize]) -> Result<()> {
        let want = &self.model.input_shape;
        if x_shape.len() != want.len() || x_shape[1..] != want[1..] || x_shape[0] == 0 {
            let mut w = want.clone();
            w[0] = x_shape.first().copied().unwrap_or(0).max(1);
            return Err(Error::Input(format!("input shape {} does not match the model's input {} (batch axis first, any batch size ≥ 1)", fmt_shape(x_shape), fmt_shape(&w))));
        }
        let n: usize = x_shape.iter().product();
        if x.len() != n {
            return Err(Error::Input(format!(
                "input shape {} needs {n} values, got {}",
                fmt_shape(x_shape),
                x.len()
            )));
        }
        Ok(())
    }

    /// The input as a tensor of the configured dtype (checked finite), refilling `reuse` when it
    /// fits.
    fn x_tensor(
        &self,
        x: &[f32],
        x_shape: &[usize],
        reuse: Option<HostTensor>,
    ) -> Result<HostTensor> {
        let n: usize = x_shape.iter().product();
        let dtype = self.config.dtype;
        let reuse = reuse.filter(|t| t.dtype() == DType::F32 && t.shape() == x_shape);
        // f32 goes in as it is (no f64 round trip: that costs more than a step on a GPU)
        let xt = if let (DType::F32, Some(mut t)) = (dtype, reuse) {
            let HostData::F32(v) = t.data_mut() else {
                unreachable!("filtered to f32 above")
            };
            copy_finite(x, Some(v))?;
            t
        } else if dtype == DType::F32 {
            let mut v = vec![0.0f32; n];
            copy_finite(x, Some(&mut v))?;
            HostTensor::f32(x_shape, v)?
        } else {
            copy_finite(x, None)?;
            HostTensor::from_f64(
                x_shape,
                dtype,
                &x.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            )?
        };
        Ok(xt)
    }

    /// The labels of a batch of `x_shape` as the tensor the step takes, checked.
    fn label_tensor(
        &self,
        x_shape: &[usize],
        labels: Labels,
        label_shape: &[usize],
    ) -> Result<HostTensor> {
        let batch = x_shape[0];
        let classes = *self.model.output_shape.last().unwrap_or(&1);
        let yt = match (self.label_kind, labels) {
            (LabelKind::Classes, Labels::Classes(c)) => {
                if label_shape != [batch] || c.len() != batch {
                    return Err(Error::Input(format!("a batch of {batch} needs {batch} labels of shape [{batch}], got {} labels of shape {}", c.len(), fmt_shape(label_shape))));
                }
                if let Some(i) = c.iter().position(|&l| l < 0 || l as usize >= classes) {
                    return Err(Error::Input(format!(
                        "label {i} is {}, outside 0..{classes} (the model has {classes} outputs)",
                        c[i]
                    )));
                }
                HostTensor::i32(&[batch], c.to_vec())?
            }
            (LabelKind::Classes, Labels::Targets(_)) => {
                return Err(Error::Input(format!(
                    "{:?} takes class indices (&[i32]), got float targets (&[f32])",
                    self.config.loss
                )));
            }
            (LabelKind::Targets, l) => {
                let mut ts = vec![batch];
                ts.extend_from_slice(&self.target_shape);
                let per: usize = self.target_shape.iter().product();
                let values: Vec<f64> = match l {
                    Labels::Targets(t) => t.iter().map(|&v| v as f64).collect(),
                    Labels::Classes(c) if self.config.loss.is_binary() => {
                        if let Some(i) = c.iter().position(|&v| v != 0 && v != 1) {
                            return Err(Error::Input(format!("label {i} is {}, binary labels must be 0 or 1", c[i])));
                        }
                        c.iter().map(|&v| v as f64).collect()
                    }
                    Labels::Classes(_) => {
                        return Err(Error::Input(format!(
                            "{:?} with a {:?} problem takes float targets (&[f32]) of shape {}, got class indices (&[i32]){}",
                            self.config.loss,
                            self.config.problem,
                            fmt_shape(&ts),
                            if self.config.loss.is_cross_entropy() { "; use SparseCrossEntropy for class indices" } else { "" }
                        )))
                    }
                };
                let shape_ok = label_shape == ts.as_slice() || (per == 1 && label_shape == [batch]);
                if !shape_ok || values.len() != batch * per {
                    return Err(Error::Input(format!(
                        "a batch of {batch} needs targets of shape {}, got {} values of shape {}",
                        fmt_shape(&ts),
                        values.len(),
                        fmt_shape(label_shape)
                    )));
                }
                if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                    return Err(Error::Input(format!(
                        "target {i} is {} (NaN and infinity are not accepted)",
                        values[i]
                    )));
                }
                if self.config.loss == LossFunction::BinaryCrossEntropy {
                    if let Some(i) = values.iter().position(|v| !(0.0..=1.0).contains(v)) {
                        return Err(Error::Input(format!(
                            "target {i} is {}, BinaryCrossEntropy needs targets in [0, 1]",
                            values[i]
                        )));
                    }
                }
                HostTensor::from_f64(&ts, self.config.dtype, &values)?
            }
        };
        Ok(yt)
    }

    fn batch_result(&self, outs: &[HostTensor], batch: usize) -> BatchResult {
        let loss = outs[0].to_f64()[0];
        let m = outs[1].to_f64()[0];
        let per: usize = self.model.output_shape[1..].iter().product();
        match self.config.problem {
            ProblemType::Classification => {
                let denom = if per == 1 || self.config.loss.is_binary() {
                    batch * per
                } else {
                    batch
                };
                BatchResult {
                    loss,
                    accuracy: Some(m / denom as f64),
                    mse: None,
                    samples: batch,
                }
            }
            ProblemType::Regression => BatchResult {
                loss,
                accuracy: None,
                mse: Some(m / (batch * per) as f64),
                samples: batch,
            },
        }
    }
}

/// Copies `x` into `dst` (when given, of the same length) and rejects NaN and infinity, in one
/// pass of blocks that stay in cache; the check is a branch-free maximum of the magnitude bits so
/// that it vectorises (a value is non-finite when its exponent bits are all ones).
fn copy_finite(x: &[f32], dst: Option<&mut [f32]>) -> Result<()> {
    // Batches of megabytes are split over a few threads: a GPU step waits for this copy at the
    // start of every block of submitted steps. The first bad value in the whole batch is the one
    // reported, as with one thread.
    const PAR_MIN: usize = 1 << 20;
    const PARTS: usize = 4;
    let d = match dst {
        Some(d) if x.len() >= PAR_MIN => d,
        dst => return copy_finite_part(x, dst, 0),
    };
    let part = x.len().div_ceil(PARTS).next_multiple_of(4096);
    let errors: Vec<Result<()>> = std::thread::scope(|sc| {
        let hs: Vec<_> = x
            .chunks(part)
            .zip(d.chunks_mut(part))
            .enumerate()
            .map(|(k, (xs, ds))| sc.spawn(move || copy_finite_part(xs, Some(ds), k * part)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    // the first error in batch order
    errors.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
}

/// `copy_finite` of the part of a batch starting at value `first`.
fn copy_finite_part(x: &[f32], mut dst: Option<&mut [f32]>, first: usize) -> Result<()> {
    const BLOCK: usize = 4096;
    for (b, chunk) in x.chunks(BLOCK).enumerate() {
        if let Some(d) = dst.as_deref_mut() {
            d[b * BLOCK..b * BLOCK + chunk.len()].copy_from_slice(chunk);
        }
        let top = chunk
            .iter()
            .fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
        if top >= 0x7f80_0000 {
            let j = chunk.iter().position(|v| !v.is_finite()).unwrap_or(0);
            let i = b * BLOCK + j;
            return Err(Error::Input(format!(
                "input value {} is {} (NaN and infinity are not accepted)",
                first + i,
                x[i]
            )));
        }
    }
    Ok(())
}

impl ModelTrainer {
    /// Validates the configuration against the model and compiles the training step for
    /// `config.batch_size`.
    pub fn new(model: &ModelSpec, config: TrainerConfig) -> Result<ModelTrainer> {
        config.validate()?;
        // The device opens on another thread while this one builds the step's graph and draws
        // the parameters: for CUDA that is loading the driver and the libraries and creating the
        // context and cuBLAS handles, most of a cold start.
        let requested = config.device;
        std::thread::scope(|sc| {
            let opening = sc.spawn(move || open_device(requested));
            Self::build(model, config, || {
                opening.join().unwrap_or_else(|_| {
                    Err(Error::Backend {
                        backend: "cuda".into(),
                        msg: "opening the device panicked".into(),
                    })
                })
            })
        })
    }

    /// [`new`](Self::new) with the device coming from `open` once the host side is ready.
    fn build(
        model: &ModelSpec,
        config: TrainerConfig,
        open: impl FnOnce() -> Result<OpenDevice>,
    ) -> Result<ModelTrainer> {
        let started = std::time::Instant::now();
        let profile = std::env::var_os("LAMINA_CUDA_PROFILE").is_some();
        let report = |what: &str| {
            if profile {
                eprintln!(
                    "lamina-train start-up: {what} at {:.1} ms",
                    started.elapsed().as_secs_f64() * 1e3
                );
            }
        };
        let out = &model.output_shape;
        let last = model
            .layers
            .last()
            .map(|l| l.type_name().to_string())
            .unwrap_or_default();
        let label_kind = if config.loss == LossFunction::SparseCrossEntropy {
            LabelKind::Classes
        } else {
            LabelKind::Targets
        };
        if config.loss.is_cross_entropy() && out.len() != 2 {
            return Err(Error::Spec(format!(
                "{:?} needs a model output [batch, classes], the model gives {}",
                config.loss,
                fmt_shape(out)
            )));
        }
        if config.problem == ProblemType::Classification
            && !(config.loss.is_cross_entropy() || config.loss.is_binary())
        {
            return Err(Error::Spec(format!(
                "classification needs a cross-entropy loss, got {:?}",
                config.loss
            )));
        }
        let skip_last = (config.loss.is_cross_entropy()
            && last == "Softmax"
            && matches!(
                model
                    .layers
                    .last()
                    .map(|l| l.layer.config()["axis"].as_i64()),
                Some(Some(-1) | Some(1))
            ))
            || (config.loss == LossFunction::BinaryCrossEntropy && last == "Sigmoid");
        let trainable = model
            .params()
            .filter(|p| p.trainable)
            .map(|p| (p.path.clone(), p.shape.clone()))
            .collect();
        let scheduler = Scheduler::new(config.lr_schedule.clone(), config.learning_rate)?;
        let dtype = config.dtype;
        let seed = config.seed;
        let accumulate = config.accumulate_grad_batches;
        let batch_size = config.batch_size;
        let lbfgs = config.optimizer == OptimizerType::Lbfgs;
        let steps = Steps {
            model: model.clone(),
            label_kind,
            target_shape: out[1..].to_vec(),
            skip_last,
            config,
        };
        let mut t = ModelTrainer {
            steps,
            engine: engine_for(Device::Cpu, StateMap::new())?,
            device: Device::Cpu,
            trainable,
            updates: 0,
            micro: 0,
            scheduler,
            lr_override: None,
            mu_product: 1.0,
            last_hyper: None,
            lbfgs: Lbfgs::default(),
            forwards: 0,
            x_reuse: None,
            pending: VecDeque::new(),
            profile: std::env::var_os("LAMINA_CUDA_PROFILE").map(|_| ([0.0; 4], 0)),
        };
        // Compile the step once: it also tells which optimizer state buffers exist.
        let mut slots = Vec::new();
        let kind = if lbfgs {
            StepKind::LossGrad
        } else {
            StepKind::Train
        };
        let graph = t.steps.graph(kind, batch_size, &mut slots)?;
        report("graph built");
        let mut state = model.initial_state(dtype)?;
        state.insert("rng".into(), HostTensor::i32(&[2], vec![seed as i32, 0])?);
        for (name, shape) in slots {
            state.insert(name, HostTensor::zeros(&shape, dtype)?);
        }
        if accumulate > 1 {
            for (path, shape) in &t.trainable {
                state.insert(format!("accum.{path}"), HostTensor::zeros(shape, dtype)?);
            }
        }
        report("initial state drawn");
        let device = open()?;
        report("device open");
        t.device = device.device;
        t.engine = device.engine(state)?;
        report("state uploaded");
        let mut once = Some(graph);
        t.engine
            .run(
                kind,
                batch_size,
                &mut || {
                    once.take()
                        .ok_or_else(|| Error::InvalidGraph("compiled twice".into()))
                },
                &[],
            )
            .map(|_| ())
            .or_else(|e| {
                if matches!(e, Error::Input(_)) {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        report("step compiled");
        Ok(t)
    }

    pub fn model(&self) -> &ModelSpec {
        &self.steps.model
    }
    pub fn config(&self) -> &TrainerConfig {
        &self.steps.config
    }
    /// The device the step runs on.
    pub fn device(&self) -> Device {
        self.device
    }
    /// Optimizer updates applied so far.
    pub fn steps(&self) -> u64 {
        self.updates
    }
    /// Training-mode forward passes so far (one per `train_batch`, accumulation micro-batches
    /// included, one per L-BFGS evaluation): PyTorch's BatchNorm `num_batches_tracked`, which
    /// checkpoints store for every layer with running statistics.
    pub fn batches_tracked(&self) -> u64 {
        self.forwards
    }
    pub(crate) fn set_batches_tracked(&mut self, n: u64) {
        self.forwards = n;
    }
    /// The learning rate the next update uses.
    pub fn learning_rate(&self) -> f64 {
        self.lr_override.unwrap_or_else(|| self.scheduler.lr())
    }
    /// Replaces the schedule's learning rate from now on (an LR callback's lever).
    pub fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::Spec(format!(
                "learning rate must be a finite number ≥ 0, got {lr}"
            )));
        }
        self.lr_override = Some(lr);
        Ok(())
    }
    /// The optimizer scalars of the last update (zeros before the first), which checkpoints
    /// keep as `optim.hyper`.
    pub(crate) fn last_hyper(&self) -> HostTensor {
        let h = self.last_hyper.unwrap_or([0.0; HYPER_LEN]);
        HostTensor::from_f64(&[HYPER_LEN], self.steps.config.dtype, &h).expect("HYPER_LEN values")
    }
    pub(crate) fn set_last_hyper(&mut self, t: &HostTensor) -> Result<()> {
        let v = t.to_f64();
        let h: [f64; HYPER_LEN] = v.as_slice().try_into().map_err(|_| {
            Error::Input(format!(
                "\"optim.hyper\" has {} values, expected {HYPER_LEN}",
                v.len()
            ))
        })?;
        self.last_hyper = Some(h);
        Ok(())
    }
    pub(crate) fn progress_json(&self) -> serde_json::Value {
        crate::checkpoint::progress_json(
            self.updates,
            self.forwards,
            self.micro,
            self.mu_product,
            self.scheduler.state(),
            self.lr_override,
        )
    }

    pub(crate) fn restore_progress(&mut self, v: &serde_json::Value) -> Result<()> {
        let bad = || Error::Spec(format!("checkpoint progress {v} is malformed"));
        self.updates = v["updates"].as_u64().ok_or_else(bad)?;
        self.micro = v["micro"].as_u64().ok_or_else(bad)? as usize;
        self.mu_product = v["mu_product"].as_f64().ok_or_else(bad)?;
        let sched: Vec<f64> = v["schedule"]
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|x| crate::checkpoint::number(x).ok_or_else(bad))
            .collect::<Result<_>>()?;
        self.scheduler.restore(&sched)?;
        self.lr_override = v["lr_override"].as_f64();
        // absent from checkpoints older than num_batches_tracked support
        self.forwards = v["forwards"].as_u64().unwrap_or(0);
        Ok(())
    }

    /// Advances the learning-rate schedule by one step (`metric` feeds ReduceOnPlateau).
    pub fn step_schedule(&mut self, metric: Option<f64>) {
        match metric {
            Some(m) => self.scheduler.step_with_metric(m),
            None => self.scheduler.step(),
        }
    }
    /// Kernels in the compiled training step for `batch` (after its first use).
    pub fn kernel_count(&self, batch: usize) -> Option<usize> {
        let kind = if self.steps.config.optimizer == OptimizerType::Lbfgs {
            StepKind::LossGrad
        } else {
            StepKind::Train
        };
        self.engine.kernel_count(kind, batch)
    }

    /// A copy of a persistent buffer (`dense1.weight`, `optim.dense1.weight.exp_avg`, `rng`, …).
    pub fn state(&self, name: &str) -> Result<HostTensor> {
        self.engine.read(name)
    }
    /// Names of every persistent buffer.
    pub fn state_names(&self) -> Vec<String> {
        self.engine.names()
    }
    /// Replaces a persistent buffer (same shape and dtype).
    pub fn set_state(&mut self, name: &str, value: &HostTensor) -> Result<()> {
        let old = self.engine.read(name)?;
        if old.shape() != value.shape() || old.dtype() != value.dtype() {
            return Err(Error::Input(format!(
                "state \"{name}\" is {}{}, got {}{}",
                old.dtype(),
                fmt_shape(old.shape()),
                value.dtype(),
                fmt_shape(value.shape())
            )));
        }
        self.engine.write(name, value)
    }

    /// One training step on a batch. Nothing changes when the batch is rejected.
    pub fn train_batch<'a>(
        &mut self,
        x: &[f32],
        x_shape: &[usize],
        labels: impl Into<Labels<'a>>,
        label_shape: &[usize],
    ) -> Result<BatchResult> {
        let labels = labels.into();
        if self.steps.config.optimizer == OptimizerType::Lbfgs {
            return self.lbfgs_batch(x, x_shape, labels, label_shape);
        }
        let (pending, batch) = self.enqueue_train(x, x_shape, labels, label_shape)?;
        Ok(self.steps.batch_result(&pending.wait()?, batch))
    }

    /// A training step like [`train_batch`](Self::train_batch) that does not wait for the
    /// device: the batch is checked and copied (into the backend's page-locked staging memory
    /// when it has some), the step is enqueued, and its result is read later by
    /// [`next_result`](Self::next_result) or [`wait_results`](Self::wait_results), so the host
    /// prepares the next batch while this one runs. The same steps in the same order give the same
    /// numbers as `train_batch`. Nothing changes when the batch is rejected; an error of the
    /// device while running comes from the result. L-BFGS runs synchronously.
    pub fn submit_batch<'a>(
        &mut self,
        x: &[f32],
        x_shape: &[usize],
        labels: impl Into<Labels<'a>>,
        label_shape: &[usize],
    ) -> Result<()> {
        let labels = labels.into();
        let entry = if self.steps.config.optimizer == OptimizerType::Lbfgs {
            Submitted::Done(self.lbfgs_batch(x, x_shape, labels, label_shape)?)
        } else {
            let (p, batch) = self.enqueue_train(x, x_shape, labels, label_shape)?;
            Submitted::Running(p, batch)
        };
        self.pending.push_back(entry);
        Ok(())
    }

    /// Steps submitted by [`submit_batch`](Self::submit_batch) whose results are not read yet.
    pub fn pending_results(&self) -> usize {
        self.pending.len()
    }

    /// Waits for the oldest submitted step and returns its result (`None` when none is pending).
    pub fn next_result(&mut self) -> Option<Result<BatchResult>> {
        Some(match self.pending.pop_front()? {
            Submitted::Running(p, batch) => p.wait().map(|o| self.steps.batch_result(&o, batch)),
            Submitted::Done(r) => Ok(r),
        })
    }

    /// Waits for every submitted step and returns their results in submission order.
    pub fn wait_results(&mut self) -> Result<Vec<BatchResult>> {
        let mut v = Vec::with_capacity(self.pending.len());
        while let Some(r) = self.next_result() {
            v.push(r?);
        }
        Ok(v)
    }

    /// Waits until every step compiled so far runs its final code. On CUDA with quick start on
    /// (the default, see `lamina_cuda::CudaConfig::quick_start`) the first steps run kernels
    /// compiled for a fast start while the optimised ones compile in the background; training
    /// swaps them in by itself once they are ready, and this waits for that (a benchmark calls
    /// it before timing). Elsewhere it returns at once.
    pub fn finish_compiling(&mut self) -> Result<()> {
        self.engine.finish_compiling()
    }

    /// Device memory this trainer's backend holds for it, in bytes: persistent buffers
    /// (parameters, optimizer state), every compiled step (arena, constants, scratch, input
    /// buffers) and the backend's own workspace. 0 on the CPU.
    pub fn device_bytes(&self) -> usize {
        self.engine.device_bytes()
    }

    fn lbfgs_batch(
        &mut self,
        x: &[f32],
        x_shape: &[usize],
        labels: Labels,
        label_shape: &[usize],
    ) -> Result<BatchResult> {
        let (xt, yt) = self.steps.check_batch_into(
            x,
            x_shape,
            Some((labels, label_shape)),
            self.x_reuse.take(),
        )?;
        let r = self.lbfgs_step(&xt, &yt.expect("labels were given"), x_shape[0]);
        self.x_reuse = Some(xt);
        r
    }

    /// Checks a batch, feeds it and enqueues a Train (or Accumulate) step; the step's outputs and
    /// batch size.
    fn enqueue_train(
        &mut self,
        x: &[f32],
        x_shape: &[usize],
        labels: Labels,
        label_shape: &[usize],
    ) -> Result<(PendingOutputs, usize)> {
        let t0 = std::time::Instant::now();
        self.steps.check_x_shape(x, x_shape)?;
        let yt = self.steps.label_tensor(x_shape, labels, label_shape)?;
        let t1 = std::time::Instant::now();
        let batch = x_shape[0];
        let apply = self.micro + 1 == self.steps.config.accumulate_grad_batches;
        let kind = if apply {
            StepKind::Train
        } else {
            StepKind::Accumulate
        };
        // f32 batches go straight into the backend's staging memory, checked on the way: the
        // only host copy
        let steps = &self.steps;
        let mut slots = Vec::new();
        let mut build = || steps.graph(kind, batch, &mut slots);
        let staged = steps.config.dtype == DType::F32
            && self.engine.stage(kind, batch, &mut build, 0, &mut |mem| {
                // SAFETY: any bit pattern is an f32; the split checks the alignment.
                let (pre, v, post) = unsafe { mem.align_to_mut::<f32>() };
                if !pre.is_empty() || !post.is_empty() || v.len() != x.len() {
                    return Err(Error::Backend {
                        backend: "staging".into(),
                        msg: format!(
                            "staging memory of {} bytes does not hold {} f32 values",
                            pre.len() + 4 * v.len() + post.len(),
                            x.len()
                        ),
                    });
                }
                copy_finite(x, Some(v))
            })?;
        let xt = if staged {
            None
        } else {
            Some(self.steps.x_tensor(x, x_shape, self.x_reuse.take())?)
        };
        let t2 = std::time::Instant::now();
        let mut mu = self.mu_product;
        let hyper = if apply {
            let h = optim::hyper(
                &self.steps.config,
                self.learning_rate(),
                self.updates + 1,
                &mut mu,
            );
            Some((
                h,
                HostTensor::from_f64(&[HYPER_LEN], self.steps.config.dtype, &h)?,
            ))
        } else {
            None
        };
        let t3 = std::time::Instant::now();
        let feed_x = match &xt {
            Some(t) => Feed::Host(t),
            None => Feed::Staged,
        };
        let steps = &self.steps;
        let mut build = || steps.graph(kind, batch, &mut slots);
        let pending = match &hyper {
            Some((_, ht)) => self.engine.submit(
                kind,
                batch,
                &mut build,
                &[feed_x, Feed::Host(&yt), Feed::Host(ht)],
            ),
            None => self
                .engine
                .submit(kind, batch, &mut build, &[feed_x, Feed::Host(&yt)]),
        };
        if xt.is_some() {
            self.x_reuse = xt;
        }
        let pending = pending?;
        if let Some((sums, n)) = &mut self.profile {
            *n += 1;
            if (20..120).contains(n) {
                let marks = [t0, t1, t2, t3, std::time::Instant::now()];
                for (k, w) in marks.windows(2).enumerate() {
                    sums[k] += (w[1] - w[0]).as_secs_f64() * 1e6;
                }
            }
            if *n == 119 {
                let [c, i, h, s] = sums.map(|t| t / 100.0);
                eprintln!("lamina-train host per step (steps 20-119): checks and labels {c:.1} us, input copy {i:.1}, hyper-parameters {h:.1}, submit {s:.1}");
            }
        }
        self.forwards += 1;
        if apply {
            self.micro = 0;
            self.updates += 1;
            self.mu_product = mu;
            self.last_hyper = hyper.map(|h| h.0);
            if self.steps.config.schedule_step == ScheduleStep::Batch {
                self.scheduler.step();
            }
        } else {
            self.micro += 1;
        }
        Ok((pending, batch))
    }

    fn lbfgs_step(
        &mut self,
        xt: &HostTensor,
        yt: &HostTensor,
        batch: usize,
    ) -> Result<BatchResult> {
        let dtype = self.steps.config.dtype;
        let mut flat: Vec<f64> = Vec::new();
        for (path, _) in &self.trainable {
            flat.extend(self.engine.read(path)?.to_f64());
        }
        let settings = LbfgsSettings {
            lr: self.learning_rate(),
            max_iter: self.steps.config.lbfgs_max_iter,
            max_eval: self.steps.config.lbfgs_max_iter * 5 / 4,
            tolerance_grad: self.steps.config.lbfgs_tolerance_grad,
            tolerance_change: self.steps.config.lbfgs_tolerance_change,
            history_size: self.steps.config.lbfgs_history,
        };
        let trainable = self.trainable.clone();
        let mut first: Option<Vec<HostTensor>> = None;
        let mut lbfgs = std::mem::take(&mut self.lbfgs);
        let mut evals = 0u64;
        let steps = &self.steps;
        let engine = &mut self.engine;
        let mut eval = |x: &[f64]| -> Result<(f64, Vec<f64>)> {
            let mut off = 0;
            for (path, shape) in &trainable {
                let n: usize = shape.iter().product();
                engine.write(path, &HostTensor::from_f64(shape, dtype, &x[off..off + n])?)?;
                off += n;
            }
            let mut slots = Vec::new();
            let mut build = || steps.graph(StepKind::LossGrad, batch, &mut slots);
            let outs = engine.run(StepKind::LossGrad, batch, &mut build, &[xt, yt])?;
            evals += 1; // each evaluation is a training-mode forward pass (BatchNorm updates)
            let loss = outs[0].to_f64()[0];
            let g: Vec<f64> = outs[2..].iter().flat_map(|t| t.to_f64()).collect();
            if first.is_none() {
                first = Some(outs[..2].to_vec());
            }
            Ok((loss, g))
        };
        let r = lbfgs.step(&settings, &mut flat, &mut eval);
        self.lbfgs = lbfgs;
        self.forwards += evals;
        r?;
        let mut off = 0;
        for (path, shape) in &trainable {
            let n: usize = shape.iter().product();
            self.engine.write(
                path,
                &HostTensor::from_f64(shape, dtype, &flat[off..off + n])?,
            )?;
            off += n;
        }
        self.updates += 1;
        let outs = first.ok_or_else(|| Error::InvalidGraph("L-BFGS evaluated nothing".into()))?;
        Ok(self.steps.batch_result(&outs, batch))
    }

    /// Loss and metric in evaluation mode (dropout off, BatchNorm running statistics).
    pub fn evaluate<'a>(
        &mut self,
        x: &[f32],
        x_shape: &[usize],
        labels: impl Into<Labels<'a>>,
        label_shape: &[usize],
    ) -> Result<BatchResult> {
        let (xt, yt) = self
            .steps
            .check_batch(x, x_shape, Some((labels.into(), label_shape)))?;
        let yt = yt.expect("labels were given");
        let batch = x_shape[0];
        let outs = self.run_kind(StepKind::Eval, batch, &[&xt, &yt])?;
        Ok(self.steps.batch_result(&outs, batch))
    }

    /// The model's outputs in evaluation mode, for any batch size.
    pub fn predict(&mut self, x: &[f32], x_shape: &[usize]) -> Result<Prediction> {
        let (xt, _) = self.steps.check_batch(x, x_shape, None)?;
        let outs = self.run_kind(StepKind::Predict, x_shape[0], &[&xt])?;
        let y = &outs[0];
        let logits = self.steps.config.loss == LossFunction::BceWithLogits;
        Ok(Prediction {
            values: y.to_f64().iter().map(|&v| v as f32).collect(),
            shape: y.shape().to_vec(),
            binary_threshold: if logits { 0.0 } else { 0.5 },
        })
    }

    fn run_kind(
        &mut self,
        kind: StepKind,
        batch: usize,
        inputs: &[&HostTensor],
    ) -> Result<Vec<HostTensor>> {
        let steps = &self.steps;
        let mut slots = Vec::new();
        let mut build = || steps.graph(kind, batch, &mut slots);
        self.engine.run(kind, batch, &mut build, inputs)
    }
}
