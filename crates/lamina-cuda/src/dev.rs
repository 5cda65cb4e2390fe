//! The device: context, stream, cuBLAS handle, the generic kernels, device memory, NVRTC with a
//! process-wide cache of compiled PTX keyed by source hash.

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{
    result as drv, sys as drv_sys, CudaContext, CudaFunction, CudaModule, CudaStream,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};
use lamina_core::{Error, Result};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(crate) fn cuda_err(msg: impl std::fmt::Display) -> Error {
    Error::Backend {
        backend: "cuda".into(),
        msg: msg.to_string(),
    }
}

/// Maps a driver or library error into lamina's error with what was being done.
pub(crate) fn ctx<T, E: std::fmt::Debug>(r: std::result::Result<T, E>, what: &str) -> Result<T> {
    r.map_err(|e| cuda_err(format!("{what}: {e:?}")))
}

/// Graph capture against the rest of the process: a capture holds it for writing; allocations,
/// frees and module loads of every backend hold it for reading, so no thread allocates, frees
/// (which synchronizes the device) or loads a module while another thread captures a step.
static CAPTURE: RwLock<()> = RwLock::new(());

/// Shared hold for an operation that must not overlap a capture.
pub(crate) fn not_capturing() -> RwLockReadGuard<'static, ()> {
    CAPTURE.read().unwrap_or_else(|e| e.into_inner())
}

/// Exclusive hold for a capture.
pub(crate) fn capturing() -> RwLockWriteGuard<'static, ()> {
    CAPTURE.write().unwrap_or_else(|e| e.into_inner())
}

/// The source of the generic kernels (copies, reductions, RNG, gather/scatter, convolution).
pub(crate) const GENERIC_SRC: &str = include_str!("kernels.cu");

/// PTX by source hash, shared by every context of the process (PTX does not depend on one).
fn ptx_cache() -> &'static Mutex<HashMap<u64, String>> {
    static CACHE: OnceLock<Mutex<HashMap<u64, String>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

pub(crate) fn source_hash(src: &str) -> u64 {
    let mut h = DefaultHasher::new();
    src.hash(&mut h);
    h.finish()
}

/// Compiles CUDA C for sm_90 (or takes it from the cache).
pub(crate) fn compile(src: &str) -> Result<Ptx> {
    let key = source_hash(src);
    if let Some(p) = ptx_cache().lock().expect("ptx cache").get(&key) {
        return Ok(Ptx::from_src(p.clone()));
    }
    let opts = CompileOptions {
        arch: Some("sm_90"),
        options: vec!["--std=c++17".into()],
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(src, opts)
        .map_err(|e| cuda_err(format!("NVRTC failed: {e:?}\n--- source ---\n{src}")))?;
    ptx_cache()
        .lock()
        .expect("ptx cache")
        .insert(key, ptx.to_src());
    Ok(ptx)
}

/// Number of CUDA devices: 0 when the driver library does not load. Looked up once per process
/// (the trainer asks on every `Device::Auto`).
pub(crate) fn device_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        // SAFETY: only tries to open the driver library.
        if !unsafe { drv_sys::is_culib_present() } || drv::init().is_err() {
            return 0;
        }
        CudaContext::device_count()
            .map(|n| n.max(0) as usize)
            .unwrap_or(0)
    })
}

/// Plain device memory (`cuMemAlloc`), freed on drop.
pub(crate) struct DevMem {
    pub(crate) ptr: u64,
    pub(crate) bytes: usize,
    ctx: Arc<CudaContext>,
}

impl DevMem {
    pub(crate) fn new(cx: &Arc<CudaContext>, bytes: usize) -> Result<DevMem> {
        cx.bind_to_thread()
            .map_err(|e| cuda_err(format!("{e:?}")))?;
        // Zero-byte values still get a distinct, valid pointer.
        // SAFETY: a plain allocation; freed in Drop with the same context bound.
        let _quiet = not_capturing();
        let ptr = ctx(unsafe { drv::malloc_sync(bytes.max(1)) }, "cuMemAlloc")
            .map_err(|e| cuda_err(format!("allocating {bytes} bytes of device memory: {e}")))?;
        Ok(DevMem {
            ptr,
            bytes,
            ctx: cx.clone(),
        })
    }
}

impl Drop for DevMem {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: allocated by `new`; no kernel uses it after its owner is dropped (every run
        // synchronizes its stream before returning).
        let _quiet = not_capturing();
        let _ = unsafe { drv::free_sync(self.ptr) };
    }
}

/// Page-locked host memory (`cuMemHostAlloc`): inputs are staged here so that their copies to
/// the device run at full speed.
pub(crate) struct Pinned {
    ptr: *mut u8,
    bytes: usize,
    ctx: Arc<CudaContext>,
}

// SAFETY: owned memory, used by one run at a time.
unsafe impl Send for Pinned {}

impl Pinned {
    pub(crate) fn new(cx: &Arc<CudaContext>, bytes: usize) -> Result<Pinned> {
        cx.bind_to_thread()
            .map_err(|e| cuda_err(format!("{e:?}")))?;
        // SAFETY: a plain allocation, freed in Drop.
        let ptr = ctx(
            unsafe {
                let _quiet = not_capturing();
                drv::malloc_host(bytes.max(1), 0)
            },
            "cuMemHostAlloc",
        )? as *mut u8;
        Ok(Pinned {
            ptr,
            bytes,
            ctx: cx.clone(),
        })
    }

    /// The memory as a slice (no copy of the device runs from it while this borrow lives, since
    /// every run synchronizes before returning).
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `bytes` bytes allocated in `new`, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.bytes) }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: allocated by `new`; no copy reads it after its run synchronized.
        let _quiet = not_capturing();
        let _ = unsafe { drv::free_host(self.ptr as *mut _) };
    }
}

/// Per-backend device objects.
pub(crate) struct Dev {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: blas_sys::cublasHandle_t,
    _workspace: DevMem,
    /// `None` only while dropping.
    generic: Option<Arc<CudaModule>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    modules: Mutex<HashMap<u64, Arc<CudaModule>>>,
    /// Held by every run, upload, download and write: one user of the stream and handle at a time.
    busy: Mutex<()>,
}

// SAFETY: the cuBLAS handle and the stream are only used while `busy` is held.
unsafe impl Send for Dev {}
unsafe impl Sync for Dev {}

impl Dev {
    pub(crate) fn new(ordinal: usize, tf32: bool) -> Result<Dev> {
        let n = device_count();
        if ordinal >= n {
            return Err(cuda_err(format!(
                "device cuda:{ordinal} asked for, but {n} CUDA device(s) are present"
            )));
        }
        let cx = ctx(CudaContext::new(ordinal), "creating the CUDA context")?;
        // Graph capture needs allocations made without event tracking (see DESIGN §2); every run
        // synchronizes its stream by hand instead.
        // SAFETY: called before this backend allocates anything.
        unsafe { cx.disable_event_tracking() };
        let stream = ctx(cx.new_stream(), "creating a stream")?;
        let blas = ctx(blas::create_handle(), "creating the cuBLAS handle")?;
        // A fixed workspace, so cuBLAS never allocates during graph capture.
        let workspace = DevMem::new(&cx, 32 << 20)?;
        // SAFETY: handle, stream and workspace are live for the handle's lifetime (Drop order).
        unsafe {
            ctx(
                blas::set_stream(blas, stream.cu_stream() as _),
                "cublasSetStream",
            )?;
            ctx(
                blas_sys::cublasSetWorkspace_v2(blas, workspace.ptr as *mut _, workspace.bytes)
                    .result(),
                "cublasSetWorkspace",
            )?;
            let mode = if tf32 {
                blas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
            } else {
                blas_sys::cublasMath_t::CUBLAS_PEDANTIC_MATH
            };
            ctx(
                blas_sys::cublasSetMathMode(blas, mode).result(),
                "cublasSetMathMode",
            )?;
        }
        let ptx = compile(GENERIC_SRC)?;
        let generic = {
            let _quiet = not_capturing();
            ctx(cx.load_module(ptx), "loading kernels")?
        };
        Ok(Dev {
            ctx: cx,
            stream,
            blas,
            _workspace: workspace,
            generic: Some(generic),
            functions: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            busy: Mutex::new(()),
        })
    }

    /// Exclusive use of the stream and the cuBLAS handle.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // a panic in another run leaves nothing half-written that a later run depends on
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A generic kernel by name.
    pub(crate) fn function(&self, name: &str) -> Result<CudaFunction> {
        let mut f = self.functions.lock().expect("function table");
        if let Some(k) = f.get(name) {
            return Ok(k.clone());
        }
        let m = self
            .generic
            .as_ref()
            .expect("the generic module lives as long as the device");
        let k = ctx(m.load_function(name), &format!("kernel {name}"))?;
        f.insert(name.to_string(), k.clone());
        Ok(k)
    }

    /// Loads (compiling if needed) a module of generated kernels, cached by source hash.
    pub(crate) fn module(&self, src: &str) -> Result<Arc<CudaModule>> {
        let key = source_hash(src);
        if let Some(m) = self.modules.lock().expect("module table").get(&key) {
            return Ok(m.clone());
        }
        let ptx = compile(src)?;
        let _quiet = not_capturing();
        let m = ctx(self.ctx.load_module(ptx), "loading generated kernels")?;
        self.modules
            .lock()
            .expect("module table")
            .insert(key, m.clone());
        Ok(m)
    }

    /// Bytes of device memory in use on this device (all processes).
    pub(crate) fn memory_used(&self) -> Result<usize> {
        let (free, total) = ctx(self.ctx.mem_get_info(), "cuMemGetInfo")?;
        Ok(total - free)
    }

    pub(crate) fn sync(&self) -> Result<()> {
        ctx(self.stream.synchronize(), "synchronizing the stream")
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
        {
            // unloading modules must not overlap another thread's capture
            let _quiet = not_capturing();
            self.functions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            self.modules
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            self.generic = None;
        }
        // SAFETY: created in `new`, used by nobody after the backend is gone.
        let _ = unsafe { blas::destroy_handle(self.blas) };
    }
}
