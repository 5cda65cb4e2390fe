//! Checkpoints: one safetensors file with every persistent buffer (parameters by path, optimizer
//! state `optim.<path>.<slot>`, BatchNorm statistics, the random key) and metadata (the model spec,
//! the trainer configuration, step counters, the schedule's state). Saves are atomic: a temporary
//! file in the same folder, fsync, rename, fsync of the folder.

use crate::engine::{Engine, StepKind};
use crate::trainer::ModelTrainer;
use crate::trainer::Prediction;
use crate::{Device, TrainerConfig};
use lamina_core::{DType, Error, HostData, HostTensor, Result};
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

impl ModelTrainer {
    /// Saves every persistent buffer and the metadata needed to resume exactly.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        // (name, dtype, bytes, shape) of every buffer; the views below borrow the bytes
        let mut encoded = Vec::new();
        for name in self.state_names() {
            let t = self.state(&name)?;
            let (dtype, bytes) = bytes_of(&t);
            encoded.push((name, dtype, bytes, t.shape().to_vec()));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = encoded
            .iter()
            .map(|(n, d, b, s)| {
                safetensors::tensor::TensorView::new(*d, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| io(path, e))
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
        let bytes = safetensors::tensor::serialize(views, &Some(meta)).map_err(|e| io(path, e))?;
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
        if let Some(extra) = file.tensors.keys().next() {
            return Err(io(
                path,
                format!("tensor \"{extra}\" does not belong to this model"),
            ));
        }
        t.restore_progress(&file.progress)
            .map_err(|e| io(path, e))?;
        Ok(t)
    }
}

/// The decoded contents of a checkpoint file.
pub struct CheckpointFile {
    pub spec: ModelSpec,
    pub config: TrainerConfig,
    /// Step counters and the schedule's state.
    pub progress: Value,
    /// Every tensor by name.
    pub tensors: HashMap<String, HostTensor>,
}

impl CheckpointFile {
    /// Reads and checks a checkpoint: safetensors structure (the crate rejects bad header lengths,
    /// out-of-bounds and overlapping offsets), lamina metadata, dtypes, and no NaN in floats. Reads
    /// the file once; nothing larger than the file is allocated.
    pub fn read(path: &Path, registry: &LayerRegistry) -> Result<CheckpointFile> {
        let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| io(path, format!("not a safetensors checkpoint: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| io(path, format!("not a safetensors checkpoint: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            meta.get(k).ok_or_else(|| {
                io(
                    path,
                    format!("metadata has no \"{k}\" (not a lamina checkpoint?)"),
                )
            })
        };
        if get("format")? != CHECKPOINT_FORMAT {
            return Err(io(
                path,
                format!("format {} is not {CHECKPOINT_FORMAT}", get("format")?),
            ));
        }
        let spec = ModelSpec::from_json(get("spec")?, registry).map_err(|e| io(path, e))?;
        let cfg_json: Value = serde_json::from_str(get("config")?)
            .map_err(|e| io(path, format!("config metadata: {e}")))?;
        let config = TrainerConfig::from_json(&cfg_json, &[]).map_err(|e| io(path, e))?;
        let progress: Value = serde_json::from_str(get("progress")?)
            .map_err(|e| io(path, format!("progress metadata: {e}")))?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let d = view.data();
            let shape = view.shape().to_vec();
            let dtype = match view.dtype() {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F64 => DType::F64,
                safetensors::Dtype::I32 => DType::I32,
                other => {
                    return Err(io(
                        path,
                        format!("tensor \"{name}\" has dtype {other:?}, expected f32, f64 or i32"),
                    ))
                }
            };
            let host = HostTensor::from_le_bytes(&shape, dtype, d)
                .map_err(|e| io(path, format!("tensor \"{name}\": {e}")))?;
            if host.dtype() != DType::I32 {
                if let Some(i) = host.to_f64().iter().position(|v| v.is_nan()) {
                    return Err(io(
                        path,
                        format!("tensor \"{name}\" holds NaN at element {i}"),
                    ));
                }
            }
            tensors.insert(name, host);
        }
        Ok(CheckpointFile {
            spec,
            config,
            progress,
            tensors,
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

    pub fn load_with(
        path: impl AsRef<Path>,
        registry: &LayerRegistry,
        device: Device,
    ) -> Result<Inferencer> {
        let path = path.as_ref();
        let device = crate::engine::resolve_device(device)?;
        let mut file = CheckpointFile::read(path, registry)?;
        let dtype = file.config.dtype;
        let mut state = lamina_core::StateMap::new();
        for p in file.spec.params() {
            let t = file
                .tensors
                .remove(&p.path)
                .ok_or_else(|| io(path, format!("tensor \"{}\" is missing", p.path)))?;
            if t.shape() != p.shape.as_slice() || t.dtype() != dtype {
                return Err(io(
                    path,
                    format!(
                        "tensor \"{}\" is {}{:?}, the model needs {dtype}{:?}",
                        p.path,
                        t.dtype(),
                        t.shape(),
                        p.shape
                    ),
                ));
            }
            state.insert(p.path.clone(), t);
        }
        let engine = crate::engine::engine_for(device, state)?;
        let binary_threshold = if file.config.loss == crate::LossFunction::BceWithLogits {
            0.0
        } else {
            0.5
        };
        Ok(Inferencer {
            spec: file.spec,
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
    json!({ "updates": updates, "micro": micro, "mu_product": mu_product, "schedule": schedule, "lr_override": lr_override })
}

/// A number written by `progress_json` (finite, or "inf" / "-inf" / "NaN").
pub(crate) fn number(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}
