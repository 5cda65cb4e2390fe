//! Golden fixtures: safetensors files written by the scripts in `tools/golden/` where PyTorch is
//! installed. Tests only read them.

use lamina_core::{Error, HostTensor, Result};
use std::collections::BTreeMap;

/// Every tensor of a safetensors file (F32, F64, I32 or I64; integers become i32).
pub fn load(path: &str) -> Result<BTreeMap<String, HostTensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io(format!("{path}: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Io(format!("{path}: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, t) in st.tensors() {
        let d = t.data();
        let shape = t.shape().to_vec();
        let host = match t.dtype() {
            safetensors::Dtype::F32 => HostTensor::f32(
                &shape,
                d.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
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
                    .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
            ),
            safetensors::Dtype::I64 => HostTensor::i32(
                &shape,
                d.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as i32)
                    .collect(),
            ),
            other => {
                return Err(Error::Io(format!(
                    "{path}: tensor {name} has dtype {other:?}, not supported in fixtures"
                )))
            }
        }?;
        out.insert(name, host);
    }
    Ok(out)
}
