//! Golden fixtures: safetensors files written by the scripts in `tools/golden/` where PyTorch is
//! installed. Tests only read them.

use lamina_core::{DType, Error, HostTensor, Result};
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
            safetensors::Dtype::F32 => HostTensor::from_le_bytes(&shape, DType::F32, d),
            safetensors::Dtype::F64 => HostTensor::from_le_bytes(&shape, DType::F64, d),
            safetensors::Dtype::I32 => HostTensor::from_le_bytes(&shape, DType::I32, d),
            // integer labels written by PyTorch as i64 become i32
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
