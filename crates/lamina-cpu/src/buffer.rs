//! `CpuBuffer`: a persistent buffer in host memory, typed like the tensor it holds.

use crate::elem::{backend_err, Dt};
use lamina_core::{numel, DType, HostData, HostTensor, Result, TensorType};

/// Element storage of a [`CpuBuffer`]. Booleans are kept as bytes (0 or 1) so kernels can write
/// them like any other element.
#[derive(Clone, Debug, PartialEq)]
enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    Bool(Vec<u8>),
}

/// A tensor in host memory owned by the CPU backend (parameters, optimizer moments, counters).
#[derive(Clone, Debug, PartialEq)]
pub struct CpuBuffer {
    shape: Vec<usize>,
    data: Data,
}

impl CpuBuffer {
    /// Copies a host tensor into a new buffer.
    pub fn from_host(t: &HostTensor) -> CpuBuffer {
        let data = match t.data() {
            HostData::F32(v) => Data::F32(v.clone()),
            HostData::F64(v) => Data::F64(v.clone()),
            HostData::I32(v) => Data::I32(v.clone()),
            HostData::Bool(v) => Data::Bool(v.iter().map(|&b| b as u8).collect()),
        };
        CpuBuffer {
            shape: t.shape().to_vec(),
            data,
        }
    }

    /// An all-zero buffer of the given type (F16/BF16 are refused).
    pub fn zeros(shape: &[usize], dtype: DType) -> Result<CpuBuffer> {
        let n = numel(shape);
        let data = match Dt::of(dtype)? {
            Dt::F32 => Data::F32(vec![0.0; n]),
            Dt::F64 => Data::F64(vec![0.0; n]),
            Dt::I32 => Data::I32(vec![0; n]),
            Dt::Bool => Data::Bool(vec![0; n]),
        };
        Ok(CpuBuffer {
            shape: shape.to_vec(),
            data,
        })
    }

    /// Copies the buffer back into a host tensor.
    pub fn to_host(&self) -> Result<HostTensor> {
        let data = match &self.data {
            Data::F32(v) => HostData::F32(v.clone()),
            Data::F64(v) => HostData::F64(v.clone()),
            Data::I32(v) => HostData::I32(v.clone()),
            Data::Bool(v) => HostData::Bool(v.iter().map(|&b| b != 0).collect()),
        };
        HostTensor::new(&self.shape, data)
            .map_err(|e| backend_err(format!("downloading a buffer: {e}")))
    }

    /// Shape and dtype, for `lamina_core::check_state`.
    pub fn ty(&self) -> TensorType {
        TensorType::new(&self.shape, self.dtype())
    }

    /// The buffer's shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The buffer's dtype.
    pub fn dtype(&self) -> DType {
        match self.data {
            Data::F32(_) => DType::F32,
            Data::F64(_) => DType::F64,
            Data::I32(_) => DType::I32,
            Data::Bool(_) => DType::Bool,
        }
    }

    /// Start of the element storage, for kernels that write the buffer in place.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        match &mut self.data {
            Data::F32(v) => v.as_mut_ptr() as *mut u8,
            Data::F64(v) => v.as_mut_ptr() as *mut u8,
            Data::I32(v) => v.as_mut_ptr() as *mut u8,
            Data::Bool(v) => v.as_mut_ptr(),
        }
    }
}

/// Start of a fed tensor's element storage. Kernels only read through it.
pub(crate) fn host_ptr(t: &HostTensor) -> *const u8 {
    match t.data() {
        HostData::F32(v) => v.as_ptr() as *const u8,
        HostData::F64(v) => v.as_ptr() as *const u8,
        HostData::I32(v) => v.as_ptr() as *const u8,
        // `bool` is one byte holding 0 or 1, so it reads as the `u8` this backend uses.
        HostData::Bool(v) => v.as_ptr() as *const u8,
    }
}

/// Copies `len` elements of type `dt` at `ptr` into a host tensor (one memcpy for numbers).
///
/// # Safety
/// `ptr` must point to `len` initialised elements of `dt`, aligned for it.
pub(crate) unsafe fn host_from_raw(ptr: *const u8, dt: Dt, shape: &[usize]) -> Result<HostTensor> {
    let len = numel(shape);
    // SAFETY: the caller guarantees `len` valid, aligned elements of `dt` at `ptr`.
    let data = unsafe {
        match dt {
            Dt::F32 => HostData::F32(std::slice::from_raw_parts(ptr as *const f32, len).to_vec()),
            Dt::F64 => HostData::F64(std::slice::from_raw_parts(ptr as *const f64, len).to_vec()),
            Dt::I32 => HostData::I32(std::slice::from_raw_parts(ptr as *const i32, len).to_vec()),
            Dt::Bool => HostData::Bool(
                std::slice::from_raw_parts(ptr, len)
                    .iter()
                    .map(|&b| b != 0)
                    .collect(),
            ),
        }
    };
    HostTensor::new(shape, data).map_err(|e| backend_err(format!("building an output: {e}")))
}

/// Zero-filled host storage for `len` elements of a numeric dtype, which kernels may write
/// directly (`None` for bool, whose storage only admits 0 and 1). Large zeroed allocations come
/// straight from the OS, so nothing is written until a kernel fills them.
pub(crate) fn zeroed_host(dt: Dt, len: usize) -> Option<HostData> {
    let mut d = match dt {
        Dt::F32 => HostData::F32(vec![0.0; len]),
        Dt::F64 => HostData::F64(vec![0.0; len]),
        Dt::I32 => HostData::I32(vec![0; len]),
        Dt::Bool => return None,
    };
    crate::arena::advise_huge_pages(host_data_ptr(&mut d), len * dt.size());
    Some(d)
}

/// Start of the element storage of host data made by [`zeroed_host`].
pub(crate) fn host_data_ptr(d: &mut HostData) -> *mut u8 {
    match d {
        HostData::F32(v) => v.as_mut_ptr() as *mut u8,
        HostData::F64(v) => v.as_mut_ptr() as *mut u8,
        HostData::I32(v) => v.as_mut_ptr() as *mut u8,
        HostData::Bool(v) => v.as_mut_ptr() as *mut u8,
    }
}
