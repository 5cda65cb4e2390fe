//! Element types and host-side tensor data.

use crate::error::{Error, Result};
use std::fmt;

/// Element type of a tensor. `F16` and `BF16` are declared for mixed precision; no backend runs
/// them yet and each says so with an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    I32,
    Bool,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 6] = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::Bool,
    ];

    /// True for the floating-point types (the ones that carry gradients).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    /// Bytes per element as stored in device memory (`Bool` takes one byte).
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Bool => 1,
        }
    }

    /// Short name used by the printer: `f32`, `i32`, `bool`, …
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::Bool => "bool",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Number of elements of a shape (1 for a scalar).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major (C-order) strides of a shape, in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Formats a shape as `[2,3]`.
pub fn fmt_shape(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(","))
}

/// Host-side element storage of a [`HostTensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
}

/// A tensor's data in host memory: what goes into an executable and what comes out.
///
/// ```
/// use lamina_core::{HostTensor, DType};
/// let t = HostTensor::f32(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
/// assert_eq!(t.dtype(), DType::F32);
/// assert_eq!(t.to_f64(), vec![1.0, 2.0, 3.0, 4.0]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    shape: Vec<usize>,
    data: HostData,
}

impl HostTensor {
    /// Builds a tensor, checking that the data length matches the shape.
    pub fn new(shape: &[usize], data: HostData) -> Result<Self> {
        let len = match &data {
            HostData::F32(v) => v.len(),
            HostData::F64(v) => v.len(),
            HostData::I32(v) => v.len(),
            HostData::Bool(v) => v.len(),
        };
        if len != numel(shape) {
            return Err(Error::Input(format!(
                "shape {} needs {} elements, got {len}",
                fmt_shape(shape),
                numel(shape)
            )));
        }
        Ok(HostTensor {
            shape: shape.to_vec(),
            data,
        })
    }
    pub fn f32(shape: &[usize], v: Vec<f32>) -> Result<Self> {
        Self::new(shape, HostData::F32(v))
    }
    pub fn f64(shape: &[usize], v: Vec<f64>) -> Result<Self> {
        Self::new(shape, HostData::F64(v))
    }
    pub fn i32(shape: &[usize], v: Vec<i32>) -> Result<Self> {
        Self::new(shape, HostData::I32(v))
    }
    pub fn bool(shape: &[usize], v: Vec<bool>) -> Result<Self> {
        Self::new(shape, HostData::Bool(v))
    }
    /// A tensor of the given dtype from f64 values (rounded / truncated as a cast would).
    pub fn from_f64(shape: &[usize], dtype: DType, v: &[f64]) -> Result<Self> {
        let data = match dtype {
            DType::F32 => HostData::F32(v.iter().map(|&x| x as f32).collect()),
            DType::F64 => HostData::F64(v.to_vec()),
            DType::I32 => HostData::I32(v.iter().map(|&x| x as i32).collect()),
            DType::Bool => HostData::Bool(v.iter().map(|&x| x != 0.0).collect()),
            DType::F16 | DType::BF16 => {
                return Err(Error::Input(format!(
                    "host tensors of {dtype} are not supported yet"
                )))
            }
        };
        Self::new(shape, data)
    }
    /// A tensor from little-endian bytes (the layout of safetensors files); the byte count must
    /// match the shape. `Bool` takes one byte per element.
    pub fn from_le_bytes(shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Self> {
        let n = numel(shape);
        if bytes.len() != n * dtype.size_bytes() {
            return Err(Error::Input(format!(
                "{dtype}{} needs {} bytes, got {}",
                fmt_shape(shape),
                n * dtype.size_bytes(),
                bytes.len()
            )));
        }
        let data = match dtype {
            DType::F32 => HostData::F32(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            DType::F64 => HostData::F64(
                bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            DType::I32 => HostData::I32(
                bytes
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            DType::Bool => HostData::Bool(bytes.iter().map(|&b| b != 0).collect()),
            DType::F16 | DType::BF16 => {
                return Err(Error::Input(format!(
                    "host tensors of {dtype} are not supported yet"
                )))
            }
        };
        Self::new(shape, data)
    }

    /// All-zero tensor.
    pub fn zeros(shape: &[usize], dtype: DType) -> Result<Self> {
        Self::from_f64(shape, dtype, &vec![0.0; numel(shape)])
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
    pub fn data(&self) -> &HostData {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut HostData {
        &mut self.data
    }
    pub fn into_data(self) -> HostData {
        self.data
    }
    pub fn dtype(&self) -> DType {
        match self.data {
            HostData::F32(_) => DType::F32,
            HostData::F64(_) => DType::F64,
            HostData::I32(_) => DType::I32,
            HostData::Bool(_) => DType::Bool,
        }
    }
    /// The values widened to f64 (booleans as 0/1).
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            HostData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::F64(v) => v.clone(),
            HostData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }
    /// The f32 values, or `None` for another dtype.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            HostData::F32(v) => Some(v),
            _ => None,
        }
    }
    /// The same values as another dtype.
    pub fn cast(&self, dtype: DType) -> Result<Self> {
        Self::from_f64(&self.shape, dtype, &self.to_f64())
    }
    /// The same data under another shape with the same element count.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        if numel(shape) != self.numel() {
            return Err(Error::Input(format!(
                "cannot reshape {} to {}",
                fmt_shape(&self.shape),
                fmt_shape(shape)
            )));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }
}
