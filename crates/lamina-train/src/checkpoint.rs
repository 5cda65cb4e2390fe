//! Checkpoints: one safetensors file with every persistent buffer (parameters by path, optimizer
//! state `optim.<path>.<slot>`, BatchNorm statistics, the random key) and metadata (the model spec,
//! the trainer configuration, step counters, the schedule's state). Saves are atomic: a temporary
//! file in the same folder, fsync, rename, fsync of the folder.

use crate::trainer::ModelTrainer;
use crate::{Device, TrainerConfig};
use lamina_core::{DType, Error, HostData, HostTensor, Result};
use lamina_nn::{LayerRegistry, ModelSpec};
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
    /// training continues exactly where it stopped.
    pub fn load_checkpoint(
        path: impl AsRef<Path>,
        registry: &LayerRegistry,
        device: Device,
    ) -> Result<ModelTrainer> {
        let path = path.as_ref();
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
        let spec = ModelSpec::from_json(get("spec")?, registry)?;
        let cfg_json: Value = serde_json::from_str(get("config")?)
            .map_err(|e| io(path, format!("config metadata: {e}")))?;
        let mut config = TrainerConfig::from_json(&cfg_json, &[])?;
        config.device = device;
        let mut t = ModelTrainer::new(&spec, config)?;
        let names = t.state_names();
        for name in &names {
            let view = st
                .tensor(name)
                .map_err(|_| io(path, format!("tensor \"{name}\" is missing")))?;
            let d = view.data();
            let shape = view.shape().to_vec();
            let host = match view.dtype() {
                safetensors::Dtype::F32 => HostTensor::f32(
                    &shape,
                    d.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
                safetensors::Dtype::F64 => HostTensor::f64(
                    &shape,
                    d.chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect(),
                ),
                safetensors::Dtype::I32 => HostTensor::i32(
                    &shape,
                    d.chunks_exact(4)
                        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
                other => {
                    return Err(io(
                        path,
                        format!("tensor \"{name}\" has dtype {other:?}, expected f32, f64 or i32"),
                    ))
                }
            }?;
            if let Some(i) = host.to_f64().iter().position(|v| v.is_nan()) {
                if host.dtype() != DType::I32 {
                    return Err(io(
                        path,
                        format!("tensor \"{name}\" holds NaN at element {i}"),
                    ));
                }
            }
            t.set_state(name, &host).map_err(|e| io(path, e))?;
        }
        for name in st.names() {
            if !names.contains(name) {
                return Err(io(
                    path,
                    format!("tensor \"{name}\" does not belong to this model"),
                ));
            }
        }
        let progress: Value = serde_json::from_str(get("progress")?)
            .map_err(|e| io(path, format!("progress metadata: {e}")))?;
        t.restore_progress(&progress).map_err(|e| io(path, e))?;
        Ok(t)
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
