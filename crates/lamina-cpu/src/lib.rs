//! lamina-cpu: the CPU backend of lamina.
//!
//! [`CpuBackend`] compiles a [`Plan`] into a [`CpuExecutable`]: one arena of
//! `plan.arena_bytes` for every intermediate, constants materialised once, and a kernel per step
//! with its shapes and strides worked out. Elementwise fusion groups run as one chunked pass,
//! MatMul goes through the `gemm` crate, f32 convolutions on AVX-512 through implicit gemms of
//! our own and 3×3 ones through Winograd F(4×4, 3×3) (`gemm` elsewhere), everything is parallel on rayon's threads, which stay awake
//! through a step (`parallel.rs`).
//!
//! A run reads fed inputs in place and writes each arena-stored graph output straight into the
//! host vector it returns (no copy). State semantics follow the reference interpreter: every read
//! of a state sees the buffer as the run started; where the plan orders an `Assign` before a later
//! reader of the old value (another `Assign`, a graph output), the buffer is snapshotted first.
//!
//! ```
//! use lamina_core::*;
//! use lamina_cpu::CpuBackend;
//! let b = GraphBuilder::new();
//! let x = b.input("x", &[2, 3], DType::F32);
//! let y = (x * 2.0).relu().sum(&[1], false);
//! let plan = Plan::compile(&b.finish(&[y]).unwrap()).unwrap();
//! let cpu = CpuBackend::with_threads(2);
//! let mut exe = cpu.compile(&plan).unwrap();
//! let xv = HostTensor::f32(&[2, 3], vec![1.0, -2.0, 3.0, -4.0, 5.0, 6.0]).unwrap();
//! let out = cpu.run(&mut exe, &mut StateMap::new(), &[&xv]).unwrap();
//! assert_eq!(out[0].to_f64(), vec![8.0, 22.0]);
//! ```

mod arena;
mod buffer;
mod conv;
mod elem;
mod ew;
mod exec;
mod fused;
mod implicit;
mod kernels;
mod layout;
mod math;
mod matmul;
mod parallel;
#[cfg(feature = "profile")]
mod profile;
mod winograd;

pub use buffer::CpuBuffer;
pub use exec::CpuExecutable;

use lamina_core::{Backend, HostTensor, Plan, Result, StateMap};
use std::sync::Arc;

/// The CPU backend: runs plans on a rayon thread pool.
#[derive(Clone)]
pub struct CpuBackend {
    /// `None`: rayon's global pool.
    pool: Option<Arc<rayon::ThreadPool>>,
    /// The pool's workers while steps run.
    team: Arc<parallel::Team>,
    threads: usize,
    /// Whether compiled convolutions may run as Winograd F(4×4, 3×3).
    winograd: bool,
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBackend")
            .field("threads", &self.threads)
            .field("winograd", &self.winograd)
            .finish()
    }
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// A backend using every thread of rayon's global pool.
    pub fn new() -> Self {
        CpuBackend {
            pool: None,
            team: parallel::Team::global(),
            threads: rayon::current_num_threads(),
            winograd: winograd_default(),
        }
    }

    /// A backend with its own pool of `threads` threads (at least 1). Should the pool fail to
    /// start, work runs on rayon's global pool, still split for `threads` workers.
    pub fn with_threads(threads: usize) -> Self {
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("lamina-cpu-{i}"))
            .build()
            .ok();
        CpuBackend {
            team: match pool {
                Some(_) => parallel::Team::new(),
                None => parallel::Team::global(),
            },
            pool: pool.map(Arc::new),
            threads,
            winograd: winograd_default(),
        }
    }

    /// Number of threads kernels split their work for.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether executables compiled from now on may run f32 convolutions with a 3×3 kernel,
    /// unit stride and at least 16 input channels (forward, kernel gradient, and the input
    /// gradient where the layer has 16 or more output channels) as Winograd F(4×4, 3×3): a
    /// quarter of the multiply-adds, at the price of
    /// rounding errors up to a few millionths of the sum of the products' magnitudes (measured
    /// 2.6e-6; the direct sums: 1.9e-7). On by default on CPUs with AVX-512 unless the
    /// environment sets `LAMINA_CPU_WINOGRAD=0`.
    ///
    /// ```
    /// use lamina_cpu::CpuBackend;
    /// let exact = CpuBackend::with_threads(2).with_winograd(false);
    /// assert!(!exact.winograd());
    /// ```
    pub fn with_winograd(mut self, on: bool) -> Self {
        self.winograd = on;
        self
    }

    /// Whether compiled convolutions may run as Winograd F(4×4, 3×3) (see
    /// [`CpuBackend::with_winograd`]).
    pub fn winograd(&self) -> bool {
        self.winograd
    }
}

/// The default of [`CpuBackend::with_winograd`]: on unless `LAMINA_CPU_WINOGRAD` says off.
fn winograd_default() -> bool {
    winograd_setting(std::env::var("LAMINA_CPU_WINOGRAD").ok().as_deref())
}

/// Whether a `LAMINA_CPU_WINOGRAD` value leaves Winograd on: `0`, `off`, `false` and `no`
/// (any case) turn it off; unset or anything else leaves it on.
fn winograd_setting(value: Option<&str>) -> bool {
    !value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "off" | "false" | "no"
        )
    })
}

impl Backend for CpuBackend {
    type Buffer = CpuBuffer;
    type Executable = CpuExecutable;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn upload(&self, t: &HostTensor) -> Result<CpuBuffer> {
        Ok(CpuBuffer::from_host(t))
    }

    fn download(&self, b: &CpuBuffer) -> Result<HostTensor> {
        b.to_host()
    }

    fn compile(&self, plan: &Plan) -> Result<CpuExecutable> {
        CpuExecutable::compile(plan, self.winograd)
    }

    fn run(
        &self,
        exe: &mut CpuExecutable,
        state: &mut StateMap<CpuBuffer>,
        inputs: &[&HostTensor],
    ) -> Result<Vec<HostTensor>> {
        let threads = self.threads;
        let mut step = || parallel::run_step(&self.team, || exe.execute(state, inputs, threads));
        match &self.pool {
            Some(pool) => pool.install(step),
            // run the whole plan on a worker of the global pool: from outside the pool every
            // parallel kernel would inject its work and block this thread until it is done
            None if threads > 1 => rayon::scope(|_| step()),
            None => exe.execute(state, inputs, threads),
        }
    }
}

#[cfg(test)]
mod tests {
    /// `LAMINA_CPU_WINOGRAD`: only an explicit off value turns Winograd off.
    #[test]
    fn winograd_setting_reads_off_values() {
        for (value, on) in [
            (None, true),
            (Some("1"), true),
            (Some("on"), true),
            (Some(""), true),
            (Some("0"), false),
            (Some(" off "), false),
            (Some("FALSE"), false),
            (Some("no"), false),
        ] {
            assert_eq!(super::winograd_setting(value), on, "{value:?}");
        }
    }
}
