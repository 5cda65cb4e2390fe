//! The device: context, stream, cuBLAS handle, the generic kernels, device memory, NVRTC with a
//! process-wide and an on-disk cache of compiled code (sm_90 CUBIN).

use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{
    result as drv, sys as drv_sys, CudaContext, CudaEvent, CudaFunction, CudaModule, CudaStream,
};
use cudarc::nvrtc::Ptx;
use lamina_core::{Error, Result};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use crate::cache;

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

/// `kernels.cu` is compiled as this many modules in parallel, module `k` being the file with
/// `#define LAMINA_PART k` in front (one NVRTC run of the whole file takes seconds).
const GENERIC_PARTS: usize = 13;

/// The cuBLAS/cuBLASLt workspace in MiB unless `LAMINA_CUDA_WORKSPACE_MIB` (1-256) says otherwise
/// (H200: 16 MiB as fast as 32 for the benchmark models, 8 MiB slower for wide_mlp; PERF.md).
const WORKSPACE_MIB: usize = 16;

fn workspace_bytes() -> usize {
    let mib = std::env::var("LAMINA_CUDA_WORKSPACE_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|m| (1..=256).contains(m))
        .unwrap_or(WORKSPACE_MIB);
    mib << 20
}

/// Compiled code by cache key, shared by every context of the process.
fn code_cache() -> &'static Mutex<HashMap<u64, Vec<u8>>> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Vec<u8>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

pub(crate) fn source_hash(src: &str) -> u64 {
    let mut h = DefaultHasher::new();
    src.hash(&mut h);
    h.finish()
}

/// `LAMINA_CUDA_PROFILE` is set: report where the start-up time goes on stderr.
pub(crate) fn profiling() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("LAMINA_CUDA_PROFILE").is_some())
}

/// Prints a start-up timing line when profiling.
pub(crate) fn report(what: &str, since: Instant) {
    if profiling() {
        eprintln!(
            "lamina-cuda start-up: {what}: {:.1} ms",
            since.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// NVRTC's version, part of the disk cache key.
fn nvrtc_version() -> (i32, i32) {
    static V: OnceLock<(i32, i32)> = OnceLock::new();
    *V.get_or_init(|| {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: writes two ints; NVRTC was loaded by the caller (a compile, or
        // `has_quick_builds` checking that it opens).
        let _ = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        (major, minor)
    })
}

const ARCH: &str = "sm_90";
const NVRTC_OPTS: &[&str] = &["--gpu-architecture=sm_90", "--std=c++17"];

/// NVRTC's options: `NVRTC_OPTS` and, for experiments, the words of `LAMINA_CUDA_NVRTC`.
pub(crate) fn nvrtc_opts() -> &'static [String] {
    static O: OnceLock<Vec<String>> = OnceLock::new();
    O.get_or_init(|| {
        let mut o: Vec<String> = NVRTC_OPTS.iter().map(|s| s.to_string()).collect();
        if let Ok(extra) = std::env::var("LAMINA_CUDA_NVRTC") {
            o.extend(extra.split_whitespace().map(str::to_string));
        }
        o
    })
}

/// Runs NVRTC with `opts` and returns the CUBIN: machine code for sm_90, so loading a module
/// does not run the driver's PTX compiler on the loading thread.
pub(crate) fn nvrtc_cubin(src: &str, opts: &[String]) -> Result<Vec<u8>> {
    use cudarc::nvrtc::{result as rtc, sys as rtc_sys};
    struct Program(rtc_sys::nvrtcProgram);
    impl Drop for Program {
        fn drop(&mut self) {
            // SAFETY: created below, destroyed once.
            let _ = unsafe { rtc::destroy_program(self.0) };
        }
    }
    let c_src =
        std::ffi::CString::new(src).map_err(|_| cuda_err("CUDA source contains a NUL byte"))?;
    let prog = Program(ctx(
        rtc::create_program(&c_src, None),
        "nvrtcCreateProgram",
    )?);
    // SAFETY: `prog` is a live program; the options are plain strings.
    if let Err(e) = unsafe { rtc::compile_program(prog.0, opts) } {
        // SAFETY: the log of the program that just failed.
        let log = unsafe { rtc::get_program_log(prog.0) }
            .map(|l| {
                // SAFETY: NVRTC's log is NUL-terminated.
                unsafe { std::ffi::CStr::from_ptr(l.as_ptr()) }
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        return Err(cuda_err(format!(
            "NVRTC failed: {e:?}\n{log}\n--- source ---\n{src}"
        )));
    }
    let mut n = 0usize;
    // SAFETY: `prog` compiled for a real architecture, so it has a CUBIN of `n` bytes.
    unsafe {
        ctx(
            rtc_sys::nvrtcGetCUBINSize(prog.0, &mut n).result(),
            "nvrtcGetCUBINSize",
        )?;
        let mut cubin = vec![0u8; n];
        ctx(
            rtc_sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr() as *mut _).result(),
            "nvrtcGetCUBIN",
        )?;
        Ok(cubin)
    }
}

/// NVRTC's fast-compile level for the quick build of a generated module (see `compile_quick`).
/// `mid` compiles seed_mlp's largest module in 0.70 s instead of 2.2-2.8 s on the H100 host; its
/// code runs the step about 1.5x slower. (Not for `kernels.cu`: NVRTC 13.0 at `mid` miscompiles
/// kernels that index an array inside a by-value `Walk` parameter; PERF.md.)
const QUICK_OPT: &str = "--Ofast-compile=mid";

/// `nvrtc_opts` with `QUICK_OPT`.
fn quick_opts() -> &'static [String] {
    static O: OnceLock<Vec<String>> = OnceLock::new();
    O.get_or_init(|| {
        let mut o = nvrtc_opts().to_vec();
        o.push(QUICK_OPT.to_string());
        o
    })
}

/// Key of `src` compiled with `opts` by this NVRTC, in the process and the disk cache.
fn cache_key(src: &str, opts: &[String]) -> u64 {
    let (major, minor) = nvrtc_version();
    cache::stable_hash(&[
        src.as_bytes(),
        ARCH.as_bytes(),
        opts.join(" ").as_bytes(),
        format!("{major}.{minor}").as_bytes(),
    ])
}

/// The CUBIN under `key` from the process cache or, with `disk`, the on-disk cache (`cache.rs`).
fn cached(key: u64, disk: bool) -> Option<Vec<u8>> {
    if let Some(c) = code_cache().lock().expect("code cache").get(&key) {
        return Some(c.clone());
    }
    let c = cache::dir()
        .filter(|_| disk)
        .and_then(|d| cache::read(d, key))?;
    code_cache()
        .lock()
        .expect("code cache")
        .insert(key, c.clone());
    Some(c)
}

/// Compiles `src` with `opts`, or takes the CUBIN from the process cache or (with `disk`) the
/// on-disk cache, and stores what it compiled there. Thread-safe: independent modules are
/// compiled on several threads.
fn compile_with(src: &str, opts: &[String], disk: bool) -> Result<Vec<u8>> {
    let t = Instant::now();
    let key = cache_key(src, opts);
    let what = format!("{} kB of CUDA C ({key:016x})", src.len() / 1000);
    if let Some(c) = cached(key, disk) {
        report(&format!("{what} from a cache"), t);
        return Ok(c);
    }
    if let Some(dir) = std::env::var_os("LAMINA_CUDA_DUMP") {
        // for reading or timing the generated code outside lamina; best effort
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(
            std::path::Path::new(&dir).join(format!("{key:016x}.cu")),
            src,
        );
    }
    let cubin = nvrtc_cubin(src, opts)?;
    if let Some(d) = cache::dir().filter(|_| disk) {
        // a cache that cannot be written only costs the next process a compile
        let _ = cache::write(d, key, &cubin);
    }
    code_cache()
        .lock()
        .expect("code cache")
        .insert(key, cubin.clone());
    let level = if disk { "" } else { " (quick)" };
    report(&format!("{what} compiled by NVRTC{level}"), t);
    Ok(cubin)
}

/// Compiles CUDA C for sm_90, fully optimised, or takes the CUBIN from the process cache or the
/// on-disk cache (`cache.rs`).
pub(crate) fn compile(src: &str) -> Result<Ptx> {
    compile_with(src, nvrtc_opts(), true).map(Ptx::from_binary)
}

/// The fully optimised CUBIN of a module, compiled on a background thread while the plan runs
/// on the quick build (`compile_quick`).
#[derive(Default)]
pub(crate) struct Upgrade {
    cubin: Mutex<Option<std::result::Result<Vec<u8>, String>>>,
    done: std::sync::Condvar,
}

impl Upgrade {
    /// The CUBIN once compiled, `None` before; with `wait`, blocks until it is.
    pub(crate) fn poll(&self, wait: bool) -> Option<Result<Vec<u8>>> {
        let mut g = self.cubin.lock().unwrap_or_else(|e| e.into_inner());
        while wait && g.is_none() {
            g = self.done.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.as_ref().map(|r| r.clone().map_err(cuda_err))
    }
}

/// Background compiles by the cache key of their fully optimised build, so that plans compiled
/// meanwhile (another trainer on the same model) wait for the same one.
fn in_flight() -> &'static Mutex<HashMap<u64, Arc<Upgrade>>> {
    static F: OnceLock<Mutex<HashMap<u64, Arc<Upgrade>>>> = OnceLock::new();
    F.get_or_init(|| Mutex::new(HashMap::new()))
}

/// This NVRTC has the fast-compile level of quick builds (12.8 or later).
pub(crate) fn has_quick_builds() -> bool {
    // SAFETY: only checks that the library can be opened.
    let present = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    present && nvrtc_version() >= (12, 8)
}

/// A generated module for a quick start: the fully optimised CUBIN when a cache has it,
/// otherwise a quick build (`QUICK_OPT`) now and the optimised one compiling on a background
/// thread. Falls back to the full compile when this NVRTC has no fast-compile level (before
/// 12.8) or the quick build fails.
fn compile_quick(src: &str) -> Result<(Ptx, Option<Arc<Upgrade>>)> {
    let full = cache_key(src, nvrtc_opts());
    if !has_quick_builds() || cached(full, true).is_some() {
        return compile(src).map(|p| (p, None));
    }
    let Ok(quick) = compile_with(src, quick_opts(), false) else {
        return compile(src).map(|p| (p, None));
    };
    let up = in_flight()
        .lock()
        .expect("compiles in flight")
        .entry(full)
        .or_insert_with(|| {
            let up = Arc::new(Upgrade::default());
            let (done, src) = (up.clone(), src.to_string());
            std::thread::spawn(move || {
                let r = compile_with(&src, nvrtc_opts(), true).map_err(|e| match e {
                    // `poll` makes it a CUDA error again
                    Error::Backend { msg, .. } => msg,
                    e => e.to_string(),
                });
                *done.cubin.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                done.done.notify_all();
                in_flight()
                    .lock()
                    .expect("compiles in flight")
                    .remove(&full);
            });
            up
        })
        .clone();
    Ok((Ptx::from_binary(quick), Some(up)))
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
// SAFETY: shared only as the mapped output buffers (`feed.rs`), which the host reads once the
// step that writes them has finished and before the next step of their turn is enqueued.
unsafe impl Sync for Pinned {}

impl Pinned {
    pub(crate) fn new(cx: &Arc<CudaContext>, bytes: usize) -> Result<Pinned> {
        Self::alloc(cx, bytes, 0)
    }

    /// `bytes` of page-locked memory mapped into the device's address space: kernels store to
    /// it directly ([`Pinned::device_ptr`]).
    pub(crate) fn mapped(cx: &Arc<CudaContext>, bytes: usize) -> Result<Pinned> {
        Self::alloc(cx, bytes, drv_sys::CU_MEMHOSTALLOC_DEVICEMAP)
    }

    fn alloc(cx: &Arc<CudaContext>, bytes: usize, flags: u32) -> Result<Pinned> {
        cx.bind_to_thread()
            .map_err(|e| cuda_err(format!("{e:?}")))?;
        // SAFETY: a plain allocation, freed in Drop.
        let ptr = ctx(
            unsafe {
                let _quiet = not_capturing();
                drv::malloc_host(bytes.max(1), flags)
            },
            "cuMemHostAlloc",
        )? as *mut u8;
        Ok(Pinned {
            ptr,
            bytes,
            ctx: cx.clone(),
        })
    }

    /// The device address of memory from [`Pinned::mapped`].
    pub(crate) fn device_ptr(&self) -> Result<u64> {
        let mut d = 0;
        // SAFETY: `ptr` is a live page-locked allocation.
        ctx(
            unsafe { drv_sys::cuMemHostGetDevicePointer_v2(&mut d, self.ptr as *mut _, 0) }
                .result(),
            "cuMemHostGetDevicePointer",
        )?;
        Ok(d)
    }

    /// A copy of the first `n` bytes. The caller makes sure no step writes them meanwhile.
    pub(crate) fn read(&self, n: usize) -> Vec<u8> {
        // SAFETY: `bytes` bytes allocated in `new`/`mapped`; n is at most that.
        unsafe { std::slice::from_raw_parts(self.ptr, n.min(self.bytes)) }.to_vec()
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

/// The part of `kernels.cu` that defines kernel `name`, read from the source: the kernels of a
/// `#if LAMINA_ALL || LAMINA_PART == k` block, written out or instantiated by an `INST_*` macro.
pub(crate) fn generic_part(name: &str) -> Option<usize> {
    static TABLE: OnceLock<HashMap<String, usize>> = OnceLock::new();
    TABLE
        .get_or_init(|| part_table(GENERIC_SRC))
        .get(name)
        .copied()
}

fn part_table(src: &str) -> HashMap<String, usize> {
    // `name` of `… __global__ void name(…`
    let kernel = |line: &str| -> Option<String> {
        let rest = line.split("__global__ void ").nth(1)?;
        Some(rest.split('(').next()?.trim().to_string())
    };
    let mut macros: HashMap<String, Vec<String>> = HashMap::new();
    let mut in_macro: Option<String> = None;
    let mut part: Option<usize> = None;
    let mut table = HashMap::new();
    for line in src.lines() {
        let t = line.trim();
        if let Some(m) = in_macro.clone() {
            // a kernel of the macro is `stem##S`, S its first argument
            if let Some(stem) = kernel(t).and_then(|k| k.strip_suffix("##S").map(String::from)) {
                macros.entry(m).or_default().push(stem);
            }
            if !t.ends_with('\\') {
                in_macro = None;
            }
        } else if let Some(rest) = t.strip_prefix("#define ") {
            if t.ends_with('\\') {
                in_macro = Some(rest.split('(').next().unwrap_or(rest).to_string());
            }
        } else if let Some(k) = t.strip_prefix("#if LAMINA_ALL || LAMINA_PART == ") {
            part = k.trim().parse().ok();
        } else if t.starts_with("#endif") {
            part = None;
        } else if let Some(p) = part {
            if let Some(k) = kernel(t) {
                table.insert(k, p);
            } else if let Some((m, args)) = t.split_once('(') {
                let suffix = args.split(',').next().unwrap_or("").trim();
                for stem in macros.get(m.trim()).into_iter().flatten() {
                    table.insert(format!("{stem}{suffix}"), p);
                }
            }
        }
    }
    table
}

/// Bytes of the side stream's cuBLAS workspace: the GEMMs that run there are small.
const SIDE_WORKSPACE: usize = 2 << 20;

/// A cuBLAS handle on `stream` with `workspace` and the math mode `tf32` asks for.
fn blas_handle(
    stream: &CudaStream,
    workspace: &DevMem,
    tf32: bool,
) -> Result<blas_sys::cublasHandle_t> {
    let blas = ctx(blas::create_handle(), "creating the cuBLAS handle")?;
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
    Ok(blas)
}

/// A generated module as `Dev::modules` hands it out.
#[derive(Clone)]
pub(crate) struct LoadedModule {
    pub(crate) module: Arc<CudaModule>,
    /// Hash of its source (the key of `Dev::upgraded`).
    pub(crate) hash: u64,
    /// The optimised build on its way, when `module` is a quick one.
    pub(crate) upgrade: Option<Arc<Upgrade>>,
}

/// Per-backend device objects.
pub(crate) struct Dev {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    /// Second stream for input copies that overlap the previous step (`feed.rs`).
    pub(crate) copy_stream: Arc<CudaStream>,
    pub(crate) blas: blas_sys::cublasHandle_t,
    /// Third stream, for a GEMM that runs beside an independent one (`exec.rs`, forks), with a
    /// cuBLAS handle and workspace of its own (two GEMMs at once must not share a workspace).
    pub(crate) side: Arc<CudaStream>,
    pub(crate) blas_side: blas_sys::cublasHandle_t,
    /// f32 GEMMs run on the tensor cores in TF32.
    pub(crate) tf32: bool,
    workspace: DevMem,
    side_workspace: DevMem,
    /// The generic kernels, one module per part of `kernels.cu`, compiled when a plan first needs
    /// one of the part's kernels (all 13 parts at start-up were seconds of NVRTC competing for the
    /// cores with the plan's own modules, most of them for kernels no launch used).
    generic: Mutex<Vec<Option<Arc<CudaModule>>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    /// Generated modules by source hash, with the background compile of the optimised build
    /// while the module is a quick one.
    modules: Mutex<HashMap<u64, LoadedModule>>,
    /// Held by every run, upload, download and write: one user of the stream and handle at a time.
    busy: Mutex<()>,
    /// Page-locked slots that small writes are copied from (`write_small`), used in turns.
    ring: Mutex<Ring>,
}

/// Bytes of a slot of the write ring: writes up to this size (the trainer's per-step
/// hyper-parameters) go through it.
pub(crate) const WRITE_SLOT: usize = 4096;
/// Slots of the write ring. A slot is reused once the copy out of it has run, which with one
/// write per step is long done by the time the ring comes round.
const WRITE_SLOTS: usize = 8;

/// The write ring: page-locked slots, each with the event recorded after the copy out of it.
#[derive(Default)]
struct Ring {
    slots: Vec<(Pinned, CudaEvent)>,
    next: usize,
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
        // NVRTC's first compile in a process loads the library and its builtins (~0.2 s on a
        // cold machine): done beside the context and cuBLAS set-up instead of before the plan's
        // first module (once per process)
        static WARM_UP: std::sync::Once = std::sync::Once::new();
        WARM_UP.call_once(|| {
            std::thread::spawn(|| {
                // SAFETY: only checks that the library can be opened.
                if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                    let _ = nvrtc_cubin(
                        "extern \"C\" __global__ void lamina_warm_up() {}\n",
                        nvrtc_opts(),
                    );
                }
            });
        });
        let t = Instant::now();
        let cx = ctx(CudaContext::new(ordinal), "creating the CUDA context")?;
        report("CUDA context", t);
        let t = Instant::now();
        // Graph capture needs allocations made without event tracking (see DESIGN §2); every run
        // synchronizes its stream by hand instead.
        // SAFETY: called before this backend allocates anything.
        unsafe { cx.disable_event_tracking() };
        let stream = ctx(cx.new_stream(), "creating a stream")?;
        let copy_stream = ctx(cx.new_stream(), "creating a stream")?;
        // A fixed workspace, so cuBLAS never allocates during graph capture.
        let workspace = DevMem::new(&cx, workspace_bytes())?;
        let blas = blas_handle(&stream, &workspace, tf32)?;
        let side = ctx(cx.new_stream(), "creating a stream")?;
        let side_workspace = DevMem::new(&cx, SIDE_WORKSPACE)?;
        let blas_side = blas_handle(&side, &side_workspace, tf32)?;
        report("streams and cuBLAS", t);
        Ok(Dev {
            ctx: cx,
            stream,
            copy_stream,
            blas,
            side,
            blas_side,
            tf32,
            workspace,
            side_workspace,
            generic: Mutex::new(vec![None; GENERIC_PARTS]),
            functions: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            busy: Mutex::new(()),
            ring: Mutex::new(Ring::default()),
        })
    }

    /// Enqueues a copy of `bytes` (at most `WRITE_SLOT`) to device address `dst` on the stream
    /// from a page-locked slot, so the host does not wait: an asynchronous copy from pageable
    /// memory may wait for the stream to drain first, which cost a steady-state training step the
    /// whole overlap of host and device. The caller holds `lock()` with the context bound.
    pub(crate) fn write_small(&self, dst: u64, bytes: &[u8]) -> Result<()> {
        if bytes.len() > WRITE_SLOT {
            return Err(cuda_err(format!(
                "a write of {} bytes through slots of {WRITE_SLOT}",
                bytes.len()
            )));
        }
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.slots.len() < WRITE_SLOTS {
            let slot = (
                Pinned::new(&self.ctx, WRITE_SLOT)?,
                ctx(self.ctx.new_event(None), "creating an event")?,
            );
            ring.slots.push(slot);
        }
        let k = ring.next % ring.slots.len();
        ring.next = ring.next.wrapping_add(1);
        let (mem, done) = &mut ring.slots[k];
        ctx(done.synchronize(), "waiting for an earlier write")?;
        let src = &mut mem.as_mut_slice()[..bytes.len()];
        src.copy_from_slice(bytes);
        // SAFETY: `dst` holds `bytes.len()` bytes (the caller's buffer); the slot is not written
        // again before `done`, recorded after this copy, has fired.
        ctx(
            unsafe { drv::memcpy_htod_async(dst, &*src, self.stream.cu_stream()) },
            "copying to the device",
        )?;
        ctx(done.record(&self.stream), "recording an event")
    }

    /// Exclusive use of the stream and the cuBLAS handle.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // a panic in another run leaves nothing half-written that a later run depends on
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A generic kernel by name (compiling its part of `kernels.cu` if needed).
    pub(crate) fn function(&self, name: &str) -> Result<CudaFunction> {
        if let Some(k) = self.functions.lock().expect("function table").get(name) {
            return Ok(k.clone());
        }
        self.load_generic(&[name])?;
        let part = generic_part(name).expect("checked by load_generic");
        let m = self.generic.lock().unwrap_or_else(|e| e.into_inner())[part]
            .clone()
            .expect("loaded by load_generic");
        let k = ctx(m.load_function(name), &format!("kernel {name}"))?;
        self.functions
            .lock()
            .expect("function table")
            .insert(name.to_string(), k.clone());
        Ok(k)
    }

    /// Compiles (in parallel) and loads the parts of `kernels.cu` that define `names` and are
    /// not loaded yet.
    pub(crate) fn load_generic(&self, names: &[&str]) -> Result<()> {
        let mut parts: Vec<usize> = Vec::new();
        for name in names {
            let p = generic_part(name)
                .ok_or_else(|| cuda_err(format!("kernel {name}: not among the generic kernels")))?;
            if !parts.contains(&p) {
                parts.push(p);
            }
        }
        let missing: Vec<usize> = {
            let g = self.generic.lock().unwrap_or_else(|e| e.into_inner());
            parts.into_iter().filter(|&p| g[p].is_none()).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        let ptxs: Vec<Result<Ptx>> = std::thread::scope(|sc| {
            let hs: Vec<_> = missing
                .iter()
                .map(|&k| {
                    sc.spawn(move || compile(&format!("#define LAMINA_PART {k}\n{GENERIC_SRC}")))
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(cuda_err("compiling the generic kernels panicked")))
                })
                .collect()
        });
        report(
            &format!(
                "{} of {GENERIC_PARTS} parts of the generic kernels",
                missing.len()
            ),
            t,
        );
        let mut g = self.generic.lock().unwrap_or_else(|e| e.into_inner());
        for (k, ptx) in missing.into_iter().zip(ptxs) {
            let ptx = ptx?;
            if g[k].is_none() {
                let _quiet = not_capturing();
                g[k] = Some(ctx(self.ctx.load_module(ptx), "loading kernels")?);
            }
        }
        Ok(())
    }

    /// Loads (compiling if needed) modules of generated kernels, cached by source hash; the ones
    /// not loaded yet are compiled in parallel, one thread each. With `quick`, a module no cache
    /// holds is a quick build, returned with the `Upgrade` that brings its optimised build
    /// (`compile_quick`; `CudaExecutable` swaps it in).
    pub(crate) fn modules(&self, srcs: &[String], quick: bool) -> Result<Vec<LoadedModule>> {
        let missing: Vec<&String> = {
            let table = self.modules.lock().expect("module table");
            srcs.iter()
                .filter(|s| !table.contains_key(&source_hash(s)))
                .collect()
        };
        let t = Instant::now();
        let ptxs: Vec<Result<(Ptx, Option<Arc<Upgrade>>)>> = std::thread::scope(|sc| {
            let hs: Vec<_> = missing
                .iter()
                .map(|s| {
                    sc.spawn(move || {
                        if quick {
                            compile_quick(s)
                        } else {
                            compile(s).map(|p| (p, None))
                        }
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(cuda_err("an NVRTC compile panicked")))
                })
                .collect()
        });
        if !missing.is_empty() {
            report(&format!("{} generated module(s)", missing.len()), t);
        }
        let t = Instant::now();
        for (s, ptx) in missing.iter().zip(ptxs) {
            let (ptx, upgrade) = ptx?;
            let _quiet = not_capturing();
            let module = ctx(self.ctx.load_module(ptx), "loading generated kernels")?;
            let hash = source_hash(s);
            self.modules.lock().expect("module table").insert(
                hash,
                LoadedModule {
                    module,
                    hash,
                    upgrade,
                },
            );
        }
        if !missing.is_empty() {
            report("loading generated modules", t);
        }
        let table = self.modules.lock().expect("module table");
        Ok(srcs
            .iter()
            .map(|s| table[&source_hash(s)].clone())
            .collect())
    }

    /// The optimised build of the module of source hash `hash` from its `cubin`, loaded once per
    /// device (the first executable to swap it in loads it; the table then hands it out). The
    /// caller holds `not_capturing()` with the context bound.
    pub(crate) fn upgraded(&self, hash: u64, cubin: Vec<u8>) -> Result<Arc<CudaModule>> {
        let mut table = self.modules.lock().expect("module table");
        if let Some(LoadedModule {
            module,
            upgrade: None,
            ..
        }) = table.get(&hash)
        {
            return Ok(module.clone());
        }
        let module = ctx(
            self.ctx.load_module(Ptx::from_binary(cubin)),
            "loading optimised kernels",
        )?;
        table.insert(
            hash,
            LoadedModule {
                module: module.clone(),
                hash,
                upgrade: None,
            },
        );
        Ok(module)
    }

    /// The cuBLAS workspace (address, bytes), also cuBLASLt's: both run on the one stream.
    pub(crate) fn workspace(&self) -> (u64, usize) {
        (self.workspace.ptr, self.workspace.bytes)
    }

    /// Device bytes this object holds itself (the cuBLAS workspaces).
    pub(crate) fn device_bytes(&self) -> usize {
        self.workspace.bytes + self.side_workspace.bytes
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
        let _ = self.side.synchronize();
        let _ = self.copy_stream.synchronize();
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
            self.generic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
        // SAFETY: created in `new`, used by nobody after the backend is gone.
        let _ = unsafe { blas::destroy_handle(self.blas) };
        // SAFETY: as above.
        let _ = unsafe { blas::destroy_handle(self.blas_side) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `.entry` names of the PTX of `src`.
    fn entries(src: &str) -> Vec<String> {
        let ptx = cudarc::nvrtc::compile_ptx_with_opts(
            src,
            cudarc::nvrtc::CompileOptions {
                arch: Some("compute_90"),
                options: vec!["--std=c++17".into()],
                ..Default::default()
            },
        )
        .expect("kernels.cu compiles to PTX")
        .to_src();
        ptx.lines()
            .filter_map(|l| l.trim().strip_prefix(".visible .entry "))
            .map(|l| l.split('(').next().unwrap_or(l).to_string())
            .collect()
    }

    /// The part table read from `kernels.cu` (what a plan compiles on demand) without NVRTC; the
    /// test below checks it against what NVRTC compiles per part.
    #[test]
    fn part_table_names_each_kernel_with_its_part() {
        let table = part_table(GENERIC_SRC);
        assert_eq!(table.len(), 48, "{table:?}");
        for (name, part) in [
            ("copy_f32", 0),
            ("gather_f64", 1),
            ("fill_i32", 2),
            ("copy_u8", 3),
            ("iota_u8", 3),
            ("random_bits", 3),
            ("reduce_sum_thread_f32", 4),
            ("reduce_max_block_f32", 5),
            ("argmax_f32", 6),
            ("reduce_sum_cols_f64", 9),
            ("reduce_sum_block_i32", 10),
            ("scatter_add_i32", 11),
            ("conv_block_f64", 12),
        ] {
            assert_eq!(generic_part(name), Some(part), "{name}");
        }
        assert!(table.values().all(|&p| p < GENERIC_PARTS));
        assert_eq!(generic_part("no_such_kernel"), None);
    }

    /// Needs NVRTC only (no GPU); skipped where its library is absent.
    #[test]
    fn generic_parts_hold_every_kernel_once() {
        // SAFETY: only tries to open the library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            eprintln!("NVRTC not found: skipped");
            return;
        }
        let dir = std::env::temp_dir().join(format!("lamina-parts-{}", std::process::id()));
        // SAFETY: no other test of this binary reads the environment.
        unsafe { std::env::set_var("LAMINA_CACHE_DIR", &dir) };
        let mut whole = entries(GENERIC_SRC);
        whole.sort();
        assert_eq!(whole.len(), 48, "{whole:?}");
        let mut parts = Vec::new();
        for k in 0..GENERIC_PARTS {
            let src = format!("#define LAMINA_PART {k}\n{GENERIC_SRC}");
            let got = entries(&src);
            assert!(!got.is_empty(), "part {k} is empty");
            for name in &got {
                assert_eq!(
                    generic_part(name),
                    Some(k),
                    "{name}: the part table disagrees"
                );
            }
            parts.extend(got);
            // the real path: CUBIN for sm_90, written to and read back from the disk cache
            let key_count = std::fs::read_dir(&dir).map_or(0, |d| d.count());
            compile(&src).expect("part compiles");
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), key_count + 1);
        }
        parts.sort();
        assert_eq!(parts, whole, "every generic kernel in exactly one part");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
