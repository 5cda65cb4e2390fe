//! lamina-cuda: the CUDA backend of lamina.
//!
//! [`CudaBackend`] compiles a [`Plan`] into a [`CudaExecutable`]: one device arena of
//! `plan.arena_bytes` for every intermediate, constants uploaded once, two turns of device buffers
//! for the fed inputs, and a list of device operations — NVRTC kernels generated per fusion group (a
//! few modules per plan compiled in parallel, their PTX cached by source hash in the process and
//! on disk under `$LAMINA_CACHE_DIR`, else `$XDG_CACHE_HOME/lamina/cuda`, else
//! `~/.cache/lamina/cuda`), generic kernels for movement, reductions, RNG
//! (Philox-4x32-10, the same bits as `lamina_core::rng`), gather/scatter and convolution, cuBLAS
//! for matmuls (TF32 for f32 unless [`CudaConfig::tf32`] is off), device copies for Assigns and
//! state snapshots. The first run of each input turn captures the whole step as a CUDA graph;
//! later runs copy the inputs in (overlapping the previous step), replay the graph and copy the
//! outputs out. Persistent state stays in device
//! buffers ([`CudaBuffer`]) between runs.
//!
//! The CUDA libraries are loaded at run time, so the crate builds without a CUDA toolkit;
//! [`CudaBackend::device_count`] is 0 on a machine without a driver or GPU.
//!
//! ```
//! use lamina_core::*;
//! use lamina_cuda::{CudaBackend, CudaConfig};
//! if CudaBackend::device_count() > 0 {
//!     let b = GraphBuilder::new();
//!     let x = b.input("x", &[2, 3], DType::F32);
//!     let y = (x * 2.0).relu().sum(&[1], false);
//!     let plan = Plan::compile(&b.finish(&[y]).unwrap()).unwrap();
//!     let cuda = CudaBackend::new(CudaConfig::default()).unwrap();
//!     let mut exe = cuda.compile(&plan).unwrap();
//!     let xv = HostTensor::f32(&[2, 3], vec![1.0, -2.0, 3.0, -4.0, 5.0, 6.0]).unwrap();
//!     let out = cuda.run(&mut exe, &mut StateMap::new(), &[&xv]).unwrap();
//!     assert_eq!(out[0].to_f64(), vec![8.0, 22.0]);
//! }
//! ```

mod cache;
mod codegen;
mod dev;
mod exec;
mod feed;

pub use exec::CudaExecutable;

use dev::{ctx, Dev, DevMem};
use lamina_core::{
    Backend, Feed, HostData, HostTensor, PendingOutputs, Plan, Result, StateMap, TensorType,
};
use std::sync::Arc;

/// How a [`CudaBackend`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaConfig {
    /// Device ordinal.
    pub device: usize,
    /// f32 matmuls on the tensor cores in TF32 (about 1e-3 relative error); off gives strict f32.
    pub tf32: bool,
    /// Capture each step as a CUDA graph on its first run and replay it.
    pub graphs: bool,
    /// Start on quickly compiled kernels: a generated module that no cache holds is first
    /// compiled at NVRTC's fast-compile level (about 3.5x faster to build for a large module, about 1.5x slower to
    /// run) and its fully optimised build is compiled on a background thread and swapped in at
    /// the start of the first run after it is ready (or by
    /// [`CudaExecutable::finish_compiling`]). Off: every module is compiled fully before the
    /// first run. The two builds compute the same operations in the same order, but bit-for-bit
    /// equality across the swap is not promised (a compiler may contract a multiply-add
    /// differently).
    pub quick_start: bool,
}

impl Default for CudaConfig {
    /// Device 0, graphs on, TF32 on unless the environment sets `LAMINA_CUDA_TF32=0`, quick
    /// start on unless it sets `LAMINA_CUDA_QUICK_START=0`.
    fn default() -> Self {
        let on = |var: &str| {
            !matches!(
                std::env::var(var).as_deref(),
                Ok("0") | Ok("false") | Ok("off")
            )
        };
        CudaConfig {
            device: 0,
            tf32: on("LAMINA_CUDA_TF32"),
            graphs: true,
            quick_start: on("LAMINA_CUDA_QUICK_START"),
        }
    }
}

/// A tensor in device memory.
pub struct CudaBuffer {
    mem: DevMem,
    ty: TensorType,
}

impl CudaBuffer {
    /// Shape and dtype.
    pub fn ty(&self) -> TensorType {
        self.ty.clone()
    }
    /// Bytes of device memory it holds.
    pub fn device_bytes(&self) -> usize {
        self.mem.bytes
    }
}

impl std::fmt::Debug for CudaBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBuffer({})", self.ty.describe())
    }
}

/// The bytes of a host tensor as stored on the device (little-endian, bool as one byte).
pub(crate) fn host_bytes(t: &HostTensor) -> &[u8] {
    fn raw<T>(v: &[T]) -> &[u8] {
        // SAFETY: plain numeric data (or bool, one byte 0/1) viewed as bytes.
        unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
    }
    match t.data() {
        HostData::F32(v) => raw(v),
        HostData::F64(v) => raw(v),
        HostData::I32(v) => raw(v),
        HostData::Bool(v) => raw(v),
    }
}

/// The CUDA backend: one device, one stream.
#[derive(Clone)]
pub struct CudaBackend {
    dev: Arc<Dev>,
    config: CudaConfig,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("config", &self.config)
            .finish()
    }
}

impl CudaBackend {
    /// Number of CUDA devices usable here (0 without a driver).
    pub fn device_count() -> usize {
        dev::device_count()
    }

    /// A backend on `config.device`; an error names the device when it is absent.
    pub fn new(config: CudaConfig) -> Result<CudaBackend> {
        let dev = Arc::new(Dev::new(config.device, config.tf32)?);
        Ok(CudaBackend { dev, config })
    }

    /// The configuration this backend runs with.
    pub fn config(&self) -> &CudaConfig {
        &self.config
    }

    /// Bytes of device memory this backend holds itself (the cuBLAS workspace); executables and
    /// buffers report theirs ([`CudaExecutable::device_bytes`], [`CudaBuffer::device_bytes`]).
    pub fn device_bytes(&self) -> usize {
        self.dev.device_bytes()
    }

    /// Whether this machine's NVRTC has the fast-compile level that
    /// [`CudaConfig::quick_start`] builds with (NVRTC 12.8 or later); without it every module is
    /// compiled fully before the first run. False when NVRTC does not load.
    pub fn has_quick_builds() -> bool {
        dev::has_quick_builds()
    }

    /// Bytes of device memory in use on the device (by every process), for leak checks.
    pub fn memory_used(&self) -> Result<usize> {
        self.dev.memory_used()
    }
}

impl Backend for CudaBackend {
    type Buffer = CudaBuffer;
    type Executable = CudaExecutable;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn upload(&self, t: &HostTensor) -> Result<CudaBuffer> {
        let bytes = host_bytes(t);
        let mem = DevMem::new(&self.dev.ctx, bytes.len())?;
        let _busy = self.dev.lock();
        if !bytes.is_empty() {
            // SAFETY: `mem` holds `bytes.len()` bytes.
            ctx(
                unsafe { cudarc::driver::result::memcpy_htod_sync(mem.ptr, bytes) },
                "copying to the device",
            )?;
        }
        Ok(CudaBuffer {
            mem,
            ty: TensorType::new(t.shape(), t.dtype()),
        })
    }

    fn write(&self, buf: &mut CudaBuffer, t: &HostTensor) -> Result<()> {
        if buf.ty != TensorType::new(t.shape(), t.dtype()) {
            *buf = self.upload(t)?;
            return Ok(());
        }
        let bytes = host_bytes(t);
        if bytes.is_empty() {
            return Ok(());
        }
        let _busy = self.dev.lock();
        ctx(self.dev.ctx.bind_to_thread(), "binding the context")?;
        // Ordered on the backend's stream after any run that reads the buffer and before the next
        // one. Small writes (the trainer's hyper-parameters, every step) are staged in
        // page-locked memory so the host does not wait for the stream.
        if bytes.len() <= dev::WRITE_SLOT {
            return self.dev.write_small(buf.mem.ptr, bytes);
        }
        // SAFETY: the buffer holds `bytes.len()` bytes. The source is pageable memory, which the
        // driver has staged by the time the call returns (it may wait for the stream first).
        ctx(
            unsafe {
                cudarc::driver::result::memcpy_htod_async(
                    buf.mem.ptr,
                    bytes,
                    self.dev.stream.cu_stream(),
                )
            },
            "copying to the device",
        )
    }

    fn download(&self, b: &CudaBuffer) -> Result<HostTensor> {
        let _busy = self.dev.lock();
        ctx(self.dev.ctx.bind_to_thread(), "binding the context")?;
        self.dev.sync()?;
        let mut bytes = vec![0u8; b.mem.bytes];
        if !bytes.is_empty() {
            // SAFETY: the buffer holds `bytes.len()` bytes.
            ctx(
                unsafe { cudarc::driver::result::memcpy_dtoh_sync(&mut bytes, b.mem.ptr) },
                "copying to the host",
            )?;
        }
        HostTensor::from_le_bytes(&b.ty.shape, b.ty.dtype, &bytes)
    }

    fn compile(&self, plan: &Plan) -> Result<CudaExecutable> {
        CudaExecutable::compile(&self.dev, plan, self.config.graphs, self.config.quick_start)
    }

    fn run(
        &self,
        exe: &mut CudaExecutable,
        state: &mut StateMap<CudaBuffer>,
        inputs: &[&HostTensor],
    ) -> Result<Vec<HostTensor>> {
        exe.execute(state, inputs)
    }

    fn staging<'e>(&self, exe: &'e mut CudaExecutable, k: usize) -> Result<Option<&'e mut [u8]>> {
        exe.staging(k).map(Some)
    }

    fn submit(
        &self,
        exe: &mut CudaExecutable,
        state: &mut StateMap<CudaBuffer>,
        inputs: &[Feed<'_>],
    ) -> Result<PendingOutputs> {
        exe.submit(state, inputs)
    }

    fn finish_compiling(&self, exe: &mut CudaExecutable) -> Result<()> {
        exe.finish_compiling()
    }

    fn executable_bytes(&self, exe: &CudaExecutable) -> usize {
        exe.device_bytes()
    }

    fn buffer_bytes(&self, b: &CudaBuffer) -> usize {
        b.device_bytes()
    }

    fn backend_bytes(&self) -> usize {
        self.dev.device_bytes()
    }
}
