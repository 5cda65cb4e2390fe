//! Checkpoints: one safetensors file with every persistent buffer (parameters by path, optimizer
//! state `optim.<path>.<slot>`, BatchNorm statistics, the random key) and metadata (the model spec,
//! the trainer configuration, step counters, the schedule's state). Saves are atomic: a temporary
//! file in the same folder, fsync, rename, fsync of the folder.

use crate::engine::{Engine, StepKind};
use crate::trainer::ModelTrainer;
use crate::trainer::Prediction;
use crate::{Device, TrainerConfig};
use lamina_core::{dtype::fmt_shape, DType, Error, HostData, HostTensor, Result};
use lamina_nn::{LayerRegistry, Mode, ModelSpec};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// Version tag in every checkpoint's metadata.
pub const CHECKPOINT_FORMAT: &str = "lamina.checkpoint/1";

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{}: {e}", path.display()))
}

/// An error about `label` (a file's path, or "checkpoint" for bytes in memory).
fn err(label: &str, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{label}: {e}"))
}

fn bytes_of(t: &HostTensor) -> (safetensors::Dtype, Vec<u8>) {
    match t.data() {
        HostData::F32(v) => (
            safetensors::Dtype::F32,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        HostData::F64(v) => (
            safetensors::Dtype::F64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        HostData::I32(v) => (
            safetensors::Dtype::I32,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        HostData::Bool(v) => (
            safetensors::Dtype::BOOL,
            v.iter().map(|&b| b as u8).collect(),
        ),
    }
}

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let name = path
        .file_name()
        .ok_or_else(|| io(path, "not a file path"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    // the rename itself must reach the disk
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The checkpoint key of the last update's optimizer scalars.
const HYPER_KEY: &str = "optim.hyper";

/// Whether a checkpoint key is lamina's own rather than part of the model's PyTorch
/// `state_dict`: `rng` and every key that starts with `optim.` or `accum.` (layer names cannot be
/// `rng`, `optim` or `accum`, so no parameter path collides). The rest — parameters and buffers
/// by path, `<bn>.num_batches_tracked` — loads into the equivalent `torch.nn` module with
/// `strict=True`:
///
/// ```text
/// sd = {k: v for k, v in safetensors.torch.load_file(path).items()
///       if k != "rng" and not k.startswith(("optim.", "accum."))}
/// model.load_state_dict(sd, strict=True)
/// ```
pub fn is_lamina_only(key: &str) -> bool {
    key == "rng" || key.starts_with("optim.") || key.starts_with("accum.")
}

/// `<path>.num_batches_tracked` for every layer with running statistics (a `running_mean` and a
/// `running_var` buffer, as PyTorch's BatchNorm has): the int64 scalars checkpoints add.
pub fn batches_tracked_keys(spec: &ModelSpec) -> Vec<String> {
    let buffers: Vec<&str> = spec
        .params()
        .filter(|p| !p.trainable)
        .map(|p| p.path.as_str())
        .collect();
    buffers
        .iter()
        .filter_map(|p| p.strip_suffix("running_mean"))
        .filter(|prefix| buffers.contains(&format!("{prefix}running_var").as_str()))
        .map(|prefix| format!("{prefix}num_batches_tracked"))
        .collect()
}

impl ModelTrainer {
    /// The bytes [`ModelTrainer::save_checkpoint`] writes.
    pub(crate) fn checkpoint_bytes(&self) -> Result<Vec<u8>> {
        let what = "checkpoint";
        // (name, dtype, bytes, shape) of every buffer; the views below borrow the bytes
        let mut encoded = Vec::new();
        for name in self.state_names() {
            let t = self.state(&name)?;
            let (dtype, bytes) = bytes_of(&t);
            encoded.push((name, dtype, bytes, t.shape().to_vec()));
        }
        // the optimizer scalars are fed with each batch, not kept in a buffer
        let h = self.last_hyper();
        let (dtype, bytes) = bytes_of(&h);
        encoded.push((HYPER_KEY.to_string(), dtype, bytes, h.shape().to_vec()));
        // PyTorch keeps num_batches_tracked as an int64 scalar
        let tracked = (self.batches_tracked() as i64).to_le_bytes().to_vec();
        for key in batches_tracked_keys(self.model()) {
            encoded.push((key, safetensors::Dtype::I64, tracked.clone(), vec![]));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = encoded
            .iter()
            .map(|(n, d, b, s)| {
                safetensors::tensor::TensorView::new(*d, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| err(what, e))
            })
            .collect::<Result<_>>()?;
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), CHECKPOINT_FORMAT.to_string());
        meta.insert(
            "lamina_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        );
        meta.insert("spec".to_string(), self.model().to_json());
        meta.insert("config".to_string(), self.config().to_json().to_string());
        meta.insert("progress".to_string(), self.progress_json().to_string());
        safetensors::tensor::serialize(views, &Some(meta)).map_err(|e| err(what, e))
    }

    /// Saves every persistent buffer and the metadata needed to resume exactly.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.checkpoint_bytes().map_err(|e| io(path, e))?;
        write_atomic(path, &bytes)
    }

    /// Loads a checkpoint written by [`ModelTrainer::save_checkpoint`]: the model (custom layers
    /// through `registry`), its configuration (on `device`), every buffer and the counters, so
    /// training continues exactly where it stopped. A missing or extra tensor, a wrong shape or
    /// dtype, or a NaN is an error naming the file and the tensor.
    pub fn load_checkpoint(
        path: impl AsRef<Path>,
        registry: &LayerRegistry,
        device: Device,
    ) -> Result<ModelTrainer> {
        let path = path.as_ref();
        let mut file = CheckpointFile::read(path, registry)?;
        let mut config = file.config.clone();
        config.device = device;
        let mut t = ModelTrainer::new(&file.spec, config)?;
        let names = t.state_names();
        for name in &names {
            let host = file
                .tensors
                .remove(name)
                .ok_or_else(|| io(path, format!("tensor \"{name}\" is missing")))?;
            t.set_state(name, &host).map_err(|e| io(path, e))?;
        }
        if let Some(h) = file.tensors.remove(HYPER_KEY) {
            t.set_last_hyper(&h).map_err(|e| io(path, e))?;
        }
        let keys = batches_tracked_keys(&file.spec);
        let tracked =
            take_batches_tracked(&keys, &mut file.batches_tracked).map_err(|e| io(path, e))?;
        let extra = file
            .tensors
            .keys()
            .chain(file.batches_tracked.keys())
            .next();
        if let Some(extra) = extra {
            return Err(io(
                path,
                format!("tensor \"{extra}\" does not belong to this model"),
            ));
        }
        t.restore_progress(&file.progress)
            .map_err(|e| io(path, e))?;
        // the int64 tensors are what PyTorch users see (and may edit): they win
        if !keys.is_empty() {
            t.set_batches_tracked(tracked);
        }
        Ok(t)
    }

    /// Loads a plain `state_dict` file — what `safetensors.torch.save_file(model.state_dict(),
    /// path)` writes for the equivalent `torch.nn` module, or a lamina checkpoint — into this
    /// trainer's parameters and buffers, like PyTorch's `load_state_dict(strict=True)`: every
    /// parameter and buffer by path, `<bn>.num_batches_tracked` (int64) for layers with running
    /// statistics; lamina-only keys ([`is_lamina_only`]) are skipped. A missing or unexpected key,
    /// a wrong shape, a non-float dtype or a NaN is an error naming the file and the key, and
    /// then nothing changes. Floats are cast to the trainer's dtype; optimizer state, the random
    /// key and the step counters stay as they are.
    pub fn load_state_dict(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let label = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| err(&label, format!("not a safetensors file: {e}")))?;
        let (mut tensors, mut tracked) = decode_tensors(&st, &label, true)?;
        tensors.retain(|k, _| !is_lamina_only(k));
        let dtype = self.config().dtype;
        let mut values = Vec::new();
        for p in self.model().params() {
            let t = tensors
                .remove(&p.path)
                .ok_or_else(|| err(&label, format!("tensor \"{}\" is missing", p.path)))?;
            if t.shape() != p.shape.as_slice() || !t.dtype().is_float() {
                return Err(err(
                    &label,
                    format!(
                        "tensor \"{}\" is {}{}, the model needs a float tensor of shape {}",
                        p.path,
                        t.dtype(),
                        fmt_shape(t.shape()),
                        fmt_shape(&p.shape)
                    ),
                ));
            }
            values.push((p.path.clone(), t.cast(dtype)?));
        }
        let keys = batches_tracked_keys(self.model());
        let n = take_batches_tracked(&keys, &mut tracked).map_err(|e| err(&label, e))?;
        if let Some(extra) = tensors.keys().chain(tracked.keys()).next() {
            return Err(err(
                &label,
                format!("tensor \"{extra}\" does not belong to this model"),
            ));
        }
        for (name, v) in values {
            self.set_state(&name, &v).map_err(|e| err(&label, e))?;
        }
        if !keys.is_empty() {
            self.set_batches_tracked(n);
        }
        Ok(())
    }
}

/// Removes the model's `num_batches_tracked` entries from `tracked`; the trainer keeps one count
/// (every BatchNorm sees every training forward pass), the largest one found.
fn take_batches_tracked(keys: &[String], tracked: &mut HashMap<String, u64>) -> Result<u64> {
    let mut n = 0;
    for key in keys {
        let v = tracked
            .remove(key)
            .ok_or_else(|| Error::Input(format!("tensor \"{key}\" is missing")))?;
        n = n.max(v);
    }
    Ok(n)
}

/// Every tensor of a safetensors file: floats (no NaN) and i32 as host tensors, the int64
/// `*.num_batches_tracked` scalars as counts. With `any_float`, f16/bf16 are accepted too
/// (state_dicts); checkpoints hold f32, f64 and i32 only.
type Decoded = (HashMap<String, HostTensor>, HashMap<String, u64>);
fn decode_tensors(st: &safetensors::SafeTensors, label: &str, any_float: bool) -> Result<Decoded> {
    let mut tensors = HashMap::new();
    let mut tracked = HashMap::new();
    for (name, view) in st.tensors() {
        let d = view.data();
        let shape = view.shape().to_vec();
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F64 => DType::F64,
            safetensors::Dtype::I32 => DType::I32,
            safetensors::Dtype::I64 if name.ends_with(".num_batches_tracked") => {
                let n = match <[u8; 8]>::try_from(d) {
                    Ok(b) if shape.is_empty() => i64::from_le_bytes(b),
                    _ => {
                        return Err(err(
                            label,
                            format!(
                                "tensor \"{name}\" is i64{}, num_batches_tracked is an i64 scalar",
                                fmt_shape(&shape)
                            ),
                        ))
                    }
                };
                let n = u64::try_from(n).map_err(|_| {
                    err(
                        label,
                        format!("tensor \"{name}\" is {n}, a count cannot be negative"),
                    )
                })?;
                tracked.insert(name, n);
                continue;
            }
            safetensors::Dtype::F16 | safetensors::Dtype::BF16 if any_float => {
                let wide: Vec<f64> = d
                    .chunks_exact(2)
                    .map(|b| {
                        let bits = u16::from_le_bytes([b[0], b[1]]);
                        if view.dtype() == safetensors::Dtype::BF16 {
                            f32::from_bits((bits as u32) << 16) as f64
                        } else {
                            f16_to_f64(bits)
                        }
                    })
                    .collect();
                let host = HostTensor::from_f64(&shape, DType::F32, &wide)
                    .map_err(|e| err(label, format!("tensor \"{name}\": {e}")))?;
                check_nan(&host, &name, label)?;
                tensors.insert(name, host);
                continue;
            }
            other => {
                return Err(err(
                    label,
                    format!("tensor \"{name}\" has dtype {other:?}, expected f32, f64 or i32"),
                ))
            }
        };
        let host = HostTensor::from_le_bytes(&shape, dtype, d)
            .map_err(|e| err(label, format!("tensor \"{name}\": {e}")))?;
        check_nan(&host, &name, label)?;
        tensors.insert(name, host);
    }
    Ok((tensors, tracked))
}

fn check_nan(host: &HostTensor, name: &str, label: &str) -> Result<()> {
    if host.dtype() != DType::I32 {
        if let Some(i) = host.to_f64().iter().position(|v| v.is_nan()) {
            return Err(err(
                label,
                format!("tensor \"{name}\" holds NaN at element {i}"),
            ));
        }
    }
    Ok(())
}

/// IEEE half precision to f64 (exact).
fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let frac = (bits & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// The decoded contents of a checkpoint file.
pub struct CheckpointFile {
    pub spec: ModelSpec,
    pub config: TrainerConfig,
    /// Step counters and the schedule's state.
    pub progress: Value,
    /// Every tensor by name, apart from the `num_batches_tracked` counts.
    pub tensors: HashMap<String, HostTensor>,
    /// `<bn>.num_batches_tracked` (int64 scalars in the file) by name.
    pub batches_tracked: HashMap<String, u64>,
}

impl CheckpointFile {
    /// Reads and checks a checkpoint: safetensors structure (the crate rejects bad header lengths,
    /// out-of-bounds and overlapping offsets), lamina metadata, dtypes, and no NaN in floats. Reads
    /// the file once; nothing larger than the file is allocated.
    pub fn read(path: &Path, registry: &LayerRegistry) -> Result<CheckpointFile> {
        let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
        Self::parse(&bytes, &path.display().to_string(), registry)
    }

    /// [`CheckpointFile::read`] of bytes in memory; errors name `"checkpoint"`.
    pub fn from_bytes(bytes: &[u8], registry: &LayerRegistry) -> Result<CheckpointFile> {
        Self::parse(bytes, "checkpoint", registry)
    }

    fn parse(bytes: &[u8], label: &str, registry: &LayerRegistry) -> Result<CheckpointFile> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| err(label, format!("not a safetensors checkpoint: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| err(label, format!("not a safetensors checkpoint: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            meta.get(k).ok_or_else(|| {
                err(
                    label,
                    format!("metadata has no \"{k}\" (not a lamina checkpoint?)"),
                )
            })
        };
        if get("format")? != CHECKPOINT_FORMAT {
            return Err(err(
                label,
                format!("format {} is not {CHECKPOINT_FORMAT}", get("format")?),
            ));
        }
        let spec = ModelSpec::from_json(get("spec")?, registry).map_err(|e| err(label, e))?;
        let cfg_json: Value = serde_json::from_str(get("config")?)
            .map_err(|e| err(label, format!("config metadata: {e}")))?;
        let config = TrainerConfig::from_json(&cfg_json, &[]).map_err(|e| err(label, e))?;
        let progress: Value = serde_json::from_str(get("progress")?)
            .map_err(|e| err(label, format!("progress metadata: {e}")))?;
        let (tensors, batches_tracked) = decode_tensors(&st, label, false)?;
        Ok(CheckpointFile {
            spec,
            config,
            progress,
            tensors,
            batches_tracked,
        })
    }
}

/// Inference only: a model's parameters and buffers from a checkpoint (no optimizer state), and
/// its forward pass in evaluation mode compiled per batch size.
///
/// ```no_run
/// let mut inf = lamina_train::Inferencer::load("run/checkpoint.safetensors", lamina_train::Device::Cpu).unwrap();
/// let p = inf.predict(&[0.0; 64], &[1, 64]).unwrap();
/// ```
pub struct Inferencer {
    spec: ModelSpec,
    dtype: DType,
    binary_threshold: f32,
    engine: Box<dyn Engine>,
}

impl Inferencer {
    /// Loads with the built-in layers only; [`Inferencer::load_with`] takes a registry.
    pub fn load(path: impl AsRef<Path>, device: Device) -> Result<Inferencer> {
        Self::load_with(path, &LayerRegistry::new(), device)
    }

    /// [`Inferencer::load`] with custom layers built through `registry`.
    pub fn load_with(
        path: impl AsRef<Path>,
        registry: &LayerRegistry,
        device: Device,
    ) -> Result<Inferencer> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
        Self::from_file(
            CheckpointFile::parse(&bytes, &path.display().to_string(), registry),
            &path.display().to_string(),
            device,
        )
    }

    /// [`Inferencer::load_with`] of a checkpoint's bytes in memory; errors name `"checkpoint"`.
    pub fn from_bytes(
        bytes: &[u8],
        registry: &LayerRegistry,
        device: Device,
    ) -> Result<Inferencer> {
        Self::from_file(
            CheckpointFile::parse(bytes, "checkpoint", registry),
            "checkpoint",
            device,
        )
    }

    /// Takes the spec's parameters out of a parsed checkpoint; errors name `label`.
    fn from_file(file: Result<CheckpointFile>, label: &str, device: Device) -> Result<Inferencer> {
        let device = crate::engine::resolve_device(device)?;
        let mut file = file?;
        let dtype = file.config.dtype;
        let mut state = lamina_core::StateMap::new();
        for p in file.spec.params() {
            let t = file
                .tensors
                .remove(&p.path)
                .ok_or_else(|| err(label, format!("tensor \"{}\" is missing", p.path)))?;
            state.insert(p.path.clone(), t);
        }
        let binary_threshold = if file.config.loss == crate::LossFunction::BceWithLogits {
            0.0
        } else {
            0.5
        };
        Self::build(file.spec, state, dtype, binary_threshold, device).map_err(|e| err(label, e))
    }

    /// An inferencer for `spec` with the given parameters and buffers by path (an imported ONNX
    /// model's, say), computing in `dtype`. Every parameter of the spec must be present with its
    /// shape; tensors of another dtype are cast; an extra tensor is an error. Binary predictions
    /// split single outputs at 0.5.
    pub fn from_weights(
        spec: ModelSpec,
        weights: lamina_core::StateMap<HostTensor>,
        dtype: DType,
        device: Device,
    ) -> Result<Inferencer> {
        let device = crate::engine::resolve_device(device)?;
        let mut weights = weights;
        let mut state = lamina_core::StateMap::new();
        for p in spec.params() {
            let t = weights
                .remove(&p.path)
                .ok_or_else(|| Error::Spec(format!("tensor \"{}\" is missing", p.path)))?;
            let t = if t.dtype() == dtype {
                t
            } else {
                t.cast(dtype)?
            };
            state.insert(p.path.clone(), t);
        }
        if let Some(extra) = weights.keys().next() {
            return Err(Error::Spec(format!(
                "tensor \"{extra}\" does not belong to this model"
            )));
        }
        Self::build(spec, state, dtype, 0.5, device)
    }

    /// Checks every parameter's shape and dtype and compiles the engine.
    fn build(
        spec: ModelSpec,
        state: lamina_core::StateMap<HostTensor>,
        dtype: DType,
        binary_threshold: f32,
        device: Device,
    ) -> Result<Inferencer> {
        for p in spec.params() {
            let t = &state[&p.path];
            if t.shape() != p.shape.as_slice() || t.dtype() != dtype {
                return Err(Error::Spec(format!(
                    "tensor \"{}\" is {}{:?}, the model needs {dtype}{:?}",
                    p.path,
                    t.dtype(),
                    t.shape(),
                    p.shape
                )));
            }
        }
        let engine = crate::engine::engine_for(device, state)?;
        Ok(Inferencer {
            spec,
            dtype,
            binary_threshold,
            engine,
        })
    }

    pub fn model(&self) -> &ModelSpec {
        &self.spec
    }

    /// The model's outputs (evaluation mode) for a batch of any size.
    pub fn predict(&mut self, x: &[f32], x_shape: &[usize]) -> Result<Prediction> {
        let want = &self.spec.input_shape;
        if x_shape.len() != want.len()
            || x_shape[1..] != want[1..]
            || x_shape[0] == 0
            || x.len() != x_shape.iter().product::<usize>()
        {
            return Err(Error::Input(format!(
                "input of shape {:?} with {} values does not match the model's input [batch, {:?}]",
                x_shape,
                x.len(),
                &want[1..]
            )));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::Input(format!(
                "input value {i} is {} (NaN and infinity are not accepted)",
                x[i]
            )));
        }
        let xt = HostTensor::from_f64(
            x_shape,
            self.dtype,
            &x.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        )?;
        let (spec, dtype, batch) = (&self.spec, self.dtype, x_shape[0]);
        let mut build = || spec.forward_graph(batch, Mode::Eval, dtype);
        let outs = self
            .engine
            .run(StepKind::Predict, batch, &mut build, &[&xt])?;
        let y = &outs[0];
        Ok(Prediction {
            values: y.to_f64().iter().map(|&v| v as f32).collect(),
            shape: y.shape().to_vec(),
            binary_threshold: self.binary_threshold,
        })
    }
}

pub(crate) fn progress_json(
    updates: u64,
    forwards: u64,
    micro: usize,
    mu_product: f64,
    schedule: Vec<f64>,
    lr_override: Option<f64>,
) -> Value {
    // JSON has no infinity (ReduceOnPlateau starts with best = ±∞): such values travel as strings
    let schedule: Vec<Value> = schedule
        .iter()
        .map(|&v| {
            if v.is_finite() {
                json!(v)
            } else {
                json!(v.to_string())
            }
        })
        .collect();
    json!({ "updates": updates, "forwards": forwards, "micro": micro, "mu_product": mu_product, "schedule": schedule, "lr_override": lr_override })
}

/// A number written by `progress_json` (finite, or "inf" / "-inf" / "NaN").
pub(crate) fn number(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}
